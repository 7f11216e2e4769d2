"""Customer affinity, refreshed several times a day (docs/personalisation.md): per customer and category
(and brand, where the store has ``shop.product_groups``) a score in [0, 1] from recency-weighted purchases
and product views -> ``scores.customer_affinity``.

Each refresh reads only what arrived since the previous one: it starts from the recency-weighted counts the
previous refresh left in ``scores.affinity_state``, decays them to this refresh's cutoff and adds the order
lines and product views since (the first refresh, or one after a gap longer than ``affinity_lookback_days``,
reads that whole history). The cutoff is the run's logical date: ``revopt run --dag affinity --date D`` refreshes
as of D's midnight. The schedule is ``REVOPT_AFFINITY_SCHEDULE`` (a cron expression, default every 6 hours).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from airflow.sdk import CronTriggerTimetable, dag, task

from _context import as_of_of
from _run_end import document
from _support import DEFAULT_ARGS, resources, run_date_of, run_params, run_params_of

SCHEDULE = os.environ.get("REVOPT_AFFINITY_SCHEDULE", "0 */6 * * *")


@dag(
    dag_id="revopt_affinity",
    schedule=CronTriggerTimetable(SCHEDULE, timezone="UTC"),
    start_date=datetime(1970, 1, 1, tzinfo=timezone.utc),  # any run date (a store's history may be old); catchup is off
    catchup=False,
    max_active_runs=1,
    params=run_params("affinity"),
    tags=["revopt", "affinity"],
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
)
def revopt_affinity():
    @task
    def refresh(**context) -> dict:
        from ml.pipeline import refresh_affinity

        return refresh_affinity(resources(), as_of_of(context), run_params_of(context))

    @task
    def publish(refreshed: dict, **context) -> int:
        from ml.pipeline import publish_affinity

        return publish_affinity(resources(), run_date_of(context), refreshed)

    publish(refresh())


document(revopt_affinity())
