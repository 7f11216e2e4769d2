"""The GBM candidate: LightGBM with a Tweedie objective on the customer features, predicting the
horizon spend; tuned with :func:`ml.tuning.search` on the training cutoff against the validation cutoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd

from features.customer import FEATURE_COLUMNS
from ml.families import deadline as deadlines
from ml.tuning import Budget, Callback, Scored, SearchSpace, search

logger = logging.getLogger(__name__)

_MAX_ROUNDS = 2000
_EARLY_STOPPING = 50


def _base_params(random_state: int) -> dict[str, object]:
    # Tweedie (log link): the horizon spend is zero for most customers and right-skewed for the
    # rest, a compound Poisson-gamma shape; predictions are exp(score), never negative, and
    # estimate the conditional mean. Plain L2 fits the mean too but chases the few largest
    # spenders and can predict below zero. Rounds are early-stopped on L2, a proper score for the
    # mean: stopping on L1 pulls predictions towards the median, which is 0 for most customers.
    return {
        "objective": "tweedie",
        "metric": "l2",
        "verbosity": -1,
        "seed": random_state,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        "bagging_freq": 1,
    }


def _suggest(trial: optuna.Trial) -> dict[str, object]:
    return {
        "tweedie_variance_power": trial.suggest_float("tweedie_variance_power", 1.1, 1.9),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 8, 64, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 200, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.6, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.6, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
    }


def tune_gbm(
    train_features: pd.DataFrame,
    train_label: pd.Series,
    valid_features: pd.DataFrame,
    valid_label: pd.Series,
    budget: Budget,
    callbacks: Sequence[Callback] = (),
) -> tuple[dict[str, Any], int, lgb.Booster] | None:
    """The GBM's hyperparameters and round count (:func:`ml.tuning.search`, TPE seeded with
    ``budget.random_state``, minimising validation RMSE), and the chosen trial's booster, which predicts with
    that round count exactly as :func:`fit_gbm` of them on the same customers does (the same trees, tested);
    None when no trial had a finite RMSE.

    Each trial early-stops on validation L2 and records ``best_iteration``, ``valid_mae`` and
    ``valid_rmse``; a trial still boosting when ``budget.timeout_seconds`` have passed stops at its best round so
    far (:mod:`ml.families.deadline`). RMSE rather than MAE, the selection metric, because the model is meant to
    estimate *expected* spend: tuned on MAE it drifts towards predicting the median, 0, and
    under-forecasts total spend (by a third on the synthetic store).
    """
    X_train, y_train = _design(train_features, train_label, "training")
    X_valid, y_valid = _design(valid_features, valid_label, "validation")
    # Without feature_pre_filter=False LightGBM rebuilds the dataset, with a [Fatal] log line,
    # whenever a trial lowers min_child_samples below an earlier trial's.
    dataset_params = {"feature_pre_filter": False, "verbosity": -1}
    train_data = lgb.Dataset(X_train, label=y_train, params=dataset_params, free_raw_data=False)
    valid_data = lgb.Dataset(X_valid, label=y_valid, reference=train_data, params=dataset_params, free_raw_data=False)

    deadline = time.monotonic() + budget.timeout_seconds
    best: dict[str, Any] = {"rmse": np.inf, "config": None, "booster": None}  # the trial with the lowest RMSE so far

    def score(params: dict[str, Any]) -> Scored[tuple[dict[str, Any], int]]:
        booster = lgb.train(
            {**_base_params(budget.random_state), **params},
            train_data,
            num_boost_round=_MAX_ROUNDS,
            valid_sets=[valid_data],
            callbacks=[lgb.early_stopping(_EARLY_STOPPING, verbose=False), deadlines.lightgbm_callback(deadline)],
        )
        best_iteration = int(booster.best_iteration or _MAX_ROUNDS)
        predicted = booster.predict(X_valid, num_iteration=best_iteration)
        error = y_valid.to_numpy() - predicted
        metrics = {"best_iteration": best_iteration, "valid_mae": float(np.mean(np.abs(error))),
                   "valid_rmse": float(np.sqrt(np.mean(error**2)))}
        config = (params, best_iteration)
        if metrics["valid_rmse"] < best["rmse"]:  # ties: the first, as the choice below; NaN never
            best.update(rmse=metrics["valid_rmse"], config=config, booster=booster)
        return Scored(config, metrics)

    def best_or_none(default: Scored | None, finished: list[Scored]) -> Scored:
        # every trial's validation RMSE non-finite: no configuration, NaN (the GBM cannot win)
        if not finished:
            return Scored(None, {"valid_rmse": float("nan")})
        return min(finished, key=lambda scored: scored.metrics["valid_rmse"])

    space = SearchSpace(name="clv-gbm", suggest=_suggest, score=score, objective="valid_rmse", direction="minimize",
                        choose=best_or_none)
    chosen = search(space, budget, callbacks).config
    if chosen is None:
        return None
    params, num_rounds = chosen
    if chosen is not best["config"]:  # not expected: refit the chosen spec
        best["booster"] = lgb.train({**_base_params(budget.random_state), **params}, lgb.Dataset(X_train, label=y_train),
                                    num_boost_round=num_rounds)
    return params, num_rounds, best["booster"]


def fit_gbm(features: pd.DataFrame, label: pd.Series, params: dict[str, object], num_rounds: int,
            random_state: int) -> lgb.Booster:
    """Fit a booster on ``features`` / ``label`` with fixed params and number of rounds."""
    X, y = _design(features, label, "final training")
    return lgb.train({**_base_params(random_state), **params}, lgb.Dataset(X, label=y), num_boost_round=num_rounds)


def _design(features: pd.DataFrame, label: pd.Series, role: str) -> tuple[pd.DataFrame, pd.Series]:
    """The feature matrix and the label aligned to it by customer id."""
    X = feature_matrix(features)
    if "customer_id" in features.columns:
        X.index = pd.Index(features["customer_id"].to_numpy(), name="customer_id")
    missing = X.index.difference(label.index)
    if len(missing):
        raise ValueError(f"{role} label is missing {len(missing)} customers, e.g. {list(missing[:5])}")
    y = label.reindex(X.index).astype("float64")
    if len(y) == 0 or not (y > 0).any():
        raise ValueError(f"{role} set has {len(y)} customers and no spend in the horizon: nothing to learn")
    if (y < 0).any():
        raise ValueError(f"{role} label has negative spend; the Tweedie objective needs spend >= 0")
    return X, y


def feature_matrix(features: pd.DataFrame, columns: Sequence[str] = FEATURE_COLUMNS) -> pd.DataFrame:
    """The GBM's inputs: ``columns`` (a fitted booster's own feature names; these features by default)."""
    return features[list(columns)].astype("float64")
