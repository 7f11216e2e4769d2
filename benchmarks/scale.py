"""Benchmark: the nightly and training paths at scale, stage by stage, with side-by-side ratios.

Seeds the synthetic store at scale S (1.0 = 1,000,000 customers; events grow with customers and
days, ~100M at 1.0 over 410 days) into a fresh embedded stack, trains the customer model families
once with minimal tuning (on a capped store if S is larger than ``--train-max-customers``), then
runs the nightly path (extract -> validate -> features -> score -> publish, no tuning) at S and,
unless ``--no-compare-10x``, at 10 x S on the same stack. Every stage runs in a fresh child process
(``spawn``) like an Airflow task does, so its peak memory is its own ``ru_maxrss`` (chDB runs in
process: ClickHouse's memory counts in the stages that query it). PostgreSQL is a separate server:
its memory is sampled alongside (the proportional set size, PSS, summed over the postmaster and
its backends, so shared buffers count once) and reported in its own column.

In the same run, at S, it measures side by side:

- publishing the customer scores with COPY (``revopt.platform.postgres.publish_partition``) vs
  ``pandas.DataFrame.to_sql`` (SQLAlchemy on the same server, ``method=None`` and ``'multi'``) into
  scratch tables; ``to_sql`` runs on a subsample (``--to-sql-rows``), and the ratio is per row;
- the per-customer event features computed inside ClickHouse (``features.customer.event_features_sql``)
  vs pulling the daily event rows (``revopt.platform.extract.DAILY_EVENTS_SQL``) into pandas and computing
  them there (``features.customer.customer_event_features``); both results must be identical;
- the nightly path at S vs 10 x S: time ratio against the <= 11x target.

The nightly extract reads, by default, the datasets the customer-scores path uses
(``--nightly-extract scores``: customers, orders and the per-customer event features computed
inside ClickHouse); ``--nightly-extract dag`` writes what the whole nightly DAG reads (every
dataset but the daily event rows: its send-time, price and budget branches need theirs), and
``--nightly-extract all`` every dataset, daily rows included.

Results go to ``benchmarks/results/scale-<S>.json`` and ``.md`` and are printed (see docs/scale.md).

    .venv/bin/python benchmarks/scale.py                 # quick: S = 0.01 (10k customers) and 0.1
    .venv/bin/python benchmarks/scale.py --scale 0.1     # 100k and 1M customers
    .venv/bin/python benchmarks/scale.py --scale 1.0 --no-compare-10x
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing
import resource
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

CUSTOMERS_AT_SCALE_1 = 1_000_000
START = dt.date(2024, 1, 1)
RESULTS_DIR = Path(__file__).resolve().parent / "results"
TRAIN_FAMILIES = ("propensity", "churn", "clv")
NIGHTLY_STAGES = ("extract", "validate", "features", "score", "publish")
TARGETS = {"nightly_seconds_at_1m": 600.0, "nightly_peak_mb_at_1m": 8192.0, "copy_vs_to_sql": 20.0, "ten_x_time_ratio": 11.0}


# --- stages: each runs in its own child process ----------------------------------------------------


def _settings(home: str):
    from revopt.platform.config import load_settings

    return load_settings({"REVOPT_HOME": home})


#: The --families names that differ from the family's own name.
FAMILY_NAMES = {"propensity": "purchase_propensity"}


def _resources(home: str):
    from revopt.platform.resources import Resources

    return Resources(_settings(home))


def _params(n_trials: int, timeout: float):
    from ml.params import RunParams

    return RunParams(n_trials=n_trials, tuning_timeout_seconds=timeout)


def _parquet_rows(paths: dict[str, str]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(path).num_rows for path in paths.values())


def stage_seed(home: str, customers: int, days: int, seed: int, chunk_customers: int) -> dict[str, Any]:
    from revopt.sample_data.seed import load_store_chunks
    from revopt.sample_data.synth import generate_store_chunks

    rows = load_store_chunks(_settings(home), generate_store_chunks(customers, days, START, seed, chunk_customers))
    return {"rows": sum(rows.values()), "tables": rows}


def stage_extract(home: str, run_date: dt.date, lookback_days: int, datasets: tuple[str, ...] | None = None,
                  training: tuple[int, float] | None = None) -> dict[str, Any]:
    from ml.pipeline import extract_datasets

    chosen = {} if datasets is None else {"datasets": datasets}
    if training is not None:  # the training run's (n_trials, timeout): its event features at its cutoffs
        chosen["params"] = _params(*training)
    paths = extract_datasets(_resources(home), run_date, lookback_days, **chosen)
    import pyarrow.parquet as pq

    return {"rows": _parquet_rows(paths), "paths": paths,
            "datasets": {name: pq.read_metadata(path).num_rows for name, path in paths.items()}}


def stage_validate(home: str, run_date: dt.date, paths: dict[str, str], lookback_days: int) -> dict[str, Any]:
    from ml.pipeline import validate_extracts

    validate_extracts(_resources(home), run_date, paths, lookback_days)
    return {"rows": _parquet_rows(paths)}


def stage_features(home: str, run_date: dt.date, paths: dict[str, str]) -> dict[str, Any]:
    from ml.pipeline import build_features

    built = build_features(_resources(home), run_date, paths)
    return {"rows": int(built["rows"]), "path": built["path"]}


def stage_score(home: str, run_date: dt.date, features_path: str, paths: dict[str, str], n_trials: int,
                timeout: float) -> dict[str, Any]:
    from ml.pipeline import score_customers

    scored = score_customers(_resources(home), run_date, features_path, paths, _params(n_trials, timeout))
    return {"rows": int(scored["rows"]), "path": scored["path"]}


def stage_publish(home: str, run_date: dt.date, scores_path: str) -> dict[str, Any]:
    from ml.publishing import publish

    return {"rows": int(publish(_resources(home), run_date, "scores.customer_scores", scores_path))}


def stage_train(home: str, run_date: dt.date, paths: dict[str, str], family: str, n_trials: int, timeout: float) -> dict[str, Any]:
    from ml.families import FAMILIES
    from ml.pipeline import train

    chosen = {definition.name: definition for definition in FAMILIES}[FAMILY_NAMES.get(family, family)]
    result = train(chosen, _resources(home), run_date, paths, _params(n_trials, timeout))
    customers = _parquet_rows({"customers": paths["customers"]})
    return {"rows": customers, "result": {key: str(value) for key, value in result.items()}}


def stage_publish_ratio(home: str, run_date: dt.date, scores_path: str, to_sql_rows: int) -> dict[str, Any]:
    """COPY (publish_partition) of all scores and of a subsample vs DataFrame.to_sql of the subsample."""
    import pandas as pd
    import sqlalchemy
    from sqlalchemy.dialects import postgresql

    from revopt.platform.postgres import publish_partition
    from revopt.platform.stack import connect_postgres, postgres_url

    settings = _settings(home)
    scores = pd.read_parquet(scores_path)
    scores["run_date"] = run_date
    sample = scores.head(to_sql_rows).copy()
    tables = ("copy_full", "copy_sample", "to_sql_none", "to_sql_multi")
    with connect_postgres(settings) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS bench")
        for table in tables:
            conn.execute(f"DROP TABLE IF EXISTS bench.{table}")
            conn.execute(f"CREATE TABLE bench.{table} (LIKE scores.customer_scores INCLUDING ALL)")
    timings: dict[str, dict[str, float]] = {}

    def timed(name: str, rows: int, publish: Callable[[], None]) -> None:
        began = time.perf_counter()
        publish()
        seconds = time.perf_counter() - began
        timings[name] = {"rows": rows, "seconds": round(seconds, 3), "rows_per_second": round(rows / seconds)}

    def copy(table: str, frame: pd.DataFrame) -> Callable[[], None]:
        def run() -> None:
            with connect_postgres(settings) as conn:
                publish_partition(conn, f"bench.{table}", run_date, frame)
        return run

    timed("copy_full", len(scores), copy("copy_full", scores))
    timed("copy_sample", len(sample), copy("copy_sample", sample))
    engine = sqlalchemy.create_engine(postgres_url(settings).replace("postgresql://", "postgresql+psycopg://", 1),
                                      connect_args={"options": "-c TimeZone=UTC"})
    # top_factors is jsonb: SQLAlchemy binds strings as VARCHAR, which PostgreSQL will not cast to jsonb, so
    # to_sql gets the parsed objects and the JSONB type (parsed before the clock starts, in to_sql's favour).
    objects = sample.assign(top_factors=sample["top_factors"].map(json.loads))
    jsonb = {"top_factors": postgresql.JSONB}
    timed("to_sql_none", len(sample), lambda: objects.to_sql(
        "to_sql_none", engine, schema="bench", if_exists="append", index=False, method=None, dtype=jsonb))
    timed("to_sql_multi", len(sample), lambda: objects.to_sql(
        "to_sql_multi", engine, schema="bench", if_exists="append", index=False, method="multi", chunksize=2_000,
        dtype=jsonb))
    engine.dispose()
    with connect_postgres(settings) as conn:
        counts = {table: conn.execute(f"SELECT count(*) FROM bench.{table}").fetchone()[0] for table in tables}
        for table in tables:
            conn.execute(f"DROP TABLE bench.{table}")
    rate = {name: timing["rows_per_second"] for name, timing in timings.items()}
    return {
        "rows": len(scores),
        "timings": timings,
        "rows_landed": counts,
        "copy_vs_to_sql_none": round(rate["copy_full"] / rate["to_sql_none"], 1),
        "copy_vs_to_sql_multi": round(rate["copy_full"] / rate["to_sql_multi"], 1),
        "same_size_copy_vs_to_sql_none": round(rate["copy_sample"] / rate["to_sql_none"], 1),
        "same_size_copy_vs_to_sql_multi": round(rate["copy_sample"] / rate["to_sql_multi"], 1),
        "note": f"to_sql on the first {len(sample):,} rows; ratios compare rows per second "
                f"(copy_full: all {len(scores):,} rows; same_size: COPY of the same subsample)",
    }


def stage_event_features_ratio(home: str, run_date: dt.date, lookback_days: int) -> dict[str, Any]:
    """Per-customer event features inside ClickHouse vs daily rows pulled into pandas; identical?"""
    import pandas as pd

    from features.customer import (
        customer_event_features, event_features_params, event_features_sql, typed_event_features,
    )
    from revopt.platform.extract import DAILY_EVENTS_SQL
    from revopt.platform.stack import close_event_stores, event_store

    store = event_store(_settings(home))
    run_ts = pd.Timestamp(run_date, tz="UTC")
    since_ts = run_ts - pd.Timedelta(days=lookback_days)
    try:
        began = time.perf_counter()
        in_clickhouse = typed_event_features(
            store.query_df(event_features_sql(store.database), event_features_params(since_ts, run_ts)))
        clickhouse_seconds = time.perf_counter() - began

        began = time.perf_counter()
        daily = store.query_df(
            DAILY_EVENTS_SQL.format(database=store.database),
            {"since": since_ts.strftime("%Y-%m-%d %H:%M:%S"), "run_ts": run_ts.strftime("%Y-%m-%d %H:%M:%S")},
        )
        daily["day"] = pd.to_datetime(daily["day"]).astype("datetime64[ns]")
        pulled = time.perf_counter() - began
        in_pandas = customer_event_features(daily, run_ts)
        pandas_seconds = time.perf_counter() - began
    finally:
        close_event_stores()
    try:
        pd.testing.assert_frame_equal(in_clickhouse, in_pandas)
        identical, difference = True, ""
    except AssertionError as exc:
        identical, difference = False, str(exc)[:500]
    return {
        "rows": len(in_clickhouse),
        "clickhouse_seconds": round(clickhouse_seconds, 2),
        "pandas_seconds": round(pandas_seconds, 2),
        "pandas_pull_seconds": round(pulled, 2),
        "daily_rows_pulled": len(daily),
        "pandas_vs_clickhouse": round(pandas_seconds / clickhouse_seconds, 1),
        "identical": identical,
        "difference": difference,
    }


def _child(function: Callable[..., dict[str, Any]], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run one stage in this (fresh) process: its result, wall time and peak memory."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Module imports happen before the clock starts (``process_seconds`` includes them); lazy
    # imports inside the work (Great Expectations in validation) stay in the stage's time.
    import ml.pipeline  # noqa: F401
    import revopt.platform.extract  # noqa: F401
    import revopt.sample_data.seed  # noqa: F401

    began = time.perf_counter()
    result = function(**kwargs)
    seconds = time.perf_counter() - began
    try:
        from revopt.platform.stack import close_event_stores

        close_event_stores()  # the next stage's process opens the same chDB folder
    except Exception:  # noqa: BLE001 - closing is best effort
        pass
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {**result, "seconds": seconds, "peak_mb": max(own, children)}


# --- the parent: runs stages, samples PostgreSQL, reports ----------------------------------------


class _PostgresSampler:
    """Peak PSS of the embedded PostgreSQL server (postmaster + backends) while a stage runs, sampled every
    ``dag_harness.PSS_SECONDS``."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _PostgresSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():  # psutil's full memory info reads every process's smaps: ~20 ms a sample
            self.peak_mb = max(self.peak_mb, self._sample())
            self._stop.wait(_dag_harness().PSS_SECONDS)

    def _sample(self) -> float:
        try:
            import psutil
        except ImportError:
            return float("nan")
        pid_file = self.pgdata / "postmaster.pid"
        try:
            postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
            processes = [postmaster, *postmaster.children(recursive=True)]
        except (OSError, ValueError, IndexError, psutil.Error):
            return 0.0
        total = 0
        for process in processes:
            try:
                total += process.memory_full_info().pss
            except psutil.Error:
                continue
        return total / 2**20


class Bench:
    def __init__(self, home: str) -> None:
        self.home = home
        self.pgdata = _settings(home).pgdata
        self.spawn = multiprocessing.get_context("spawn")

    def run(self, label: str, function: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        print(f"  {label} ...", flush=True)
        began = time.perf_counter()
        with _PostgresSampler(self.pgdata) as sampler, ProcessPoolExecutor(1, mp_context=self.spawn) as pool:
            result = pool.submit(_child, function, {"home": self.home, **kwargs}).result()
        result["process_seconds"] = time.perf_counter() - began
        result["postgres_peak_mb"] = sampler.peak_mb
        result["rows_per_second"] = result["rows"] / result["seconds"] if result["seconds"] > 0 else None
        print(f"  {label}: {result['seconds']:.1f}s, {result['rows']:,} rows, peak {result['peak_mb']:,.0f} MB "
              f"(PostgreSQL {sampler.peak_mb:,.0f} MB)", flush=True)
        return result


def _nightly(bench: Bench, run_date: dt.date, lookback_days: int, n_trials: int, timeout: float,
             datasets: tuple[str, ...] | None) -> dict[str, dict]:
    stages: dict[str, dict] = {}
    stages["extract"] = bench.run("extract", stage_extract, run_date=run_date, lookback_days=lookback_days,
                                  datasets=datasets)
    paths = stages["extract"]["paths"]
    stages["validate"] = bench.run("validate", stage_validate, run_date=run_date, paths=paths, lookback_days=lookback_days)
    stages["features"] = bench.run("features", stage_features, run_date=run_date, paths=paths)
    stages["score"] = bench.run("score", stage_score, run_date=run_date, features_path=stages["features"]["path"],
                                paths=paths, n_trials=n_trials, timeout=timeout)
    stages["publish"] = bench.run("publish", stage_publish, run_date=run_date, scores_path=stages["score"]["path"])
    return stages


def _training(bench: Bench, run_date: dt.date, lookback_days: int, families: tuple[str, ...], n_trials: int,
              timeout: float) -> dict[str, dict]:
    stages: dict[str, dict] = {}
    from ml.pipeline import DAG_DATASETS

    stages["extract"] = bench.run("training extract", stage_extract, run_date=run_date, lookback_days=lookback_days,
                                  datasets=tuple(DAG_DATASETS["training"]), training=(n_trials, timeout))
    paths = stages["extract"]["paths"]
    stages["validate"] = bench.run("training validate", stage_validate, run_date=run_date, paths=paths,
                                   lookback_days=lookback_days)
    for family in families:
        stages[f"train_{family}"] = bench.run(f"train {family}", stage_train, run_date=run_date, paths=paths,
                                              family=family, n_trials=n_trials, timeout=timeout)
    return stages


def _summary(stages: dict[str, dict]) -> dict[str, Any]:
    return {
        "seconds": round(sum(s["seconds"] for s in stages.values()), 1),
        "process_seconds": round(sum(s["process_seconds"] for s in stages.values()), 1),
        "peak_mb": round(max(s["peak_mb"] for s in stages.values())),
        "postgres_peak_mb": round(max(s["postgres_peak_mb"] for s in stages.values())),
    }


def _stage_rows(path: str, stages: dict[str, dict]) -> list[str]:
    lines = []
    for name, stage in stages.items():
        rate = f"{stage['rows_per_second']:,.0f}" if stage["rows_per_second"] else "-"
        lines.append(f"| {path} | {name} | {stage['seconds']:.1f} | {stage['rows']:,} | {rate} | "
                     f"{stage['peak_mb']:,.0f} | {stage['postgres_peak_mb']:,.0f} |")
    total = _summary(stages)
    lines.append(f"| {path} | **total** | **{total['seconds']:.1f}** | | | **{total['peak_mb']:,}** | "
                 f"{total['postgres_peak_mb']:,} |")
    return lines


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Scale benchmark, S = {report['scale']} ({report['date']})",
        "",
        f"Command: `{report['command']}`",
        "",
        "Wall time is the stage's own call inside its process (process start and module imports excluded; "
        "`process_seconds` in the JSON includes them; Great Expectations' lazy import is inside validate and features). Peak MB is the stage process's peak RSS (chDB included); "
        "PostgreSQL MB is the server's peak PSS while the stage ran.",
        "",
    ]
    lines.append(f"Nightly extract: `--nightly-extract {report['nightly_extract']}` (datasets: "
                 f"{', '.join(report['nightly_datasets'])}). Training: {report['training_customers']:,} customers, "
                 f"{report['n_trials']} Optuna trial(s) per family.")
    lines.append("")
    for label, store in report["stores"].items():
        lines.append(f"- {label}: {store['customers']:,} customers x {report['days']} days: "
                     f"{store['events']:,} events, {store['orders']:,} orders, {store['order_lines']:,} order lines")
    lines += ["", "| path | stage | wall s | rows | rows/s | peak MB | PostgreSQL MB |", "|---|---|---|---|---|---|---|"]
    for label, stages in report["paths"].items():
        lines += _stage_rows(label, stages)
    lines += ["", "## Ratios measured side by side in this run", ""]
    ratios = report["ratios"]
    if "publish" in ratios:
        publish = ratios["publish"]
        t = publish["timings"]
        lines.append(
            f"- Publishing customer scores: COPY {t['copy_full']['rows_per_second']:,} rows/s ({t['copy_full']['rows']:,} rows), "
            f"COPY of the subsample {t['copy_sample']['rows_per_second']:,} rows/s, `to_sql` (method=None) "
            f"{t['to_sql_none']['rows_per_second']:,} rows/s, `to_sql` (method='multi') {t['to_sql_multi']['rows_per_second']:,} rows/s "
            f"({t['to_sql_none']['rows']:,} rows). **COPY vs to_sql: {publish['copy_vs_to_sql_none']}x** (multi: "
            f"{publish['copy_vs_to_sql_multi']}x; same-size COPY: {publish['same_size_copy_vs_to_sql_none']}x / "
            f"{publish['same_size_copy_vs_to_sql_multi']}x). {publish['note']}."
        )
    if "event_features" in ratios:
        events = ratios["event_features"]
        lines.append(
            f"- Event features for {events['rows']:,} customers: inside ClickHouse {events['clickhouse_seconds']}s vs "
            f"{events['daily_rows_pulled']:,} daily rows pulled into pandas and aggregated there {events['pandas_seconds']}s "
            f"(pull {events['pandas_pull_seconds']}s): **{events['pandas_vs_clickhouse']}x**; identical: {events['identical']}."
        )
    if "ten_x" in ratios:
        ten = ratios["ten_x"]
        lines.append(
            f"- Nightly path at 10 x S vs S: {ten['seconds_large']}s vs {ten['seconds_small']}s = **{ten['time_ratio']}x** "
            f"(target <= {TARGETS['ten_x_time_ratio']}x: {'met' if ten['met'] else 'missed'}); "
            f"peak {ten['peak_mb_large']:,} MB vs {ten['peak_mb_small']:,} MB."
        )
    lines += ["", "## Targets", ""]
    for target in report["targets"]:
        lines.append(f"- {target}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.01, help="1.0 = 1,000,000 customers")
    parser.add_argument("--compare-10x", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the nightly path at 10 x scale on the same stack")
    parser.add_argument("--days", type=int, default=410, help="days of history generated")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--chunk-customers", type=int, default=100_000, help="customers generated and loaded at once")
    parser.add_argument("--lookback-days", type=int, default=730)
    parser.add_argument("--train-max-customers", type=int, default=100_000,
                        help="train on a store of at most this many customers (the nightly path needs champions)")
    parser.add_argument("--train-families", default=",".join(TRAIN_FAMILIES))
    parser.add_argument("--n-trials", type=int, default=1)
    parser.add_argument("--tuning-timeout", type=float, default=60.0)
    parser.add_argument("--to-sql-rows", type=int, default=100_000)
    parser.add_argument("--nightly-extract", choices=("scores", "dag", "all"), default="scores",
                        help="scores: the datasets the customer-scores path reads (ml.pipeline.CUSTOMER_SCORE_DATASETS); "
                             "dag: what the nightly DAG's extract writes (ml.pipeline.DAG_DATASETS['nightly']: every dataset but "
                             "customer_daily_events, for its send-time, price and budget branches too); all: every dataset")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--dags", default="",
                        help="whole-DAG mode: run these real DAGs through Airflow, every task its own process "
                             "(comma list of training, nightly; training runs first, once, on the S store), and measure "
                             "each task; results in scale-dags-<S>.json/.md (benchmarks/dag_harness.py)")
    parser.add_argument("--workers", default="1",
                        help="--dags mode: task processes at once (AIRFLOW__CORE__PARALLELISM), a comma list: the "
                             "nightly DAG runs once per value on the S store (training and 10 x S use the first)")
    parser.add_argument("--nightly-param", action="append", default=[], metavar="NAME=VALUE",
                        help="--dags mode: a param of every nightly run (JSON value), e.g. partitions=4; repeatable")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="--dags mode: where the Airflow logs go (default: a new folder under /tmp)")
    parser.add_argument("--keep-home", type=Path, default=None,
                        help="--dags mode: run the stack in this new folder and keep it (the stores, champions, run "
                             "folders and published tables, to profile a step on them afterwards) instead of a "
                             "temporary one")
    args = parser.parse_args()
    if args.dags:
        main_dags(args)
        return
    nightly_datasets = _nightly_datasets(args.nightly_extract)

    from revopt.platform.stack import stop_stack

    customers = max(1, round(args.scale * CUSTOMERS_AT_SCALE_1))
    run_date = START + dt.timedelta(days=args.days)
    families = tuple(f for f in args.train_families.split(",") if f)
    report: dict[str, Any] = {
        "scale": args.scale, "date": dt.date.today().isoformat(), "days": args.days, "run_date": run_date.isoformat(),
        "command": "python benchmarks/scale.py " + " ".join(_argv()), "stores": {}, "paths": {}, "ratios": {},
        "targets": [], "training_customers": min(customers, args.train_max_customers),
        "n_trials": args.n_trials, "nightly_extract": args.nightly_extract, "nightly_datasets": list(nightly_datasets or ("all",)),
    }
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="revopt-scale-") as home:
        bench = Bench(home)
        try:
            def seed(label: str, n: int) -> None:
                print(f"seeding {label}: {n:,} customers x {args.days} days", flush=True)
                seeded = bench.run(f"seed {label}", stage_seed, customers=n, days=args.days, seed=args.seed,
                                   chunk_customers=args.chunk_customers)
                tables = seeded["tables"]
                report["stores"][label] = {
                    "customers": tables["shop.customers"], "events": tables["clickhouse.events"],
                    "orders": tables["shop.orders"], "order_lines": tables["shop.order_lines"],
                    "seed_seconds": round(seeded["seconds"], 1), "seed_peak_mb": round(seeded["peak_mb"]),
                }

            train_n = report["training_customers"]
            train_label = f"training store ({train_n:,} customers)"
            seed(train_label if train_n != customers else f"S={args.scale}", train_n)
            print("training path", flush=True)
            report["paths"][f"training ({train_n:,} customers)"] = _training(
                bench, run_date, args.lookback_days, families, args.n_trials, args.tuning_timeout)
            if train_n != customers:
                seed(f"S={args.scale}", customers)
            print(f"nightly path at S={args.scale}", flush=True)
            small = _nightly(bench, run_date, args.lookback_days, args.n_trials, args.tuning_timeout, nightly_datasets)
            report["paths"][f"nightly S={args.scale}"] = small
            print("ratios at S", flush=True)
            report["ratios"]["publish"] = bench.run("COPY vs to_sql", stage_publish_ratio, run_date=run_date,
                                                    scores_path=small["score"]["path"], to_sql_rows=args.to_sql_rows)
            report["ratios"]["event_features"] = bench.run("event features: ClickHouse vs pandas", stage_event_features_ratio,
                                                           run_date=run_date, lookback_days=args.lookback_days)
            if args.compare_10x:
                large_scale = round(args.scale * 10, 6)
                seed(f"10xS={large_scale}", customers * 10)
                print(f"nightly path at 10xS={large_scale}", flush=True)
                large = _nightly(bench, run_date, args.lookback_days, args.n_trials, args.tuning_timeout, nightly_datasets)
                report["paths"][f"nightly 10xS={large_scale}"] = large
                small_total, large_total = _summary(small), _summary(large)
                ratio = large_total["seconds"] / small_total["seconds"]
                report["ratios"]["ten_x"] = {
                    "seconds_small": small_total["seconds"], "seconds_large": large_total["seconds"],
                    "time_ratio": round(ratio, 2), "met": ratio <= TARGETS["ten_x_time_ratio"],
                    "peak_mb_small": small_total["peak_mb"], "peak_mb_large": large_total["peak_mb"],
                }
        finally:
            stop_stack(_settings(home))
    report["total_seconds"] = round(time.perf_counter() - began, 1)
    report["targets"] = _targets(report, customers)
    for path in report["paths"].values():
        for stage in path.values():
            stage.pop("paths", None)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"scale-{args.scale:g}"
    Path(f"{stem}.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    markdown = _markdown(report)
    Path(f"{stem}.md").write_text(markdown)
    print()
    print(markdown)
    print(f"results: {stem}.json, {stem}.md (total {report['total_seconds']}s)")


# --- whole-DAG mode: the real DAGs through Airflow, one process per task -------------------------------------------

DAG_IDS = {"training": "revopt_training", "nightly": "revopt_nightly"}
DAG_TARGETS = {"nightly_seconds": 600.0, "training_seconds": 1800.0, "task_peak_mb": 8192.0}


def main_dags(args: argparse.Namespace) -> None:
    """Seed S, run the training DAG, the nightly DAG once per ``--workers`` value, and (``--compare-10x``) the nightly
    DAG again on a 10 x S store; per task wall, rows and peak memory (benchmarks/dag_harness.py)."""
    from revopt.platform.stack import stop_stack

    AirflowRun = _dag_harness().AirflowRun

    dags = [name.strip() for name in args.dags.split(",") if name.strip()]
    unknown = sorted(set(dags) - set(DAG_IDS))
    if unknown:
        raise SystemExit(f"--dags: unknown {', '.join(unknown)} (choose from {', '.join(DAG_IDS)})")
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    customers = max(1, round(args.scale * CUSTOMERS_AT_SCALE_1))
    run_date = (START + dt.timedelta(days=args.days)).isoformat()
    training_conf = {"n_trials": args.n_trials, "tuning_timeout_seconds": args.tuning_timeout}
    nightly_conf = _conf(args.nightly_param)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="revopt-scale-dags-logs-"))
    report: dict[str, Any] = {
        "scale": args.scale, "date": dt.date.today().isoformat(), "days": args.days, "run_date": run_date,
        "command": "python benchmarks/scale.py " + " ".join(_argv()), "dags": dags, "workers": workers,
        "training_conf": training_conf, "nightly_conf": nightly_conf, "stores": {}, "runs": {}, "ratios": {},
        "log_dir": str(log_dir),
    }
    print(f"Airflow logs: {log_dir}", flush=True)
    began = time.perf_counter()
    with _home(args.keep_home) as home:
        bench = Bench(home)
        try:
            def seed(label: str, n: int) -> None:
                print(f"seeding {label}: {n:,} customers x {args.days} days", flush=True)
                tables = bench.run(f"seed {label}", stage_seed, customers=n, days=args.days, seed=args.seed,
                                   chunk_customers=args.chunk_customers)["tables"]
                report["stores"][label] = {"customers": tables["shop.customers"], "events": tables["clickhouse.events"],
                                           "orders": tables["shop.orders"], "order_lines": tables["shop.order_lines"]}

            def run(label: str, dag: str, conf: dict, parallelism: int) -> dict[str, Any]:
                print(f"{label}: {DAG_IDS[dag]} for {run_date}, {parallelism} task process(es) at once", flush=True)
                result = airflow.run(DAG_IDS[dag], run_date, conf, parallelism, label.replace(" ", "_"))
                report["runs"][label] = result
                _write_dags_report(args, report, began, final=False)  # a long run leaves its results as it goes
                if result["interrupted"]:
                    raise KeyboardInterrupt
                print(f"  {'ok' if result['ok'] else 'FAILED ' + ', '.join(result['failed'])}: "
                      f"{result['tasks_seconds']}s of tasks ({result['wall_seconds']}s with Airflow start), "
                      f"max task peak {result['max_task_peak_mb']:,} MB ({result['max_task']})", flush=True)
                return result

            small = f"S={args.scale:g}"
            seed(small, customers)
            with AirflowRun(_settings(home), log_dir, _PostgresSampler) as airflow:
                if "training" in dags:
                    run(f"training {small}", "training", training_conf, workers[0])
                if "nightly" in dags:
                    nightly = {w: run(f"nightly {small} workers={w}", "nightly", nightly_conf, w) for w in workers}
                    if len(workers) > 1:
                        first, *others = workers
                        report["ratios"]["workers"] = [_workers_ratio(first, other, nightly) for other in others]
                    if args.compare_10x:
                        large = f"10xS={round(args.scale * 10, 6):g}"
                        seed(large, customers * 10)
                        bigger = run(f"nightly {large} workers={workers[0]}", "nightly", nightly_conf, workers[0])
                        report["ratios"]["ten_x"] = {
                            "seconds": [nightly[workers[0]]["tasks_seconds"], bigger["tasks_seconds"]],
                            "time_ratio": _ratio(bigger["tasks_seconds"], nightly[workers[0]]["tasks_seconds"]),
                            "wall_ratio": _ratio(bigger["wall_seconds"], nightly[workers[0]]["wall_seconds"]),
                        }
        except KeyboardInterrupt:
            report["interrupted"] = True  # the results so far are written below, marked as such
        finally:
            stop_stack(_settings(home))
    stem, markdown = _write_dags_report(args, report, began, final=True)
    print()
    print(markdown)
    print(f"results: {stem}.json, {stem}.md (total {report['total_seconds']}s)")


@contextmanager
def _home(keep: Path | None) -> Iterator[str]:
    """The stack's folder: ``keep`` (new, kept afterwards) or a temporary one."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="revopt-scale-dags-") as home:
            yield home
        return
    keep.mkdir(parents=True, exist_ok=False)
    print(f"the stack stays in {keep}", flush=True)
    yield str(keep)


def _conf(pairs: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs as DAG run params, each value read as JSON, as ``revopt run --param`` reads them."""
    from revopt.cli import _params

    return _params(pairs)


def _write_dags_report(args: argparse.Namespace, report: dict[str, Any], began: float, final: bool) -> tuple[Path, str]:
    """Write the report so far to ``scale-dags-<S>.json`` / ``.md`` (``-partial`` until the end, ``-interrupted``
    after Ctrl-C); the partial files are removed when the final ones are written."""
    report["total_seconds"] = round(time.perf_counter() - began, 1)
    report["targets"] = dag_targets(report)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    base = args.results_dir / f"scale-dags-{args.scale:g}"
    suffix = "-partial" if not final else "-interrupted" if report.get("interrupted") else ""
    stem = Path(f"{base}{suffix}")
    Path(f"{stem}.json").write_text(json.dumps(report, indent=1, default=_json_default) + "\n")
    markdown = dags_markdown(report)
    Path(f"{stem}.md").write_text(markdown)
    if final:
        for extension in (".json", ".md"):
            Path(f"{base}-partial{extension}").unlink(missing_ok=True)
    return stem, markdown


def _dag_harness():
    try:
        from benchmarks import dag_harness
    except ModuleNotFoundError:  # python benchmarks/scale.py: the script's folder is on sys.path
        import dag_harness
    return dag_harness


def _workers_ratio(one: int, other: int, runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The nightly DAG with ``one`` and ``other`` task processes at once: seconds of each, fewer first, and how many
    times faster the run with more workers was."""
    fewer, more = sorted((one, other))
    seconds = [runs[fewer]["tasks_seconds"], runs[more]["tasks_seconds"]]
    return {"workers": [fewer, more], "seconds": seconds, "speedup": _ratio(*seconds),
            "ok": [runs[fewer]["ok"], runs[more]["ok"]]}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 2) if numerator and denominator else None


def dag_targets(report: dict[str, Any]) -> list[str]:
    """The issue's targets for each DAG run on a store of 1M customers or more (time: the whole ``dags test``
    command, Airflow's start included; memory: every task process tree), and 10 x S <= 11 x the time."""
    targets = []
    for label, run in report["runs"].items():
        store = next((s for name, s in report["stores"].items() if f" {name} " in f" {label} "), None)
        if store is None or store["customers"] < CUSTOMERS_AT_SCALE_1:
            continue
        limit = DAG_TARGETS["training_seconds" if run["dag_id"] == DAG_IDS["training"] else "nightly_seconds"]
        over = [t["task"] for t in run["tasks"] if t["peak_mb"] > DAG_TARGETS["task_peak_mb"]]
        targets.append(
            f"{label} at {store['customers']:,} customers: {'ran' if run['ok'] else 'FAILED'}; "
            f"{run['wall_seconds']}s (target <= {limit:.0f} s: {'met' if run['ok'] and run['wall_seconds'] <= limit else 'MISSED'}), "
            f"max task peak {run['max_task_peak_mb']:,} MB in {run['max_task']} (target <= 8192 MB per task: "
            f"{'met' if not over else 'MISSED by ' + ', '.join(over)})")
    ten = report["ratios"].get("ten_x")
    if ten and ten["time_ratio"] is not None:
        met = ten["time_ratio"] <= TARGETS["ten_x_time_ratio"]
        targets.append(f"Nightly DAG at 10 x S: {ten['time_ratio']}x the time of S (target <= 11x: "
                       f"{'met' if met else 'MISSED'})")
    if not any(" customers: " in t for t in targets):
        targets.append("The 1M-customer targets are checked only when a run's store has 1,000,000 customers or more.")
    return targets


def dags_markdown(report: dict[str, Any]) -> str:
    task_table = _dag_harness().task_table
    lines = [
        f"# Whole DAGs per task, S = {report['scale']} ({report['date']})", "",
        f"Command: `{report['command']}`", "",
        *(["**Interrupted** (Ctrl-C): the runs below are those that had started.", ""] if report.get("interrupted") else []),
        "Each DAG ran through `airflow dags test --use-executor` with the LocalExecutor: every task in its own "
        "process, `parallelism` of them at once. Wall s is the task instance's duration in Airflow's metadata; the "
        "whole-DAG line gives first task start to last task end (and the `dags test` command, Airflow's start "
        "included). Peak MB is the task process tree's peak RSS (VmHWM, sampled every 0.25 s; chDB is in process); "
        "PSS MB its peak proportional set size (shared pages counted once), read every 5 s (`-`: a shorter task). "
        "Rows: what the task's return value says (publish: rows published)."
        f" Training params: `{json.dumps(report['training_conf'])}`; nightly params: "
        f"`{json.dumps(report.get('nightly_conf', {}))}`.", "",
    ]
    for label, store in report["stores"].items():
        lines.append(f"- {label}: {store['customers']:,} customers x {report['days']} days: {store['events']:,} events, "
                     f"{store['orders']:,} orders, {store['order_lines']:,} order lines")
    lines += ["", *task_table(report["runs"]), "", "## Ratios", ""]
    for ratio in report["ratios"].get("workers", []):
        failed = "" if all(ratio["ok"]) else " (a run FAILED: see its tasks above)"
        lines.append(f"- Nightly DAG with {ratio['workers'][0]} vs {ratio['workers'][1]} task processes at once: "
                     f"{ratio['seconds'][0]}s vs {ratio['seconds'][1]}s of tasks: {ratio['workers'][1]} workers "
                     f"**{ratio['speedup']}x** as fast{failed}")
    ten = report["ratios"].get("ten_x")
    if ten:
        lines.append(f"- Nightly DAG at 10 x S vs S: {ten['seconds'][1]}s vs {ten['seconds'][0]}s of tasks = "
                     f"**{ten['time_ratio']}x** (whole command: {ten['wall_ratio']}x)")
    lines += ["", "## Targets", "", *[f"- {t}" for t in report["targets"]]]
    return "\n".join(lines) + "\n"


def _nightly_datasets(choice: str) -> tuple[str, ...] | None:
    from ml.pipeline import CUSTOMER_SCORE_DATASETS, DAG_DATASETS

    if choice == "all":
        return None
    if choice == "dag":
        return tuple(DAG_DATASETS["nightly"])
    return tuple(CUSTOMER_SCORE_DATASETS)


def _targets(report: dict[str, Any], customers: int) -> list[str]:
    targets = []
    for label, stages in report["paths"].items():
        if not label.startswith("nightly"):
            continue
        store = report["stores"][label.removeprefix("nightly ")]
        if store["customers"] >= CUSTOMERS_AT_SCALE_1:
            total = _summary(stages)
            met_time = total["seconds"] <= TARGETS["nightly_seconds_at_1m"]
            met_memory = total["peak_mb"] <= TARGETS["nightly_peak_mb_at_1m"]
            targets.append(
                f"Nightly path at {store['customers']:,} customers / {store['events']:,} events: {total['seconds']}s "
                f"(target <= 600 s: {'met' if met_time else 'MISSED'}), peak {total['peak_mb']:,} MB per stage process "
                f"(target <= 8192 MB: {'met' if met_memory else 'MISSED'}; PostgreSQL peak {total['postgres_peak_mb']:,} MB)"
            )
    publish = report["ratios"].get("publish")
    if publish:
        ratio = publish["copy_vs_to_sql_none"]
        targets.append(f"COPY publish >= 20x faster than to_sql: {ratio}x ({'met' if ratio >= 20 else 'MISSED'})")
    ten = report["ratios"].get("ten_x")
    if ten:
        targets.append(f"10x the data costs <= 11x the time: {ten['time_ratio']}x ({'met' if ten['met'] else 'MISSED'})")
    if not any(t.startswith("Nightly path at") for t in targets):
        targets.append("The 1M-customer target is checked only when a run reaches 1,000,000 customers.")
    return targets


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.date, Path)):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


if __name__ == "__main__":
    main()
