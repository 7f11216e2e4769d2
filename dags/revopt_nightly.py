"""Nightly revopt run for logical date D: extract -> validate -> features -> train -> score -> publish.

Wiring only: each task imports one function from ``ml`` / ``revopt`` inside its body and passes
small references (paths, versions, counts) through XCom.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import ExceptionRetryPolicy, Param, RetryAction, RetryRule, dag, task

# Retry what can heal by itself (a database restarting, a network blip); fail at once on bad
# data or bad settings, where a retry would only repeat the same answer later.
RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=["revopt.validation.DataValidationError", "builtins.ValueError", "builtins.LookupError"],
            action=RetryAction.FAIL,
            reason="bad input data or settings: retrying cannot fix it",
        )
    ]
)

RUN_PARAMS = {
    "horizon_days": Param(30, type="integer", minimum=1, maximum=365, description="Purchase window N (days) for propensity."),
    "lookback_days": Param(730, type="integer", minimum=30, description="History read before the run date (days)."),
    "n_trials": Param(10, type="integer", minimum=1, maximum=500, description="Optuna trials for tuning."),
    "tuning_timeout_seconds": Param(300, type="number", minimum=1, description="Wall-clock budget for tuning."),
    "seed": Param(42, type="integer", description="Seed for tuning and model fitting."),
    "promotion_margin": Param(0.005, type="number", minimum=0, description="Holdout ROC AUC a new model must gain over the champion to replace it."),
}


@dag(
    dag_id="revopt_nightly",
    schedule="@daily",
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    params=RUN_PARAMS,
    tags=["revopt", "nightly"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "retry_policy": RETRY_POLICY,
    },
    doc_md=__doc__,
)
def revopt_nightly():
    @task
    def extract(**context) -> dict[str, str]:
        from revopt.config import load_settings
        from revopt.extract import extract_sources
        from revopt.runctx import run_date_of

        return extract_sources(load_settings(), run_date_of(context), context["params"]["lookback_days"])

    @task
    def validate(extract_paths: dict[str, str], **context) -> dict[str, str]:
        from ml.workflows import validate_extracts
        from revopt.config import load_settings
        from revopt.runctx import run_date_of

        return validate_extracts(load_settings(), run_date_of(context), extract_paths)

    @task
    def build_features(extract_paths: dict[str, str], **context) -> dict:
        from ml.workflows import build_features
        from revopt.config import load_settings
        from revopt.runctx import run_date_of

        return build_features(load_settings(), run_date_of(context), extract_paths)

    @task
    def train_propensity(extract_paths: dict[str, str], **context) -> dict[str, str]:
        from ml.propensity import PropensityConfig
        from ml.workflows import train_propensity
        from revopt.config import load_settings
        from revopt.runctx import run_date_of

        params = context["params"]
        config = PropensityConfig(
            horizon_days=params["horizon_days"],
            n_trials=params["n_trials"],
            timeout_seconds=params["tuning_timeout_seconds"],
            seed=params["seed"],
            promotion_margin=params["promotion_margin"],
        )
        return train_propensity(load_settings(), run_date_of(context), extract_paths, config)

    @task
    def score(features: dict, model: dict[str, str], **context) -> dict:
        from ml.workflows import score_customers
        from revopt.config import load_settings
        from revopt.runctx import run_date_of

        return score_customers(load_settings(), run_date_of(context), features["path"])

    @task
    def publish(scores: dict, **context) -> int:
        from ml.workflows import publish_customer_scores
        from revopt.config import load_settings
        from revopt.runctx import run_date_of

        return publish_customer_scores(load_settings(), run_date_of(context), scores["path"])

    extracted = extract()
    validated = validate(extracted)
    features = build_features(validated)
    model = train_propensity(validated)
    publish(score(features, model))


revopt_nightly()
