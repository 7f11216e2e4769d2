"""Conversion paths joined inside ClickHouse (features.attribution) equal the same windows computed in pandas
from the raw events, and feed every attribution model with conservation."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features.attribution import conversion_paths_in_store, journey_windows
from ml.attribution import models
from revopt.sample_data.synth import generate_store

START = dt.date(2024, 1, 1)
DAYS = 120
LOOKBACK = 30


@pytest.fixture(scope="module")
def store():
    return generate_store(1200, DAYS, START, seed=31)


def _edge_events(store) -> pd.DataFrame:
    """Touches the windows' edges decide: for customers with two orders, a session starting exactly at their
    first order (it belongs to that order's journey, not the next) and a machine's email click just before
    the second (not a touch)."""
    orders = store.shop["orders"]
    repeat = orders[orders["status"] != "cancelled"].sort_values("order_ts").groupby("customer_id").filter(
        lambda g: len(g) >= 2).groupby("customer_id").head(2)
    pairs = repeat.groupby("customer_id")["order_ts"].agg(["min", "max"]).head(40)
    template = store.events.iloc[[0] * len(pairs)].reset_index(drop=True)
    at_first = template.assign(event_time=pairs["min"].to_numpy(), customer_id=pairs.index.to_numpy().astype("uint64"),
                               session_id=np.arange(10**9, 10**9 + len(pairs)).astype("uint64"),
                               event_type=pd.Categorical(["page_view"] * len(pairs)), channel=pd.Categorical(["affiliate"] * len(pairs)))
    robot = template.assign(event_time=pairs["max"].to_numpy() - pd.Timedelta(minutes=5),
                            customer_id=pairs.index.to_numpy().astype("uint64"), session_id=np.uint64(0),
                            event_type=pd.Categorical(["email_click"] * len(pairs)), is_machine=np.uint8(1))
    return pd.concat([store.events, at_first, robot], ignore_index=True)


@pytest.fixture(scope="module")
def events(store, open_events):
    return open_events(_edge_events(store))


def _orders(store) -> pd.DataFrame:
    shop = store.shop
    value = shop["order_lines"].assign(v=lambda f: f["quantity"] * f["unit_price"]).groupby("order_id")["v"].sum()
    return shop["orders"].assign(order_value=shop["orders"]["order_id"].map(value).fillna(0.0))


def _pandas_touches(store, since: pd.Timestamp, run_ts: pd.Timestamp) -> pd.DataFrame:
    e = _edge_events(store)
    e = e[(e["customer_id"] != 0) & (e["event_time"] >= since) & (e["event_time"] < run_ts)]
    web = e[(e["session_id"] != 0) & ~e["event_type"].astype(str).str.startswith("email_")].sort_values("event_time")
    sessions = web.groupby(["customer_id", "session_id"], observed=True).agg(
        touch_ts=("event_time", "min"), channel=("channel", "first")).reset_index()
    clicks = e[(e["event_type"] == "email_click") & (e["is_machine"] == 0)]
    touches = pd.concat([sessions[["customer_id", "touch_ts", "channel"]],
                         pd.DataFrame({"customer_id": clicks["customer_id"], "touch_ts": clicks["event_time"],
                                       "channel": "email"})], ignore_index=True)
    touches["channel"] = touches["channel"].astype(str)
    touches["customer_id"] = touches["customer_id"].astype("int64")
    return touches


def test_clickhouse_paths_equal_pandas_and_conserve_under_every_model(store, events):
    run_ts = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS)
    since = run_ts - pd.Timedelta(days=LOOKBACK + 60)
    orders = _orders(store)
    journeys, outcomes = conversion_paths_in_store(events, orders, since, run_ts, LOOKBACK)
    left = events.query_df("SELECT count() AS n FROM system.tables WHERE database = {database:String} "
                           "AND name LIKE 'attribution_windows%'", {"database": events.database})
    assert int(left["n"].iloc[0]) == 0  # the build's own windows table is dropped: concurrent builds never share one

    windows, _ = journey_windows(orders, run_ts, LOOKBACK, since)
    touches = _pandas_touches(store, since, run_ts)
    joined = windows.merge(touches, on="customer_id")
    joined = joined[(joined["touch_ts"] > joined["window_start"]) & (joined["touch_ts"] <= joined["window_end"])]
    expected = joined.sort_values(["journey_id", "touch_ts", "channel"], kind="stable").reset_index(drop=True)
    assert len(journeys) > 1000
    np.testing.assert_array_equal(journeys["journey_id"].to_numpy(), expected["journey_id"].to_numpy())
    np.testing.assert_array_equal(journeys["channel"].to_numpy(), expected["channel"].to_numpy())
    assert (journeys["touch_ts"].to_numpy() == expected["touch_ts"].astype("datetime64[ns, UTC]").to_numpy()).all()

    converted = outcomes[outcomes["converted"]]
    kept = orders[(orders["status"] != "cancelled") & (orders["order_ts"] < run_ts)]
    assert set(converted["journey_id"]) == set(kept["order_id"])
    assert converted["revenue"].sum() == pytest.approx(kept["order_value"].sum())
    assert (~outcomes["converted"]).sum() > 0  # customers browsing without an order since
    # an order's last touch is its own session, at or before the order
    last = journeys.groupby("journey_id")["touch_ts"].max()
    at = converted.set_index("journey_id")["conversion_ts"].reindex(last.index).dropna()
    assert (last.reindex(at.index) <= at).all()
    for model in (models.first_touch, models.last_non_direct_touch, models.linear, models.time_decay,
                  models.position_based, models.markov_chain, models.shapley):
        models.check_conservation(model(journeys, outcomes), outcomes)
