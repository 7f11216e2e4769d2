"""DAG tier: every DAG imports, parsing touches no database and imports nothing heavy, structure is as designed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from revopt.config import DAGS_FOLDER

EXPECTED_EDGES = {
    "extract": set(),
    "validate": {"extract"},
    "build_features": {"validate"},
    "train_propensity": {"validate"},
    "score": {"build_features", "train_propensity"},
    "publish": {"score"},
}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    dag_files = sorted(p.name for p in DAGS_FOLDER.glob("*.py"))
    assert dag_files, "no DAG files found"
    assert {dag.fileloc.rsplit("/", 1)[-1] for dag in dagbag.dags.values()} == set(dag_files)


def test_nightly_dag_has_the_expected_task_graph(dagbag):
    dag = dagbag.dags["revopt_nightly"]
    assert {task.task_id: set(task.upstream_task_ids) for task in dag.tasks} == EXPECTED_EDGES


def test_every_dag_is_tagged_and_every_task_retries(dagbag):
    for dag in dagbag.dags.values():
        assert "revopt" in dag.tags, dag.dag_id
        assert dag.max_active_runs == 1, dag.dag_id
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id} has no retries"
            assert task.retry_exponential_backoff, f"{dag.dag_id}.{task.task_id} retries without backoff"
            assert task.retry_policy is not None, f"{dag.dag_id}.{task.task_id} would retry bad data"


def test_bad_data_fails_at_once_and_transient_errors_retry(dagbag):
    from airflow.sdk import RetryAction

    from revopt.validation import DataValidationError

    policy = dagbag.dags["revopt_nightly"].get_task("validate").retry_policy
    fail = policy.evaluate(DataValidationError("orders failed"), try_number=1, max_tries=3)
    retry = policy.evaluate(ConnectionError("server restarting"), try_number=1, max_tries=3)
    assert fail.action == RetryAction.FAIL
    assert retry.action != RetryAction.FAIL


def test_run_settings_are_params_with_defaults(dagbag):
    params = dagbag.dags["revopt_nightly"].params
    defaults = {key: params[key] for key in params}
    assert defaults["horizon_days"] == 30
    assert defaults["n_trials"] >= 1
    assert set(defaults) >= {"horizon_days", "lookback_days", "n_trials", "tuning_timeout_seconds", "seed"}


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
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(DAGS_FOLDER)!r})
        assert not bag.import_errors, bag.import_errors
        heavy = {{"mlflow", "lightgbm", "optuna", "chdb", "great_expectations", "sklearn", "ml", "features"}}
        loaded = heavy & {{name.split(".")[0] for name in set(sys.modules) - before}}
        assert not loaded, f"DAG parsing imported {{sorted(loaded)}}"
        assert queries == [], queries
        print("OK", len(bag.dags))
        """
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK 1")
