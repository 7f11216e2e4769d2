"""Benchmark: what the rolling-origin backtest costs pricing, send time and budget in training time.

Builds the demo's synthetic store (:func:`revopt.sample_data.synth.generate_store`, 5,000 customers x
365 days by default), the three families' training frames from it in pandas (pricing and budget) and
chDB (send time's engagement extract, the pipeline's own SQL), and times each family's
``training_data`` + ``train`` with ``backtest_origins`` 1 (the latest test window only) and N (the
default 3), with the run's default tuning budget (``n_trials`` 12), one process, no MLflow. Prints a
markdown table: seconds per setting, the extra seconds and share, the origins history allowed and the
backtest's mean +/- sd of the gate's metric and of the baseline's::

    .venv/bin/python benchmarks/backtest_cost.py
    .venv/bin/python benchmarks/backtest_cost.py --customers 2000 --families pricing budget --repeats 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ml.families import budget, pricing, send_time
from ml.params import RunParams
from revopt.sample_data.synth import generate_store, pricing_extract

FAMILIES = {"pricing": pricing.FAMILY, "send_time": send_time.FAMILY, "budget": budget.FAMILY}


def family_frames(store, run_date: pd.Timestamp, days: int) -> dict[str, dict[str, pd.DataFrame]]:
    """Each family's training frames, as the training extract holds them."""
    from revopt.platform.events import open_event_store
    from revopt.platform.extract import engagement_by_hour

    shop = store.shop
    lines = shop["order_lines"]
    value = (lines["quantity"] * lines["unit_price"]).groupby(lines["order_id"]).agg(["sum", "size"])
    orders = shop["orders"].assign(order_value=lambda o: o["order_id"].map(value["sum"]).fillna(0.0),
                                   n_lines=lambda o: o["order_id"].map(value["size"]).fillna(0).astype("int64"))
    sales = pricing_extract(store, run_date.tz_localize(None))
    with tempfile.TemporaryDirectory() as folder:
        events = open_event_store(url=None, chdb_path=Path(folder), database="revopt")
        try:
            events.insert_arrow("events", pa.Table.from_pandas(store.events, preserve_index=False))
            engagement = engagement_by_hour(events, run_date - pd.Timedelta(days=days), run_date)
        finally:
            events.close()
    return {
        "pricing": {"products": sales["products"], "product_daily_sales": sales["sales"], "day_totals": sales["day_totals"]},
        "send_time": {"engagement_by_hour": engagement, "orders": orders, "customers": shop["customers"]},
        "budget": {"marketing_spend": shop["marketing_spend"], "orders": orders},
    }


def time_training(family, frames, run_date: dt.date, params: RunParams) -> tuple[float, dict]:
    started = time.perf_counter()
    data = family.training_data(frames, run_date, params)
    trained = family.train(data, params, [])
    return time.perf_counter() - started, trained


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--origins", type=int, default=RunParams().backtest_origins)
    parser.add_argument("--n-trials", type=int, default=RunParams().n_trials)
    parser.add_argument("--repeats", type=int, default=1, help="timings per setting (the minimum is reported)")
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    start = dt.date(2024, 1, 1)
    run_date = pd.Timestamp(start) + pd.Timedelta(days=args.days)
    started = time.perf_counter()
    store = generate_store(args.customers, args.days, start, seed=args.seed)
    frames = family_frames(store, pd.Timestamp(run_date, tz="UTC"), args.days)
    setup = time.perf_counter() - started

    print(f"`{shlex.join(['.venv/bin/python', 'benchmarks/backtest_cost.py', *sys.argv[1:]])}` on "
          f"{dt.date.today()}: {args.customers:,} customers x {args.days} days (seed {args.seed}), run date "
          f"{run_date.date()}, n_trials {args.n_trials}; store and extracts built in {setup:.0f} s\n")
    print("| family | s, 1 origin | s, requested origins | extra | origins used | gate metric mean ± sd (origins) "
          "| baseline mean ± sd |")
    print("|---|---|---|---|---|---|---|")
    for name in args.families:
        family = FAMILIES[name]
        seconds = {}
        for origins in (1, args.origins):
            params = RunParams(n_trials=args.n_trials, seed=args.seed, backtest_origins=origins)
            runs = [time_training(family, frames[name], run_date.date(), params) for _ in range(args.repeats)]
            seconds[origins] = min(s for s, _ in runs)
            trained = runs[-1][1]
        metric = family.metric.name
        m = trained.metrics

        def summary(key: str) -> str:
            values = ", ".join(f"{m[f'backtest_{key}_origin{k}']:.4f}" for k in range(int(trained.params["backtest_origins"]))
                               if f"backtest_{key}_origin{k}" in m)
            if f"backtest_{key}_std" not in m:
                return f"{m.get(f'backtest_{key}_mean', float('nan')):.4f} ({values})"
            return f"{m[f'backtest_{key}_mean']:.4f} ± {m[f'backtest_{key}_std']:.4f} ({values})"

        base, full = seconds[1], seconds[args.origins]
        print(f"| {name} | {base:.1f} | {full:.1f} | +{full - base:.1f} s (+{(full - base) / base:.0%}) | "
              f"{trained.params['backtest_origins']} of {args.origins} | {metric} {summary(metric)} | "
              f"{summary('baseline_' + metric)} |")


if __name__ == "__main__":
    main()
