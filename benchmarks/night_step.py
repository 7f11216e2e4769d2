"""Wall time and peak memory of one nightly step, run as its Airflow task runs it, on a stack kept by
``benchmarks/scale.py --dags nightly --keep-home DIR`` (docs/scale.md, "Session 17").

Each step runs in this process, alone, on the kept night's run folder (its extract, features, segments and
attribution outputs, the published tables and the registered champions), and the step's output files are copied
to ``--out`` so two commits can be compared row by row: run the same command at the commit before and after a
change (``git stash`` / ``git checkout``), each in a fresh process, and compare the files.

    PYTHONPATH=. .venv/bin/python benchmarks/night_step.py --home DIR --step extract [--out FOLDER]

Steps: ``extract`` (every nightly dataset), ``validate`` (the gate on that extract), ``attribute``,
``campaign_analytics``, ``next_best_action``, ``score`` and ``recommend_products`` (the first of ``--partitions``
customer-hash slices, as the mapped task; its ``prepare_scores`` / ``prepare_recommendations`` empties tonight's
staging). ``--profile FILE`` writes a cProfile.
Peak memory is this process's ``ru_maxrss`` (chDB in process, as in the task). ``extract`` and ``validate``
rewrite the run folder's extract and validation results (the same rows: the extract is of the same store and
date).
"""
from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import glob
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scale import START, _resources  # noqa: E402

STEPS = ("extract", "validate", "attribute", "campaign_analytics", "next_best_action", "score", "recommend_products")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="the stack folder scale.py kept (--keep-home)")
    parser.add_argument("--step", required=True, choices=STEPS)
    parser.add_argument("--run-date", type=dt.date.fromisoformat, default=START + dt.timedelta(days=410),
                        help="the kept night's run date (scale.py's: 410 days after 2024-01-01)")
    parser.add_argument("--out", type=Path, default=None, help="copy the step's output files here")
    parser.add_argument("--partitions", type=int, default=2, help="score: the slices (the run's partitions param)")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of the step here")
    args = parser.parse_args()

    from ml import pipeline
    from ml.params import NIGHTLY, RunParams

    resources, run_date, params = _resources(args.home), args.run_date, RunParams(partitions=args.partitions)
    folder = Path(args.home) / "runs" / run_date.isoformat()
    paths = {name: str(folder / "extract" / f"{name}.parquet") for name in pipeline.DAG_DATASETS[NIGHTLY]
             if (folder / "extract" / f"{name}.parquet").exists()}
    attributed = {Path(p).stem: p for p in glob.glob(str(folder / "scores" / "*.parquet"))}
    steps = {
        "extract": lambda: pipeline.extract(resources, run_date, NIGHTLY, params),
        "validate": lambda: pipeline.validate_extracts(resources, run_date, paths, params.extract_days(NIGHTLY)),
        "attribute": lambda: pipeline.attribute(resources, run_date, paths, params),
        "campaign_analytics": lambda: pipeline.campaign_analytics(resources, run_date, paths, attributed, params),
        "next_best_action": lambda: pipeline.next_best_action(
            resources, run_date, paths, str(folder / "features" / "customer_features.parquet"),
            str(folder / "scores" / "customer_segments.parquet"), params),
        "score": lambda: _score_first_slice(resources, run_date, paths,
                                            str(folder / "features" / "customer_features.parquet"), params),
        "recommend_products": lambda: _recommend_first_slice(resources, run_date, paths, params),
    }
    profile = cProfile.Profile() if args.profile else None
    began = time.perf_counter()
    output = profile.runcall(steps[args.step]) if profile else steps[args.step]()
    seconds = time.perf_counter() - began
    if profile:
        profile.dump_stats(args.profile)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    files = [value for value in (output.values() if isinstance(output, dict) else ())
             if isinstance(value, str) and value.endswith(".parquet") and os.path.exists(value)]
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copy(path, args.out / Path(path).name)
    print(json.dumps({"step": args.step, "run_date": run_date.isoformat(), "seconds": round(seconds, 1),
                      "peak_mb": peak_mb, "files": [Path(p).name for p in files]}))


def _score_first_slice(resources, run_date, paths, features_path, params):
    """The first mapped ``score`` task: champions pinned by ``prepare_scores``, then slice 1 of ``partitions``."""
    from ml.partitioned import prepare_scores
    from ml.partitioning import Partition
    from ml.pipeline import score_customers

    first = prepare_scores(resources, run_date, paths, params)[0]
    return score_customers(resources, run_date, features_path, {}, params, partition=Partition.from_dict(first))


def _recommend_first_slice(resources, run_date, paths, params):
    """The first mapped ``recommend_products`` task: the version pinned by ``prepare_recommendations``, then slice 1
    of ``partitions``."""
    from ml.partitioned_recommendations import prepare_recommendations, recommend_slice
    from ml.partitioning import Partition

    first = prepare_recommendations(resources, run_date, paths, params)[0]
    return recommend_slice(resources, run_date, paths, params, Partition.from_dict(first))


if __name__ == "__main__":
    main()
