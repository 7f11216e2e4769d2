"""Demand inputs of the pricing family (:mod:`ml.families.pricing`): the product x day panel its
elasticities are estimated from, and the one frame its optimiser prices tonight.

- :func:`demand_history` - the dense product x day panel (zero-unit days filled in) with the
  price in force, calendar and store-level controls and lagged demand controls;
- :func:`pricing_input` - one row per priced product: the products extract plus the latest
  competitor price and stock on hand (NaN when unknown), what the pricing model's ``predict`` takes.

Input frames (the extract, see :mod:`revopt.platform.extract`): ``product_daily_sales`` (product_id,
day, units, revenue, list_price, avg_discount), ``products`` (product_id, category, cost,
current_price, ...), ``day_totals`` (day, lines) and the optional ``competitor_prices`` (product_id,
day, competitor_price) and ``inventory`` (product_id, day, on_hand). Inputs are never mutated.

The price in force
------------------
The extract only sees a price *paid* on days with sales; on zero-unit days only the list price
is known. Crediting those days with the list price misclassifies promotion days that happened to
sell nothing, and this is selection on the outcome: promotions look like they never had zero
days, which biases elasticities strongly negative (-0.5 on a small store). So the price each day
is credited with comes from its neighbours only: the discount in force on day d is the discount
of the nearest sold days before and after d (d itself left out) when they agree, and the day is
left out of the estimation when they do not (the first and last days of promotions, mostly).
Whether a day sold then never decides which price it is credited with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: Lags (days) of the past-only demand and price controls in :func:`demand_history`.
LAGS: tuple[int, ...] = (7, 28)

_DISCOUNT_TOLERANCE = 0.011  # two discounts "agree" within a percent (they are stored to 4 decimals)
_NO_DISCOUNT = 0.005


def demand_history(
    sales: pd.DataFrame,
    products: pd.DataFrame,
    day_totals: pd.DataFrame,
    run_date: Any,
    lookback_days: int,
    *,
    list_prices: pd.DataFrame | None = None,
    promo_gap_days: int = 8,
    full_price_gap_days: int = 28,
) -> pd.DataFrame:
    """Dense product x day panel over ``[run_date - lookback_days, run_date)``.

    ``sales`` has one row per (product_id, day) with units > 0 (rows with zero units may be present
    or absent): units, revenue, list_price, avg_discount. Each product of ``products`` that sold in
    the window is on sale from its first list-price day in the window (``list_prices``, the
    ``product_prices`` history, when given; else its first sale) to the day before the run date;
    missing days get 0 units and the list price of ``list_prices`` or, without it, the last known
    one. ``day_totals`` (day, lines) is the store-level traffic control.

    Columns: product_id, category, day, units, revenue, list_price, discount (paid, 0 on zero-unit
    days), price (revenue / units, or the list price), log_price, discount_in_force and
    log_price_in_force (from the neighbouring sold days, NaN when they disagree; see the module
    docstring), dow, year_sin, year_cos, log_lines, lag_log_lines_28, history_days (days on sale
    before this one), days_since_list_change, and for k in :data:`LAGS` lag_units_k =
    log(1 + mean units over the previous k days) and lag_log_price_k = mean log price over them
    (strictly past; over fewer days at the start of a product's history).
    """
    run = pd.Timestamp(run_date).normalize()
    since = run - pd.Timedelta(days=lookback_days)
    days = pd.date_range(since, run - pd.Timedelta(days=1), freq="D")
    window = sales[(sales["day"] >= since) & (sales["day"] < run) & sales["product_id"].isin(products["product_id"])]
    window = window[window["units"] > 0]
    ids = np.sort(window["product_id"].unique())
    if len(ids) == 0:
        raise ValueError(f"no product sold in the {lookback_days} days before {run.date()}")

    def wide(column: str) -> pd.DataFrame:
        return window.pivot(index="day", columns="product_id", values=column).reindex(index=days, columns=ids)

    units, revenue, listed = wide("units"), wide("revenue"), wide("list_price")
    first = units.notna().to_numpy().argmax(axis=0)
    if list_prices is not None:
        history = list_prices[list_prices["product_id"].isin(ids)]
        history = history.pivot(index="valid_from", columns="product_id", values="list_price").reindex(columns=ids)
        known = history.reindex(history.index.union(days)).ffill().reindex(days)
        listed = known.combine_first(listed)
        first = np.minimum(first, np.where(known.notna().to_numpy().any(axis=0), known.notna().to_numpy().argmax(axis=0), first))
    listed = listed.ffill().bfill()
    n_days = len(days)
    on_sale = np.arange(n_days)[:, None] >= first[None, :]

    u = np.where(on_sale, units.fillna(0.0).to_numpy(), np.nan)
    r = np.where(on_sale, revenue.fillna(0.0).to_numpy(), np.nan)
    lp = listed.to_numpy(dtype=float)
    sold = u > 0
    paid_discount = np.where(sold, 1.0 - r / np.where(sold, u, 1.0) / lp, np.nan)
    in_force = _discount_in_force(paid_discount, promo_gap_days, full_price_gap_days)
    price = np.where(on_sale, lp * (1.0 - np.nan_to_num(paid_discount)), np.nan)
    log_price = np.log(price)

    lines = day_totals.set_index("day")["lines"].reindex(days).fillna(0.0).to_numpy(dtype=float)
    log_lines = np.log(np.maximum(lines, 1.0))
    lag_lines = pd.Series(log_lines).rolling(28, min_periods=1).mean().shift(1).to_numpy()
    lagged: dict[str, np.ndarray] = {}
    for k in LAGS:
        lagged[f"lag_units_{k}"] = np.log1p(pd.DataFrame(u).rolling(k, min_periods=1).mean().shift(1).to_numpy())
        lagged[f"lag_log_price_{k}"] = pd.DataFrame(log_price).rolling(k, min_periods=1).mean().shift(1).to_numpy()
    log_list = np.log(lp)
    changed = np.vstack([np.zeros((1, len(ids)), dtype=bool), log_list[1:] != log_list[:-1]])
    last_change = np.maximum.accumulate(np.where(changed, np.arange(n_days)[:, None], 0), axis=0)
    since_change = np.arange(n_days)[:, None] - np.maximum(last_change, first[None, :])
    history_days = np.arange(n_days)[:, None] - first[None, :]

    prod_idx, day_idx = np.nonzero(on_sale.T)  # product-major, days ascending within product
    dates = days[day_idx]
    angle = 2.0 * np.pi * dates.dayofyear.to_numpy() / 365.25
    category = products.drop_duplicates("product_id").set_index("product_id")["category"]
    at = (day_idx, prod_idx)
    return pd.DataFrame(
        {
            "product_id": ids[prod_idx].astype("int64"),
            "category": category.reindex(ids[prod_idx]).to_numpy(dtype=object),
            "day": dates.to_numpy(),
            "units": u[at].astype("int64"),
            "revenue": r[at],
            "list_price": lp[at],
            "discount": np.nan_to_num(paid_discount[at]),
            "price": price[at],
            "log_price": log_price[at],
            "discount_in_force": in_force[at],
            "log_price_in_force": np.log(lp[at] * (1.0 - in_force[at])),
            "dow": dates.dayofweek.to_numpy().astype("int64"),
            "year_sin": np.sin(angle),
            "year_cos": np.cos(angle),
            "log_lines": log_lines[day_idx],
            "lag_log_lines_28": lag_lines[day_idx],
            "history_days": history_days[at].astype("int64"),
            "days_since_list_change": since_change[at].astype("int64"),
            **{name: values[at] for name, values in lagged.items()},
        }
    )


def _discount_in_force(paid_discount: np.ndarray, promo_gap: int, full_gap: int) -> np.ndarray:
    """Leave-own-out discount of every day (days x products): the discount of the nearest sold days
    strictly before and after when they agree (a promotion only when they are at most ``promo_gap``
    days apart, the full price when at most ``full_gap``), NaN otherwise."""
    n_days, n = paid_discount.shape
    index = np.arange(n_days)[:, None]
    seen = ~np.isnan(paid_discount)
    last_seen = np.maximum.accumulate(np.where(seen, index, -1), axis=0)
    prev_i = np.vstack([np.full((1, n), -1), last_seen[:-1]])
    next_seen = np.flip(np.minimum.accumulate(np.flip(np.where(seen, index, n_days), axis=0), axis=0), axis=0)
    next_i = np.vstack([next_seen[1:], np.full((1, n), n_days)])
    cols = np.broadcast_to(np.arange(n), (n_days, n))
    both = (prev_i >= 0) & (next_i < n_days)
    before = paid_discount[np.clip(prev_i, 0, n_days - 1), cols]
    after = paid_discount[np.clip(next_i, 0, n_days - 1), cols]
    gap = next_i - prev_i
    agree = both & (np.abs(before - after) < _DISCOUNT_TOLERANCE)
    promo = agree & (before > _NO_DISCOUNT) & (after > _NO_DISCOUNT) & (gap <= promo_gap)
    full = agree & (before <= _NO_DISCOUNT) & (after <= _NO_DISCOUNT) & (gap <= full_gap)
    return np.where(promo, 0.5 * (before + after), np.where(full, 0.0, np.nan))


def pricing_input(products: pd.DataFrame, competitor_prices: pd.DataFrame | None = None,
                  inventory: pd.DataFrame | None = None) -> pd.DataFrame:
    """The products to price tonight, one row each in ``products`` order: ``products`` (product_id,
    cost, current_price, ...) plus ``competitor_price`` and ``on_hand``, each product's latest value
    in ``competitor_prices`` (product_id, competitor_price) and ``inventory`` (product_id, on_hand)
    (the last day's when they have a ``day`` column); NaN when the product has none, or the source
    is missing or empty (its guardrail is then off)."""
    ids = products["product_id"].to_numpy()
    return products.assign(competitor_price=_latest(competitor_prices, "competitor_price", ids),
                           on_hand=_latest(inventory, "on_hand", ids))


def _latest(frame: pd.DataFrame | None, column: str, ids: np.ndarray) -> np.ndarray:
    """``column`` per product id (the last day's value when the frame has a ``day`` column); NaN when unknown."""
    if frame is None or len(frame) == 0:
        return np.full(len(ids), np.nan)
    latest = frame.sort_values("day", kind="stable") if "day" in frame.columns else frame
    return latest.groupby("product_id")[column].last().reindex(ids).to_numpy(dtype=float)
