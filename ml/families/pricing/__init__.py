"""The pricing family: own-price elasticities with intervals from confounded sales history, and
profit-maximising list prices under guardrails.

Verbs, all pure (frames in, new objects out), by module:

- :func:`features.demand.demand_history` - the dense product x day panel (zero-unit days filled
  in) with the price in force, calendar and store-level controls and lagged demand controls;
  :func:`features.demand.pricing_input` - tonight's products with their latest competitor price
  and stock on hand;
- :mod:`~ml.families.pricing.estimator`: :func:`estimate_elasticities` - per-product elasticity,
  shrunk within category, with intervals; :func:`naive_loglog_ols` is the textbook baseline it is
  compared with;
- :mod:`~ml.families.pricing.backtest`: the time split. The panel's last four weeks are the test
  window the gate scores (:func:`evaluate_on_test_window`, :func:`baseline_on_test_window`: fitted
  on the days before, out-of-sample Poisson deviance of daily units); :func:`demand_backtest` /
  :func:`demand_search_space` - the same backtest on the panel before the test window (its last four
  weeks are the validation window) and the search over the estimator's hyperparameters on it that
  :func:`ml.tuning.search` runs. Where history allows, a **rolling-origin backtest** repeats
  selection and test as of the run date moved back 28 days at a time (``backtest_origins``,
  :mod:`ml.families.rolling_origin`: each origin's panel built from the ``lookback_days`` before its
  own run date, stopping at the first origin :meth:`PricingFamily.shortfall` refuses) and logs the
  test deviance, its no-price-response twin and the baseline's per origin
  (``backtest_<metric>_origin<k>``, origin 0 the test window) with their mean and standard deviation.
  Earlier origins tune with a quarter of ``n_trials`` (at least 2; the params ``backtest_earlier_*``):
  full re-tuning at two earlier origins more than doubled the family's (sub-second) training time on
  the demo store, this budget adds about 0.6 s (docs/pricing.md). The gate decides on origin 0 alone;
- :mod:`~ml.families.pricing.optimiser`: :func:`recommend_prices` - the price that maximises
  expected profit under a constant-elasticity demand curve, clipped to :class:`PricingGuardrails`;
- :mod:`~ml.families.pricing.model`: :class:`PricingModel`, the registered pyfunc whose
  ``predict`` is the nightly recommendations; :data:`FAMILY` drives all of it for the runners
  (:class:`ml.family.Family`).

Why the estimation is hard
--------------------------
Prices are not set at random: merchandisers raise prices when demand is strong. In the synthetic
store (:mod:`revopt.sample_data.synth`) a latent AR(1) demand shock ``u_j(d)`` both multiplies demand and makes
list-price increases more likely, so a log-log regression of units on price is biased towards
zero (measured: +0.7 on elasticities around -1.8, i.e. it finds demand roughly inelastic).
Two facts of the data are used instead:

1. the shock moves *slowly and continuously* (a day-to-day innovation of ~0.08 on the log scale)
   while list prices move in *steps* and promotions are short, so a product-level demand level
   that is allowed to drift smoothly absorbs the shock but not the price steps;
2. promotions and the timing of price changes carry variation that the shock does not explain.

Estimator (``method="local_level"``, the default)
-------------------------------------------------
A partially linear Poisson model per product j::

    units_jd ~ Poisson(exp(log lines_d + e_j * log price_jd + u_j(d)))

with ``lines_d`` the store's order lines that day (store traffic, weekday and season in one
control) and ``u_j`` a random walk with innovation sd ``level_sd`` (a *local level*; the AR(1) of
the generator is close to one over a year). ``u_j`` is the nuisance: it is profiled out by
penalised maximum likelihood (Newton on the joint concave objective; the Hessian is tridiagonal
plus one dense row, solved per Newton step with a Thomas sweep vectorised over products), which
is Robinson's partialling-out with a smoother instead of a cross-fitted regression: ``e_j`` is
the Poisson slope of demand on the part of the price the smooth level does not follow. Its
standard error is the sandwich over that partialled-out price (robust to the over-dispersion of
units, which come in baskets of quantities). ``level_sd`` is chosen by the Laplace-approximated
marginal likelihood pooled over products (an empirical-Bayes choice of smoothness; on the
synthetic store it recovers the generator's 0.084) unless given or tuned.

Why Poisson and not ``log(1 + units)``: most product-days sell 0-5 units, where
``E[log(1 + Y)]`` is far from linear in ``log E[Y]`` (its slope is ~0.3 at a mean of 0.5 units and
~0.7 at 3), so a linear model on that transform attenuates the elasticity by an amount that
depends on the product's volume. The Poisson log link is linear in ``log E[Y]`` at every volume,
and quasi-Poisson inference only needs the mean to be right.

Shared terms, fitted jointly (a Schur complement over all products' (level, e) blocks in the Newton
step, standard errors clustered by product): a recorded price cut's extra response on
``log(1 - depth)``, the log lifts of a display and a feature (``shop.promotions``), and one
cross-price elasticity on the substitutes' prices (:func:`features.demand.with_cross_prices`).
Over-dispersion: each product's is estimated from consecutive rows and scales the level's penalty
(a quasi-likelihood; scanner weeks are ~5x noisier than Poisson, and a Poisson level would follow
the noise). Aggregated sales (``shop.product_sales``) are fitted at their own grain: a period's row
sits on its first day of the daily grid and its offset covers its days. Shrinkage is towards the
brand and the brand's towards the category when the store has brands
(:func:`~ml.families.pricing.shrinkage.shrink_within_brand`). Measured in docs/pricing.md and
docs/pricing_panel.md.

``method="dml"`` is the double-machine-learning variant the design started from (partially
linear model with cross-fitted LightGBM nuisances on *past-only* controls: lagged demand and
price, calendar, store lines; folds by product; per-product Poisson residual-on-residual slope
with a heteroskedasticity-robust sandwich). It is kept for comparison and as a fallback for
data where the local-level assumption is wrong. Measured on the synthetic store it has about
twice the error of the local level (``docs/pricing.md``): past-only controls have to choose
between absorbing the price steps (lagged prices) and leaving the latent shock unabsorbed.

The price in force
------------------
Which price a day is credited with (from its neighbouring sold days, never from whether it sold)
is the panel's business: see :mod:`features.demand`.

Empirical-Bayes shrinkage
-------------------------
Raw per-product estimates are noisy (standard errors 0.4-1 on a year of a few units a day).
Normal-normal model ``raw_j ~ N(e_j, se_j^2)``, ``e_j ~ N(mu_category, tau^2)``: category means
and one between-product sd ``tau`` shared by all categories (a per-category tau is unstable with
a handful of products per category), estimated by REML; posterior mean and sd per product, the
sd including the uncertainty of the category mean. Categories with fewer than
``min_category_products`` estimable products share one pooled mean.

Why hand-written: no library fits this model. DoubleML/EconML (not installed) cross-fit sklearn
nuisances and return one average effect or a CATE model, not per-product Poisson slopes with a
latent level and category shrinkage; statsmodels' GLMs loop over products and have no smooth
latent level. Everything here is vectorised over products (numpy, scipy, LightGBM); Python loops
run over days in the Thomas sweep, folds, categories and guardrails only.

The optimiser
-------------
Profit under a constant-elasticity demand curve, clipped to the guardrails and put on the store's price grid:
see :mod:`ml.families.pricing.optimiser`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from features.demand import demand_history, period_history, pricing_input
from ml.evaluation import Evaluation, summarise_backtest
from ml.families.pricing.backtest import (
    BACKTEST_DAYS,
    BASELINE_NAME,
    POISSON_DEVIANCE,
    baseline_on_test_window,
    demand_backtest,
    demand_search_space,
    evaluate_on_test_window,
    no_price_response,
    split_test_window,
    training_data_shortfall,
)
from ml.families.pricing.estimator import (
    METHODS,
    ElasticityConfig,
    ElasticityEstimates,
    estimate_elasticities,
    naive_loglog_ols,
    shrink_within_category,
)
from ml.families.pricing.model import PricingModel, pyfunc_params
from ml.families.pricing.optimiser import GUARDRAIL_PRIORITY, PricingGuardrails, recommend_prices
from ml.families.rolling_origin import backtest_params, earlier_origin_params, earlier_origins
from ml.family import DataWindow, Frames, Trained, config_from_spec, config_spec, dated_window
from ml.params import RunParams
from ml.tuning import Budget, Callback, Tuned, search

__all__ = [
    "BACKTEST_DAYS", "BACKTEST_METRICS", "BASELINE_NAME", "FAMILY", "GUARDRAIL_PRIORITY", "METHODS", "MODEL_NAME", "POISSON_DEVIANCE",
    "ElasticityConfig", "ElasticityEstimates", "PricingData", "PricingFamily", "PricingGuardrails", "PricingModel",
    "baseline_on_test_window", "demand_backtest", "demand_search_space", "estimate_elasticities",
    "evaluate_on_test_window", "guardrails", "naive_loglog_ols", "no_price_response", "recommend_prices",
    "shrink_within_category", "split_test_window", "training_data_shortfall",
]

logger = logging.getLogger(__name__)

MODEL_NAME = "revopt_price_elasticity"


def joint_cross_elasticity(fitted: Mapping[str, Any]) -> float:
    """The cross-price elasticity substitutes are priced jointly with: the estimator's, when it is
    positive and at least twice its standard error (a noise-level one would only move prices at
    random); else 0."""
    gamma, se = fitted.get("cross_price_effect"), fitted.get("cross_price_effect_se")
    if gamma is None or se is None or not (gamma > 2.0 * se > 0):
        return 0.0
    return float(gamma)


def guardrails(params: RunParams) -> PricingGuardrails:
    """The run's guardrails: its margin floor, change limit and price ending; the rest the defaults."""
    return PricingGuardrails(min_margin=params.price_min_margin, max_change=params.price_max_change,
                             price_ending=params.price_ending)


#: Test metrics summarised over the rolling-origin backtest's origins (``backtest_<metric>_origin<k>``).
BACKTEST_METRICS = ("poisson_deviance", "poisson_deviance_no_price", "baseline_poisson_deviance")


@dataclass(frozen=True)
class PricingData:
    """What training reads, built once: the priced products' demand panel over the ``lookback_days``
    before ``run_date``, those products (the model's input example), and ``earlier``: the same as of
    each earlier origin of the rolling-origin backtest history allows (:mod:`ml.families.rolling_origin`)."""

    panel: pd.DataFrame
    products: pd.DataFrame
    run_date: dt.date
    earlier: tuple[PricingData, ...] = ()


@dataclass(frozen=True)
class _Tested:
    """Selection and test of one origin: the search on the panel before its test window, the chosen
    configuration scored on the test window (with and without its price response) and the baseline."""

    tuned: Tuned[ElasticityConfig]
    test: Evaluation
    test_no_price: Evaluation
    baseline: Evaluation

    def backtest_metrics(self) -> dict[str, float]:
        metric = POISSON_DEVIANCE
        return {metric.name: self.test.value(metric), f"{metric.name}_no_price": self.test_no_price.value(metric),
                f"baseline_{metric.name}": self.baseline.value(metric)}


class PricingFamily:
    """Pricing as a :class:`ml.family.Family`: tuned on the demand backtest before the test window,
    gated on the Poisson deviance of daily units in the test window (the panel's last
    :data:`BACKTEST_DAYS` days; lower is better, the promotion margin a share of the champion's, the
    bootstrap resampling whole products) against the no-price-response baseline and the champion's
    configuration fitted the same way; scored by the optimiser.

    Products in ``price_exclude_categories`` (services, fees, vouchers) are left out of everything:
    the shortfall, the panel and tonight's prices.
    """

    name = "pricing"
    model_name = MODEL_NAME
    training_datasets = ("products", "product_daily_sales", "day_totals", "product_sales", "promotions", "listings",
                         "product_groups")
    nightly_datasets = ("products", "product_daily_sales", "product_sales", "competitor_prices", "inventory")
    metric = POISSON_DEVIANCE
    description = ("Each product's price elasticity of daily demand (units), estimated from its own price changes "
                   "with shrinkage to its category, and the price that maximises expected margin within the run's "
                   "guardrails (price_max_change, ...): published as scores.price_recommendations.")

    def shortfall(self, frames: Frames, run_date: dt.date, params: RunParams) -> str | None:
        priced = _priced(frames["products"], params)
        if reads_aggregated_sales(frames):
            sales = frames["product_sales"].rename(columns={"period_start": "day"})
            return training_data_shortfall(sales, priced, run_date, params.lookback_days, source="shop.product_sales")
        return training_data_shortfall(frames["product_daily_sales"], priced, run_date, params.lookback_days)

    def training_data(self, frames: Frames, run_date: dt.date, params: RunParams) -> PricingData:
        """The panel as of ``run_date`` and, for the rolling-origin backtest, as of each earlier origin
        (``BACKTEST_DAYS`` earlier each) whose history passes :meth:`shortfall`."""
        priced = _priced(frames["products"], params, run_date)
        origins = earlier_origins(self.name, run_date, BACKTEST_DAYS, params,
                                  lambda origin: self.shortfall(frames, origin, params))
        return dataclasses.replace(_panel_data(frames, priced, run_date, params),
                                   earlier=tuple(_panel_data(frames, priced, origin, params) for origin in origins))

    def train(self, data: PricingData, params: RunParams, callbacks: Sequence[Callback]) -> Trained:
        """Tune the estimator on the demand backtest of the panel before the test window; fit the chosen
        configuration on that panel and score it and the no-price-response baseline on the test window
        (``test`` / ``baseline``, what the gate compares); repeat that at the backtest's earlier origins;
        then estimate every product's elasticity with the chosen configuration on the *whole* panel,
        test window included (the production model the nightly run publishes from), and wrap it with the
        run's guardrails."""
        from ml import plots  # matplotlib only when training (the registered model imports this package)

        panel = data.panel
        tested = _select_and_test(data, params, callbacks)
        tuned, test, test_no_price, baseline = tested.tuned, tested.test, tested.test_no_price, tested.baseline
        config = tuned.config
        earlier = [_select_and_test(origin, earlier_origin_params(params)) for origin in data.earlier]
        backtest = summarise_backtest([tested.backtest_metrics(), *(origin.backtest_metrics() for origin in earlier)],
                                      BACKTEST_METRICS)
        estimates = estimate_elasticities(panel, config)
        table = estimates.products
        estimated = table["estimated"].astype(bool)
        model = PricingModel(table, guardrails(params), params.price_horizon_days, joint_cross_elasticity(estimates.params))
        inputs = pricing_input(data.products)
        spec = config_spec(self.name, config)
        config_json = spec["config"]
        metric = self.metric
        return Trained(
            model=model,
            spec=spec,
            test=test,
            baseline=baseline,
            example=inputs.head(5),
            predict_params=pyfunc_params(model.guardrails, model.horizon_days, params.price_joint_substitutes),
            params={  # the runner logs run_date, n_trials, timeout_seconds, seed, promotion_margin and _alpha
                "lookback_days": params.lookback_days, "panel_rows": len(panel),
                "products": int(panel["product_id"].nunique()), "test_days": BACKTEST_DAYS,
                "grain_days": estimates.params["grain_days"],
                "validation_days": BACKTEST_DAYS, "baseline": baseline.name,
                **backtest_params(params, 1 + len(data.earlier), BACKTEST_DAYS),
                **{f"best_{key}": value for key, value in config_json.items() if not isinstance(value, dict)},
            },
            metrics={
                f"test_{metric.name}": test.value(metric),
                f"test_{metric.name}_no_price": test_no_price.value(metric),
                f"baseline_{metric.name}": baseline.value(metric),
                "test_product_days": test.n,
                f"valid_{metric.name}": tuned.value,
                f"valid_{metric.name}_default": tuned.default_value,
                **{f"valid_{metric.name}_{key.removeprefix('deviance_')}": value
                   for key, value in tuned.metrics.items() if key.startswith("deviance_")},
                "products_estimated": int(estimated.sum()),
                "products_with_price_variation": int(table["has_price_variation"].astype(bool).sum()),
                **{key: value for key, value in estimates.params.items() if "_effect" in key},
                "median_interval_width": float((table["elasticity_high"] - table["elasticity_low"])[estimated].median())
                if estimated.any() else float("nan"),
                **backtest,
            },
            tables={"elasticities.json": table},
            figures={"elasticities.png": plots.elasticity_figure(
                table, f"elasticities as of {data.run_date} ({config.interval:.0%} intervals)")},
            checks={"recommended prices of the priced products":
                    model.predict(None, inputs)["recommended_price"].to_numpy()},
            windows=_windows(panel),
        )

    def evaluate(self, data: PricingData, spec: Mapping[str, Any], params: RunParams) -> Evaluation | None:
        """The champion's configuration fitted on the candidate's panel before the test window, exactly
        as the candidate's ``test`` is, and scored on the same test rows; None when the spec cannot be
        rebuilt."""
        config = config_from_spec(self.name, spec, ElasticityConfig)
        if config is None:
            return None
        return evaluate_on_test_window(data.panel, config, name="champion")[0]

    def nightly_input(self, frames: Frames, run_date: dt.date, params: RunParams) -> pd.DataFrame:
        return pricing_input(_priced(frames["products"], params, run_date), frames.get("competitor_prices"),
                             frames.get("inventory"))

    def predict_params(self, run_date: dt.date, params: RunParams) -> dict[str, Any]:
        return pyfunc_params(guardrails(params), params.price_horizon_days, params.price_joint_substitutes)


FAMILY = PricingFamily()


def reads_aggregated_sales(frames: Frames) -> bool:
    """Whether the store keeps aggregated sales (``shop.product_sales`` has rows): demand is then read
    from them at their own grain, not from order lines."""
    sales = frames.get("product_sales")
    return sales is not None and len(sales) > 0


def _panel_data(frames: Frames, priced: pd.DataFrame, run_date: dt.date, params: RunParams) -> PricingData:
    """The ``priced`` products' demand panel over the ``lookback_days`` before ``run_date``: from the
    aggregated sales at their grain when the store keeps them (:func:`features.demand.period_history`),
    else daily from order lines (:func:`features.demand.demand_history`); with the store's promotions
    and listings when it records them."""
    promotions, listings, groups = frames.get("promotions"), frames.get("listings"), frames.get("product_groups")
    # the panel carries brand and location; the products stay as tonight's input has them (the
    # registered model's signature comes from them)
    grouped = priced
    if groups is not None and len(groups):
        grouped = priced.merge(groups[["product_id", "brand", "location"]], on="product_id", how="left")
    if reads_aggregated_sales(frames):
        sales = frames["product_sales"]
        panel = period_history(sales[sales["product_id"].isin(priced["product_id"])], grouped, run_date,
                               params.lookback_days, promotions=promotions, listings=listings)
    else:
        sales = frames["product_daily_sales"]
        sales = sales[sales["product_id"].isin(priced["product_id"])]
        panel = demand_history(sales, grouped, frames["day_totals"], run_date, params.lookback_days,
                               promotions=promotions, listings=listings)
    return PricingData(panel=panel, products=priced, run_date=run_date)


def _select_and_test(data: PricingData, params: RunParams, callbacks: Sequence[Callback] = ()) -> _Tested:
    """Tune on the panel before the test window (its own last ``BACKTEST_DAYS`` are the validation
    window), then fit the chosen configuration there and score it, and the baseline, on the test window."""
    before, _ = split_test_window(data.panel)
    tuned = search(demand_search_space(before, ElasticityConfig(random_state=params.seed)),
                   Budget(params.n_trials, params.tuning_timeout_seconds, params.seed), callbacks)
    test, test_no_price = evaluate_on_test_window(data.panel, tuned.config)
    return _Tested(tuned, test, test_no_price, baseline_on_test_window(data.panel))


def _windows(panel: pd.DataFrame) -> dict[str, DataWindow]:
    """The demand panel's three windows: the search fits on ``train`` and scores the last
    ``BACKTEST_DAYS`` before the test window (``validation``); the chosen configuration, fitted on both,
    is scored on the ``test`` window (the panel's last ``BACKTEST_DAYS``). The published model is then
    estimated on the whole panel."""
    before, test = split_test_window(panel)
    train, valid = split_test_window(before)
    what = "daily units (and prices) of the priced products"
    return {"train": dated_window(train, "day", f"{what} the search fits on", target="units"),
            "validation": dated_window(valid, "day", f"{what}: the search's held-out last {BACKTEST_DAYS} days "
                                                     "before the test window", target="units"),
            "test": dated_window(test, "day", f"{what}: the test window, the last {BACKTEST_DAYS} days",
                                 target="units")}


def _priced(products: pd.DataFrame, params: RunParams, run_date: dt.date | None = None) -> pd.DataFrame:
    """The products pricing covers: all but those in ``price_exclude_categories`` (logged when
    ``run_date`` says which run leaves them out)."""
    excluded = products["category"].isin(params.price_exclude_categories)
    if excluded.any() and run_date is not None:
        logger.info("pricing for %s leaves out %d products in categories %s (price_exclude_categories)", run_date,
                    int(excluded.sum()), sorted(products.loc[excluded, "category"].unique()))
    return products[~excluded]
