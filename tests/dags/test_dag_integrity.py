"""DAG tier: every DAG imports, parsing touches no database and imports nothing heavy, structure is as designed."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap

import pytest

from revopt.platform.config import DAGS_FOLDER

EXPECTED_EDGES = {
    "revopt_nightly": {
        "extract_tables": {"apply_identity_map"},
        "extract_events": {"apply_identity_map"},
        # each part validated as it ends (the events part's shares need the tables' paths to know the store's kind)
        "validate_tables": {"extract_tables"},
        "validate_events": {"extract_tables", "extract_events"},
        "validate": {"extract_tables", "extract_events", "validate_tables", "validate_events"},
        "build_features": {"validate"},
        "assign_experiments": {"validate"},
        # customer scores mapped over the run's customer-hash partitions (dags/_partitioned.py)
        "prepare_scores": {"validate"},
        "score": {"prepare_scores", "build_features", "assign_experiments"},
        "gather_scores": {"score", "build_features"},
        "stage_scores": {"score", "gather_scores"},
        "publish": {"gather_scores", "stage_scores"},
        "recommend_prices": {"validate", "assign_experiments"},
        "publish_prices": {"recommend_prices"},
        "recommend_send_times": {"validate", "assign_experiments"},
        "publish_send_times": {"recommend_send_times"},
        "allocate_budget": {"validate"},
        "publish_budget": {"allocate_budget"},
        "attribute": {"validate"},
        "publish_attribution": {"attribute"},
        "acquisition_economics": {"validate", "attribute", "publish"},
        "publish_economics": {"acquisition_economics"},
        "campaign_analytics": {"validate", "attribute", "publish_budget", "publish_send_times"},
        "publish_campaigns": {"campaign_analytics"},
        "segment_customers": {"validate", "build_features", "publish"},
        "publish_segments": {"segment_customers"},
        # product recommendations mapped over the same partitions
        "prepare_recommendations": {"validate"},
        "recommend_products": {"prepare_recommendations", "validate"},
        "stage_recommendations": {"recommend_products"},
        "publish_recommendations": {"recommend_products", "stage_recommendations"},
        "next_best_action": {"validate", "build_features", "segment_customers", "publish_segments",
                             "publish_recommendations"},
        "publish_next_best_action": {"next_best_action"},
        "check_drift": {"gather_scores"},
        "drift_above_threshold": {"check_drift"},
        "signal_drift": {"check_drift", "drift_above_threshold"},
        "evaluate_outcomes": {"validate"},
        "performance_below_threshold": {"evaluate_outcomes"},
        "signal_performance_drop": {"evaluate_outcomes", "performance_below_threshold"},
        "resolve_identities": set(),
        "publish_identity_map": {"resolve_identities"},
        "apply_identity_map": {"publish_identity_map"},
        "remove_old_run_folders": set(),
        "record_alias_moves": set(),
        "nightly_report": {"publish", "publish_prices", "publish_send_times", "publish_budget", "publish_attribution",
                           "publish_economics", "publish_campaigns", "publish_segments", "publish_recommendations",
                           "publish_next_best_action"},
        # after every task that had nothing after it: it runs last and reads every result
        "summarise_run": {"nightly_report", "record_alias_moves", "remove_old_run_folders", "signal_drift",
                          "signal_performance_drop"},
    },
    "revopt_experiments": {
        "extract_tables": set(),
        "extract_events": set(),
        # each part validated as it ends (the events part's shares need the tables' paths to know the store's kind)
        "validate_tables": {"extract_tables"},
        "validate_events": {"extract_tables", "extract_events"},
        "validate": {"extract_tables", "extract_events", "validate_tables", "validate_events"},
        "analyse": {"validate"},
    },
    "revopt_training": {
        "extract_tables": {"apply_identity_map"},
        "extract_events": {"apply_identity_map"},
        "resolve_identities": set(),
        "publish_identity_map": {"resolve_identities"},
        "apply_identity_map": {"publish_identity_map"},
        # each part validated as it ends (the events part's shares need the tables' paths to know the store's kind)
        "validate_tables": {"extract_tables"},
        "validate_events": {"extract_tables", "extract_events"},
        "validate": {"extract_tables", "extract_events", "validate_tables", "validate_events"},
        # independent branches: one family failing or skipping leaves the others to train
        "train_propensity": {"validate"},
        "train_churn": {"validate"},
        "train_clv": {"validate"},
        "train_pricing": {"validate_tables"},  # it reads only the tables part (test_pricing_reads_only_tables)
        "train_send_time": {"validate"},
        "train_budget": {"validate"},
        "train_recommendations": {"validate"},
        "train_uplift": {"validate"},
        "record_alias_moves": set(),
        "summarise_run": {"record_alias_moves", "train_propensity", "train_churn", "train_clv", "train_pricing",
                          "train_send_time", "train_budget", "train_recommendations", "train_uplift"},
    },
    "revopt_affinity": {
        "refresh": set(),
        "publish": {"refresh"},
    },
}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS_FOLDER), bundle_path=DAGS_FOLDER)


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    ignored = set((DAGS_FOLDER / ".airflowignore").read_text().split())
    # helpers, not DAGs: Airflow does not parse them for DAGs
    assert ignored == {p.name for p in DAGS_FOLDER.glob("_*.py")} >= {"_support.py", "_notify.py"}
    dag_files = sorted(p.name for p in DAGS_FOLDER.glob("*.py") if p.name not in ignored)
    assert dag_files, "no DAG files found"
    assert {dag.fileloc.rsplit("/", 1)[-1] for dag in dagbag.dags.values()} == set(dag_files)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_EDGES))
def test_dags_have_the_expected_task_graph(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert {task.task_id: set(task.upstream_task_ids) for task in dag.tasks} == EXPECTED_EDGES[dag_id]


def test_any_run_date_a_store_may_have_is_scheduled_and_families_run_two_at_a_time(dagbag):
    import datetime as dt

    for dag in dagbag.dags.values():
        assert dag.start_date <= dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc), dag.dag_id
        assert not dag.catchup, dag.dag_id
    assert dagbag.dags["revopt_training"].max_active_tasks == 2


def test_scoring_never_trains_and_training_never_publishes(dagbag):
    assert not any("train" in task.task_id for task in dagbag.dags["revopt_nightly"].tasks)
    # training publishes one table, the identity map, so it trains on the people the nightly run scores
    assert [task.task_id for task in dagbag.dags["revopt_training"].tasks if "publish" in task.task_id] == [
        "publish_identity_map"]
    assert dagbag.dags["revopt_nightly"].timetable.expression == "0 0 * * *"  # @daily
    training = dagbag.dags["revopt_training"].timetable
    assert training.timetable.expression == "0 0 * * 0"  # weekly ...
    # ... and on drift or a drop in realised performance
    assert [a.name for a in training.asset_condition.objects] == ["revopt_drift_detected", "revopt_performance_dropped"]
    drift_outlets = dagbag.dags["revopt_nightly"].get_task("signal_drift").outlets
    assert [outlet.name for outlet in drift_outlets] == ["revopt_drift_detected"]


def test_every_dag_is_tagged_and_every_task_retries(dagbag):
    for dag in dagbag.dags.values():
        assert "revopt" in dag.tags, dag.dag_id
        assert dag.max_active_runs == 1, dag.dag_id
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id} has no retries"
            assert task.retry_exponential_backoff, f"{dag.dag_id}.{task.task_id} retries without backoff"
            assert task.retry_policy is not None, f"{dag.dag_id}.{task.task_id} would retry bad data"


def _raised(error: BaseException, *, while_handling: BaseException | None = None) -> BaseException:
    """``error`` as Python leaves it after ``raise`` (inside ``except`` for ``while_handling``)."""
    try:
        if while_handling is None:
            raise error
        try:
            raise while_handling
        except BaseException:
            raise error  # noqa: B904 (implicit chaining, as MLflow's REST client does)
    except BaseException as raised:
        return raised


def _transient_errors() -> dict[str, BaseException]:
    import socket

    import psycopg
    import requests
    from clickhouse_connect.driver.exceptions import OperationalError as ClickHouseOperationalError
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    return {
        "connection refused": ConnectionRefusedError("connection refused"),
        "socket timeout": socket.timeout("timed out"),
        "PostgreSQL restarting": psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        "PostgreSQL connection lost": psycopg.OperationalError("server closed the connection unexpectedly"),
        "ClickHouse server unreachable": ClickHouseOperationalError("Error HTTPConnectionPool: connection refused"),
        "HTTP read timeout": requests.exceptions.ReadTimeout("read timed out"),
        "MLflow 503": MlflowException("API request failed with error code 503", error_code=TEMPORARILY_UNAVAILABLE),
        "MLflow 429": RestException({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}),
        "MLflow 500 answer": RestException({"error_code": "INTERNAL_ERROR", "message": "database is down"}),
        "MLflow out of retries": _raised(MlflowException("API request to /api/2.0/mlflow/runs/create failed"),
                                         while_handling=requests.exceptions.RetryError("too many 503 error responses")),
        "MLflow store busy": MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE),
    }


def _permanent_errors() -> dict[str, BaseException]:
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    from revopt.platform.validation import DataValidationError

    class NonFiniteModel(ValueError):  # like ml.training.NonFiniteModelError
        pass

    return {
        "bad data": DataValidationError("orders failed expect_column_values_to_not_be_null"),
        "programming error": _raised(TypeError("unsupported operand type(s) for ** or pow(): 'NoneType' and 'int'")),
        "missing column": KeyError("order_ts"),
        "bad setting": ValueError("price_max_change must be < 1"),
        "non-finite model": NonFiniteModel("clv for 2024-10-27: 3 of 900 holdout predictions are NaN"),
        "no trial finished": RuntimeError("tuning: no trial finished"),
        "MLflow bad request": MlflowException("bad metric name", error_code=INVALID_PARAMETER_VALUE),
        "MLflow internal error of ours": MlflowException("could not serialise the model"),  # 500, not an HTTP answer
        "MLflow 404": RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such model"}),
    }


def test_only_transient_errors_are_retried(dagbag):
    from airflow.sdk import RetryAction

    for dag in dagbag.dags.values():
        for task in dag.tasks:
            policy = task.retry_policy
            for name, error in _transient_errors().items():
                decision = policy.evaluate(error, try_number=1, max_tries=3)
                assert decision.action == RetryAction.RETRY, f"{dag.dag_id}.{task.task_id} does not retry {name}"
                assert "transient" in decision.reason
            for name, error in _permanent_errors().items():
                decision = policy.evaluate(error, try_number=1, max_tries=3)
                assert decision.action == RetryAction.FAIL, f"{dag.dag_id}.{task.task_id} retries {name}"
                assert type(error).__name__ in decision.reason and "not a transient error" in decision.reason


def test_an_error_raised_from_a_transient_one_is_retried_unless_its_context_was_suppressed(dagbag):
    from airflow.sdk import RetryAction

    policy = dagbag.dags["revopt_nightly"].get_task("publish").retry_policy
    wrapped = _raised(RuntimeError("publish failed"), while_handling=ConnectionResetError("reset by peer"))
    assert policy.evaluate(wrapped, try_number=1, max_tries=3).action == RetryAction.RETRY
    explicit = RuntimeError("publish failed")
    explicit.__cause__ = TimeoutError("timed out")
    assert policy.evaluate(explicit, try_number=1, max_tries=3).action == RetryAction.RETRY
    suppressed = RuntimeError("publish failed")
    suppressed.__context__, suppressed.__suppress_context__ = TimeoutError("timed out"), True  # raise ... from None
    assert policy.evaluate(suppressed, try_number=1, max_tries=3).action == RetryAction.FAIL


def test_run_settings_are_params_generated_from_the_one_definition(dagbag):
    from dataclasses import fields

    from ml.params import RunParams, param_specs

    for dag_id, dag in (("revopt_training", "training"), ("revopt_nightly", "nightly"),
                        ("revopt_experiments", "experiments")):
        params = dagbag.dags[dag_id].params
        specs = param_specs(dag)
        assert list(params) == [spec.name for spec in specs]
        # the DAG's defaults are the definition's: a run with no conf runs with RunParams()
        built = RunParams.from_mapping({key: params[key] for key in params})
        assert all(getattr(built, f.name) == getattr(RunParams(), f.name) for f in fields(RunParams))
        for spec in specs:
            assert params.get_param(spec.name).description == spec.description
            assert params.get_param(spec.name).schema["type"] == spec.schema["type"]
    training = set(dagbag.dags["revopt_training"].params)
    assert training >= {"propensity_horizon_days", "churn_horizon_days", "clv_horizon_days", "n_trials",
                        "tuning_timeout_seconds", "seed", "promotion_margin", "lookback_days"}
    assert "drift_share_threshold" in dagbag.dags["revopt_nightly"].params
    assert {"lookback_days", "experiment_pre_days", "experiment_followup_days"} <= set(dagbag.dags["revopt_experiments"].params)
    assert "experiment_holdout_share" in dagbag.dags["revopt_nightly"].params


def test_every_param_schema_is_checked_as_draft_7(dagbag):
    """Airflow checks each param's schema against its draft's metaschema at every check of a value (21k checks in one
    nightly run); draft 7's costs a third of the default draft 2020-12's, and every schema is valid draft 7."""
    from jsonschema import Draft7Validator
    from jsonschema.validators import validator_for

    for dag_id in ("revopt_training", "revopt_nightly", "revopt_experiments"):
        params = dagbag.dags[dag_id].params
        for name in params:
            schema = params.get_param(name).schema
            assert validator_for(schema) is Draft7Validator, (dag_id, name)
            Draft7Validator.check_schema(schema)


def test_dag_tasks_call_named_functions_not_strings():
    """No task picks what to run from a string: every call is an import and a name a reader can grep."""
    import re

    for path in DAGS_FOLDER.glob("*.py"):
        source = path.read_text()
        # getattr on a module (e.g. getattr(workflows, step)), a name built from a string, importlib
        assert not re.search(r"getattr\(|f\"train_|importlib|__import__", source), path.name


def test_parsing_runs_no_queries_and_imports_no_heavy_modules():
    """Parse the DAG folder in a fresh interpreter, counting SQL sent to any SQLAlchemy engine
    (Airflow's metadata DB included) and refusing connections to our own stores."""
    probe = textwrap.dedent(
        f"""
        import sys
        import sqlalchemy
        from sqlalchemy import event

        queries = []
        event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", lambda *a, **k: queries.append(a[2]))
        import psycopg
        def _refuse(*args, **kwargs):
            raise AssertionError("PostgreSQL connection while parsing DAGs")
        psycopg.connect = _refuse

        before = set(sys.modules)
        from pathlib import Path
        from airflow.dag_processing.dagbag import BundleDagBag
        # as the DAG processor and the task runner parse it: the bundle's folder on sys.path
        bag = BundleDagBag(dag_folder={str(DAGS_FOLDER)!r}, bundle_path=Path({str(DAGS_FOLDER)!r}))
        assert not bag.import_errors, bag.import_errors
        heavy = {{"mlflow", "lightgbm", "optuna", "chdb", "great_expectations", "sklearn", "features", "pandas"}}
        new = set(sys.modules) - before
        loaded = heavy & {{name.split(".")[0] for name in new}}
        assert not loaded, f"DAG parsing imported {{sorted(loaded)}}"
        # of revopt's own code only the run-parameter definition and the docs' texts (no dependencies)
        ours = sorted(name for name in new if name.split(".")[0] in ("ml", "revopt"))
        assert ours == ["ml", "ml.params", "revopt", "revopt.platform", "revopt.platform.task_docs"], ours
        assert queries == [], queries
        print("OK", len(bag.dags))
        """
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(f"OK {len(EXPECTED_EDGES)}")


def test_a_family_the_workflow_skipped_ends_as_a_skipped_task():
    from airflow.sdk.exceptions import AirflowSkipException

    from _support import skip_if_skipped

    done = {"path": "/x.parquet", "rows": 3}
    assert skip_if_skipped(done) is done
    assert skip_if_skipped(7) == 7
    with pytest.raises(AirflowSkipException, match="no marketing spend"):
        skip_if_skipped({"skipped": "the store has no marketing spend before the run date"})


def test_run_date_is_the_utc_logical_date_or_run_after():
    from _support import run_date_of

    tz = dt.timezone(dt.timedelta(hours=-5))
    assert run_date_of({"logical_date": dt.datetime(2025, 3, 1, 22, 0, tzinfo=tz)}) == dt.date(2025, 3, 2)

    class _Run:
        run_after = dt.datetime(2025, 3, 4, 1, 0, tzinfo=dt.timezone.utc)

    assert run_date_of({"logical_date": None, "dag_run": _Run()}) == dt.date(2025, 3, 4)


def test_pricing_reads_only_tables_and_is_the_one_family_on_the_tables_gate(dagbag):
    """train_pricing starts once the tables part passed its gate (the events part may still be extracting): it
    must read nothing the events part writes, and the families that do wait for the whole gate."""
    from ml.families import FAMILIES
    from revopt.platform.extract import TABLE_DATASETS

    training = dagbag.dags["revopt_training"]
    on_tables_gate = {task.task_id for task in training.tasks if task.upstream_task_ids == {"validate_tables"}}
    assert on_tables_gate == {"train_pricing"}
    for family in FAMILIES:
        reads_tables_only = set(family.training_datasets) <= set(TABLE_DATASETS)
        assert reads_tables_only == (family.name == "pricing"), family.name


def test_every_dag_and_task_has_docs_a_person_can_read(dagbag):
    for dag in dagbag.dags.values():
        assert dag.doc_md and "If it fails" not in dag.doc_md and "### Operating it" in dag.doc_md, dag.dag_id
        for task in dag.tasks:
            doc = task.doc_md or ""
            assert "**Reads**" in doc and "**Writes**" in doc and "**If it fails**" in doc, \
                f"{dag.dag_id}.{task.task_id} has no docs"
            assert "{dag}" not in doc, f"{dag.dag_id}.{task.task_id}"
    assert "`scores.data_quality`" in dagbag.dags["revopt_nightly"].get_task("validate_events").doc_md


def test_every_param_has_a_title_and_a_bad_value_names_the_param(dagbag):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    for dag in dagbag.dags.values():
        for name in dag.params:
            title = dag.params.get_param(name).schema.get("title", "")
            assert title.endswith(f"({name})") and len(title) > len(name) + 3, f"{dag.dag_id}.{name}"
    training = dagbag.dags["revopt_training"].params
    for name, bad, says in (("n_trials", 0, "less than the minimum of 1"), ("seed", "abc", "not of type 'integer'"),
                            ("clv_selection_metric", "r2", "is not one of"),
                            ("promotion_alpha", 1.0, "greater than or equal to the maximum")):
        params = ParamsDict({key: training.get_param(key) for key in training})
        with pytest.raises(ParamValidationError, match=f"Invalid input for param {name}: .*{says}"):
            params[name] = bad
            params.validate()


def test_the_report_and_the_note_run_last_whatever_happened_and_never_decide_the_run(dagbag):
    for dag_id in ("revopt_nightly", "revopt_training"):
        dag = dagbag.dags[dag_id]
        summary = dag.get_task("summarise_run")
        assert not summary.downstream_list and set(summary.get_flat_relative_ids(upstream=True)) == \
            {t.task_id for t in dag.tasks} - {"summarise_run"}, "it reads every task's result"
        for task_id in ("summarise_run", "nightly_report") if dag_id == "revopt_nightly" else ("summarise_run",):
            task = dag.get_task(task_id)
            # all upstream done (no setup task exists) and a teardown: the run's state comes from its other leaves
            assert task.is_teardown and task.trigger_rule == "all_done_setup_success", task_id
            assert not task.on_failure_fail_dagrun
        # the short circuits skip their signal only, so the note still runs
        for check in ("drift_above_threshold", "performance_below_threshold") if dag_id == "revopt_nightly" else ():
            assert dag.get_task(check).ignore_downstream_trigger_rules is False


def test_every_task_notifies_its_failure_through_the_revopt_notifier(dagbag):
    from airflow.sdk.bases.notifier import BaseNotifier

    for dag in dagbag.dags.values():
        for task in dag.tasks:
            callbacks = task.on_failure_callback or []
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert [type(c).__name__ for c in callbacks] == ["RevoptNotifier"], f"{dag.dag_id}.{task.task_id}"
            assert isinstance(callbacks[0], BaseNotifier)


def test_families_waiting_for_a_slot_start_longest_first(dagbag):
    """Two families train at a time; the others wait, and the long ones must not wait longest, or the run ends on
    one long family alone (churn started seventh of eight at 1M customers, docs/scale.md "Session 26")."""
    from types import SimpleNamespace

    from airflow.serialization.serialized_objects import DagSerialization

    # the scheduler's view: a task instance's weight as its serialized task's weight rule gives it
    dag = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags["revopt_training"]))
    weights = {task.task_id: task.weight_rule.get_weight(SimpleNamespace(task=task))
               for task in dag.tasks if task.task_id.startswith("train_")}
    assert sorted(weights, key=weights.__getitem__, reverse=True) == [
        "train_propensity", "train_recommendations", "train_clv", "train_churn", "train_send_time", "train_budget",
        "train_pricing", "train_uplift"]
    assert len(set(weights.values())) == len(weights)  # no tie left to Airflow
