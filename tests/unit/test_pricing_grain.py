"""Pricing on aggregated weekly sales with promotions the store records: elasticities, the promotion
effects and expected units come out right at the data's own grain (features.demand.period_history ->
ml.families.pricing.estimator)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.demand import period_history
from ml.families.pricing.estimator import ElasticityConfig, estimate_elasticities

START = pd.Timestamp("2021-01-04")  # a Monday
WEEKS = 150
RUN = START + pd.Timedelta(weeks=WEEKS)
DISPLAY_LIFT = 1.5


def _weekly_store(n: int = 40, seed: int = 11) -> dict[str, pd.DataFrame]:
    """Weekly units ~ Poisson(7 x base x (price / reference)^e x display lift x exp(level)), the level a
    slow random walk; list prices step every ~20 weeks; temporary reductions (20-30 %) in ~8 % of weeks,
    half of them with a display, and displays alone in ~4 % of weeks."""
    rng = np.random.default_rng(seed)
    e = rng.normal(-2.5, 0.3, n)
    reference = rng.uniform(2.0, 6.0, n)
    base = rng.uniform(3.0, 8.0, n)  # units a day at the reference price
    starts = START + pd.to_timedelta(7 * np.arange(WEEKS), unit="D")
    steps = rng.random((WEEKS, n)) < 1 / 20
    list_price = reference * np.exp(np.cumsum(np.where(steps, rng.choice([-0.08, 0.08], (WEEKS, n)), 0.0), axis=0))
    list_price = np.round(list_price, 2)
    cut = rng.random((WEEKS, n)) < 0.08
    depth = np.where(cut, rng.choice([0.2, 0.25, 0.3], (WEEKS, n)), 0.0)
    display = (cut & (rng.random((WEEKS, n)) < 0.5)) | (~cut & (rng.random((WEEKS, n)) < 0.04))
    level = np.cumsum(rng.normal(0.0, 0.03, (WEEKS, n)), axis=0)
    paid = np.round(list_price * (1 - depth), 2)
    mean = 7 * base * (paid / reference) ** e * np.where(display, DISPLAY_LIFT, 1.0) * np.exp(level)
    units = rng.poisson(mean).astype(float)
    ids = np.arange(1, n + 1)
    grid_w, grid_p = np.meshgrid(np.arange(WEEKS), np.arange(n), indexing="ij")
    sales = pd.DataFrame({"product_id": ids[grid_p.ravel()].astype("int64"), "period_start": starts[grid_w.ravel()],
                          "period_days": 7, "units": units.ravel(), "revenue": (units * paid).ravel(),
                          "list_price": list_price.ravel()})
    rows = []
    for kind, hit in (("price_reduction", cut), ("display", display)):
        w, p = np.nonzero(hit)
        rows.append(pd.DataFrame({"product_id": ids[p].astype("int64"), "start_date": starts[w],
                                  "end_date": starts[w] + pd.Timedelta(days=6), "promo_type": kind,
                                  "depth": depth[w, p] if kind == "price_reduction" else np.nan}))
    products = pd.DataFrame({"product_id": ids.astype("int64"), "category": "grocery", "cost": reference * 0.5,
                             "current_price": list_price[-1]})
    truth = pd.DataFrame({"product_id": ids, "elasticity": e,
                          "daily_units_now": base * (list_price[-1] / reference) ** e * np.exp(level[-1])})
    return {"sales": sales, "promotions": pd.concat(rows, ignore_index=True), "products": products, "truth": truth}


@pytest.fixture(scope="module")
def store():
    return _weekly_store()


@pytest.fixture(scope="module")
def with_promotions(store):
    panel = period_history(store["sales"], store["products"], RUN, 7 * WEEKS, promotions=store["promotions"])
    return estimate_elasticities(panel, ElasticityConfig())


def _mae(estimates, truth) -> float:
    merged = estimates.products.merge(truth, on="product_id", suffixes=("", "_true"))
    return float(np.abs(merged["elasticity"] - merged["elasticity_true"]).mean())


def test_elasticities_and_the_display_lift_are_recovered_at_the_weekly_grain(store, with_promotions):
    params = with_promotions.params
    assert params["grain_days"] == 7
    assert _mae(with_promotions, store["truth"]) < 0.3
    assert params["promo_display_effect"] == pytest.approx(np.log(DISPLAY_LIFT), abs=0.08)
    # the reductions work through the price alone here: no extra promotional response
    assert params["promo_price_cut_effect"] == pytest.approx(0.0, abs=0.6)
    # one group of substitutes: too few to learn a cross-price elasticity from, so none is fitted
    assert "cross_price_effect" not in params


def test_invisible_promotions_are_read_as_price_response(store, with_promotions):
    panel = period_history(store["sales"], store["products"], RUN, 7 * WEEKS)
    blind = estimate_elasticities(panel, ElasticityConfig())
    assert "promo_display_effect" not in blind.params
    # display weeks coincide with half the price cuts: without the display term the cut looks stronger
    assert blind.products["elasticity"].mean() < with_promotions.products["elasticity"].mean() - 0.1
    assert _mae(blind, store["truth"]) > _mae(with_promotions, store["truth"])


def test_expected_units_are_per_day_at_any_grain(store, with_promotions):
    merged = with_promotions.products.merge(store["truth"], on="product_id")
    ratio = merged["expected_daily_units"] / merged["daily_units_now"]
    assert ratio.median() == pytest.approx(1.0, abs=0.15)
    assert (with_promotions.products["n_days"] >= 7 * (WEEKS - 5)).all(), "history is counted in days"


def test_the_family_trains_and_prices_a_store_that_keeps_weekly_aggregates(store):

    from ml.families.pricing import FAMILY
    from ml.params import RunParams

    empty_daily = pd.DataFrame({"product_id": pd.Series(dtype="int64"), "day": pd.Series(dtype="datetime64[ns]"),
                                "units": pd.Series(dtype="int64"), "revenue": pd.Series(dtype="float64"),
                                "list_price": pd.Series(dtype="float64"), "avg_discount": pd.Series(dtype="float64")})
    frames = {"products": store["products"], "product_daily_sales": empty_daily,
              "day_totals": pd.DataFrame({"day": pd.Series(dtype="datetime64[ns]"), "lines": pd.Series(dtype="int64")}),
              "product_sales": store["sales"], "promotions": store["promotions"],
              "listings": pd.DataFrame(columns=["product_id", "start_date", "end_date"])}
    params = RunParams(lookback_days=7 * WEEKS, n_trials=2, seed=3)
    run_date = RUN.date()
    assert FAMILY.shortfall(frames, run_date, params) is None
    assert "(shop.product_sales)" in FAMILY.shortfall({**frames, "product_sales": store["sales"].assign(units=0.0)},
                                                       run_date, params)
    data = FAMILY.training_data(frames, run_date, params)
    assert set(data.panel["period_days"]) == {7} and data.panel["day"].max() < pd.Timestamp(run_date)
    trained = FAMILY.train(data, params, [])
    assert trained.params["grain_days"] == 7 and trained.metrics["test_product_days"] == 4 * 40
    assert trained.metrics["test_poisson_deviance"] < trained.metrics["baseline_poisson_deviance"]
    assert trained.metrics["promo_display_effect"] == pytest.approx(np.log(DISPLAY_LIFT), abs=0.1)
    prices = trained.model.predict(None, store["products"].assign(competitor_price=np.nan, on_hand=np.nan))
    daily = prices["expected_units_current"] / trained.model.horizon_days
    truth = store["truth"].set_index("product_id")["daily_units_now"].reindex(prices["product_id"]).to_numpy()
    assert np.median(daily.to_numpy() / truth) == pytest.approx(1.0, abs=0.2)


def scanner_panel(panel_store) -> pd.DataFrame:
    """The pricing panel of a generated scanner store (:func:`revopt.sample_data.panel.generate_panel`): its
    weekly sales with the list price in force, brands and stores, promotions and listings, over its whole
    history (shared with test_pricing_curvature)."""
    shop = panel_store.shop
    sales = pd.merge_asof(shop["product_sales"].sort_values("period_start"),
                          shop["product_prices"].sort_values("valid_from").rename(columns={"valid_from": "period_start"}),
                          on="period_start", by="product_id").sort_values(["product_id", "period_start"])
    run = sales["period_start"].max() + pd.Timedelta(days=7)
    products = shop["products"].merge(shop["product_groups"], on="product_id")
    return period_history(sales, products, run, (run - sales["period_start"].min()).days,
                          promotions=shop["promotions"], listings=shop["listings"])


def test_the_shared_cross_price_elasticity_is_recovered_on_a_panel():
    from revopt.sample_data.panel import generate_panel

    panel_store = generate_panel(n_stores=30, n_brands=5, periods=120, seed=4)
    fitted = estimate_elasticities(scanner_panel(panel_store), ElasticityConfig())
    # the generator's c_jk of a product sum to its total response to all substitutes' prices
    implied = panel_store.truth["cross_elasticities"].groupby("product_id")["cross_elasticity"].sum().mean()
    assert implied > 0.5
    assert fitted.params["cross_price_effect"] == pytest.approx(implied, abs=0.25)
    truth = panel_store.truth["products"][["product_id", "elasticity"]]
    assert _mae(fitted, truth) < 0.35


def test_the_baseline_predicts_a_product_back_from_a_long_gap_from_its_earlier_rate():
    from ml.families.pricing.backtest import no_price_response

    days = pd.to_datetime(["2024-01-01", "2024-01-08", "2024-01-15", "2024-03-04", "2024-03-11"])
    panel = pd.DataFrame({"product_id": [1] * 5, "day": days, "units": [7.0, 7.0, 7.0, 0.0, 14.0],
                          "log_lines": np.log([7.0] * 5)})
    predicted = no_price_response(panel, panel.iloc[3:])
    # back after 7 weeks unrecorded: 21 units per 21 lines before the gap; then the 28 days with its zero week
    assert predicted == pytest.approx([(21 + 0.5) / 21 * 7, 0.5])
