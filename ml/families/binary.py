"""A calibrated binary classifier of customers, as a family: purchase propensity and churn are two
instances (:mod:`ml.families.propensity`, :mod:`ml.families.churn`) that differ only in their labelled
set, horizon and population.

Training at run date D (the time-based holdout of every customer family, ``features.customer.
holdout_cutoffs``): tune family and hyperparameters on the training cutoff ``D - 2h`` against the
validation cutoff ``D - h`` (:func:`ml.families.classifier.tune`), refit the best on the training
cutoff, choose the calibration on the validation cutoff, report holdout metrics, then fit what scores
(the chosen specification refitted on the latest labelled cutoff, ``D - h``, with the calibrator).
The gate compares raw holdout ROC AUC; the champion's spec is refitted on the same training cutoff.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from features.customer import FEATURE_COLUMNS, LabelledSet, active_mask, holdout_cutoffs, population, purchase_label
from ml import plots
from ml.families.classifier import (
    ESTIMATORS, CalibratedModel, ModelSpec, choose_calibration, evaluate, label_shortfall, refit, tune,
)
from ml.family import Frames, Metric, Trained, require_finite
from ml.params import RunParams
from ml.tuning import Budget, Callback

ROC_AUC = Metric("roc_auc", higher_is_better=True, relative_margin=False)
CUSTOMER_DATASETS = ("customers", "orders")


class CalibratedClassifierModel(mlflow.pyfunc.PythonModel):
    """The pyfunc: the calibrated probability of the positive class for each row of a customer
    features frame (:data:`features.customer.FEATURE_COLUMNS`; other columns are ignored)."""

    def __init__(self, model: CalibratedModel) -> None:
        self.model = model

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        return self.model.predict_proba(model_input)

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        """Per-feature log-odds contributions (the published top factors)."""
        return self.model.contributions(features)


@dataclass(frozen=True)
class BinaryData:
    run_date: dt.date
    train: LabelledSet
    valid: LabelledSet


@dataclass(frozen=True)
class BinaryFamily:
    """A binary customer family. ``labelled_set(frames, cutoff, params)`` builds its features and labels
    at a cutoff; ``horizon(params)`` is its label window; ``active_days(params)`` (churn) restricts the
    population to customers active before the cutoff; ``label_names`` name the two labels in reasons."""

    name: str
    model_name: str
    horizon: Callable[[RunParams], int]
    labelled_set: Callable[[Frames, pd.Timestamp, RunParams], LabelledSet]
    label_names: tuple[str, str]
    active_days: Callable[[RunParams], int] | None = None
    metric: Metric = ROC_AUC
    training_datasets: tuple[str, ...] = (*CUSTOMER_DATASETS, "customer_daily_events")
    nightly_datasets: tuple[str, ...] = (*CUSTOMER_DATASETS, "customer_event_features")

    def shortfall(self, frames: Frames, run_date: dt.date, params: RunParams) -> str | None:
        """Too few customers of either label at either cutoff (``ml.families.classifier.MIN_PER_LABEL``),
        counted from the customers and orders alone: the nightly extract has no daily events."""
        horizon = self.horizon(params)
        label_sets = self._label_sets(frames, run_date, params)
        reason = label_shortfall(label_sets, label_names=(self.label_names[0].format(horizon=horizon), self.label_names[1]))
        if reason is None:
            return None
        population_note = "" if self.active_days is None else (
            f", among customers active in the {self.active_days(params)} days before each cutoff")
        return f"{self.name.replace('_', ' ')} for {run_date}: {reason}{population_note} (shop.customers, shop.orders)"

    def _label_sets(self, frames: Frames, run_date: dt.date, params: RunParams) -> dict[str, pd.Series]:
        """The training and validation sets' 0/1 labels; for churn, active customers only and 1 for no
        completed order in the horizon."""
        customers, orders = frames["customers"], frames["orders"]
        completed = orders[orders["status"] == "completed"]
        horizon = self.horizon(params)
        label_sets = {}
        for role, cutoff in zip(("training set", "validation set"), holdout_cutoffs(run_date, horizon)):
            ids = population(customers, cutoff)
            if self.active_days is not None:
                since = cutoff - pd.Timedelta(days=min(self.active_days(params), params.lookback_days))
                recent = completed[(completed["order_ts"] >= since) & (completed["order_ts"] < cutoff)]
                ids = ids[ids.isin(recent["customer_id"])]
            bought = purchase_label(ids, orders, cutoff, horizon)
            label_sets[f"{role} at {cutoff.date()}"] = bought if self.active_days is None else 1 - bought
        return label_sets

    def training_data(self, frames: Frames, run_date: dt.date, params: RunParams) -> BinaryData:
        train_cutoff, valid_cutoff = holdout_cutoffs(run_date, self.horizon(params))
        return BinaryData(run_date, self.labelled_set(frames, train_cutoff, params), self.labelled_set(frames, valid_cutoff, params))

    def train(self, data: BinaryData, params: RunParams, callbacks: Sequence[Callback]) -> Trained:
        train, valid = data.train, data.valid
        seed = params.seed
        run_date = data.run_date
        result = tune(train.X, train.y, valid.X, valid.y, Budget(params.n_trials, params.tuning_timeout_seconds, seed),
                      study_name=f"{self.name}-{run_date}", callbacks=callbacks)
        holdout_model = refit(result.best, train.X, train.y, seed)
        raw = holdout_model.predict_proba(valid.X)
        require_finite(self.name, self.model_name, run_date, "holdout predictions", raw)
        calibrator, calibrated, losses = choose_calibration(raw, valid.y, seed)
        require_finite(self.name, self.model_name, run_date, "calibrated holdout predictions", calibrated)
        metrics = evaluate(valid.y, calibrated)
        raw_auc = float(roc_auc_score(valid.y, raw))
        # What scores: the chosen specification refitted on the most recent labelled cutoff.
        final = CalibratedModel(refit(result.best, valid.X, valid.y, seed), calibrator,
                                {"family": self.name, "run_date": run_date.isoformat()})
        return Trained(
            model=CalibratedClassifierModel(final),
            spec={**result.best.to_json_dict(), "features": list(train.X.columns)},
            value=raw_auc,
            example=valid.X.head(5),
            params={
                "horizon_days": self.horizon(params), "families": ",".join(ESTIMATORS),
                "train_cutoff": train.cutoff.date().isoformat(), "valid_cutoff": valid.cutoff.date().isoformat(),
                "n_train": len(train.y), "n_valid": len(valid.y), "best_family": result.best.family,
                "best_num_rounds": result.best.num_rounds, "calibration": calibrator.method,
                **{f"best_{key}": value for key, value in result.best.params.items()},
            },
            metrics={
                **{f"best_valid_roc_auc_{family}": value for family, value in result.best_by_family.items()},
                **{f"holdout_{key}": value for key, value in metrics.items()},
                "holdout_raw_roc_auc": raw_auc,
                **{f"calibration_log_loss_{method}": value for method, value in losses.items()},
            },
            figures=self._figures(holdout_model, valid, raw, calibrated),
            checks={"predictions of the final model on the latest labelled cutoff's customers "
                    f"({valid.cutoff.date()})": final.predict_proba(valid.X)},
            reference_features=valid.X,
        )

    def evaluate(self, data: BinaryData, spec: Mapping[str, Any], params: RunParams) -> float | None:
        """The spec refitted on the candidate's training cutoff and scored on the same holdout, so
        neither model is judged on data it was fitted on; NaN when it does not score every row."""
        if "family" not in spec or spec.get("features") != list(data.train.X.columns):
            return None
        refitted = refit(ModelSpec.from_json_dict(dict(spec)), data.train.X, data.train.y, params.seed)
        predicted = refitted.predict_proba(data.valid.X)
        # a champion that scores NaN on this holdout gets NaN, which the gate counts as a loss
        return float(roc_auc_score(data.valid.y, predicted)) if np.isfinite(predicted).all() else float("nan")

    def nightly_input(self, frames: Frames, run_date: dt.date, params: RunParams) -> pd.DataFrame:
        """Tonight's customer features (``frames["customer_features"]``), indexed by customer id; for a
        family with a population (churn), its customers only."""
        X = frames["customer_features"].set_index("customer_id")[list(FEATURE_COLUMNS)]
        if self.active_days is None:
            return X
        return X[active_mask(X, self.active_days(params)).to_numpy()]

    def predict_params(self, run_date: dt.date, params: RunParams) -> dict[str, Any]:
        return {}

    def _figures(self, model, valid: LabelledSet, raw: np.ndarray, calibrated: np.ndarray) -> dict[str, Any]:
        importance = model.contributions(valid.X).abs().mean()
        title = f"{self.name} holdout at {valid.cutoff.date()}"
        return {
            "roc_pr.png": plots.roc_pr_figure(valid.y, calibrated, title),
            "calibration.png": plots.calibration_figure(valid.y, raw, calibrated, title),
            "lift.png": plots.lift_figure(valid.y, calibrated, title),
            "feature_importance.png": plots.feature_importance_figure(importance, f"{self.name}: mean |contribution| on holdout"),
        }
