"""Benchmark: the CAC forecast against the CAC that followed, on synthetic stores.

For each seed: a store of ``--customers`` customers over ``--days`` days, its conversion paths joined in a
temporary chDB, the orders credited by ``--model`` (default the nightly default, ``excess_exposure``) over the
whole history. Then at each origin T (the last ``--origins`` 28-day windows before the end) exactly what the
nightly step does as of T: the media model fitted on the history before T with the attributed target
(:func:`ml.families.budget.fit_media_model`, 20 bootstrap refits), the new-customer shares of the 28 days before
T, and :func:`ml.attribution.economics.cac_forecast` at the recent mean spend; then
:func:`~ml.attribution.economics.cac_backtest` as of T + 28: the realised CAC (spend / new customers credited in
the window), the absolute percentage error and whether the 80 % interval held it. Per channel and overall:
median APE and coverage. Printed as markdown with the command; ``benchmarks/results/cac_forecast.md``.

    .venv/bin/python benchmarks/cac_forecast.py                      # 3 seeds x 20k x 365 days, 3 origins
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa

from features.attribution import conversion_paths
from features.media import media_history
from ml.attribution import economics, nightly
from ml.families.budget import MediaConfig, fit_media_model
from revopt.platform.events import open_event_store
from revopt.sample_data.synth import generate_store

START = dt.date(2024, 1, 1)
HORIZON = 28
RESULTS = Path(__file__).resolve().parent / "results"


def measure(seed: int, customers: int, days: int, origins: int, model: str) -> pd.DataFrame:
    store = generate_store(customers, days, START, seed=seed)
    lines = store.shop["order_lines"]
    value = (lines["quantity"] * lines["unit_price"]).groupby(lines["order_id"]).sum()
    orders = store.shop["orders"].assign(order_value=store.shop["orders"]["order_id"].map(value).fillna(0.0))
    spend = store.shop["marketing_spend"]
    end = START + dt.timedelta(days=days)
    run_ts = pd.Timestamp(end, tz="UTC")
    with tempfile.TemporaryDirectory(prefix="revopt-cac-") as tmp:
        events = open_event_store(url=None, chdb_path=Path(tmp), database="revopt")
        events.insert_arrow("events", pa.Table.from_pandas(store.events, preserve_index=False))
        paths = conversion_paths(events, orders, run_ts - pd.Timedelta(days=days), run_ts, 30,
                                 store.shop["customers"]["customer_id"])
        events.close()
    credits = nightly.history_credits(paths, orders, end, model, nightly.AttributionSettings())
    split = nightly.attributed_orders(orders, credits)
    rows = []
    for k in range(origins, 0, -1):
        origin = end - dt.timedelta(days=HORIZON * k)
        before = orders[orders["order_ts"] < pd.Timestamp(origin, tz="UTC")]
        history = media_history(spend, split, origin, days)
        fit = fit_media_model(history, MediaConfig(target="attributed", n_bootstrap=20, random_state=seed))
        known = credits[credits["journey_id"].isin(before["order_id"])]
        shares = economics.new_customer_shares(before, known, origin)
        forecast = economics.cac_forecast(fit, history, shares, horizon_days=HORIZON, random_state=seed)
        scored = economics.cac_backtest(forecast.assign(origin=origin), orders, credits, spend,
                                        origin + dt.timedelta(days=HORIZON))
        rows.append(scored.assign(seed=seed))
    return pd.concat(rows, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--origins", type=int, default=3)
    parser.add_argument("--model", default="excess_exposure")
    args = parser.parse_args(argv)
    command = "python benchmarks/cac_forecast.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    table = pd.concat([measure(seed, args.customers, args.days, args.origins, args.model)
                       for seed in range(1, args.seeds + 1)], ignore_index=True)
    scored = table.dropna(subset=["ape"])
    per_channel = scored.groupby("channel").agg(
        forecasts=("ape", "size"), median_ape=("ape", "median"), mean_ape=("ape", "mean"),
        coverage=("inside_interval", lambda v: v.dropna().astype(float).mean()),
        mean_cac=("cac", "mean"), mean_realised=("realised_cac", "mean"))
    lines = [f"`{command.strip()}` ({dt.date.today()}): {len(table)} forecasts, {len(scored)} with a realised CAC", "",
             "| channel | forecasts | median APE | mean APE | 80 % interval coverage | mean forecast CAC | mean realised CAC |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {c} | {int(r.forecasts)} | {r.median_ape:.1%} | {r.mean_ape:.1%} | {r.coverage:.0%} | {r.mean_cac:.1f} | "
              f"{r.mean_realised:.1f} |" for c, r in per_channel.iterrows()]
    lines += [f"| **all** | {len(scored)} | {scored['ape'].median():.1%} | {scored['ape'].mean():.1%} | "
              f"{scored['inside_interval'].dropna().astype(float).mean():.0%} | | |"]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cac_forecast.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
