"""Run a whole revopt DAG through Airflow with every task in its own process, and measure each task.

``revopt run`` uses ``airflow dags test``, which runs every task inside its own process: one peak memory
for the whole DAG. Here the same command runs with ``--use-executor`` and the LocalExecutor
(``airflow/sdk/definitions/dag.py``, ``Dag.test(use_executor=True)``): each task instance becomes an
``ExecuteTask`` workload; a LocalExecutor worker process picks it up and supervises it
(``airflow worker -- LocalExecutor: <ti id>``), and the supervisor forks the task process
(``airflow worker -- <ti id>``, Task SDK ``task_runner``), which talks to Airflow's execution API over HTTP:
so this module starts ``airflow api-server --apps execution`` on a free loopback port for the run.
``AIRFLOW__CORE__PARALLELISM`` is the number of worker processes, hence of tasks at once (``max_active_tasks``
is the scheduler's and ``dags test`` does not apply it). The executor is the compose stack's default, the
LocalExecutor; ``REVOPT_BENCH_EXECUTOR`` names another (e.g. ``revopt.airflow_executor.PreloadingLocalExecutor``,
whose task processes inherit ``ml.pipeline`` from their worker: a task's peak memory then counts what it inherits).

:class:`TaskSampler` walks the process table (``/proc``) every 0.25 s and attributes each process to its task
instance by that process title: per task, the peak of the task process tree's high-water mark (``VmHWM``,
the kernel's peak RSS of the process, which a sample cannot miss except in its last 0.25 s) and, every 5 s, of its
summed PSS (shared pages counted once), plus the supervisor's RSS apart. PSS is read from ``smaps_rollup``, which
walks the process's page tables: ~0.1 s of CPU per sample of two 4 GB task processes, so sampled every 0.25 s the
sampler took 37 % of one of the 2 cores from the tasks it measured (docs/scale.md, "Session 27"). chDB runs in the
task process, so its memory is counted. Walls come from Airflow's own ``task_instance`` rows (start / end /
duration), and rows from the tasks' XCom return values where they say (``{"rows": n}`` or publish's
``{"scores.table": n}``).

Benchmark code: it runs Airflow's CLI as subprocesses and never imports the product's DAGs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_SECONDS = 0.25
#: PSS (``smaps_rollup``, the costly read: it walks the page tables) every this many seconds; the high-water mark,
#: the reported peak, every :data:`SAMPLE_SECONDS`.
PSS_SECONDS = 5.0
#: The Task SDK's title of a task process (task_runner.py: ``setproctitle(f"airflow worker -- {msg.ti.id}")``) and
#: the LocalExecutor's of its supervisor (local_executor.py: ``airflow worker -- LocalExecutor: <ti id>``).
_TITLE = re.compile(r"airflow worker -- (?:LocalExecutor(?: \[[^\]]*\])?: )?([0-9a-fA-F-]{32,36})\b")


def ti_key(uuid: str) -> str:
    """A task instance id as Airflow's SQLite metadata stores it (32 hex digits) from any UUID spelling."""
    return uuid.replace("-", "").lower()


def title_ti(title: str) -> str | None:
    """The task instance id a process title names (task process or its LocalExecutor supervisor), else None."""
    found = _TITLE.search(title)
    return ti_key(found.group(1)) if found else None


@dataclass
class ProcessSample:
    """One process as the sampler saw it: its parent, title and memory (bytes)."""

    pid: int
    ppid: int
    title: str
    rss: int = 0
    pss: int = 0
    hwm: int = 0


@dataclass
class TaskMemory:
    """Peaks of one task instance's processes (MB)."""

    peak_mb: float = 0.0          # task process tree: max over samples of the summed VmHWM
    peak_pss_mb: float = 0.0      # task process tree: max summed PSS
    supervisor_mb: float = 0.0    # its supervisor (LocalExecutor worker) RSS
    samples: int = 0


def attribute(processes: Iterable[ProcessSample]) -> dict[str, dict[str, float]]:
    """Per task instance id in one sample: the task process tree's summed HWM / PSS and the supervisor's RSS.

    The supervisor is the process named for the instance whose parent is not; everything below it (the task
    process, which starts under the supervisor's title until the Task SDK renames it, and any process the task
    starts) is the task's tree."""
    by_pid = {p.pid: p for p in processes}
    children: dict[int, list[int]] = {}
    for p in by_pid.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found: dict[str, dict[str, float]] = {}
    for p in by_pid.values():
        key = title_ti(p.title)
        parent = by_pid.get(p.ppid)
        if key is None or (parent is not None and title_ti(parent.title) == key):
            continue  # not named for a task, or not the root of its task's processes
        tree, stack = [], list(children.get(p.pid, ()))
        while stack:
            pid = stack.pop()
            tree.append(by_pid[pid])
            stack.extend(children.get(pid, ()))
        found[key] = {"hwm": sum(c.hwm for c in tree), "pss": sum(c.pss for c in tree), "supervisor": p.rss}
    return found


def _read_memory(pid: int, pss: bool = True) -> tuple[int, int, int]:
    """RSS, PSS (0 without ``pss``) and VmHWM of ``pid`` in bytes (0 where unreadable)."""
    rss = hwm = proportional = 0
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
        if pss:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        proportional = int(line.split()[1]) * 1024
                        break
    except (OSError, ValueError, IndexError):
        pass
    return rss, proportional, hwm


def process_table() -> list[ProcessSample]:
    """Every process's pid, parent and title (its command line, arguments joined by spaces), read from ``/proc``:
    psutil's ``process_iter`` of the same took ~21 ms of CPU a sample of ~90 processes, this ~7 ms, four times a
    second (docs/scale.md, "Session 28"). A process gone mid-read is left out."""
    table = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                fields = stat.read()
            with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                title = cmdline.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": the command name may hold spaces and parentheses, so split after the last ")"
        ppid = int(fields[fields.rindex(b")") + 2:].split()[1])
        table.append(ProcessSample(int(name), ppid, title.replace(b"\0", b" ").decode(errors="replace").strip()))
    return table


def _airflow_processes(pss: bool = True) -> list[ProcessSample]:
    """Every process named for a task instance and every process below one, with its memory (PSS 0 without
    ``pss``)."""
    everyone = process_table()
    children: dict[int, list[int]] = {}
    for p in everyone:
        children.setdefault(p.ppid, []).append(p.pid)
    wanted: set[int] = set()
    stack = [p.pid for p in everyone if title_ti(p.title)]
    while stack:
        pid = stack.pop()
        if pid not in wanted:
            wanted.add(pid)
            stack.extend(children.get(pid, ()))
    chosen = [p for p in everyone if p.pid in wanted]
    for p in chosen:
        p.rss, p.pss, p.hwm = _read_memory(p.pid, pss)
    return chosen


class TaskSampler:
    """A thread sampling the task processes' memory every ``interval`` seconds, their PSS every ``pss_interval``,
    until stopped; ``tasks`` maps each task instance id (32 hex digits) to its :class:`TaskMemory`,
    ``concurrent_peak_mb`` is the peak of all task trees' PSS together (what parallel workers add up to), and
    ``cpu_seconds`` the sampler's own CPU time (what it took from the tasks it measures)."""

    def __init__(self, interval: float = SAMPLE_SECONDS, pss_interval: float = PSS_SECONDS) -> None:
        self.interval = interval
        self.pss_interval = pss_interval
        self.tasks: dict[str, TaskMemory] = {}
        self.concurrent_peak_mb = 0.0
        self.cpu_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="revopt-task-sampler", daemon=True)

    def __enter__(self) -> TaskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, sample: Mapping[str, Mapping[str, float]]) -> None:
        """One sample's memory per task (PSS 0 in a sample that did not read it: no peak)."""
        total = 0.0
        for key, memory in sample.items():
            seen = self.tasks.setdefault(key, TaskMemory())
            seen.peak_mb = max(seen.peak_mb, memory["hwm"] / 2**20)
            seen.peak_pss_mb = max(seen.peak_pss_mb, memory["pss"] / 2**20)
            seen.supervisor_mb = max(seen.supervisor_mb, memory["supervisor"] / 2**20)
            seen.samples += 1
            total += memory["pss"] / 2**20
        self.concurrent_peak_mb = max(self.concurrent_peak_mb, total)

    def _loop(self) -> None:
        last_pss = float("-inf")
        while not self._stop.is_set():
            began, now = time.thread_time(), time.monotonic()
            with_pss = now - last_pss >= self.pss_interval
            if with_pss:
                last_pss = now
            try:
                self.add(attribute(_airflow_processes(with_pss)))
            except Exception:  # noqa: BLE001 - a process gone mid-read; the next sample counts
                pass
            self.cpu_seconds += time.thread_time() - began
            self._stop.wait(self.interval)


# --- Airflow: the execution API server and the run ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class AirflowRun:
    """Runs DAGs with ``airflow dags test --use-executor`` (LocalExecutor, ``parallelism`` task processes at once)
    against an execution API server it starts, in ``settings``' Airflow environment."""

    settings: Any
    log_dir: Path
    #: ``postgres_sampler(pgdata)``: a context manager whose ``peak_mb`` is the PostgreSQL server's peak meanwhile
    postgres_sampler: Any
    port: int = field(default_factory=free_port)
    _server: subprocess.Popen | None = None

    def environ(self, parallelism: int) -> dict[str, str]:
        from revopt.airflow_env import airflow_environ

        env = airflow_environ(self.settings)
        env.update({
            "AIRFLOW__CORE__EXECUTOR": os.environ.get("REVOPT_BENCH_EXECUTOR", "LocalExecutor"),
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            # the executor signs each workload's token, the server checks it: one secret for both
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret,
            # ``dags test`` queues every ready task at once, each with a workload token made then and valid for
            # [scheduler] task_queued_timeout (workloads/base.py): a task waiting for a free worker longer than the
            # default 600 s would be refused ("Invalid auth token"); the task's own token lasts jwt_expiration_time
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "86400",
            "AIRFLOW__EXECUTION_API__JWT_EXPIRATION_TIME": "86400",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        })
        return env

    def __post_init__(self) -> None:
        self._secret = secrets.token_urlsafe(64)  # >= 64 bytes: PyJWT warns below that for HS512

    def __enter__(self) -> AirflowRun:
        from revopt.airflow_env import airflow_executable, ensure_airflow_db

        self.log_dir.mkdir(parents=True, exist_ok=True)
        ensure_airflow_db(self.settings)
        log = (self.log_dir / "api-server.log").open("w")
        self._server = subprocess.Popen(
            [airflow_executable(), "api-server", "--apps", "execution", "--host", "127.0.0.1", "--port",
             str(self.port), "--workers", "1"],
            env=self.environ(1), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise RuntimeError(f"airflow api-server exited ({self._server.returncode}); see {log.name}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/execution/health", timeout=2)
                return self
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"airflow api-server did not answer on port {self.port} within 180 s")

    def __exit__(self, *exc: object) -> None:
        if self._server is not None and self._server.poll() is None:
            os.killpg(self._server.pid, 15)
            try:
                self._server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self._server.pid, 9)

    def run(self, dag_id: str, run_date: str, conf: Mapping[str, object], parallelism: int,
            label: str) -> dict[str, Any]:
        """Run ``dag_id`` for ``run_date``; its tasks' states, walls, rows and memory peaks."""
        from revopt.airflow_env import airflow_executable

        log_path = self.log_dir / f"{label}.log"
        command = [airflow_executable(), "dags", "test", "--use-executor", dag_id, run_date,
                   "--conf", json.dumps(dict(conf))]
        began = time.perf_counter()
        with log_path.open("w") as log, TaskSampler() as sampler, self.postgres_sampler(self.settings.pgdata) as postgres:
            # its own process group: the LocalExecutor's workers are left behind when ``dags test`` dies of an error
            process = subprocess.Popen(command, env=self.environ(parallelism), stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
            interrupted = False
            try:
                status = process.wait()
            except KeyboardInterrupt:  # Ctrl-C: report what ran so far (the caller stops after this run)
                status, interrupted = -2, True
            finally:
                _kill_group(process.pid)
        wall = time.perf_counter() - began
        instances = read_task_instances(self.settings.airflow_home / "airflow.db", dag_id)
        return {**dag_report(dag_id, instances, sampler, wall=wall, status=status, parallelism=parallelism,
                             postgres_peak_mb=postgres.peak_mb, log=str(log_path), conf=dict(conf)),
                "interrupted": interrupted}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, 15)
    except ProcessLookupError:
        pass


# --- reading Airflow's metadata and reporting ----------------------------------------------------------------------

_RUN = "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1"
_TIS = ("SELECT id, task_id, map_index, state, start_date, end_date, duration, try_number FROM task_instance "
        "WHERE dag_id = ? AND run_id = ?")
_XCOMS = "SELECT task_id, map_index, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'"


def read_task_instances(database: Path, dag_id: str) -> list[dict[str, Any]]:
    """The latest run of ``dag_id``'s task instances from Airflow's SQLite metadata, with their XCom return value."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as conn:
        row = conn.execute(_RUN, (dag_id,)).fetchone()
        if row is None:
            return []
        run_id = row[0]
        returns = {(task, index): value for task, index, value in conn.execute(_XCOMS, (dag_id, run_id))}
        columns = ("id", "task_id", "map_index", "state", "start_date", "end_date", "duration", "try_number")
        instances = [dict(zip(columns, values)) for values in conn.execute(_TIS, (dag_id, run_id))]
    for ti in instances:
        ti["id"] = ti_key(str(ti["id"]))
        ti["rows"] = rows_of(returns.get((ti["task_id"], ti["map_index"])))
    return sorted(instances, key=lambda ti: (ti["start_date"] is None, ti["start_date"] or "", ti["task_id"]))


def rows_of(value: Any) -> int | None:
    """Rows a task says it produced in its return value: ``{"rows": n}``, or the sum of publish's
    ``{"scores.<table>": n}``; None when it does not say."""
    if isinstance(value, (bytes, str)):
        try:
            value = json.loads(value)
        except ValueError:
            return None
        if isinstance(value, str):  # stored JSON-encoded twice
            return rows_of(value)
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("rows"), int):
        return value["rows"]
    published = [count for key, count in value.items() if key.startswith("scores.") and isinstance(count, int)]
    return sum(published) if published else None


def _seconds(start: str | None, end: str | None) -> float | None:
    import pandas as pd

    if not start or not end:
        return None
    return (pd.Timestamp(end) - pd.Timestamp(start)).total_seconds()


def dag_report(dag_id: str, instances: list[dict[str, Any]], sampler: TaskSampler, *, wall: float, status: int,
               parallelism: int, postgres_peak_mb: float, log: str, conf: dict) -> dict[str, Any]:
    tasks = []
    for ti in instances:
        memory = sampler.tasks.get(ti["id"], TaskMemory())
        name = ti["task_id"] if ti["map_index"] in (-1, None) else f"{ti['task_id']}[{ti['map_index']}]"
        tasks.append({
            "task": name, "state": ti["state"], "try_number": ti["try_number"],
            "seconds": ti["duration"] if ti["duration"] is not None else _seconds(ti["start_date"], ti["end_date"]),
            "start": ti["start_date"], "end": ti["end_date"], "rows": ti["rows"],
            "peak_mb": round(memory.peak_mb), "peak_pss_mb": round(memory.peak_pss_mb),
            "supervisor_mb": round(memory.supervisor_mb), "samples": memory.samples,
        })
    starts = [ti["start_date"] for ti in instances if ti["start_date"]]
    ends = [ti["end_date"] for ti in instances if ti["end_date"]]
    states = [t["state"] for t in tasks]
    return {
        "dag_id": dag_id, "parallelism": parallelism, "conf": conf, "exit_status": status,
        "ok": status == 0 and bool(tasks) and all(s in ("success", "skipped") for s in states),
        "failed": [t["task"] for t in tasks if t["state"] not in ("success", "skipped")],
        "wall_seconds": round(wall, 1),
        "tasks_seconds": round(_seconds(min(starts), max(ends)), 1) if starts and ends else None,
        "max_task_peak_mb": max((t["peak_mb"] for t in tasks), default=0),
        "max_task": max(tasks, key=lambda t: t["peak_mb"])["task"] if tasks else None,
        "concurrent_peak_pss_mb": round(sampler.concurrent_peak_mb),
        "sampler_cpu_seconds": round(sampler.cpu_seconds, 1),
        "postgres_peak_mb": round(postgres_peak_mb), "log": log, "tasks": tasks,
    }


def _sampler_cpu(run: Mapping[str, Any]) -> str:
    """The whole-DAG line's note of the memory sampler's own CPU time (reports before it was measured have none)."""
    seconds = run.get("sampler_cpu_seconds")
    return "" if seconds is None else f"; the sampler's CPU {seconds:,.1f} s"


def task_table(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown rows: one per task of each run, then the run's whole-DAG line."""
    lines = ["| run | task | state | wall s | peak MB | PSS MB | rows |", "|---|---|---|---|---|---|---|"]
    for label, run in runs.items():
        for t in run["tasks"]:
            seconds = "-" if t["seconds"] is None else f"{t['seconds']:.1f}"
            rows = "-" if t["rows"] is None else f"{t['rows']:,}"
            peak = f"{t['peak_mb']:,}" if t["samples"] else "-"
            # PSS is read every PSS_SECONDS: a shorter task has none
            pss = f"{t['peak_pss_mb']:,}" if t["peak_pss_mb"] else "-"
            lines.append(f"| {label} | {t['task']} | {t['state']} | {seconds} | {peak} | {pss} | {rows} |")
        lines.append(f"| {label} | **whole DAG** ({len(run['tasks'])} tasks, parallelism {run['parallelism']}) | "
                     f"{'ok' if run['ok'] else 'FAILED'} | **{run['tasks_seconds']}** ({run['wall_seconds']} with Airflow "
                     f"start) | **{run['max_task_peak_mb']:,}** (max task: {run['max_task']}) | "
                     f"{run['concurrent_peak_pss_mb']:,} all tasks at once | PostgreSQL {run['postgres_peak_mb']:,} MB"
                     f"{_sampler_cpu(run)} |")
    return lines
