"""Acquisition economics (ml.attribution.economics): cohorts, fractional new customers, CAC, LTV:CAC and payback
on a small store checked by hand; the conservation check; the CAC forecast against the closed form on known
response curves, its interval, and the channels it cannot forecast; the backtest of past forecasts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from features import media
from ml.attribution import economics
from ml.attribution.economics import cac_backtest, cac_forecast, channel_economics, new_customer_shares
from ml.families.budget import MediaConfig, fit_from_curves, least_squares, optimiser

RUN = "2024-04-01"


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# Customer 1: first order 5 Mar (100), then 15 Mar (day 10, 50) and 30 Mar (day 25, 30); watched 26 days.
# Customer 2: first order 10 Mar (80), a cancelled one; watched 21 days. Customer 3: first order 10 Feb (60),
# 1 Mar (40). Customer 4: first order Nov 2023 (outside 3 cohort months), a repeat in March. Customer 5: a
# cancelled order, then the first completed one in January. Customer 6 orders on the run date (not counted).
ORDERS = pd.DataFrame([
    (1, 1, _ts("2024-03-05 10:00"), "completed", 100.0), (2, 1, _ts("2024-03-15 10:00"), "completed", 50.0),
    (9, 1, _ts("2024-03-30 10:00"), "completed", 30.0), (3, 2, _ts("2024-03-10 12:00"), "completed", 80.0),
    (4, 2, _ts("2024-03-12 12:00"), "cancelled", 1000.0), (5, 3, _ts("2024-02-10 09:00"), "completed", 60.0),
    (6, 3, _ts("2024-03-01 09:00"), "completed", 40.0), (7, 4, _ts("2023-11-20 09:00"), "completed", 30.0),
    (8, 4, _ts("2024-03-20 09:00"), "completed", 70.0), (11, 5, _ts("2024-01-05 09:00"), "cancelled", 500.0),
    (10, 5, _ts("2024-01-20 09:00"), "completed", 200.0), (12, 6, _ts("2024-04-01 00:00"), "completed", 999.0),
], columns=["order_id", "customer_id", "order_ts", "status", "order_value"])
CREDITS = pd.DataFrame([
    (1, "search", "brand", 0.5), (1, "social", None, 0.5), (2, "email", None, 1.0), (9, "search", None, 1.0),
    (3, "search", "brand", 0.6), (3, "search", None, 0.4), (4, "search", None, 1.0), (5, "social", None, 0.25),
    (5, "direct", None, 0.75), (6, "search", None, 1.0), (7, "search", None, 1.0), (8, "search", None, 1.0),
    (10, "email", None, 1.0), (11, "email", None, 1.0),
], columns=["journey_id", "channel", "campaign", "credit"]).assign(model="linear")
SPEND = pd.DataFrame([
    ("2024-03-05", "search", "brand", 80.0), ("2024-03-20", "search", "", 100.0), ("2024-03-02", "social", "", 60.0),
    ("2024-02-15", "search", "", 20.0), ("2024-02-15", "social", "", 10.0), ("2024-01-10", "search", "", 15.0),
    ("2023-12-10", "search", "", 500.0), ("2024-04-02", "search", "", 999.0),
], columns=["day", "channel", "campaign", "spend"]).assign(day=lambda f: pd.to_datetime(f["day"]))
CLV = pd.DataFrame({"customer_id": [1, 3, 5], "clv": [20.0, 10.0, 5.0]})  # customer 2 has no score


def _economics(**kwargs) -> pd.DataFrame:
    table = channel_economics(ORDERS, CREDITS, SPEND, CLV, RUN, months=3, clv_horizon_days=90, **kwargs)
    keys = ["cohort_month", "channel", "campaign"] if kwargs.get("by_campaign") else ["cohort_month", "channel"]
    return table.assign(cohort_month=table["cohort_month"].dt.strftime("%Y-%m")).set_index(keys)


def test_cohorts_new_customers_cac_and_ltv_by_hand():
    table = _economics()
    assert list(table.index) == [("2024-01", "email"), ("2024-01", "search"), ("2024-02", "direct"), ("2024-02", "search"),
                                 ("2024-02", "social"), ("2024-03", "search"), ("2024-03", "social")]
    march = table.loc["2024-03"]
    # search: half of customer 1 and all of customer 2; 80 + 100 spent in March
    assert march.loc["search", "new_customers"] == pytest.approx(1.5)
    assert march.loc["search", "spend"] == pytest.approx(180.0)
    assert march.loc["search", "cac"] == pytest.approx(120.0)
    assert march.loc["search", "realised_value_per_customer"] == pytest.approx((0.5 * 180 + 1.0 * 80) / 1.5)
    assert march.loc["search", "predicted_clv"] == pytest.approx(20.0)  # customer 2 unscored: weight on customer 1
    assert march.loc["search", "ltv"] == pytest.approx(170 / 1.5 + 20)
    assert march.loc["search", "ltv_cac"] == pytest.approx((170 / 1.5 + 20) / 120)
    assert march.loc["social", "cac"] == pytest.approx(60 / 0.5)
    assert march.loc["social", "ltv_cac"] == pytest.approx((180 + 20) / 120)
    feb = table.loc["2024-02"]
    assert feb.loc["social", "new_customers"] == pytest.approx(0.25)
    assert feb.loc["social", "cac"] == pytest.approx(40.0)
    assert feb.loc["social", "ltv_cac"] == pytest.approx((100 + 10) / 40)
    # the repeat order of customer 4 (first order outside the cohorts) and the run date's order are not new
    assert table.groupby(level="cohort_month")["new_customers"].sum().to_dict() == pytest.approx(
        {"2024-01": 1.0, "2024-02": 1.0, "2024-03": 2.0})
    assert table["clv_horizon_days"].eq(90).all() and table["basis"].eq("revenue").all()


def test_unpaid_channels_and_spend_without_new_customers_have_no_cac():
    table = _economics()
    for key in [("2024-01", "email"), ("2024-02", "direct")]:
        row = table.loc[key]
        assert row["spend"] == 0 and np.isnan(row["cac"]) and row["cac_note"] == "unpaid"
        assert np.isnan(row["ltv_cac"]) and pd.isna(row["payback_reached"])
        assert row["ltv"] == pytest.approx({"2024-01": 205.0, "2024-02": 110.0}[key[0]])
    for month, spent in (("2024-01", 15.0), ("2024-02", 20.0)):
        row = table.loc[(month, "search")]
        assert row["new_customers"] == 0 and row["spend"] == spent
        assert np.isnan(row["cac"]) and row["cac_note"] == "no new customers"


def test_payback_follows_the_censored_cumulative_curve():
    table = _economics()
    # social, March (customer 1 alone, CAC 120): 100 on day 0, 150 by day 10
    assert table.loc[("2024-03", "social"), "payback_days"] == 10
    # search, March (CAC 120): day 0 (0.5*100 + 80)/1.5 = 86.7, day 10 +0.5*50/1.5 -> 103.3; on day 25 only
    # customer 1 (weight 0.5) has been watched that long, so +0.5*30/0.5 -> 133.3 >= 120. Averaging the 30 over
    # both customers (113.3) would never reach it.
    assert table.loc[("2024-03", "search"), "payback_days"] == 25
    assert table.loc[("2024-03", "search"), "payback_reached"]
    assert table.loc[("2024-02", "social"), "payback_days"] == 0  # 60 on day 0 against a CAC of 40


def test_payback_not_reached_yet():
    table = _economics(by_campaign=True)
    row = table.loc[("2024-03", "search", None)]  # 0.4 of customer 2: 80 so far against a CAC of 100 / 0.4
    assert row["cac"] == pytest.approx(250.0)
    assert np.isnan(row["payback_days"]) and row["payback_reached"] == False  # noqa: E712 (pandas boolean)


def test_campaigns_split_credits_and_spend_and_empty_campaign_means_none():
    table = _economics(by_campaign=True)
    brand = table.loc[("2024-03", "search", "brand")]
    assert brand["new_customers"] == pytest.approx(1.1) and brand["spend"] == 80.0
    assert brand["cac"] == pytest.approx(80 / 1.1)
    assert brand["realised_value_per_customer"] == pytest.approx((0.5 * 180 + 0.6 * 80) / 1.1)
    assert table.loc[("2024-03", "search", None), "spend"] == 100.0  # spend campaign '' meets credit campaign None


def test_margin_basis_reads_order_margin_and_converts_the_clv():
    orders = ORDERS.assign(order_margin=0.25 * ORDERS["order_value"])
    table = channel_economics(orders, CREDITS, SPEND, CLV, RUN, months=3, basis="margin").set_index(["cohort_month", "channel"])
    row = table.loc[(pd.Timestamp("2024-02-01"), "social")]
    assert row["realised_value_per_customer"] == pytest.approx(25.0)
    assert row["predicted_clv"] == pytest.approx(2.5) and row["ltv"] == pytest.approx(27.5)
    # margin 15 on day 0 and 10 on day 20 (1 March) never reach the CAC of 40 that revenue reached on day 0
    assert np.isnan(row["payback_days"]) and row["payback_reached"] == False  # noqa: E712 (pandas boolean)
    with pytest.raises(ValueError, match="order_margin"):
        channel_economics(ORDERS, CREDITS, SPEND, CLV, RUN, basis="margin")


def test_without_clv_scores_predicted_and_ltv_are_null():
    table = channel_economics(ORDERS, CREDITS, SPEND, None, RUN, months=3)
    assert table["predicted_clv"].isna().all() and table["ltv"].isna().all()
    assert table["realised_value_per_customer"].notna().any()


@pytest.mark.parametrize("change", ["drop", "inflate"])
def test_conservation_raises_when_first_orders_are_not_credited_exactly_once(change):
    credits = CREDITS[CREDITS["journey_id"] != 3] if change == "drop" else CREDITS.assign(
        credit=np.where(CREDITS["journey_id"] == 3, 0.7, CREDITS["credit"]))
    with pytest.raises(ValueError, match="cohort 2024-03 has 2 first orders"):
        channel_economics(ORDERS, credits, SPEND, CLV, RUN, months=3)


def test_credits_of_two_models_are_refused():
    with pytest.raises(ValueError, match="one attribution model"):
        channel_economics(ORDERS, pd.concat([CREDITS, CREDITS.assign(model="shapley")]), SPEND, CLV, RUN)


def test_new_customer_shares_over_the_window():
    shares = new_customer_shares(ORDERS, CREDITS, RUN, window_days=28).set_index("channel")
    # orders since 4 Mar: 1 (first), 2, 3 (first), 8, 9
    assert shares.loc["search", "credited_orders"] == pytest.approx(3.5)
    assert shares.loc["search", "new_customer_orders"] == pytest.approx(1.5)
    assert shares.loc["social", "new_customer_share"] == pytest.approx(1.0)
    assert shares.loc["email", "new_customer_share"] == 0.0


# --- the CAC forecast --------------------------------------------------------------------------------


CURVES = pd.DataFrame({"channel": ["a", "b"], "decay": [0.2, 0.0], "half_saturation_spend": [100.0, 50.0],
                       "slope": [1.5, 1.0], "max_revenue_per_day": [300.0, 200.0]})


def _history(days: int = 60) -> pd.DataFrame:
    """A media history: total revenue 1000 / 20 orders a day of which email 100 / 1 (excluded from the target):
    the target's order value is 900 / 19."""
    return pd.DataFrame({
        "day": pd.date_range("2024-01-01", periods=days), "spend_a": np.r_[np.full(days - 28, 50.0), np.full(28, 100.0)],
        "spend_b": 40.0, "spend_c": 0.0, "spend_d": 10.0, "revenue": 1000.0, "orders": 20, "revenue_a": 300.0,
        "revenue_b": 120.0, "revenue_email": 100.0, "orders_a": 5, "orders_b": 4, "orders_email": 1,
    })


def _fit(replicates: pd.DataFrame | None = None):
    fit = fit_from_curves(CURVES, baseline_revenue_per_day=1000.0)
    excluded = pd.DataFrame({"channel": ["c"], "fitted": [False], "reason": ["no spend in the 60-day history"]})
    fit = dataclasses.replace(fit, channels=pd.concat([fit.channels, excluded], ignore_index=True))
    return fit if replicates is None else dataclasses.replace(fit, replicates=replicates)


SHARES = pd.DataFrame({"channel": ["a", "b", "c"], "credited_orders": [50.0, 30.0, 5.0],
                       "new_customer_orders": [20.0, 3.0, 1.0]})


def test_forecast_equals_the_closed_form_at_the_recent_spend():
    forecast = cac_forecast(_fit(), _history(), SHARES).set_index("channel")
    value = 900 / 19
    a = forecast.loc["a"]
    assert a["planned_daily_spend"] == 100.0 and a["planned_spend"] == 2800.0  # the last 28 days' mean
    orders = 28 * 300 * 0.5 / value  # at the half saturation spend the curve gives half its maximum
    assert a["expected_orders"] == pytest.approx(orders)
    assert a["expected_new_customers"] == pytest.approx(orders * 0.4)
    assert a["cac"] == pytest.approx(2800 / (orders * 0.4))
    b = forecast.loc["b"]  # 40 / (40 + 50) of 200 a day
    assert b["cac"] == pytest.approx(28 * 40 / (28 * 200 * 40 / 90 / value * 0.1))


def test_forecast_at_planned_spend():
    forecast = cac_forecast(_fit(), _history(), SHARES, planned_spend={"a": 200.0}).set_index("channel")
    h = 2**1.5 / (2**1.5 + 1)
    assert forecast.loc["a", "spend_source"] == "planned"
    assert forecast.loc["a", "cac"] == pytest.approx(28 * 200 / (28 * 300 * h / (900 / 19) * 0.4))
    assert forecast.loc["b", "planned_daily_spend"] == 40.0


def test_order_value_is_the_one_the_media_model_values_orders_at():
    history = _history()
    for target in ("total", "attributed"):
        config = MediaConfig(target=target, outcome="orders")
        values = economics._order_values(history, config)
        expected = least_squares._unit_value(history, config, ["a", "b"])
        assert [values.get(c, values["*"]) for c in ("a", "b")] == pytest.approx(list(expected))
    assert (economics._SPEND, economics._REVENUE, economics._ORDERS) == (media.SPEND_PREFIX, media.REVENUE_PREFIX,
                                                                      media.ORDERS_PREFIX)


def test_hill_curve_is_the_optimisers():
    spend = np.array([0.0, 30.0, 100.0, 400.0])
    ours = [economics._hill(s, 300.0, 100.0, 1.5) for s in spend]
    assert ours == pytest.approx(optimiser._response(spend, 300.0, 100.0, 1.5)[0])


def test_interval_contains_the_point_and_widens_with_the_bootstrap():
    alone = cac_forecast(_fit(), _history(), SHARES).set_index("channel").loc["a"]
    assert alone["expected_orders_low"] == alone["expected_orders"] == alone["expected_orders_high"]
    assert alone["new_customer_share_low"] < 0.4 < alone["new_customer_share_high"]
    assert alone["cac_low"] < alone["cac"] < alone["cac_high"]
    rng = np.random.default_rng(1)
    replicates = pd.DataFrame({"replicate": range(40), "channel": "a", "decay": 0.2,
                               "half_saturation_spend": 100.0 * rng.lognormal(0, 0.2, 40), "slope": 1.5,
                               "max_revenue_per_day": 300.0 * rng.lognormal(0, 0.2, 40)})
    both = cac_forecast(_fit(replicates), _history(), SHARES).set_index("channel").loc["a"]
    assert both["cac"] == pytest.approx(alone["cac"])
    assert both["expected_orders_low"] < both["expected_orders"] < both["expected_orders_high"]
    assert both["cac_low"] < alone["cac_low"] and both["cac_high"] > alone["cac_high"]
    assert both["cac_low"] <= both["cac"] <= both["cac_high"]
    again = cac_forecast(_fit(replicates), _history(), SHARES).set_index("channel").loc["a"]
    assert again["cac_high"] == both["cac_high"]  # deterministic given random_state


def test_excluded_unknown_and_unspent_channels_get_a_reason_and_no_numbers():
    shares = pd.concat([SHARES, pd.DataFrame({"channel": ["d"], "credited_orders": [4.0], "new_customer_orders": [1.0]})])
    forecast = cac_forecast(_fit(), _history(), shares, planned_spend={"b": 0.0, "e": 30.0}).set_index("channel")
    assert list(forecast.index) == ["a", "b", "c", "e"]  # d spends but is not a channel of the media model
    assert "no spend in the 60-day history" in forecast.loc["c", "reason"]
    assert forecast.loc["b", "reason"].startswith("no planned spend")
    assert forecast.loc["e", "reason"] == "channel not in the media model"
    for channel in ("b", "c", "e"):
        assert forecast.loc[channel, ["expected_orders", "cac", "cac_low", "cac_high"]].isna().all()
    assert forecast.loc["a", "reason"] == "" and np.isfinite(forecast.loc["a", "cac"])


def test_no_recent_new_customers_or_credited_orders():
    shares = SHARES.assign(new_customer_orders=[0.0, 3.0, 1.0])[SHARES["channel"] != "b"]
    forecast = cac_forecast(_fit(), _history(), shares).set_index("channel")
    assert forecast.loc["b", "reason"] == "no credited orders in the new-customer share window"
    assert forecast.loc["a", "expected_new_customers"] == 0 and np.isnan(forecast.loc["a", "cac"])
    assert forecast.loc["a", "reason"].startswith("no new customers expected")


def test_backtest_scores_forecasts_whose_window_has_ended():
    forecasts = pd.DataFrame({"origin": pd.to_datetime(["2024-03-04", "2024-03-04", "2024-03-20"]),
                              "channel": ["search", "email", "search"], "horizon_days": 28,
                              "cac": [100.0, 50.0, 100.0], "cac_low": [90.0, 40.0, 90.0], "cac_high": [130.0, 60.0, 130.0]})
    scored = cac_backtest(forecasts, ORDERS, CREDITS, SPEND, RUN)
    assert len(scored) == 2  # the 20 March forecast's window runs past the run date
    search, email = scored.iloc[0], scored.iloc[1]
    # 4-31 March: 180 spent on search, first orders 1 and 3 give it 1.5 new customers
    assert search["realised_spend"] == 180.0 and search["realised_new_customers"] == pytest.approx(1.5)
    assert search["realised_cac"] == pytest.approx(120.0)
    assert search["ape"] == pytest.approx(20 / 120) and search["inside_interval"]
    assert np.isnan(email["realised_cac"]) and pd.isna(email["inside_interval"]) and np.isnan(email["ape"])
    narrow = cac_backtest(forecasts.assign(cac_high=110.0), ORDERS, CREDITS, SPEND, RUN)
    assert narrow.iloc[0]["inside_interval"] == False  # noqa: E712 (pandas boolean)


def test_without_bootstrap_the_interval_is_the_jeffreys_interval_of_the_share():
    from scipy import stats

    a = cac_forecast(_fit(), _history(), SHARES, interval=0.8, n_draws=20_000).set_index("channel").loc["a"]
    low, high = stats.beta(20.5, 30.5).ppf([0.1, 0.9])  # 20 new of 50 credited orders, prior Beta(1/2, 1/2)
    assert a["new_customer_share_low"] == pytest.approx(low) and a["new_customer_share_high"] == pytest.approx(high)
    # the CAC's band predicts the realised CAC: Poisson(expected orders x share) new customers, share ~ Beta
    draws = np.random.default_rng(5).poisson(a["expected_orders"] * stats.beta(20.5, 30.5).rvs(
        size=200_000, random_state=np.random.default_rng(6)))
    new_low, new_high = np.quantile(draws, [0.1, 0.9])
    assert a["cac_low"] == pytest.approx(a["planned_spend"] / new_high, rel=0.02)
    assert a["cac_high"] == pytest.approx(a["planned_spend"] / new_low, rel=0.02)
    assert a["cac_low"] < a["planned_spend"] / (a["expected_orders"] * high)  # wider than the expectation's band
