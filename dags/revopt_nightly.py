"""Nightly scoring for logical date D, from one validated extract:

- customer scores: features -> score with every customer family's ``@champion`` -> publish
  ``scores.customer_scores``;
- prices: recommendations with the pricing ``@champion`` -> publish ``scores.price_recommendations``;
- send times: each customer's best hours with the send-time ``@champion`` on the latest
  engagement -> publish ``scores.send_time_recommendations``;
- budget: the marketing budget split with the budget ``@champion`` -> publish
  ``scores.budget_allocations``;
- drift: tonight's features and scores against the training reference (Evidently report in
  MLflow, ``scores.feature_drift`` and ``scores.drift_checks``); above ``drift_share_threshold``
  the ``revopt_drift_detected`` asset is updated, which triggers ``revopt_training``.

Training runs in ``revopt_training`` (weekly and on demand); this DAG never trains, it uses
whichever versions the ``champion`` aliases point at and records them on every row.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import dag, task
from _support import (
    ACTIVE_DAYS_PARAM, BUDGET_PARAMS, DEFAULT_ARGS, DRIFT_DETECTED, DRIFT_SHARE_PARAM, LOOKBACK_PARAM, PRICE_PARAMS,
    SEND_TIME_PARAMS, extract, run_date_of, skip_if_skipped, validate,
)


def _call(step: str, argument, context, *, with_params: bool = True):
    """Run ``ml.workflows.<step>(settings, run date, argument[, params])``; a skipped family skips the task."""
    from ml import workflows
    from revopt.platform.config import load_settings

    extra = (workflows.RunParams.from_mapping(context["params"]),) if with_params else ()
    return skip_if_skipped(getattr(workflows, step)(load_settings(), run_date_of(context), argument, *extra), context)


@dag(
    dag_id="revopt_nightly",
    schedule="@daily",
    start_date=datetime(1970, 1, 1, tzinfo=timezone.utc),  # any run date (a store's history may be old); catchup is off
    catchup=False,
    max_active_runs=1,
    params={
        "lookback_days": LOOKBACK_PARAM, "churn_active_days": ACTIVE_DAYS_PARAM,
        "drift_share_threshold": DRIFT_SHARE_PARAM, **PRICE_PARAMS, **SEND_TIME_PARAMS, **BUDGET_PARAMS,
    },
    tags=["revopt", "nightly"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def revopt_nightly():
    @task
    def build_features(extract_paths: dict[str, str], **context) -> dict:
        return _call("build_features", extract_paths, context, with_params=False)

    @task
    def score(features: dict, **context) -> dict:
        return _call("score_customers", features["path"], context)

    @task
    def publish(scores: dict, **context) -> int:
        return _call("publish_customer_scores", scores["path"], context, with_params=False)

    @task
    def recommend_prices(extract_paths: dict[str, str], **context) -> dict:
        return _call("recommend_prices", extract_paths, context)

    @task
    def publish_prices(recommendations: dict, **context) -> int:
        return _call("publish_price_recommendations", recommendations["path"], context, with_params=False)

    @task
    def recommend_send_times(extract_paths: dict[str, str], **context) -> dict:
        return _call("recommend_send_times", extract_paths, context)

    @task
    def publish_send_times(recommendations: dict, **context) -> int:
        return _call("publish_send_time_recommendations", recommendations["path"], context, with_params=False)

    @task
    def allocate_budget(extract_paths: dict[str, str], **context) -> dict:
        return _call("allocate_budget", extract_paths, context)

    @task
    def publish_budget(allocation: dict, **context) -> int:
        return _call("publish_budget_allocations", allocation["path"], context, with_params=False)

    @task
    def check_drift(scores: dict, **context) -> dict:
        return _call("check_drift", scores, context)

    @task.short_circuit
    def drift_above_threshold(drift: dict) -> bool:
        return drift["retrain"]

    @task(outlets=[DRIFT_DETECTED])
    def signal_drift(drift: dict) -> str:
        return drift["reason"]

    validated = validate(extract("nightly"), "nightly")
    scores = score(build_features(validated))
    publish(scores)
    drift = check_drift(scores)
    drift_above_threshold(drift) >> signal_drift(drift)
    publish_prices(recommend_prices(validated))
    publish_send_times(recommend_send_times(validated))
    publish_budget(allocate_budget(validated))


revopt_nightly()
