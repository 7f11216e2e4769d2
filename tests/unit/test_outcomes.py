"""Outcome monitoring of the recommendation families (ml.families.outcomes: pricing, send time, budget) on
hand-built published rows and extracts: which expected figure applies (the price charged, the spend
made), the realised metrics to the digit, which horizon a night has, the versions' comparable test
values and the retraining rule."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ml.families.outcomes import (
    Outcome,
    Scored,
    budget_outcome,
    comparable_test_values,
    horizon_days,
    is_due,
    model_target,
    performance_drops,
    performance_rows,
    pricing_outcome,
    send_time_outcome,
)
from ml.params import RunParams

R = dt.date(2031, 2, 3)  # a Monday, before any DST change of the zones used here


# --- pricing -------------------------------------------------------------------------------------------

H_PRICE = 7
PRICING = Scored(R, "pricing", "revopt_price_elasticity", "4")


def _recommendations() -> pd.DataFrame:
    return pd.DataFrame({
        "product_id": [1, 2, 3, 4],
        "current_price": [10.0, 5.0, 20.0, 8.0],
        "recommended_price": [11.0, 5.0, 18.0, 9.0],
        "expected_units_current": [14.0, 21.0, 1.4, 7.0],
        "expected_units_recommended": [7.0, 21.0, 0.7, 6.0],
    })


def _sales(p1_price: float = 11.0) -> pd.DataFrame:
    """28 days before R and the 7 after, plus a day at R + 7 (outside). 1 sells 1 a day at ``p1_price`` in the
    window (2 a day before), 2 sells 3 a day at 5, 3 sells nothing at its list price 18 (the recommended one);
    4 has no list price in the window (delisted) and 5 was not recommended."""
    rows = []
    for offset in range(-28, H_PRICE + 1):
        day = pd.Timestamp(R) + pd.Timedelta(days=offset)
        after = offset >= 0
        rows += [(1, day, 1 if after else 2, p1_price if after else 2 * 10.0, 10.0),
                 (2, day, 3, 15.0, 5.0), (3, day, 0, 0.0, 18.0 if after else 20.0), (5, day, 9, 90.0, 10.0)]
        if not after:
            rows.append((4, day, 1, 8.0, 8.0))
    return pd.DataFrame(rows, columns=["product_id", "day", "units", "revenue", "list_price"])


def test_a_night_whose_realised_units_equal_the_expected_has_no_error():
    outcome = pricing_outcome(PRICING, H_PRICE, _recommendations(), _sales())
    labelled = outcome.labelled.set_index("product_id")
    # 4 had no list price in the window: left out; 5 was not recommended
    assert labelled.index.tolist() == [1, 2, 3]
    # 1 sold at its recommended price 11, 3 sold nothing at its list price 18 (the recommended): both use
    # expected_units_recommended; 2's recommendation is its current price
    assert labelled["charged_price"].tolist() == [11.0, 5.0, 18.0]
    assert labelled["followed"].tolist() == [True, False, True]
    assert labelled["prediction"].tolist() == [7.0, 21.0, 0.7]
    assert labelled["target"].tolist() == [7.0, 21.0, 0.0]
    m = outcome.metrics
    assert m["realised_units"] == 28.0 and m["expected_units"] == pytest.approx(28.7)
    assert m["units_ratio"] == pytest.approx(28 / 28.7)
    assert m["wape"] == pytest.approx(0.7 / 28)  # only 3's 0.7 expected units did not sell
    # daily deviance: 1 and 2 exactly as expected (0); 3: 7 days of 0 units at 0.1 a day, 2 x 0.1 each; 21 days
    assert m["poisson_deviance"] == pytest.approx(7 * 0.2 / 21)
    assert m["share_price_followed"] == 1.0  # 1 and 3 moved, both sold at the recommended price
    assert outcome.report == "regression" and len(outcome.labelled) == 3


def test_the_baseline_is_the_recent_daily_rate_and_the_skill_is_relative_to_it():
    outcome = pricing_outcome(PRICING, H_PRICE, _recommendations(), _sales())
    # baseline rates: 1 sold 2 a day over the 28 days before R, 2 three a day, 3 nothing: (units + 0.5) / 28
    y = np.array([1.0] * 7 + [3.0] * 7 + [0.0] * 7)
    mu = np.repeat([(56 + 0.5) / 28, (84 + 0.5) / 28, 0.5 / 28], 7)
    expected = 2 * np.mean(np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0) - (y - mu))
    assert outcome.metrics["baseline_poisson_deviance"] == pytest.approx(expected)
    assert outcome.metrics["deviance_skill"] == pytest.approx(1 - (1.4 / 21) / expected)


def test_a_price_left_at_the_current_level_is_compared_with_the_units_expected_there():
    outcome = pricing_outcome(PRICING, H_PRICE, _recommendations(), _sales(p1_price=10.2))
    labelled = outcome.labelled.set_index("product_id")
    assert labelled.loc[1, "charged_price"] == pytest.approx(10.2) and not labelled.loc[1, "followed"]
    assert labelled.loc[1, "prediction"] == 14.0  # expected_units_current: 10.2 is closer to 10 than to 11
    assert outcome.metrics["units_ratio"] == pytest.approx(28 / 35.7)
    assert outcome.metrics["wape"] == pytest.approx((7 + 0.7) / 28)
    assert outcome.metrics["share_price_followed"] == 0.5


def test_a_night_without_products_on_sale_has_no_metrics():
    sales = _sales()
    outcome = pricing_outcome(PRICING, H_PRICE, _recommendations(), sales[sales["product_id"] == 5])
    assert outcome.metrics == {} and outcome.labelled.empty


# --- send time -----------------------------------------------------------------------------------------

H_SEND = 7  # the window is [2031-02-03, 2031-02-10)
SEND_TIME = Scored(R, "send_time", "revopt_send_time", "2")


def _send_time_rows() -> pd.DataFrame:
    """1 (New York, UTC-5) one curve, best 9; 2 (Berlin, UTC+1) weekday best 8 and weekend best 20; 3 (UTC)
    shaped by activity, best 21. The default hour is 10 for all."""
    columns = ["customer_id", "day_type", "timezone", "best_hour", "default_hour", "expected_rate_best", "signal"]
    return pd.DataFrame([(1, "any", "America/New_York", 9, 10, 0.3, "email"),
                         (2, "weekday", "Europe/Berlin", 8, 10, 0.5, "email"),
                         (2, "weekend", "Europe/Berlin", 20, 10, 0.4, "email"),
                         (3, "any", "UTC", 21, 10, 0.2, "activity")], columns=columns)


def _utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _engagement() -> pd.DataFrame:
    rows = [
        (1, _utc("2031-02-03 14:00"), 4, 2, 0),  # 09 local: near best (9) and near the default (10)
        (1, _utc("2031-02-04 20:00"), 4, 0, 0),  # 15 local
        (1, _utc("2031-02-05 02:00"), 0, 0, 5),  # sessions of an email customer: not activity evidence
        (1, _utc("2031-02-02 14:00"), 10, 10, 0),  # before R
        (1, _utc("2031-02-10 14:00"), 10, 0, 0),  # R + 7: after the window
        (2, _utc("2031-02-08 19:00"), 2, 2, 0),  # Saturday 20 local: the weekend best
        (2, _utc("2031-02-05 19:00"), 2, 0, 0),  # Wednesday 20 local: far from the weekday best 8
        (2, _utc("2031-02-06 09:00"), 2, 1, 0),  # Thursday 10 local: the default hour, 2 h from the best
        (3, _utc("2031-02-04 21:00"), 0, 0, 3),  # near best
        (3, _utc("2031-02-06 10:00"), 0, 0, 1),  # near the default
        (3, _utc("2031-02-07 21:00"), 1, 0, 0),  # a first send near best: its expected rate is an activity share
        (9, _utc("2031-02-04 21:00"), 5, 5, 0),  # no recommendation published
    ]
    return pd.DataFrame(rows, columns=["customer_id", "hour_utc", "sends", "opens", "sessions"]).assign(clicks=0)


def _orders() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": [3, 1], "order_ts": [_utc("2031-02-05 22:30"), _utc("2031-02-05 09:00")]})


def test_open_rates_near_the_recommended_hour_are_read_on_the_customers_clock():
    outcome = send_time_outcome(SEND_TIME, H_SEND, _send_time_rows(), _engagement(), _orders())
    m = outcome.metrics
    assert m["sends"] == 15 and m["open_rate"] == pytest.approx(5 / 15)
    assert m["open_rate_near_best"] == pytest.approx(4 / 7)  # 1's 9 o'clock, 2's Saturday 20 o'clock, 3's 21
    assert m["open_rate_elsewhere"] == pytest.approx(1 / 8)
    assert m["open_rate_near_default"] == pytest.approx(3 / 6)  # 1's 9 o'clock, 2's 10 o'clock
    assert m["lift_near_best"] == pytest.approx((4 / 7) / (5 / 15))
    assert m["lift_vs_default"] == pytest.approx((4 / 7) / (3 / 6))
    assert m["share_sends_near_best"] == pytest.approx(7 / 15)
    # the published rate of the customers whose curve came from email (3's is a share of its activity)
    assert m["expected_open_rate_near_best"] == pytest.approx((4 * 0.3 + 2 * 0.4) / 6)
    # 3's activity: 3 sessions at 21 and an order at 22:30 near its best 21, a session at 10
    assert m["activity"] == 5 and m["share_near_best"] == pytest.approx(4 / 5)
    assert m["share_near_default"] == pytest.approx(1 / 5)
    labelled = outcome.labelled.set_index("customer_id")
    assert labelled.index.tolist() == [1, 2, 3]
    assert labelled.loc[2, ["sends", "sends_near_best", "opens_near_best"]].tolist() == [6, 2, 2]
    assert outcome.report is None


def test_a_store_without_email_gets_only_the_activity_shares():
    engagement = _engagement().assign(sends=0, opens=0)
    m = send_time_outcome(SEND_TIME, H_SEND, _send_time_rows(), engagement, _orders()).metrics
    assert set(m) == {"activity", "share_near_best", "share_near_default"}


# --- budget --------------------------------------------------------------------------------------------

H_BUDGET = 4
BUDGET = Scored(R, "budget", "revopt_budget_allocation", "1")


def _allocations() -> pd.DataFrame:
    return pd.DataFrame({
        "channel": ["search", "social", "display"],
        "current_spend": [100.0, 50.0, 20.0], "recommended_spend": [130.0, 35.0, 20.0],
        "expected_revenue_current": [1000.0, 400.0, np.nan], "expected_revenue_recommended": [1200.0, 300.0, np.nan],
        "binding_constraint": ["none", "max_change", "excluded"],
    })


def _spend() -> pd.DataFrame:
    days = [pd.Timestamp(R) + pd.Timedelta(days=d) for d in range(-2, H_BUDGET + 1)]
    # search spends 260 on two of the window's four days (no row on the others: no spend), 130 a day
    rows = [(day, "search", 999.0 if not 0 <= i - 2 < H_BUDGET else 260.0) for i, day in enumerate(days) if i - 2 not in (1, 2)]
    rows += [(day, "social", 50.0) for day in days]
    return pd.DataFrame(rows, columns=["day", "channel", "spend"])


def _budget_orders() -> pd.DataFrame:
    rows = [(_utc("2031-02-03 08:00"), "search", "completed", 600.0), (_utc("2031-02-06 23:59"), "search", "completed", 600.0),
            (_utc("2031-02-04 12:00"), "social", "completed", 500.0), (_utc("2031-02-04 13:00"), "social", "cancelled", 1000.0),
            (_utc("2031-02-02 23:00"), "search", "completed", 5000.0),  # before R
            (_utc("2031-02-07 00:00"), "search", "completed", 5000.0),  # R + 4: after the window
            (_utc("2031-02-04 12:00"), "email", "completed", 300.0)]  # not a paid channel
    return pd.DataFrame(rows, columns=["order_ts", "channel", "status", "order_value"])


def test_revenue_is_compared_at_the_spend_the_channels_actually_got():
    outcome = budget_outcome(BUDGET, H_BUDGET, _allocations(), _spend(), _budget_orders(), "attributed")
    labelled = outcome.labelled.set_index("channel")
    assert labelled.index.tolist() == ["search", "social"]  # display was excluded by the fit
    assert labelled["realised_spend"].tolist() == [130.0, 50.0]
    assert labelled["followed"].tolist() == [True, False]  # search moved to 130; social stayed at 50
    assert labelled["prediction"].tolist() == [1200.0, 400.0]
    assert labelled["target"].tolist() == [1200.0, 500.0]
    m = outcome.metrics
    assert m["realised_revenue"] == 1700.0 and m["expected_revenue"] == 1600.0
    assert m["revenue_ratio"] == pytest.approx(1700 / 1600)
    assert m["ape"] == pytest.approx(100 / 1700)
    assert m["channel_mape"] == pytest.approx((0 + 100 / 500) / 2)
    assert m["share_spend_followed"] == 0.5
    assert outcome.report == "regression"


def test_a_total_revenue_model_is_judged_on_its_spend_only():
    outcome = budget_outcome(BUDGET, H_BUDGET, _allocations(), _spend(), _budget_orders(), "total")
    assert outcome.metrics == {"share_spend_followed": 0.5}
    assert outcome.labelled["target"].isna().all() and outcome.report is None
    # without a target param the store decides, as the family's media_config does
    assert model_target({"target": "total"}, _spend(), _budget_orders()) == "total"
    assert model_target({}, _spend(), _budget_orders()) == "attributed"
    assert model_target(None, _spend(), _budget_orders().assign(channel="organic")) == "total"


# --- horizons, test values, rows and the retraining rule ----------------------------------------------------


def test_each_family_takes_its_horizon_from_where_it_is_recorded():
    params = RunParams(price_horizon_days=10)
    assert horizon_days("pricing", {"horizon_days": "99"}, None, params) == 10  # the nightly param
    assert horizon_days("send_time", {"holdout_days": "28"}, None, params) == 28
    assert horizon_days("send_time", None, None, params) is None  # not in the registry
    assert horizon_days("budget", {}, 28, params) == 28 and horizon_days("budget", {}, np.nan, params) is None
    assert horizon_days("clv", {"horizon_days": "90"}, None, params) == 90
    # nothing for a night whose horizon has not passed
    assert not is_due(R, 10, R + dt.timedelta(days=9)) and is_due(R, 10, R + dt.timedelta(days=10))


def test_comparable_test_values_come_from_the_versions_logged_test_metrics():
    logged = {"test_poisson_deviance": 0.8, "baseline_poisson_deviance": 1.0, "test_product_days": 500.0,
              "valid_poisson_deviance": 0.7}
    assert comparable_test_values("pricing", logged) == {
        "poisson_deviance": 0.8, "product_days": 500.0, "baseline_poisson_deviance": 1.0, "deviance_skill": pytest.approx(0.2)}
    assert comparable_test_values("send_time", {"test_lift_near_best": 1.3, "test_opens": 30.0, "test_sends": 120.0}) == {
        "lift_near_best": 1.3, "opens": 30.0, "sends": 120.0, "open_rate": 0.25}
    assert comparable_test_values("budget", {"test_weekly_mape": 0.12, "test_mape": 0.2})["ape"] == 0.12


def test_rows_count_the_families_units_and_carry_their_test_values():
    outcome = pricing_outcome(PRICING, H_PRICE, _recommendations(), _sales())
    rows = performance_rows([outcome], R + dt.timedelta(days=H_PRICE), {("pricing", "4", "deviance_skill"): 0.5})
    assert (rows["n"] == 3).all() and (rows["horizon_days"] == H_PRICE).all() and (rows["family"] == "pricing").all()
    assert rows.set_index("metric").loc["deviance_skill", "test_value"] == 0.5
    assert rows.loc[rows["metric"] != "deviance_skill", "test_value"].isna().all()


def _row(family: str, metric: str, value: float, test_value: float) -> dict:
    return {"run_date_scored": R, "run_date_evaluated": R, "family": family, "model_name": "m", "model_version": "1",
            "metric": metric, "value": value, "n": 10, "horizon_days": 7, "test_value": test_value}


def test_the_retraining_rule_covers_the_recommendation_families():
    within = pd.DataFrame([_row("pricing", "deviance_skill", 0.16, 0.20), _row("pricing", "wape", 0.9, np.nan),
                           _row("pricing", "poisson_deviance", 5.0, 0.8),  # not the primary: a longer forecast
                           _row("send_time", "lift_near_best", 1.26, 1.30), _row("send_time", "share_near_best", 0.1, np.nan),
                           _row("budget", "ape", 0.16, 0.12), _row("budget", "revenue_ratio", 0.5, np.nan)])
    assert performance_drops(within, 0.05) == []
    dropped = pd.DataFrame([_row("pricing", "deviance_skill", 0.05, 0.20), _row("send_time", "lift_near_best", 1.0, 1.3),
                            _row("send_time", "share_near_best", 0.2, 0.4), _row("budget", "ape", 0.30, 0.12),
                            _row("budget", "ape", 0.01, 0.12)])  # better than at test: no drop
    drops = performance_drops(dropped, 0.05)
    assert len(drops) == 4
    assert "deviance_skill 0.050" in drops[0] and "0.150 below its test value 0.200" in drops[0] and "10 products" in drops[0]
    assert "lift_near_best" in drops[1] and "10 customers" in drops[1]
    assert "share_near_best" in drops[2]
    assert "ape 0.300" in drops[3] and "0.180 above its test value 0.120" in drops[3] and "10 channels" in drops[3]


def test_an_outcome_without_metrics_writes_no_rows():
    empty = Outcome(BUDGET, H_BUDGET, pd.DataFrame({"channel": []}), {})
    assert performance_rows([empty], R).empty
