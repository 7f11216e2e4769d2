"""Benchmark (issue 22 item 4): the product's publishing vs the raw COPY limit, side by side, same rows.

Starts a fresh embedded PostgreSQL under a temporary ``REVOPT_HOME``, applies revopt's migrations (so
``scores.customer_scores`` is partitioned by run date, migration 0012) and builds N rows with every column of
that table, ``top_factors`` a ~2 KB JSON as the three families write it (``benchmarks/publish_methods.py``'s
``scores_frame``, the spike this follows). Then, in one run:

- **the raw limit**: ``COPY FROM STDIN`` of the rows already serialised (CSV by ``copy_frame``'s Arrow
  writer; binary by :mod:`revopt.platform.binary_copy`), serialising not counted, into a plain table shaped
  like the published one (primary key included); the faster of the two is the limit;
- **the product** (:mod:`revopt.platform.postgres`, everything counted: privacy filter, encoding, COPY, key,
  statistics, ATTACH): ``publish_partition`` of a new run date while the previous night's partition is there
  (the nightly case), a re-run of that date, and the two-phase API (``stage_slice`` of 4 slices, then
  ``publish_staged``) for the next date; then retention (``drop_old_published_partitions`` of the oldest date).

During each publish a reader loop (its own connection, ``statement_timeout`` 1 s) probes the table's lock and
reads ``max(run_date), count(*)`` of the ``_latest`` view, and a monitor records the strongest lock the
publisher holds on the parent (``publish_methods.Watch``).

    .venv/bin/python benchmarks/publish.py --rows 1000000      # ~4 min, ~7 GB peak, ~10 GB of disk
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from publish_methods import Watch, copy_serialised, scores_frame  # noqa: E402  (the spike's reader and rows)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TABLE = "scores.customer_scores"
RAW = "bench_raw.customer_scores"
DAY0 = dt.date(2025, 6, 1)
#: application_name of the publisher's connection: the lock monitor watches it
PUBLISHER = "revopt-publish-benchmark"


def _name(conn: psycopg.Connection) -> None:
    conn.execute("SELECT set_config('application_name', %s, false)", (PUBLISHER,))
    conn.commit()


def run(rows: int, reader_pause: float) -> dict[str, Any]:
    from revopt.platform.binary_copy import binary_copy_chunks, column_types
    from revopt.platform.config import load_settings
    from revopt.platform.postgres import _csv, discard_staged, publish_partition, publish_staged, stage_slice
    from revopt.platform.retention import drop_old_published_partitions
    from revopt.platform.schema import migrate
    from revopt.platform.stack import connect_postgres, postgres_url, stop_stack

    results: list[dict[str, Any]] = []
    report: dict[str, Any] = {"rows": rows, "date": dt.date.today().isoformat(), "results": results,
                              "command": "python benchmarks/publish.py " + " ".join(sys.argv[1:])}

    def record(method: str, seconds: float, **extra: Any) -> dict[str, Any]:
        entry = {"method": method, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds), **extra}
        results.append(entry)
        watch = extra.get("watch")
        print(f"  {method}: {seconds:.1f} s, {rows / seconds:,.0f} rows/s"
              + (f"; reader max wait {watch['reader_max_wait_s']} s, whole {watch['whole']}, "
                 f"lock {watch['strongest_lock']}" if watch else ""), flush=True)
        return entry

    with tempfile.TemporaryDirectory(prefix="revopt-publish-") as home:
        settings = load_settings({"REVOPT_HOME": home})
        try:
            migrate(settings)
            url = postgres_url(settings)
            with connect_postgres(settings) as conn:
                report["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
                conn.execute("CREATE SCHEMA bench_raw")
                conn.execute(f"CREATE TABLE {RAW} (LIKE {TABLE} INCLUDING ALL)")
                columns = conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema "
                                       "= 'scores' AND table_name = 'customer_scores' ORDER BY ordinal_position").fetchall()
                types = column_types(conn, TABLE)
            frame = scores_frame(columns, rows, DAY0)
            report["top_factors_mean_bytes"] = round(float(frame["top_factors"].str.len().mean()))
            print(f"{rows:,} rows x {len(columns)} columns, top_factors {report['top_factors_mean_bytes']} B/row; "
                  f"PostgreSQL {report['postgres']}", flush=True)
            names = list(frame.columns)

            # 1. the raw limit: bytes already serialised, COPY only
            for form in ("csv", "binary"):
                began = time.perf_counter()
                if form == "csv":
                    chunks = [_csv(frame.iloc[s : s + 200_000]) for s in range(0, len(frame), 200_000)]
                else:
                    chunks = [bytes(b) for b in binary_copy_chunks(frame, types)]
                encode = time.perf_counter() - began
                with connect_postgres(settings) as conn:
                    began = time.perf_counter()
                    copy_serialised(conn, RAW, names, chunks, form)
                    conn.commit()
                    seconds = time.perf_counter() - began
                    conn.execute(f"TRUNCATE {RAW}")
                del chunks
                record(f"raw COPY {form.upper()}, serialised (plain table with primary key)", seconds, raw=True,
                       encode_seconds=round(encode, 2))
            limit = max(r["rows_per_second"] for r in results if r.get("raw"))
            report["raw_limit_rows_per_second"] = limit

            # 2. the product: the nightly new date (the previous night's partition present), a re-run, two-phase
            def publish(method: str, call) -> None:
                with Watch(url, TABLE, PUBLISHER, reader_pause) as watch:
                    began = time.perf_counter()
                    call()
                    seconds = time.perf_counter() - began
                entry = record(method, seconds, watch=watch.summary())
                entry["ratio_to_raw"] = round(entry["rows_per_second"] / limit, 2)
                print(f"    ratio to the raw limit: {entry['ratio_to_raw']}", flush=True)

            day1, day2, day3 = (DAY0 + dt.timedelta(days=n) for n in (1, 2, 3))
            with connect_postgres(settings) as conn:
                publish_partition(conn, TABLE, DAY0, frame.assign(run_date=DAY0))  # the previous night
            for method, day in (("publish_partition, new run date (ATTACH)", day1),
                                ("publish_partition, re-run of that date (DELETE + COPY)", day1)):
                dated = frame.assign(run_date=day)

                def one(dated=dated, day=day) -> None:
                    with connect_postgres(settings) as conn:
                        _name(conn)
                        publish_partition(conn, TABLE, day, dated)
                publish(method, one)
            dated = frame.assign(run_date=day2)

            def two_phase() -> None:
                with connect_postgres(settings) as conn:
                    _name(conn)
                    discard_staged(conn, TABLE, day2)
                    conn.commit()
                    for i in range(4):
                        stage_slice(conn, TABLE, day2, dated.iloc[i::4])
                        conn.commit()
                    publish_staged(conn, TABLE, day2)
            publish("stage_slice x 4 + publish_staged, new run date", two_phase)

            # 3. retention: the oldest night (DAY0) detached CONCURRENTLY and dropped
            began = time.perf_counter()
            removed = drop_old_published_partitions(settings, day3, (day3 - day1).days)
            results.append({"method": "retention: drop_old_published_partitions (1 partition)",
                            "seconds": round(time.perf_counter() - began, 2), "removed": removed})
            print(f"  retention: {results[-1]['seconds']} s, {removed}", flush=True)
            with psycopg.connect(url) as conn:
                report["partition_megabytes"] = round(conn.execute(sql.SQL("SELECT pg_total_relation_size(%s::regclass)"),
                                                                   (f"scores_partitions.customer_scores__p{day1:%Y%m%d}",)
                                                                   ).fetchone()[0] / 2**20)
        finally:
            stop_stack(settings)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [f"{report['rows']:,} rows x customer_scores' columns, top_factors {report['top_factors_mean_bytes']} B/row, "
             f"PostgreSQL {report['postgres']}; raw limit {report['raw_limit_rows_per_second']:,} rows/s; one partition "
             f"{report['partition_megabytes']:,} MB; benchmark peak RSS {report['peak_rss_mb']:,} MB", "",
             "| method | s | rows/s | ratio to raw COPY | reader max wait s | whole | lock on the parent |",
             "|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        watch = r.get("watch") or {}
        lines.append(f"| {r['method']} | {r['seconds']} | {r.get('rows_per_second', '-'):,} | {r.get('ratio_to_raw', '-')} | "
                     f"{watch.get('reader_max_wait_s', '-')} | {watch.get('whole', '-')} | {watch.get('strongest_lock', '-')} |"
                     if "rows_per_second" in r else f"| {r['method']} | {r['seconds']} | - | - | - | - | - |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reader-pause", type=float, default=0.2, help="seconds between a reader's loops")
    args = parser.parse_args()
    report = run(args.rows, args.reader_pause)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"publish_{args.rows}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(markdown(report))
    print(f"written {path}")


if __name__ == "__main__":
    main()
