"""Run one DAG for a run date exactly as ``airflow dags test`` does, then report every task's state.

``revopt run`` starts this as a subprocess in the Airflow environment (:mod:`revopt.airflow_env`):
``python -m revopt.dag_runner DAG_ID DATE --report FILE [--conf JSON]``. It runs Airflow's own
``dags test`` command in this process, then reads the run's task instances from Airflow's metadata
database and writes them to ``FILE`` as JSON: the run's state and, per task, its state, duration and (for a
skipped task) the reason it gave. With ``--state PATH`` a thread polls the same states every second while
the run lasts and replaces ``PATH`` atomically with them (:class:`StatePoller`): ``revopt run`` draws its
progress from that file, from Airflow's own state rather than from its log text. The CLI judges the run from that report, not from log text: a run
whose tasks did not all run (none at all for a date Airflow would not schedule, or tasks left
without a final state) is a failure even when Airflow calls the run successful.

Like ``dags/_support.py``, this module imports Airflow; business code never imports it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: XCom key under which a skipped task leaves its reason (dags/_support.py: skip_if_skipped).
SKIP_REASON_KEY = "revopt_skip_reason"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m revopt.dag_runner", description=__doc__)
    parser.add_argument("dag_id")
    parser.add_argument("run_date", help="logical date (YYYY-MM-DD)")
    parser.add_argument("--report", type=Path, required=True, help="where to write the JSON report")
    parser.add_argument("--conf", default=None, help="DAG run conf (JSON)")
    parser.add_argument("--state", type=Path, default=None,
                        help="keep the run's live task states in this JSON file (replaced every second)")
    args = parser.parse_args(argv)

    from airflow.__main__ import main as airflow_main

    command = ["dags", "test", args.dag_id, args.run_date, *_dag_file(args.dag_id)] + (["--conf", args.conf] if args.conf else [])
    status = 0
    poller = None
    if args.state:
        try:
            poller = StatePoller(_live_reader(args.dag_id, args.run_date), args.state)
            poller.start()
        except Exception:  # noqa: BLE001 - live progress is display only: the run goes on without it
            logger.warning("no live task states for %s %s", args.dag_id, args.run_date, exc_info=True)
    try:
        _run_airflow(airflow_main, command)
    except SystemExit as exit_:  # dags test exits non-zero when the run failed
        status = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        if poller:
            poller.stop()
    note_run(args.dag_id, args.run_date)
    report = run_report(args.dag_id, args.run_date)
    args.report.write_text(json.dumps(report, indent=1, default=str))
    if args.state:
        write_atomically(args.state, report)
    return status


def _dag_file(dag_id: str) -> list[str]:
    """``--dagfile-path`` of the DAG's own file (``dags/<dag_id>.py``) when there is one: Airflow then parses and
    serialises that DAG alone instead of every DAG of the folder (~1 s of each run's start)."""
    from revopt.platform.config import DAGS_FOLDER

    path = Path(DAGS_FOLDER) / f"{dag_id}.py"
    return ["--dagfile-path", str(path)] if path.is_file() else []


def write_atomically(path: Path, state: dict) -> None:
    """Replace ``path`` with ``state`` as JSON in one step: a reader sees the old file or the new, never half."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(state, default=str))
    os.replace(partial, path)


class StatePoller:
    """A daemon thread writing ``read()`` (the run's task states) to ``path`` every ``interval`` seconds until
    stopped. A failed read (the metadata database busy, the run not created yet) is skipped: the next one counts."""

    def __init__(self, read: Callable[[], dict], path: Path, interval: float = 1.0) -> None:
        self.read, self.path, self.interval = read, path, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="revopt-state-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                write_atomically(self.path, self.read())
            except Exception:  # noqa: BLE001 - display only; the final report is read after the run
                logger.debug("polling the task states failed", exc_info=True)
            self._stop.wait(self.interval)


def _run_airflow(airflow_main, command: list[str]) -> None:
    import sys

    argv, sys.argv = sys.argv, ["airflow", *command]
    try:
        airflow_main()
    finally:
        sys.argv = argv


_LIVE_RUN = "SELECT run_id, state FROM dag_run WHERE dag_id = :dag_id AND id > :after ORDER BY id DESC LIMIT 1"
_LIVE_TASKS = ("SELECT task_id, state, duration FROM task_instance WHERE dag_id = :dag_id AND run_id = :run_id "
               "ORDER BY start_date IS NULL, start_date, task_id")
_LIVE_REASONS = "SELECT task_id, value FROM xcom WHERE dag_id = :dag_id AND run_id = :run_id AND key = :key"


def _live_reader(dag_id: str, run_date: str) -> Callable[[], dict]:
    """A function reading the task states of the run ``dags test`` is about to create (the first run of ``dag_id``
    after those already in the database), for :class:`StatePoller`'s thread.

    Plain SQL on Airflow's engine, not its ORM: an ORM query from a second thread configures SQLAlchemy's mappers,
    which import Airflow's models while ``dags test`` imports them in the main thread: the two threads then wait
    on each other's locks for ever. Everything the reader needs is imported and run once here, in the main thread.
    """
    from airflow import settings
    from sqlalchemy import text

    engine = settings.engine
    with engine.connect() as conn:
        after = conn.execute(text("SELECT coalesce(max(id), 0) FROM dag_run WHERE dag_id = :dag_id"),
                             {"dag_id": dag_id}).scalar_one()
    queries = (text(_LIVE_RUN), text(_LIVE_TASKS), text(_LIVE_REASONS))

    def read() -> dict:
        live_run, live_tasks, live_reasons = queries
        with engine.connect() as conn:
            run = conn.execute(live_run, {"dag_id": dag_id, "after": after}).first()
            if run is None:
                return {"dag_id": dag_id, "run_date": run_date, "run_id": None, "state": None, "tasks": {}}
            keys = {"dag_id": dag_id, "run_id": run.run_id}
            rows = conn.execute(live_tasks, keys).all()
            reasons = dict(conn.execute(live_reasons, {**keys, "key": SKIP_REASON_KEY}).all())
        tasks = merge_instances(((row.task_id, row.state, row.duration) for row in rows), reasons)
        return {"dag_id": dag_id, "run_date": run_date, "run_id": run.run_id, "state": run.state, "tasks": tasks}

    read()  # in the main thread: the dialect and the statements are ready before the thread starts
    return read


def run_report(dag_id: str, run_date: str) -> dict:
    """The latest run of ``dag_id`` for ``run_date``: its state and every task's state and skip reason."""
    import pendulum
    from sqlalchemy import select

    from airflow.models import DagRun, TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    logical_date = pendulum.parse(run_date, tz="UTC")
    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.logical_date == logical_date)
            .order_by(DagRun.id.desc()).limit(1)
        ).first()
        if run is None:
            return {"dag_id": dag_id, "run_date": run_date, "run_id": None, "state": None, "tasks": {}}
        instances = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
        ).all()
        reasons = dict(session.execute(
            select(XComModel.task_id, XComModel.value).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run.run_id, XComModel.key == SKIP_REASON_KEY)
        ).all())
        ordered = sorted(instances, key=lambda ti: (ti.start_date is None, ti.start_date or 0, ti.task_id))
        tasks = merge_instances(((ti.task_id, None if ti.state is None else str(ti.state), _duration(ti))
                                 for ti in ordered), reasons)
        # the run's own start_date is its logical date under `dags test`: the tasks' times tell how long it took
        starts = [ti.start_date for ti in instances if ti.start_date is not None]
        ends = [ti.end_date for ti in instances if ti.end_date is not None]
        return {"dag_id": dag_id, "run_date": run_date, "run_id": run.run_id, "state": str(run.state),
                "started": min(starts, default=None), "ended": max(ends, default=None), "tasks": tasks}


#: a mapped task's state in the report: the most telling of its instances' (one failed instance fails the task),
#: most telling first
_STATE_RANK = ("failed", "upstream_failed", "up_for_retry", "up_for_reschedule", "restarting", "running", "deferred",
               "queued", "scheduled", None, "removed", "success", "skipped")


def merge_instances(rows: Iterable[tuple[str, str | None, float | None]],
                    reasons: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """Each task's ``state`` and ``duration`` from its task instances ``(task_id, state, duration)``, in the order
    first seen, and its skip ``reason`` from ``reasons`` (the XCom values by task id) when it left one. A mapped task
    has one instance per map index (the customer-hash partitions): its state is the most telling of theirs
    (:data:`_STATE_RANK`: a failed partition fails the task, whatever the others did) and its duration their sum
    (None until one has started)."""
    tasks: dict[str, dict] = {}
    for task_id, state, duration in rows:
        if task_id not in tasks:
            tasks[task_id] = {"state": state, "duration": duration}
            continue
        known = tasks[task_id]
        if _rank(state) < _rank(known["state"]):
            known["state"] = state
        if duration is not None:
            known["duration"] = duration + (known["duration"] or 0.0)
    for task_id, task in tasks.items():
        if reasons and task_id in reasons:
            task["reason"] = _xcom_text(reasons[task_id])
    return tasks


def _rank(state: str | None) -> int:
    return _STATE_RANK.index(state if state in _STATE_RANK else None)


def _duration(ti) -> float | None:
    """Seconds the task ran (so far, for a running task); None before it started."""
    if ti.duration is not None:
        return float(ti.duration)
    if ti.start_date is None:
        return None
    import pendulum

    return (pendulum.now("UTC") - ti.start_date).total_seconds()


def note_run(dag_id: str, run_date: str) -> str | None:
    """Copy the note the run's ``summarise_run`` task composed onto the run (the UI's Details tab): ``dags test``
    has no API server the task could set it through (revopt.platform.run_notes). The note, or None."""
    import pendulum
    from sqlalchemy import select

    from airflow.models import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from revopt.platform.run_notes import NOTE_LIMIT, SUMMARY_TASK

    try:
        with create_session() as session:
            run = session.scalars(select(DagRun).where(
                DagRun.dag_id == dag_id, DagRun.logical_date == pendulum.parse(run_date, tz="UTC"))
                .order_by(DagRun.id.desc()).limit(1)).first()
            value = None if run is None else session.scalar(select(XComModel.value).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run.run_id, XComModel.task_id == SUMMARY_TASK,
                XComModel.key == "return_value"))
            if value is None:
                return None
            run.note = note = _xcom_text(value)[:NOTE_LIMIT]
            return note
    except Exception:  # noqa: BLE001 - the note is a courtesy: the run's report must still be written
        logger.warning("could not set the run's note", exc_info=True)
        return None


def _xcom_text(value) -> str:
    try:
        decoded = json.loads(value) if isinstance(value, (str, bytes)) else value
    except ValueError:
        decoded = value
    return str(decoded)


if __name__ == "__main__":
    raise SystemExit(main())
