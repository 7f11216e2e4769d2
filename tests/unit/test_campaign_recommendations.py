"""Campaign recommendation rules (ml.attribution.campaigns) on small hand-made frames, each number worked
out by hand below; and the value tiers (features.campaigns.value_tiers) the per-tier analytics use."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from features.campaigns import value_tiers
from ml.attribution.campaigns import RECOMMENDATION_COLUMNS, campaign_recommendations

DAY = pd.Timestamp("2024-03-31")
# Poisson-gamma quantiles at 90 %, worked out by hand: Gamma(1) upper 0.95 = -ln 0.05; Gamma(2) upper 0.95
# solves exp(-x)(1 + x) = 0.05 (chi2 table: 9.4877 / 2); Gamma(1) lower 0.05 = -ln 0.95
G1_UPPER, G2_UPPER, G1_LOWER = -math.log(0.05), 4.743865, -math.log(0.95)
Z90 = 1.6448536  # the normal 0.95 quantile


def _daily(rows: list[tuple[str, str, float, float, float]]) -> pd.DataFrame:
    """campaign_daily's last day (plus an earlier day the rules must ignore): (channel, campaign, cost_28d,
    revenue_28d, conversions_28d)."""
    last = pd.DataFrame(rows, columns=["channel", "campaign", "cost_28d", "revenue_28d", "conversions_28d"])
    earlier = last.assign(cost_28d=1e6, revenue_28d=0.0, conversions_28d=0.0)
    return pd.concat([earlier.assign(day=DAY - pd.Timedelta(days=1)), last.assign(day=DAY)], ignore_index=True)


def _allocation(channel: str, current: float, recommended: float, revenue_now: float, revenue_new: float,
                low: float, high: float, moved: bool = True) -> dict:
    return {"channel": channel, "current_spend": current, "recommended_spend": recommended,
            "expected_revenue_current": revenue_now, "expected_revenue_recommended": revenue_new,
            "expected_revenue_recommended_low": low, "expected_revenue_recommended_high": high,
            "marginal_roas": 1.0, "marginal_roas_low": 0.5, "marginal_roas_high": 1.5, "horizon_days": 28,
            "moved": moved, "reason": ""}


def _row(out: pd.DataFrame, campaign: str, recommendation: str) -> pd.Series:
    hit = out[(out["campaign"] == campaign) & (out["recommendation"] == recommendation)]
    assert len(hit) == 1, out[["campaign", "recommendation"]]
    return hit.iloc[0]


def _assert_numbers(out: pd.DataFrame) -> None:
    assert list(out.columns) == list(RECOMMENDATION_COLUMNS)
    numbers = out[["current_value", "recommended_value", "expected_impact", "impact_low", "impact_high"]]
    assert np.isfinite(numbers.to_numpy(dtype=float)).all()
    assert (out["impact_low"] <= out["expected_impact"] + 1e-9).all()
    assert (out["expected_impact"] <= out["impact_high"] + 1e-9).all()
    assert set(out["recommendation"]) <= {"scale_up", "scale_down", "pause", "change_send_time"}  # never change offer
    for _, row in out.iterrows():
        assert f"{row['expected_impact']:+.1f}" in row["reason"]


def test_pause_fires_only_when_the_roas_upper_bound_is_below_the_minimum() -> None:
    daily = _daily([
        ("display", "weak", 280.0, 28.0, 1.0),       # ROAS 0.1, one conversion worth 28
        ("display", "strong", 280.0, 560.0, 20.0),   # ROAS 2
        ("display", "young", 28.0, 0.0, 0.0),        # no conversion yet, spent little: bound too wide
        ("display", "dud", 2800.0, 0.0, 0.0),        # no conversion on a lot of spend
        ("email", "news", 0.0, 300.0, 10.0),         # never spent: nothing to pause
    ])
    out = campaign_recommendations(daily, None, None, None)
    _assert_numbers(out)
    assert sorted(out["campaign"]) == ["dud", "weak"] and set(out["recommendation"]) == {"pause"}

    weak = _row(out, "weak", "pause")  # revenue per conversion 28; upper 28 * G2_UPPER = 132.83 -> ROAS 0.474
    assert weak["current_value"] == pytest.approx(10.0) and weak["recommended_value"] == 0.0
    assert weak["unit"] == "daily_spend"
    assert weak["expected_impact"] == pytest.approx(280 - 28)
    assert weak["impact_low"] == pytest.approx(280 - 28 * G2_UPPER, rel=1e-6)
    assert weak["impact_high"] == pytest.approx(280 - 28 * G1_LOWER, rel=1e-6)
    assert "0.47" in weak["reason"] and "0.10" in weak["reason"]

    # 'young' and 'dud' have no conversion: the channel's revenue per conversion (28 + 560) / 21 = 28 prices the
    # Gamma(1) bound, 28 * 3.0 = 83.9: 'young' could still reach ROAS 3.0 on 28 spend, 'dud' at most 0.03
    dud = _row(out, "dud", "pause")
    assert dud["expected_impact"] == pytest.approx(2800.0)
    assert dud["impact_low"] == pytest.approx(2800 - 28 * G1_UPPER, rel=1e-6)
    assert dud["impact_high"] == pytest.approx(2800.0)

    # the horizon scales the impact; a lower minimum spares 'weak' (its bound 0.474 is above 0.4)
    longer = campaign_recommendations(daily, None, None, None, horizon_days=56, min_roas=0.4)
    assert list(longer["campaign"]) == ["dud"]
    assert longer["expected_impact"].iloc[0] == pytest.approx(5600.0)


def test_no_conversion_anywhere_means_no_pause() -> None:
    daily = _daily([("display", "a", 500.0, 0.0, 0.0), ("paid_search", "b", 500.0, 0.0, 0.0)])
    assert campaign_recommendations(daily, None, None, None).empty


def test_scale_splits_each_moved_channel_over_its_campaigns() -> None:
    daily = _daily([
        ("paid_search", "x", 1680.0, 3360.0, 60.0),  # 60 a day, ROAS 2
        ("paid_search", "y", 1120.0, 1120.0, 20.0),  # 40 a day, ROAS 1
        ("paid_search", "z", 2800.0, 0.0, 0.0),      # paused (upper ROAS 56 * 3.0 / 2800 = 0.06): not scaled
        ("display", "p", 560.0, 504.0, 18.0),        # 20 a day, ROAS 0.9 (upper bound above 1: kept)
        ("display", "q", 840.0, 1680.0, 30.0),       # 30 a day, ROAS 2
        ("display", "w", 2800.0, 0.0, 0.0),          # paused: a cut must not land on it
        ("affiliate", "", 280.0, 700.0, 10.0),       # a store without campaigns: the channel is its one campaign
    ])
    allocations = pd.DataFrame([
        _allocation("paid_search", 100.0, 130.0, 5000.0, 5600.0, 5200.0, 6000.0),  # +30 a day: +600 (200 to 1000)
        _allocation("display", 50.0, 30.0, 2000.0, 1800.0, 1700.0, 1900.0),        # -20 a day: -200 (-300 to -100)
        _allocation("affiliate", 10.0, 14.0, 700.0, 800.0, 720.0, 880.0),          # +4 a day: +100 (20 to 180)
    ])
    out = campaign_recommendations(daily, allocations, None, None)
    _assert_numbers(out)
    assert sorted(zip(out["campaign"], out["recommendation"])) == [
        ("", "scale_up"), ("p", "scale_down"), ("w", "pause"), ("x", "scale_up"), ("y", "scale_up"), ("z", "pause")]

    # the increase goes by 28-day revenue: x 3360 / 4480 = 75 %, y 25 %
    x, y = _row(out, "x", "scale_up"), _row(out, "y", "scale_up")
    assert (x["current_value"], x["recommended_value"]) == pytest.approx((60.0, 82.5))
    assert (y["current_value"], y["recommended_value"]) == pytest.approx((40.0, 47.5))
    assert (x["expected_impact"], x["impact_low"], x["impact_high"]) == pytest.approx((450.0, 150.0, 750.0))
    assert (y["expected_impact"], y["impact_low"], y["impact_high"]) == pytest.approx((150.0, 50.0, 250.0))
    # the cut comes out of the lowest ROAS first: p gives its whole 20 a day, q keeps its spend
    p = _row(out, "p", "scale_down")
    assert (p["current_value"], p["recommended_value"]) == pytest.approx((20.0, 0.0))
    assert (p["expected_impact"], p["impact_low"], p["impact_high"]) == pytest.approx((-200.0, -300.0, -100.0))
    whole = _row(out, "", "scale_up")
    assert (whole["current_value"], whole["recommended_value"], whole["expected_impact"]) == pytest.approx((10.0, 14.0, 100.0))
    assert "+600.00" in x["reason"] and "75%" in x["reason"]


def test_scale_needs_a_move_whose_revenue_interval_excludes_zero() -> None:
    daily = _daily([("paid_search", "x", 1680.0, 3360.0, 60.0), ("display", "p", 560.0, 1120.0, 18.0)])
    allocations = pd.DataFrame([
        _allocation("paid_search", 100.0, 130.0, 5000.0, 5600.0, 5200.0, 6000.0, moved=False),  # not moved
        _allocation("display", 50.0, 60.0, 2000.0, 2100.0, 1950.0, 2250.0),                    # -50 to +250
    ])
    assert campaign_recommendations(daily, allocations, None, None).empty
    excluded = pd.DataFrame([_allocation("display", 50.0, 60.0, np.nan, np.nan, None, None)])  # no curve: no numbers
    assert campaign_recommendations(daily, excluded, None, None).empty


def _send_times(n: int) -> pd.DataFrame:
    ids = np.arange(1, n + 1)
    return pd.DataFrame({"customer_id": ids, "best_hour": np.where(ids <= 3 * n // 4, 19, 8), "default_hour": 10,
                         "expected_rate_best": 0.3, "expected_rate_default": 0.1})


def test_change_send_time_fires_when_the_extra_opens_interval_is_above_zero() -> None:
    times = _send_times(100)
    ids = times["customer_id"]
    sends = pd.concat([
        pd.DataFrame({"campaign": "news", "customer_id": ids, "send_hour": 10, "sends": 1}),      # all at default
        pd.DataFrame({"campaign": "promo", "customer_id": ids, "send_hour": times["best_hour"], "sends": 1}),
        pd.DataFrame({"campaign": "tiny", "customer_id": ids[:4], "send_hour": 10, "sends": 1}),
        pd.DataFrame({"campaign": "mixed", "customer_id": ids, "send_hour": np.where(ids <= 30, 10, times["best_hour"]),
                      "sends": 1}),
        pd.DataFrame({"campaign": "news", "customer_id": [1, 2], "send_hour": 14, "sends": 1}),  # no rate at 14
        pd.DataFrame({"campaign": "news", "customer_id": [999], "send_hour": 10, "sends": 3}),   # no send-time row
    ], ignore_index=True)
    daily = _daily([("email", "news", 0.0, 0.0, 0.0)])
    out = campaign_recommendations(daily, None, times, sends)
    _assert_numbers(out)
    # news: 100 rated sends gain 0.3 - 0.1 each = 20, variance 100 (0.21 + 0.09) = 30;
    # promo already goes at the best hours (gain 0); tiny: 0.8 - 1.645 sqrt(1.2) < 0;
    # mixed: only its 30 sends at the default hour would move: 6 - 1.645 sqrt(9) = 1.07 > 0
    assert list(out["campaign"]) == ["mixed", "news"]
    mixed = _row(out, "mixed", "change_send_time")
    assert (mixed["expected_impact"], mixed["impact_low"]) == pytest.approx((6.0, 6 - Z90 * 3), rel=1e-6)
    assert mixed["current_value"] == 19.0  # its modal hour: 45 of the 70 at their best hour go at 19
    news = _row(out, "news", "change_send_time")
    assert (news["recommendation"], news["unit"], news["channel"]) == ("change_send_time", "local_hour", "email")
    assert (news["current_value"], news["recommended_value"]) == (10.0, 19.0)
    assert news["expected_impact"] == pytest.approx(20.0)
    assert (news["impact_low"], news["impact_high"]) == pytest.approx((20 - Z90 * math.sqrt(30), 20 + Z90 * math.sqrt(30)), rel=1e-6)
    assert "5 sends without a rate" in news["reason"] and "105 sends" in news["reason"]

    # twice the horizon: twice the opens, the spread by sqrt(2)
    doubled = _row(campaign_recommendations(daily, None, times, sends, horizon_days=56), "news", "change_send_time")
    assert doubled["impact_low"] == pytest.approx(40 - Z90 * math.sqrt(60), rel=1e-6)
    # a rate at the sent hour, when given, is used as it is: at 0.29 the gain of 1 open is within the noise
    rated = sends[sends["campaign"] != "mixed"].assign(expected_rate_sent=0.29)
    assert campaign_recommendations(daily, None, times, rated).empty
    # without a send-time champion the rule is off
    assert campaign_recommendations(daily, None, None, sends).empty


def test_send_times_must_be_one_row_per_customer() -> None:
    times = pd.concat([_send_times(4).assign(day_type="weekday"), _send_times(4).assign(day_type="weekend")])
    sends = pd.DataFrame({"campaign": "news", "customer_id": [1], "send_hour": 10, "sends": 1})
    with pytest.raises(ValueError, match="one row per customer"):
        campaign_recommendations(_daily([]), None, times, sends)


def test_value_tiers() -> None:
    run = dt.date(2024, 6, 1)
    ts = pd.Timestamp(run, tz="UTC")
    orders = pd.DataFrame({
        "customer_id": [1, 2, 3, 4, 5, 5, 6, 7],
        "order_ts": [ts - pd.Timedelta(days=d) for d in (100, 60, 40, 30, 10, 200, 5, 400)],
        "status": ["completed"] * 6 + ["completed", "cancelled"],
        "order_value": [300.0, 200.0, 100.0, 100.0, 50.0, 10.0, 999.0, 500.0],
    })
    tiers = value_tiers(orders, run, customers=[8]).set_index("customer_id")["tier"]
    # 6 ordered only in the last 28 days, 7's only order was cancelled, 8 never ordered: new.
    # Established 1..5 by 365-day revenue 300, 200, 100, 100, 60: percentile ranks 1, .8, .5, .5, .2
    assert tiers.to_dict() == {1: "high", 2: "high", 3: "mid", 4: "mid", 5: "low", 6: "new", 7: "new", 8: "new"}
    # four established customers: percentile ranks .25, .5, .75, 1 -> low, mid, high, high
    few = orders[orders["customer_id"].isin([1, 2, 3, 5])].assign(order_value=[400.0, 300.0, 200.0, 100.0, 0.0])
    assert value_tiers(few, run).set_index("customer_id")["tier"].to_dict() == {1: "high", 2: "high", 3: "mid", 5: "low"}
