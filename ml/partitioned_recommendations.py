"""Tonight's product recommendations as ``partitions`` customer-hash slices, each a mapped Airflow task (issue 22
item 5), as the customer scores are (:mod:`ml.partitioned`; docs/scale.md, "Partitioned execution"). The DAG
(dags/_partitioned.py) wires these steps:

1. :func:`prepare_recommendations`, once: whether the store can be recommended to and the ``@champion`` version,
   decided on the whole store and pinned for every slice; tonight's staging of ``scores.recommendations`` emptied;
2. ``recommend_products``, mapped: :func:`recommend_slice`, the lists of one partition's customers;
3. ``stage_recommendations``, mapped: :func:`ml.publishing.stage_recommendations`, the slice COPYed into the
   staging;
4. ``publish_recommendations``, once: :func:`ml.publishing.publish_recommendations`, the staged rows become the run
   date's.

A slice reads the clickstream (``product_views``) of its own customers only; the purchases, customers and
catalogue it reads whole, because the cold start ranks products by what every buyer (of a segment) bought. Each
customer's list is computed from their own history alone (the fold-in solves each customer on their own:
ml/families/recommend/kernels.py), so the slices together are, row for row, the unpartitioned lists
(tests/e2e/test_nightly_dag.py compares them).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pandas as pd

from ml.families import recommend
from ml.params import RunParams
from ml.partitioning import Partition, pin_champions
from ml.publishing import RECOMMENDATIONS_TABLE
from revopt.platform.extract import read_extract
from revopt.platform.resources import Resources

logger = logging.getLogger(__name__)

#: the table the mapped recommending publishes, and its output's name in the run folder
TABLE, OUTPUT = RECOMMENDATIONS_TABLE, "recommendations"
#: the datasets each slice reads for its own customers only (the others whole)
SLICED = ("product_views",)


def _datasets(extract_paths: dict[str, str]) -> dict[str, str]:
    return {name: extract_paths[name] for name in recommend.FAMILY.nightly_datasets if name in extract_paths}


def prepare_recommendations(resources: Resources, run_date: dt.date, extract_paths: dict[str, str],
                            params: RunParams) -> list[dict[str, Any]]:
    """The ``params.partitions`` partitions to map ``recommend_products`` over, with the family's version pinned or
    the reason it is not recommended tonight (:func:`ml.partitioning.pin_champions`), after emptying tonight's
    staging of :data:`TABLE`."""
    from revopt.platform.postgres import discard_staged

    frames = read_extract(_datasets(extract_paths))
    partitions = pin_champions(resources, run_date, frames, params, [recommend.FAMILY], params.partitions)
    if recommend.FAMILY.name in partitions[0]["versions"]:
        with resources.scores() as conn:
            discard_staged(conn, TABLE, run_date)
    logger.info("recommendations for %s in %d partition(s): %s", run_date, params.partitions,
                partitions[0]["versions"] or partitions[0]["without"])
    return partitions


def recommend_slice(resources: Resources, run_date: dt.date, extract_paths: dict[str, str], params: RunParams,
                    partition: Partition) -> dict[str, Any]:
    """One partition's lists from the pinned champion, written to the run folder with the run date and the model's
    name and version on every row; ``{"skipped": reason}`` when the family is not recommended tonight."""
    from ml.registry import load_champion

    family = recommend.FAMILY
    if family.name not in partition.versions:
        return {"skipped": partition.without.get(family.name, "not pinned for this run")}
    paths = _datasets(extract_paths)
    frames = read_extract({name: path for name, path in paths.items() if name not in SLICED})
    frames.update({name: partition.read(path) for name, path in paths.items() if name in SLICED})
    champion = load_champion(resources, family.model_name, partition.versions[family.name])
    output = family.nightly_predict(champion.python_model, frames, run_date, params, customers_in=partition.holds)
    table = pd.DataFrame(output).assign(run_date=run_date, model_name=champion.name, model_version=champion.version)
    path = resources.write_output(run_date, partition.file_name(OUTPUT), table)
    logger.info("recommendations for %s, partition %d of %d: %d rows, %s v%s", run_date, partition.index + 1,
                partition.count, len(table), champion.name, champion.version)
    return {"path": str(path), "rows": len(table), "model_name": champion.name, "model_version": champion.version,
            "partition": partition.as_dict()}
