"""The event features computed inside ClickHouse (:func:`features.customer.event_features_sql`, and at every
training cutoff in one query: :func:`features.customer.event_features_at_cutoffs_sql`) equal what
:func:`features.customer.customer_features` computes in pandas from the daily events extract."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from features.customer import (
    EVENT_FEATURES_AT_CUTOFFS, customer_event_features, customer_features, event_features_at,
    event_features_at_cutoffs_in_store, event_features_params, event_features_sql, features_at, history_since,
    typed_event_features,
)
from revopt.platform.extract import DAILY_EVENTS_SQL
from revopt.platform.identity import events_source, replace_resolution
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
        DAILY_EVENTS_SQL.format(events=events_source(events, known_from=True)),
        {"since": since_ts.strftime("%Y-%m-%d %H:%M:%S"), "run_ts": run_ts.strftime("%Y-%m-%d %H:%M:%S")},
    )
    daily["day"] = pd.to_datetime(daily["day"]).astype("datetime64[ns]")
    daily["known_from"] = pd.to_datetime(daily["known_from"]).astype("datetime64[ns]")
    return daily


@pytest.mark.parametrize("days_before_end", [0, 45])
def test_clickhouse_event_features_equal_pandas(store, events, days_before_end: int) -> None:
    run_ts = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS - days_before_end)
    since_ts = run_ts - pd.Timedelta(days=LOOKBACK_DAYS)
    daily = _daily_events(events, since_ts, run_ts)
    in_clickhouse = typed_event_features(
        events.query_df(event_features_sql(events.database, events_source(events)), event_features_params(since_ts, run_ts))
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


def test_an_anonymous_session_counts_only_once_its_device_login_is_known(events) -> None:
    """A training extract is read once, as of the run date, and cut at earlier cutoffs: a device's anonymous
    session of 1 March must not enrich the features at a 10 March cutoff when the device first logged in on
    20 March (the customers who come back are the ones who log in: that would leak the future)."""
    import pyarrow as pa

    t = lambda text: pd.Timestamp(text, tz="UTC")  # noqa: E731
    customer = 9_000_007  # not one of the store's
    events.insert_arrow("events", pa.Table.from_pandas(pd.DataFrame({
        "event_time": [t("2024-03-01 10:00"), t("2024-03-20 10:00"), t("2024-03-20 10:05")],
        "session_id": pd.Series([10**9, 10**9 + 1, 10**9 + 1], dtype="uint64"),
        "customer_id": pd.Series([0, 0, customer], dtype="uint64"), "anonymous_id": ["d-test", "d-test", "d-test"],
        "event_type": ["page_view", "page_view", "checkout"], "product_id": pd.Series([0, 0, 0], dtype="uint64"),
        "channel": ["direct"] * 3, "device": ["desktop"] * 3, "is_machine": pd.Series([0, 0, 0], dtype="uint8"),
        "campaign": [""] * 3}), preserve_index=False))
    replace_resolution(events, pd.DataFrame({"identifier_type": ["anonymous_id"], "identifier": ["d-test"],
                                             "customer_id": [customer], "first_seen": [t("2024-03-20 10:05")]}))
    try:
        since = t("2024-01-01")
        extract = _daily_events(events, since, t("2024-04-01"))  # the training extract, as of the run date
        assert customer not in set(customer_event_features(extract, t("2024-03-10"))["customer_id"])
        at_the_cutoff = customer_event_features(_daily_events(events, since, t("2024-03-10")), t("2024-03-10"))
        pd.testing.assert_frame_equal(customer_event_features(extract, t("2024-03-10")), at_the_cutoff)
        after_login = customer_event_features(extract, t("2024-03-25")).set_index("customer_id")
        assert after_login.loc[customer, "sessions_30d"] == 2  # the anonymous session of 1 March and the login one
        at_cutoffs = event_features_at_cutoffs_in_store(events, since, t("2024-04-01"),
                                                        [t("2024-03-10"), t("2024-03-25")], None)
        for cutoff in (t("2024-03-10"), t("2024-03-25")):
            pd.testing.assert_frame_equal(event_features_at(at_cutoffs, cutoff, None),
                                          customer_event_features(extract, cutoff))
        assert event_features_at(at_cutoffs, t("2024-03-25"), None).set_index("customer_id").loc[customer, "sessions_30d"] == 2
    finally:
        replace_resolution(events, pd.DataFrame(columns=["identifier_type", "identifier", "customer_id", "first_seen"]))


def test_event_features_at_every_training_cutoff_equal_pandas(store, events) -> None:
    """One ClickHouse query at several cutoffs (close together, 30 days apart, one before most history, one
    with a lookback shorter than the extract) equals the pandas features of the training extract's daily rows
    cut at each cutoff and its lookback, row for row, and so do the customer features built from either."""
    run_ts = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS)
    since_ts = run_ts - pd.Timedelta(days=DAYS)
    lookback = 60
    cutoffs = [run_ts - pd.Timedelta(days=days) for days in (0, 3, 30, 45, 90, 140)]
    daily = _daily_events(events, since_ts, run_ts)
    at_cutoffs = event_features_at_cutoffs_in_store(events, since_ts, run_ts, cutoffs, lookback)
    assert at_cutoffs.attrs["cutoffs"] == sorted(c.date().isoformat() for c in cutoffs)
    shop = store.shop
    lines = shop["order_lines"].assign(value=lambda f: f["quantity"] * f["unit_price"]).groupby("order_id")["value"].sum()
    orders = shop["orders"][shop["orders"]["order_ts"] < run_ts].assign(
        order_value=lambda f: f["order_id"].map(lines).fillna(0.0))
    frames = {"customers": shop["customers"], "orders": orders}
    for cutoff in cutoffs:
        _, cut = history_since(orders, daily, cutoff - pd.Timedelta(days=lookback))
        in_pandas = customer_event_features(cut, cutoff)
        pd.testing.assert_frame_equal(event_features_at(at_cutoffs, cutoff, lookback), in_pandas, obj=f"at {cutoff.date()}")
        pd.testing.assert_frame_equal(features_at({**frames, EVENT_FEATURES_AT_CUTOFFS: at_cutoffs}, cutoff, lookback),
                                      features_at({**frames, "customer_daily_events": daily}, cutoff, lookback))
    at_most_history = event_features_at(at_cutoffs, cutoffs[0], lookback).set_index("customer_id")
    assert len(at_most_history) > 1000 and (at_most_history["sessions_7d"] > 0).any()
    assert at_most_history["last_session_day"].isna().any()  # email-only customers within the lookback
    with pytest.raises(KeyError, match="not at"):
        event_features_at(at_cutoffs, run_ts - pd.Timedelta(days=1), lookback)
    with pytest.raises(ValueError, match="not 90"):
        event_features_at(at_cutoffs, run_ts, 90)
