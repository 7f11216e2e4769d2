"""The pricing family's time split: the test window the gate scores, the demand backtest the search
is tuned on before it, and the family's naive baseline.

The panel's last :data:`BACKTEST_DAYS` days are the **test window** (:func:`split_test_window`); no
step that chooses a configuration sees them. :func:`demand_search_space` is what
:func:`ml.tuning.search` tunes the estimator's hyperparameters with (``level_sd`` for the local level,
the LightGBM nuisances for DML; the given configuration is kept unless a trial beats it): it runs
:func:`demand_backtest` on the panel *before* the test window, which fits on that panel's days before
its own last ``BACKTEST_DAYS`` days (the **validation window**) and scores the out-of-sample Poisson
deviance of daily units there. The chosen configuration, a champion's, and the baseline are then each
fitted on the whole panel before the test window and scored on the same test rows
(:func:`evaluate_on_test_window`, :func:`baseline_on_test_window`): every product-day of the window of
a product on sale before it, in panel order, predicted with the day's realised price and store traffic
and one day ahead (the model's demand level is updated each day by the units sold up to the day
before, as a forecast made each morning would be; its elasticities and hyperparameters are not).

The **baseline** is "the current price": demand with no price response, each product's units per
store order line over the :data:`BASELINE_DAYS` days before the day (the same one-day-ahead
information), times the day's order lines. A configuration that cannot beat it on the test window is
never promoted (:mod:`ml.gate`).

:func:`training_data_shortfall` says when a store's sales history cannot train the family at all.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import optuna
import pandas as pd

from ml.evaluation import Evaluation, Metric
from ml.families.pricing.estimator import (
    ElasticityConfig, _dml_design, _estimate, _RawFit, curvature_shift, promotion_shift,
)
from ml.tuning import Scored, SearchSpace

#: days of the test window at the end of the panel, and of the search's validation window before it
BACKTEST_DAYS = 28
#: days of recent demand the no-price-response baseline averages
BASELINE_DAYS = 28
BASELINE_NAME = "no-price-response baseline"
_FILTER_STEPS = 8


def training_data_shortfall(sales: pd.DataFrame, products: pd.DataFrame, run_date: Any, lookback_days: int,
                            validation_days: int = BACKTEST_DAYS,
                            source: str = "shop.order_lines of completed shop.orders") -> str | None:
    """Why the sales history cannot train the pricing model as of ``run_date`` (None when it can):
    no product of ``products`` sold in the ``lookback_days`` before it, none of those that sold ever
    changed price (list price, or the average price paid on a day), or every sale falls in the last
    ``2 * validation_days`` days (the test window and the search's validation window before it: the
    search needs days before both to fit on). ``sales`` is the product_daily_sales extract
    (product_id, day, units, revenue, list_price), or the product_sales one with ``day`` the period's
    first day (``source`` names it). The reason names the run date and tables."""
    run = pd.Timestamp(run_date).normalize()
    window = sales[(sales["day"] >= run - pd.Timedelta(days=lookback_days)) & (sales["day"] < run)
                   & sales["product_id"].isin(products["product_id"])]
    sold = window[window["units"] > 0]
    if sold.empty:
        return (f"no priced product sold in the {lookback_days} days before {run.date()} "
                f"({source})")
    split = run - pd.Timedelta(days=2 * validation_days)
    first_sale = pd.Timestamp(sold["day"].min())
    if first_sale >= split:
        return (f"too little sales history before {run.date()}: the first sale is on {first_sale.date()}, inside the "
                f"last {2 * validation_days} days (the test window of {validation_days} days and the tuning's "
                f"validation window of {validation_days} days before it; it needs sales before {split.date()}) "
                f"({source})")
    paid_prices = (sold["revenue"] / sold["units"]).round(2).groupby(sold["product_id"]).nunique()
    list_prices = window[window["product_id"].isin(sold["product_id"])].groupby("product_id")["list_price"].nunique()
    if not ((paid_prices > 1).any() or (list_prices > 1).any()):
        return (f"no product with price variation before {run.date()}: every product that sold in the {lookback_days} "
                f"days before it ({len(paid_prices)}) sold at one price and kept its list price "
                f"(shop.product_prices / {source})")
    return None


def poisson_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    """Mean Poisson deviance of daily units ``y`` under predicted means ``mu`` (the family's metric)."""
    y, mu = np.asarray(y, dtype="float64"), np.clip(np.asarray(mu, dtype="float64"), 1e-9, None)
    term = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return float(2.0 * np.mean(term - (y - mu)))


#: The gate's metric: mean Poisson deviance per test product-day (lower is better; the promotion margin
#: is a share of the champion's); the bootstrap resamples whole products.
POISSON_DEVIANCE = Metric("poisson_deviance", higher_is_better=False, relative_margin=True, score=poisson_deviance)


def split_test_window(panel: pd.DataFrame, days: int = BACKTEST_DAYS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The panel before its last ``days`` days, and those days' rows of the products on sale before
    them (in panel order): the rows a model fitted on the first part is scored on. Raises ValueError
    when no day is left before them."""
    split = panel["day"].max() - pd.Timedelta(days=days - 1)
    before, window = panel[panel["day"] < split], panel[panel["day"] >= split]
    if before.empty:
        raise ValueError(f"demand backtest: the panel's days {panel['day'].min().date()}..{panel['day'].max().date()} "
                         f"leave none before the {days} held-out days to fit on")
    return before, window[window["product_id"].isin(before["product_id"].unique())]


def demand_backtest(panel: pd.DataFrame, config: ElasticityConfig | None = None,
                    validation_days: int = BACKTEST_DAYS) -> dict[str, float]:
    """Fit on the panel's days before ``last day - validation_days + 1``, predict daily units on the
    rest (with their realised prices and store traffic, one day ahead) and score the mean Poisson
    deviance. The search runs it on the panel before the test window (its last days are then the
    validation window); :func:`evaluate_on_test_window` scores a configuration the same way there.

    Also scores two references on the same rows: ``deviance_no_price`` (the same model with every
    elasticity 0) and ``deviance_baseline`` (the no-price-response baseline, :func:`no_price_response`).
    """
    config = config or ElasticityConfig()
    before, rows = split_test_window(panel, validation_days)
    mu, mu_flat = predict_units(before, rows, config)
    y = rows["units"].to_numpy(dtype=float)
    return {
        "deviance": poisson_deviance(y, mu),
        "deviance_no_price": poisson_deviance(y, mu_flat),
        "deviance_baseline": poisson_deviance(y, no_price_response(panel, rows)),
        "rows": float(len(y)),
    }


def evaluate_on_test_window(panel: pd.DataFrame, config: ElasticityConfig, name: str = "candidate",
                            days: int = BACKTEST_DAYS) -> tuple[Evaluation, Evaluation]:
    """``config`` fitted on the panel before its last ``days`` days and scored on the test rows
    (:func:`split_test_window`), and the same fit with every elasticity 0 (what the price response
    adds). Products are the bootstrap's groups (a product's days share its demand level)."""
    before, rows = split_test_window(panel, days)
    mu, mu_flat = predict_units(before, rows, config)
    return _evaluation(name, rows, mu), _evaluation(f"{name} without price response", rows, mu_flat)


def baseline_on_test_window(panel: pd.DataFrame, days: int = BACKTEST_DAYS) -> Evaluation:
    """The family's naive baseline (:func:`no_price_response`) on the same test rows."""
    _, rows = split_test_window(panel, days)
    return _evaluation(BASELINE_NAME, rows, no_price_response(panel, rows))


def _evaluation(name: str, rows: pd.DataFrame, predicted: np.ndarray) -> Evaluation:
    first, last = pd.Timestamp(rows["day"].min()).date(), pd.Timestamp(rows["day"].max()).date()
    grain = int(np.median(rows["period_days"])) if "period_days" in rows.columns and len(rows) else 1
    unit = "daily units" if grain == 1 else f"units per {grain}-day period"
    periods = "product-days" if grain == 1 else "product-periods"
    window = (f"{unit} of {rows['product_id'].nunique()} products on {first}..{last} ({len(rows)} {periods}), "
              f"fitted on the days before {first}")
    return Evaluation(name, rows["units"].to_numpy(dtype="float64"), np.asarray(predicted, dtype="float64"), window,
                      groups=rows["product_id"].to_numpy())


def no_price_response(panel: pd.DataFrame, rows: pd.DataFrame, days: int = BASELINE_DAYS) -> np.ndarray:
    """The baseline "the current price": demand with no price response. For each of ``rows``
    (product-days of ``panel``), the product's units per store order line over the ``days`` days
    before that day (plus half a unit, so a product that sold nothing is not predicted 0), times the
    day's order lines; for a product back after a gap longer than that, its units per line over all
    its history before the day."""
    ordered = panel[["product_id", "day", "units", "log_lines"]].sort_values(["product_id", "day"])
    ordered = ordered.assign(lines=np.exp(ordered["log_lines"]), units=ordered["units"].astype("float64"))
    by_product = ordered.set_index("day").groupby("product_id")[["units", "lines"]]
    trailing = by_product.rolling(f"{days}D", closed="left").sum()
    # a product back after a gap longer than the window (delisted, not recorded): its rate before the gap
    everything = by_product.expanding().sum().groupby(level="product_id").shift(1)
    at = pd.MultiIndex.from_frame(rows[["product_id", "day"]])
    recent, before = trailing.reindex(at), everything.reindex(at)
    gap = ~(recent["lines"].to_numpy() > 0)
    units = np.where(gap, before["units"].to_numpy(), recent["units"].to_numpy())
    lines = np.where(gap, before["lines"].to_numpy(), recent["lines"].to_numpy())
    rate = (np.nan_to_num(units) + 0.5) / np.where(lines > 0, lines, np.nan)
    return rate * np.exp(rows["log_lines"].to_numpy())


def predict_units(before: pd.DataFrame, rows: pd.DataFrame, config: ElasticityConfig) -> tuple[np.ndarray, np.ndarray]:
    """``config`` fitted on ``before`` and its one-day-ahead predictions of ``rows``' daily units (the
    products of ``before``, on later days) with their realised prices and store traffic; and the same
    with every elasticity 0."""
    fitted, raw = _estimate(before, config)
    estimates = fitted.products.set_index("product_id")
    position = np.searchsorted(raw.product_id, rows["product_id"].to_numpy())
    e = estimates["elasticity"].fillna(estimates["prior_elasticity"]).reindex(raw.product_id).fillna(-1.0).to_numpy()[position]
    price = rows["log_price_in_force"].fillna(rows["log_price"]).to_numpy()
    if config.method == "local_level":
        level_sd = raw.params["level_sd"]
        return (_filtered_predictions(raw, rows, position, e, price, level_sd),
                _filtered_predictions(raw, rows, position, np.zeros_like(e), price, level_sd))
    X, offset, price_base = _dml_design(rows)
    demand, price_model = raw.models
    mu_x = np.exp(offset + demand.predict(X, raw_score=True))
    m_x = price_base + price_model.predict(X)
    intercept = np.nan_to_num(raw.params["final_intercepts"])[position]
    return mu_x * np.exp(intercept + e * (price - m_x)), mu_x * np.exp(intercept)


def _filtered_predictions(
    raw: _RawFit, holdout: pd.DataFrame, position: np.ndarray, e: np.ndarray, price: np.ndarray, level_sd: float
) -> np.ndarray:
    """One-day-ahead predictions through the holdout: the level starts from the fit's last day and
    is updated each day by a Poisson extended Kalman filter (elasticities fixed), so the backtest
    compares like with like against models whose controls are lagged demand. A loop over holdout
    days, vectorised over products."""
    day_codes, holdout_days = pd.factorize(holdout["day"].to_numpy(), sort=True)
    level = raw.level_last.copy()
    variance = np.nan_to_num(raw.level_var_last, nan=1.0)
    effects = raw.params.get("promotion_effects", {})
    offset = price - raw.price_mean[position]
    exponent = (holdout["log_lines"].to_numpy() + e * offset + curvature_shift(offset, effects)
                + promotion_shift(holdout, effects))
    y = holdout["units"].to_numpy(dtype=float)
    mu = np.empty(len(holdout))
    for t in range(len(holdout_days)):
        today = np.flatnonzero(day_codes == t)
        cols = position[today]
        variance = variance + level_sd**2
        mu[today] = np.exp(exponent[today] + level[cols])
        # the update is the mode of the day's posterior for the level (a few damped 1-d Newton
        # steps: one plain EKF step overshoots on a lumpy day, e.g. one wholesale order)
        prior_mean, prior_var = level[cols], variance[cols]
        updated = prior_mean.copy()
        for _ in range(_FILTER_STEPS):
            rate = np.exp(exponent[today] + updated)
            gradient = y[today] - rate - (updated - prior_mean) / prior_var
            updated += np.clip(gradient / (rate + 1.0 / prior_var), -2.0, 2.0)
        level[cols] = updated
        variance[cols] = 1.0 / (np.exp(exponent[today] + updated) + 1.0 / prior_var)
    return mu


def _suggest(trial: optuna.Trial, config: ElasticityConfig) -> ElasticityConfig:
    if config.method == "local_level":
        return dataclasses.replace(config, level_sd=trial.suggest_float("level_sd", 0.01, 0.3, log=True))
    params = {
        "num_leaves": trial.suggest_int("num_leaves", 4, 63, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "num_boost_round": trial.suggest_int("num_boost_round", 50, 600, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 20, 1000, log=True),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
    }
    return dataclasses.replace(config, lgb_params=params)



def demand_search_space(panel: pd.DataFrame, config: ElasticityConfig | None = None,
                        validation_days: int = BACKTEST_DAYS) -> SearchSpace[ElasticityConfig]:
    """The search :func:`ml.tuning.search` runs to minimise :func:`demand_backtest`'s ``deviance``
    on ``panel`` (training passes the panel before the test window, so its last ``validation_days``
    are the validation window): ``level_sd`` for the local level, the LightGBM nuisance hyperparameters (shared by
    the demand and price models) for DML. ``config`` (the default) is scored too and kept unless a
    trial beats it; every trial's backtest scores are its metrics."""
    config = config or ElasticityConfig()
    return SearchSpace(
        name=f"pricing-{config.method}",
        suggest=lambda trial: _suggest(trial, config),
        score=lambda candidate: Scored(candidate, demand_backtest(panel, candidate, validation_days)),
        objective="deviance", direction="minimize", default=config,
    )
