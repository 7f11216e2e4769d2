"""The demand backtest the pricing family is tuned and gated on, and its search space.

:func:`demand_backtest` fits on the panel's days before the last ``BACKTEST_DAYS`` and scores the
out-of-sample Poisson deviance of daily units on them (with their realised prices and store
traffic); :func:`demand_search_space` is what :func:`ml.tuning.search` tunes the estimator's
hyperparameters with on it (``level_sd`` for the local level, the LightGBM nuisances for DML; the
given configuration is kept unless a trial beats it). :func:`training_data_shortfall` says when a
store's sales history cannot train the family at all.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import optuna
import pandas as pd

from ml.families.pricing.estimator import ElasticityConfig, _dml_design, _estimate, _RawFit
from ml.tuning import Scored, SearchSpace

#: days the demand backtest holds out at the end of the panel (it fits on the days before)
BACKTEST_DAYS = 28
_FILTER_STEPS = 8


def training_data_shortfall(sales: pd.DataFrame, products: pd.DataFrame, run_date: Any, lookback_days: int,
                            validation_days: int = BACKTEST_DAYS) -> str | None:
    """Why the sales history cannot train the pricing model as of ``run_date`` (None when it can):
    no product of ``products`` sold in the ``lookback_days`` before it, none of those that sold ever
    changed price (list price, or the average price paid on a day), or every sale falls in the
    demand backtest's held-out last ``validation_days`` days. ``sales`` is the product_daily_sales
    extract (product_id, day, units, revenue, list_price). The reason names the run date and tables."""
    run = pd.Timestamp(run_date).normalize()
    window = sales[(sales["day"] >= run - pd.Timedelta(days=lookback_days)) & (sales["day"] < run)
                   & sales["product_id"].isin(products["product_id"])]
    sold = window[window["units"] > 0]
    if sold.empty:
        return (f"no priced product sold in the {lookback_days} days before {run.date()} "
                "(shop.order_lines of completed shop.orders)")
    split = run - pd.Timedelta(days=validation_days)
    first_sale = pd.Timestamp(sold["day"].min())
    if first_sale >= split:
        return (f"too little sales history before {run.date()}: the first sale is on {first_sale.date()}, inside the "
                f"demand backtest's held-out last {validation_days} days (it needs sales before {split.date()}) "
                "(shop.order_lines of completed shop.orders)")
    paid_prices = (sold["revenue"] / sold["units"]).round(2).groupby(sold["product_id"]).nunique()
    list_prices = window[window["product_id"].isin(sold["product_id"])].groupby("product_id")["list_price"].nunique()
    if not ((paid_prices > 1).any() or (list_prices > 1).any()):
        return (f"no product with price variation before {run.date()}: every product that sold in the {lookback_days} "
                f"days before it ({len(paid_prices)}) sold at one price and kept its list price "
                "(shop.product_prices / shop.order_lines)")
    return None


def _poisson_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    mu = np.clip(mu, 1e-9, None)
    term = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return float(2.0 * np.mean(term - (y - mu)))


def demand_backtest(panel: pd.DataFrame, config: ElasticityConfig | None = None,
                    validation_days: int = BACKTEST_DAYS) -> dict[str, float]:
    """Fit on the panel's days before ``last day - validation_days + 1``, predict daily units on the
    rest (with their realised prices and store traffic) and score the mean Poisson deviance.

    Also scores two references on the same rows: ``deviance_no_price`` (the same model with every
    elasticity 0) and ``deviance_naive`` (recent mean units scaled by traffic).
    """
    config = config or ElasticityConfig()
    split = panel["day"].max() - pd.Timedelta(days=validation_days - 1)
    train, holdout = panel[panel["day"] < split], panel[panel["day"] >= split]
    if train.empty:
        raise ValueError(f"demand backtest: the panel's days {panel['day'].min().date()}..{panel['day'].max().date()} "
                         f"leave none before the {validation_days} held-out days to fit on")
    fitted, raw = _estimate(train, config)
    estimates = fitted.products.set_index("product_id")
    holdout = holdout[holdout["product_id"].isin(raw.product_id)]
    position = np.searchsorted(raw.product_id, holdout["product_id"].to_numpy())
    e = estimates["elasticity"].fillna(estimates["prior_elasticity"]).reindex(raw.product_id).fillna(-1.0).to_numpy()[position]
    price = holdout["log_price_in_force"].fillna(holdout["log_price"]).to_numpy()
    y = holdout["units"].to_numpy(dtype=float)
    if config.method == "local_level":
        level_sd = raw.params["level_sd"]
        mu = _filtered_predictions(raw, holdout, position, e, price, level_sd)
        mu_flat = _filtered_predictions(raw, holdout, position, np.zeros_like(e), price, level_sd)
    else:
        X, offset, price_base = _dml_design(holdout)
        demand, price_model = raw.models
        mu_x = np.exp(offset + demand.predict(X, raw_score=True))
        m_x = price_base + price_model.predict(X)
        intercept = np.nan_to_num(raw.params["final_intercepts"])[position]
        mu = mu_x * np.exp(intercept + e * (price - m_x))
        mu_flat = mu_x * np.exp(intercept)
    recent = train[train["day"] >= split - pd.Timedelta(days=config.anchor_days)]
    scale = (recent.groupby("product_id")["units"].sum() + 0.5) / recent.groupby("product_id")["log_lines"].apply(lambda s: np.exp(s).sum())
    mu_naive = scale.reindex(holdout["product_id"]).fillna(0.5 / np.exp(recent["log_lines"]).sum()).to_numpy() * np.exp(holdout["log_lines"].to_numpy())
    return {
        "deviance": _poisson_deviance(y, mu),
        "deviance_no_price": _poisson_deviance(y, mu_flat),
        "deviance_naive": _poisson_deviance(y, mu_naive),
        "rows": float(len(y)),
    }


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
    exponent = holdout["log_lines"].to_numpy() + e * (price - raw.price_mean[position])
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
    on ``panel``: ``level_sd`` for the local level, the LightGBM nuisance hyperparameters (shared by
    the demand and price models) for DML. ``config`` (the default) is scored too and kept unless a
    trial beats it; every trial's backtest scores are its metrics."""
    config = config or ElasticityConfig()
    return SearchSpace(
        name=f"pricing-{config.method}",
        suggest=lambda trial: _suggest(trial, config),
        score=lambda candidate: Scored(candidate, demand_backtest(panel, candidate, validation_days)),
        objective="deviance", direction="minimize", default=config,
    )
