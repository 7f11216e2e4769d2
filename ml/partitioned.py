"""Tonight's customer scores as ``partitions`` customer-hash slices, each a mapped Airflow task (issue 22 item 5;
docs/scale.md, "Partitioned execution"). The DAG (dags/_partitioned.py) wires these steps:

1. :func:`prepare_scores`, once: what is decided for the whole population (each customer family's shortfall on every
   customer and order, its ``@champion`` version pinned for the run), the partitions to map over, and tonight's
   staging of ``scores.customer_scores`` emptied (an earlier failed attempt's slices are gone);
2. ``score``, mapped: :func:`ml.pipeline.score_customers` with one :class:`~ml.partitioning.Partition` (its
   customers' scores, top factors and experiment variants; nothing of another customer is read);
3. :func:`gather_scores`, once: the value tiers, which rank CLV over the whole population (top 10 % "high"), computed
   from the slices' ``customer_id`` and ``clv`` alone, in tonight's feature order so ties break as unpartitioned;
   and the small file the drift check reads (every customer's scores, no factors);
4. :func:`stage_scores`, mapped: each slice with its tiers COPYed into the table's staging (invisible to readers);
5. :func:`publish_scores`, once: the staged rows become the run date's rows atomically.

With ``partitions=1`` the same steps run once each and publish what :func:`ml.pipeline.score_customers` without a
partition computes (tests/e2e/test_partitioned_scores.py compares them row for row).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pandas as pd

from ml.families.clv import value_tier
from ml.params import RunParams
from ml.partitioning import pin_champions
from ml.pipeline import CUSTOMER_FAMILIES
from revopt.platform.extract import read_extract
from revopt.platform.resources import Resources

logger = logging.getLogger(__name__)

#: the table the mapped scoring publishes
SCORES_TABLE = "scores.customer_scores"
#: what the gathered file holds per customer (the drift check reads it; no factors)
GATHERED_COLUMNS = ("customer_id", "purchase_propensity", "churn_risk", "clv")


def prepare_scores(resources: Resources, run_date: dt.date, extract_paths: dict[str, str],
                   params: RunParams) -> list[dict[str, Any]]:
    """The ``params.partitions`` partitions to map ``score`` over (:func:`ml.partitioning.pin_champions`: each
    family's version or the reason it is not scored, decided once on the whole store), after emptying tonight's
    staging of :data:`SCORES_TABLE`."""
    from revopt.platform.postgres import discard_staged

    frames = read_extract({name: extract_paths[name] for name in ("customers", "orders")})
    partitions = pin_champions(resources, run_date, frames, params, CUSTOMER_FAMILIES, params.partitions)
    with resources.scores() as conn:
        discard_staged(conn, SCORES_TABLE, run_date)
    logger.info("customer scores for %s in %d partition(s), champions %s", run_date, params.partitions,
                partitions[0]["versions"])
    return partitions


def gather_scores(resources: Resources, run_date: dt.date, slices: list[dict[str, Any]],
                  features_path: str) -> dict[str, Any]:
    """Every slice's scores in tonight's feature order with the value tiers of the whole population, written as one
    small file (``path``: what the drift check reads); fails when the slices are not exactly tonight's customers,
    each once (a slice lost or scored twice must not publish)."""
    slices = list(slices)
    order = pd.read_parquet(features_path, columns=["customer_id"])["customer_id"]
    gathered = pd.concat([pd.read_parquet(s["path"], columns=list(GATHERED_COLUMNS)) for s in slices],
                         ignore_index=True)
    if len(gathered) != len(order) or not gathered["customer_id"].is_unique \
            or not gathered["customer_id"].isin(order).all():
        raise ValueError(f"the {len(slices)} score slices of {run_date} hold {len(gathered)} rows "
                         f"({gathered['customer_id'].nunique()} customers) for {len(order)} customers with features: "
                         "every customer must be scored in exactly one slice")
    versions = slices[0]["versions"]
    if any(s["versions"] != versions for s in slices):
        raise ValueError(f"score slices of {run_date} used different champion versions: "
                         f"{[s['versions'] for s in slices]}")
    gathered = gathered.set_index("customer_id").reindex(order.to_numpy()).reset_index()
    gathered["value_tier"] = value_tier(gathered["clv"].to_numpy()) if "clv" in versions else None
    path = resources.write_output(run_date, "customer_scores.gathered", gathered)
    logger.info("gathered %d customer scores of %d slice(s) for %s", len(gathered), len(slices), run_date)
    return {"path": str(path), "features_path": features_path, "rows": len(gathered), "versions": versions,
            "without": slices[0]["without"], "slices": [s["path"] for s in slices]}


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
    from revopt.platform.postgres import stage_slice

    rows = staged_rows(run_date, scored, gathered)
    with resources.scores() as conn:
        staged = stage_slice(conn, SCORES_TABLE, run_date, rows)
    return int(staged) if staged is not None else len(rows)


def publish_scores(resources: Resources, run_date: dt.date, gathered: dict[str, Any]) -> dict[str, int]:
    """Every staged slice becomes the run date's rows of :data:`SCORES_TABLE` at once; ``{table: rows}``."""
    from revopt.platform.postgres import publish_staged

    with resources.scores() as conn:
        published = publish_staged(conn, SCORES_TABLE, run_date)
    return {SCORES_TABLE: int(published) if published is not None else int(gathered["rows"])}
