"""Benchmark: training the customer families on a sample of customers (``training_sample_customers``), side by
side with the full set, on one store: test metrics, wall time and peak memory per family and sample size.

Seeds the synthetic store (``--customers``, default 200,000, x ``--days``) into a fresh embedded stack with
``benchmarks/scale.py``'s helpers, writes the training extract once (every dataset the training DAG reads,
the event features at every training cutoff computed in ClickHouse), then for each sample size and family
runs, in a fresh child process like an Airflow task, what the training task does before MLflow: read the
family's datasets, build its training data (features and labels at every cutoff; the fit sets sampled) and
train it (tune, fit, test on the whole test window, backtest origins). MLflow logging, registration and the
gate are left out: they do not depend on the sample, and a second sample size would face the first one's
model as champion.

Every sample size is tested on the same test window (every customer of it), so the test metrics are
comparable: propensity and churn ROC AUC (the gate's metric), CLV RMSE (the gate's by default) and Spearman.
Send time (``--families send_time``) trains and tests on its sample; its chosen configuration is then also fitted
and tested on every customer as the gate does (``test_log_loss_everyone``), the comparable number.
The tuning budget is the run's default (``n_trials`` 12, ``tuning_timeout_seconds`` 300) unless overridden.

Results go to ``benchmarks/results/training-sample-<customers>.json`` and ``.md`` (rewritten after every
child, so a long run can be read while it goes) and are printed; docs/scale.md, "Training at 1M".

    .venv/bin/python benchmarks/training_sample.py                               # 200k customers, 25k..200k
    .venv/bin/python benchmarks/training_sample.py --customers 1000000 --samples 200000,0
    .venv/bin/python benchmarks/training_sample.py --families send_time --samples 0,50000
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import FAMILY_NAMES, START, Bench, stage_extract, stage_seed  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FAMILIES = ("propensity", "churn", "clv")


def _params(sample: int, n_trials: int | None, timeout: float | None, backtest_origins: int | None):
    from ml.params import RunParams

    overrides = {key: value for key, value in (("n_trials", n_trials), ("tuning_timeout_seconds", timeout),
                                              ("backtest_origins", backtest_origins)) if value is not None}
    return RunParams(training_sample_customers=sample, **overrides)


def stage_train_sample(home: str, run_date: dt.date, paths: dict[str, str], family: str, sample: int,
                       n_trials: int | None, timeout: float | None, backtest_origins: int | None) -> dict[str, Any]:
    """What ``ml.pipeline.train`` does before MLflow, for one family at one sample size; its test metrics."""
    from ml.families import FAMILIES as REGISTERED
    from revopt.platform.extract import read_extract

    params = _params(sample, n_trials, timeout, backtest_origins)
    chosen = {definition.name: definition for definition in REGISTERED}[FAMILY_NAMES.get(family, family)]
    frames = read_extract({name: paths[name] for name in chosen.training_datasets})
    if reason := chosen.shortfall(frames, run_date, params):
        raise RuntimeError(reason)
    began = time.perf_counter()
    data = chosen.training_data(frames, run_date, params)
    data_seconds = time.perf_counter() - began
    trained = chosen.train(data, params, [])
    keep = ("test_roc_auc", "test_pr_auc", "test_rmse", "test_spearman", "test_top_decile_capture", "valid_roc_auc",
            "backtest_roc_auc_mean", "backtest_rmse_mean", "test_log_loss", "baseline_log_loss")
    metrics = {key: float(trained.metrics[key]) for key in keep if key in trained.metrics}
    fitted = tested = int(trained.params.get("n_fit", trained.params.get("n_customers", 0)))
    if chosen.name == "send_time":
        # send time tests on its sample: the chosen configuration fitted and tested as the gate does, on everyone
        everyone = chosen.training_data(frames, run_date, dataclasses.replace(params, training_sample_customers=0))
        metrics["test_log_loss_everyone"] = float(chosen.evaluate(everyone, trained.spec, params).value(chosen.metric))
        tested = len(everyone.customers)
    return {"rows": tested, "data_seconds": data_seconds, "n_fit": fitted, "n_test": int(trained.params.get("n_test", tested)),
            "metrics": metrics, "winner": str(trained.params.get("winner", trained.params.get("best_family", "")))}


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# Training on a sample of customers: {report['customers']:,} customers x {report['days']} days",
             "", f"`{report['command']}` ({report['date']}; tuning: {report['tuning']})", "",
             f"Training extract: {report['extract']['seconds']:.1f} s, peak {report['extract']['peak_mb']:,.0f} MB, "
             f"{report['extract']['rows']:,} rows ({report['extract'].get('at_cutoffs_rows', 0):,} of them event "
             "features at the training cutoffs)", "",
             "| family | sample | fitted on | tested on | test ROC AUC | test RMSE | test Spearman | "
             "test log loss (sample / everyone) | wall s | of it data s | peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["runs"]:
        m = row["metrics"]
        fmt = lambda key, digits: f"{m[key]:.{digits}f}" if key in m else ""  # noqa: E731
        lines.append(f"| {row['family']} | {row['sample'] or 'all'} | {row['n_fit']:,} | {row['n_test']:,} | "
                     f"{fmt('test_roc_auc', 4)} | {fmt('test_rmse', 2)} | {fmt('test_spearman', 4)} | "
                     f"{' / '.join(fmt(k, 5) for k in ('test_log_loss', 'test_log_loss_everyone') if k in m)} | "
                     f"{row['seconds']:.1f} | {row['data_seconds']:.1f} | {row['peak_mb']:,.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=410)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--chunk-customers", type=int, default=100_000)
    parser.add_argument("--samples", default="0,25000,50000,100000",
                        help="training_sample_customers values, in the order run (0: every customer)")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--n-trials", type=int, default=None, help="default: RunParams' (12)")
    parser.add_argument("--tuning-timeout", type=float, default=None, help="default: RunParams' (300 s)")
    parser.add_argument("--backtest-origins", type=int, default=None, help="default: RunParams' (3)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()

    from ml.params import RunParams
    from revopt.platform.stack import stop_stack
    from scale import _settings

    defaults = RunParams()
    run_date = START + dt.timedelta(days=args.days)
    samples = [int(s) for s in args.samples.split(",") if s != ""]
    families = tuple(f for f in args.families.split(",") if f)
    tuning = (f"n_trials {args.n_trials or defaults.n_trials}, timeout {args.tuning_timeout or defaults.tuning_timeout_seconds:g} s, "
              f"backtest_origins {args.backtest_origins or defaults.backtest_origins}")
    report: dict[str, Any] = {"customers": args.customers, "days": args.days, "date": dt.date.today().isoformat(),
                              "run_date": run_date.isoformat(), "tuning": tuning, "runs": [],
                              "command": "python benchmarks/training_sample.py " + " ".join(sys.argv[1:])}
    out = args.results_dir / f"training-sample-{args.customers}"
    out.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        out.with_suffix(".md").write_text(_markdown(report))

    with tempfile.TemporaryDirectory(prefix="revopt-training-sample-") as home:
        bench = Bench(home)
        try:
            seeded = bench.run("seed", stage_seed, customers=args.customers, days=args.days, seed=args.seed,
                               chunk_customers=args.chunk_customers)
            report["store"] = {"events": seeded["tables"]["clickhouse.events"], "seconds": round(seeded["seconds"], 1)}
            from ml.pipeline import DAG_DATASETS

            first = _params(samples[0], args.n_trials, args.tuning_timeout, args.backtest_origins)
            datasets = tuple(name for name in DAG_DATASETS["training"]
                             if name in {"customers", "orders", "order_categories", "offers",
                                         "customer_event_features_at_cutoffs",
                                         *(("engagement_by_hour",) if "send_time" in families else ())})
            extract = bench.run("training extract", stage_extract, run_date=run_date,
                                lookback_days=first.training_extract_days, datasets=datasets,
                                training=(first.n_trials, first.tuning_timeout_seconds))
            paths = extract["paths"]
            import pyarrow.parquet as pq

            report["extract"] = {"seconds": extract["seconds"], "peak_mb": extract["peak_mb"], "rows": extract["rows"],
                                 "at_cutoffs_rows": pq.read_metadata(paths["customer_event_features_at_cutoffs"]).num_rows}
            write()
            for sample in samples:
                for family in families:
                    result = bench.run(f"train {family}, sample {sample or 'all'}", stage_train_sample, run_date=run_date,
                                       paths=paths, family=family, sample=sample, n_trials=args.n_trials,
                                       timeout=args.tuning_timeout, backtest_origins=args.backtest_origins)
                    report["runs"].append({"family": family, "sample": sample, "seconds": result["seconds"],
                                           "peak_mb": result["peak_mb"], "data_seconds": result["data_seconds"],
                                           "n_fit": result["n_fit"], "n_test": result["n_test"],
                                           "metrics": result["metrics"], "winner": result["winner"]})
                    print(f"    {family} sample {sample or 'all'}: {result['metrics']}", flush=True)
                    write()
        finally:
            stop_stack(_settings(home))
    print(_markdown(report))


if __name__ == "__main__":
    main()
