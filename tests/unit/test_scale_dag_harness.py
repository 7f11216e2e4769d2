"""The whole-DAG harness of the scale benchmark (benchmarks/dag_harness.py): which process belongs to which task
instance, what a task's return value says it produced, how its task instances are read from Airflow's metadata,
and the 1M targets (benchmarks/scale.py ``dag_targets``)."""

from __future__ import annotations

import json
import sqlite3

from benchmarks.dag_harness import (
    ProcessSample, TaskSampler, attribute, process_table, read_task_instances, rows_of, title_ti,
)
from benchmarks.scale import _workers_ratio, dag_targets, dags_markdown

TI = "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
KEY = TI.replace("-", "")
OTHER = "0199a1b2-c3d4-7e5f-8a9b-ffffffffffff"
MB = 2**20


def test_process_titles_name_their_task_instance():
    assert title_ti(f"airflow worker -- {TI}") == KEY
    assert title_ti(f"airflow worker -- LocalExecutor: {TI}") == KEY
    assert title_ti(f"airflow worker -- LocalExecutor [team_a]: {TI}") == KEY
    assert title_ti("airflow worker -- LocalExecutor: <idle>") is None
    assert title_ti("/work/main/.venv/bin/python /work/main/.venv/bin/airflow dags test") is None


def test_a_task_tree_is_everything_below_its_supervisor():
    processes = [
        ProcessSample(10, 1, "airflow dags test --use-executor revopt_nightly", rss=900 * MB, hwm=900 * MB),
        ProcessSample(20, 10, f"airflow worker -- LocalExecutor: {TI}", rss=300 * MB, pss=200 * MB, hwm=310 * MB),
        # the task process, renamed by the Task SDK, and a process it started
        ProcessSample(21, 20, f"airflow worker -- {TI}", rss=4000 * MB, pss=3500 * MB, hwm=5000 * MB),
        ProcessSample(22, 21, "some helper", rss=100 * MB, pss=80 * MB, hwm=120 * MB),
        # a second task at the same time, still under its supervisor's title right after the fork
        ProcessSample(30, 10, f"airflow worker -- LocalExecutor: {OTHER}", rss=250 * MB, hwm=250 * MB),
        ProcessSample(31, 30, f"airflow worker -- LocalExecutor: {OTHER}", rss=260 * MB, pss=100 * MB, hwm=260 * MB),
    ]
    found = attribute(processes)
    assert set(found) == {KEY, OTHER.replace("-", "")}
    assert found[KEY] == {"hwm": 5120 * MB, "pss": 3580 * MB, "supervisor": 300 * MB}
    assert found[OTHER.replace("-", "")]["hwm"] == 260 * MB


def test_the_process_table_gives_each_process_its_parent_and_title():
    """Read from /proc as the sampler reads it: a child of this process, its command line as its title (a command
    name holding spaces and parentheses does not shift the parent)."""
    import os
    import subprocess
    import sys

    code = "import time; open('/proc/self/comm', 'w').write('a) (b c'); print('ready', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code, "airflow worker -- x"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        table = {p.pid: p for p in process_table()}
        assert table[child.pid].ppid == os.getpid()
        assert table[child.pid].title == f"{sys.executable} -c {code} airflow worker -- x"
        assert table[os.getpid()].ppid == os.getppid()
    finally:
        child.kill()
        child.wait()


def test_the_sampler_keeps_each_tasks_peak_and_the_peak_of_all_at_once():
    sampler = TaskSampler()
    sampler.add({KEY: {"hwm": 1000 * MB, "pss": 800 * MB, "supervisor": 100 * MB},
                 "b": {"hwm": 10 * MB, "pss": 400 * MB, "supervisor": 0}})
    sampler.add({KEY: {"hwm": 3000 * MB, "pss": 500 * MB, "supervisor": 90 * MB}})
    memory = sampler.tasks[KEY]
    assert (memory.peak_mb, memory.peak_pss_mb, memory.supervisor_mb, memory.samples) == (3000, 800, 100, 2)
    assert sampler.concurrent_peak_mb == 1200  # both tasks in the first sample


def test_the_sampler_reads_pss_only_every_pss_interval(monkeypatch):
    """PSS is a costly read (the page tables): on a clock that moves 1 s per sample, with PSS every 5 s, one sample
    in five reads it, the first one included."""
    import itertools
    import time
    import types

    from benchmarks import dag_harness

    clock = itertools.count()
    monkeypatch.setattr(dag_harness, "time", types.SimpleNamespace(monotonic=lambda: float(next(clock)),
                                                                   thread_time=time.thread_time))
    calls = []
    monkeypatch.setattr(dag_harness, "_airflow_processes", lambda pss=True: calls.append(pss) or [])
    with TaskSampler(interval=0.001, pss_interval=5.0) as sampler:
        deadline = time.monotonic() + 30
        while len(calls) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert calls[:20] == [True, False, False, False, False] * 4
    assert sampler.cpu_seconds > 0


def test_rows_come_from_what_a_task_returned():
    assert rows_of(json.dumps({"rows": 12, "path": "/x"})) == 12
    assert rows_of(json.dumps({"scores.campaign_daily": 3, "scores.campaign_recommendations": 4})) == 7
    assert rows_of(json.dumps(json.dumps({"rows": 5}))) == 5
    assert rows_of(json.dumps({"path": "/x"})) is None
    assert rows_of(json.dumps(["a"])) is None
    assert rows_of(None) is None


def test_task_instances_are_read_from_the_latest_run(tmp_path):
    database = tmp_path / "airflow.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE dag_run (id INTEGER, dag_id TEXT, run_id TEXT)")
        conn.execute("CREATE TABLE task_instance (id TEXT, dag_id TEXT, run_id TEXT, task_id TEXT, map_index INTEGER, "
                     "state TEXT, start_date TEXT, end_date TEXT, duration REAL, try_number INTEGER)")
        conn.execute("CREATE TABLE xcom (dag_id TEXT, run_id TEXT, task_id TEXT, map_index INTEGER, key TEXT, "
                     "value TEXT)")
        conn.executemany("INSERT INTO dag_run VALUES (?, 'revopt_nightly', ?)", [(1, "old"), (2, "new")])
        conn.executemany("INSERT INTO task_instance VALUES (?, 'revopt_nightly', ?, ?, -1, ?, ?, ?, ?, 1)", [
            (KEY, "old", "publish", "failed", "2026-01-01 00:00:00", "2026-01-01 00:00:09", 9.0),
            (KEY, "new", "publish", "success", "2026-01-02 00:00:05", "2026-01-02 00:00:07", 2.0),
            ("ab" * 16, "new", "extract", "success", "2026-01-02 00:00:00", "2026-01-02 00:00:04", 4.0),
        ])
        conn.execute("INSERT INTO xcom VALUES ('revopt_nightly', 'new', 'publish', -1, 'return_value', ?)",
                     (json.dumps({"scores.customer_scores": 42}),))
    instances = read_task_instances(database, "revopt_nightly")
    assert [(ti["task_id"], ti["state"], ti["duration"], ti["rows"]) for ti in instances] == [
        ("extract", "success", 4.0, None), ("publish", "success", 2.0, 42)]


def _run(label: str, dag: str, seconds: float, peaks: dict[str, int], ok: bool = True) -> dict:
    tasks = [{"task": name, "peak_mb": peak} for name, peak in peaks.items()]
    top = max(tasks, key=lambda t: t["peak_mb"])
    return {"dag_id": dag, "ok": ok, "wall_seconds": seconds, "tasks": tasks, "max_task_peak_mb": top["peak_mb"],
            "max_task": top["task"]}


def test_the_1m_targets_are_judged_per_dag_and_per_task():
    report = {
        "stores": {"S=1": {"customers": 1_000_000}, "S=0.1": {"customers": 100_000}},
        "runs": {
            "training S=1": _run("training S=1", "revopt_training", 1700, {"extract": 3000, "train_clv": 7000}),
            "nightly S=1 workers=1": _run("n", "revopt_nightly", 610, {"extract": 9000, "score": 4000}),
            "nightly S=0.1 workers=1": _run("n", "revopt_nightly", 9999, {"extract": 99999}),
        },
        "ratios": {"ten_x": {"time_ratio": 10.5}},
    }
    targets = dag_targets(report)
    assert len(targets) == 3
    assert "training S=1 at 1,000,000 customers" in targets[0] and "1800 s: met" in targets[0]
    assert "8192 MB per task: met" in targets[0]
    assert "600 s: MISSED" in targets[1] and "MISSED by extract" in targets[1]
    assert "10.5x" in targets[2] and "met" in targets[2]
    small = dag_targets({"stores": report["stores"], "runs": {"nightly S=0.1 workers=1": report["runs"]["nightly S=0.1 workers=1"]},
                         "ratios": {}})
    assert small == ["The 1M-customer targets are checked only when a run's store has 1,000,000 customers or more."]


def test_the_workers_ratio_puts_fewer_workers_first_whatever_the_order_asked():
    runs = {1: {"tasks_seconds": 300.0, "ok": True}, 2: {"tasks_seconds": 200.0, "ok": False}}
    assert _workers_ratio(2, 1, runs) == {"workers": [1, 2], "seconds": [300.0, 200.0], "speedup": 1.5,
                                          "ok": [True, False]}


def test_the_markdown_has_a_row_per_task_and_a_whole_dag_line():
    task = {"task": "score", "state": "success", "seconds": 12.5, "rows": 10_000, "peak_mb": 2048, "peak_pss_mb": 1900,
            "samples": 40}
    never_ran = {"task": "publish", "state": "upstream_failed", "seconds": None, "rows": None, "peak_mb": 0,
                 "peak_pss_mb": 0, "samples": 0}
    # shorter than PSS_SECONDS: its high-water mark sampled, its PSS never read
    short = {"task": "validate", "state": "success", "seconds": 1.5, "rows": None, "peak_mb": 250, "peak_pss_mb": 0,
             "samples": 5}
    run = {"dag_id": "revopt_nightly", "parallelism": 2, "ok": False, "tasks_seconds": 30.0, "wall_seconds": 50.0,
           "max_task_peak_mb": 2048, "max_task": "score", "concurrent_peak_pss_mb": 2500, "postgres_peak_mb": 100,
           "sampler_cpu_seconds": 3.25, "tasks": [task, never_ran, short]}
    report = {"scale": 0.01, "date": "2026-12-05", "command": "python benchmarks/scale.py --dags nightly", "days": 410,
              "training_conf": {"n_trials": 1}, "interrupted": True,
              "stores": {"S=0.01": {"customers": 10_000, "events": 1, "orders": 2, "order_lines": 3}},
              "runs": {"nightly S=0.01 workers=2": run},
              "ratios": {"workers": [{"workers": [1, 2], "seconds": [40.0, 30.0], "speedup": 1.33, "ok": [True, False]}]},
              "targets": ["t"]}
    markdown = dags_markdown(report)
    assert "| nightly S=0.01 workers=2 | score | success | 12.5 | 2,048 | 1,900 | 10,000 |" in markdown
    assert "| nightly S=0.01 workers=2 | publish | upstream_failed | - | - | - | - |" in markdown
    assert "| nightly S=0.01 workers=2 | validate | success | 1.5 | 250 | - | - |" in markdown
    assert "PostgreSQL 100 MB; the sampler's CPU 3.2 s |" in markdown
    assert "FAILED | **30.0** (50.0 with Airflow start) | **2,048** (max task: score)" in markdown
    assert "**1.33x** as fast (a run FAILED" in markdown and "**Interrupted**" in markdown


def test_results_are_written_as_they_come_and_the_partial_files_go_at_the_end(tmp_path):
    import argparse
    import time

    from benchmarks.scale import _write_dags_report

    args = argparse.Namespace(results_dir=tmp_path, scale=0.01)
    report = {"scale": 0.01, "date": "2026-12-05", "command": "c", "days": 410, "training_conf": {}, "stores": {},
              "runs": {}, "ratios": {}}
    _write_dags_report(args, report, time.perf_counter(), final=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scale-dags-0.01-partial.json", "scale-dags-0.01-partial.md"]
    _write_dags_report(args, report, time.perf_counter(), final=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scale-dags-0.01.json", "scale-dags-0.01.md"]
    assert json.loads((tmp_path / "scale-dags-0.01.json").read_text())["targets"]
