"""Pricing core (draft)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd
from scipy import optimize, stats

logger = logging.getLogger(__name__)

_LAGS = (7, 28)


# --- demand history -------------------------------------------------------------------------------


def demand_history(
    sales: pd.DataFrame,
    products: pd.DataFrame,
    day_totals: pd.DataFrame,
    run_date: Any,
    lookback_days: int,
    *,
    list_prices: pd.DataFrame | None = None,
) -> pd.DataFrame:
    run = pd.Timestamp(run_date).normalize()
    since = run - pd.Timedelta(days=lookback_days)
    days = pd.date_range(since, run - pd.Timedelta(days=1), freq="D")
    window = sales[(sales["day"] >= since) & (sales["day"] < run) & sales["product_id"].isin(products["product_id"])]
    ids = np.sort(window["product_id"].unique())
    units = window.pivot(index="day", columns="product_id", values="units").reindex(index=days, columns=ids)
    revenue = window.pivot(index="day", columns="product_id", values="revenue").reindex(index=days, columns=ids)
    listed = window.pivot(index="day", columns="product_id", values="list_price").reindex(index=days, columns=ids)
    first = units.notna().to_numpy().argmax(axis=0)
    on_sale = np.arange(len(days))[:, None] >= first[None, :]
    listed = listed.ffill().bfill()
    u = np.where(on_sale, units.fillna(0.0).to_numpy(), np.nan)
    r = np.where(on_sale, revenue.fillna(0.0).to_numpy(), np.nan)
    lp = listed.to_numpy()
    paid = np.where(u > 0, r / np.where(u > 0, u, 1.0), lp)
    paid = np.where(on_sale, paid, np.nan)
    log_paid = np.log(paid)

    lines = day_totals.set_index("day")["lines"].reindex(days).fillna(0.0).to_numpy(dtype=float)
    log_lines = np.log(np.maximum(lines, 1.0))

    wide: dict[str, np.ndarray] = {}
    units_frame = pd.DataFrame(u)
    price_frame = pd.DataFrame(log_paid)
    for k in _LAGS:
        wide[f"lag_units_{k}"] = np.log1p(units_frame.rolling(k, min_periods=1).mean().shift(1).to_numpy())
        wide[f"lag_log_price_{k}"] = price_frame.rolling(k, min_periods=1).mean().shift(1).to_numpy()
    lines_frame = pd.Series(log_lines)
    lag_lines = lines_frame.rolling(28, min_periods=1).mean().shift(1).to_numpy()
    history = np.cumsum(on_sale, axis=0) - 1
    log_list = np.log(lp)
    changed = np.vstack([np.zeros((1, len(ids)), bool), log_list[1:] != log_list[:-1]])
    last_change = np.maximum.accumulate(np.where(changed, np.arange(len(days))[:, None], 0), axis=0)
    since_change = np.arange(len(days))[:, None] - np.maximum(last_change, first[None, :])

    day_idx, prod_idx = np.nonzero(on_sale.T)  # product-major order
    day_idx, prod_idx = prod_idx, day_idx
    order = np.lexsort((day_idx, prod_idx))
    day_idx, prod_idx = day_idx[order], prod_idx[order]
    dates = days[day_idx]
    doy = 2 * np.pi * dates.dayofyear.to_numpy() / 365.25
    panel = pd.DataFrame(
        {
            "product_id": ids[prod_idx].astype("int64"),
            "day": dates.to_numpy(),
            "units": u[day_idx, prod_idx].astype("int64"),
            "revenue": r[day_idx, prod_idx],
            "list_price": lp[day_idx, prod_idx],
            "price": paid[day_idx, prod_idx],
            "log_price": log_paid[day_idx, prod_idx],
            "log_list_price": log_list[day_idx, prod_idx],
            "dow": dates.dayofweek.to_numpy().astype("int64"),
            "year_sin": np.sin(doy),
            "year_cos": np.cos(doy),
            "log_lines": log_lines[day_idx],
            "lag_log_lines_28": lag_lines[day_idx],
            "history_days": history[day_idx, prod_idx].astype("int64"),
            "days_since_list_change": since_change[day_idx, prod_idx].astype("int64"),
            **{name: values[day_idx, prod_idx] for name, values in wide.items()},
        }
    )
    cats = products.set_index("product_id")["category"]
    panel.insert(1, "category", cats.reindex(panel["product_id"]).to_numpy())
    return panel


# --- naive ----------------------------------------------------------------------------------------


def naive_loglog_ols(panel: pd.DataFrame) -> pd.DataFrame:
    sold = panel[panel["units"] > 0]
    x = sold["log_price"].to_numpy()
    y = np.log(sold["units"].to_numpy(dtype=float))
    pid = sold["product_id"].to_numpy()
    codes, ids = pd.factorize(pid, sort=True)
    n = np.bincount(codes)
    mx = np.bincount(codes, x) / n
    my = np.bincount(codes, y) / n
    dx = x - mx[codes]
    dy = y - my[codes]
    sxx = np.bincount(codes, dx * dx)
    sxy = np.bincount(codes, dx * dy)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(sxx > 1e-12, sxy / sxx, np.nan)
        resid = dy - slope[codes] * dx
        se = np.sqrt(np.bincount(codes, dx * dx * resid * resid)) / sxx
    return pd.DataFrame({"product_id": ids, "elasticity": slope, "se": se, "n_days": n})


# --- DML ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NuisanceParams:
    demand: dict = field(default_factory=lambda: {"num_leaves": 15, "learning_rate": 0.05, "num_boost_round": 300,
                                                 "min_data_in_leaf": 100, "lambda_l2": 1.0, "feature_fraction": 0.9})
    price: dict = field(default_factory=lambda: {"num_leaves": 15, "learning_rate": 0.05, "num_boost_round": 300,
                                                "min_data_in_leaf": 100, "lambda_l2": 1.0, "feature_fraction": 0.9})


def _features(panel: pd.DataFrame, controls: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    lag28 = np.expm1(panel["lag_units_28"].to_numpy())
    lines_rel = panel["log_lines"].to_numpy() - panel["lag_log_lines_28"].to_numpy()
    demand_offset = np.log(lag28 + 0.1) + lines_rel
    price_base = panel["lag_log_price_28"].to_numpy()
    X = pd.DataFrame(
        {
            "lag_units_28": panel["lag_units_28"].to_numpy(),
            "units_trend": panel["lag_units_7"].to_numpy() - panel["lag_units_28"].to_numpy(),
            "price_trend": panel["lag_log_price_7"].to_numpy() - price_base,
            "lines_rel": lines_rel,
            "dow": panel["dow"].to_numpy(),
            "year_sin": panel["year_sin"].to_numpy(),
            "year_cos": panel["year_cos"].to_numpy(),
            "days_since_list_change": panel["days_since_list_change"].to_numpy(),
        }
    )
    if "list" in controls:
        X["list_rel"] = panel["log_list_price"].to_numpy() - price_base
    return X, demand_offset, price_base


def _lgb(params: dict, objective: str, seed: int, n_jobs: int) -> tuple[dict, int]:
    p = dict(params)
    rounds = int(p.pop("num_boost_round"))
    base = {"objective": objective, "verbosity": -1, "seed": seed, "deterministic": True, "force_col_wise": True,
            "num_threads": n_jobs}
    return {**base, **p}, rounds


def cross_fit(panel, controls="history", params=NuisanceParams(), n_folds=5, seed=0, n_jobs=2):
    X, off, pbase = _features(panel, controls)
    y = panel["units"].to_numpy(dtype=float)
    d = panel["log_price"].to_numpy()
    pid = panel["product_id"].to_numpy()
    ids = np.unique(pid)
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(ids, rng.permutation(len(ids)) % n_folds))
    fold = np.vectorize(fold_of.get)(pid)
    mu = np.empty(len(y))
    m = np.empty(len(y))
    dp, dr = _lgb(params.demand, "poisson", seed, n_jobs)
    pp, pr = _lgb(params.price, "regression", seed, n_jobs)
    for k in range(n_folds):
        tr, te = fold != k, fold == k
        b = lgb.train(dp, lgb.Dataset(X[tr], label=y[tr], init_score=off[tr]), num_boost_round=dr)
        mu[te] = np.exp(off[te] + b.predict(X[te], raw_score=True))
        b = lgb.train(pp, lgb.Dataset(X[tr], label=(d - pbase)[tr]), num_boost_round=pr)
        m[te] = pbase[te] + b.predict(X[te])
    return mu, m


def poisson_slopes(y, v, offset, codes, n_groups, iters=30, hac_lags=0):
    a = np.log(np.maximum(np.bincount(codes, y, n_groups), 1e-9) / np.bincount(codes, np.exp(offset), n_groups))
    e = np.zeros(n_groups)
    for _ in range(iters):
        mu = np.exp(offset + a[codes] + e[codes] * v)
        r = y - mu
        g0 = np.bincount(codes, r, n_groups)
        g1 = np.bincount(codes, r * v, n_groups)
        h00 = np.bincount(codes, mu, n_groups)
        h01 = np.bincount(codes, mu * v, n_groups)
        h11 = np.bincount(codes, mu * v * v, n_groups)
        det = h00 * h11 - h01**2
        with np.errstate(invalid="ignore", divide="ignore"):
            da = (h11 * g0 - h01 * g1) / det
            de = (h00 * g1 - h01 * g0) / det
        da = np.clip(np.nan_to_num(da), -2, 2)
        de = np.clip(np.nan_to_num(de), -2, 2)
        a += da
        e += de
    mu = np.exp(offset + a[codes] + e[codes] * v)
    r = y - mu
    h00 = np.bincount(codes, mu, n_groups)
    h01 = np.bincount(codes, mu * v, n_groups)
    h11 = np.bincount(codes, mu * v * v, n_groups)
    s0, s1 = r, r * v
    b00 = np.bincount(codes, s0 * s0, n_groups)
    b01 = np.bincount(codes, s0 * s1, n_groups)
    b11 = np.bincount(codes, s1 * s1, n_groups)
    for lag in range(1, hac_lags + 1):
        w = 1 - lag / (hac_lags + 1)
        same = codes[lag:] == codes[:-lag]
        c = codes[lag:][same]
        x0, x1 = s0[lag:][same], s1[lag:][same]
        y0, y1 = s0[:-lag][same], s1[:-lag][same]
        b00 += w * 2 * np.bincount(c, x0 * y0, n_groups)
        b11 += w * 2 * np.bincount(c, x1 * y1, n_groups)
        b01 += w * np.bincount(c, x0 * y1 + x1 * y0, n_groups)
    det = h00 * h11 - h01**2
    # inverse of H
    i00, i01, i11 = h11 / det, -h01 / det, h00 / det
    # (H^-1 B H^-1)[1,1]
    var = i01 * (i01 * b00 + i11 * b01) + i11 * (i01 * b01 + i11 * b11)
    return e, np.sqrt(var), a
