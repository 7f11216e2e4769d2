"""Benchmark: the nightly customer scores mapped over N customer-hash partitions (issue 22 item 5), per partition.

Seeds the synthetic store at ``--customers`` (first of the list) into a fresh embedded stack, trains propensity, churn
and CLV once with one Optuna trial, then for each store size of ``--customers`` runs the nightly extract and features
and, for each N of ``--partitions``, the steps the DAG maps (ml.partitioned): prepare -> score x N -> gather ->
stage x N -> publish, every step in a fresh child process (``spawn``) as an Airflow task runs, timed inside the
child (imports excluded) with its peak RSS. The N score processes run ``--workers`` at a time (1: one after the
other, as on the embedded stack's sequential runner; 2: two side by side, as two Celery worker slots on this
machine). After each N the published ``scores.customer_scores`` is compared with N = 1's (every column, every row).

    .venv/bin/python benchmarks/partitions.py                       # 10k and 100k customers, N = 1, 2, 4
    .venv/bin/python benchmarks/partitions.py --customers 10000 --partitions 1,4 --workers 1

Results go to ``benchmarks/results/partitions.json`` and ``.md`` (docs/scale.md, "Partitioned execution").
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale  # noqa: E402  (benchmarks/scale.py: the stack, seeding, training and child-process stages)

RESULTS = Path(__file__).resolve().parent / "results" / "partitions"
NIGHTLY_DATASETS = ("customers", "orders", "order_categories", "customer_event_features")


def stage_prepare(home: str, run_date: dt.date, paths: dict[str, str], partitions: int) -> dict[str, Any]:
    from ml.params import RunParams
    from ml.partitioned import prepare_scores

    prepared = prepare_scores(scale._resources(home), run_date, paths, RunParams(partitions=partitions))
    return {"rows": 0, "partitions": prepared}


def stage_score(home: str, run_date: dt.date, features_path: str, partition: dict) -> dict[str, Any]:
    from ml.params import RunParams
    from ml.partitioning import Partition
    from ml.pipeline import score_customers

    scored = score_customers(scale._resources(home), run_date, features_path, {},
                             RunParams(partitions=partition["count"]), partition=Partition.from_dict(partition))
    return {"rows": int(scored["rows"]), "scored": scored}


def stage_gather(home: str, run_date: dt.date, slices: list[dict], features_path: str) -> dict[str, Any]:
    from ml.partitioned import gather_scores

    gathered = gather_scores(scale._resources(home), run_date, slices, features_path)
    return {"rows": int(gathered["rows"]), "gathered": gathered}


def stage_stage(home: str, run_date: dt.date, scored: dict, gathered: dict) -> dict[str, Any]:
    from ml.publishing import stage_scores

    return {"rows": stage_scores(scale._resources(home), run_date, scored, gathered)}


def stage_publish(home: str, run_date: dt.date, gathered: dict) -> dict[str, Any]:
    from ml.publishing import publish_scores

    return {"rows": sum(publish_scores(scale._resources(home), run_date, gathered).values())}


def stage_published(home: str, run_date: dt.date, out: str) -> dict[str, Any]:
    """The published customer scores, sorted, written to ``out`` (compared across N by the parent)."""
    from revopt.platform.postgres import read_frame

    with scale._resources(home).scores() as conn:
        frame = read_frame(conn, "SELECT * FROM scores.customer_scores WHERE run_date = %s ORDER BY customer_id",
                           (run_date,))
    frame["top_factors"] = frame["top_factors"].map(lambda v: json.dumps(v, sort_keys=True))
    frame.to_parquet(out, index=False)
    return {"rows": len(frame)}


def _batch(home: str, label: str, function, calls: list[dict[str, Any]], workers: int) -> tuple[list[dict], float]:
    """``calls`` of ``function`` in fresh processes, ``workers`` at a time: their results and the batch's wall time."""
    began = time.perf_counter()
    spawn = scale.multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn, max_tasks_per_child=1) as pool:  # a fresh process per call
        futures = [pool.submit(scale._child, function, {"home": home, **kwargs}) for kwargs in calls]
        results = [future.result() for future in futures]
    wall = time.perf_counter() - began
    print(f"  {label}: {len(calls)} x, {wall:.1f}s wall, per process "
          + ", ".join(f"{r['seconds']:.1f}s/{r['peak_mb']:,.0f}MB" for r in results), flush=True)
    return results, wall


def _partitioned(bench, home: str, run_date: dt.date, paths: dict, features: dict, n: int, workers: int,
                 reference: Path | None, out: Path) -> dict[str, Any]:
    prepared = bench.run(f"prepare N={n}", stage_prepare, run_date=run_date, paths=paths, partitions=n)
    scores, score_wall = _batch(home, f"score N={n} workers={workers}", stage_score,
                                [{"run_date": run_date, "features_path": features["path"], "partition": p}
                                 for p in prepared["partitions"]], workers)
    slices = [s["scored"] for s in scores]
    gathered = bench.run(f"gather N={n}", stage_gather, run_date=run_date, slices=slices,
                         features_path=features["path"])
    staged, stage_wall = _batch(home, f"stage N={n} workers={workers}", stage_stage,
                                [{"run_date": run_date, "scored": s, "gathered": gathered["gathered"]} for s in slices],
                                workers)
    published = bench.run(f"publish N={n}", stage_publish, run_date=run_date, gathered=gathered["gathered"])
    bench.run("read back", stage_published, run_date=run_date, out=str(out))
    identical = None
    if reference is not None:
        import pandas as pd

        identical = bool(pd.read_parquet(reference).equals(pd.read_parquet(out)))
        print(f"  published with N={n} identical to N=1: {identical}", flush=True)
    once = prepared["seconds"] + gathered["seconds"] + published["seconds"]
    return {
        "partitions": n, "workers": workers, "customers": features["rows"],
        "prepare_seconds": round(prepared["seconds"], 2), "gather_seconds": round(gathered["seconds"], 2),
        "publish_seconds": round(published["seconds"], 2),
        "score_seconds": [round(s["seconds"], 2) for s in scores],
        "score_peak_mb": [round(s["peak_mb"]) for s in scores],
        "score_wall": round(score_wall, 2), "stage_seconds": [round(s["seconds"], 2) for s in staged],
        "stage_wall": round(stage_wall, 2), "peak_mb": round(max(r["peak_mb"] for r in (*scores, *staged, prepared,
                                                                                         gathered, published))),
        "steps_wall": round(once + score_wall + stage_wall, 2), "identical_to_one": identical,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", default="10000,100000", help="store sizes, comma-separated (first: training)")
    parser.add_argument("--partitions", default="1,2,4")
    parser.add_argument("--workers", default="1,2", help="score/stage processes side by side, comma-separated")
    parser.add_argument("--days", type=int, default=410)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--home", default=None, help="reuse this state folder, already seeded at the first size "
                        "and trained (a run stopped midway leaves it; it is kept): no seeding, no training at first")
    args = parser.parse_args()
    sizes = [int(v) for v in args.customers.split(",")]
    counts = [int(v) for v in args.partitions.split(",")]
    workers = [int(v) for v in args.workers.split(",")]
    run_date = scale.START + dt.timedelta(days=args.days)
    command = "python benchmarks/partitions.py " + " ".join(sys.argv[1:])
    report: dict[str, Any] = {"date": dt.date.today().isoformat(), "command": command, "runs": []}
    began = time.perf_counter()
    folder = (contextlib.nullcontext(args.home) if args.home
              else tempfile.TemporaryDirectory(prefix="revopt-partitions-"))
    with folder as home:
        bench = scale.Bench(home)
        try:
            for i, customers in enumerate(sizes):
                if i == 0 and args.home:
                    print(f"reusing {home}: seeded with {customers:,} customers and trained", flush=True)
                else:
                    print(f"seeding {customers:,} customers", flush=True)
                    bench.run("seed", scale.stage_seed, customers=customers, days=args.days, seed=args.seed,
                              chunk_customers=100_000)
                if i == 0 and not args.home:
                    scale._training(bench, run_date, 730, scale.TRAIN_FAMILIES, 1, 60.0)
                extracted = bench.run("extract", scale.stage_extract, run_date=run_date, lookback_days=730,
                                      datasets=NIGHTLY_DATASETS)
                features = bench.run("features", scale.stage_features, run_date=run_date, paths=extracted["paths"])
                reference = None
                for n in counts:
                    for w in workers if n > 1 else [1]:
                        out = Path(home) / f"published-{customers}-{n}-{w}.parquet"
                        run = _partitioned(bench, home, run_date, extracted["paths"], features, n, w, reference, out)
                        report["runs"].append(run)
                        reference = reference or out
        finally:
            _stop(home)
    report["total_seconds"] = round(time.perf_counter() - began, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{RESULTS}.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{RESULTS}.md").write_text(_markdown(report))
    print(_markdown(report))


def _stop(home: str) -> None:
    from revopt.platform.stack import stop_stack

    stop_stack(scale._settings(home))


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# Partitioned customer scores ({report['date']})", "", f"Command: `{report['command']}`", "",
             "| customers | N | workers | score s per partition | score wall | stage wall | prepare + gather + publish "
             "| steps wall | peak MB | identical to N=1 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        once = r["prepare_seconds"] + r["gather_seconds"] + r["publish_seconds"]
        lines.append(f"| {r['customers']:,} | {r['partitions']} | {r['workers']} | "
                     f"{', '.join(f'{s:.1f}' for s in r['score_seconds'])} | {r['score_wall']:.1f} | "
                     f"{r['stage_wall']:.1f} | {once:.1f} | {r['steps_wall']:.1f} | {r['peak_mb']:,} | "
                     f"{'-' if r['identical_to_one'] is None else r['identical_to_one']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
