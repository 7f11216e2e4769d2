"""Benchmark: generate a synthetic store and load it into the embedded stack.

Prints generation and load time separately, rows per second and peak memory, for one size.

    .venv/bin/python benchmarks/seed_store.py --customers 100000 --days 365
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import tempfile
import time

from revopt.platform.config import load_settings
from revopt.sample_data.seed import load_store
from revopt.platform.stack import stop_stack
from revopt.sample_data.synth import generate_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="revopt-bench-") as home:
        settings = load_settings({"REVOPT_HOME": home})
        started = time.perf_counter()
        store = generate_store(args.customers, args.days, dt.date(2024, 1, 1), seed=args.seed)
        generated = time.perf_counter()
        rows = load_store(settings, store)
        loaded = time.perf_counter()
        stop_stack(settings)

    total_rows = sum(rows.values())
    result = {
        "customers": args.customers,
        "days": args.days,
        "generate_seconds": round(generated - started, 2),
        "load_seconds": round(loaded - generated, 2),
        "total_seconds": round(loaded - started, 2),
        "rows": rows,
        "rows_per_second_loaded": round(total_rows / (loaded - generated)),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(result, indent=2))
    print(
        f"\n{args.customers:,} customers x {args.days} days: generate {result['generate_seconds']}s, "
        f"load {result['load_seconds']}s ({result['rows_per_second_loaded']:,} rows/s), "
        f"total {result['total_seconds']}s, peak RSS {result['peak_rss_mb']} MB"
    )


if __name__ == "__main__":
    main()
