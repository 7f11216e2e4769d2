"""The event features computed inside ClickHouse (:func:`features.customer.event_features_sql`) equal
what :func:`features.customer.customer_features` computes in pandas from the daily events extract."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from features.customer import (
    customer_event_features, customer_features, event_features_params, event_features_sql, typed_event_features,
)
from revopt.platform.extract import DAILY_EVENTS_SQL
from revopt.sample_data.synth import generate_store

START = dt.date(2024, 1, 1)
DAYS = 150
LOOKBACK_DAYS = 120


@pytest.fixture(scope="module")
def store():
    return generate_store(1500, DAYS, START, seed=23)


@pytest.fixture(scope="module")
def events(store, open_events):
    return open_events(store.events)


def _daily_events(events, since_ts: pd.Timestamp, run_ts: pd.Timestamp) -> pd.DataFrame:
    daily = events.query_df(
        DAILY_EVENTS_SQL.format(database=events.database),
        {"since": since_ts.strftime("%Y-%m-%d %H:%M:%S"), "run_ts": run_ts.strftime("%Y-%m-%d %H:%M:%S")},
    )
    daily["day"] = pd.to_datetime(daily["day"]).astype("datetime64[ns]")
    return daily


@pytest.mark.parametrize("days_before_end", [0, 45])
def test_clickhouse_event_features_equal_pandas(store, events, days_before_end: int) -> None:
    run_ts = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS - days_before_end)
    since_ts = run_ts - pd.Timedelta(days=LOOKBACK_DAYS)
    daily = _daily_events(events, since_ts, run_ts)
    in_clickhouse = typed_event_features(
        events.query_df(event_features_sql(events.database), event_features_params(since_ts, run_ts))
    )
    in_pandas = customer_event_features(daily, run_ts)
    assert len(in_pandas) > 1000 and (in_pandas["sessions_7d"] > 0).any() and in_pandas["last_session_day"].isna().any()
    pd.testing.assert_frame_equal(in_clickhouse, in_pandas)

    shop = store.shop
    lines = shop["order_lines"].assign(value=lambda f: f["quantity"] * f["unit_price"]).groupby("order_id")["value"].sum()
    orders = shop["orders"][shop["orders"]["order_ts"] < run_ts].assign(
        order_value=lambda f: f["order_id"].map(lines).fillna(0.0))
    pd.testing.assert_frame_equal(
        customer_features(shop["customers"], orders, None, run_ts, event_features=in_clickhouse),
        customer_features(shop["customers"], orders, daily, run_ts),
    )
