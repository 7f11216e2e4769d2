"""Outcome monitoring of the customer families: what a published night of ``scores.customer_scores``
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

The retraining decision (:func:`performance_drops`) looks at one primary metric per family, chosen
to be comparable across periods: ROC AUC for the classifiers, and Spearman rank correlation for CLV
(an RMSE in currency moves with the season's spend level, so a Q4 window would look like a broken
model next to a Q3 test window). Both are measured in points: a drop of more than
``performance_drop_threshold`` below the test value requests retraining.

Everything here is a pure function of frames; :func:`ml.pipeline.evaluate_outcomes` reads the
published scores and the registry, writes ``scores.model_performance`` and logs to MLflow.
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

#: Published columns of a row of ``scores.model_performance``, in table order.
PERFORMANCE_COLUMNS = ("run_date_scored", "run_date_evaluated", "family", "model_name", "model_version", "metric",
                       "value", "n", "horizon_days", "test_value")
#: Classifier metrics reported (``evaluate`` also returns log loss and Brier; they add nothing here).
CLASSIFIER_METRICS = ("roc_auc", "pr_auc", "calibration_error", "lift_top_decile", "positive_rate", "mean_prediction")
CLV_METRICS = ("rmse", "mae", "spearman", "top_decile_capture", "total_predicted", "total_actual")


@dataclass(frozen=True)
class ScoreColumn:
    """One family's score in ``scores.customer_scores``: its column, the prefix of its
    ``<prefix>_model`` / ``<prefix>_version`` columns, the outcome it predicts (``"purchase"``,
    ``"no purchase"`` or ``"spend"``) and the primary metric of the retraining decision."""

    family: str
    column: str
    prefix: str
    outcome: str
    primary: str


SCORE_COLUMNS = (
    ScoreColumn(propensity.FAMILY.name, "purchase_propensity", "propensity", "purchase", "roc_auc"),
    ScoreColumn(churn.FAMILY.name, "churn_risk", "churn", "no purchase", "roc_auc"),
    ScoreColumn(clv.FAMILY.name, "clv", "clv", "spend", "spearman"),
)


@dataclass(frozen=True)
class Scored:
    """One family's scores of one published night, by one model version."""

    run_date: dt.date
    family: str
    model_name: str
    model_version: str


def scored_versions(scores: pd.DataFrame) -> list[Scored]:
    """The (run date, family, model version) combinations in rows of ``scores.customer_scores``
    (a version column per family; a family with no score that night, e.g. churn with no active
    customer, is left out)."""
    found = []
    for score in SCORE_COLUMNS:
        model, version = f"{score.prefix}_model", f"{score.prefix}_version"
        rows = scores[scores[score.column].notna() & scores[version].notna()]
        for (run_date, name, number), _ in rows.groupby(["run_date", model, version], sort=True):
            found.append(Scored(_as_date(run_date), score.family, str(name), str(number)))
    return found


def is_due(run_date_scored: dt.date, horizon_days: int, run_date: dt.date) -> bool:
    """Whether the outcomes of a score published on ``run_date_scored`` are all known on ``run_date``:
    its window ``[run_date_scored, run_date_scored + horizon_days)`` has ended (``R + h <= D``)."""
    return run_date_scored + dt.timedelta(days=int(horizon_days)) <= run_date


@dataclass(frozen=True)
class Outcome:
    """One family's published scores of one night next to what happened: ``labelled`` has one row per
    scored customer (``customer_id``, ``target``: the realised label, ``prediction``: the published
    score) and ``metrics`` the realised metrics computed from it."""

    scored: Scored
    horizon_days: int
    labelled: pd.DataFrame
    metrics: dict[str, float]

    @property
    def outcome(self) -> str:
        return _score_column(self.scored.family).outcome


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
        outcomes.append(Outcome(scored, int(horizon), labelled,
                                {name: value for name, value in metrics.items() if np.isfinite(value)}))
    return outcomes


def performance_rows(outcomes: list[Outcome], run_date: dt.date,
                     test_values: Mapping[tuple[str, str, str], float] | None = None) -> pd.DataFrame:
    """Rows of ``scores.model_performance`` (:data:`PERFORMANCE_COLUMNS`) for ``outcomes`` evaluated on
    ``run_date``; ``test_values[(family, model_version, metric)]`` is the version's test-window value
    of the metric (NaN where unknown)."""
    test_values = test_values or {}
    rows = [{"run_date_scored": o.scored.run_date, "run_date_evaluated": run_date, "family": o.scored.family,
             "model_name": o.scored.model_name, "model_version": o.scored.model_version, "metric": name,
             "value": float(value), "n": len(o.labelled), "horizon_days": o.horizon_days,
             "test_value": float(test_values.get((o.scored.family, o.scored.model_version, name), np.nan))}
            for o in outcomes for name, value in o.metrics.items()]
    return pd.DataFrame(rows, columns=list(PERFORMANCE_COLUMNS))


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


def outcome_report(outcome: Outcome, max_rows: int = 100_000, random_state: int = 0) -> str:
    """Evidently's classification (propensity, churn: ``ClassificationPreset`` on the published
    probability) or regression (CLV: ``RegressionPreset``) report of ``outcome`` as standalone HTML,
    on at most ``max_rows`` customers sampled with ``random_state``."""
    # Evidently is heavy to import (seconds): only when a report is built.
    from evidently import BinaryClassification, DataDefinition, Dataset, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    frame = outcome.labelled[["target", "prediction"]]
    if len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=random_state).sort_index()
    if outcome.outcome == "spend":
        definition = DataDefinition(regression=[Regression(target="target", prediction="prediction")],
                                    numerical_columns=["target", "prediction"])
        preset = RegressionPreset()
    else:
        frame = frame.assign(target=frame["target"].astype("int64"))
        definition = DataDefinition(
            classification=[BinaryClassification(target="target", prediction_probas="prediction", pos_label=1)],
            numerical_columns=["prediction"], categorical_columns=["target"])
        preset = ClassificationPreset()
    with np.errstate(divide="ignore", invalid="ignore"):
        run = Report([preset]).run(Dataset.from_pandas(frame.reset_index(drop=True), data_definition=definition), None)
    return run.get_html_str(as_iframe=False)


def primary_metric(family: str) -> str:
    """The metric the retraining decision reads for ``family``."""
    return _score_column(family).primary


def _score_column(family: str) -> ScoreColumn:
    return next(score for score in SCORE_COLUMNS if score.family == family)


def performance_drops(rows: pd.DataFrame, threshold: float) -> list[str]:
    """One sentence per (run date scored, family, version) whose primary metric realised more than
    ``threshold`` points below its test value (rows without a test value cannot drop)."""
    drops = []
    for row in rows.itertuples(index=False):
        if row.metric != primary_metric(row.family) or not np.isfinite(row.test_value):
            continue
        if row.test_value - row.value > threshold:
            drops.append(f"{row.family} ({row.model_name} v{row.model_version}) scored on {row.run_date_scored}: "
                         f"realised {row.metric} {row.value:.3f} over {row.horizon_days} days on {row.n} customers, "
                         f"{row.test_value - row.value:.3f} below its test value {row.test_value:.3f}")
    return drops


def _as_date(value) -> dt.date:
    return value if isinstance(value, dt.date) and not isinstance(value, dt.datetime) else pd.Timestamp(value).date()
