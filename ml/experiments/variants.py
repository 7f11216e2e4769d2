"""Serving the variants of price and message experiments, and the price elasticity a price
experiment measures.

Serving
-------
The nightly price and send-time recommendations are computed for every unit as always; an experiment
then decides, per unit, whether that unit is *served* the recommendation or *held* at what the store
does without revopt:

- a **price** experiment (unit: product) holds a product at its current price when its variant's config
  is ``{"price": "current"}`` and serves the recommended price when it is ``{"price": "recommended"}``;
  a variant without a ``price`` key holds when it is the control and serves otherwise (so the usual
  two-arm definition needs no config at all);
- a **message** experiment (unit: customer) sends at the store's default hour when the config is
  ``{"send_time": "default"}`` and at the recommended hour when it is ``{"send_time": "recommended"}``;
  without the key, the control gets the default hour and the other variants the recommendation.

A held row says so: the price rows get ``binding_guardrail = "experiment_control"`` and a reason naming
the experiment, and their expected outcomes at the recommended price become those at the current price
(the price served *is* the current one). Holding overrides the pricing guardrails: it keeps the price
the store already charges, so it cannot introduce a price a guardrail would have refused to move
*to*. Every row gains ``experiment_id`` and ``variant`` (None outside the kind's experiments),
published to the ``price_recommendations`` / ``send_time_recommendations`` columns of migration 0006.

A unit in two active experiments of one kind (two layers overlapping) would be held by one and served
by the other, which confounds both: that is refused with a :class:`ValueError` naming them. Put the
experiments of one kind in one layer (layers never share a unit).

Randomised price variation as evidence
--------------------------------------
The pricing model's elasticities are *observational*: the store moved its prices when it chose to,
often when demand was about to move anyway (raising prices into a peak, discounting what does not
sell), so price and demand shocks are correlated and a regression on the history is biased however
many controls it holds. A price experiment breaks that link: which products get the new price is
decided by a salted hash, independent of every product's demand. :func:`experimental_elasticity`
compares, across the experiment's products, the change in log units per day (after vs before each
product's first assignment) with the change in log price, using the variant as the instrument: the
Wald / IV estimate ``(mean dy_treated - mean dy_held) / (mean dp_treated - mean dp_held)``. Because the
variant is independent of demand, the held arm is what the treated arm would have done at its old
prices, so anything common to both windows (seasonality, a marketing push, the store's growth) cancels
in the difference between arms, and each product's own level (why it was priced where it was) cancels
in its before/after difference. The pricing training run logs this estimate beside the observational
estimate of the same products; a gap between the two beyond their intervals says the observational
model is confounded.

Written by hand: the Wald estimator with one binary instrument is two differences of means and a
ratio, and its delta-method standard error one more line; an IV library (linearmodels) would be a new
dependency for the same three numbers.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from ml.experiments.definitions import Experiment

logger = logging.getLogger(__name__)

#: the columns serving appends to a recommendation frame, in this order
EXPERIMENT_COLUMNS: tuple[str, ...] = ("experiment_id", "variant")
#: the config key of a price experiment's variant, and its values
PRICE_KEY = "price"
HELD_PRICE = "current"
SERVED_PRICE = "recommended"
#: the config key of a message experiment's variant, and its values
SEND_TIME_KEY = "send_time"
HELD_SEND_TIME = "default"
SERVED_SEND_TIME = "recommended"
#: the ``binding_guardrail`` of a product held at its current price by an experiment
HELD_GUARDRAIL = "experiment_control"

#: below this difference in mean log-price change between the arms (0.1 %) there is no experiment to read
MIN_PRICE_CHANGE = 1e-3
#: fewer products than this in either arm: no estimate
MIN_PRODUCTS_PER_ARM = 5
_SMOOTHING = 0.5  # units added to a window's total before the log, so a window with no sale counts


def held_variants(experiment: Experiment) -> frozenset[str]:
    """The variants of a price or message experiment that are held at what the store does without
    revopt (the current price, the default send hour); see the module docstring. Raises ValueError
    naming the experiment and variant for a config value that is neither."""
    key, held, served = {"price": (PRICE_KEY, HELD_PRICE, SERVED_PRICE),
                         "message": (SEND_TIME_KEY, HELD_SEND_TIME, SERVED_SEND_TIME)}[experiment.kind]
    out = set()
    for variant in experiment.variants:
        value = variant.config.get(key, held if variant.name == experiment.control else served)
        if value not in (held, served):
            raise ValueError(f"experiment {experiment.experiment_id} variant {variant.name}: config.{key} is "
                             f"{value!r}; it must be {held!r} or {served!r}")
        if value == held:
            out.add(variant.name)
    return frozenset(out)


def serve_price_variants(recommendations: pd.DataFrame, experiments: list[Experiment], assignments: pd.DataFrame,
                         run_date: dt.date) -> pd.DataFrame:
    """The price recommendations as served on ``run_date``: a new frame with every column of
    ``recommendations`` (the pricing model's output: product_id, current_price, recommended_price,
    expected_*_current / expected_*_recommended, binding_guardrail, reason, ...) in order, plus
    ``experiment_id`` and ``variant``.

    Products assigned (``assignments``: experiment_id, unit_id, variant[, first_assigned]) to a price
    experiment active on ``run_date`` carry its id and variant; those in a held variant get
    recommended_price = current_price, every expected_*_recommended = its expected_*_current,
    binding_guardrail ``"experiment_control"`` and the reason "held at the current price: control of
    experiment <id>" (another held variant is named as such); elasticity and confidence are kept. Other
    products are unchanged, with None in both new columns."""
    served = _served_units(recommendations, "product_id", "price", experiments, assignments, run_date)
    out, held, arm = _with_experiment_columns(recommendations, "product_id", served)
    if held.any():
        out["recommended_price"] = out["recommended_price"].where(~held, out["current_price"])
        for column in out.columns:
            current = column.removesuffix("_recommended") + "_current"
            if column.startswith("expected_") and column.endswith("_recommended") and current in out.columns:
                out[column] = out[column].where(~held, out[current])
        if "binding_guardrail" in out.columns:
            out["binding_guardrail"] = out["binding_guardrail"].where(~held, HELD_GUARDRAIL)
        if "reason" in out.columns:
            out["reason"] = out["reason"].where(~held, "held at the current price: " + arm)
    return out


def serve_send_time_variants(recommendations: pd.DataFrame, experiments: list[Experiment], assignments: pd.DataFrame,
                             run_date: dt.date) -> pd.DataFrame:
    """The send-time recommendations as served on ``run_date``: a new frame with every column of
    ``recommendations`` (one row per customer and day type: customer_id, day_type, best_hour,
    runner_up_hour, default_hour, expected_rate_best, expected_rate_default, ...) in order, plus
    ``experiment_id`` and ``variant``.

    Customers assigned to a message experiment active on ``run_date`` carry its id and variant on all
    their rows; those in a held variant get best_hour = default_hour, no runner-up,
    expected_rate_best = expected_rate_default (and lift_vs_default 0, a reason naming the experiment,
    when the frame has those columns). Other customers are unchanged, with None in both new columns."""
    served = _served_units(recommendations, "customer_id", "message", experiments, assignments, run_date)
    out, held, arm = _with_experiment_columns(recommendations, "customer_id", served)
    if held.any():
        out["best_hour"] = out["best_hour"].where(~held, out["default_hour"])
        runner_up = out["runner_up_hour"]
        if runner_up.dtype.kind in "iu":  # a column without missing values: make room for one
            runner_up = runner_up.astype("Int64")
        out["runner_up_hour"] = runner_up.mask(held)
        out["expected_rate_best"] = out["expected_rate_best"].where(~held, out["expected_rate_default"])
        if "lift_vs_default" in out.columns:
            out["lift_vs_default"] = out["lift_vs_default"].where(~held, 0.0)
        if "reason" in out.columns:
            out["reason"] = out["reason"].where(~held, "sent at the default hour: " + arm)
    return out


def experimental_elasticity(product_daily_sales: pd.DataFrame, assignments: pd.DataFrame, experiment: Experiment,
                            run_date: dt.date, window_days: int = 28, *,
                            min_products_per_arm: int = MIN_PRODUCTS_PER_ARM,
                            min_price_change: float = MIN_PRICE_CHANGE) -> dict[str, Any] | None:
    """The price elasticity a price experiment measures, unconfounded (see the module docstring).

    Per assigned product, with ``t0`` its first assigned date (the experiment's start for the products
    there from the start) and ``t1`` the run date (or the day after the experiment's last active day,
    when earlier: held products are served the recommendation after it):

    - ``dy`` = log((units in [t0, t1) + 0.5) / days) - log((units in the ``window_days`` before t0 + 0.5)
      / window_days): the change in log units per day;
    - ``dp`` = mean log list price in [t0, t1) - the same before t0, over the days with a row (a day
      without a list price uses revenue / units); a product without a price in either window is left out.

    The estimate is the Wald / IV ratio with the arm (served vs held) as the instrument,
    ``(mean dy_served - mean dy_held) / (mean dp_served - mean dp_held)``: the same number as two-stage
    least squares of dy on dp with the arm indicator as the instrument. Its standard error is the delta
    method's, with each arm's own variance: ``se = sqrt(var_s(u) / n_s + var_h(u) / n_h) / |dp diff|``,
    ``u = dy - elasticity * dp``.

    ``product_daily_sales``: product_id, day, units, and list_price and/or revenue (rows with zero units
    may be absent). ``assignments``: experiment_id, unit_id, variant, first_assigned. Returns None when
    either arm has fewer than ``min_products_per_arm`` products with both windows, or the arms' mean
    log-price changes differ by less than ``min_price_change`` (nothing was varied); otherwise a dict:
    elasticity, se, ci_low / ci_high (95 %), n_products, n_served, n_held, price_change (the difference
    in mean log-price change), price_change_se, first_stage_t (price_change / its se: below ~3 the
    instrument is weak and the se understates the uncertainty), units_change (the difference in mean
    log-units change), served_price_change, held_price_change, experiment_id, window_days, product_ids
    (the products it rests on, to compare with the observational estimate of the same products)."""
    if experiment.kind != "price":
        raise ValueError(f"experiment {experiment.experiment_id} is a {experiment.kind} experiment; the "
                         f"experimental elasticity reads a price experiment")
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    changes = _log_changes(product_daily_sales, assignments, experiment, run_date, window_days)
    if changes is None:
        return None
    served = ~changes["held"].to_numpy()
    dy, dp = changes["dy"].to_numpy(), changes["dp"].to_numpy()
    n_served, n_held = int(served.sum()), int((~served).sum())
    if min(n_served, n_held) < max(min_products_per_arm, 2):
        logger.info("experiment %s: %d served and %d held products with both windows; no elasticity",
                    experiment.experiment_id, n_served, n_held)
        return None
    price_change = dp[served].mean() - dp[~served].mean()
    if not abs(price_change) >= min_price_change:
        logger.info("experiment %s: the arms' log prices moved alike (difference %.2g); no elasticity",
                    experiment.experiment_id, price_change)
        return None
    units_change = dy[served].mean() - dy[~served].mean()
    elasticity = units_change / price_change
    u = dy - elasticity * dp
    se = math.sqrt(u[served].var(ddof=1) / n_served + u[~served].var(ddof=1) / n_held) / abs(price_change)
    price_change_se = math.sqrt(dp[served].var(ddof=1) / n_served + dp[~served].var(ddof=1) / n_held)
    return {
        "experiment_id": experiment.experiment_id,
        "elasticity": float(elasticity),
        "se": float(se),
        "ci_low": float(elasticity - 1.959964 * se),
        "ci_high": float(elasticity + 1.959964 * se),
        "n_products": n_served + n_held,
        "n_served": n_served,
        "n_held": n_held,
        "price_change": float(price_change),
        "price_change_se": float(price_change_se),
        "first_stage_t": float(abs(price_change) / price_change_se) if price_change_se > 0 else math.inf,
        "units_change": float(units_change),
        "served_price_change": float(dp[served].mean()),
        "held_price_change": float(dp[~served].mean()),
        "window_days": int(window_days),
        "product_ids": changes["unit_id"].tolist(),
    }


def _log_changes(sales: pd.DataFrame, assignments: pd.DataFrame, experiment: Experiment, run_date: dt.date,
                 window_days: int) -> pd.DataFrame | None:
    """unit_id, held, dy, dp per assigned product with a price in both windows (defined in
    :func:`experimental_elasticity`); None when there is none."""
    if isinstance(run_date, dt.datetime):  # pandas Timestamps too
        run_date = run_date.date()
    last = experiment.last_active_day()
    end = pd.Timestamp(run_date if last is None else min(run_date, last + dt.timedelta(days=1)))
    rows = assignments[(assignments["experiment_id"] == experiment.experiment_id)
                       & assignments["variant"].isin([v.name for v in experiment.variants])]
    units = pd.DataFrame({"unit_id": rows["unit_id"].to_numpy(), "key": _keys(rows["unit_id"]).to_numpy(),
                          "t0": pd.to_datetime(rows["first_assigned"]).to_numpy(),
                          "held": rows["variant"].isin(held_variants(experiment)).to_numpy()})
    units = units[units["t0"] < end]
    if units.empty:
        return None
    missing = {"product_id", "day", "units"} - set(sales.columns)
    if missing or not {"list_price", "revenue"} & set(sales.columns):
        raise ValueError(f"product_daily_sales needs product_id, day, units and list_price or revenue; it has "
                         f"{list(sales.columns)}")
    day = pd.to_datetime(sales["day"])
    if getattr(day.dt, "tz", None) is not None:
        day = day.dt.tz_convert("UTC").dt.tz_localize(None)
    quantity = sales["units"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        paid = (sales["revenue"].to_numpy(dtype=float) / np.where(quantity > 0, quantity, np.nan)
                if "revenue" in sales.columns else np.full(len(sales), np.nan))
        listed = sales["list_price"].to_numpy(dtype=float) if "list_price" in sales.columns else paid
        price = np.where(np.isfinite(listed) & (listed > 0), listed, paid)
        log_price = np.where(np.isfinite(price) & (price > 0), np.log(price), np.nan)
    daily = pd.DataFrame({"key": _keys(sales["product_id"]).to_numpy(), "day": day.to_numpy(),
                          "units": np.nan_to_num(quantity), "log_price": log_price})
    joined = daily.merge(units[["key", "t0"]], on="key", how="inner")
    after = (joined["day"] >= joined["t0"]) & (joined["day"] < end)
    before = (joined["day"] < joined["t0"]) & (joined["day"] >= joined["t0"] - pd.Timedelta(days=window_days))
    post = joined[after].groupby("key").agg(units=("units", "sum"), log_price=("log_price", "mean"))
    pre = joined[before].groupby("key").agg(units=("units", "sum"), log_price=("log_price", "mean"))
    post, pre = post.reindex(units["key"]), pre.reindex(units["key"])
    post_days = ((end - pd.to_datetime(units["t0"])).dt.days).to_numpy(dtype=float)
    dy = (np.log((np.nan_to_num(post["units"].to_numpy()) + _SMOOTHING) / post_days)
          - np.log((np.nan_to_num(pre["units"].to_numpy()) + _SMOOTHING) / window_days))
    dp = post["log_price"].to_numpy() - pre["log_price"].to_numpy()
    out = units.assign(dy=dy, dp=dp)
    priced = np.isfinite(out["dp"])
    if not priced.all():
        logger.info("experiment %s: %d products without a price before or after their assignment are left out",
                    experiment.experiment_id, int((~priced).sum()))
    out = out[priced]
    return out[["unit_id", "held", "dy", "dp"]].reset_index(drop=True) if len(out) else None


def _served_units(recommendations: pd.DataFrame, id_column: str, kind: str, experiments: list[Experiment],
                  assignments: pd.DataFrame, run_date: dt.date) -> pd.DataFrame:
    """unit_id, experiment_id, variant, held, arm (the variant in words): the units of the ``kind``
    experiments active on ``run_date``, one row per unit."""
    if isinstance(run_date, dt.datetime):  # pandas Timestamps too
        run_date = run_date.date()
    if id_column not in recommendations.columns:
        raise ValueError(f"recommendations lack {id_column!r}; they have {list(recommendations.columns)}")
    served_already = [c for c in EXPERIMENT_COLUMNS if c in recommendations.columns]
    if served_already:
        raise ValueError(f"recommendations already have {served_already}: they were served once")
    active = [e for e in experiments if e.kind == kind and e.is_active(run_date)]
    frames = []
    for experiment in active:
        rows = _rows_of(assignments, experiment, run_date)
        variant = rows["variant"].to_numpy(dtype=object)
        frames.append(pd.DataFrame({
            "unit_id": rows["unit_id"].to_numpy(), "experiment_id": experiment.experiment_id, "variant": variant,
            "held": rows["variant"].isin(held_variants(experiment)).to_numpy(),
            "arm": [f"control of experiment {experiment.experiment_id}" if v == experiment.control
                    else f"variant {v} of experiment {experiment.experiment_id}" for v in variant]}))
    units = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"unit_id": pd.Series(dtype=recommendations[id_column].dtype), "experiment_id": pd.Series(dtype=object),
         "variant": pd.Series(dtype=object), "held": pd.Series(dtype=bool), "arm": pd.Series(dtype=object)})
    twice = units[units.duplicated("unit_id", keep=False)]
    if len(twice):
        pairs = sorted(set(twice["experiment_id"]))
        raise ValueError(f"{twice['unit_id'].nunique()} units (e.g. {twice['unit_id'].iloc[0]!r}) are in more "
                         f"than one active {kind} experiment on {run_date}: {pairs}. Each would serve them its own "
                         f"arm; put the {kind} experiments in one layer")
    logger.info("%s experiments on %s: %d units, %d held", kind, run_date, len(units), int(units["held"].sum()))
    return units


def _rows_of(assignments: pd.DataFrame, experiment: Experiment, run_date: dt.date) -> pd.DataFrame:
    """The experiment's assignment rows standing on ``run_date``, with variants it does not define dropped
    (a unit whose arm was removed from the definition is served the default, with a warning)."""
    rows = assignments[assignments["experiment_id"] == experiment.experiment_id]
    if "first_assigned" in rows.columns:
        rows = rows[(pd.to_datetime(rows["first_assigned"]) <= pd.Timestamp(run_date)).to_numpy()]
    known = rows["variant"].isin([v.name for v in experiment.variants])
    if not known.all():
        logger.warning("experiment %s: %d units in variants no longer defined (%s) are served outside it",
                       experiment.experiment_id, int((~known).sum()), sorted(set(rows.loc[~known, "variant"])))
    return rows[known]


def _with_experiment_columns(recommendations: pd.DataFrame, id_column: str,
                             served: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """A copy of ``recommendations`` with ``experiment_id`` and ``variant`` appended, the held rows' mask
    and each row's arm in words (Series on the copy's index)."""
    out = recommendations.copy()
    by_unit = served.set_index(_keys(served["unit_id"]))
    keys = _keys(recommendations[id_column])
    out["experiment_id"] = by_unit["experiment_id"].reindex(keys).to_numpy(dtype=object)
    out["variant"] = by_unit["variant"].reindex(keys).to_numpy(dtype=object)
    for column in EXPERIMENT_COLUMNS:
        out[column] = out[column].where(out[column].notna(), None)
    held = pd.Series(by_unit["held"].reindex(keys, fill_value=False).to_numpy(dtype=bool), index=out.index)
    arm = pd.Series(by_unit["arm"].reindex(keys).to_numpy(dtype=object), index=out.index)
    return out, held, arm


def _keys(ids: pd.Series) -> pd.Index:
    """Unit ids as text (an id read back from a text column matches the same integer id)."""
    return pd.Index(ids.map(lambda v: str(int(v)) if isinstance(v, (int, np.integer)) else str(v)), dtype=object)
