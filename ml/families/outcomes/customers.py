"""Outcome checks of the customer families: what a published night of ``scores.customer_scores``
turned out to be worth once each family's horizon had passed.

A score published on run date R by a version with horizon h is about ``[R, R + h)``; from the run
date ``D >= R + h`` on, the completed orders of that window are known and the score can be checked
against them, with labels exactly as training defines them (:func:`features.customer.purchase_label`,
:func:`features.customer.clv_label`):

- **purchase propensity**: every scored customer, label = a completed order in the window;
- **churn**: the customers scored that night (the active ones; the others have NULL churn risk),
  label = 1 - bought;
- **CLV**: every scored customer, label = completed spend in the window.

Metrics are the families' own test-window metrics (:func:`ml.families.classifier.evaluate`,
:func:`ml.families.clv.metrics.evaluate_clv`), so a realised value sits next to the version's
``test_<metric>`` in MLflow: ROC AUC, PR AUC, expected calibration error, top-decile lift (plus the
positive rate and mean prediction) for the classifiers; RMSE, MAE, Spearman, top-decile capture and
total predicted vs total actual spend for CLV.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.customer import clv_label, purchase_label
from ml.families import churn, clv, propensity
from ml.families.classifier import evaluate
from ml.families.clv.metrics import evaluate_clv
from ml.families.outcomes.common import Outcome, Scored, as_date, finite, is_due

#: Classifier metrics reported (``evaluate`` also returns log loss and Brier; they add nothing here).
CLASSIFIER_METRICS = ("roc_auc", "pr_auc", "calibration_error", "lift_top_decile", "positive_rate", "mean_prediction")
CLV_METRICS = ("rmse", "mae", "spearman", "top_decile_capture", "total_predicted", "total_actual")


@dataclass(frozen=True)
class ScoreColumn:
    """One family's score in ``scores.customer_scores``: its column, the prefix of its
    ``<prefix>_model`` / ``<prefix>_version`` columns and the outcome it predicts (``"purchase"``,
    ``"no purchase"`` or ``"spend"``)."""

    family: str
    column: str
    prefix: str
    outcome: str


SCORE_COLUMNS = (
    ScoreColumn(propensity.FAMILY.name, "purchase_propensity", "propensity", "purchase"),
    ScoreColumn(churn.FAMILY.name, "churn_risk", "churn", "no purchase"),
    ScoreColumn(clv.FAMILY.name, "clv", "clv", "spend"),
)


def scored_versions(scores: pd.DataFrame) -> list[Scored]:
    """The (run date, family, model version) combinations in rows of ``scores.customer_scores``
    (a version column per family; a family with no score that night, e.g. churn with no active
    customer, is left out)."""
    found = []
    for score in SCORE_COLUMNS:
        model, version = f"{score.prefix}_model", f"{score.prefix}_version"
        rows = scores[scores[score.column].notna() & scores[version].notna()]
        for (run_date, name, number), _ in rows.groupby(["run_date", model, version], sort=True):
            found.append(Scored(as_date(run_date), score.family, str(name), str(number)))
    return found


def customer_outcomes(scores: pd.DataFrame, orders: pd.DataFrame, run_date: dt.date,
                      horizons: Mapping[tuple[dt.date, str, str], int]) -> list[Outcome]:
    """The outcomes of published customer scores (``scores``: rows of ``scores.customer_scores`` with
    ``run_date``, ``customer_id``, the score and version columns) for every (run date scored, family,
    model version) listed in ``horizons`` (its version's horizon in days) whose horizon has passed by
    ``run_date`` (:func:`is_due`); the others are left out. ``orders`` must hold every order of
    ``[run_date_scored, run_date)``. A metric that cannot be computed (ROC AUC when every customer
    bought, Spearman of a constant) is left out of ``metrics``."""
    outcomes = []
    for scored in scored_versions(scores):
        horizon = horizons.get((scored.run_date, scored.family, scored.model_version))
        if horizon is None or not is_due(scored.run_date, horizon, run_date):
            continue
        score = _score_column(scored.family)
        night = scores[(pd.to_datetime(scores["run_date"]).dt.date == scored.run_date)
                       & (scores[f"{score.prefix}_version"].astype(str) == scored.model_version)
                       & scores[score.column].notna()]
        ids = pd.Index(night["customer_id"].astype("int64"), name="customer_id")
        cutoff = pd.Timestamp(scored.run_date, tz="UTC")
        if score.outcome == "spend":
            target = clv_label(ids, orders, cutoff, horizon).to_numpy(dtype="float64")
        else:
            bought = purchase_label(ids, orders, cutoff, horizon).to_numpy(dtype="float64")
            target = bought if score.outcome == "purchase" else 1.0 - bought
        labelled = pd.DataFrame({"customer_id": ids.to_numpy(), "target": target,
                                 "prediction": night[score.column].to_numpy(dtype="float64")})
        metrics = _metrics(score.outcome, labelled["target"].to_numpy(), labelled["prediction"].to_numpy())
        outcomes.append(Outcome(scored, int(horizon), labelled, finite(metrics),
                                report="regression" if score.outcome == "spend" else "classification"))
    return outcomes


def _metrics(outcome: str, target: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    if len(target) == 0:
        return {}
    if outcome == "spend":
        metrics = evaluate_clv(pd.Series(target), predicted)
        return {**{name: metrics[name] for name in CLV_METRICS if name in metrics},
                "total_predicted": float(predicted.sum()), "total_actual": float(target.sum())}
    if target.min() == target.max():  # one class: no ranking metric, only the rates
        return {"positive_rate": float(target.mean()), "mean_prediction": float(predicted.mean())}
    metrics = evaluate(pd.Series(target), predicted)
    return {name: float(metrics[name]) for name in CLASSIFIER_METRICS}


def _score_column(family: str) -> ScoreColumn:
    return next(score for score in SCORE_COLUMNS if score.family == family)
