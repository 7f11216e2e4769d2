"""Benchmark: each attribution model's channel shares against the true incremental shares of a synthetic store.

The generator (:mod:`revopt.sample_data.synth`) draws every order's *cause*: the paid channel whose spend
brought it (with probability its share of the day's marketing lift) or the unpaid channel of the store's
baseline demand; ``truth.order_causes`` keeps it. Upper-funnel channels mostly introduce: their orders come
after an exposure session of that channel, and the purchase session arrives through a closer (direct,
organic, brand search), which is what the store records on the order. A channel's **true incremental share**
is its share of the window's orders by cause.

For each seed: a store of ``--customers`` customers over ``--days`` days, its events in a temporary chDB;
the conversion paths of the last ``--window`` days joined there (:func:`features.attribution.conversion_paths`,
touches ``--lookback`` days before each order); every nightly model (:mod:`ml.attribution.nightly`, the Markov
model at each ``--markov-orders``) and the recorded channel; per model the conversion share of each channel
and the mean absolute error over channels against the truth (in share points). Results: mean and worst over
seeds, printed as markdown with the command, and written to ``benchmarks/results/attribution_truth.json``.

    .venv/bin/python benchmarks/attribution_truth.py                   # 3 seeds x 20k customers x 365 days, ~20 s
    .venv/bin/python benchmarks/attribution_truth.py --design no-assists   # the recorded last touch is the truth
    .venv/bin/python benchmarks/attribution_truth.py --seeds 1 --customers 5000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.attribution import conversion_paths
from ml.attribution import nightly
from revopt.platform.events import open_event_store
from revopt.sample_data.synth import NO_ASSISTS, AttributionDesign, generate_store

START = dt.date(2024, 1, 1)
RESULTS = Path(__file__).resolve().parent / "results"
#: the generator's journey designs: the default (assisted upper funnel, browse traffic with its own mix), no
#: assisted orders (the recorded last touch is then the truth), browse traffic drawn like the order causes
DESIGNS = {"default": AttributionDesign(), "no-assists": NO_ASSISTS,
           "cause-mix": AttributionDesign(traffic_weight=None)}


def order_values(shop: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The orders extract's shape (order_id, customer_id, order_ts, channel, status, order_value) from a store."""
    lines = shop["order_lines"]
    value = (lines["quantity"] * lines["unit_price"]).groupby(lines["order_id"]).sum()
    return shop["orders"].assign(order_value=shop["orders"]["order_id"].map(value).fillna(0.0))


def measure(seed: int, customers: int, days: int, window: int, lookback: int, markov_orders: list[int],
            design: str = "default") -> dict:
    """One seed: true shares, each model's shares and MAE against them, and the timings."""
    began = time.perf_counter()
    store = generate_store(customers, days, START, seed=seed, attribution=DESIGNS[design])
    generated = time.perf_counter() - began
    run_date = START + dt.timedelta(days=days)
    orders = order_values(store.shop)
    with tempfile.TemporaryDirectory(prefix="revopt-attr-truth-") as tmp:
        events = open_event_store(url=None, chdb_path=Path(tmp), database="revopt")
        events.insert_arrow("events", pa.Table.from_pandas(store.events, preserve_index=False))
        began = time.perf_counter()
        run_ts = pd.Timestamp(run_date, tz="UTC")
        paths = conversion_paths(events, orders, run_ts - pd.Timedelta(days=days), run_ts, lookback,
                                 store.shop["customers"]["customer_id"])
        path_seconds = time.perf_counter() - began
        events.close()
    began = time.perf_counter()
    credits = []
    for order in markov_orders:
        settings = nightly.AttributionSettings(window_days=window, markov_order=order)
        names = nightly.MODEL_NAMES if order == markov_orders[0] else ("markov",)
        found = nightly.attribute(paths, run_date, settings, names=names)
        if order != 1 or len(markov_orders) > 1:
            found.loc[found["model"] == "markov", "model"] = f"markov_{order}"
        credits.append(found)
    credits.append(nightly.recorded_credits(orders, run_date, window))
    credits = pd.concat(credits, ignore_index=True)
    model_seconds = time.perf_counter() - began
    shares = nightly.channel_shares(credits)
    causes = store.truth["order_causes"].set_index("order_id")["channel"]
    window_orders = credits.loc[credits["model"] == nightly.RECORDED, "journey_id"].unique()
    truth = causes.reindex(window_orders).value_counts(normalize=True)
    channels = sorted(set(shares.columns) | set(truth.index))
    shares, truth = shares.reindex(columns=channels, fill_value=0.0), truth.reindex(channels, fill_value=0.0)
    mae = (shares - truth).abs().mean(axis=1)
    # per order: the credit each model gives the true cause, over all orders and over those whose recorded
    # channel (the last touch) is not the cause
    cause_of = causes.reindex(credits["journey_id"]).to_numpy()
    on_cause = credits.assign(hit=np.where(credits["channel"].to_numpy() == cause_of, credits["credit"], 0.0))
    per_order = on_cause.groupby(["model", "journey_id"])["hit"].sum().unstack(0)
    recorded = orders.set_index("order_id")["channel"].reindex(per_order.index)
    missed = recorded.to_numpy() != causes.reindex(per_order.index).to_numpy()
    return {"seed": seed, "orders": int(len(window_orders)), "truth": truth.to_dict(),
            "shares": shares.to_dict(orient="index"), "mae": mae.to_dict(),
            "credit_to_cause": per_order.mean().to_dict(),
            "credit_to_cause_not_last": per_order[missed].mean().to_dict(), "orders_not_last": int(missed.sum()),
            "seconds": {"generate": generated, "paths": path_seconds, "models": model_seconds}}


def report(results: list[dict], command: str) -> str:
    mae = pd.DataFrame({r["seed"]: r["mae"] for r in results})
    truth = pd.DataFrame({r["seed"]: r["truth"] for r in results}).mean(axis=1)
    shares = pd.concat({r["seed"]: pd.DataFrame(r["shares"]).T for r in results}).groupby(level=1).mean()
    lines = [f"`{command}` ({dt.date.today()}, {len(results)} seeds, "
             f"{np.mean([r['orders'] for r in results]):.0f} orders per window)", "",
             "| model | MAE (share points), mean | worst seed | " + " | ".join(truth.index) + " |",
             "|---|---|---|" + "---|" * len(truth)]
    lines.append("| **truth** | | | " + " | ".join(f"{v:.1%}" for v in truth) + " |")
    for model in mae.mean(axis=1).sort_values().index:
        row = shares.loc[model].reindex(truth.index, fill_value=0.0)
        lines.append(f"| {model} | {100 * mae.loc[model].mean():.2f} | {100 * mae.loc[model].max():.2f} | "
                     + " | ".join(f"{v:.1%}" for v in row) + " |")
    to_cause = pd.DataFrame({r["seed"]: r["credit_to_cause"] for r in results}).mean(axis=1)
    not_last = pd.DataFrame({r["seed"]: r["credit_to_cause_not_last"] for r in results}).mean(axis=1)
    lines += ["", f"Mean credit per order to its true cause (all orders / the "
              f"{np.mean([r['orders_not_last'] for r in results]):.0f} per store whose last touch is not the cause):",
              "", "| model | all orders | last touch not the cause |", "|---|---|---|"]
    lines += [f"| {model} | {to_cause[model]:.3f} | {not_last[model]:.3f} |"
              for model in to_cause.sort_values(ascending=False).index]
    seconds = pd.DataFrame([r["seconds"] for r in results]).mean()
    lines += ["", "Seconds per seed: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--window", type=int, default=28, help="attribution window (days before the run date)")
    parser.add_argument("--lookback", type=int, default=30, help="touches this many days before an order")
    parser.add_argument("--markov-orders", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--design", choices=sorted(DESIGNS), default="default", help="the generator's journeys")
    args = parser.parse_args(argv)
    command = "python benchmarks/attribution_truth.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    results = [measure(seed, args.customers, args.days, args.window, args.lookback, args.markov_orders, args.design)
               for seed in range(1, args.seeds + 1)]
    text = report(results, command.strip())
    print(text)
    RESULTS.mkdir(exist_ok=True)
    name = "attribution_truth" if args.design == "default" else f"attribution_truth-{args.design}"
    (RESULTS / f"{name}.json").write_text(json.dumps({"command": command, "results": results}, indent=1, default=float))
    (RESULTS / f"{name}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
