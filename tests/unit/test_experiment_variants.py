"""Serving price and message experiment variants (held arms at the current price / default hour), and
the unconfounded elasticity a randomised price experiment measures."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ml.experiments.assignment import pick_variants
from ml.experiments.definitions import Experiment, Variant
from ml.experiments.variants import (
    HELD_GUARDRAIL,
    experimental_elasticity,
    held_variants,
    serve_price_variants,
    serve_send_time_variants,
)
from ml.families.pricing.optimiser import PricingGuardrails, recommend_prices
from ml.families.send_time.recommender import PUBLISHED_COLUMNS

DAY = dt.date(2024, 6, 1)
EXPECTED = ("units", "revenue", "profit")


def _experiment(kind: str = "price", experiment_id: str = "price-a", variants=None, **overrides) -> Experiment:
    values = dict(experiment_id=experiment_id, name="test", unit="product" if kind == "price" else "customer",
                  kind=kind, variants=variants or (Variant("control"), Variant("treatment")), start=DAY,
                  primary_metric="revenue_per_unit" if kind == "price" else "open_rate", mde=0.05)
    values.update(overrides)
    return Experiment(**values)


def _assignments(experiment_id: str, by_variant: dict[str, list[int]], first: dt.date = DAY) -> pd.DataFrame:
    rows = [(experiment_id, unit, variant, first) for variant, units in by_variant.items() for unit in units]
    return pd.DataFrame(rows, columns=["experiment_id", "unit_id", "variant", "first_assigned"])


# --- prices -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def price_recommendations() -> pd.DataFrame:
    """The pricing model's real output for 6 elastic products whose optimum is off their current price,
    with the run metadata the nightly run adds."""
    n = 6
    estimates = pd.DataFrame({
        "product_id": np.arange(1, n + 1), "elasticity": -2.0, "elasticity_low": -2.2, "elasticity_high": -1.8,
        "expected_daily_units": 10.0, "has_price_variation": True, "n_days": 300, "min_price_observed": 1.0,
        "max_price_observed": 1000.0, "prior_elasticity": -1.5})
    products = pd.DataFrame({"product_id": np.arange(1, n + 1), "cost": 10.0,
                             "current_price": [19.0, 30.0, 17.0, 24.0, 22.0, 18.5]})
    rec = recommend_prices(estimates, products, PricingGuardrails(competitor_band=None, observed_range_slack=None))
    rec.insert(0, "run_date", DAY)
    rec["model_name"], rec["model_version"] = "revopt-pricing", "3"
    assert (rec["recommended_price"] != rec["current_price"]).all()  # else holding would be invisible
    return rec


def test_control_is_held_at_the_current_price_exactly(price_recommendations):
    experiment = _experiment()
    served = serve_price_variants(price_recommendations, [experiment], _assignments("price-a", {
        "control": [1, 2], "treatment": [3, 4]}), DAY).set_index("product_id")
    before = price_recommendations.set_index("product_id")
    for product in (1, 2):
        row = served.loc[product]
        assert row["recommended_price"] == before.loc[product, "current_price"]
        for what in EXPECTED:
            assert row[f"expected_{what}_recommended"] == before.loc[product, f"expected_{what}_current"]
            assert row[f"expected_{what}_current"] == before.loc[product, f"expected_{what}_current"]
        assert row["binding_guardrail"] == HELD_GUARDRAIL
        assert row["reason"] == "held at the current price: control of experiment price-a"
        assert row["confidence"] == before.loc[product, "confidence"]
        assert row["elasticity"] == before.loc[product, "elasticity"]
        assert (row["experiment_id"], row["variant"]) == ("price-a", "control")


def test_treatment_and_unassigned_products_are_untouched(price_recommendations):
    served = serve_price_variants(price_recommendations, [_experiment()], _assignments("price-a", {
        "control": [1, 2], "treatment": [3, 4]}), DAY)
    columns = list(price_recommendations.columns)
    pd.testing.assert_frame_equal(served.loc[2:5, columns], price_recommendations.loc[2:5])
    assert served.loc[2:3, "experiment_id"].tolist() == ["price-a"] * 2
    assert served.loc[2:3, "variant"].tolist() == ["treatment"] * 2
    assert served.loc[4:5, "experiment_id"].tolist() == [None, None]
    assert served.loc[4:5, "variant"].tolist() == [None, None]


def test_columns_are_kept_in_order_and_the_input_is_not_mutated(price_recommendations):
    pristine = price_recommendations.copy()
    served = serve_price_variants(price_recommendations, [_experiment()], _assignments("price-a", {
        "control": [1, 2, 3, 4, 5, 6]}), DAY)
    assert list(served.columns) == [*pristine.columns, "experiment_id", "variant"]
    assert (served["recommended_price"] == served["current_price"]).all()
    pd.testing.assert_frame_equal(price_recommendations, pristine)
    with pytest.raises(ValueError, match="already have"):
        serve_price_variants(served, [_experiment()], _assignments("price-a", {"control": [1]}), DAY)


@pytest.mark.parametrize("experiment", [
    _experiment(start=DAY + dt.timedelta(days=1)),  # not started
    _experiment(end=DAY - dt.timedelta(days=1), start=DAY - dt.timedelta(days=10)),  # ended
    _experiment(start=DAY - dt.timedelta(days=10)).stop(DAY),  # stopped: its first inactive day
    _experiment(kind="message"),  # another kind
], ids=["not-started", "ended", "stopped", "message-experiment"])
def test_an_inactive_or_other_experiment_is_ignored(price_recommendations, experiment):
    assignments = _assignments(experiment.experiment_id, {"control": [1, 2], "treatment": [3, 4]},
                               first=experiment.start)
    served = serve_price_variants(price_recommendations, [experiment], assignments, DAY)
    pd.testing.assert_frame_equal(served[list(price_recommendations.columns)], price_recommendations)
    assert served["experiment_id"].isna().all() and served["variant"].isna().all()


def test_variant_configs_decide_who_is_held(price_recommendations):
    experiment = _experiment(variants=(Variant("a", config={"price": "recommended"}), Variant("b"),
                                       Variant("c", config={"price": "current"})))
    assert held_variants(experiment) == {"c"}  # the control ("a") names the recommendation
    served = serve_price_variants(price_recommendations, [experiment], _assignments("price-a", {
        "a": [1], "b": [2], "c": [3]}), DAY).set_index("product_id")
    assert served.loc[1, "recommended_price"] != served.loc[1, "current_price"]
    assert served.loc[2, "recommended_price"] != served.loc[2, "current_price"]
    assert served.loc[3, "recommended_price"] == served.loc[3, "current_price"]
    assert served.loc[3, "reason"] == "held at the current price: variant c of experiment price-a"
    with pytest.raises(ValueError, match="config.price is 'cheaper'"):
        held_variants(_experiment(variants=(Variant("a"), Variant("b", config={"price": "cheaper"}))))


def test_a_product_in_two_active_price_experiments_is_refused(price_recommendations):
    one, two = _experiment(), _experiment(experiment_id="price-b", layer="other")
    assignments = pd.concat([_assignments("price-a", {"control": [1, 2]}), _assignments("price-b", {"treatment": [2]})])
    with pytest.raises(ValueError, match=r"more than one active price experiment.*\['price-a', 'price-b'\]"):
        serve_price_variants(price_recommendations, [one, two], assignments, DAY)


def test_assignments_read_back_as_text_ids_still_match(price_recommendations):
    assignments = _assignments("price-a", {"control": [1]})
    assignments["unit_id"] = assignments["unit_id"].astype(str)
    served = serve_price_variants(price_recommendations, [_experiment()], assignments, DAY)
    assert served.loc[0, "binding_guardrail"] == HELD_GUARDRAIL


# --- send times ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def send_times() -> pd.DataFrame:
    """Published send-time rows (the recommender's columns and dtypes): customers 1-4, weekday and
    weekend each, every best hour away from the default hour 10."""
    n = 4
    frame = pd.DataFrame({
        "customer_id": np.repeat(np.arange(1, n + 1), 2), "day_type": ["weekday", "weekend"] * n,
        "timezone": "Europe/London", "best_hour": np.array([7, 8, 19, 20, 6, 21, 13, 14], dtype=np.int64),
        "runner_up_hour": pd.array([12, 13, 7, None, 18, 9, 20, 19], dtype="Int64"), "default_hour": np.int64(10),
        "expected_rate_best": np.linspace(0.2, 0.3, 2 * n), "expected_rate_default": np.linspace(0.1, 0.15, 2 * n),
        "n_events": np.int64(40), "signal": "email"})
    frame = frame[list(PUBLISHED_COLUMNS)]
    frame.insert(0, "run_date", DAY)
    return frame


def test_control_customers_get_the_default_hour_on_all_their_rows(send_times):
    experiment = _experiment(kind="message", experiment_id="msg-a")
    pristine = send_times.copy()
    served = serve_send_time_variants(send_times, [experiment], _assignments("msg-a", {
        "control": [1, 3], "treatment": [2]}), DAY)
    assert list(served.columns) == [*pristine.columns, "experiment_id", "variant"]
    pd.testing.assert_frame_equal(send_times, pristine)
    held = served["customer_id"].isin([1, 3])
    assert held.sum() == 4
    assert (served.loc[held, "best_hour"] == 10).all()
    assert served.loc[held, "runner_up_hour"].isna().all()
    assert (served.loc[held, "expected_rate_best"] == send_times.loc[held, "expected_rate_default"]).all()
    assert served.loc[held, "variant"].tolist() == ["control"] * 4
    # treatment (customer 2) and unassigned (customer 4) rows are the input's
    others = ~held
    pd.testing.assert_frame_equal(served.loc[others, list(pristine.columns)], pristine.loc[others])
    assert served.loc[served["customer_id"] == 2, "variant"].tolist() == ["treatment"] * 2
    assert served.loc[served["customer_id"] == 4, ["experiment_id", "variant"]].isna().all().all()
    assert served["runner_up_hour"].dtype == "Int64"


def test_send_time_configs_inactive_experiments_and_extra_columns(send_times):
    experiment = _experiment(kind="message", experiment_id="msg-a", variants=(
        Variant("recommended", config={"send_time": "recommended"}),
        Variant("default", config={"send_time": "default"})))
    recommendations = send_times.assign(
        runner_up_hour=send_times["runner_up_hour"].fillna(0).astype("int64"),
        lift_vs_default=send_times["expected_rate_best"] / send_times["expected_rate_default"] - 1, reason="best hour")
    assignments = _assignments("msg-a", {"recommended": [1], "default": [2]})
    served = serve_send_time_variants(recommendations, [experiment], assignments, DAY)
    held = served["customer_id"] == 2
    assert (served.loc[held, "best_hour"] == 10).all() and served.loc[held, "runner_up_hour"].isna().all()
    assert (served.loc[held, "lift_vs_default"] == 0).all()
    assert (served.loc[held, "reason"] == "sent at the default hour: variant default of experiment msg-a").all()
    pd.testing.assert_frame_equal(served.loc[~held, list(recommendations.columns)],
                                  recommendations.loc[~held].astype({"runner_up_hour": "Int64"}))
    later = serve_send_time_variants(recommendations, [experiment.stop(DAY)], assignments, DAY)
    pd.testing.assert_frame_equal(later[list(recommendations.columns)], recommendations)
    assert later["variant"].isna().all()
    # a price experiment does not touch send times
    price = serve_send_time_variants(send_times, [_experiment(experiment_id="msg-a")], assignments, DAY)
    assert price["variant"].isna().all()


# --- the experimental elasticity ----------------------------------------------------------------


def _price_experiment_panel(n_products: int = 400, cut: float = 0.10, elasticity: float = -2.0, seed: int = 7,
                            price_noise: float = 0.08, store_wide: float = 0.05, pre_days: int = 28,
                            post_days: int = 28, stopped_after: int | None = None) -> dict:
    """A product x day panel around a price experiment starting on DAY: treatment list prices cut by
    ``cut`` from the start (and, with ``stopped_after``, the control's too from that many days in, as
    serving does once the experiment stops), and every list price raised by ``store_wide`` at the start (the
    store's own price rise, both arms). Demand has a common daily shock plus a season step at the start; the
    store priced its popular products higher and raised prices on its good days (both
    confound the observational history)."""
    rng = np.random.default_rng(seed)
    experiment = _experiment(start=DAY, **({"end": DAY + dt.timedelta(days=stopped_after - 1)}
                                           if stopped_after is not None else {}))
    ids = np.arange(1, n_products + 1)
    variant = pick_variants(experiment, ids)
    treated = variant == "treatment"
    days = pd.date_range(pd.Timestamp(DAY) - pd.Timedelta(days=pre_days), periods=pre_days + post_days, freq="D")
    after = np.asarray(days >= pd.Timestamp(DAY))
    level = rng.normal(np.log(5.0), 0.6, n_products)
    base_price = np.log(20.0) + 0.8 * (level - level.mean()) + rng.normal(0, 0.1, n_products)
    common = rng.normal(0, 0.15, len(days)) + 0.3 * after
    shock = rng.normal(0, 0.3, (n_products, len(days)))
    moved = price_noise * (0.8 * shock / 0.3 + 0.6 * rng.normal(0, 1, shock.shape))  # raised on good days
    cut_on = np.zeros((n_products, len(days)), dtype=bool)
    cut_on[treated] = after
    if stopped_after is not None:
        cut_on[:, np.asarray(days >= pd.Timestamp(DAY) + pd.Timedelta(days=stopped_after))] = True
    log_price = base_price[:, None] + moved + np.where(cut_on, np.log(1 - cut), 0.0) + np.log1p(store_wide) * after
    demand = np.exp(level[:, None] + common[None, :] + elasticity * (log_price - base_price[:, None]) + shock)
    units = rng.poisson(demand)
    price = np.round(np.exp(log_price), 2)
    product, day = np.meshgrid(ids, days, indexing="ij")
    sales = pd.DataFrame({"product_id": product.ravel(), "day": day.ravel(), "units": units.ravel(),
                          "list_price": price.ravel(), "revenue": (units * price).ravel()})
    sales = sales[sales["units"] > 0].reset_index(drop=True)  # as the extract: sold days only
    assignments = pd.DataFrame({"experiment_id": experiment.experiment_id, "unit_id": ids, "variant": variant,
                                "first_assigned": DAY})
    return {"experiment": experiment, "sales": sales, "assignments": assignments,
            "run_date": DAY + dt.timedelta(days=post_days)}


def test_experimental_elasticity_recovers_the_planted_one_where_the_history_is_confounded():
    panel = _price_experiment_panel()
    result = experimental_elasticity(panel["sales"], panel["assignments"], panel["experiment"], panel["run_date"])
    assert result["n_products"] == 400 and result["n_served"] + result["n_held"] == 400
    assert abs(result["elasticity"] - -2.0) < 2 * result["se"] and result["se"] < 0.3
    assert result["ci_low"] < -2.0 < result["ci_high"]
    assert result["price_change"] == pytest.approx(np.log(0.9), abs=0.01) and result["first_stage_t"] > 10
    assert result["held_price_change"] == pytest.approx(np.log(1.05), abs=0.01)  # the store-wide rise
    # the observational estimate on the same products' pre-period is far off: what the experiment corrects
    pre = panel["sales"][panel["sales"]["day"] < pd.Timestamp(DAY)]
    naive = np.polyfit(np.log(pre["list_price"]), np.log(pre["units"] + 0.5), 1)[0]
    assert naive > -1.0
    # and so is a before/after comparison of the treated products alone: the season moved every product
    sales = panel["sales"].merge(panel["assignments"], left_on="product_id", right_on="unit_id")
    treated = sales[sales["variant"] == "treatment"].assign(after=lambda f: f["day"] >= pd.Timestamp(DAY))
    units = treated.groupby(["product_id", "after"])["units"].sum().unstack()
    log_price = treated.assign(lp=np.log(treated["list_price"])).groupby(["product_id", "after"])["lp"].mean().unstack()
    before_after = np.log(units[True] / units[False]).mean() / (log_price[True] - log_price[False]).mean()
    assert before_after < -3.5
    # without a held arm there is nothing to difference against
    assert experimental_elasticity(panel["sales"], panel["assignments"].assign(variant="treatment"),
                                   panel["experiment"], panel["run_date"]) is None


def test_experimental_elasticity_ends_at_the_experiments_last_day():
    # once the experiment ends, the held products get the recommendation too: those days are not read
    panel = _price_experiment_panel(stopped_after=14, post_days=28)
    result = experimental_elasticity(panel["sales"], panel["assignments"], panel["experiment"], panel["run_date"])
    assert abs(result["elasticity"] - -2.0) < 2 * result["se"]
    assert result["price_change"] == pytest.approx(np.log(0.9), abs=0.01)


def test_experimental_elasticity_is_none_without_a_price_difference_or_products():
    flat = _price_experiment_panel(cut=0.0, price_noise=0.0)  # a store-wide rise only: both arms alike
    assert experimental_elasticity(flat["sales"], flat["assignments"], flat["experiment"], flat["run_date"]) is None
    few = _price_experiment_panel(n_products=8)
    assert experimental_elasticity(few["sales"], few["assignments"], few["experiment"], few["run_date"]) is None
    panel = _price_experiment_panel(n_products=60)
    assert experimental_elasticity(panel["sales"], panel["assignments"], panel["experiment"], DAY) is None
    enough = experimental_elasticity(panel["sales"], panel["assignments"], panel["experiment"], panel["run_date"])
    assert enough is not None and enough["n_products"] == 60
    with pytest.raises(ValueError, match="reads a price experiment"):
        experimental_elasticity(panel["sales"], panel["assignments"], _experiment(kind="message"), DAY)
