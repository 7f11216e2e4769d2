"""Weekly, on demand, on detected drift and on a drop in realised performance: training for logical date D:
resolve identities (the same ``scores.identity_map`` the nightly run publishes first, so both see the same people)
-> extract -> validate -> train each model family (propensity, churn, CLV, pricing, send time, budget, product
recommendations and the offers' uplift model), register it and gate it against its champion.

Each family is its own branch after validation: one failing or skipping leaves the others to train,
register and be gated, and the DAG run fails at the end if any family failed. At most two families
train at once (``max_active_tasks``): the machines are small, and on the embedded stack they share
one SQLite MLflow store.
"""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from _gate import validate
from _run_end import finish, record_alias_moves
from _support import (
    DEFAULT_ARGS, DRIFT_DETECTED, PERFORMANCE_DROPPED, extract, identity_resolution, resources, run_date_of, run_params,
    run_params_of, skip_if_skipped,
)


#: The order families start in when they wait for one of the two slots, as absolute priority weights: longest first,
#: so the last to start is a short one. In equal weights, Airflow started churn (685 s) seventh of eight at 1M
#: customers, and it ran alone for the last 6 of 48 minutes (docs/scale.md, "Session 26"). The order is the families'
#: task times at 1M (session 23, default budget): propensity 1,244 s, recommendations 950, CLV 917, churn 685, send
#: time 348, budget 216, pricing 129, uplift 15 (skipped there). A store with another balance is still served
#: longest-known-first; the order never changes what a family trains.
TRAINING_ORDER = {task_id: weight for weight, task_id in enumerate(reversed((
    "train_propensity", "train_recommendations", "train_clv", "train_churn", "train_send_time", "train_budget",
    "train_pricing", "train_uplift")), start=1)}


@dag(
    dag_id="revopt_training",
    # weekly, and whenever the nightly drift check or outcome monitoring requests retraining
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 0 * * 0", timezone="UTC"),
                                 assets=DRIFT_DETECTED | PERFORMANCE_DROPPED),
    start_date=datetime(1970, 1, 1, tzinfo=timezone.utc),  # any run date (a store's history may be old); catchup is off
    catchup=False,
    max_active_runs=1,
    max_active_tasks=2,
    params=run_params("training"),
    tags=["revopt", "training"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def revopt_training():
    # Each task trains one family through the one runner (ml.pipeline.train -> ml.registry.train_family),
    # longest first (TRAINING_ORDER).
    @task(priority_weight=TRAINING_ORDER["train_propensity"], weight_rule="absolute")
    def train_propensity(extract_paths: dict[str, str], **context) -> dict[str, str]:
        from ml.families import propensity
        from ml.pipeline import train

        return skip_if_skipped(train(propensity.FAMILY, resources(), run_date_of(context), extract_paths,
                                     run_params_of(context)), context)

    @task(priority_weight=TRAINING_ORDER["train_churn"], weight_rule="absolute")
    def train_churn(extract_paths: dict[str, str], **context) -> dict[str, str]:
        from ml.families import churn
        from ml.pipeline import train

        return skip_if_skipped(train(churn.FAMILY, resources(), run_date_of(context), extract_paths,
                                     run_params_of(context)), context)

    @task(priority_weight=TRAINING_ORDER["train_clv"], weight_rule="absolute")
    def train_clv(extract_paths: dict[str, str], **context) -> dict[str, str]:
        from ml.families import clv
        from ml.pipeline import train

        return skip_if_skipped(train(clv.FAMILY, resources(), run_date_of(context), extract_paths,
                                     run_params_of(context)), context)

    @task(priority_weight=TRAINING_ORDER["train_pricing"], weight_rule="absolute")
    def train_pricing(extract_paths: dict[str, str], **context) -> dict[str, str]:
        from ml.families import pricing
        from ml.pipeline import train

        return skip_if_skipped(train(pricing.FAMILY, resources(), run_date_of(context), extract_paths,
                                     run_params_of(context)), context)

    @task(priority_weight=TRAINING_ORDER["train_send_time"], weight_rule="absolute")
    def train_send_time(extract_paths: dict[str, str], **context) -> dict[str, str]:
        from ml.families import send_time
        from ml.pipeline import train

        return skip_if_skipped(train(send_time.FAMILY, resources(), run_date_of(context), extract_paths,
                                     run_params_of(context)), context)

    @task(priority_weight=TRAINING_ORDER["train_budget"], weight_rule="absolute")
    def train_budget(extract_paths: dict[str, str], **context) -> dict[str, str]:
        from ml.families import budget
        from ml.pipeline import train

        return skip_if_skipped(train(budget.FAMILY, resources(), run_date_of(context), extract_paths,
                                     run_params_of(context)), context)

    @task(priority_weight=TRAINING_ORDER["train_recommendations"], weight_rule="absolute")
    def train_recommendations(extract_paths: dict[str, str], **context) -> dict[str, str]:
        from ml.families import recommend
        from ml.pipeline import train

        return skip_if_skipped(train(recommend.FAMILY, resources(), run_date_of(context), extract_paths,
                                     run_params_of(context)), context)

    @task(priority_weight=TRAINING_ORDER["train_uplift"], weight_rule="absolute")
    def train_uplift(extract_paths: dict[str, str], **context) -> dict[str, str]:
        from ml.families import uplift
        from ml.pipeline import train

        return skip_if_skipped(train(uplift.FAMILY, resources(), run_date_of(context), extract_paths,
                                     run_params_of(context)), context)

    # Independent branches: a family that fails or skips leaves the others to train; any failed
    # family fails the DAG run (a failed leaf task fails the run).
    record_alias_moves()  # first, beside identities (it blocks nothing)
    extracted = extract("training")
    identity_resolution() >> list(extracted.values())  # train on the people the nightly run scores (docs/privacy.md)
    validated = validate(extracted, "training")
    # pricing reads only the tables part's datasets (a unit test holds it to that): it trains once they passed their
    # gate, while the events part is still extracting (at 1M customers the tables part ends ~140 s earlier)
    train_pricing(validated.tables)
    for train in (train_propensity, train_churn, train_clv, train_send_time, train_budget, train_recommendations,
                  train_uplift):
        train(validated.all)


finish(revopt_training())
