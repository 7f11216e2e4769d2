"""The CLI's progress lines, read from `airflow dags test` output, and how it judges a DAG run from
the runner's report (revopt.dag_runner), not from log text."""

from __future__ import annotations

import io

import pytest

from revopt.cli import _follow_task_states, run_problem

# Shapes copied from a real run's log (revopt run --dag nightly), shortened.
LINES = [
    "[info] [DAG TEST] starting task_id=extract map_index=-1 [airflow.sdk.definitions.dag]\n",
    "[info] Pushing xcom ti=RuntimeTaskInstance(task_id='somewhere_else', dag_id='revopt_nightly')\n",
    "[info] Task instance state updated [airflow.api_fastapi] new_state=success rows_affected=1\n",
    "[info] [DAG TEST] starting task_id=allocate_budget map_index=-1 [airflow.sdk.definitions.dag]\n",
    "[info] Task instance state updated [airflow.api_fastapi] new_state=skipped rows_affected=1\n",
    "[info] [DAG TEST] starting task_id=validate map_index=-1 [airflow.sdk.definitions.dag]\n",
    "[info] Task instance state updated [airflow.api_fastapi] new_state=failed rows_affected=1\n",
    "[info] DagRun Finished: dag_id=revopt_nightly, state=failed, run_type=manual\n",
]


def test_each_finished_task_is_named_with_its_state(capsys):
    log = io.StringIO()
    _follow_task_states(LINES, log)
    printed = [line.split(" (+")[0].strip() for line in capsys.readouterr().out.splitlines()]
    assert printed == [
        "task extract: success",  # not the task named in a later xcom line
        "task allocate_budget: skipped",
        "task validate: failed",
        "DAG run finished: failed",
    ]
    assert log.getvalue() == "".join(LINES)


def _report(state="success", **tasks):
    return {"state": state, "tasks": {task: {"state": value} for task, value in tasks.items()}}


def test_a_run_where_every_task_ran_is_a_success():
    assert run_problem(0, _report(extract="success", validate="success", allocate_budget="skipped")) is None


@pytest.mark.parametrize("status, report, expected", [
    (0, _report(), "no task ran"),  # Airflow's "success" for a date before the DAG's start_date
    (0, None, "did not report"),
    (0, _report(extract="success", score=None), "never ran: score (None)"),
    (0, _report(extract="success", publish="upstream_failed"), "never ran: publish (upstream_failed)"),
    (1, _report("failed", extract="success", train_pricing="failed", train_churn="success"), "failed: train_pricing"),
    (1, _report("failed", extract="success"), "ended failed"),
])
def test_a_run_that_did_not_run_everything_is_a_failure(status, report, expected):
    problem = run_problem(status, report)
    assert problem is not None and expected in problem
