"""The CLI's progress lines, read from `airflow dags test` output."""

from __future__ import annotations

import io

from revopt.cli import _follow_task_states

# Shapes copied from a real run's log (revopt run --dag nightly), shortened.
LINES = [
    "[info] [DAG TEST] starting task_id=extract map_index=-1 [airflow.sdk.definitions.dag]\n",
    "[info] Pushing xcom ti=RuntimeTaskInstance(task_id='somewhere_else', dag_id='revopt_nightly')\n",
    "[info] Task instance state updated [airflow.api_fastapi] new_state=success rows_affected=1\n",
    "[info] [DAG TEST] starting task_id=allocate_budget map_index=-1 [airflow.sdk.definitions.dag]\n",
    "[warning] budget skipped for 2011-09-01: the store has no marketing spend before the run date "
    "(shop.marketing_spend) [ml.workflows] loc=workflows.py:240\n",
    "[info] Task instance state updated [airflow.api_fastapi] new_state=skipped rows_affected=1\n",
    "[info] [DAG TEST] starting task_id=validate map_index=-1 [airflow.sdk.definitions.dag]\n",
    "[info] Task instance state updated [airflow.api_fastapi] new_state=failed rows_affected=1\n",
    "[info] DagRun Finished: dag_id=revopt_nightly, state=failed, run_type=manual\n",
]


def test_each_finished_task_is_named_with_its_state_and_a_skip_with_its_reason(capsys):
    log = io.StringIO()
    _follow_task_states(LINES, log)
    printed = [line.split(" (+")[0].strip() for line in capsys.readouterr().out.splitlines()]
    assert printed == [
        "task extract: success",  # not the task named in a later xcom line
        "task allocate_budget: skipped: the store has no marketing spend before the run date (shop.marketing_spend)",
        "task validate: failed",
        "DAG run finished: failed",
    ]
    assert log.getvalue() == "".join(LINES)
