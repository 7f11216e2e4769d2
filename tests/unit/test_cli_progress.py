"""The CLI's progress, drawn from the task states the runner (revopt.dag_runner) polls out of Airflow's
metadata database into a state file, not from log text; and how it judges a DAG run from the runner's report."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from rich.console import Console

from revopt.cli import run_problem
from revopt.cli_run import PlainProgress, progress_view, read_state, summary_table
from revopt.dag_runner import StatePoller, write_atomically


def _state(run_state=None, **tasks):
    return {"dag_id": "revopt_nightly", "run_date": "2025-03-01", "state": run_state,
            "tasks": {task: (value if isinstance(value, dict) else {"state": value}) for task, value in tasks.items()}}


# Successive polls of one run, as the runner writes them.
POLLS = [
    _state("running", extract="running", validate=None, allocate_budget=None),
    _state("running", extract="running", validate=None, allocate_budget=None),  # nothing changed
    _state("running", extract="success", validate="running", allocate_budget=None),
    _state("failed", extract="success", validate="failed", allocate_budget={"state": "skipped", "reason": "no spend"}),
]


def test_plain_progress_prints_one_line_per_state_change():
    out = io.StringIO()
    view = PlainProgress(out, clock=lambda: 0.0)
    for state in POLLS[:-1]:
        view.update(state)
    view.close(POLLS[-1])
    printed = [line.split(" (+")[0].strip() for line in out.getvalue().splitlines()]
    assert printed == [
        "task extract: running",
        "task extract: success",
        "task validate: running",
        "task validate: failed",
        "task allocate_budget: skipped: no spend",
        "DAG run failed",
    ]


def test_without_a_terminal_the_view_is_plain():
    assert isinstance(progress_view("x", io.StringIO()), PlainProgress)


def test_the_summary_table_names_each_task_its_state_duration_and_skip_reason():
    state = _state("success", extract={"state": "success", "duration": 12.34},
                   allocate_budget={"state": "skipped", "duration": 0.5, "reason": "no marketing spend"})
    console = Console(file=io.StringIO(), width=200)
    console.print(summary_table(state))
    text = console.file.getvalue()
    assert "extract" in text and "12.3s" in text and "no marketing spend" in text and "skipped" in text


def test_the_poller_replaces_the_state_file_whole_and_a_failed_read_is_skipped(tmp_path):
    path = tmp_path / "state.json"
    reads = iter([RuntimeError("database is locked"), *POLLS])
    wrote = threading.Event()

    def read():
        value = next(reads, POLLS[-1])
        if isinstance(value, Exception):
            raise value
        wrote.set()
        return value

    poller = StatePoller(read, path, interval=0.01)
    poller.start()
    assert wrote.wait(5)
    while not path.exists():
        time.sleep(0.001)
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (not seen or seen[-1] is None or seen[-1]["state"] != "failed"):
        seen.append(read_state(path))
    poller.stop()
    assert all(state is not None and state["dag_id"] == "revopt_nightly" for state in seen), "never a half-written file"
    assert read_state(path) == json.loads(json.dumps(POLLS[-1]))
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left


def test_a_missing_or_partial_state_file_reads_as_none(tmp_path):
    assert read_state(tmp_path / "absent.json") is None
    (tmp_path / "half.json").write_text('{"tasks": {"ext')
    assert read_state(tmp_path / "half.json") is None
    write_atomically(tmp_path / "whole.json", POLLS[0])
    assert read_state(tmp_path / "whole.json")["state"] == "running"


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


def test_on_a_terminal_a_bar_counts_finished_tasks_and_names_the_running_ones():
    from revopt.cli_run import RichProgress

    console = Console(file=io.StringIO(), force_terminal=True, width=160)
    view = RichProgress(console, "revopt_nightly 2025-03-01")
    view.update(POLLS[2])
    task = view.progress.tasks[0]
    assert (task.completed, task.total, task.fields["running"]) == (1, 3, "running: validate")
    view.close(POLLS[-1])
    assert view.progress.tasks[0].completed == 3
    assert "no spend" in console.file.getvalue()  # the summary table


def test_a_failed_run_shows_the_failed_tasks_own_log_lines_not_the_teardown_after_them():
    from revopt.cli_run import failure_log

    log = "".join([
        "t0 [DAG TEST] starting task_id=extract map_index=-1\n", "extract ok\n",
        "t1 [DAG TEST] end task task_id=extract map_index=-1\n",
        "t2 [DAG TEST] starting task_id=validate map_index=-1\n",
        *[f"noise {i}\n" for i in range(50)], "DataValidationError: orders.order_value\n",
        "t3 [DAG TEST] end task task_id=validate map_index=-1\n",
        "t4 [DAG TEST] starting task_id=summarise_run map_index=-1\n",
        *[f"teardown {i}\n" for i in range(60)],
        "t5 [DAG TEST] end task task_id=summarise_run map_index=-1\n",
    ])
    shown = failure_log(log, ["validate"], lines=10)
    assert "DataValidationError: orders.order_value" in shown
    assert "teardown" not in shown and "extract ok" not in shown
    assert len(shown.splitlines()) == 10
    # no failed task found in the log: its last lines
    assert failure_log(log, ["unknown"], lines=3).splitlines()[-1].startswith("t5")


def test_a_failed_mapped_task_shows_the_instance_that_failed_whichever_ran_first():
    from revopt.cli_run import TASK_FAILED, failure_log

    def share(index: int, failed: bool) -> list[str]:
        return [f"[DAG TEST] starting task_id=validate_share map_index={index}\n", f"share {index} validating\n",
                *([f"[error    ] {TASK_FAILED}\n", "DataValidationError: orders.order_value\n"] if failed else []),
                f"[DAG TEST] end task task_id=validate_share map_index={index}\n"]

    for first, second in ((1, 0), (0, 1)):  # the passing share ran first, then last
        log = "".join([*share(first, failed=first == 0), *share(second, failed=second == 0)])
        shown = failure_log(log, ["validate_share"], lines=10)
        assert "DataValidationError: orders.order_value" in shown and "share 1" not in shown
    # no instance says it failed (a killed process): every instance's lines
    log = "".join([*share(0, failed=False), *share(1, failed=False)])
    assert "share 0" in failure_log(log, ["validate_share"]) and "share 1" in failure_log(log, ["validate_share"])


def test_a_mapped_task_reports_its_most_telling_partition_and_their_summed_time():
    """A mapped task (one instance per customer-hash partition) is one task in the report: a failed partition
    fails it even when a later one succeeded; still running while one runs; its duration the partitions' sum."""
    from revopt.dag_runner import merge_instances

    rows = [("extract", "success", 3.0), ("score", "failed", 1.0), ("score", "success", 4.0),
            ("publish", "upstream_failed", None), ("stage", "success", 2.0), ("stage", "running", 0.5),
            ("recommend", "skipped", 1.0), ("recommend", "success", 2.0), ("later", None, None), ("later", None, None)]
    assert merge_instances(rows) == {
        "extract": {"state": "success", "duration": 3.0}, "score": {"state": "failed", "duration": 5.0},
        "publish": {"state": "upstream_failed", "duration": None}, "stage": {"state": "running", "duration": 2.5},
        "recommend": {"state": "success", "duration": 3.0}, "later": {"state": None, "duration": None}}
    assert list(merge_instances(rows)) == ["extract", "score", "publish", "stage", "recommend", "later"]
    assert merge_instances(rows, {"recommend": "no champion"})["recommend"] == {
        "state": "success", "duration": 3.0, "reason": "no champion"}


def test_the_runner_parses_the_dags_own_file_alone():
    """``dags test`` parses and serialises the one DAG it runs (``--dagfile-path``), not every DAG of the folder."""
    from revopt.dag_runner import _dag_file
    from revopt.platform.config import DAGS_FOLDER

    for dag_id in ("revopt_nightly", "revopt_training", "revopt_experiments", "revopt_affinity"):
        assert _dag_file(dag_id) == ["--dagfile-path", str(DAGS_FOLDER / f"{dag_id}.py")]
    assert _dag_file("not_a_dag") == []  # Airflow then looks through the folder and names what it did not find
