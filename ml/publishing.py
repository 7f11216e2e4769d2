"""Publishing the steps' outputs to PostgreSQL: what the nightly DAG's publish and staging tasks run.

Kept apart from :mod:`ml.pipeline` and the model families on purpose: these tasks are many (a dozen publishes, and
a staging per partition for the scores and for the recommendations), each its own process, and each only reads a
file from the run folder and COPYs it. Importing this module takes ~0.5 s where importing :mod:`ml.pipeline` (every
family, MLflow, the learners) takes ~3.4 s and ~400 MB; at a million customers that was ~40 s of the nightly DAG's
task time (docs/scale.md).

- :func:`publish`: a step's output file replaces the table's rows of the run date (:func:`publish_partition`);
- the mapped slices (:mod:`ml.partitioned`, :mod:`ml.partitioned_recommendations`): each slice is COPYed into the
  table's staging for the run date (:func:`stage_scores`, :func:`stage_recommendations`), invisible to readers,
  then every staged slice becomes the run date's rows at once (:func:`publish_scores`,
  :func:`publish_recommendations`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from revopt.platform.postgres import publish_partition, publish_staged, stage_slice
from revopt.platform.resources import Resources

#: the table the mapped scoring publishes
SCORES_TABLE = "scores.customer_scores"
#: the table the mapped recommending publishes
RECOMMENDATIONS_TABLE = "scores.recommendations"


def publish(resources: Resources, run_date: dt.date, table: str, path: str) -> int:
    """Replace ``table``'s rows for the run date with this run's output (:func:`publish_partition`)."""
    rows = pd.read_parquet(path)
    rows["run_date"] = run_date
    with resources.scores() as conn:
        return publish_partition(conn, table, run_date, rows)


def staged_rows(run_date: dt.date, scored: dict[str, Any], gathered: dict[str, Any]) -> pd.DataFrame:
    """One slice's rows as they are published: its scores with the run date and each customer's value tier."""
    rows = pd.read_parquet(scored["path"])
    tiers = pd.read_parquet(gathered["path"], columns=["customer_id", "value_tier"]).set_index("customer_id")
    tier = rows["customer_id"].map(tiers["value_tier"]).astype(object)
    rows["value_tier"] = tier.where(tier.notna(), None)  # no CLV champion tonight: NULL, as unpartitioned
    rows["run_date"] = run_date
    return rows


def stage_scores(resources: Resources, run_date: dt.date, scored: dict[str, Any], gathered: dict[str, Any]) -> int:
    """COPY one slice (:func:`staged_rows`) into :data:`SCORES_TABLE`'s staging for the run date (not visible to
    readers until :func:`publish_scores`); returns its rows."""
    return _stage(resources, run_date, SCORES_TABLE, staged_rows(run_date, scored, gathered))


def publish_scores(resources: Resources, run_date: dt.date, gathered: dict[str, Any]) -> dict[str, int]:
    """Every staged slice becomes the run date's rows of :data:`SCORES_TABLE` at once; ``{table: rows}``."""
    return _publish_stage(resources, run_date, SCORES_TABLE, int(gathered["rows"]))


def stage_recommendations(resources: Resources, run_date: dt.date, sliced: dict[str, Any]) -> int:
    """COPY one slice into :data:`RECOMMENDATIONS_TABLE`'s staging for the run date (invisible to readers until
    :func:`publish_recommendations`); returns its rows."""
    return _stage(resources, run_date, RECOMMENDATIONS_TABLE, pd.read_parquet(sliced["path"]))


def publish_recommendations(resources: Resources, run_date: dt.date, slices: list[dict[str, Any]]) -> dict[str, int]:
    """Every staged slice becomes the run date's rows of :data:`RECOMMENDATIONS_TABLE` at once; ``{table: rows}``.
    Fails when the slices were not all of one version (an alias moved between two slices must not publish a mix)."""
    slices = list(slices)
    versions = {(s["model_name"], s["model_version"]) for s in slices}
    if len(versions) != 1:
        raise ValueError(f"recommendation slices of {run_date} used different champion versions: {sorted(versions)}")
    return _publish_stage(resources, run_date, RECOMMENDATIONS_TABLE, sum(int(s["rows"]) for s in slices))


def _stage(resources: Resources, run_date: dt.date, table: str, rows: pd.DataFrame) -> int:
    with resources.scores() as conn:
        staged = stage_slice(conn, table, run_date, rows)
    return int(staged) if staged is not None else len(rows)


def _publish_stage(resources: Resources, run_date: dt.date, table: str, rows: int) -> dict[str, int]:
    with resources.scores() as conn:
        published = publish_staged(conn, table, run_date)
    return {table: int(published) if published is not None else rows}
