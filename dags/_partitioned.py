"""The nightly customer scores and product recommendations as Airflow dynamic task mapping over ``partitions``
customer-hash slices (issue 22 item 5; ``ml.partitioned`` and ``ml.partitioned_recommendations`` hold the steps,
docs/scale.md "Partitioned execution" the why). Wiring only; listed in ``.airflowignore`` like its neighbours.

``prepare_scores`` -> ``score`` (mapped) -> ``gather_scores`` -> ``stage_scores`` (mapped) -> ``publish``;
``prepare_recommendations`` -> ``recommend_products`` (mapped) -> ``stage_recommendations`` (mapped) ->
``publish_recommendations``. With ``partitions=1`` each mapped task runs once (map index 0).
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task

from _context import resources, run_date_of, run_params_of
from _support import skip_if_skipped


@task
def prepare_scores(extract_paths: dict[str, str], **context) -> list[dict]:
    from ml.partitioned import prepare_scores

    return prepare_scores(resources(), run_date_of(context), extract_paths, run_params_of(context))


@task(map_index_template="{{ partition_label }}")
def score(partition: dict, features: dict, **context) -> dict:
    from ml.partitioning import Partition
    from ml.pipeline import score_customers

    get_current_context()["partition_label"] = _label(partition)
    scored = skip_if_skipped(score_customers(resources(), run_date_of(context), features["path"], {},
                                             run_params_of(context), partition=Partition.from_dict(partition)), context)
    return {**scored, "partition": partition}


def _label(partition: dict) -> str:
    """A mapped task's name in the UI (its rendered map index): ``2 of 4``."""
    return f"{partition['index'] + 1} of {partition['count']}"


@task
def gather_scores(slices: list[dict], features: dict, **context) -> dict:
    from ml.partitioned import gather_scores

    return gather_scores(resources(), run_date_of(context), list(slices), features["path"])


@task(map_index_template="{{ partition_label }}")
def stage_scores(scored: dict, gathered: dict, **context) -> int:
    from ml.publishing import stage_scores

    get_current_context()["partition_label"] = _label(scored["partition"])
    return stage_scores(resources(), run_date_of(context), scored, gathered)


@task(task_id="publish")
def publish_scores(gathered: dict, **context) -> dict[str, int]:
    from ml.publishing import publish_scores

    return publish_scores(resources(), run_date_of(context), gathered)


def partitioned_scores(validated, features):
    """Wire the chain; returns ``(gathered, published)``: the gathered scores (what the drift check reads) and the
    ``publish`` task (what waits for tonight's scores)."""
    partitions = prepare_scores(validated)
    slices = score.partial(features=features).expand(partition=partitions)
    gathered = gather_scores(slices, features)
    staged = stage_scores.partial(gathered=gathered).expand(scored=slices)
    published = publish_scores(gathered)
    staged >> published
    return slices, gathered, published


@task
def prepare_recommendations(extract_paths: dict[str, str], **context) -> list[dict]:
    from ml.partitioned_recommendations import prepare_recommendations

    return prepare_recommendations(resources(), run_date_of(context), extract_paths, run_params_of(context))


@task(map_index_template="{{ partition_label }}")
def recommend_products(partition: dict, extract_paths: dict[str, str], **context) -> dict:
    from ml.partitioned_recommendations import recommend_slice
    from ml.partitioning import Partition

    get_current_context()["partition_label"] = _label(partition)
    return skip_if_skipped(recommend_slice(resources(), run_date_of(context), extract_paths, run_params_of(context),
                                           Partition.from_dict(partition)), context)


@task(map_index_template="{{ partition_label }}")
def stage_recommendations(sliced: dict, **context) -> int:
    from ml.publishing import stage_recommendations

    get_current_context()["partition_label"] = _label(sliced["partition"])
    return stage_recommendations(resources(), run_date_of(context), sliced)


@task
def publish_recommendations(slices: list[dict], **context) -> dict[str, int]:
    from ml.publishing import publish_recommendations

    return publish_recommendations(resources(), run_date_of(context), list(slices))


def partitioned_recommendations(validated):
    """Wire the chain; returns the ``publish_recommendations`` task (what waits for tonight's lists)."""
    partitions = prepare_recommendations(validated)
    slices = recommend_products.partial(extract_paths=validated).expand(partition=partitions)
    staged = stage_recommendations.expand(sliced=slices)
    published = publish_recommendations(slices)
    staged >> published
    return published
