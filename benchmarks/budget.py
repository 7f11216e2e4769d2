"""Benchmark: the budget allocation core (:mod:`ml.families.budget`) on synthetic stores with known response curves.

For each store (:func:`revopt.sample_data.synth.generate_store`, run date = the day after the data) and each
media model variant (``target`` x ``outcome``):

1. **allocation**: tune (:func:`ml.families.budget.tune_media_model`), fit, and allocate under the default
   constraints (total = current daily spend, +/-30 % per channel). The recommendation, the
   current split and the **oracle** (the same optimiser fed the true curves, same constraints)
   are all evaluated with the *true* curves of ``truth.channels``: steady-state lift
   ``max_lift x hill(s / (1 - decay))`` converted to revenue with the store's baseline revenue on
   the last 28 days (revenue / ``truth.daily_intensity.marketing_lift``). Reported: the oracle's
   gain over current (% of revenue), the share of that gain the recommendation captures (the
   target is >= 98 %), the share of the oracle's total revenue, and the same share for the
   untuned default config;
2. **recovery**: relative error of decay, half saturation (adstock units), Hill slope and max
   lift per channel against the truth, and how often the 90 % bootstrap interval covers it;
3. **fit quality**: MAPE / weekly MAPE / R2 of daily revenue on the last 8 weeks, the test window the
   tuning never sees (:func:`ml.families.budget.media_backtest`), with the "media held at their mean"
   reference and the family's naive baseline (:func:`ml.families.budget.no_response_baseline`, the
   gate's quality floor, with the paired bootstrap's one-sided p-value); and on interleaved held-out
   weeks (:func:`ml.families.budget.media_crossval`; the tuning objective is its MAPE on the days
   before the test window);
4. targets ``total`` vs ``attributed`` side by side; ``attributed`` labels each order with the channel the store
   recorded (its last touch), ``attributed:<model>`` splits it by an attribution model on the conversion paths
   (joined in a temporary chDB), ``attributed:cause`` by the generator's true cause (an oracle).

Prints markdown tables, with the command, date and wall times::

    .venv/bin/python benchmarks/budget.py
    .venv/bin/python benchmarks/budget.py --sizes 20000x365 --seeds 1 2 3 4 5 6 --outcomes orders revenue
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import shlex
import sys
import time

import numpy as np
import pandas as pd

from features.media import current_spend, media_history
from ml.evaluation import compare
from ml.families.budget import (
    MAPE,
    BudgetConstraints,
    MediaConfig,
    allocate_budget,
    allocate_spend,
    fit_from_curves,
    fit_media_model,
    held_out_weeks,
    media_crossval,
    no_response_baseline,
    tune_media_model,
)
from revopt.sample_data.synth import generate_store

logger = logging.getLogger("benchmarks.budget")

RECENT_DAYS = 28
PARAMETERS = {"decay": "adstock_decay", "half_saturation": "half_saturation", "slope": "hill_slope", "max_lift": "max_lift"}


def store_frames(n_customers: int, days: int, start: dt.date, seed: int) -> tuple[object, pd.DataFrame, pd.Timestamp]:
    """A synthetic store and its media history as the nightly extract would give it: orders with
    order_value = sum(quantity x unit_price) of their lines and n_lines."""
    store = generate_store(n_customers, days, start, seed=seed)
    orders = _orders(store)
    run_date = pd.Timestamp(start) + pd.Timedelta(days=days)
    return store, media_history(store.shop["marketing_spend"], orders, run_date, days), run_date


def _orders(store: object) -> pd.DataFrame:
    lines = store.shop["order_lines"]
    value = (lines["quantity"] * lines["unit_price"]).groupby(lines["order_id"]).agg(["sum", "size"])
    orders = store.shop["orders"]
    return orders.assign(order_value=orders["order_id"].map(value["sum"]).fillna(0.0),
                         n_lines=orders["order_id"].map(value["size"]).fillna(0).astype("int64"))


#: what labels the orders for the attributed target: ``attributed`` is the channel the store recorded (the
#: last touch); ``attributed:cause`` the generator's true cause (an oracle no store has);
#: ``attributed:<model>`` an attribution model of :mod:`ml.attribution.nightly` on the conversion paths
ATTRIBUTIONS = ("cause", "recorded", *("markov", "shapley", "excess_exposure", "linear", "first_touch",
                                       "last_non_direct_touch", "time_decay", "position_based"))


def attributed_history(store: object, target: str, days: int, run_date: pd.Timestamp) -> pd.DataFrame:
    """The media history of ``target`` (``attributed:<label>``, :data:`ATTRIBUTIONS`)."""
    label = target.split(":", 1)[1]
    orders = _orders(store)
    if label == "cause":
        cause = store.truth["order_causes"].set_index("order_id")["channel"]
        orders = orders.assign(channel=orders["order_id"].map(cause).fillna(orders["channel"]))
    elif label != "recorded":
        import tempfile
        from pathlib import Path

        import pyarrow as pa

        from features.attribution import conversion_paths
        from ml.attribution import nightly
        from revopt.platform.events import open_event_store

        with tempfile.TemporaryDirectory(prefix="revopt-budget-paths-") as tmp:
            events = open_event_store(url=None, chdb_path=Path(tmp), database="revopt")
            events.insert_arrow("events", pa.Table.from_pandas(store.events, preserve_index=False))
            run_ts = run_date.tz_localize("UTC")
            paths = conversion_paths(events, orders, run_ts - pd.Timedelta(days=days), run_ts, 30,
                                     store.shop["customers"]["customer_id"])
            events.close()
        credits = nightly.history_credits(paths, orders, run_date.date(), label, nightly.AttributionSettings())
        orders = nightly.attributed_orders(orders, credits)
    return media_history(store.shop["marketing_spend"], orders, run_date, days)


def true_curves(store: object, history: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """The truth as a known-curves fit: max revenue per day = max lift x the recent baseline revenue."""
    lift = store.truth["daily_intensity"].set_index("day")["marketing_lift"].reindex(history["day"]).to_numpy()
    baseline = float((history["revenue"].to_numpy() / lift)[-RECENT_DAYS:].mean())
    truth = store.truth["channels"].rename(columns={"adstock_decay": "decay", "hill_slope": "slope"})
    truth = truth.assign(max_revenue_per_day=truth["max_lift"] * baseline)
    return truth[["channel", "decay", "half_saturation", "slope", "max_revenue_per_day"]], baseline


def true_revenue(truth: pd.DataFrame, spend: pd.Series) -> float:
    """Steady-state incremental revenue per day of a split under the true curves."""
    t = truth.set_index("channel").loc[spend.index]
    adstock = spend.to_numpy() / (1.0 - t["decay"].to_numpy())
    ratio = (adstock / t["half_saturation"].to_numpy()) ** t["slope"].to_numpy()
    return float(np.sum(t["max_revenue_per_day"].to_numpy() * ratio / (1.0 + ratio)))


def evaluate_split(truth: pd.DataFrame, baseline: float, current: pd.Series, oracle: pd.Series, split: pd.Series) -> dict[str, float]:
    r_now, r_best, r_split = (true_revenue(truth, s) for s in (current, oracle, split))
    gain = r_best - r_now
    return {
        "oracle_gain_pct": 100.0 * gain / (baseline + r_now),
        "gain_share": (r_split - r_now) / gain if gain > 1e-9 * baseline else float("nan"),
        "total_share": (baseline + r_split) / (baseline + r_best),
    }


def run_store(n_customers: int, days: int, start: dt.date, seed: int, variants: list[tuple[str, str]], trials: int,
              n_bootstrap: int, timeout: float) -> list[dict[str, object]]:
    began = time.perf_counter()
    store, store_history, run_date = store_frames(n_customers, days, start, seed)
    history = store_history
    histories = {target: attributed_history(store, target, days, run_date)
                 for target in {t for t, _ in variants if ":" in t}}
    generated = time.perf_counter() - began
    truth, baseline = true_curves(store, history)
    constraints = BudgetConstraints()
    current = current_spend(history, constraints.current_window_days)
    oracle_allocation = allocate_spend(fit_from_curves(truth, baseline), current, constraints)
    oracle = oracle_allocation.table.set_index("channel")["recommended_spend"]
    true_params = store.truth["channels"].set_index("channel")
    rows = []
    for target, outcome in variants:
        t0 = time.perf_counter()
        history = histories[target] if ":" in target else store_history
        base = MediaConfig(target=target.split(":")[0], outcome=outcome, n_bootstrap=0)
        tuning = tune_media_model(history, base, n_trials=trials, timeout_seconds=timeout)
        t_tune = time.perf_counter() - t0
        t0 = time.perf_counter()
        fit = fit_media_model(history, dataclasses.replace(tuning.config, n_bootstrap=n_bootstrap))
        t_fit = time.perf_counter() - t0
        allocation = allocate_budget(fit, history, constraints)
        split = allocation.table.set_index("channel")["recommended_spend"]
        default_split = allocate_budget(fit_media_model(history, base), history, constraints).table.set_index("channel")["recommended_spend"]
        quality = evaluate_split(truth, baseline, current, oracle, split)
        quality["default_gain_share"] = evaluate_split(truth, baseline, current, oracle, default_split)["gain_share"]
        held_out = held_out_weeks(history, tuning.config)
        backtest = held_out.scores()
        floor = compare(held_out.evaluation("tuned"), no_response_baseline(history, base), MAPE)
        backtest.update(baseline_mape=floor.reference_value, baseline_p=floor.p_value)
        crossval = media_crossval(history, tuning.config)
        table = fit.channels.set_index("channel").loc[true_params.index]
        recovery = {name: (table[name] / true_params[column] - 1.0) for name, column in PARAMETERS.items()}
        recovery["decay_abs"] = table["decay"] - true_params["adstock_decay"]
        covered = [((table[f"{name}_low"] <= true_params[column]) & (true_params[column] <= table[f"{name}_high"])).to_numpy()
                   for name, column in PARAMETERS.items()]
        rows.append({
            "store": f"{n_customers:,} x {days}", "seed": seed, "target": target, "outcome": outcome,
            **quality, "moved": allocation.moved, "reason": allocation.reason.split(";")[0],
            "recovery": pd.DataFrame(recovery), "coverage": float(np.mean(covered)),
            "backtest": backtest, "crossval": crossval, "tuning": tuning,
            "revenue_per_day": float(history["revenue"].mean()),
            "seconds": {"generate": generated, "tune": t_tune, "fit": t_fit},
        })
        logger.warning("%s seed %d %s/%s: gain share %.3f (%.0fs)", rows[-1]["store"], seed, target, outcome,
                       quality["gain_share"], time.perf_counter() - began)
    return rows


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def print_results(rows: list[dict[str, object]]) -> None:
    print("\n### 1. Allocation quality under the true curves (default constraints: total = current, +/-30 %)\n")
    print("| store (customers x days) | seed | target | outcome | oracle gain, % of revenue | **share of oracle gain** (tuned) | "
          "default config | share of oracle total revenue | moved | reason (first clause) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['store']} | {r['seed']} | {r['target']} | {r['outcome']} | {r['oracle_gain_pct']:.2f} | "
              f"**{_fmt(r['gain_share'])}** | {_fmt(r['default_gain_share'])} | {r['total_share']:.5f} | {r['moved']} | "
              f"{r['reason'][:90]} |")

    print("\nSummary per variant (mean / median / min share of the oracle gain; stores with >= 98 %):\n")
    print("| target | outcome | stores | mean | median | min | >= 0.98 | mean share of total revenue |")
    print("|---|---|---|---|---|---|---|---|")
    frame = pd.DataFrame([{k: r[k] for k in ("target", "outcome", "gain_share", "total_share")} for r in rows])
    for (target, outcome), g in frame.groupby(["target", "outcome"], sort=False):
        s = g["gain_share"].dropna()
        print(f"| {target} | {outcome} | {len(g)} | {s.mean():.3f} | {s.median():.3f} | {s.min():.3f} | "
              f"{int((s >= 0.98).sum())}/{len(s)} | {g['total_share'].mean():.5f} |")

    print("\n### 2. Parameter recovery: median |relative error| over channels and stores (90 % interval coverage)\n")
    print("| store | target | outcome | decay | decay, absolute error | half saturation | slope | max lift | coverage of the truth |")
    print("|---|---|---|---|---|---|---|---|---|")
    keyed: dict[tuple[str, str, str], list[dict[str, object]]] = {}
    for r in rows:
        keyed.setdefault((r["store"], r["target"], r["outcome"]), []).append(r)
    for (store, target, outcome), group in keyed.items():
        errors = pd.concat([g["recovery"] for g in group]).abs().median()
        print(f"| {store} | {target} | {outcome} | {errors['decay']:.2f} | {errors['decay_abs']:.2f} | {errors['half_saturation']:.2f} | "
              f"{errors['slope']:.2f} | {errors['max_lift']:.2f} | {np.mean([g['coverage'] for g in group]):.2f} |")
    print("\nPer channel (relative error, median over the stores of a size):\n")
    print("| store | target | outcome | channel | decay | half saturation | slope | max lift |")
    print("|---|---|---|---|---|---|---|---|")
    for (store, target, outcome), group in keyed.items():
        per_channel = pd.concat([g["recovery"] for g in group]).groupby(level=0).median().drop(columns="decay_abs")
        for channel, e in per_channel.iterrows():
            print(f"| {store} | {target} | {outcome} | {channel} | {e['decay']:+.2f} | {e['half_saturation']:+.2f} | "
                  f"{e['slope']:+.2f} | {e['max_lift']:+.2f} |")

    print("\n### 3. Fit quality on held-out days (daily revenue of the fitted series)\n")
    print("| store | seed | target | outcome | test window (last 8 weeks): MAPE / weekly MAPE / R2 | media at their mean: MAPE | "
          "no-spend-response baseline: MAPE (p) | interleaved weeks before it: MAPE default / best trial (paired t) | "
          "all weeks interleaved: R2 | config used (regularisation, trend smoothing, Fourier) | seconds: generate / tune / fit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b, c, t, s = r["backtest"], r["crossval"], r["tuning"], r["seconds"]
        cfg = t.config
        best = t.study.best_value if t.n_trials else float("nan")
        paired_t = t.study.best_trial.user_attrs.get("paired_t", float("nan")) if t.n_trials else float("nan")
        print(f"| {r['store']} | {r['seed']} | {r['target']} | {r['outcome']} | {b['mape']:.3f} / {b['weekly_mape']:.3f} / "
              f"{b['r2']:.2f} | {b['mape_no_media']:.3f} | {b['baseline_mape']:.3f} ({_fmt(b['baseline_p'])}) | "
              f"{t.default_value:.3f} / {best:.3f} ({_fmt(paired_t, 1)}) | {c['r2']:.2f} | "
              f"{cfg.regularisation:.2g}, {cfg.trend_smoothing:.2g}, {cfg.fourier_order} | "
              f"{s['generate']:.1f} / {s['tune']:.1f} / {s['fit']:.1f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["20000x365", "100000x365"], help="customers x days per store size")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--large-seeds", type=int, default=2, help="how many of the seeds the largest size runs")
    parser.add_argument("--targets", nargs="+", default=["total", "attributed"],
                        choices=["total", "attributed", *(f"attributed:{label}" for label in ATTRIBUTIONS)],
                        help="attributed = the recorded channel (last touch); attributed:<label> (ATTRIBUTIONS)")
    parser.add_argument("--outcomes", nargs="+", default=["orders"], choices=["orders", "revenue"])
    parser.add_argument("--trials", type=int, default=12, help="Optuna trials per tuning")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per tuning")
    parser.add_argument("--bootstrap", type=int, default=20, help="bootstrap refits for the intervals")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2024, 1, 1))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    began = time.perf_counter()
    print(f"command: `{' '.join(shlex.quote(a) for a in ['.venv/bin/python', 'benchmarks/budget.py', *(argv if argv is not None else sys.argv[1:])])}`"
          f"  date: {dt.date.today()}  start: {args.start}")
    sizes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes]
    largest = max(n for n, _ in sizes)
    variants = [(t, o) for o in args.outcomes for t in args.targets]
    rows = []
    for n_customers, days in sizes:
        seeds = args.seeds[: args.large_seeds] if n_customers == largest and len(sizes) > 1 else args.seeds
        for seed in seeds:
            rows += run_store(n_customers, days, args.start, seed, variants, args.trials, args.bootstrap, args.timeout)
    print_results(rows)
    print(f"\ntotal wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
