"""Purchase propensity: the probability that a customer completes an order in the next N days.

The verbs every family shares:

- **training set as of a cutoff**: features from data before cutoff C, label = purchase in
  ``[C, C + N)`` (:func:`training_set`);
- **tune** with Optuna on a time-based holdout: fit on cutoff ``D - 2N``, validate on cutoff
  ``D - N`` whose labels end exactly at the run date D (:func:`tune`);
- **fit** the final model on the most recent labelled cutoff ``D - N`` (:func:`fit`);
- **evaluate**, **log** and **register** (:func:`train_propensity`), **score** with the
  ``@champion`` alias (:mod:`ml.scoring`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from features.customer import FEATURE_COLUMNS, customer_features, purchase_label

logger = logging.getLogger(__name__)

MODEL_NAME = "revopt_purchase_propensity"
_MAX_ROUNDS = 1000
_EARLY_STOPPING = 30


@dataclass(frozen=True)
class PropensityConfig:
    horizon_days: int = 30
    n_trials: int = 10
    timeout_seconds: float = 120.0
    seed: int = 42
    promotion_margin: float = 0.005  # holdout ROC AUC a new version must gain over the champion


@dataclass(frozen=True)
class LabelledSet:
    cutoff: pd.Timestamp
    X: pd.DataFrame
    y: pd.Series

    @property
    def positive_rate(self) -> float:
        return float(self.y.mean()) if len(self.y) else float("nan")


def training_set(frames: dict[str, pd.DataFrame], cutoff: pd.Timestamp, horizon_days: int) -> LabelledSet:
    """Features as of ``cutoff`` and the purchase label over the following ``horizon_days``."""
    features = customer_features(frames["customers"], frames["orders"], frames["customer_daily_events"], cutoff)
    ids = pd.Index(features["customer_id"])
    y = purchase_label(ids, frames["orders"], cutoff, horizon_days)
    X = features.set_index("customer_id")[list(FEATURE_COLUMNS)]
    return LabelledSet(cutoff=cutoff, X=X, y=y.reindex(X.index))


def holdout_cutoffs(run_date: dt.date, horizon_days: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(train cutoff, validation cutoff): the validation labels end at the run date."""
    run_ts = pd.Timestamp(run_date, tz="UTC")
    return run_ts - pd.Timedelta(days=2 * horizon_days), run_ts - pd.Timedelta(days=horizon_days)


def _base_params(seed: int) -> dict[str, object]:
    return {
        "objective": "binary",
        "metric": "auc",
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        "bagging_freq": 1,
    }


def _suggest(trial: optuna.Trial) -> dict[str, object]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 8, 64, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 200, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.6, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.6, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
    }


def _check_trainable(data: LabelledSet, role: str) -> None:
    if len(data.y) == 0 or data.y.nunique() < 2:
        raise ValueError(
            f"{role} set at cutoff {data.cutoff.date()} has {len(data.y)} customers and "
            f"{int(data.y.sum())} purchasers: both classes are needed to train purchase propensity"
        )


def tune(
    train: LabelledSet,
    valid: LabelledSet,
    config: PropensityConfig,
    callbacks: list | None = None,
) -> optuna.Study:
    """Optuna search (TPE, seeded) maximising validation ROC AUC, bounded by trials and seconds."""
    _check_trainable(train, "training")
    _check_trainable(valid, "validation")
    train_data = lgb.Dataset(train.X, label=train.y, free_raw_data=False)
    valid_data = lgb.Dataset(valid.X, label=valid.y, reference=train_data, free_raw_data=False)

    def objective(trial: optuna.Trial) -> float:
        params = {**_base_params(config.seed), **_suggest(trial)}
        booster = lgb.train(
            params,
            train_data,
            num_boost_round=_MAX_ROUNDS,
            valid_sets=[valid_data],
            callbacks=[lgb.early_stopping(_EARLY_STOPPING, verbose=False)],
        )
        trial.set_user_attr("best_iteration", int(booster.best_iteration or _MAX_ROUNDS))
        return float(booster.best_score["valid_0"]["auc"])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        study_name=f"propensity-{valid.cutoff.date()}",
    )
    study.optimize(objective, n_trials=config.n_trials, timeout=config.timeout_seconds, callbacks=callbacks or [])
    logger.info("tuning done: %d trials, best AUC %.4f", len(study.trials), study.best_value)
    return study


def fit(data: LabelledSet, params: dict[str, object], num_rounds: int, seed: int) -> lgb.Booster:
    """Fit the final booster on ``data`` with fixed params and number of rounds."""
    _check_trainable(data, "final training")
    return lgb.train({**_base_params(seed), **params}, lgb.Dataset(data.X, label=data.y), num_boost_round=num_rounds)


def evaluate(y_true: pd.Series, probability: np.ndarray) -> dict[str, float]:
    """Holdout metrics for a probability forecast."""
    clipped = np.clip(probability, 1e-6, 1 - 1e-6)
    return {
        "roc_auc": float(roc_auc_score(y_true, probability)),
        "pr_auc": float(average_precision_score(y_true, probability)),
        "log_loss": float(log_loss(y_true, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(y_true, probability)),
        "positive_rate": float(np.mean(y_true)),
        "mean_prediction": float(np.mean(probability)),
    }
