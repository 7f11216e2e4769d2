"""Training with tracking: one MLflow parent run per family and training, Optuna trials as nested
runs, holdout metrics and plots, the model registered, then gated against the champion."""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.metrics import roc_auc_score

from ml import budget, clv, plots, pricing, send_time
from ml.classifier import CalibratedModel, ModelSpec, TuningConfig, choose_calibration, evaluate, refit, tune
from ml.gate import GateDecision, decide, is_finite
from ml.propensity import LabelledSet, features_at, holdout_cutoffs
from ml.pyfunc import BudgetModel, CalibratedClassifierModel, PricingModel, SendTimeModel
from ml.tracking import CHAMPION, configure_mlflow, current_version, set_alias, trial_logger
from revopt.platform.config import Settings
from revopt.platform.postgres import upsert_rows
from revopt.platform.schema import scores_connection

logger = logging.getLogger(__name__)

SPEC_TAG = "revopt.model_spec"
PIP_REQUIREMENTS = [
    f"{name}=={version(name)}"
    for name in ("lightgbm", "xgboost-cpu", "catboost", "scikit-learn", "numpy", "pandas", "scipy", "cloudpickle")
]


class NonFiniteModelError(ValueError):
    """A trained model whose holdout or scoring predictions are not all finite numbers: it is never
    registered. A ValueError, so the task fails at once: retrying would train the same model."""


def _require_finite(family: str, model_name: str, run_date: dt.date, what: str, predictions: Any) -> None:
    """Raise :class:`NonFiniteModelError` when any row of ``predictions`` (an array, or a frame of
    numeric columns) holds NaN or +/-inf, naming the family, model, run date and row count."""
    if isinstance(predictions, (pd.DataFrame, pd.Series)):
        values = predictions.to_numpy(dtype="float64", na_value=np.nan)
    else:
        values = np.asarray(predictions, dtype="float64")
    bad = ~np.isfinite(values).reshape(len(values), -1).all(axis=1) if values.size else np.zeros(0, dtype=bool)
    if bad.any():
        raise NonFiniteModelError(
            f"{family} ({model_name}) for {run_date}: {int(bad.sum())} of {len(values)} {what} are NaN or infinite; "
            "the model is not registered"
        )


@dataclass(frozen=True)
class BinaryTask:
    """One binary model family to train: its registry name, label horizon and training sets."""

    family: str
    model_name: str
    horizon_days: int
    build_set: Callable[[dict[str, pd.DataFrame], pd.Timestamp], LabelledSet]
    tuning: TuningConfig
    promotion_margin: float


def train_binary(settings: Settings, run_date: dt.date, frames: dict[str, pd.DataFrame], task: BinaryTask) -> dict[str, str]:
    """Tune across families, calibrate, evaluate on the time-based holdout, log, register and gate."""
    train_cutoff, valid_cutoff = holdout_cutoffs(run_date, task.horizon_days)
    train = task.build_set(frames, train_cutoff)
    valid = task.build_set(frames, valid_cutoff)
    logger.info(
        "%s: training %d rows at %s (%.1f%% positive), validation %d at %s (%.1f%% positive)", task.family,
        len(train.y), train_cutoff.date(), 100 * train.positive_rate, len(valid.y), valid_cutoff.date(), 100 * valid.positive_rate,
    )
    configure_mlflow(settings)
    champion_version = current_version(task.model_name, CHAMPION)
    seed = task.tuning.seed
    with mlflow.start_run(run_name=f"{task.family}-{run_date}") as run:
        mlflow.set_tags({"revopt.family": task.family, "revopt.run_date": run_date.isoformat()})
        mlflow.log_params(
            {
                "run_date": run_date.isoformat(), "horizon_days": task.horizon_days, "n_trials": task.tuning.n_trials,
                "timeout_seconds": task.tuning.timeout_seconds, "seed": seed, "families": ",".join(task.tuning.families),
                "train_cutoff": train_cutoff.date().isoformat(), "valid_cutoff": valid_cutoff.date().isoformat(),
                "n_train": len(train.y), "n_valid": len(valid.y), "promotion_margin": task.promotion_margin,
            }
        )
        result = tune(train.X, train.y, valid.X, valid.y, task.tuning, study_name=f"{task.family}-{run_date}",
                      callbacks=[trial_logger("valid_roc_auc")])
        mlflow.log_params({"best_family": result.best.family, "best_num_rounds": result.best.num_rounds,
                           **{f"best_{key}": value for key, value in result.best.params.items()}})
        mlflow.log_metrics({f"best_valid_roc_auc_{family}": value for family, value in result.best_by_family.items()})
        mlflow.set_tag(SPEC_TAG, json.dumps({**result.best.to_json_dict(), "features": list(train.X.columns)}))

        _log_reference_features(valid.X)
        holdout_model = refit(result.best, train.X, train.y, seed)
        raw = holdout_model.predict_proba(valid.X)
        _require_finite(task.family, task.model_name, run_date, "holdout predictions", raw)
        calibrator, calibrated, losses = choose_calibration(raw, valid.y, seed)
        _require_finite(task.family, task.model_name, run_date, "calibrated holdout predictions", calibrated)
        metrics = evaluate(valid.y, calibrated)
        raw_auc = float(roc_auc_score(valid.y, raw))
        mlflow.log_param("calibration", calibrator.method)
        mlflow.log_metrics({f"holdout_{key}": value for key, value in metrics.items()})
        mlflow.log_metrics({"holdout_raw_roc_auc": raw_auc, **{f"calibration_log_loss_{m}": v for m, v in losses.items()}})
        logger.info("%s holdout (calibration %s): %s", task.family, calibrator.method, metrics)
        _log_classifier_figures(task.family, holdout_model, valid, raw, calibrated)

        # What scores: the chosen specification refitted on the most recent labelled cutoff.
        final = CalibratedModel(refit(result.best, valid.X, valid.y, seed), calibrator,
                                {"family": task.family, "run_date": run_date.isoformat()})
        _require_finite(task.family, task.model_name, run_date, "predictions of the final model on the latest "
                        f"labelled cutoff's customers ({valid.cutoff.date()})", final.predict_proba(valid.X))
        example = valid.X.head(5)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=CalibratedClassifierModel(final),
            signature=infer_signature(example, final.predict_proba(example)),
            input_example=example,
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=task.model_name,
        )
        model_version = str(info.registered_model_version)
        decision = decide(
            model_name=task.model_name, candidate_version=model_version, candidate_value=raw_auc,
            champion_version=champion_version,
            champion_value=_champion_holdout_auc(task.model_name, champion_version, train, valid, seed),
            metric="roc_auc", margin=task.promotion_margin,
        )
        apply_decision(settings, run_date, decision, run.info.run_id)
        return {"run_id": run.info.run_id, "model_name": task.model_name, "model_version": model_version,
                "alias": decision.alias}


def train_clv(settings: Settings, run_date: dt.date, frames: dict[str, pd.DataFrame], config: clv.ClvConfig,
              promotion_margin: float, lookback_days: int | None = None) -> dict[str, str]:
    """Select between BTYD and GBM on the holdout, log both, register the winner and gate it.

    The gate compares holdout ``config.selection_metric`` (lower is better); ``promotion_margin``
    is relative here: the candidate must improve on the champion by that share of its error.
    """
    horizon = config.horizon_days
    train_cutoff, valid_cutoff = clv.holdout_cutoffs(run_date, horizon)
    train = clv.training_set(frames, train_cutoff, horizon, lookback_days)
    valid = clv.training_set(frames, valid_cutoff, horizon, lookback_days)
    features_now = features_at(frames, pd.Timestamp(run_date, tz="UTC"), lookback_days)
    configure_mlflow(settings)
    champion_version = current_version(clv.MODEL_NAME, CHAMPION)
    metric = config.selection_metric
    with mlflow.start_run(run_name=f"clv-{run_date}") as run:
        mlflow.set_tags({"revopt.family": "clv", "revopt.run_date": run_date.isoformat()})
        mlflow.log_params(
            {
                "run_date": run_date.isoformat(), "horizon_days": horizon, "n_trials": config.n_trials,
                "timeout_seconds": config.timeout_seconds, "seed": config.seed, "selection_metric": metric,
                "train_cutoff": train_cutoff.date().isoformat(), "valid_cutoff": valid_cutoff.date().isoformat(),
                "n_train": len(train.y), "n_valid": len(valid.y), "promotion_margin": promotion_margin,
            }
        )
        selection = clv.select_clv_model(train.X, train.y, valid.X, valid.y, config, callbacks=[trial_logger("valid_rmse")])
        for candidate, values in selection.metrics.items():
            mlflow.log_metrics({f"holdout_{candidate}_{key}": value for key, value in values.items()})
        mlflow.log_metrics({f"holdout_{key}": value for key, value in selection.metrics[selection.winner].items()})
        mlflow.log_param("winner", selection.winner)
        mlflow.set_tag(SPEC_TAG, json.dumps(selection.spec))
        logger.info("clv holdout: %s wins by %s; %s", selection.winner, metric, selection.metrics)

        _require_finite("clv", clv.MODEL_NAME, run_date, f"holdout predictions of the winner ({selection.winner})",
                        selection.validation_predictions[selection.winner])
        final = clv.fit_final_clv_model(selection, valid.X, valid.y, config, btyd_fit_features=features_now)
        _require_finite("clv", clv.MODEL_NAME, run_date, f"predictions of the final {selection.winner} model on the "
                        "run date's customers", final.predict(None, features_now))
        _log_clv_figures(selection, valid, final)
        example = valid.X.head(5)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=final,
            signature=infer_signature(example, final.predict(None, example)),
            input_example=example,
            pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=clv.MODEL_NAME,
        )
        model_version = str(info.registered_model_version)
        champion_value = _champion_clv_error(champion_version, train, valid, config, selection)
        decision = decide(
            model_name=clv.MODEL_NAME, candidate_version=model_version,
            candidate_value=selection.metrics[selection.winner][metric],
            champion_version=champion_version, champion_value=champion_value, metric=metric,
            margin=promotion_margin * champion_value if is_finite(champion_value) else 0.0,
            higher_is_better=False,
        )
        apply_decision(settings, run_date, decision, run.info.run_id)
        return {"run_id": run.info.run_id, "model_name": clv.MODEL_NAME, "model_version": model_version,
                "alias": decision.alias}


def _champion_clv_error(champion_version: str | None, train: LabelledSet, valid: LabelledSet, config: clv.ClvConfig,
                        selection: clv.ClvSelection) -> float | None:
    spec = champion_spec(clv.MODEL_NAME, champion_version)
    if spec is None or spec.get("features") != list(valid.X.columns) or spec.get("horizon_days") != config.horizon_days:
        return None
    if spec["model"] == clv.BTYD:
        # a BTYD champion refitted on this holdout is exactly the candidate BTYD (no labels, no
        # hyperparameters: fit on the validation cutoff's features), so reuse its predictions
        predicted = selection.validation_predictions[clv.BTYD].to_numpy()
    else:
        predicted = clv.holdout_predictions(spec, train.X, train.y, valid.X, config)
    return clv.evaluate_clv(valid.y, predicted)[config.selection_metric]


def _log_clv_figures(selection: clv.ClvSelection, valid: LabelledSet, final: clv.ClvModel) -> None:
    figures = {
        "predicted_vs_actual.png": plots.predicted_vs_actual_figure(
            valid.y, {name: series.to_numpy() for name, series in selection.validation_predictions.items()},
            f"CLV holdout at {valid.cutoff.date()} (winner: {selection.winner})",
        )
    }
    contributions = final.contributions(valid.X)
    if contributions is not None:
        figures["feature_importance.png"] = plots.feature_importance_figure(
            contributions.abs().mean(), "clv: mean |contribution| on holdout (log spend)")
    for name, fig in figures.items():
        _log_figure(name, fig)


def train_pricing(settings: Settings, run_date: dt.date, frames: dict[str, pd.DataFrame], *, lookback_days: int,
                  guardrails: pricing.PricingGuardrails, horizon_days: int, n_trials: int, timeout_seconds: float,
                  seed: int, promotion_margin: float) -> dict[str, str]:
    """Tune the demand model on a time-based backtest, estimate elasticities with intervals, log,
    register the pricing model and gate it on the backtest's Poisson deviance (lower is better;
    ``promotion_margin`` relative, as for CLV)."""
    panel = pricing.demand_history(frames["product_daily_sales"], frames["products"], frames["day_totals"],
                                   run_date, lookback_days)
    configure_mlflow(settings)
    champion_version = current_version(pricing.MODEL_NAME, CHAMPION)
    with mlflow.start_run(run_name=f"pricing-{run_date}") as run:
        mlflow.set_tags({"revopt.family": "pricing", "revopt.run_date": run_date.isoformat()})
        mlflow.log_params({"run_date": run_date.isoformat(), "lookback_days": lookback_days, "n_trials": n_trials,
                           "timeout_seconds": timeout_seconds, "seed": seed, "panel_rows": len(panel),
                           "products": int(panel["product_id"].nunique()), "promotion_margin": promotion_margin})
        tuning = pricing.tune_demand_model(
            panel, pricing.ElasticityConfig(random_state=seed), n_trials=n_trials, timeout_seconds=timeout_seconds,
            callbacks=[trial_logger("valid_poisson_deviance")],
        )
        config_json = _json_safe(asdict(tuning.config))
        mlflow.set_tag(SPEC_TAG, json.dumps({"family": "pricing", "config": config_json}))
        mlflow.log_params({f"best_{key}": value for key, value in config_json.items() if not isinstance(value, dict)})
        mlflow.log_metrics({"backtest_poisson_deviance": tuning.best_deviance,
                            "backtest_poisson_deviance_default": tuning.default_deviance})
        estimates = pricing.estimate_elasticities(panel, tuning.config)
        table = estimates.products
        estimated = table["estimated"].astype(bool)
        mlflow.log_metrics({
            "products_estimated": int(estimated.sum()),
            "products_with_price_variation": int(table["has_price_variation"].astype(bool).sum()),
            "median_interval_width": float((table["elasticity_high"] - table["elasticity_low"])[estimated].median())
            if estimated.any() else float("nan"),
        })
        mlflow.log_table(table, "elasticities.json")
        _log_figure("elasticities.png", plots.elasticity_figure(
            table, f"elasticities as of {run_date} ({tuning.config.interval:.0%} intervals)"))

        model = PricingModel(table, guardrails, horizon_days)
        priced = frames["products"][["product_id", "cost", "current_price"]]
        example = priced.head(5)
        champion_value = _champion_config_value(
            pricing.MODEL_NAME, "pricing", champion_version, pricing.ElasticityConfig,
            lambda config: pricing.demand_backtest(panel, config)["deviance"],
        )
        return _register_and_gate(
            settings, run_date, run.info.run_id, pricing.MODEL_NAME, model, example, family="pricing",
            scoring={"recommended prices of the priced products": model.predict(None, priced)},
            metric="backtest_poisson_deviance", candidate_value=tuning.best_deviance,
            champion_version=champion_version, champion_value=champion_value, relative_margin=promotion_margin,
        )


def train_send_time(settings: Settings, run_date: dt.date, frames: dict[str, pd.DataFrame], config: send_time.SendTimeConfig,
                    *, n_trials: int, timeout_seconds: float, promotion_margin: float) -> dict[str, str]:
    """Tune the send-time model's shrinkage on held-out sends, log the priors and the
    recommended-hour distribution, register the configuration and gate it on the backtest
    objective (``docs/send_time.md``; lower is better, ``promotion_margin`` relative)."""
    data = (frames["engagement_by_hour"], frames["orders"], frames["customers"])
    as_of = pd.Timestamp(run_date, tz="UTC")
    configure_mlflow(settings)
    champion_version = current_version(send_time.MODEL_NAME, CHAMPION)
    with mlflow.start_run(run_name=f"send_time-{run_date}") as run:
        mlflow.set_tags({"revopt.family": "send_time", "revopt.run_date": run_date.isoformat()})
        mlflow.log_params({"run_date": run_date.isoformat(), "n_trials": n_trials, "timeout_seconds": timeout_seconds,
                           "seed": config.random_state, "holdout_days": config.holdout_days,
                           "quiet_hours": str(config.quiet_hours), "default_send_hour": config.default_send_hour,
                           "promotion_margin": promotion_margin})
        tuning = send_time.tune_send_time(*data, as_of, config, n_trials=n_trials, timeout_seconds=timeout_seconds,
                                          callbacks=[trial_logger("valid_objective")])
        config_json = _json_safe(asdict(tuning.config))
        mlflow.set_tag(SPEC_TAG, json.dumps({"family": "send_time", "config": config_json}))
        mlflow.log_params({f"best_{key}": value for key, value in config_json.items()
                           if key in ("prior_strength", "level_strength", "bandwidth_hours", "activity_weight",
                                      "activity_strength", "by_day_type", "day_type_pooling")})
        # the objective is 1 / policy lift when send hours vary enough to estimate it, else the log loss
        mlflow.log_metrics({"backtest_objective": tuning.best_loss, "backtest_objective_default": tuning.default_loss,
                            **{f"backtest_{key}": value for key, value in tuning.scores.items() if key != "objective"}})
        fit = send_time.fit_send_time(*data, as_of, tuning.config)
        recommendations = send_time.recommend_send_times(fit)
        mlflow.log_metrics({key: float(value) for key, value in fit.params.items() if isinstance(value, (int, float))})
        mlflow.log_table(fit.priors, "send_time_priors.json")
        _log_figure("send_times.png", plots.send_time_figure(
            fit.priors, recommendations, f"send times as of {run_date}", quiet_hours=tuning.config.quiet_hours))

        model = SendTimeModel(tuning.config, fit.priors)
        example = frames["customers"][["customer_id", "timezone", "country"]].head(5)
        champion_value = _champion_config_value(
            send_time.MODEL_NAME, "send_time", champion_version, send_time.SendTimeConfig,
            lambda champion: send_time.send_time_backtest(*data, as_of, champion)["objective"],
        )
        return _register_and_gate(
            settings, run_date, run.info.run_id, send_time.MODEL_NAME, model, example, family="send_time",
            scoring={"customers' recommended hours and rates": recommendations[["best_hour", "expected_rate_best"]],
                     "prior recommendations for the input example":
                     model.predict(None, example)[["best_hour", "expected_rate_best"]]},
            metric="backtest_objective", candidate_value=tuning.best_loss,
            champion_version=champion_version, champion_value=champion_value, relative_margin=promotion_margin,
        )


def train_budget(settings: Settings, run_date: dt.date, frames: dict[str, pd.DataFrame], *, lookback_days: int,
                 config: budget.MediaConfig, constraints: budget.BudgetConstraints, n_trials: int,
                 timeout_seconds: float, promotion_margin: float) -> dict[str, str]:
    """Fit the media mix model (hyperparameters tuned on held-out weeks), log the response curves
    and the allocation under this run's constraints, register the model and gate it on the held-out
    weeks' MAPE of daily revenue (lower is better; ``promotion_margin`` relative)."""
    history = budget.media_history(frames["marketing_spend"], frames["orders"], run_date, lookback_days)
    configure_mlflow(settings)
    champion_version = current_version(budget.MODEL_NAME, CHAMPION)
    with mlflow.start_run(run_name=f"budget-{run_date}") as run:
        mlflow.set_tags({"revopt.family": "budget", "revopt.run_date": run_date.isoformat()})
        mlflow.log_params({"run_date": run_date.isoformat(), "lookback_days": lookback_days, "history_days": len(history),
                           "channels": ",".join(budget.paid_channels(history)), "n_trials": n_trials,
                           "timeout_seconds": timeout_seconds, "seed": config.random_state, "target": config.target,
                           "holdout_weeks": config.holdout_weeks, "promotion_margin": promotion_margin})
        tuning = budget.tune_media_model(history, config, n_trials=n_trials, timeout_seconds=timeout_seconds,
                                         callbacks=[trial_logger("valid_mape")])
        config_json = _json_safe(asdict(tuning.config))
        mlflow.set_tag(SPEC_TAG, json.dumps({"family": "budget", "config": config_json}))
        mlflow.log_params({f"best_{key}": value for key, value in config_json.items()
                           if key in ("regularisation", "trend_knot_days", "trend_smoothing", "fourier_order")})
        backtest = budget.media_backtest(history, tuning.config)
        mlflow.log_metrics({f"holdout_{key}": value for key, value in backtest.items()})
        fit = budget.fit_media_model(history, tuning.config)
        mlflow.log_metrics({key: float(value) for key, value in fit.params.items() if isinstance(value, (int, float))})
        mlflow.log_table(fit.channels, "channels.json")
        allocation = budget.allocate_budget(fit, history, constraints)
        mlflow.log_table(allocation.table, "allocation.json")
        mlflow.set_tags({"revopt.budget.moved": str(allocation.moved), "revopt.budget.reason": allocation.reason[:5000]})
        _log_figure("response_curves.png", plots.response_curves_figure(fit, allocation, f"response curves as of {run_date}"))

        model = BudgetModel(fit, constraints)
        example = allocation.table[["channel", "current_spend"]]
        champion_value = _champion_config_value(
            budget.MODEL_NAME, "budget", champion_version, budget.MediaConfig,
            lambda champion: budget.media_backtest(history, champion)["mape"],
        )
        return _register_and_gate(
            settings, run_date, run.info.run_id, budget.MODEL_NAME, model, example, family="budget",
            # a channel the fit left out is held at its spend with no expected revenue (NULL, by design)
            scoring={"channels' recommended spend": allocation.table["recommended_spend"],
                     "fitted channels' expected revenue": allocation.table.loc[
                         allocation.table["binding_constraint"] != "excluded", "expected_revenue_recommended"]},
            metric="holdout_mape", candidate_value=backtest["mape"],
            champion_version=champion_version, champion_value=champion_value, relative_margin=promotion_margin,
        )


REFERENCE_FEATURES = "reference/features.parquet"


def _log_reference_features(X: pd.DataFrame) -> None:
    """The features the final model is fitted on: the nightly drift check's reference."""
    with tempfile.TemporaryDirectory(prefix="revopt-reference-") as tmp:
        path = Path(tmp) / Path(REFERENCE_FEATURES).name
        X.reset_index().to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_FEATURES).parent))


def _log_figure(name: str, fig) -> None:
    mlflow.log_figure(fig, f"plots/{name}")
    plots.close(fig)


def _register_and_gate(settings: Settings, run_date: dt.date, run_id: str, model_name: str,
                       model: mlflow.pyfunc.PythonModel, example: pd.DataFrame, *, family: str,
                       scoring: dict[str, Any], metric: str, candidate_value: float,
                       champion_version: str | None, champion_value: float | None,
                       relative_margin: float) -> dict[str, str]:
    """Log and register a config-style model (lower ``metric`` is better; the margin is that share
    of the champion's value), gate it and return the run's reference for XCom. ``scoring`` holds
    what the model outputs for the store (by description, only the columns that must be numbers):
    every value there, and every prediction on the input example when it is an array, must be
    finite or nothing is registered."""
    if not is_finite(candidate_value):  # the backtest's mean over held-out predictions that are not all numbers
        raise NonFiniteModelError(f"{family} ({model_name}) for {run_date}: its holdout {metric} is {candidate_value}, "
                                  "not a finite number (it cannot be judged); the model is not registered")
    predicted = model.predict(None, example)
    outputs = dict(scoring) if isinstance(predicted, pd.DataFrame) else {**scoring, "predictions on the input example": predicted}
    for what, values in outputs.items():
        _require_finite(family, model_name, run_date, what, values)
    info = mlflow.pyfunc.log_model(
        name="model", python_model=model,
        signature=infer_signature(example, predicted), input_example=example,
        pip_requirements=PIP_REQUIREMENTS, registered_model_name=model_name,
    )
    model_version = str(info.registered_model_version)
    decision = decide(
        model_name=model_name, candidate_version=model_version, candidate_value=candidate_value,
        champion_version=champion_version, champion_value=champion_value, metric=metric,
        margin=relative_margin * champion_value if is_finite(champion_value) else 0.0, higher_is_better=False,
    )
    apply_decision(settings, run_date, decision, run_id)
    return {"run_id": run_id, "model_name": model_name, "model_version": model_version, "alias": decision.alias}


def _champion_config_value(model_name: str, family: str, champion_version: str | None, config_type: type,
                           evaluate: Callable[[Any], float]) -> float | None:
    """The champion's configuration (from its spec tag) re-run on the candidate's backtest; None
    when there is no champion or its configuration cannot be rebuilt by this version."""
    spec = champion_spec(model_name, champion_version)
    if spec is None or spec.get("family") != family:
        return None
    try:
        config = config_type(**spec["config"])
    except (TypeError, ValueError) as exc:
        logger.warning("%s v%s has a spec this version cannot rebuild (%s)", model_name, champion_version, exc)
        return None
    return float(evaluate(config))


def _json_safe(values: dict) -> dict:
    return {key: (float(v) if isinstance(v, (np.floating,)) else int(v) if isinstance(v, np.integer) else v)
            for key, v in values.items()}


def apply_decision(settings: Settings, run_date: dt.date, decision: GateDecision, run_id: str) -> None:
    """Move the alias, tag the run with the decision and record it in ``scores.model_promotions``."""
    row = {**asdict(decision), "run_date": run_date, "mlflow_run_id": run_id}
    with scores_connection(settings) as conn:  # the schema is checked before the alias moves
        set_alias(decision.model_name, decision.alias, decision.candidate_version)
        mlflow.set_tags(decision.as_tags())
        logger.info("promotion gate for %s v%s -> @%s: %s", decision.model_name, decision.candidate_version,
                    decision.alias, decision.reason)
        upsert_rows(conn, "scores.model_promotions", [row], key=("run_date", "model_name", "candidate_version"))


def champion_spec(model_name: str, champion_version: str | None) -> dict | None:
    """The specification the champion was trained with (its run's spec tag), if there is one."""
    if champion_version is None:
        return None
    client = MlflowClient()
    run_id = client.get_model_version(model_name, champion_version).run_id
    raw_spec = client.get_run(run_id).data.tags.get(SPEC_TAG) if run_id else None
    if raw_spec is None:
        logger.warning("%s v%s has no %s tag; it cannot be refitted for the gate", model_name, champion_version, SPEC_TAG)
        return None
    return json.loads(raw_spec)


def _champion_holdout_auc(model_name: str, champion_version: str | None, train: LabelledSet, valid: LabelledSet, seed: int) -> float | None:
    """The champion's specification refitted on the candidate's training cutoff and scored on the
    same holdout, so neither model is judged on data it was fitted on. None if not comparable."""
    spec = champion_spec(model_name, champion_version)
    if spec is None or "family" not in spec:
        return None
    if spec.get("features") != list(train.X.columns):
        logger.warning("%s v%s used other features; it cannot be compared on this holdout", model_name, champion_version)
        return None
    refitted = refit(ModelSpec.from_json_dict(spec), train.X, train.y, seed)
    predicted = refitted.predict_proba(valid.X)
    # a champion that scores NaN on this holdout gets NaN, which the gate counts as a loss
    return float(roc_auc_score(valid.y, predicted)) if np.isfinite(predicted).all() else float("nan")


def _log_classifier_figures(family: str, model, valid: LabelledSet, raw: np.ndarray, calibrated: np.ndarray) -> None:
    importance = model.contributions(valid.X).abs().mean()
    title = f"{family} holdout at {valid.cutoff.date()}"
    figures = {
        "roc_pr.png": plots.roc_pr_figure(valid.y, calibrated, title),
        "calibration.png": plots.calibration_figure(valid.y, raw, calibrated, title),
        "lift.png": plots.lift_figure(valid.y, calibrated, title),
        "feature_importance.png": plots.feature_importance_figure(importance, f"{family}: mean |contribution| on holdout"),
    }
    for name, fig in figures.items():
        _log_figure(name, fig)
