"""Task-level workflows: each reads a run's files, does one step and returns a small reference.

These are what the DAG tasks call. They take the run date and plain parameters, know nothing
of Airflow, and return JSON-serialisable values (paths, run ids, versions, counts) for XCom.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from importlib.metadata import version

import mlflow
import pandas as pd
from mlflow.models import infer_signature

from features.customer import FEATURE_COLUMNS, customer_features
from ml import plots
from ml.propensity import MODEL_NAME, PropensityConfig, evaluate, fit, holdout_cutoffs, training_set, tune
from ml.tracking import CHAMPION, configure_mlflow, resolve_alias, set_alias, trial_logger
from revopt.config import Settings
from revopt.extract import read_extract
from revopt.postgres import publish_partition, run_script
from revopt.contract import SCORES_DDL
from revopt.stack import connect_postgres
from revopt.validation import DataValidationError, require_valid, validate_frame

logger = logging.getLogger(__name__)

_PIP_REQUIREMENTS = [f"{name}=={version(name)}" for name in ("lightgbm", "numpy", "pandas", "scipy")]


def validate_extracts(settings: Settings, run_date: dt.date, extract_paths: dict[str, str]) -> dict[str, str]:
    """Gate: validate every extract against its suite in ``expectations/``; any failure raises.

    Each validation result is stored as JSON in the run folder. Returns the paths unchanged so
    downstream tasks depend on the gate having passed.
    """
    frames = read_extract(extract_paths)
    out_dir = settings.run_dir(run_date) / "validation"
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for dataset, frame in frames.items():
        summary = validate_frame(dataset, frame, run_date)
        (out_dir / f"{dataset}.json").write_text(json.dumps(summary.result_json, indent=1, default=str))
        logger.info("validation of %s for %s: %d/%d expectations passed", dataset, run_date, summary.evaluated - summary.failed, summary.evaluated)
        if not summary.success:
            failed.append(summary)
    if failed:
        raise DataValidationError("\n".join(summary.describe() for summary in failed))
    return extract_paths


def build_features(settings: Settings, run_date: dt.date, extract_paths: dict[str, str]) -> dict[str, str | int]:
    """Customer features as of the run date, written to the run folder."""
    frames = read_extract(extract_paths)
    features = customer_features(
        frames["customers"], frames["orders"], frames["customer_daily_events"], pd.Timestamp(run_date, tz="UTC")
    )
    require_valid("customer_features", features, run_date)
    path = settings.run_dir(run_date) / "features" / "customer_features.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    features.to_parquet(path, index=False)
    logger.info("built %d customer feature rows for %s -> %s", len(features), run_date, path)
    return {"path": str(path), "rows": len(features)}


def train_propensity(settings: Settings, run_date: dt.date, extract_paths: dict[str, str], config: PropensityConfig) -> dict[str, str]:
    """Tune, fit, evaluate, log and register the propensity model; alias the new version champion."""
    frames = read_extract(extract_paths)
    train_cutoff, valid_cutoff = holdout_cutoffs(run_date, config.horizon_days)
    train = training_set(frames, train_cutoff, config.horizon_days)
    valid = training_set(frames, valid_cutoff, config.horizon_days)
    logger.info(
        "propensity training: %d customers at %s (%.1f%% buy), validation %d at %s (%.1f%% buy)",
        len(train.y), train_cutoff.date(), 100 * train.positive_rate, len(valid.y), valid_cutoff.date(), 100 * valid.positive_rate,
    )
    configure_mlflow(settings)
    with mlflow.start_run(run_name=f"propensity-{run_date}") as run:
        mlflow.set_tags({"revopt.family": "purchase_propensity", "revopt.run_date": run_date.isoformat()})
        mlflow.log_params(
            {
                "run_date": run_date.isoformat(), "horizon_days": config.horizon_days, "n_trials": config.n_trials,
                "timeout_seconds": config.timeout_seconds, "seed": config.seed,
                "train_cutoff": train_cutoff.date().isoformat(), "valid_cutoff": valid_cutoff.date().isoformat(),
                "n_train": len(train.y), "n_valid": len(valid.y),
            }
        )
        study = tune(train, valid, config, callbacks=[trial_logger("valid_roc_auc")])
        best_rounds = int(study.best_trial.user_attrs["best_iteration"])
        mlflow.log_params({f"best_{key}": value for key, value in study.best_params.items()})
        mlflow.log_param("best_num_rounds", best_rounds)

        # Holdout metrics of the chosen configuration, fitted on the training cutoff only.
        holdout_model = fit(train, study.best_params, best_rounds, config.seed)
        holdout_probability = holdout_model.predict(valid.X)
        metrics = evaluate(valid.y, holdout_probability)
        mlflow.log_metrics({f"holdout_{key}": value for key, value in metrics.items()})
        logger.info("holdout metrics: %s", metrics)
        _log_figures(holdout_model, valid, holdout_probability, run_date)

        # The model that scores: same configuration refitted on the most recent labelled cutoff.
        final_model = fit(valid, study.best_params, best_rounds, config.seed)
        example = valid.X.head(5)
        info = mlflow.lightgbm.log_model(
            final_model,
            name="model",
            signature=infer_signature(example, final_model.predict(example)),
            input_example=example,
            pip_requirements=_PIP_REQUIREMENTS,
            registered_model_name=MODEL_NAME,
        )
        model_version = str(info.registered_model_version)
        set_alias(MODEL_NAME, CHAMPION, model_version)
        mlflow.set_tag("revopt.promotion", f"{CHAMPION} (version {model_version})")
        return {"run_id": run.info.run_id, "model_name": MODEL_NAME, "model_version": model_version}


def _log_figures(model, valid, probability, run_date: dt.date) -> None:
    importance = pd.Series(model.feature_importance("gain"), index=model.feature_name())
    for name, fig in (
        ("feature_importance.png", plots.feature_importance_figure(importance, f"propensity feature importance ({run_date})")),
        ("roc_pr.png", plots.roc_pr_figure(valid.y, probability, f"propensity holdout at {valid.cutoff.date()}")),
    ):
        mlflow.log_figure(fig, f"plots/{name}")
        plots.close(fig)


def score_customers(settings: Settings, run_date: dt.date, features_path: str) -> dict[str, str | int]:
    """Score every customer with the propensity model's current ``@champion`` version."""
    configure_mlflow(settings)
    model_version = resolve_alias(MODEL_NAME, CHAMPION)
    # Load the resolved version, not the alias, so the recorded version is the one that scored.
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{model_version}")
    features = pd.read_parquet(features_path)
    probability = pd.Series(model.predict(features[list(FEATURE_COLUMNS)]), index=features.index).to_numpy(dtype="float64")
    scores = pd.DataFrame(
        {
            "run_date": run_date,
            "customer_id": features["customer_id"].astype("int64"),
            "purchase_propensity": probability,
            "propensity_model": MODEL_NAME,
            "propensity_version": model_version,
        }
    )
    path = settings.run_dir(run_date) / "scores" / "customer_scores.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    scores.to_parquet(path, index=False)
    logger.info("scored %d customers with %s v%s", len(scores), MODEL_NAME, model_version)
    return {"path": str(path), "rows": len(scores), "model_version": model_version}


def publish_customer_scores(settings: Settings, run_date: dt.date, scores_path: str) -> int:
    """Replace ``scores.customer_scores`` rows for the run date with this run's scores."""
    scores = pd.read_parquet(scores_path)
    scores["run_date"] = run_date
    with connect_postgres(settings) as conn:
        run_script(conn, SCORES_DDL)
        return publish_partition(conn, "scores.customer_scores", run_date, scores)
