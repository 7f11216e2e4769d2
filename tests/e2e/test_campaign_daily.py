"""Daily campaign analytics computed in ClickHouse (features.campaigns) equal a pandas computation from the
same hand-made events, spend and credits: counts, cost, credited conversions and revenue, the 7- and 28-day
sums over zero days, ROAS NULL at zero cost; the per-tier table sums to the campaign totals; an events
table from before the campaign column still works (per channel); send hours are local, DST included."""

from __future__ import annotations

import copy
import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.campaigns import (
    DAILY_COLUMNS, SEGMENT_COLUMNS, campaign_daily_in_store, campaign_segment_daily_in_store, email_send_hours_in_store,
)

RUN = dt.date(2024, 3, 15)
SINCE = RUN - dt.timedelta(days=30)
START = SINCE - dt.timedelta(days=27)  # the trailing windows read 27 days before SINCE
FIRST, LAST = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-03-20", tz="UTC")
WEB = [("paid_search", "brand"), ("paid_search", "generic"), ("paid_social", "spring"), ("organic", ""),
       ("display", "old")]
LEGACY_DDL = """CREATE TABLE IF NOT EXISTS legacy.events (
    event_time DateTime64(3, 'UTC'), session_id UInt64, customer_id UInt64, event_type LowCardinality(String),
    product_id UInt64, channel LowCardinality(String), device LowCardinality(String), is_machine UInt8
) ENGINE = MergeTree ORDER BY (customer_id, event_time)"""


def _events(rng: np.random.Generator) -> pd.DataFrame:
    """Web sessions of 1-4 events (a later event may name another channel and campaign: the first decides),
    8 % anonymous; 'display'/'old' only before SINCE; email sends, human and machine opens and clicks."""
    rows = []
    for session in range(1, 701):
        channel, campaign = WEB[rng.integers(len(WEB) - 1)]
        begin = FIRST + pd.Timedelta(minutes=int(rng.integers(0, int((LAST - FIRST).total_seconds() // 60))))
        if session % 50 == 0:
            channel, campaign, begin = "display", "old", FIRST + pd.Timedelta(days=int(rng.integers(0, 20)))
        customer = 0 if rng.random() < 0.08 else int(rng.integers(1, 51))
        for k in range(int(rng.integers(1, 5))):
            later = k > 0 and rng.random() < 0.3
            rows.append((begin + pd.Timedelta(minutes=7 * k), session, customer, "page_view" if k == 0 else "product_view",
                         "direct" if later else channel, "other" if later else campaign, 0))
    for day in pd.date_range(FIRST, LAST, freq="D"):
        for campaign in ("news", "promo") if day.dayofweek == 1 else ("promo",) if day.day % 10 == 0 else ():
            for customer in range(1, 51):
                sent = day + pd.Timedelta(hours=int(rng.integers(0, 24)), minutes=int(rng.integers(0, 60)))
                rows.append((sent, 0, customer, "email_send", "email", campaign, 0))
                if rng.random() < 0.05:
                    rows.append((sent + pd.Timedelta(seconds=30), 0, customer, "email_open", "email", campaign, 1))
                    rows.append((sent + pd.Timedelta(seconds=40), 0, customer, "email_click", "email", campaign, 1))
                if rng.random() < 0.4:
                    rows.append((sent + pd.Timedelta(minutes=50), 0, customer, "email_open", "email", campaign, 0))
                    if rng.random() < 0.3:
                        rows.append((sent + pd.Timedelta(minutes=55), 0, customer, "email_click", "email", campaign, 0))
    frame = pd.DataFrame(rows, columns=["event_time", "session_id", "customer_id", "event_type", "channel", "campaign",
                                        "is_machine"])
    return pd.DataFrame({
        "event_time": frame["event_time"].astype("datetime64[ms, UTC]"), "session_id": frame["session_id"].astype("uint64"),
        "customer_id": frame["customer_id"].astype("uint64"), "event_type": frame["event_type"],
        "product_id": np.zeros(len(frame), dtype="uint64"), "channel": frame["channel"], "device": "desktop",
        "is_machine": frame["is_machine"].astype("uint8"), "campaign": frame["campaign"],
    })


def _spend(rng: np.random.Generator) -> pd.DataFrame:
    """Money in quarters (float sums exact in any order); some days clicks without cost (ROAS NULL); 'gap'
    spends on three days only; 'old' before SINCE only."""
    rows = []
    for day in pd.date_range(FIRST.tz_localize(None), LAST.tz_localize(None), freq="D"):
        for channel, campaign in WEB[:3]:
            cost = 0.0 if rng.random() < 0.2 else float(rng.integers(4, 400)) / 4
            rows.append((day, channel, campaign, cost, int(rng.integers(0, 1000)), int(rng.integers(0, 40))))
        if day < pd.Timestamp(SINCE) - pd.Timedelta(days=5):
            rows.append((day, "display", "old", 25.0, 100, 3))
    for offset in (2, 9, 25):
        rows.append((pd.Timestamp(SINCE) + pd.Timedelta(days=offset), "affiliate", "gap", 50.25, 10, 1))
    return pd.DataFrame(rows, columns=["day", "channel", "campaign", "spend", "impressions", "clicks"])


def _credits(rng: np.random.Generator) -> pd.DataFrame:
    """Per order and credited (channel, campaign): halves and quarters of orders worth whole quarters."""
    rows = []
    pairs = [*WEB[:4], ("email", "news"), ("(none)", None), ("affiliate", "gap")]
    for order in range(400):
        day = pd.Timestamp(FIRST.tz_localize(None)) + pd.Timedelta(days=int(rng.integers(0, 80)))
        customer, value = int(rng.integers(0, 51)), float(rng.integers(40, 2000)) / 4
        for share in (0.5, 0.25, 0.25) if order % 3 else (1.0,):
            channel, campaign = pairs[rng.integers(len(pairs))]
            rows.append((day, channel, campaign, customer, share, share * value))
    return pd.DataFrame(rows, columns=["day", "channel", "campaign", "customer_id", "conversions", "revenue"])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(18)
    return _events(rng), _spend(rng), _credits(rng)


@pytest.fixture(scope="module")
def store(data, open_events):
    return open_events(data[0])


def _pandas_daily(events: pd.DataFrame, spend: pd.DataFrame, credits: pd.DataFrame) -> pd.DataFrame:
    """campaign_daily from the definitions in features.campaigns' docstring, in pandas."""
    start_ts, run_ts = pd.Timestamp(START, tz="UTC"), pd.Timestamp(RUN, tz="UTC")
    e = events[(events["event_time"] >= start_ts) & (events["event_time"] < run_ts)].sort_values("event_time", kind="stable")
    web = e[(e["session_id"] != 0) & ~e["event_type"].str.startswith("email_")]
    sessions = web.groupby(["customer_id", "session_id"]).first().reset_index()
    sessions = sessions.assign(day=sessions["event_time"].dt.tz_localize(None).dt.normalize(), sessions=1)
    email = e[e["event_type"].str.startswith("email_")]
    human = email["is_machine"] == 0
    email = email.assign(day=email["event_time"].dt.tz_localize(None).dt.normalize(),
                         email_sends=(email["event_type"] == "email_send").astype(int),
                         human_opens=((email["event_type"] == "email_open") & human).astype(int),
                         human_clicks=((email["event_type"] == "email_click") & human).astype(int))
    paid = spend.rename(columns={"spend": "cost", "clicks": "ad_clicks"})
    credited = credits.assign(campaign=credits["campaign"].fillna(""))
    keys = ["day", "channel", "campaign"]
    facts = pd.concat([sessions[[*keys, "sessions"]], email[[*keys, "email_sends", "human_opens", "human_clicks"]],
                       paid[[*keys, "cost", "impressions", "ad_clicks"]], credited[[*keys, "conversions", "revenue"]]])
    facts = facts[(facts["day"] >= pd.Timestamp(START)) & (facts["day"] < pd.Timestamp(RUN))]
    daily = facts.groupby(keys).sum(min_count=0).reset_index()
    active = daily.loc[daily["day"] >= pd.Timestamp(SINCE), ["channel", "campaign"]].drop_duplicates()
    days = pd.DataFrame({"day": pd.date_range(START, RUN - dt.timedelta(days=1), freq="D")})
    grid = active.merge(days, how="cross").merge(daily, on=keys, how="left").fillna(0)
    grid = grid.sort_values(["channel", "campaign", "day"]).reset_index(drop=True)
    for name, days_back in (("7d", 7), ("28d", 28)):
        for column in ("revenue", "cost", "conversions"):
            grid[f"{column}_{name}"] = grid.groupby(["channel", "campaign"])[column].transform(
                lambda s, n=days_back: s.rolling(n, min_periods=1).sum())
    grid["clicks"] = grid["ad_clicks"] + grid["human_clicks"]
    grid["roas"] = (grid["revenue"] / grid["cost"]).where(grid["cost"] > 0)
    grid["roas_7d"] = (grid["revenue_7d"] / grid["cost_7d"]).where(grid["cost_7d"] > 0)
    grid["roas_28d"] = (grid["revenue_28d"] / grid["cost_28d"]).where(grid["cost_28d"] > 0)
    grid["roas_trend_7d_vs_28d"] = (grid["roas_7d"] / grid["roas_28d"] - 1).where(grid["roas_28d"] > 0)
    grid["conversions_trend_7d_vs_28d"] = ((grid["conversions_7d"] / 7) / (grid["conversions_28d"] / 28) - 1).where(
        grid["conversions_28d"] > 0)
    out = grid[grid["day"] >= pd.Timestamp(SINCE)].reset_index(drop=True)
    return out.astype({c: "int64" for c in ("sessions", "email_sends", "human_opens", "human_clicks", "impressions",
                                            "ad_clicks", "clicks")})[list(DAILY_COLUMNS)]


def test_campaign_daily_equals_pandas(store, data) -> None:
    events, spend, credits = data
    daily = campaign_daily_in_store(store, spend, credits, SINCE, RUN)
    expected = _pandas_daily(events, spend, credits)
    pd.testing.assert_frame_equal(daily, expected, check_exact=False, rtol=1e-12)
    # what the comparison covers: a dense grid over zero days, clicks without cost, the window's edges
    pairs = set(zip(daily["channel"], daily["campaign"]))
    assert ("display", "old") not in pairs and {("affiliate", "gap"), ("(none)", ""), ("email", "promo")} <= pairs
    assert len(daily) == len(pairs) * 30 and (daily.groupby(["channel", "campaign"])["day"].nunique() == 30).all()
    gap = daily[daily["campaign"] == "gap"]
    assert (gap["cost"] > 0).sum() == 3 and gap["cost_7d"].gt(0).sum() == 7 + 7 + 5  # zero days after each spend
    free = daily[(daily["cost"] == 0) & (daily["ad_clicks"] > 0)]
    assert len(free) > 3 and free["roas"].isna().all()
    assert daily.loc[daily["channel"] == "paid_search", "roas_28d"].notna().all()
    assert (daily["human_opens"] < daily["email_sends"]).any() and daily["human_clicks"].sum() > 0
    # a rebuild replaces the loaded tables instead of adding to them
    again = campaign_daily_in_store(store, spend, credits, SINCE, RUN)
    pd.testing.assert_frame_equal(again, daily)


def test_segment_daily_sums_to_the_campaign_totals(store, data) -> None:
    events, spend, credits = data
    tiers = pd.DataFrame({"customer_id": np.arange(1, 41), "tier": np.where(np.arange(1, 41) % 2, "high", "low")})
    segments = campaign_segment_daily_in_store(store, spend, credits, tiers, SINCE, RUN)
    assert list(segments.columns) == list(SEGMENT_COLUMNS)
    assert set(segments["tier"]) == {"high", "low", "anonymous", "unknown"}
    daily = campaign_daily_in_store(store, spend, credits, SINCE, RUN)
    measures = ["sessions", "email_sends", "human_opens", "human_clicks", "conversions", "revenue"]
    summed = segments.groupby(["day", "channel", "campaign"])[measures].sum()
    joined = daily.set_index(["day", "channel", "campaign"])[measures].join(summed, rsuffix="_tiers").fillna(0)
    for m in measures:
        np.testing.assert_allclose(joined[f"{m}_tiers"], joined[m], rtol=1e-12)
    assert segments.loc[segments["tier"] == "anonymous", "sessions"].sum() == _anonymous_sessions(events)


def _anonymous_sessions(events: pd.DataFrame) -> int:
    e = events[(events["event_time"] >= pd.Timestamp(SINCE, tz="UTC")) & (events["event_time"] < pd.Timestamp(RUN, tz="UTC"))]
    return int(e.loc[(e["session_id"] != 0) & (e["customer_id"] == 0), "session_id"].nunique())


def test_events_without_a_campaign_column_run_per_channel(store, data) -> None:
    events, spend, credits = data
    legacy = copy.copy(store)  # the same chDB session (one per process), another database
    legacy.database = "legacy"
    legacy.command("CREATE DATABASE IF NOT EXISTS legacy")
    legacy.command(LEGACY_DDL)
    legacy.insert_arrow("events", pa.Table.from_pandas(events.drop(columns="campaign"), preserve_index=False))
    no_campaigns = spend.drop(columns="campaign")
    daily = campaign_daily_in_store(legacy, no_campaigns, credits.assign(campaign=None), SINCE, RUN)
    expected = _pandas_daily(events.assign(campaign=""), no_campaigns.assign(campaign=""), credits.assign(campaign=None))
    pd.testing.assert_frame_equal(daily, expected, check_exact=False, rtol=1e-12)
    assert set(daily["campaign"]) == {""} and daily.groupby("channel")["day"].nunique().eq(30).all()
    assert set(email_send_hours_in_store(legacy, pd.DataFrame({"customer_id": [], "timezone": []}), SINCE, RUN)["campaign"]) == {""}


def test_email_send_hours_are_local(store, data) -> None:
    events = data[0]
    zones = pd.DataFrame({"customer_id": np.arange(1, 51),
                          "timezone": np.where(np.arange(1, 51) % 2, "America/New_York", "Asia/Kolkata")})
    hours = email_send_hours_in_store(store, zones, SINCE, RUN)
    e = events[(events["event_type"] == "email_send") & (events["event_time"] >= pd.Timestamp(SINCE, tz="UTC"))
               & (events["event_time"] < pd.Timestamp(RUN, tz="UTC"))]
    zone = e["customer_id"].astype("int64").map(zones.set_index("customer_id")["timezone"])
    local = [t.tz_convert(z).hour for t, z in zip(e["event_time"], zone)]  # DST starts in New York on 2024-03-10
    expected = (e.assign(customer_id=e["customer_id"].astype("int64"), send_hour=local, sends=1)
                .groupby(["campaign", "customer_id", "send_hour"], as_index=False)["sends"].sum())
    pd.testing.assert_frame_equal(hours.sort_values(["campaign", "customer_id", "send_hour"]).reset_index(drop=True),
                                  expected.astype({"campaign": object, "send_hour": "int64", "sends": "int64"}))
