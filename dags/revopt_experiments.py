"""The experiments' nightly analysis for logical date D (docs/experiments.md): from one validated
extract (customers, orders, daily events, product sales), every experiment that is running or ended
within ``experiment_followup_days`` gets, per variant and metric, fixed-horizon and always-valid
statistics, CUPED, the sample ratio check, chance to beat and the decision -> one MLflow run per
experiment (``revopt/ab_tests``, with the cumulative-lift plot) and ``scores.experiment_results``.
Units are assigned and served by ``revopt_nightly`` (its ``assign_experiments`` task).
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import dag, task

from _run_end import document
from _gate import validate
from _support import DEFAULT_ARGS, extract, resources, run_date_of, run_params, run_params_of


@dag(
    dag_id="revopt_experiments",
    schedule="@daily",
    start_date=datetime(1970, 1, 1, tzinfo=timezone.utc),  # any run date (a store's history may be old); catchup is off
    catchup=False,
    max_active_runs=1,
    params=run_params("experiments"),
    tags=["revopt", "experiments"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def revopt_experiments():
    @task
    def analyse(extract_paths: dict[str, str], **context) -> dict:
        from ml.pipeline import analyse_experiments
        return analyse_experiments(resources(), run_date_of(context), extract_paths, run_params_of(context))

    analyse(validate(extract("experiments"), "experiments").all)


document(revopt_experiments())
