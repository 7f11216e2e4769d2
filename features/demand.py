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
    promotions: pd.DataFrame | None = None,
    listings: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Dense product x day panel over ``[run_date - lookback_days, run_date)``.

    ``sales`` has one row per (product_id, day) with units > 0 (rows with zero units may be present
    or absent): units, revenue, list_price, avg_discount. Each product of ``products`` that sold in
    the window is on sale from its first list-price day in the window (``list_prices``, the
    ``product_prices`` history, when given; else its first sale) to the day before the run date;
    missing days get 0 units and the list price of ``list_prices`` or, without it, the last known
    one. ``day_totals`` (day, lines) is the store-level traffic control. With ``listings`` (product_id,
    start_date, end_date inclusive or NaT; the ``shop.listings`` extract, empty: not recorded), days a
    product was not listed are left out, not read as zero sales. With ``promotions`` (the
    ``shop.promotions`` extract), a recorded temporary price reduction is the discount in force on its
    days, sold or not, and the panel carries :data:`PROMOTION_COLUMNS` (zeros without).

    Columns: product_id, category, day, units, revenue, list_price, discount (paid, 0 on zero-unit
    days), price (revenue / units, or the list price), log_price, discount_in_force and
    log_price_in_force (from the neighbouring sold days, NaN when they disagree; see the module
    docstring), dow, year_sin, year_cos, log_lines, lag_log_lines_28, history_days (days on sale
    before this one), days_since_list_change, :data:`PROMOTION_COLUMNS`, ``cross_log_price``
    (:func:`with_cross_prices`), and for k in :data:`LAGS` lag_units_k =
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
    if listings is not None and len(listings):
        on_sale &= _listed(listings, ids, days)

    u = np.where(on_sale, units.fillna(0.0).to_numpy(), np.nan)
    r = np.where(on_sale, revenue.fillna(0.0).to_numpy(), np.nan)
    lp = listed.to_numpy(dtype=float)
    sold = u > 0
    paid_discount = np.where(sold, 1.0 - r / np.where(sold, u, 1.0) / lp, np.nan)
    in_force = _discount_in_force(paid_discount, promo_gap_days, full_price_gap_days)
    cover = None
    if promotions is not None and len(promotions):
        cells_p, cells_d = np.meshgrid(np.arange(len(ids)), np.arange(n_days))
        cover = promotion_cover(promotions, ids[cells_p.ravel()], days[cells_d.ravel()].to_numpy(),
                                np.ones(cells_p.size, dtype="int64"))
        recorded = cover["promo_depth"].to_numpy().reshape(n_days, len(ids))
        in_force = np.where(recorded > 0, recorded, in_force)
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
            **_groups(products, pd.Series(ids[prod_idx])),
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
            **{column: (np.zeros(len(prod_idx)) if cover is None
                        else cover[column].to_numpy().reshape(n_days, len(ids))[at]) for column in PROMOTION_COLUMNS},
            **{name: values[at] for name, values in lagged.items()},
        }
    ).pipe(with_cross_prices)


def _listed(listings: pd.DataFrame, ids: np.ndarray, days: pd.DatetimeIndex) -> np.ndarray:
    """Days x products (``days`` ascending): whether a listing period of ``listings`` (start_date, end_date
    inclusive, NaT: still listed) covers the day. Each listing adds 1 from its first covered day and
    takes it back after its last, so a cumulative sum counts the listings covering each day."""
    rows = listings[listings["product_id"].isin(ids)]
    column = pd.Index(ids).get_indexer(rows["product_id"])
    first = days.searchsorted(rows["start_date"].to_numpy(), side="left")
    after = np.maximum(days.searchsorted(rows["end_date"].fillna(days[-1]).to_numpy(), side="right"), first)
    steps = np.zeros((len(days) + 1, len(ids)), dtype=np.int64)
    np.add.at(steps, (first, column), 1)
    np.add.at(steps, (after, column), -1)
    return np.cumsum(steps, axis=0)[:-1] > 0


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


#: Promotion columns of a demand panel (:func:`promotion_cover`): the share of the row's days a display
#: / feature promotion ran, and the temporary price reduction in force (depth x share of the days).
PROMOTION_COLUMNS: tuple[str, ...] = ("promo_display", "promo_feature", "promo_depth")


def promotion_cover(promotions: pd.DataFrame | None, product_id: np.ndarray, start: np.ndarray,
                    period_days: np.ndarray) -> pd.DataFrame:
    """:data:`PROMOTION_COLUMNS` for rows (``product_id``, first day ``start``, ``period_days`` long), from
    ``promotions`` (product_id, start_date, end_date inclusive, promo_type, depth; None or empty: zeros).

    A promotion covering part of a period counts by the share of the period's days it covered, so a
    week with a 2-day 30 % reduction has ``promo_depth`` 2/7 x 0.3 (the average cut over the week).
    Overlapping promotions of one type add up, capped at 1 (and the depth at its deepest)."""
    n = len(product_id)
    out = {column: np.zeros(n) for column in PROMOTION_COLUMNS}
    if promotions is None or len(promotions) == 0 or n == 0:
        return pd.DataFrame(out)
    rows = pd.DataFrame({"row": np.arange(n), "product_id": np.asarray(product_id, dtype="int64"),
                         "start": pd.to_datetime(start).to_numpy(), "days": np.asarray(period_days, dtype="int64")})
    promos = promotions.astype({"product_id": "int64"})
    joined = rows.merge(promos, on="product_id", how="inner")
    end = joined["start"] + pd.to_timedelta(joined["days"], unit="D")  # exclusive
    first = np.maximum(joined["start"].to_numpy(), joined["start_date"].to_numpy())
    last = np.minimum(end.to_numpy(), (joined["end_date"] + pd.Timedelta(days=1)).to_numpy())
    covered = np.clip((last - first) / np.timedelta64(1, "D"), 0.0, None) / joined["days"].to_numpy()
    joined = joined.assign(share=covered)[covered > 0]
    for promo_type, column in (("display", "promo_display"), ("feature", "promo_feature")):
        hit = joined[joined["promo_type"] == promo_type]
        out[column] = np.minimum(np.bincount(hit["row"], hit["share"], minlength=n), 1.0)
    cuts = joined[joined["promo_type"] == "price_reduction"]
    depth = np.bincount(cuts["row"], cuts["share"] * cuts["depth"].fillna(0.0).to_numpy(), minlength=n)
    deepest = cuts.groupby("row")["depth"].max().reindex(np.arange(n)).fillna(0.0).to_numpy()
    out["promo_depth"] = np.minimum(depth, deepest)
    return pd.DataFrame(out)


def period_history(
    sales: pd.DataFrame,
    products: pd.DataFrame,
    run_date: Any,
    lookback_days: int,
    *,
    promotions: pd.DataFrame | None = None,
    listings: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The demand panel of a store that keeps **aggregated sales** (``shop.product_sales``): one row per
    product and recorded period in ``[run_date - lookback_days, run_date)``, at the data's own grain.

    ``sales``: the ``product_sales`` extract (product_id, period_start, period_days, units, revenue,
    list_price). A period with a row is recorded (units may be 0); a period without one is **not
    recorded** (delisted, store closed) and is left out, not read as zero sales - unless ``listings``
    (product_id, start_date, end_date inclusive or NaT) say the product was listed then, in which
    case it sold nothing. The store's calendar of periods is the distinct ``period_start`` values.

    The price a period is credited with: the average price paid (revenue / units) when it sold;
    in a period without sales, the list price less the temporary price reduction ``promotions``
    record for it (:func:`promotion_cover`; without promotions, the list price: at a weekly grain a
    promotion week that sold nothing is rare, but it is then credited with the full price). With
    ``promotions``, sold periods are credited with the list price less the recorded cut too when
    the average paid price is not lower (a cut nobody bought at still is the price in force).

    The store-level control ``log_lines`` is the log of the period's length times a demand index:
    the median over the products recorded in the period of their units relative to their own mean
    (seasonality and holidays shared by the store; a median, so one product's promotion does not
    move it). ``brand`` and ``location`` columns are carried when ``products`` has them
    (``shop.product_groups``), and ``cross_log_price`` is added (:func:`with_cross_prices`). Columns are those of :func:`demand_history` (``day`` is the period's first day, lags in
    days are over the periods they span) plus ``period_days`` and :data:`PROMOTION_COLUMNS`.
    """
    run = pd.Timestamp(run_date).normalize()
    since = run - pd.Timedelta(days=lookback_days)
    end = sales["period_start"] + pd.to_timedelta(sales["period_days"], unit="D")
    window = sales[(sales["period_start"] >= since) & (end <= run) & sales["product_id"].isin(products["product_id"])]
    if not (window["units"] > 0).any():
        raise ValueError(f"no product sold in the {lookback_days} days before {run.date()} (shop.product_sales)")
    window = window[window["product_id"].isin(window.loc[window["units"] > 0, "product_id"])]
    calendar = pd.DataFrame({"period_start": np.sort(window["period_start"].unique())})
    calendar["period_days"] = window.groupby("period_start")["period_days"].max().reindex(calendar["period_start"]).to_numpy()
    if listings is not None and len(listings):
        ids = np.sort(window["product_id"].unique())
        starts = pd.DatetimeIndex(calendar["period_start"])
        at_period, at_product = np.nonzero(_listed(listings, ids, starts))
        listed = pd.DataFrame({"product_id": ids[at_product], "period_start": starts[at_period],
                               "period_days": calendar["period_days"].to_numpy()[at_period]})
        known = window.set_index(["product_id", "period_start"])
        extra = listed.set_index(["product_id", "period_start"]).index.difference(known.index)
        filler = listed.set_index(["product_id", "period_start"]).loc[extra].reset_index().assign(units=0.0, revenue=0.0)
        filler["list_price"] = np.nan
        window = pd.concat([window, filler], ignore_index=True)
    window = window.sort_values(["product_id", "period_start"], kind="stable").reset_index(drop=True)
    window["list_price"] = window.groupby("product_id")["list_price"].transform(lambda s: s.ffill().bfill())
    current = products.drop_duplicates("product_id").set_index("product_id")["current_price"]
    window["list_price"] = window["list_price"].fillna(window["product_id"].map(current))

    promo = promotion_cover(promotions, window["product_id"].to_numpy(), window["period_start"].to_numpy(),
                            window["period_days"].to_numpy())
    units = window["units"].to_numpy(dtype=float)
    revenue = window["revenue"].to_numpy(dtype=float)
    listed_price = window["list_price"].to_numpy(dtype=float)
    sold = units > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        paid = np.where(sold, revenue / np.where(sold, units, 1.0), np.nan)
    paid_discount = np.where(sold, np.clip(1.0 - paid / listed_price, 0.0, 0.99), 0.0)
    recorded_cut = promo["promo_depth"].to_numpy()
    in_force = np.where(sold, np.maximum(paid_discount, recorded_cut), recorded_cut)
    price = listed_price * (1.0 - in_force)

    promoted = (promo[list(PROMOTION_COLUMNS)].to_numpy() > 0).any(axis=1)
    log_lines = np.log(window["period_days"].to_numpy() * _demand_index(window, promoted))
    first_day = window.groupby("product_id")["period_start"].transform("min")
    changed = window.groupby("product_id")["list_price"].diff().fillna(0.0).ne(0.0)
    last_change = window["period_start"].where(changed | (window["period_start"] == first_day)).groupby(window["product_id"]).ffill()
    angle = 2.0 * np.pi * window["period_start"].dt.dayofyear.to_numpy() / 365.25
    category = products.drop_duplicates("product_id").set_index("product_id")["category"]
    out = pd.DataFrame({
        "product_id": window["product_id"].to_numpy(dtype="int64"),
        "category": window["product_id"].map(category).to_numpy(dtype=object),
        **_groups(products, window["product_id"]),
        "day": window["period_start"].to_numpy(),
        "units": units,
        "revenue": revenue,
        "list_price": listed_price,
        "discount": paid_discount,
        "price": np.where(sold, paid, price),
        "log_price": np.log(np.where(sold, paid, price)),
        "discount_in_force": in_force,
        "log_price_in_force": np.log(price),
        "dow": window["period_start"].dt.dayofweek.to_numpy().astype("int64"),
        "year_sin": np.sin(angle),
        "year_cos": np.cos(angle),
        "log_lines": log_lines,
        "history_days": (window["period_start"] - first_day).dt.days.to_numpy().astype("int64"),
        "days_since_list_change": (window["period_start"] - last_change).dt.days.to_numpy().astype("int64"),
        "period_days": window["period_days"].to_numpy(dtype="int64"),
        **{column: promo[column].to_numpy() for column in PROMOTION_COLUMNS},
    })
    grain = max(1, int(np.median(out["period_days"])))
    by_product = out.groupby("product_id")
    out["lag_log_lines_28"] = by_product["log_lines"].transform(
        lambda s: s.rolling(max(1, 28 // grain), min_periods=1).mean().shift(1)).to_numpy()
    for k in LAGS:
        periods = max(1, k // grain)
        out[f"lag_units_{k}"] = np.log1p(by_product["units"].transform(
            lambda s: s.rolling(periods, min_periods=1).mean().shift(1)).to_numpy())
        out[f"lag_log_price_{k}"] = by_product["log_price"].transform(
            lambda s: s.rolling(periods, min_periods=1).mean().shift(1)).to_numpy()
    return with_cross_prices(out)


def _groups(products: pd.DataFrame, product_id: pd.Series) -> dict[str, np.ndarray]:
    """The ``brand`` / ``location`` of each row's product, for the columns ``products`` has."""
    known = products.drop_duplicates("product_id").set_index("product_id")
    return {column: product_id.map(known[column]).to_numpy(dtype=object)
            for column in ("brand", "location") if column in known.columns}


def _demand_index(window: pd.DataFrame, promoted: np.ndarray) -> np.ndarray:
    """Per row of ``window`` (product_id, period_start, units): the median over the products recorded in
    the period and not on promotion (``promoted``: any recorded promotion in the row's period) of their
    units relative to their own mean over such periods, scaled to average 1; floored at 0.05. Promoted
    rows are left out so that the index does not rise with the store's promotions (which would read
    as a response to the other products' prices). Store-wide on purpose: a per-location median (a
    scanner panel's store, 11 brands each) was tried on the synthetic panel (revopt.sample_data.panel,
    80 stores x 11 brands) and moved the mean elasticity bias from +0.08 to +0.30, so it is not used."""
    units = pd.Series(window["units"].to_numpy(dtype=float)).where(~promoted)
    product = window["product_id"].to_numpy()
    relative = units / units.groupby(product).transform("mean").to_numpy()
    period = window["period_start"].to_numpy()
    overall = relative.groupby(period).median()
    overall = overall / overall.mean() if overall.mean() > 0 else overall * 0 + 1.0
    index = pd.Series(period).map(overall).fillna(1.0).to_numpy(dtype=float)
    return np.maximum(index, 0.05)


def with_cross_prices(panel: pd.DataFrame) -> pd.DataFrame:
    """``panel`` plus ``substitute_group`` and ``group_share`` (the product's share of its group's units)
    and ``cross_log_price``: per row, the other products of its group's log price in force
    (each relative to its own median, so a product that is not listed that period counts as at its usual
    price), weighted by their share of the group's units and scaled by ``1 / (1 - own share)``. A group is
    the products of one category at one ``location`` (the category when there are no locations). A
    shared cross-price elasticity on it (:data:`ml.families.pricing.estimator.PROMOTION_TERMS`) says how
    a product's demand follows its substitutes' prices: ``c_jk = gamma s_k / (1 - s_j)``, substitution
    towards the big sellers. 0 for a product alone in its group; less the period's mean over the store
    (see the code); 0 everywhere with fewer than :data:`MIN_CROSS_GROUPS` groups of two or more."""
    out = panel.copy()
    location = out["location"].fillna("") if "location" in out.columns else pd.Series("", index=out.index)
    group = out["category"].astype(str) + "|" + location.astype(str)
    units = out.groupby("product_id")["units"].sum()
    product_group = group.groupby(out["product_id"]).first()
    share = (units / units.groupby(product_group).transform("sum").replace(0.0, np.nan)).fillna(0.0)
    relative = out["log_price_in_force"] - out.groupby("product_id")["log_price_in_force"].transform("median")
    weighted = (relative.fillna(0.0) * out["product_id"].map(share)).to_numpy()
    key = pd.MultiIndex.from_arrays([group.to_numpy(), out["day"].to_numpy()])
    total = pd.Series(weighted, index=key).groupby(level=[0, 1]).transform("sum").to_numpy()
    own = out["product_id"].map(share).to_numpy()
    out["substitute_group"] = group.to_numpy(dtype=object)
    out["group_share"] = own
    cross = pd.Series(np.where(own < 1.0, (total - weighted) / np.maximum(1.0 - own, 1e-9), 0.0), index=out.index)
    # less its mean over the store that period: the shared elasticity is then learnt from how groups'
    # substitutes differ in the same period, never from the store-wide price level, whose timing it
    # shares with seasonality and the promotion calendar (one group alone has nothing to learn from)
    out["cross_log_price"] = cross - cross.groupby(out["day"].to_numpy()).transform("mean")
    sizes = product_group.value_counts()
    if (sizes >= 2).sum() < MIN_CROSS_GROUPS:  # too few groups of substitutes to tell them apart
        out["cross_log_price"] = 0.0
    return out


#: Groups of two or more substitutes needed before a cross-price elasticity is estimated at all.
MIN_CROSS_GROUPS = 3
