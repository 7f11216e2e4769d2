"""Weekly, on demand and on detected drift: training for logical date D: extract -> validate -> train each model
family (propensity, churn, CLV, pricing, send time, budget), register it and gate it against its champion.

Each family is its own branch after validation: one failing or skipping leaves the others to train,
register and be gated, and the DAG run fails at the end if any family failed. At most two families
train at once (``max_active_tasks``): the machines are small, and on the embedded stack they share
one SQLite MLflow store.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from _support import (
    ACTIVE_DAYS_PARAM, BUDGET_PARAMS, DEFAULT_ARGS, DRIFT_DETECTED, LOOKBACK_PARAM, PRICE_PARAMS, SEND_TIME_PARAMS,
    extract, run_date_of, skip_if_skipped, validate,
)

PARAMS = {
    "lookback_days": LOOKBACK_PARAM,
    "churn_active_days": ACTIVE_DAYS_PARAM,
    "propensity_horizon_days": Param(30, type="integer", minimum=1, maximum=365, description="Purchase window N (days)."),
    "churn_horizon_days": Param(60, type="integer", minimum=1, maximum=365, description="No-purchase window M (days) for churn."),
    "clv_horizon_days": Param(90, type="integer", minimum=1, maximum=730, description="CLV horizon H (days)."),
    "n_trials": Param(12, type="integer", minimum=1, maximum=500, description="Optuna trials per family."),
    "tuning_timeout_seconds": Param(300, type="number", minimum=1, description="Wall-clock tuning budget per family."),
    "seed": Param(42, type="integer", description="Seed for tuning and fitting."),
    "promotion_margin": Param(0.005, type="number", minimum=0, description="How much a new model must beat the champion by (ROC AUC points; CLV and pricing: share of the champion's error)."),
    **PRICE_PARAMS,
    **SEND_TIME_PARAMS,
    **BUDGET_PARAMS,
}


def _train(family: str, extract_paths: dict[str, str], context) -> dict[str, str]:
    from ml import workflows
    from revopt.platform.config import load_settings

    train = getattr(workflows, f"train_{family}")
    return skip_if_skipped(
        train(load_settings(), run_date_of(context), extract_paths, workflows.RunParams.from_mapping(context["params"])),
        context)


@dag(
    dag_id="revopt_training",
    # weekly, and whenever the nightly drift check requests retraining
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 0 * * 0", timezone="UTC"), assets=DRIFT_DETECTED),
    start_date=datetime(1970, 1, 1, tzinfo=timezone.utc),  # any run date (a store's history may be old); catchup is off
    catchup=False,
    max_active_runs=1,
    max_active_tasks=2,
    params=PARAMS,
    tags=["revopt", "training"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def revopt_training():
    @task
    def train_propensity(extract_paths: dict[str, str], **context) -> dict[str, str]:
        return _train("propensity", extract_paths, context)

    @task
    def train_churn(extract_paths: dict[str, str], **context) -> dict[str, str]:
        return _train("churn", extract_paths, context)

    @task
    def train_clv(extract_paths: dict[str, str], **context) -> dict[str, str]:
        return _train("clv", extract_paths, context)

    @task
    def train_pricing(extract_paths: dict[str, str], **context) -> dict[str, str]:
        return _train("pricing", extract_paths, context)

    @task
    def train_send_time(extract_paths: dict[str, str], **context) -> dict[str, str]:
        return _train("send_time", extract_paths, context)

    @task
    def train_budget(extract_paths: dict[str, str], **context) -> dict[str, str]:
        return _train("budget", extract_paths, context)

    # Independent branches: a family that fails or skips leaves the others to train; any failed
    # family fails the DAG run (a failed leaf task fails the run).
    validated = validate(extract("training"), "training")
    for train in (train_propensity, train_churn, train_clv, train_pricing, train_send_time, train_budget):
        train(validated)


revopt_training()
