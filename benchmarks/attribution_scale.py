"""Benchmark: the nightly attribution at a million customers, paths joined in ClickHouse and every model.

Draws a synthetic store of ``--customers`` customers over ``--days`` days in chunks
(:func:`revopt.sample_data.synth.generate_store_chunks`), loads its events into a temporary chDB (the orders
stay a pandas frame, as the extract gives them), then times as the nightly ``attribute`` step runs them:

1. the conversion paths (:func:`features.attribution.conversion_paths`): journey windows built in pandas,
   inserted into ClickHouse, touchpoints joined there (``--lookback`` days before each order);
2. every nightly model fitted on every path and crediting every order (:func:`ml.attribution.nightly.credit_all`,
   conservation checked), as the nightly ``attribute`` step runs them;
3. the window's per-order rows (what ``scores.order_attribution`` gets; the run's model on the whole history
   is a subset of step 2, what the budget target, the economics and the campaign analytics read).

Peak memory is this process's ``ru_maxrss`` (chDB runs in process). Prints a markdown table with the
command and writes ``benchmarks/results/attribution_scale.json``::

    .venv/bin/python benchmarks/attribution_scale.py                       # 1M customers, 120 days
    .venv/bin/python benchmarks/attribution_scale.py --customers 100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

from features.attribution import conversion_paths
from ml.attribution import nightly
from revopt.platform.events import open_event_store
from revopt.sample_data.synth import generate_store_chunks

START = dt.date(2024, 1, 1)
RESULTS = Path(__file__).resolve().parent / "results"


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--lookback", type=int, default=30)
    parser.add_argument("--window", type=int, default=28)
    parser.add_argument("--chunk-customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    command = "python benchmarks/attribution_scale.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    run_date = START + dt.timedelta(days=args.days)
    run_ts = pd.Timestamp(run_date, tz="UTC")
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="revopt-attr-scale-") as tmp:
        store = open_event_store(url=None, chdb_path=Path(tmp), database="revopt")
        began, orders, customers, n_events = time.perf_counter(), [], [], 0
        for chunk in generate_store_chunks(args.customers, args.days, START, args.seed, args.chunk_customers):
            lines = chunk.shop["order_lines"]
            value = (lines["quantity"] * lines["unit_price"]).groupby(lines["order_id"]).sum()
            orders.append(chunk.shop["orders"].assign(order_value=chunk.shop["orders"]["order_id"].map(value)))
            customers.append(chunk.shop["customers"]["customer_id"])
            store.insert_arrow("events", pa.Table.from_pandas(chunk.events, preserve_index=False))
            n_events += len(chunk.events)
        orders = pd.concat(orders, ignore_index=True)
        timings["generate and load (not nightly)"] = time.perf_counter() - began

        began = time.perf_counter()
        paths = conversion_paths(store, orders, run_ts - pd.Timedelta(days=args.days), run_ts, args.lookback,
                                 pd.concat(customers, ignore_index=True))
        timings["conversion paths (ClickHouse join)"] = time.perf_counter() - began
        store.close()
    settings = nightly.AttributionSettings(window_days=args.window)
    began = time.perf_counter()
    everything = nightly.credit_all(paths, settings)
    timings[f"{len(nightly.MODEL_NAMES)} models on every path, conservation checked"] = time.perf_counter() - began
    began = time.perf_counter()
    credits = nightly.in_window(everything, paths, run_date, args.window)
    summary = nightly.order_rows(credits, run_date)
    history = everything[everything["model"] == "excess_exposure"]
    timings["the window's rows"] = time.perf_counter() - began
    nightly_seconds = sum(v for k, v in timings.items() if "not nightly" not in k)
    result = {"command": command, "date": dt.date.today().isoformat(), "customers": args.customers, "days": args.days,
              "events": n_events, "orders": len(orders), "journeys": int(paths["journey_id"].nunique()),
              "touches": int((paths["position"] >= 0).sum()), "window_orders": int(credits["journey_id"].nunique()),
              "order_attribution_rows": len(summary), "history_credit_rows": len(history), "seconds": timings,
              "nightly_seconds": nightly_seconds, "peak_gb": _peak_gb()}
    lines = [f"`{command.strip()}` ({result['date']}): {args.customers:,} customers, {n_events:,} events, "
             f"{len(orders):,} orders; {result['journeys']:,} journeys with {result['touches']:,} touches; "
             f"{result['window_orders']:,} orders in the {args.window}-day window", "",
             "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds:.1f} |" for step, seconds in timings.items()]
    lines += [f"| **nightly attribution total** | **{nightly_seconds:.1f}** |", "",
              f"Peak memory of the process (chDB in process, generation included): {result['peak_gb']:.1f} GB"]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "attribution_scale.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "attribution_scale.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
