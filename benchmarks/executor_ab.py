"""The LocalExecutor against ``revopt.airflow_executor.PreloadingLocalExecutor``, side by side (docs/scale.md,
"Session 30").

``dag``: one DAG through the scale harness (``benchmarks/dag_harness.py``, every task in its own process) on a stack
kept by ``benchmarks/scale.py --keep-home``, with each executor in turn, ``--pairs`` times (plain then preloading);
the task-seconds, the wall and the largest task peak of each run. ``step``: one nightly step
(``benchmarks/night_step.py``) as a fresh process and as a child forked from a process that imported ``ml.pipeline``
first (what a preloading worker's task process is), alternating; each run's own wall, imports excluded.

    .venv/bin/python benchmarks/executor_ab.py dag --home HOME [--dag revopt_nightly --date 2025-02-14 --pairs 2]
    .venv/bin/python benchmarks/executor_ab.py step --home HOME [--step recommend_products --pairs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXECUTORS = {"plain": "LocalExecutor", "preloading": "revopt.airflow_executor.PreloadingLocalExecutor"}

_FORKED = """
import os, runpy, sys
import ml.pipeline
pid = os.fork()
if pid == 0:
    sys.argv = sys.argv[1:]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        sys.stdout.flush()
        os._exit(0)
os.waitpid(pid, 0)
"""


def dag_ab(args: argparse.Namespace) -> list[dict]:
    from benchmarks.dag_harness import AirflowRun
    from benchmarks.scale import _PostgresSampler, _settings
    from revopt.platform.stack import stop_stack

    settings = _settings(args.home)
    rows = []
    try:
        for pair in range(args.pairs):
            for label, executor in EXECUTORS.items():
                os.environ["REVOPT_BENCH_EXECUTOR"] = executor  # read by AirflowRun.environ
                with AirflowRun(settings, Path(args.log_dir), _PostgresSampler) as airflow:
                    run = airflow.run(args.dag, args.date, json.loads(args.conf), 2, f"{label}-{pair}")
                rows.append({"executor": label, "ok": run["ok"], "tasks_seconds": round(run["tasks_seconds"], 1),
                             "wall_seconds": round(run["wall_seconds"], 1),
                             "max_task_peak_mb": run["max_task_peak_mb"]})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        stop_stack(settings)
    return rows


def step_ab(args: argparse.Namespace) -> list[dict]:
    step = [str(ROOT / "benchmarks" / "night_step.py"), "--home", args.home, "--step", args.step,
            "--partitions", str(args.partitions)]
    rows = []
    for pair in range(args.pairs):
        for kind in ("fresh", "forked") if pair % 2 == 0 else ("forked", "fresh"):
            command = [sys.executable, *step] if kind == "fresh" else [sys.executable, "-c", _FORKED, *step]
            out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
            result = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
            rows.append({"process": kind, "seconds": result["seconds"], "peak_mb": result["peak_mb"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("dag", "step"))
    parser.add_argument("--home", required=True, help="the stack folder scale.py kept (--keep-home)")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--dag", default="revopt_nightly")
    parser.add_argument("--date", default="2025-02-14")
    parser.add_argument("--conf", default='{"partitions": 2}')
    parser.add_argument("--log-dir", default="executor-ab-logs")
    parser.add_argument("--step", default="recommend_products")
    parser.add_argument("--partitions", type=int, default=2)
    args = parser.parse_args()
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    rows = dag_ab(args) if args.mode == "dag" else step_ab(args)
    for kind in sorted({row.get("executor") or row.get("process") for row in rows}):
        mine = [row for row in rows if kind in (row.get("executor"), row.get("process"))]
        key = "tasks_seconds" if args.mode == "dag" else "seconds"
        print(f"{kind}: mean {sum(row[key] for row in mine) / len(mine):.1f} s over {len(mine)} run(s)")


if __name__ == "__main__":
    main()
