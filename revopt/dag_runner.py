"""Run one DAG for a run date exactly as ``airflow dags test`` does, then report every task's state.

``revopt run`` starts this as a subprocess in the Airflow environment (:mod:`revopt.airflow_env`):
``python -m revopt.dag_runner DAG_ID DATE --report FILE [--conf JSON]``. It runs Airflow's own
``dags test`` command in this process, then reads the run's task instances from Airflow's metadata
database and writes them to ``FILE`` as JSON: the run's state and, per task, its state and (for a
skipped task) the reason it gave. The CLI judges the run from that report, not from log text: a run
whose tasks did not all run (none at all for a date Airflow would not schedule, or tasks left
without a final state) is a failure even when Airflow calls the run successful.

Like ``dags/_support.py``, this module imports Airflow; business code never imports it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

#: XCom key under which a skipped task leaves its reason (dags/_support.py: skip_if_skipped).
SKIP_REASON_KEY = "revopt_skip_reason"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m revopt.dag_runner", description=__doc__)
    parser.add_argument("dag_id")
    parser.add_argument("run_date", help="logical date (YYYY-MM-DD)")
    parser.add_argument("--report", type=Path, required=True, help="where to write the JSON report")
    parser.add_argument("--conf", default=None, help="DAG run conf (JSON)")
    args = parser.parse_args(argv)

    from airflow.__main__ import main as airflow_main

    command = ["dags", "test", args.dag_id, args.run_date] + (["--conf", args.conf] if args.conf else [])
    status = 0
    try:
        _run_airflow(airflow_main, command)
    except SystemExit as exit_:  # dags test exits non-zero when the run failed
        status = exit_.code if isinstance(exit_.code, int) else 1
    args.report.write_text(json.dumps(run_report(args.dag_id, args.run_date), indent=1, default=str))
    return status


def _run_airflow(airflow_main, command: list[str]) -> None:
    import sys

    argv, sys.argv = sys.argv, ["airflow", *command]
    try:
        airflow_main()
    finally:
        sys.argv = argv


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
        tasks = {
            ti.task_id: {"state": None if ti.state is None else str(ti.state),
                         **({"reason": _xcom_text(reasons[ti.task_id])} if ti.task_id in reasons else {})}
            for ti in sorted(instances, key=lambda ti: (ti.start_date is None, ti.start_date or 0, ti.task_id))
        }
        return {"dag_id": dag_id, "run_date": run_date, "run_id": run.run_id, "state": str(run.state), "tasks": tasks}


def _xcom_text(value) -> str:
    try:
        decoded = json.loads(value) if isinstance(value, (str, bytes)) else value
    except ValueError:
        decoded = value
    return str(decoded)


if __name__ == "__main__":
    raise SystemExit(main())
