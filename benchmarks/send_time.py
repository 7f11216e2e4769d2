"""Benchmark: send-time optimisation (:mod:`ml.families.send_time`) on synthetic stores with known best hours
and on the UCI Online Retail data set.

1. **synthetic**: :func:`revopt.sample_data.synth.generate_store`; the engagement extract is the pipeline's own
   ``ENGAGEMENT_SQL`` run on a temporary chDB store. After tuning on the backtest, every
   recommendation is compared with ``truth.customers.best_hour_local``: the share of opted-in
   customers whose recommended hour is exactly their true best hour and within +/-1 h, overall
   and for customers with at least ``--min-sends`` sends, and the expected open rate at the
   recommended hour as a share of the oracle's, both under the generator's own formula
   ``P_i(h) = open_rate_at_best_i x (0.1 + 0.9 exp(-dh^2 / (2 x 2.5^2)))`` (dh = circular distance
   to the true best hour; the oracle sends at the true best hour, quiet or not). Policies compared:
   always the default hour (10:00 local), the global best hour (argmax of the global prior curve),
   the segment prior (``prior_strength`` 1e9: no personal hours), the raw per-customer argmax of
   opens / sends with no shrinkage and no smoothing (``prior_strength`` 1e-6, bandwidth 0: the prior
   only breaks ties and fills hours never sent at), the model with default settings and tuned.
   With ``by_day_type`` the weekday and weekend rows are weighted 5/7 and 2/7 (the truth has no
   day type).
2. **uci**: UCI Online Retail (``../shared/data/online_retail.csv.gz`` beside the repository) through
   ``benchmarks/customer_models.uci_frames`` (the product's importer, :mod:`revopt.sample_data.importer`):
   only order times, so recommendations come from order hours (signal ``activity``). The invoice
   times are the UK retailer's wall clock, converted to UTC by the importer, and each customer's
   zone comes from their country (:data:`revopt.sample_data.importer.UCI_TIMEZONES`; "Unspecified" and
   "European Community" are read as UTC). Reports the backtest on held-out order hours and the
   distribution of recommended hours.

3. **grain** (issue 22 item 1): the nightly engagement extract hourly (``engagement_by_hour``) and at the
   model's grain (``engagement_by_local_hour``, summed in ClickHouse with the zones joined there) on one
   generated store (``--grain-customers`` x ``--grain-days``, loaded in chunks into a temporary chDB
   folder), each task in its own process as Airflow runs it: extract (query + Parquet), validate (the
   dataset's suite) and recommend (the pyfunc's ``predict`` on the nightly input) with rows, seconds and
   each process's peak RSS, and whether both give identical recommendations.

Prints markdown tables with the command, date and wall times::

    .venv/bin/python benchmarks/send_time.py                                 # both sections
    .venv/bin/python benchmarks/send_time.py --section synthetic --sizes 20000x365 --seeds 1 2
    .venv/bin/python benchmarks/send_time.py --section grain --grain-customers 200000 --grain-days 410
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import multiprocessing
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ml.families.send_time import (
    GLOBAL_SEGMENT,
    SendTimeConfig,
    fit_send_time,
    recommend_send_times,
    send_time_backtest,
    tune_send_time,
)
from revopt.platform.events import open_event_store
from revopt.platform.extract import empty_engagement, engagement_by_hour

# The oracle uses the generator's own constants (private names), not copies that could drift.
from revopt.sample_data.synth import (
    _OPEN_BELL_SD_HOURS,
    _OPEN_FLOOR,
    SyntheticStore,
    generate_store,
)

try:  # python -m benchmarks.send_time
    from benchmarks.customer_models import UCI_PATH, uci_frames
except ModuleNotFoundError:  # python benchmarks/send_time.py: the script's folder is on sys.path
    from customer_models import UCI_PATH, uci_frames

logger = logging.getLogger("benchmarks.send_time")

SYNTHETIC_START = dt.date(2024, 1, 1)
UCI_RUN_DATE = dt.date(2011, 12, 10)  # the day after the last invoice
#: UCI Country -> IANA zone (one zone per country; the USA and Canada span several: their biggest)
POLICIES = ("default hour", "global best hour", "segment prior", "raw argmax", "ours (default config)", "ours (tuned)")


# --- synthetic --------------------------------------------------------------------------------------


def synthetic_engagement(store: SyntheticStore, run_ts: pd.Timestamp, days: int) -> pd.DataFrame:
    """The ``engagement_by_hour`` extract of a generated store: its events in a temporary chDB store,
    queried with the pipeline's own SQL (chDB serves one folder per process: closed right after)."""
    with tempfile.TemporaryDirectory() as folder:
        events = open_event_store(url=None, chdb_path=Path(folder), database="revopt")
        try:
            events.insert_arrow("events", pa.Table.from_pandas(store.events, preserve_index=False))
            return engagement_by_hour(events, run_ts - pd.Timedelta(days=days), run_ts)
        finally:
            events.close()


def _circular(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(np.asarray(a) - np.asarray(b)) % 24
    return np.minimum(d, 24 - d)


def _open_probability(hour: np.ndarray, best: np.ndarray, rate: np.ndarray) -> np.ndarray:
    return rate * (_OPEN_FLOOR + (1.0 - _OPEN_FLOOR) * np.exp(-0.5 * (_circular(hour, best) / _OPEN_BELL_SD_HOURS) ** 2))


def _policy_hours(table: pd.DataFrame) -> pd.DataFrame:
    """customer_id, best_hour, weight (5/7 weekday, 2/7 weekend, 1 for 'any')."""
    weight = table["day_type"].map({"any": 1.0, "weekday": 5 / 7, "weekend": 2 / 7})
    return pd.DataFrame({"customer_id": table["customer_id"].to_numpy(), "best_hour": table["best_hour"].to_numpy(),
                         "weight": weight.to_numpy()})


def _score_policy(hours: pd.DataFrame, truth: pd.DataFrame, groups: dict[str, pd.Index]) -> dict[str, dict[str, float]]:
    frame = hours.merge(truth, left_on="customer_id", right_index=True)
    distance = _circular(frame["best_hour"], frame["best_hour_local"])
    achieved = _open_probability(frame["best_hour"].to_numpy(), frame["best_hour_local"].to_numpy(), frame["open_rate_at_best"].to_numpy())
    w = frame["weight"].to_numpy()
    out = {}
    for name, ids in groups.items():
        mask = frame["customer_id"].isin(ids).to_numpy()
        ww = w[mask]
        out[name] = {
            "exact": float((ww * (distance[mask] == 0)).sum() / ww.sum()),
            "within_1h": float((ww * (distance[mask] <= 1)).sum() / ww.sum()),
            "oracle_share": float((ww * achieved[mask]).sum() / (ww * frame["open_rate_at_best"].to_numpy()[mask]).sum()),
        }
    return out


def run_synthetic(n_customers: int, days: int, seed: int, trials: int, timeout: float, min_sends: int) -> dict[str, object]:
    began = time.perf_counter()
    store = generate_store(n_customers, days, SYNTHETIC_START, seed=seed)
    run_ts = pd.Timestamp(SYNTHETIC_START, tz="UTC") + pd.Timedelta(days=days)
    seconds = {"generate": time.perf_counter() - began}
    t = time.perf_counter()
    engagement = synthetic_engagement(store, run_ts, days)
    seconds["extract"] = time.perf_counter() - t
    customers, orders = store.shop["customers"], store.shop["orders"]

    t = time.perf_counter()
    default_scores = send_time_backtest(engagement, orders, customers, run_ts)
    tuning = tune_send_time(engagement, orders, customers, run_ts, SendTimeConfig(random_state=seed), n_trials=trials,
                            timeout_seconds=timeout)
    seconds["tune"] = time.perf_counter() - t

    t = time.perf_counter()
    tuned_fit = fit_send_time(engagement, orders, customers, run_ts, tuning.config)
    tuned = recommend_send_times(tuned_fit)
    seconds["fit + recommend"] = time.perf_counter() - t
    fits = {
        "segment prior": SendTimeConfig(prior_strength=1e9),
        "raw argmax": SendTimeConfig(prior_strength=1e-6, bandwidth_hours=0.0),
        "ours (default config)": SendTimeConfig(),
    }
    tables = {name: recommend_send_times(fit_send_time(engagement, orders, customers, run_ts, config)) for name, config in fits.items()}
    tables["ours (tuned)"] = tuned
    ids = customers["customer_id"].to_numpy()
    priors = tuned_fit.priors
    global_curve = priors[(priors["segment"] == GLOBAL_SEGMENT) & (priors["day_type"] == "any")].sort_values("hour")["open_rate"].to_numpy()
    global_best = int(np.argmax(np.where(tuned_fit.allowed_hours, global_curve, -np.inf)))
    constant = {"default hour": SendTimeConfig().default_send_hour, "global best hour": global_best}
    policies = {name: pd.DataFrame({"customer_id": ids, "best_hour": hour, "weight": 1.0}) for name, hour in constant.items()}
    policies.update({name: _policy_hours(table) for name, table in tables.items()})

    truth = store.truth["customers"].set_index("customer_id")[["best_hour_local", "open_rate_at_best"]]
    opted = customers.loc[customers["email_opt_in"], "customer_id"]
    sends = engagement.groupby("customer_id")["sends"].sum()
    many = pd.Index(opted[opted.isin(sends.index[sends >= min_sends])])
    alive = truth.index[store.truth["customers"].set_index("customer_id")["churn_date"].isna()]
    groups = {"opted-in": pd.Index(opted), f">= {min_sends} sends": many, "alive at the run date": pd.Index(opted[opted.isin(alive)])}
    scores = {name: _score_policy(hours, truth, groups) for name, hours in policies.items()}
    oracle_exact_quiet = float(SendTimeConfig().allowed_hours()[truth.loc[opted, "best_hour_local"].to_numpy()].mean())
    return {
        "store": f"{n_customers:,} x {days}", "seed": seed, "opted_in": len(opted),
        "sends": int(sends.sum()), "opens": int(engagement["opens"].sum()),
        "sends_per_opted_in": float(sends.reindex(opted).fillna(0).mean()),
        "scores": scores, "group_sizes": {name: len(ids) for name, ids in groups.items()}, "default_backtest": default_scores, "tuned_backtest": tuning.metrics, "tuning": tuning,
        "global_best": global_best, "truth_best_allowed": oracle_exact_quiet,
        "signals": tuned.drop_duplicates("customer_id")["signal"].value_counts().to_dict(),
        "seconds": seconds, "wall": time.perf_counter() - began,
    }


def _config_text(config: SendTimeConfig) -> str:
    text = (f"prior_strength {config.prior_strength:.2f}, level_strength {config.level_strength:.2f}, "
            f"bandwidth {config.bandwidth_hours:.2f} h, activity_weight {config.activity_weight:.2f}, by_day_type {config.by_day_type}")
    return text + (f" (pooling {config.day_type_pooling:.2f})" if config.by_day_type else "")


def print_synthetic(results: list[dict[str, object]], min_sends: int) -> None:
    print("\n### Stores\n")
    print("| store (customers x days) | seed | opted-in | sends | human opens | sends per opted-in | "
          "true best hour outside quiet hours | seconds: generate / extract / tune / fit+recommend | total |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        s = r["seconds"]
        print(f"| {r['store']} | {r['seed']} | {r['opted_in']:,} | {r['sends']:,} | {r['opens']:,} | {r['sends_per_opted_in']:.1f} | "
              f"{r['truth_best_allowed']:.3f} | {s['generate']:.1f} / {s['extract']:.1f} / {s['tune']:.1f} / "
              f"{s['fit + recommend']:.1f} | {r['wall']:.1f} |")
    print("\n### Recommended hour vs the true best hour (opted-in customers)\n")
    print("Each cell: exact / within +/-1 h / expected open rate as a share of the oracle's. Groups: all opted-in "
          f"customers; those with >= {min_sends} sends in the year; those still alive at the run date (churned "
          "customers open at a fifth of their rate, so their hours matter least).\n")
    print("| store | seed | customers | " + " | ".join(POLICIES) + " |")
    print("|---|---|---|" + "---|" * len(POLICIES))
    for r in results:
        for group in r["scores"]["default hour"]:
            cells = []
            for name in POLICIES:
                v = r["scores"][name][group]
                text = f"{v['exact']:.3f} / {v['within_1h']:.3f} / {v['oracle_share']:.3f}"
                cells.append(f"**{text}**" if name == "ours (tuned)" else text)
            print(f"| {r['store']} | {r['seed']} | {group} ({r['group_sizes'][group]:,}) | " + " | ".join(cells) + " |")
    print("\n### Backtest: tuning objective, and mean Bernoulli log loss per send of the last 28 days (held out from the "
          "fit, but the tuned config is chosen on this backtest: tuning numbers, not test numbers)\n")
    print("Objective (lower is better): 'policy' = held-out open rate / open rate of the sends at exactly the recommended "
          "hour (cross-fitted over all sends, inverse-propensity weighted), i.e. 1 / policy lift.\n")
    print("| store | seed | objective | policy lift: ours (default) | ours (tuned) | held-out sends | flat rate | global curve | "
          "customer level x segment curve, no personal hours | log loss: ours (default) | ours (tuned) | "
          "improvement vs global | open-rate lift of sends within +/-1 h of the recommendation (global best hour) | tuned config | trials |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        d, b = r["default_backtest"], r["tuned_backtest"]
        objective = "policy" if b["objective_is_policy"] else "log loss"
        print(f"| {r['store']} | {r['seed']} | {objective} | {d['policy_lift']:.3f} | **{b['policy_lift']:.3f}** | "
              f"{b['holdout_sends']:,.0f} | {b['log_loss_flat']:.4f} | {b['log_loss_global']:.4f} | "
              f"{b['log_loss_prior']:.4f} | {d['log_loss']:.4f} | {b['log_loss']:.4f} | {b['improvement_vs_global']:.1%} | "
              f"{b['lift_near_best']:.2f} ({b['lift_near_global_best']:.2f}) | {_config_text(r['tuning'].config)} | {r['tuning'].n_trials} |")
    print("\nSignals of the tuned model (customers): " + "; ".join(f"{r['store']} seed {r['seed']}: {r['signals']}" for r in results))


# --- UCI --------------------------------------------------------------------------------------------


def uci_send_time_frames(path: Path) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """The UCI extract frames of :func:`uci_frames` (the product's importer: order times already
    converted from the UK wall clock to UTC, each customer's zone from their country); no
    engagement (no clickstream, no email)."""
    frames, sizes = uci_frames(path, UCI_RUN_DATE)
    customers = frames["customers"]
    sizes["customers with an unknown zone (read as UTC)"] = int((customers["timezone"] == "UTC").sum())
    return {"customers": customers, "orders": frames["orders"], "engagement": empty_engagement()}, sizes


def run_uci(path: Path, trials: int, timeout: float) -> None:
    began = time.perf_counter()
    frames, sizes = uci_send_time_frames(path)
    customers, orders, engagement = frames["customers"], frames["orders"], frames["engagement"]
    as_of = pd.Timestamp(UCI_RUN_DATE, tz="UTC")
    default_scores = send_time_backtest(engagement, orders, customers, as_of)
    tuning = tune_send_time(engagement, orders, customers, as_of, n_trials=trials, timeout_seconds=timeout)
    fit = fit_send_time(engagement, orders, customers, as_of, tuning.config)
    table = recommend_send_times(fit)
    wall = time.perf_counter() - began
    print(f"\nUCI Online Retail: {sizes['customers before run date']:,} customers, {len(orders):,} invoices "
          f"(completed and cancelled: every invoice is a time the customer was active), run date {UCI_RUN_DATE}; "
          + "; ".join(f"{k}: {v:,}" for k, v in sizes.items() if k.startswith(("orders dropped", "customers with")))
          + f"; {fit.params['segments']} country segments with >= {tuning.config.min_segment_customers} customers.\n")
    b, d = tuning.metrics, default_scores
    print("Backtest on the last 28 days (held-out invoices; log loss = mean -log share of the customer's activity at the "
          "invoice's local hour):\n")
    print("| held-out invoices | customers | flat (log 24) | global profile | ours (default) | ours (tuned) | "
          "share within +/-1 h of the recommendation (of the global best hour) | tuned config |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {b['holdout_activity']:,.0f} | {b['holdout_customers']:,.0f} | {b['log_loss_flat']:.3f} | {b['log_loss_global']:.3f} | "
          f"{d['log_loss']:.3f} | **{b['log_loss']:.3f}** | {b['share_near_best']:.3f} ({b['share_near_global_best']:.3f}) | "
          f"bandwidth {tuning.config.bandwidth_hours:.2f} h, activity_strength {tuning.config.activity_strength:.2f}, "
          f"by_day_type {tuning.config.by_day_type} |")
    rows = table.copy()
    local = _local_order_hours(orders, customers)
    columns = {f"best hour ({day_type})": rows[rows["day_type"] == day_type].groupby("best_hour").size() for day_type in fit.day_types}
    columns.update({f"runner-up ({day_type})": rows[rows["day_type"] == day_type].groupby("runner_up_hour").size()
                    for day_type in fit.day_types})
    columns["invoices at that local hour"] = local.value_counts()
    by_hour = pd.DataFrame(columns).reindex(range(24)).fillna(0).astype(int)
    print(f"\nRecommended hours (local; quiet hours {tuning.config.quiet_hours}), customers per hour and day type:\n")
    print("| local hour | " + " | ".join(by_hour.columns) + " |")
    print("|---|" + "---|" * len(by_hour.columns))
    for hour, row in by_hour.iterrows():
        print(f"| {hour:02d}:00 | " + " | ".join(f"{v:,}" for v in row) + " |")
    signals = rows.drop_duplicates("customer_id")["signal"].value_counts().to_dict()
    many = rows[rows["n_events"] >= 5]
    print(f"\nSignals: {signals}. Customers with >= 5 invoices: {many['customer_id'].nunique():,}, median expected share of "
          f"their activity at the recommended hour {many['expected_rate_best'].median():.3f} (at 10:00: "
          f"{many['expected_rate_default'].median():.3f}). UCI wall time {wall:.1f} s.")


def _local_order_hours(orders: pd.DataFrame, customers: pd.DataFrame) -> pd.Series:
    from features.engagement import local_time

    zones = orders[["customer_id"]].merge(customers[["customer_id", "timezone"]], on="customer_id", how="left")["timezone"]
    return local_time(orders["order_ts"].reset_index(drop=True), zones.to_numpy())["local_hour"]


# --- CLI --------------------------------------------------------------------------------------------


def _size(text: str) -> tuple[int, int]:
    customers, _, days = text.lower().partition("x")
    return int(customers), int(days)


# --- grain: hourly vs cells (issue 22 item 1) -----------------------------------------------------------


GRAIN_DATASETS = ("engagement_by_hour", "engagement_by_local_hour")


def build_grain_store(folder: Path, n_customers: int, days: int, seed: int, chunk_customers: int = 50_000) -> dt.date:
    """A generated store's events in a chDB folder and its customers / orders as Parquet beside it; the run date."""
    from revopt.sample_data.synth import generate_store_chunks

    events = open_event_store(url=None, chdb_path=folder / "chdb", database="revopt")
    customers, orders = [], []
    try:
        for chunk in generate_store_chunks(n_customers, days, SYNTHETIC_START, seed, chunk_customers=chunk_customers):
            events.insert_arrow("events", pa.Table.from_pandas(chunk.events, preserve_index=False))
            customers.append(chunk.shop["customers"][["customer_id", "timezone", "country"]])
            orders.append(chunk.shop["orders"][["customer_id", "order_ts"]])
    finally:
        events.close()
    pd.concat(customers, ignore_index=True).to_parquet(folder / "customers.parquet", index=False)
    frame = pd.concat(orders, ignore_index=True)
    frame["order_ts"] = pd.to_datetime(frame["order_ts"], utc=True).astype("datetime64[ns, UTC]")
    frame.to_parquet(folder / "orders.parquet", index=False)
    return SYNTHETIC_START + dt.timedelta(days=days)


GRAIN_STEPS = ("extract", "validate", "recommend")


def grain_step(folder: Path, dataset: str, step: str, run_date: dt.date, lookback_days: int) -> dict[str, float]:
    """One nightly task on ``dataset`` (run in its own process, as Airflow runs each task: its peak RSS is the
    task's): ``extract`` (query + Parquet), ``validate`` (the dataset's suite) or ``recommend`` (the pyfunc's
    ``predict`` on the nightly input, written as Parquet)."""
    from ml.families.send_time import FAMILY, SendTimeModel, send_time_config
    from ml.params import RunParams
    from revopt.platform.extract import engagement_by_local_hour
    from revopt.platform.validation import validate_frame

    params = RunParams(lookback_days=lookback_days)
    run_ts = pd.Timestamp(run_date, tz="UTC")
    path = folder / f"{dataset}.parquet"
    out: dict[str, float] = {}
    began = time.perf_counter()
    if step == "extract":
        since = run_ts - pd.Timedelta(days=lookback_days)
        events = open_event_store(url=None, chdb_path=folder / "chdb", database="revopt")
        try:
            frame = (engagement_by_hour(events, since, run_ts) if dataset == "engagement_by_hour"
                     else engagement_by_local_hour(events, since, run_ts, pd.read_parquet(folder / "customers.parquet")))
        finally:
            events.close()
        frame.to_parquet(path, index=False)
        out["rows"] = len(frame)
    elif step == "validate":
        out["valid"] = float(validate_frame(dataset, pd.read_parquet(path), run_date).success)
    else:
        frames = {dataset: pd.read_parquet(path), "orders": pd.read_parquet(folder / "orders.parquet"),
                  "customers": pd.read_parquet(folder / "customers.parquet")}
        model = SendTimeModel(send_time_config(params), run_date.isoformat(), pd.DataFrame())
        recommendations = model.predict(None, FAMILY.nightly_input(frames, run_date, params),
                                        FAMILY.predict_params(run_date, params))
        recommendations.to_parquet(folder / f"recommendations_{dataset}.parquet", index=False)
    out["seconds"] = time.perf_counter() - began
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def _grain_child(queue, *args) -> None:
    logging.basicConfig(level=logging.WARNING)
    queue.put(grain_step(*args))


def run_grain(n_customers: int, days: int, seed: int) -> None:
    """The grain section: both datasets on one store, side by side (each task in a fresh process)."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="revopt-grain-") as tmp:
        folder = Path(tmp)
        began = time.perf_counter()
        run_date = build_grain_store(folder, n_customers, days, seed)
        print(f"\n## Nightly engagement: hourly vs the model's grain ({n_customers:,} customers, {days} days; "
              f"store built in {time.perf_counter() - began:.0f} s)\n")
        results: dict[str, dict[str, dict[str, float]]] = {}
        for dataset in GRAIN_DATASETS:
            for step in GRAIN_STEPS:
                queue = context.Queue()
                child = context.Process(target=_grain_child, args=(queue, folder, dataset, step, run_date, 730))
                child.start()
                results.setdefault(dataset, {})[step] = queue.get()
                child.join()
        same = pd.read_parquet(folder / f"recommendations_{GRAIN_DATASETS[0]}.parquet").equals(
            pd.read_parquet(folder / f"recommendations_{GRAIN_DATASETS[1]}.parquet"))
    print("| dataset | rows | rows / customer | " + " | ".join(f"{step} s / peak GB" for step in GRAIN_STEPS)
          + " | suite passed |")
    print("|---|---:|---:|" + "---:|" * len(GRAIN_STEPS) + "---|")
    for dataset, steps in results.items():
        rows = steps["extract"]["rows"]
        print(f"| `{dataset}` | {rows:,.0f} | {rows / n_customers:.1f} | "
              + " | ".join(f"{steps[step]['seconds']:.1f} / {steps[step]['peak_rss_gb']:.2f}" for step in GRAIN_STEPS)
              + f" | {bool(steps['validate']['valid'])} |")
    print(f"\nrecommendations identical: {same}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section", choices=("all", "synthetic", "uci", "grain"), default="all")
    parser.add_argument("--grain-customers", type=int, default=200_000, help="the grain section's store")
    parser.add_argument("--grain-days", type=int, default=410, help="days of history of the grain section's store")
    parser.add_argument("--sizes", nargs="+", type=_size, default=[(20_000, 365), (100_000, 365)],
                        help="synthetic stores as CUSTOMERSxDAYS")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3],
                        help="seeds of stores under 100k customers (larger stores: the first seed only)")
    parser.add_argument("--trials", type=int, default=40, help="Optuna trials for the backtest tuning")
    parser.add_argument("--timeout", type=float, default=120.0, help="tuning time limit per store, seconds")
    parser.add_argument("--min-sends", type=int, default=20, help="the 'customers with many sends' group")
    parser.add_argument("--uci-path", type=Path, default=UCI_PATH)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    began = time.perf_counter()
    raw = argv if argv is not None else sys.argv[1:]
    print(f"command: `{' '.join(shlex.quote(a) for a in ['.venv/bin/python', 'benchmarks/send_time.py', *raw])}`  "
          f"date: {dt.date.today()}")
    if args.section in ("all", "synthetic"):
        results = []
        for n_customers, days in args.sizes:
            for seed in args.seeds if n_customers < 100_000 else args.seeds[:1]:
                results.append(run_synthetic(n_customers, days, seed, args.trials, args.timeout, args.min_sends))
        print_synthetic(results, args.min_sends)
    if args.section in ("all", "uci"):
        run_uci(args.uci_path, args.trials, args.timeout)
    if args.section in ("all", "grain"):
        run_grain(args.grain_customers, args.grain_days, args.seeds[0])
    print(f"\ntotal wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
