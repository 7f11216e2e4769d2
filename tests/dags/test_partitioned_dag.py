"""DAG tier: the nightly customer scores and product recommendations are mapped over the run's customer-hash
partitions (dags/_partitioned.py)."""

from __future__ import annotations

import pytest

from revopt.platform.config import DAGS_FOLDER


@pytest.fixture(scope="module")
def nightly():
    from airflow.dag_processing.dagbag import BundleDagBag

    dagbag = BundleDagBag(dag_folder=str(DAGS_FOLDER), bundle_path=DAGS_FOLDER)
    assert dagbag.import_errors == {}
    return dagbag.dags["revopt_nightly"]


def _expanded_over(task) -> dict[str, str]:
    """What a mapped task maps over: its expanded argument -> the task whose output it is."""
    return {name: arg.operator.task_id for name, arg in task._get_specified_expand_input().value.items()}


def test_scoring_recommending_and_staging_are_mapped_over_the_partitions_and_the_rest_runs_once(nightly):
    mapped = {task.task_id for task in nightly.tasks if task.is_mapped}
    assert mapped == {"validate_events", "score", "stage_scores", "recommend_products", "stage_recommendations"}
    assert _expanded_over(nightly.get_task("recommend_products")) == {"partition": "prepare_recommendations"}
    assert _expanded_over(nightly.get_task("stage_recommendations")) == {"sliced": "recommend_products"}
    for once in ("prepare_recommendations", "publish_recommendations", "next_best_action"):
        assert not nightly.get_task(once).is_mapped, once
    # one score per partition prepare_scores returns, one stage per score slice
    assert _expanded_over(nightly.get_task("score")) == {"partition": "prepare_scores"}
    assert _expanded_over(nightly.get_task("stage_scores")) == {"scored": "score"}
    # what ranks the whole population and what makes the staged slices visible run once, after every slice
    for once in ("prepare_scores", "gather_scores", "publish", "check_drift"):
        assert not nightly.get_task(once).is_mapped, once
    for task_id in ("score", "stage_scores", "prepare_recommendations", "recommend_products", "stage_recommendations"):
        assert nightly.get_task(task_id).doc_md, task_id  # their Docs tab


def test_the_extract_runs_each_of_its_parts_in_its_own_task_and_each_is_validated_as_it_ends(nightly):
    from _gate import EVENT_VALIDATION_SHARES
    from revopt.platform.extract import EXTRACT_PARTS

    for part in EXTRACT_PARTS:
        extract = nightly.get_task(f"extract_{part}")
        assert not extract.is_mapped and extract.op_kwargs == {"purpose": "nightly"} and extract.doc_md
    # not one mapped task: a task after a mapped one starts only once every map index ended
    assert nightly.get_task("validate_tables").upstream_task_ids == {"extract_tables"}
    events = nightly.get_task("validate_events")
    assert events.is_mapped and events._get_specified_expand_input().value == {
        "share": list(range(EVENT_VALIDATION_SHARES))}


def test_the_number_of_partitions_is_a_nightly_param_defaulting_to_one(nightly):
    param = nightly.params.get_param("partitions")
    assert param.value == 1
    assert (param.schema["minimum"], param.schema["maximum"]) == (1, 64)
    assert "celery" in param.description.lower()


def test_prepare_returns_one_partition_per_requested_slice_sharing_the_pinned_versions():
    import datetime as dt

    import pandas as pd

    from ml.partitioning import Partition, pin_champions

    class Family:  # a family whose store cannot be scored: nothing to resolve in MLflow
        name, model_name = "propensity", "m"

        @staticmethod
        def shortfall(frames, run_date, params):
            return "too few buyers"

    frames = {"customers": pd.DataFrame(), "orders": pd.DataFrame()}
    for count in (1, 4):
        partitions = [Partition.from_dict(p) for p in pin_champions(None, dt.date(2024, 1, 1), frames, None,
                                                                     [Family], count)]
        assert [(p.index, p.count) for p in partitions] == [(k, count) for k in range(count)]
        assert all(p.without == {"propensity": "too few buyers"} and p.versions == {} for p in partitions)
