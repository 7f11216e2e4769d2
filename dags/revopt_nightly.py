"""Nightly scoring for logical date D: extract -> validate -> features -> score with every
customer family's current ``@champion`` -> publish ``scores.customer_scores`` for D; and, from the
same validated extract, price recommendations with the pricing ``@champion`` -> publish
``scores.price_recommendations`` for D.

Training runs in ``revopt_training`` (weekly and on demand); this DAG never trains, it uses
whichever versions the ``champion`` aliases point at and records them on every row.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import dag, task
from revopt.dag_tasks import ACTIVE_DAYS_PARAM, DEFAULT_ARGS, LOOKBACK_PARAM, PRICE_PARAMS, extract, validate


@dag(
    dag_id="revopt_nightly",
    schedule="@daily",
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    params={"lookback_days": LOOKBACK_PARAM, "churn_active_days": ACTIVE_DAYS_PARAM, **PRICE_PARAMS},
    tags=["revopt", "nightly"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def revopt_nightly():
    @task
    def build_features(extract_paths: dict[str, str], **context) -> dict:
        from ml.workflows import build_features
        from revopt.config import load_settings
        from revopt.runctx import run_date_of

        return build_features(load_settings(), run_date_of(context), extract_paths)

    @task
    def score(features: dict, **context) -> dict:
        from ml.workflows import RunParams, score_customers
        from revopt.config import load_settings
        from revopt.runctx import run_date_of

        params = RunParams.from_mapping(context["params"])
        return score_customers(load_settings(), run_date_of(context), features["path"], params)

    @task
    def publish(scores: dict, **context) -> int:
        from ml.workflows import publish_customer_scores
        from revopt.config import load_settings
        from revopt.runctx import run_date_of

        return publish_customer_scores(load_settings(), run_date_of(context), scores["path"])

    @task
    def recommend_prices(extract_paths: dict[str, str], **context) -> dict:
        from ml.workflows import RunParams, recommend_prices
        from revopt.config import load_settings
        from revopt.runctx import run_date_of

        params = RunParams.from_mapping(context["params"])
        return recommend_prices(load_settings(), run_date_of(context), extract_paths, params)

    @task
    def publish_prices(recommendations: dict, **context) -> int:
        from ml.workflows import publish_price_recommendations
        from revopt.config import load_settings
        from revopt.runctx import run_date_of

        return publish_price_recommendations(load_settings(), run_date_of(context), recommendations["path"])

    validated = validate(extract())
    publish(score(build_features(validated)))
    publish_prices(recommend_prices(validated))


revopt_nightly()
