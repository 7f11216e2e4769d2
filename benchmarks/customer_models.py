"""Benchmark: the customer models (purchase propensity, churn risk, CLV) on a synthetic store
whose true parameters are known, and on the UCI Online Retail data set.

Both sections run the pipeline's own model code (:mod:`ml.families.propensity`, :mod:`ml.families.churn`,
:mod:`ml.families.clv`, :mod:`ml.families.classifier`) on the same time-based holdout the training DAG uses, with
no MLflow and no databases: the extract frames are built in pandas straight from the source data.

1. **synthetic**: :func:`revopt.sample_data.synth.generate_store`; next to each model sit simple baselines
   and an *oracle* computed from ``truth`` (see :func:`oracle_expectations`), the best score the
   generative model allows.
2. **uci**: UCI Online Retail (``../shared/data/online_retail.csv.gz`` beside the repository) mapped onto the
   extract frames with the product's importer (see :func:`uci_frames`), with baselines; there is
   no truth to compare with.

The oracle is hand-written because it is the generator's own model (:mod:`revopt.sample_data.synth`)
evaluated in closed form; no library knows it.

Prints the tables and writes them, with the command, date, sizes and wall times, to ``--out``
(overwritten)::

    .venv/bin/python benchmarks/customer_models.py                     # both sections, defaults
    .venv/bin/python benchmarks/customer_models.py --section uci --trials 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from features.customer import LabelledSet, churn_set, holdout_cutoffs, purchase_set, spend_set
from ml.families import clv
from ml.families.classifier import choose_calibration, evaluate, refit, tune
from ml.tuning import Budget
from revopt.platform.extract import empty_daily_events
from revopt.sample_data.importer import default_uci_path, uci_online_retail

# The oracle uses the generator's own constants (private names), not copies that could drift.
from revopt.sample_data.synth import (
    _CANCEL_SHARE,
    _EMAIL_OPEN_BOOST,
    _OPEN_BELL_SD_HOURS,
    _OPEN_FLOOR,
    _SEND_HOURS,
    SyntheticStore,
    generate_store,
)

logger = logging.getLogger("benchmarks.customer_models")

SYNTHETIC_START = dt.date(2024, 1, 1)
# ../shared/data beside the repository, as on the project machines and in CI.
UCI_PATH = default_uci_path()
UCI_RUN_DATE = dt.date(2011, 12, 1)

DAILY_EVENT_COLUMNS: tuple[str, ...] = (
    "sessions", "page_views", "product_views", "add_to_carts", "checkouts", "purchases",
    "email_sends", "email_opens", "email_clicks",
)
#: daily-events column -> event type it counts (``sessions`` is a distinct count, see _daily_events)
_COUNTED_EVENTS = {
    "page_views": "page_view", "product_views": "product_view", "add_to_carts": "add_to_cart",
    "checkouts": "checkout", "purchases": "purchase", "email_sends": "email_send",
    "email_opens": "email_open", "email_clicks": "email_click",
}

BINARY_COLUMNS = ("roc_auc", "pr_auc", "log_loss", "brier", "calibration_error", "lift_top_decile", "mean_prediction")
BINARY_HEADER = ("score", "ROC AUC", "PR AUC", "log loss", "Brier", "ECE", "lift@10%", "mean p")
CLV_COLUMNS = ("mae", "rmse", "spearman", "top_decile_capture", "high_value_precision", "mean_predicted")
CLV_HEADER = ("forecast", "MAE", "RMSE", "Spearman", "top-10% capture", "top-10% precision", "mean predicted")

MODEL_ROW = "model (calibrated, cross-fitted)"
RAW_ROW = "model (raw, uncalibrated)"
ORACLE_KNOWN = "oracle: knows churn date"
ORACLE_EMAIL = "oracle: knows churn date + email term"
ORACLE_NO_FUTURE = "oracle: alive at cutoff, no future knowledge"


# --- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HoldoutSetup:
    """The time-based holdout of one model family."""

    horizon_days: int
    train_cutoff: pd.Timestamp
    valid_cutoff: pd.Timestamp
    n_train: int
    n_valid: int
    train_label_mean: float
    valid_label_mean: float


@dataclass(frozen=True)
class ModelResult:
    """Holdout metrics of a model and of everything it is compared with, keyed by row name."""

    title: str
    setup: HoldoutSetup
    summary: str  # what the tuning chose, in words
    rows: dict[str, dict[str, float]]
    seconds: float
    kind: str  # "binary" or "clv"


@dataclass
class SectionResult:
    title: str
    sizes: dict[str, str]
    models: list[ModelResult] = field(default_factory=list)
    prepare_seconds: float = 0.0
    seconds: float = 0.0


# --- extract frames ---------------------------------------------------------------------------------


def synthetic_frames(store: SyntheticStore, run_date: dt.date) -> dict[str, pd.DataFrame]:
    """The nightly extract of :mod:`revopt.platform.extract` (customers, orders, customer_daily_events) as
    of ``run_date``, built in pandas from the generator's frames."""
    run_ts = pd.Timestamp(run_date, tz="UTC")
    shop = store.shop
    customers = shop["customers"]
    customers = customers[customers["signup_date"] < run_ts.tz_localize(None)].reset_index(drop=True)

    lines = shop["order_lines"]
    per_order = (
        lines.assign(value=lines["quantity"].astype("float64") * lines["unit_price"])
        .groupby("order_id")
        .agg(n_lines=("line_no", "size"), order_value=("value", "sum"))
    )
    orders = shop["orders"][shop["orders"]["order_ts"] < run_ts].join(per_order, on="order_id")
    orders = orders.assign(
        n_lines=orders["n_lines"].fillna(0).astype("int64"), order_value=orders["order_value"].fillna(0.0)
    ).reset_index(drop=True)
    return {"customers": customers, "orders": orders, "customer_daily_events": _daily_events(store.events, run_ts)}


def _daily_events(events: pd.DataFrame, run_ts: pd.Timestamp) -> pd.DataFrame:
    """Per customer and UTC day, as ``revopt.platform.extract.DAILY_EVENTS_SQL`` computes it in ClickHouse:
    distinct non-email sessions, event counts, email opens and clicks without machine ones."""
    known = events[(events["customer_id"] != 0) & (events["event_time"] < run_ts)]
    keys = pd.DataFrame(
        {
            "customer_id": known["customer_id"].to_numpy().astype("int64"),
            "day": known["event_time"].dt.tz_convert(None).dt.floor("D").to_numpy(),
        }
    )
    event_type = known["event_type"].astype(str).to_numpy()
    machine = known["is_machine"].to_numpy() == 1
    counted = ~(machine & np.isin(event_type, ["email_open", "email_click"]))
    groups = keys.drop_duplicates().set_index(["customer_id", "day"]).index

    counts = (
        keys[counted].assign(event_type=event_type[counted])
        .groupby(["customer_id", "day", "event_type"]).size().unstack(fill_value=0)
    )
    web = ~np.char.startswith(event_type.astype(str), "email_")
    sessions = (
        keys[web].assign(session_id=known["session_id"].to_numpy()[web])
        .drop_duplicates().groupby(["customer_id", "day"]).size()
    )
    daily = pd.DataFrame(index=groups)
    daily["sessions"] = sessions.reindex(groups, fill_value=0)
    for column, kind in _COUNTED_EVENTS.items():
        daily[column] = counts[kind].reindex(groups, fill_value=0) if kind in counts.columns else 0
    daily = daily.astype("int64").sort_index().reset_index()
    daily["day"] = daily["day"].astype("datetime64[ns]")
    return daily[["customer_id", "day", *DAILY_EVENT_COLUMNS]]


def uci_frames(path: Path, run_date: dt.date) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """UCI Online Retail as the extract frames of ``run_date``, and the sizes of the mapping.

    The mapping is the product's own (:func:`revopt.sample_data.importer.uci_online_retail`: rows without a
    CustomerID dropped, whole-invoice reversals cancel their sale, other credit notes are cancelled
    orders of their own, UK wall clock to UTC, time zone from the country); the orders are then
    aggregated the way the nightly extract does (``order_value`` = sum of quantity x unit price,
    ``n_lines``). No clickstream, so ``customer_daily_events`` is empty.
    """
    shop, report = uci_online_retail(path)
    lines = shop["order_lines"]
    by_order = (lines["quantity"] * lines["unit_price"]).groupby(lines["order_id"])
    orders = shop["orders"].assign(
        n_lines=lambda o: o["order_id"].map(by_order.size()).fillna(0).astype("int64"),
        order_value=lambda o: o["order_id"].map(by_order.sum()).fillna(0.0).astype("float64"),
    )
    customers = shop["customers"]
    run_ts = pd.Timestamp(run_date, tz="UTC")
    frames = {
        "customers": customers[customers["signup_date"] < run_ts.tz_localize(None)].reset_index(drop=True),
        "orders": orders[orders["order_ts"] < run_ts].reset_index(drop=True),
        "customer_daily_events": empty_daily_events(),
    }
    sizes = {
        "rows": report.rows_read,
        "rows kept (revopt.sample_data.importer)": report.rows_kept,
        "orders": len(orders),
        "cancelled orders": int((orders["status"] == "cancelled").sum()),
        "sales cancelled by a whole-invoice reversal": report.changed["whole_invoice_reversals"],
        "customers": len(customers),
        "orders before run date": len(frames["orders"]),
        "customers before run date": len(frames["customers"]),
    }
    logger.info("UCI Online Retail mapped: %s", sizes)
    return frames, sizes


# --- oracle -------------------------------------------------------------------------------------------


def oracle_expectations(
    store: SyntheticStore, customer_ids: pd.Index, cutoff: pd.Timestamp, horizon_days: int
) -> pd.DataFrame:
    """What the generator's true parameters say about ``[cutoff, cutoff + horizon_days)``.

    One row per customer id, columns ``p_<variant>`` (probability of at least one completed
    order) and ``n_<variant>`` (expected completed orders), plus ``basket`` (the true mean order
    value at reference prices). Base orders are Poisson at ``purchase_rate x seasonality(d) x
    marketing_lift(d)`` per alive day and each order is completed with probability
    ``1 - _CANCEL_SHARE``, so completed orders are Poisson too. Variants:

    - ``known``: alive days of the window from the true ``churn_date`` (knows future dropout);
    - ``email``: ``known`` plus the email term: every send in the window to a customer alive that
      day (the sends, i.e. the campaign calendar, are taken from the events) is opened with the
      true probability averaged over the uniform send hours, and an open adds Poisson
      ``2 x rate x intensity`` orders that day;
    - ``nofuture``: alive at the cutoff from the true ``churn_date``, then survival
      ``exp(-dropout_rate x days)``: exact for the exponential lifetime, no email term.
    """
    truth = store.truth["customers"].set_index("customer_id").reindex(customer_ids)
    if truth["purchase_rate"].isna().any():
        raise ValueError("some customers have no truth row")
    intensity_frame = store.truth["daily_intensity"]
    intensity = (intensity_frame["seasonality"] * intensity_frame["marketing_lift"]).to_numpy()
    start = intensity_frame["day"].iloc[0]
    first = (cutoff.tz_convert(None) - start).days
    if first < 0 or first + horizon_days > len(intensity):
        raise ValueError(f"window {cutoff.date()} + {horizon_days} days is outside the generated days")
    window = intensity[first : first + horizon_days]
    cumulative = np.concatenate([[0.0], np.cumsum(window)])  # cumulative[j] = intensity of days c..c+j-1

    completed = 1.0 - _CANCEL_SHARE
    rate = truth["purchase_rate"].to_numpy()
    churn_day = (truth["churn_date"] - start).dt.days.fillna(np.iinfo("int32").max).to_numpy().astype("int64")
    alive_days = np.clip(churn_day - first, 0, horizon_days)  # days of the window the customer is alive
    n_known = completed * rate * cumulative[alive_days]

    n_extra, log_no_extra = _email_term(store, truth, customer_ids, first, horizon_days, intensity, churn_day)

    alive_at_cutoff = churn_day > first
    survival = np.exp(-np.outer(truth["dropout_rate"].to_numpy(), np.arange(horizon_days)))  # alive on day c+j
    exposure = completed * rate[:, None] * cumulative[None, :]  # expected orders if alive for j days
    # first inactive day c+j for j = 1..N-1 with probability s_{j-1} - s_j; alive all window: s_{N-1}
    died = survival[:, :-1] - survival[:, 1:]
    p_none = (died * np.exp(-exposure[:, 1:horizon_days])).sum(axis=1) + survival[:, -1] * np.exp(-exposure[:, horizon_days])
    p_none = np.where(alive_at_cutoff, p_none, 1.0)
    n_nofuture = np.where(alive_at_cutoff, completed * rate * (survival * window[None, :]).sum(axis=1), 0.0)

    return pd.DataFrame(
        {
            "p_known": -np.expm1(-n_known),
            "n_known": n_known,
            "p_email": -np.expm1(-n_known + log_no_extra),
            "n_email": n_known + n_extra,
            "p_nofuture": 1.0 - p_none,
            "n_nofuture": n_nofuture,
            "basket": truth["mean_basket_value"].to_numpy(),
        },
        index=customer_ids,
    )


def _email_term(
    store: SyntheticStore,
    truth: pd.DataFrame,
    customer_ids: pd.Index,
    first: int,
    horizon_days: int,
    intensity: np.ndarray,
    churn_day: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Expected extra completed orders from email opens in the window, and log P(none), per customer."""
    events = store.events
    sends = events[events["event_type"] == "email_send"]
    start = store.truth["daily_intensity"]["day"].iloc[0]
    day = (sends["event_time"].dt.tz_convert(None).dt.floor("D") - start).dt.days.to_numpy()
    customer = sends["customer_id"].to_numpy().astype("int64")
    position = customer_ids.get_indexer(customer)
    keep = (position >= 0) & (day >= first) & (day < first + horizon_days)
    position, day = position[keep], day[keep]
    keep = day < churn_day[position]  # only alive customers buy after an open
    position, day = position[keep], day[keep]

    hours = np.arange(_SEND_HOURS[0], _SEND_HOURS[1] + 1)
    distance = np.abs(hours[None, :] - truth["best_hour_local"].to_numpy()[:, None])
    distance = np.minimum(distance, 24 - distance)
    bell = _OPEN_FLOOR + (1.0 - _OPEN_FLOOR) * np.exp(-0.5 * (distance / _OPEN_BELL_SD_HOURS) ** 2)
    p_open = truth["open_rate_at_best"].to_numpy() * bell.mean(axis=1)

    extra_mean = (1.0 - _CANCEL_SHARE) * _EMAIL_OPEN_BOOST * truth["purchase_rate"].to_numpy()[position] * intensity[day]
    p = p_open[position]
    n_extra = np.bincount(position, weights=p * extra_mean, minlength=len(customer_ids))
    log_no_extra = np.bincount(position, weights=np.log1p(-p * -np.expm1(-extra_mean)), minlength=len(customer_ids))
    return n_extra, log_no_extra


# --- baselines ----------------------------------------------------------------------------------------


def _binary_baselines(train: LabelledSet, valid: LabelledSet) -> dict[str, np.ndarray]:
    """Scores that need no model: the training base rate, and a one-feature logistic regression
    on ``log1p(recency_days)`` fitted on the training cutoff (it ranks exactly by recency)."""
    recency = LogisticRegression().fit(np.log1p(train.X[["recency_days"]].to_numpy()), train.y.to_numpy())
    return {
        "baseline: training base rate": np.full(len(valid.y), train.positive_rate),
        "baseline: recency only (logistic on training cutoff)": recency.predict_proba(
            np.log1p(valid.X[["recency_days"]].to_numpy())
        )[:, 1],
    }


def _clv_baselines(train: LabelledSet, valid: LabelledSet, horizon_days: int) -> dict[str, np.ndarray]:
    return {
        "baseline: predict 0": np.zeros(len(valid.y)),
        "baseline: training mean spend": np.full(len(valid.y), float(train.y.mean())),
        f"baseline: last 90 days' spend x {horizon_days}/90": valid.X["spend_90d"].to_numpy() * horizon_days / 90.0,
    }


# --- model runs -----------------------------------------------------------------------------------------


def _setup(train: LabelledSet, valid: LabelledSet, horizon_days: int) -> HoldoutSetup:
    return HoldoutSetup(
        horizon_days=horizon_days, train_cutoff=train.cutoff, valid_cutoff=valid.cutoff, n_train=len(train.y),
        n_valid=len(valid.y), train_label_mean=float(train.y.mean()), valid_label_mean=float(valid.y.mean()),
    )


def run_binary(
    title: str,
    frames: dict[str, pd.DataFrame],
    run_date: dt.date,
    horizon_days: int,
    build_set: Callable[[dict[str, pd.DataFrame], pd.Timestamp], LabelledSet],
    tuning: Budget,
    oracle: Callable[[pd.Index, pd.Timestamp, int], dict[str, np.ndarray]] | None = None,
) -> ModelResult:
    """The modelling steps of ``ml.families.binary.BinaryFamily.train`` (tune, refit on the training cutoff,
    calibrate on the validation cutoff, evaluate), without MLflow, plus baselines and oracle."""
    started = time.perf_counter()
    train_cutoff, valid_cutoff = holdout_cutoffs(run_date, horizon_days)
    train, valid = build_set(frames, train_cutoff), build_set(frames, valid_cutoff)
    logger.info("%s: train %d rows at %s (%.1f%% positive), valid %d at %s (%.1f%% positive)", title, len(train.y),
                train_cutoff.date(), 100 * train.positive_rate, len(valid.y), valid_cutoff.date(), 100 * valid.positive_rate)
    result = tune(train.X, train.y, valid.X, valid.y, tuning, study_name=title)
    raw = refit(result.best, train.X, train.y, tuning.random_state).predict_proba(valid.X)
    calibrator, calibrated, _ = choose_calibration(raw, valid.y, tuning.random_state)

    rows = {MODEL_ROW: evaluate(valid.y, calibrated), RAW_ROW: evaluate(valid.y, raw)}
    for name, score in _binary_baselines(train, valid).items():
        rows[name] = evaluate(valid.y, score)
    if oracle is not None:
        for name, score in oracle(valid.X.index, valid_cutoff, horizon_days).items():
            rows[name] = evaluate(valid.y, score)
    by_family = ", ".join(f"{family} {auc:.4f}" for family, auc in sorted(result.best_by_family.items(), key=lambda kv: -kv[1]))
    summary = (
        f"{result.n_trials} trials; best {result.best.family} ({result.best.num_rounds} rounds), "
        f"calibration {calibrator.method}; best validation ROC AUC per family: {by_family}"
    )
    seconds = time.perf_counter() - started
    logger.info("%s done in %.1fs: %s", title, seconds, summary)
    return ModelResult(title, _setup(train, valid, horizon_days), summary, rows, seconds, "binary")


def run_clv(
    title: str,
    frames: dict[str, pd.DataFrame],
    run_date: dt.date,
    config: clv.ClvConfig,
    oracle: Callable[[pd.Index, pd.Timestamp, int], dict[str, np.ndarray]] | None = None,
) -> ModelResult:
    """``ml.families.clv.select_clv_model`` on the holdout of ``ml.families.clv.ClvFamily.train``, plus baselines and oracle."""
    started = time.perf_counter()
    horizon = config.horizon_days
    train_cutoff, valid_cutoff = holdout_cutoffs(run_date, horizon)
    train = spend_set(frames, train_cutoff, horizon)
    valid = spend_set(frames, valid_cutoff, horizon)
    logger.info("%s: train %d rows at %s (mean spend %.2f), valid %d at %s (mean spend %.2f)", title, len(train.y),
                train_cutoff.date(), train.y.mean(), len(valid.y), valid_cutoff.date(), valid.y.mean())
    selection = clv.select_clv_model(train.X, train.y, valid.X, valid.y, config)
    rows = {}
    for name, label in ((clv.BTYD, "BTYD (BG/NBD x Gamma-Gamma)"), (clv.GBM, "GBM (LightGBM Tweedie)")):
        rows[label + (" - selected" if selection.winner == name else "")] = selection.metrics[name]
    for name, predicted in _clv_baselines(train, valid, horizon).items():
        rows[name] = clv.evaluate_clv(valid.y, predicted)
    if oracle is not None:
        for name, predicted in oracle(valid.X.index, valid_cutoff, horizon).items():
            rows[name] = clv.evaluate_clv(valid.y, predicted)
    btyd = selection.specs[clv.BTYD]["params"]
    gbm = selection.specs[clv.GBM]
    summary = (
        f"winner {selection.winner} by holdout {config.selection_metric}; BTYD r={btyd['r']:.3g} alpha={btyd['alpha']:.3g} "
        f"a={btyd['a']:.3g} b={btyd['b']:.3g} (fit {selection.fit_seconds[clv.BTYD]:.0f} s); GBM {gbm['num_rounds']} rounds, "
        f"tweedie power {gbm['params']['tweedie_variance_power']:.2f} (tuned {selection.fit_seconds[clv.GBM]:.0f} s)"
    )
    seconds = time.perf_counter() - started
    logger.info("%s done in %.1fs: %s", title, seconds, summary)
    return ModelResult(title, _setup(train, valid, horizon), summary, rows, seconds, "clv")


# --- sections -----------------------------------------------------------------------------------------


def synthetic_section(n_customers: int, days: int, seed: int, tuning: Budget) -> SectionResult:
    started = time.perf_counter()
    store = generate_store(n_customers, days, SYNTHETIC_START, seed)
    run_date = SYNTHETIC_START + dt.timedelta(days=days)
    frames = synthetic_frames(store, run_date)
    truth = store.truth["customers"]
    sizes = {
        "customers": f"{n_customers:,}",
        "days": f"{days} ({SYNTHETIC_START} to {run_date - dt.timedelta(days=1)}), run date {run_date}",
        "seed": str(seed),
        "orders": f"{len(frames['orders']):,} ({(frames['orders']['status'] == 'completed').mean():.1%} completed)",
        "order lines": f"{len(store.shop['order_lines']):,}",
        "events": f"{len(store.events):,} -> {len(frames['customer_daily_events']):,} customer-days",
        "churned by the run date (truth)": f"{truth['churn_date'].notna().mean():.1%}",
    }
    section = SectionResult("Synthetic store with oracle", sizes)
    section.prepare_seconds = time.perf_counter() - started
    logger.info("synthetic store and extract frames ready in %.1fs: %s", section.prepare_seconds, sizes)

    def propensity_oracle(ids: pd.Index, cutoff: pd.Timestamp, horizon: int) -> dict[str, np.ndarray]:
        expected = oracle_expectations(store, ids, cutoff, horizon)
        return {ORACLE_KNOWN: expected["p_known"].to_numpy(), ORACLE_EMAIL: expected["p_email"].to_numpy(),
                ORACLE_NO_FUTURE: expected["p_nofuture"].to_numpy()}

    def churn_oracle(ids: pd.Index, cutoff: pd.Timestamp, horizon: int) -> dict[str, np.ndarray]:
        return {name: 1.0 - p for name, p in propensity_oracle(ids, cutoff, horizon).items()}

    def clv_oracle(ids: pd.Index, cutoff: pd.Timestamp, horizon: int) -> dict[str, np.ndarray]:
        expected = oracle_expectations(store, ids, cutoff, horizon)
        basket = expected["basket"].to_numpy()
        return {ORACLE_KNOWN: expected["n_known"].to_numpy() * basket, ORACLE_EMAIL: expected["n_email"].to_numpy() * basket,
                ORACLE_NO_FUTURE: expected["n_nofuture"].to_numpy() * basket}

    section.models.append(run_binary(
        "purchase propensity", frames, run_date, 30, partial(purchase_set, horizon_days=30), tuning,
        oracle=propensity_oracle,
    ))
    section.models.append(run_binary(
        "churn risk", frames, run_date, 60, partial(churn_set, horizon_days=60, active_days=365), tuning,
        oracle=churn_oracle,
    ))
    section.models.append(run_clv("CLV", frames, run_date, _clv_config(90, tuning), oracle=clv_oracle))
    section.seconds = time.perf_counter() - started
    return section


def uci_section(path: Path, tuning: Budget) -> SectionResult:
    started = time.perf_counter()
    frames, counts = uci_frames(path, UCI_RUN_DATE)
    sizes = {name: f"{value:,}" for name, value in counts.items()}
    sizes["run date"] = f"{UCI_RUN_DATE} (data end 2011-12-09; orders on or after the run date are not read)"
    section = SectionResult("UCI Online Retail", sizes)
    section.prepare_seconds = time.perf_counter() - started

    section.models.append(run_binary(
        "purchase propensity", frames, UCI_RUN_DATE, 30, partial(purchase_set, horizon_days=30), tuning,
    ))
    section.models.append(run_binary(
        "churn risk", frames, UCI_RUN_DATE, 90, partial(churn_set, horizon_days=90, active_days=180), tuning,
    ))
    section.models.append(run_clv("CLV", frames, UCI_RUN_DATE, _clv_config(90, tuning)))
    section.seconds = time.perf_counter() - started
    return section


def _clv_config(horizon_days: int, tuning: Budget) -> clv.ClvConfig:
    return clv.ClvConfig(horizon_days=horizon_days, n_trials=tuning.n_trials, timeout_seconds=tuning.timeout_seconds,
                         random_state=tuning.random_state)


# --- report ---------------------------------------------------------------------------------------------


def _format(value: float, money: bool) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:,.2f}" if money else f"{value:.4f}"


def model_table(model: ModelResult) -> str:
    if model.kind == "binary":
        header, columns, money = BINARY_HEADER, BINARY_COLUMNS, set()
    else:
        header, columns, money = CLV_HEADER, CLV_COLUMNS, {"mae", "rmse", "mean_predicted"}
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in model.rows.items():
        cells = [_format(metrics[column], column in money) for column in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_heading(model: ModelResult, churn_active_days: int | None = None) -> str:
    s = model.setup
    what = {"binary": "positive rate", "clv": "mean spend"}[model.kind]
    fmt = (lambda v: f"{v:.2%}") if model.kind == "binary" else (lambda v: f"{v:,.2f}")
    active = f", active = ordered in the {churn_active_days} days before the cutoff" if churn_active_days else ""
    return (
        f"### {model.title} (horizon {s.horizon_days} days{active})\n\n"
        f"Train cutoff {s.train_cutoff.date()} ({s.n_train:,} customers, {what} {fmt(s.train_label_mean)}), "
        f"holdout cutoff {s.valid_cutoff.date()} ({s.n_valid:,} customers, {what} {fmt(s.valid_label_mean)}); "
        f"{model.seconds:.0f} s.  \n{model.summary}."
    )


def _row(model: ModelResult, prefix: str) -> dict[str, float]:
    return next(metrics for name, metrics in model.rows.items() if name.startswith(prefix))


def baselines_beating(model: ModelResult) -> list[str]:
    """``"<baseline> on <metric>"`` for every baseline that scores at least as well as the model
    (the selected candidate for CLV) on a headline metric."""
    if model.kind == "binary":
        reference, metrics = _row(model, MODEL_ROW), {"roc_auc": True, "pr_auc": True, "log_loss": False, "brier": False}
    else:
        reference = _row(model, "GBM") if "GBM" in _selected(model) else _row(model, "BTYD")
        metrics = {"mae": False, "rmse": False, "spearman": True, "top_decile_capture": True}
    found = []
    for name, values in model.rows.items():
        if not name.startswith("baseline"):
            continue
        for metric, higher_is_better in metrics.items():
            ours, theirs = reference[metric], values[metric]
            if np.isfinite(theirs) and (theirs >= ours if higher_is_better else theirs <= ours):
                found.append(f"{name.removeprefix('baseline: ')} on {metric} ({theirs:,.4g} vs {ours:,.4g})")
    return found


def _selected(model: ModelResult) -> str:
    return next(name for name in model.rows if name.endswith("- selected"))


def _flag(model: ModelResult) -> str:
    beaten = baselines_beating(model)
    return f" **A trivial baseline does at least as well**: {'; '.join(beaten)}." if beaten else ""


def synthetic_findings(section: SectionResult) -> list[str]:
    """Numbers-driven notes for the synthetic section."""
    notes = []
    for model in section.models:
        if model.kind == "binary":
            m, raw, oracle, nofuture = (_row(model, k) for k in (MODEL_ROW, RAW_ROW, ORACLE_KNOWN, ORACLE_NO_FUTURE))
            recency = _row(model, "baseline: recency")
            notes.append(
                f"**{model.title}**: ROC AUC {m['roc_auc']:.3f} vs {nofuture['roc_auc']:.3f} for the no-future oracle "
                f"and {oracle['roc_auc']:.3f} for the churn-date oracle (recency alone {recency['roc_auc']:.3f}); "
                f"log loss {m['log_loss']:.4f} vs {nofuture['log_loss']:.4f} / {oracle['log_loss']:.4f}. "
                f"Mean calibrated prediction {m['mean_prediction']:.3f} vs holdout rate "
                f"{model.setup.valid_label_mean:.3f} (raw model: {raw['mean_prediction']:.3f}); "
                f"oracle mean {oracle['mean_prediction']:.3f}." + _flag(model)
            )
        else:
            gbm, btyd = _row(model, "GBM"), _row(model, "BTYD")
            oracle, nofuture, zero = _row(model, ORACLE_KNOWN), _row(model, ORACLE_NO_FUTURE), _row(model, "baseline: predict 0")
            notes.append(
                f"**{model.title}**: Spearman GBM {gbm['spearman']:.3f}, BTYD {btyd['spearman']:.3f}, no-future oracle "
                f"{nofuture['spearman']:.3f}, churn-date oracle {oracle['spearman']:.3f}; RMSE GBM {gbm['rmse']:.2f}, BTYD "
                f"{btyd['rmse']:.2f}, oracles {nofuture['rmse']:.2f} / {oracle['rmse']:.2f}; MAE of predicting 0 is "
                f"{zero['mae']:.2f} (GBM {gbm['mae']:.2f}, BTYD {btyd['mae']:.2f}). Mean predicted spend GBM "
                f"{gbm['mean_predicted']:.2f}, BTYD {btyd['mean_predicted']:.2f}, oracle {oracle['mean_predicted']:.2f} "
                f"vs actual {gbm['mean_actual']:.2f}; selected: {_selected(model).removesuffix(' - selected')}." + _flag(model)
            )
    return notes


def uci_findings(section: SectionResult) -> list[str]:
    notes = []
    for model in section.models:
        if model.kind == "binary":
            m, raw, recency = _row(model, MODEL_ROW), _row(model, RAW_ROW), _row(model, "baseline: recency")
            notes.append(
                f"**{model.title}**: ROC AUC {m['roc_auc']:.3f} (raw {raw['roc_auc']:.3f}) vs recency alone "
                f"{recency['roc_auc']:.3f}; log loss {m['log_loss']:.4f} vs {recency['log_loss']:.4f}; mean calibrated "
                f"prediction {m['mean_prediction']:.3f} vs holdout rate {model.setup.valid_label_mean:.3f} "
                f"(training rate {model.setup.train_label_mean:.3f})." + _flag(model)
            )
        else:
            gbm, btyd = _row(model, "GBM"), _row(model, "BTYD")
            zero, last = _row(model, "baseline: predict 0"), _row(model, "baseline: last 90")
            notes.append(
                f"**{model.title}**: MAE GBM {gbm['mae']:.2f}, BTYD {btyd['mae']:.2f}, predict-0 {zero['mae']:.2f}, "
                f"last-90-days {last['mae']:.2f}; RMSE GBM {gbm['rmse']:.2f}, BTYD {btyd['rmse']:.2f}, last-90-days "
                f"{last['rmse']:.2f}; mean predicted GBM {gbm['mean_predicted']:.2f}, BTYD {btyd['mean_predicted']:.2f} vs "
                f"actual {gbm['mean_actual']:.2f} (training-window mean {model.setup.train_label_mean:.2f}); selected: "
                f"{_selected(model).removesuffix(' - selected')}." + _flag(model)
            )
    return notes


SYNTHETIC_NOTES = """\
What the oracle rows are. All three use the generator's true per-customer parameters from
`truth` and score the same holdout customers and labels as the models (completed orders only;
each order is completed with probability 0.97, which the oracle includes).

- *knows churn date*: P(at least one order) = 1 - exp(-0.97 x purchase_rate x sum over the
  window's days the customer is still alive of seasonality(d) x marketing_lift(d)), with the alive
  days taken from the true `churn_date`. It knows *future* dropout, which no model can, so it is
  an upper bound rather than a target. CLV: expected orders x the true `mean_basket_value`.
- *knows churn date + email term*: the same plus the email-driven orders (each human email open
  by an alive customer triples that day's intensity). It takes the window's sends from the events
  (the campaign calendar) and the true open probability averaged over the uniform send hours; the
  opens themselves stay random. Without this term the oracle is an approximation: the email
  orders are a few percent of all orders and go to customers who open emails.
- *alive at cutoff, no future knowledge*: knows whether the customer is alive at the cutoff (a
  latent state the data only hints at), then survival exp(-dropout_rate x days), exact for the
  exponential lifetime (no email term). This is the fair ceiling for a model that sees only the
  past: the gap between it and the model is what better features or models could still win;
  the gap between it and the churn-date oracle is irreducible.

Remaining approximations: the true `mean_basket_value` is at reference prices, while actual order
values follow list-price moves, promotions and price-sensitive product choice; email orders land
up to a few hours after the open, occasionally on the next UTC day. Even the oracles sit well
below ROC AUC 1: a Poisson customer with a known rate of 5 orders a year still buys in a given
30 days with probability only about 0.34.

Why the models trail the no-future oracle: they must infer each customer's rate and alive state
from at most a year of orders (the store starts on the first day, so customers who signed up
earlier have a left-censored history), sessions and email engagement; with 2-12 orders a year the
posterior over the rate stays wide. The classifiers' holdout metrics are also slightly
optimistic, because early stopping, the family / hyperparameter choice and the calibrator all
used the same validation cutoff (the calibrated metrics are cross-fitted over two halves of it,
so their mean prediction matches the holdout rate almost by construction); the same holds for
the GBM's CLV metrics (tuned and early-stopped on the holdout labels). The oracles' mean
predicted spend sits a few percent above the actual mean because `mean_basket_value` is at
reference prices. BTYD assumes a stationary purchase rate (no seasonality or marketing) and
reads the first order *in the data* as the first purchase, which the left-censored history
makes wrong for most customers who signed up before the store's first day."""

UCI_NOTES = """\
Mapping: `revopt import-uci`'s own (`revopt/importer.py`): rows without CustomerID are dropped; one
order per invoice at its first InvoiceDate (the UK wall clock, converted to UTC); a sale reversed
whole by a credit note is cancelled (the one-off bulk orders cancelled the same day, e.g. a 77k
invoice in January 2011, no longer count as spend); other credit notes are cancelled orders of
their own and ignored by every feature and label, so partly returned purchases still count as
completed spend (returns are not netted). A customer's signup date is the day of their first
invoice, so every customer in a population has ordered at least once unless their first invoice
was cancelled, and history is left-censored at 2010-12-01. There is no clickstream: the session
and email features are all zero.

The label windows are seasonal for this gift retailer with many wholesale customers: the
propensity holdout (2011-11-01 to 11-30) and the CLV / churn holdouts (2011-09-02 to 11-30) cover
the autumn peak, while the training windows (2011-10-02 to 10-31 and 2011-06-04 to 09-01) do not;
the calibrator (fitted on the holdout itself) absorbs the level shift for the classifiers, the
CLV models get no such correction, which shows in their mean predicted spend. There is no truth
here: the baselines are the yardstick."""


def render(sections: list[SectionResult], command: str, total_seconds: float, tuning: Budget) -> str:
    parts = [
        "# Customer models: holdout benchmark",
        "",
        ("Purchase propensity, churn risk and CLV trained and evaluated with the pipeline's own code "
        "(`ml.families.propensity`, `ml.families.churn`, `ml.families.clv`, `ml.families.classifier`) on the time-based holdout of the training DAG: "
        "fit on cutoff D - 2H, evaluate on cutoff D - H, whose labels end at the run date D. Generated by "
        "`benchmarks/customer_models.py`; re-run the command to refresh (this file is overwritten)."),
        "",
        "```bash",
        command,
        "```",
        "",
        (f"Date {dt.date.today()}, {_machine()}; tuning {tuning.n_trials} trials or {tuning.timeout_seconds:.0f} s per "
        f"model (seed {tuning.random_state}); total wall time {total_seconds / 60:.1f} min "
        f"({', '.join(f'{s.title}: {s.seconds:.0f} s' for s in sections)})."),
        "",
        ("Wall times on this shared VM are noisy: on 2026-11-21 the first run of the default command after the "
         "machine started took 3.6 min (propensity tuning alone 126 s), repeated runs 36-37 s, with identical "
         "tables. Results are deterministic given the seeds unless a slow machine makes the time limit cut a "
         "study short of its trials (the summary under each heading says how many trials ran)."),
        "",
        ("Columns: ECE = expected calibration error over 10 equal-width bins; lift@10% = positive rate in the top "
        "10 % of scores / overall rate; mean p = mean predicted probability (compare with the holdout positive "
        "rate). CLV: top-10% capture = share of actual spend in the predicted top 10 %; top-10% precision = share "
        "of the predicted top 10 % that are actually top 10 %; Spearman is n/a for a constant forecast."),
    ]
    for section in sections:
        parts += ["", f"## {section.title}", "", (f"Prepared in {section.prepare_seconds:.0f} s, section wall time "
                  f"{section.seconds:.0f} s."), ""]
        parts += [f"- {name}: {value}" for name, value in section.sizes.items()]
        for model in section.models:
            active = 365 if section.title.startswith("Synthetic") else 180
            parts += ["", model_heading(model, active if model.title == "churn risk" else None), "", model_table(model)]
        if section.title.startswith("Synthetic"):
            parts += ["", "### Reading the numbers", "", *[f"- {note}" for note in synthetic_findings(section)], "",
                      SYNTHETIC_NOTES]
        else:
            parts += ["", "### Reading the numbers", "", *[f"- {note}" for note in uci_findings(section)], "", UCI_NOTES]
    return "\n".join(parts) + "\n"


def _machine() -> str:
    import os
    import platform

    return f"{os.cpu_count()} cores, Python {platform.python_version()}"


# --- CLI --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=7, help="synthetic store seed")
    parser.add_argument("--trials", type=int, default=12, help="Optuna trials per model")
    parser.add_argument("--timeout", type=float, default=120.0, help="tuning time limit per model, seconds")
    parser.add_argument("--section", choices=("synthetic", "uci", "all"), default="all")
    parser.add_argument("--uci-path", type=Path, default=UCI_PATH)
    parser.add_argument("--out", type=Path, default=Path("docs/customer_models.md"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("pymc", "pytensor", "pymc_marketing", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    tuning = Budget(n_trials=args.trials, timeout_seconds=args.timeout, random_state=42)
    started = time.perf_counter()
    sections = []
    if args.section in ("synthetic", "all"):
        sections.append(synthetic_section(args.customers, args.days, args.seed, tuning))
    if args.section in ("uci", "all"):
        sections.append(uci_section(args.uci_path, tuning))
    total = time.perf_counter() - started

    command = ".venv/bin/python benchmarks/customer_models.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    report = render(sections, command, total, tuning)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"wrote {args.out} (total wall time {total:.0f} s)")


if __name__ == "__main__":
    main()
