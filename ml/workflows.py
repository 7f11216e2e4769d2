"""Task-level workflows: each reads a run's files, does one step and returns a small reference.

These are what the DAG tasks call. They take the run date and plain parameters, know nothing
of Airflow, and return JSON-serialisable values (paths, run ids, versions, counts) for XCom.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict
from importlib.metadata import version

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from psycopg import sql

from features.customer import FEATURE_COLUMNS, customer_features
from ml import plots
from ml.propensity import MODEL_NAME, PropensityConfig, evaluate, fit, holdout_cutoffs, training_set, tune
from ml.gate import GateDecision, decide
from ml.tracking import CHAMPION, configure_mlflow, current_version, resolve_alias, set_alias, trial_logger
from revopt.config import Settings
from revopt.extract import read_extract
from revopt.postgres import publish_partition, run_script
from revopt.contract import SCORES_DDL
from revopt.stack import connect_postgres
from revopt.validation import DataValidationError, require_valid, validate_frame

logger = logging.getLogger(__name__)

GATE_METRIC = "roc_auc"
SPEC_TAG = "revopt.model_spec"
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
    """Tune, fit, evaluate, log and register the propensity model, then gate it: the new version
    becomes ``champion`` only if it beats the current champion on the same holdout."""
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
        champion_version = current_version(MODEL_NAME, CHAMPION)
        study = tune(train, valid, config, callbacks=[trial_logger("valid_roc_auc")])
        best_rounds = int(study.best_trial.user_attrs["best_iteration"])
        mlflow.log_params({f"best_{key}": value for key, value in study.best_params.items()})
        mlflow.log_param("best_num_rounds", best_rounds)
        # The specification, so a later gate can refit this model on its own holdout.
        spec = {"params": study.best_params, "num_rounds": best_rounds, "features": list(FEATURE_COLUMNS)}
        mlflow.set_tag(SPEC_TAG, json.dumps(spec))

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
        decision = decide(
            model_name=MODEL_NAME,
            candidate_version=model_version,
            candidate_value=metrics[GATE_METRIC],
            champion_version=champion_version,
            champion_value=_champion_holdout_score(champion_version, train, valid, config.seed),
            metric=GATE_METRIC,
            margin=config.promotion_margin,
        )
        set_alias(MODEL_NAME, decision.alias, model_version)
        mlflow.set_tags(decision.as_tags())
        logger.info("promotion gate: v%s -> @%s (%s)", model_version, decision.alias, decision.reason)
        _record_promotion(settings, run_date, decision, run.info.run_id)
        return {"run_id": run.info.run_id, "model_name": MODEL_NAME, "model_version": model_version}


def _champion_holdout_score(champion_version: str | None, train, valid, seed: int) -> float | None:
    """The champion's specification refitted on the candidate's training cutoff and scored on the
    same holdout, so both are judged on data neither was fitted on. None if it cannot be rebuilt."""
    if champion_version is None:
        return None
    client = MlflowClient()
    run_id = client.get_model_version(MODEL_NAME, champion_version).run_id
    raw_spec = client.get_run(run_id).data.tags.get(SPEC_TAG) if run_id else None
    if raw_spec is None:
        logger.warning("champion v%s has no %s tag; it cannot be refitted for the gate", champion_version, SPEC_TAG)
        return None
    spec = json.loads(raw_spec)
    if spec.get("features") != list(FEATURE_COLUMNS):
        logger.warning("champion v%s used other features; it cannot be compared on this holdout", champion_version)
        return None
    refitted = fit(train, spec["params"], int(spec["num_rounds"]), seed)
    return evaluate(valid.y, refitted.predict(valid.X))[GATE_METRIC]


def _record_promotion(settings: Settings, run_date: dt.date, decision: GateDecision, run_id: str) -> None:
    row = {**asdict(decision), "run_date": run_date, "mlflow_run_id": run_id}
    columns = list(row)
    statement = sql.SQL(
        "INSERT INTO scores.model_promotions ({columns}) VALUES ({values}) "
        "ON CONFLICT (run_date, model_name, candidate_version) DO UPDATE SET {updates}"
    ).format(
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        values=sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
        updates=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns),
    )
    with connect_postgres(settings) as conn:
        run_script(conn, SCORES_DDL)
        conn.execute(statement, row)


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
