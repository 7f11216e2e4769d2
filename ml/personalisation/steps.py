"""The personalisation steps the pipeline calls (Airflow-free; docs/personalisation.md): the customer
affinity refresh (``revopt_affinity``, several times a day) and, in the nightly run, the customer segments
and the next best action. Product recommendations are a family (:mod:`ml.families.recommend`) scored like
the others (:func:`ml.pipeline.recommend`). Each step takes the task's :class:`Resources`, writes its output
tables to the run folder and returns their paths (what the publish tasks read).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pandas as pd
from psycopg import sql

from features import affinity as affinity_sources
from ml.params import RunParams
from ml.personalisation import affinity
from revopt.platform.postgres import publish_partition, read_frame
from revopt.platform.resources import Resources

logger = logging.getLogger(__name__)

#: Days of ``scores.affinity_state`` kept (a refresh needs only the latest; a few allow re-running recent ones).
AFFINITY_STATE_DAYS = 3


def refresh_affinity(resources: Resources, as_of: dt.datetime, params: RunParams) -> dict[str, Any]:
    """Customer affinity as of ``as_of`` (:func:`ml.personalisation.affinity.refresh`): the latest settled state
    at or before this refresh's settled cutoff, decayed, plus the order lines and product views read since
    (the full ``affinity_lookback_days`` on the first refresh or after a longer gap). Rows for
    ``scores.customer_affinity`` and ``scores.affinity_state`` in the run folder."""
    cutoff = _utc(as_of)
    with resources.scores() as conn:
        state = read_frame(conn, "SELECT as_of, customer_id, dimension, value, purchases, views, last_interaction "
                                 "FROM scores.affinity_state WHERE as_of = (SELECT max(as_of) FROM "
                                 "scores.affinity_state WHERE as_of <= %(settled)s)",
                           {"settled": affinity.settled_cutoff(cutoff).to_pydatetime()})
    previous = _utc(state["as_of"].iloc[0]) if len(state) else None
    since, why = affinity.window(previous, cutoff, params.affinity_lookback_days)
    if previous is None or since != previous:
        state = affinity.empty_state()
    logger.info("affinity refresh as of %s: %s", cutoff, why)
    with resources.sources() as conn:
        changes = affinity_sources.interactions(conn, resources.events, since, cutoff)
    new_state, published = affinity.refresh(state, changes, cutoff, params)
    stamp = f"{cutoff:%H%M}"
    return {"customer_affinity": str(resources.write_output(cutoff.date(), f"customer_affinity_{stamp}", published)),
            "affinity_state": str(resources.write_output(cutoff.date(), f"affinity_state_{stamp}", new_state)),
            "as_of": cutoff.isoformat(), "since": since.isoformat(), "read": int(len(changes)),
            "customers": int(published["customer_id"].nunique())}


def publish_affinity(resources: Resources, run_date: dt.date, refreshed: dict[str, Any]) -> int:
    """Publish a refresh: its scores replace the day's ``scores.customer_affinity`` rows and its state the
    day's ``scores.affinity_state`` rows (each one transaction); states older than
    :data:`AFFINITY_STATE_DAYS` are deleted."""
    published = 0
    with resources.scores() as conn:
        for table in ("customer_affinity", "affinity_state"):
            rows = pd.read_parquet(refreshed[table]).assign(run_date=run_date)
            count = publish_partition(conn, f"scores.{table}", run_date, rows)
            published += count if table == "customer_affinity" else 0
        with conn.transaction():
            conn.execute(sql.SQL("DELETE FROM scores.affinity_state WHERE run_date < %s"),
                         (run_date - dt.timedelta(days=AFFINITY_STATE_DAYS),))
    return published


def _utc(moment: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
