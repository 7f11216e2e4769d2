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
4. :func:`ml.publishing.stage_scores`, mapped: each slice with its tiers COPYed into the table's staging (invisible
   to readers);
5. :func:`ml.publishing.publish_scores`, once: the staged rows become the run date's rows atomically.

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
from ml.publishing import SCORES_TABLE
from revopt.platform.extract import read_extract
from revopt.platform.resources import Resources

logger = logging.getLogger(__name__)

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
