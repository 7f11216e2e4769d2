"""Pricing core: own-price elasticities with intervals from confounded sales history, and
profit-maximising list prices under guardrails.

Verbs, all pure (frames in, new objects out):

- :func:`demand_history` - the dense product x day panel (zero-unit days filled in) with the
  price in force, calendar and store-level controls and lagged demand controls;
- :func:`estimate_elasticities` - per-product elasticity, shrunk within category, with intervals;
  :func:`naive_loglog_ols` is the textbook baseline it is compared with;
- :func:`demand_backtest` / :func:`tune_demand_model` - time-based backtest (fit before a split
  day, out-of-sample Poisson deviance of daily units on the last weeks) and an Optuna search over
  the estimator's hyperparameters on it;
- :func:`recommend_prices` - the price that maximises expected profit under a constant-elasticity
  demand curve, clipped to :class:`PricingGuardrails`.

Why the estimation is hard
--------------------------
Prices are not set at random: merchandisers raise prices when demand is strong. In the synthetic
store (:mod:`revopt.sample_data.synth`) a latent AR(1) demand shock ``u_j(d)`` both multiplies demand and makes
list-price increases more likely, so a log-log regression of units on price is biased towards
zero (measured: +0.7 on elasticities around -1.8, i.e. it finds demand roughly inelastic).
Two facts of the data are used instead:

1. the shock moves *slowly and continuously* (a day-to-day innovation of ~0.08 on the log scale)
   while list prices move in *steps* and promotions are short, so a product-level demand level
   that is allowed to drift smoothly absorbs the shock but not the price steps;
2. promotions and the timing of price changes carry variation that the shock does not explain.

Estimator (``method="local_level"``, the default)
-------------------------------------------------
A partially linear Poisson model per product j::

    units_jd ~ Poisson(exp(log lines_d + e_j * log price_jd + u_j(d)))

with ``lines_d`` the store's order lines that day (store traffic, weekday and season in one
control) and ``u_j`` a random walk with innovation sd ``level_sd`` (a *local level*; the AR(1) of
the generator is close to one over a year). ``u_j`` is the nuisance: it is profiled out by
penalised maximum likelihood (Newton on the joint concave objective; the Hessian is tridiagonal
plus one dense row, solved per Newton step with a Thomas sweep vectorised over products), which
is Robinson's partialling-out with a smoother instead of a cross-fitted regression: ``e_j`` is
the Poisson slope of demand on the part of the price the smooth level does not follow. Its
standard error is the sandwich over that partialled-out price (robust to the over-dispersion of
units, which come in baskets of quantities). ``level_sd`` is chosen by the Laplace-approximated
marginal likelihood pooled over products (an empirical-Bayes choice of smoothness; on the
synthetic store it recovers the generator's 0.084) unless given or tuned.

Why Poisson and not ``log(1 + units)``: most product-days sell 0-5 units, where
``E[log(1 + Y)]`` is far from linear in ``log E[Y]`` (its slope is ~0.3 at a mean of 0.5 units and
~0.7 at 3), so a linear model on that transform attenuates the elasticity by an amount that
depends on the product's volume. The Poisson log link is linear in ``log E[Y]`` at every volume,
and quasi-Poisson inference only needs the mean to be right.

``method="dml"`` is the double-machine-learning variant the design started from (partially
linear model with cross-fitted LightGBM nuisances on *past-only* controls: lagged demand and
price, calendar, store lines; folds by product; per-product Poisson residual-on-residual slope
with a heteroskedasticity-robust sandwich). It is kept for comparison and as a fallback for
data where the local-level assumption is wrong. Measured on the synthetic store it has about
twice the error of the local level (``docs/pricing.md``): past-only controls have to choose
between absorbing the price steps (lagged prices) and leaving the latent shock unabsorbed.

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

Empirical-Bayes shrinkage
-------------------------
Raw per-product estimates are noisy (standard errors 0.4-1 on a year of a few units a day).
Normal-normal model ``raw_j ~ N(e_j, se_j^2)``, ``e_j ~ N(mu_category, tau^2)``: category means
and one between-product sd ``tau`` shared by all categories (a per-category tau is unstable with
a handful of products per category), estimated by REML; posterior mean and sd per product, the
sd including the uncertainty of the category mean. Categories with fewer than
``min_category_products`` estimable products share one pooled mean.

Why hand-written: no library fits this model. DoubleML/EconML (not installed) cross-fit sklearn
nuisances and return one average effect or a CATE model, not per-product Poisson slopes with a
latent level and category shrinkage; statsmodels' GLMs loop over products and have no smooth
latent level. Everything here is vectorised over products (numpy, scipy, LightGBM); Python loops
run over days in the Thomas sweep, folds, categories and guardrails only.

The optimiser
-------------
Demand at price p is ``q0 * (p / p0) ** e`` with ``p0`` the current list price and ``q0`` the
expected daily units at ``p0`` (the latent level at the end of the history). Profit
``q(p) * (p - cost)`` then peaks at ``cost * e / (1 + e)`` when ``e < -1`` and increases with
price when ``-1 <= e < 0`` (the upper bound binds). The optimum is clipped to the intersection of
the guardrail intervals; when guardrails conflict, the lower-priority ones are relaxed (see
:data:`GUARDRAIL_PRIORITY`) and the reason says so. Prices are rounded *inward* (to cents, or to
the configured ending) so the rounded price still satisfies every bound that was enforced.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd
from scipy import optimize, stats

from ml.gate import beats, finite_or_nan, rank_key

logger = logging.getLogger(__name__)

MODEL_NAME = "revopt_price_elasticity"
METHODS: tuple[str, ...] = ("local_level", "dml")

#: Guardrails in priority order: when two conflict, the later one is relaxed.
GUARDRAIL_PRIORITY: tuple[str, ...] = ("min_margin", "max_change", "inventory", "competitor_band", "observed_range")

#: Lags (days) of the past-only demand and price controls in :func:`demand_history`.
LAGS: tuple[int, ...] = (7, 28)

#: raw elasticities beyond this are treated as failed fits (no product is that elastic)
MAX_ABS_ELASTICITY = 10.0

_DISCOUNT_TOLERANCE = 0.011  # two discounts "agree" within a percent (they are stored to 4 decimals)
_NO_DISCOUNT = 0.005
_FILTER_STEPS = 8
_LEVEL_SD_GRID: tuple[float, ...] = (0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3)
#: the level's innovation sd when no product has the days and units to inform it (mid-grid; the
#: synthetic store's generator drifts by 0.084 a day)
_FALLBACK_LEVEL_SD = 0.08
#: days the demand backtest holds out at the end of the panel (it fits on the days before)
BACKTEST_DAYS = 28
_DML_FEATURES: tuple[str, ...] = (
    "lag_units_28", "units_trend", "price_trend", "lines_rel", "dow", "year_sin", "year_cos", "days_since_list_change",
)
_DEFAULT_LGB: dict[str, float] = {
    "num_leaves": 15, "learning_rate": 0.05, "num_boost_round": 300, "min_data_in_leaf": 100,
    "lambda_l2": 1.0, "feature_fraction": 0.9,
}


# --- configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ElasticityConfig:
    """How :func:`estimate_elasticities` works. Defaults are the ones measured in ``docs/pricing.md``."""

    method: str = "local_level"
    #: random-walk innovation sd of the latent demand level; None: chosen by marginal likelihood
    level_sd: float | None = None
    interval: float = 0.90
    #: a product needs this many usable days, this many units and this std of log price to be estimated
    min_days: int = 28
    min_units: int = 5
    min_log_price_std: float = 0.01
    min_category_products: int = 3
    #: nearest sold days further apart than this cannot vouch for a promotion / the full price in between
    promo_gap_days: int = 8
    full_price_gap_days: int = 28
    #: days of store traffic averaged for the expected units at the current price
    anchor_days: int = 28
    # method="dml" only
    warmup_days: int = 28
    n_folds: int = 5
    lgb_params: dict[str, float] = field(default_factory=lambda: dict(_DEFAULT_LGB))
    random_state: int = 0
    n_jobs: int = 2

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.level_sd is not None and not self.level_sd > 0:
            raise ValueError(f"level_sd must be > 0 or None, got {self.level_sd}")
        if not 0 < self.interval < 1:
            raise ValueError(f"interval must be in (0, 1), got {self.interval}")
        for name in ("min_days", "min_units", "min_category_products", "promo_gap_days", "full_price_gap_days",
                     "anchor_days", "n_folds", "n_jobs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_log_price_std < 0 or self.warmup_days < 0:
            raise ValueError("min_log_price_std and warmup_days must be >= 0")


@dataclass(frozen=True)
class PricingGuardrails:
    """Bounds every recommended price must respect (see :data:`GUARDRAIL_PRIORITY` for conflicts).

    - ``min_margin``: price >= cost x (1 + min_margin);
    - ``max_change``: price within current x (1 +/- max_change) per run;
    - ``competitor_band``: price within competitor x (1 +/- band) when a competitor price is known
      (None: off);
    - ``observed_range_slack``: price within [min observed x (1 - slack), max observed x (1 + slack)]
      so the demand curve is not extrapolated (None: off);
    - inventory cover (when ``on_hand`` is known and ``inventory_cover``): expected units over the
      horizon at the new price <= on_hand, a lower bound on the price;
    - ``price_ending``: e.g. 0.99 for prices like 12.99 (None: whole cents);
    - confidence: hold the current price when the elasticity interval is wider than
      ``max_interval_width``, the product had no price variation, or fewer than ``min_days`` days.
    """

    min_margin: float = 0.10
    max_change: float = 0.10
    competitor_band: float | None = 0.15
    observed_range_slack: float | None = 0.05
    inventory_cover: bool = True
    price_ending: float | None = None
    max_interval_width: float = 1.2
    act_when_direction_certain: bool = True
    min_days: int = 56

    def __post_init__(self) -> None:
        checks = {
            "min_margin": self.min_margin >= 0,
            "max_change": 0 <= self.max_change < 1,
            "competitor_band": self.competitor_band is None or 0 <= self.competitor_band < 1,
            "observed_range_slack": self.observed_range_slack is None or 0 <= self.observed_range_slack < 1,
            "price_ending": self.price_ending is None or 0 <= self.price_ending < 1,
            "max_interval_width": self.max_interval_width > 0,
            "min_days": self.min_days >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"PricingGuardrails.{name} is out of range: {getattr(self, name)!r}")


@dataclass(frozen=True)
class ElasticityEstimates:
    """Output of :func:`estimate_elasticities`.

    ``products``: one row per product of the panel (see :func:`estimate_elasticities`);
    ``categories``: category, prior mean, its se, tau, number of estimated products;
    ``params``: scalars worth logging (method, level_sd, tau, counts).
    """

    products: pd.DataFrame
    categories: pd.DataFrame
    params: dict[str, Any]


@dataclass(frozen=True)
class DemandTuning:
    """Output of :func:`tune_demand_model`: the config with the best hyperparameters and the study."""

    config: ElasticityConfig
    best_deviance: float
    default_deviance: float
    n_trials: int
    study: optuna.Study


# --- demand history ---------------------------------------------------------------------------------


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


def training_data_shortfall(sales: pd.DataFrame, products: pd.DataFrame, run_date: Any, lookback_days: int,
                            validation_days: int = BACKTEST_DAYS) -> str | None:
    """Why the sales history cannot train the pricing model as of ``run_date`` (None when it can):
    no product of ``products`` sold in the ``lookback_days`` before it, none of those that sold ever
    changed price (list price, or the average price paid on a day), or every sale falls in the
    demand backtest's held-out last ``validation_days`` days. ``sales`` is the product_daily_sales
    extract (product_id, day, units, revenue, list_price). The reason names the run date and tables."""
    run = pd.Timestamp(run_date).normalize()
    window = sales[(sales["day"] >= run - pd.Timedelta(days=lookback_days)) & (sales["day"] < run)
                   & sales["product_id"].isin(products["product_id"])]
    sold = window[window["units"] > 0]
    if sold.empty:
        return (f"no priced product sold in the {lookback_days} days before {run.date()} "
                "(shop.order_lines of completed shop.orders)")
    split = run - pd.Timedelta(days=validation_days)
    first_sale = pd.Timestamp(sold["day"].min())
    if first_sale >= split:
        return (f"too little sales history before {run.date()}: the first sale is on {first_sale.date()}, inside the "
                f"demand backtest's held-out last {validation_days} days (it needs sales before {split.date()}) "
                "(shop.order_lines of completed shop.orders)")
    paid_prices = (sold["revenue"] / sold["units"]).round(2).groupby(sold["product_id"]).nunique()
    list_prices = window[window["product_id"].isin(sold["product_id"])].groupby("product_id")["list_price"].nunique()
    if not ((paid_prices > 1).any() or (list_prices > 1).any()):
        return (f"no product with price variation before {run.date()}: every product that sold in the {lookback_days} "
                f"days before it ({len(paid_prices)}) sold at one price and kept its list price "
                "(shop.product_prices / shop.order_lines)")
    return None


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


# --- naive baseline ---------------------------------------------------------------------------------


def naive_loglog_ols(panel: pd.DataFrame) -> pd.DataFrame:
    """Per-product OLS of log units on log price paid over days with sales, no controls.

    The textbook estimate, biased here by confounding (and by dropping zero-unit days). Returns
    product_id, elasticity, se (HC0), n_days.
    """
    sold = panel[panel["units"] > 0]
    codes, ids = pd.factorize(sold["product_id"].to_numpy(), sort=True)
    x = sold["log_price"].to_numpy()
    y = np.log(sold["units"].to_numpy(dtype=float))
    n = np.bincount(codes)
    dx = x - (np.bincount(codes, x) / n)[codes]
    dy = y - (np.bincount(codes, y) / n)[codes]
    sxx = np.bincount(codes, dx * dx)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(sxx > 1e-12, np.bincount(codes, dx * dy) / sxx, np.nan)
        resid = dy - slope[codes] * dx
        se = np.sqrt(np.bincount(codes, (dx * resid) ** 2)) / sxx
    return pd.DataFrame({"product_id": ids.astype("int64"), "elasticity": slope, "se": se, "n_days": n})


# --- local-level estimator --------------------------------------------------------------------------


@dataclass(frozen=True)
class _RawFit:
    """Per-product raw estimates plus what a forecast needs (indexed like ``product_id``)."""

    product_id: np.ndarray
    elasticity: np.ndarray  # NaN: not estimated
    se: np.ndarray
    level_last: np.ndarray  # log demand level on the last day (local level) / final-stage intercept (dml)
    level_var_last: np.ndarray  # its posterior variance (local level)
    price_mean: np.ndarray  # the log price the level refers to
    params: dict[str, Any]
    models: tuple[lgb.Booster, lgb.Booster] | None = None


def _wide(panel: pd.DataFrame, column: str, ids: np.ndarray, days: pd.DatetimeIndex) -> np.ndarray:
    return panel.pivot(index="day", columns="product_id", values=column).reindex(index=days, columns=ids).to_numpy(dtype=float)


def _thomas(diag: np.ndarray, off: float, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve symmetric tridiagonal systems along axis 0 (days), one per product column.

    ``diag`` (T, n), constant off-diagonal ``off``, ``rhs`` (T, n, k). Returns the solution, the
    log-determinant per column and the last diagonal element of the inverse (the posterior variance
    of the last day's level). A loop over days, vectorised over products and right-hand sides.
    """
    n_days = diag.shape[0]
    pivot = np.empty_like(diag)
    ratio = np.empty_like(diag)
    forward = np.empty_like(rhs)
    pivot[0] = diag[0]
    forward[0] = rhs[0] / pivot[0][:, None]
    for t in range(1, n_days):
        ratio[t - 1] = off / pivot[t - 1]
        pivot[t] = diag[t] - off * ratio[t - 1]
        forward[t] = (rhs[t] - off * forward[t - 1]) / pivot[t][:, None]
    solution = np.empty_like(rhs)
    solution[-1] = forward[-1]
    for t in range(n_days - 2, -1, -1):
        solution[t] = forward[t] - ratio[t][:, None] * solution[t + 1]
    return solution, np.log(pivot).sum(axis=0), 1.0 / pivot[-1]


def _local_level_newton(
    y: np.ndarray, price: np.ndarray, offset: np.ndarray, mask: np.ndarray, level_sd: float,
    max_iter: int = 60, tol: float = 1e-8,
) -> dict[str, np.ndarray]:
    """Penalised Poisson fit of log mu = offset + e * price + u(t), u a random walk, per column.

    ``price`` must be centred per column over ``mask``. Returns e, its robust se, the level path,
    the Laplace log marginal likelihood per column and the information about e.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _local_level_newton_steps(y, price, offset, mask, level_sd, max_iter, tol)


def _local_level_newton_steps(
    y: np.ndarray, price: np.ndarray, offset: np.ndarray, mask: np.ndarray, level_sd: float, max_iter: int, tol: float,
) -> dict[str, np.ndarray]:
    n_days, n = y.shape
    lam = 1.0 / level_sd**2
    penalty_diag = np.full((n_days, 1), 2.0 * lam)
    penalty_diag[0] = penalty_diag[-1] = lam
    exp_offset = np.where(mask, np.exp(offset), 0.0)
    level = np.tile(np.log((y.sum(axis=0) + 0.5) / exp_offset.sum(axis=0)), (n_days, 1))
    e = np.zeros(n)
    for _ in range(max_iter):
        mu = exp_offset * np.exp(e * price + level)
        resid = y - mu
        step = np.diff(level, axis=0)
        grad_level = resid.copy()
        grad_level[:-1] += lam * step
        grad_level[1:] -= lam * step
        cross = mu * price
        solved, _, _ = _thomas(mu + penalty_diag, -lam, np.stack([grad_level, cross], axis=2))
        info = (cross * price).sum(axis=0) - (cross * solved[..., 1]).sum(axis=0)
        de = np.clip(np.nan_to_num(((price * resid).sum(axis=0) - (cross * solved[..., 0]).sum(axis=0)) / info), -1.0, 1.0)
        dlevel = np.clip(solved[..., 0] - solved[..., 1] * de, -3.0, 3.0)
        e += de
        level += dlevel
        if np.max(np.abs(de)) < tol and np.max(np.abs(dlevel)) < 1e-6:
            break
    converged = np.abs(de) < 1e-4
    mu = exp_offset * np.exp(e * price + level)
    resid = y - mu
    cross = mu * price
    solved, logdet, last_var = _thomas(mu + penalty_diag, -lam, cross[..., None])
    partialled = price - solved[..., 0]  # the price the smooth level does not follow
    info = (cross * partialled).sum(axis=0)  # = [H^-1]_ee^-1, the information about e with the level integrated out
    # Laplace posterior variance 1 / info, scaled by the over-dispersion seen where the price moves
    # (a partialled-out-price-weighted Pearson ratio): calibrated on the synthetic store (z-scores sd ~1)
    dispersion = (resid**2 * partialled**2).sum(axis=0) / (mu * partialled**2).sum(axis=0)
    se = np.sqrt(dispersion / info)
    loglik = np.where(mask, y * np.log(np.where(mu > 0, mu, 1.0)) - mu, 0.0).sum(axis=0)
    log_ml = loglik - 0.5 * lam * (np.diff(level, axis=0) ** 2).sum(axis=0) + 0.5 * (n_days - 1) * np.log(lam) - 0.5 * logdet
    return {"e": e, "se": se, "level": level, "log_ml": log_ml, "info": info, "level_var_last": last_var,
            "converged": converged}


def _fit_local_level(panel: pd.DataFrame, config: ElasticityConfig, usable: pd.Series) -> _RawFit:
    ids = np.sort(panel["product_id"].unique())
    days = pd.date_range(panel["day"].min(), panel["day"].max(), freq="D")
    rows = panel[usable]
    y = np.nan_to_num(_wide(rows, "units", ids, days))
    mask = ~np.isnan(_wide(rows, "log_price_in_force", ids, days))
    price = np.nan_to_num(_wide(rows, "log_price_in_force", ids, days))
    log_lines = pd.Series(panel.groupby("day")["log_lines"].first()).reindex(days).ffill().bfill().to_numpy()
    offset = np.broadcast_to(log_lines[:, None], y.shape)
    y = np.where(mask, y, 0.0)
    count = mask.sum(axis=0)
    price_mean = np.where(count > 0, np.where(mask, price, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
    centred = np.where(mask, price - np.nan_to_num(price_mean), 0.0)
    price_sd = np.sqrt((centred**2).sum(axis=0) / np.maximum(count, 1))
    fit = (count >= config.min_days) & (y.sum(axis=0) >= config.min_units) & (price_sd >= config.min_log_price_std)

    elasticity = np.full(len(ids), np.nan)
    se = np.full(len(ids), np.nan)
    level_last = np.full(len(ids), np.nan)
    level_var_last = np.full(len(ids), np.nan)
    level_sd = config.level_sd
    log_ml_by_sd: dict[float, float] = {}
    if fit.any():
        args = (y[:, fit], centred[:, fit], offset[:, fit], mask[:, fit])
        if level_sd is None:
            results = {sd: _local_level_newton(*args, level_sd=sd) for sd in _LEVEL_SD_GRID}
            log_ml_by_sd = {sd: float(np.sum(r["log_ml"])) for sd, r in results.items()}
            level_sd = _most_likely_level_sd(log_ml_by_sd)
            result = results[level_sd]
        else:
            result = _local_level_newton(*args, level_sd=level_sd)
        # a Newton that did not settle (e.g. every sale at one price) or an elasticity beyond
        # +/-MAX_ABS_ELASTICITY is not an estimate: such products get the category prior only
        ok = (np.isfinite(result["se"]) & (result["info"] > 0) & result["converged"]
              & (np.abs(result["e"]) <= MAX_ABS_ELASTICITY))
        chosen = np.flatnonzero(fit)
        elasticity[chosen] = np.where(ok, result["e"], np.nan)
        se[chosen] = np.where(ok, result["se"], np.nan)
        level_last[chosen] = np.where(ok, result["level"][-1], np.nan)
        level_var_last[chosen] = np.where(ok, result["level_var_last"], np.nan)
    elif level_sd is None:
        # No product has the price variation (or days, or units) for an elasticity, but the backtest's
        # filter still needs the level's sd: choose it the same way on the products with enough days
        # and units, demand drifting with the price term left out (a fixed mid-grid value if none).
        informative = (count >= config.min_days) & (y.sum(axis=0) >= config.min_units)
        if informative.any():
            args = (y[:, informative], np.zeros_like(centred[:, informative]), offset[:, informative], mask[:, informative])
            log_ml_by_sd = {sd: float(np.sum(_local_level_newton(*args, level_sd=sd)["log_ml"])) for sd in _LEVEL_SD_GRID}
            level_sd = _most_likely_level_sd(log_ml_by_sd)
        else:
            level_sd = _FALLBACK_LEVEL_SD
    # products the smoother did not fit: their level is the plain mean of recent demand
    recent = slice(max(0, len(days) - config.anchor_days), None)
    missing = ~np.isfinite(level_last)
    plain = np.nan_to_num(_wide(panel, "units", ids, days))[recent].sum(axis=0) + 0.5
    level_last = np.where(missing, np.log(plain / np.exp(log_lines[recent]).sum()), level_last)
    level_var_last = np.where(missing, 1.0 / plain, level_var_last)
    return _RawFit(
        product_id=ids, elasticity=elasticity, se=se, level_last=level_last, level_var_last=level_var_last,
        price_mean=np.where(np.isfinite(price_mean), price_mean, np.log(panel.groupby("product_id")["price"].last().reindex(ids).to_numpy())),
        params={"level_sd": level_sd, "log_ml_by_level_sd": log_ml_by_sd},
    )


def _most_likely_level_sd(log_ml_by_sd: dict[float, float]) -> float:
    """The grid's level sd with the highest (finite) pooled log marginal likelihood."""
    best = min(log_ml_by_sd, key=lambda sd: rank_key(log_ml_by_sd[sd], higher_is_better=True))
    return best if np.isfinite(log_ml_by_sd[best]) else _FALLBACK_LEVEL_SD


# --- DML estimator ----------------------------------------------------------------------------------


def _dml_design(panel: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Past-only controls, the demand offset (log of recent demand, scaled by today's traffic) and
    the price baseline (mean log price of the last 28 days); the nuisances learn corrections."""
    lines_rel = panel["log_lines"].to_numpy() - panel["lag_log_lines_28"].to_numpy()
    demand_offset = np.log(np.expm1(panel["lag_units_28"].to_numpy()) + 0.1) + lines_rel
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
    return X[list(_DML_FEATURES)], demand_offset, price_base


def _lgb_params(params: dict[str, float], objective: str, config: ElasticityConfig) -> tuple[dict[str, Any], int]:
    chosen = dict(params)
    rounds = int(chosen.pop("num_boost_round"))
    chosen["num_leaves"] = int(chosen["num_leaves"])
    chosen["min_data_in_leaf"] = int(chosen["min_data_in_leaf"])
    base = {"objective": objective, "verbosity": -1, "seed": config.random_state, "deterministic": True,
            "force_col_wise": True, "num_threads": config.n_jobs, "feature_pre_filter": False}
    return {**base, **chosen}, rounds


def _train_nuisances(
    X: pd.DataFrame, units: np.ndarray, offset: np.ndarray, price_target: np.ndarray, config: ElasticityConfig
) -> tuple[lgb.Booster, lgb.Booster]:
    demand_params, demand_rounds = _lgb_params(config.lgb_params, "poisson", config)
    price_params, price_rounds = _lgb_params(config.lgb_params, "regression", config)
    demand = lgb.train(demand_params, lgb.Dataset(X, label=units, init_score=offset), num_boost_round=demand_rounds)
    price = lgb.train(price_params, lgb.Dataset(X, label=price_target), num_boost_round=price_rounds)
    return demand, price


def _poisson_slopes(
    y: np.ndarray, v: np.ndarray, offset: np.ndarray, codes: np.ndarray, n_groups: int, max_iter: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group Poisson regression of y on (1, v) with an offset: slope, HC0 se of the slope, intercept.

    Newton on all groups at once (2 x 2 systems in closed form); v is centred per group inside.
    """
    count = np.bincount(codes, minlength=n_groups)
    v_mean = np.bincount(codes, v, n_groups) / np.maximum(count, 1)
    v = v - v_mean[codes]
    intercept = np.log(np.maximum(np.bincount(codes, y, n_groups), 1e-9) / np.bincount(codes, np.exp(offset), n_groups))
    slope = np.zeros(n_groups)
    for _ in range(max_iter):
        mu = np.exp(offset + intercept[codes] + slope[codes] * v)
        resid = y - mu
        g0, g1 = np.bincount(codes, resid, n_groups), np.bincount(codes, resid * v, n_groups)
        h00, h01, h11 = (np.bincount(codes, mu * v**k, n_groups) for k in (0, 1, 2))
        det = h00 * h11 - h01**2
        with np.errstate(invalid="ignore", divide="ignore"):
            d0 = np.clip(np.nan_to_num((h11 * g0 - h01 * g1) / det), -2.0, 2.0)
            d1 = np.clip(np.nan_to_num((h00 * g1 - h01 * g0) / det), -1.0, 1.0)
        intercept += d0
        slope += d1
        if max(np.max(np.abs(d0)), np.max(np.abs(d1))) < 1e-9:
            break
    mu = np.exp(offset + intercept[codes] + slope[codes] * v)
    resid = y - mu
    h00, h01, h11 = (np.bincount(codes, mu * v**k, n_groups) for k in (0, 1, 2))
    b00, b01, b11 = (np.bincount(codes, resid**2 * v**k, n_groups) for k in (0, 1, 2))
    det = h00 * h11 - h01**2
    with np.errstate(invalid="ignore", divide="ignore"):
        i01, i11 = -h01 / det, h00 / det
        variance = i01 * (i01 * b00 + i11 * b01) + i11 * (i01 * b01 + i11 * b11)
        se = np.sqrt(variance)
    return slope, se, intercept - slope * v_mean


def _fold_of(product_id: np.ndarray, day: np.ndarray, n_folds: int, random_state: int) -> np.ndarray:
    """Cross-fitting folds: groups of whole products (no product's own noise reaches its nuisance),
    or blocks of days when there are fewer products than folds."""
    ids = np.unique(product_id)
    if len(ids) >= n_folds:
        order = np.random.default_rng(random_state).permutation(len(ids)) % n_folds
        return order[np.searchsorted(ids, product_id)]
    day_codes, _ = pd.factorize(day, sort=True)
    return np.minimum(day_codes * n_folds // (day_codes.max() + 1), n_folds - 1)


def _fit_dml(panel: pd.DataFrame, config: ElasticityConfig, usable: pd.Series) -> _RawFit:
    rows = panel[usable & (panel["history_days"] >= config.warmup_days)]
    ids = np.sort(panel["product_id"].unique())
    X, offset, price_base = _dml_design(rows)
    y = rows["units"].to_numpy(dtype=float)
    d = rows["log_price_in_force"].to_numpy()
    fold = _fold_of(rows["product_id"].to_numpy(), rows["day"].to_numpy(), config.n_folds, config.random_state)
    mu_hat = np.empty(len(rows))
    m_hat = np.empty(len(rows))
    for k in range(config.n_folds):
        train, test = fold != k, fold == k
        if not test.any() or not train.any():
            continue
        demand, price = _train_nuisances(X[train], y[train], offset[train], (d - price_base)[train], config)
        mu_hat[test] = np.exp(offset[test] + demand.predict(X[test], raw_score=True))
        m_hat[test] = price_base[test] + price.predict(X[test])
    codes = np.searchsorted(ids, rows["product_id"].to_numpy())
    slope, se, intercept = _poisson_slopes(y, d - m_hat, np.log(mu_hat), codes, len(ids))
    count = np.bincount(codes, minlength=len(ids))
    units = np.bincount(codes, y, len(ids))
    sd = np.sqrt(np.maximum(np.bincount(codes, d**2, len(ids)) / np.maximum(count, 1)
                            - (np.bincount(codes, d, len(ids)) / np.maximum(count, 1)) ** 2, 0.0))
    fit = ((count >= config.min_days) & (units >= config.min_units) & (sd >= config.min_log_price_std) & np.isfinite(se)
           & (np.abs(slope) <= MAX_ABS_ELASTICITY))
    models = _train_nuisances(X, y, offset, d - price_base, config)
    # expected units at the current price come from the last anchor_days, adjusted for price (ratio estimator)
    last = panel["day"].max() - pd.Timedelta(days=config.anchor_days - 1)
    recent = panel[panel["day"] >= last]
    recent_codes = np.searchsorted(ids, recent["product_id"].to_numpy())
    current_log_price = np.log(panel.groupby("product_id")["list_price"].last().reindex(ids).to_numpy())
    e_used = np.where(fit, slope, 0.0)
    weight = np.exp(e_used[recent_codes] * (recent["log_price"].to_numpy() - current_log_price[recent_codes])
                    + recent["log_lines"].to_numpy())
    level = np.log((np.bincount(recent_codes, recent["units"].to_numpy(dtype=float), len(ids)) + 0.5)
                   / np.maximum(np.bincount(recent_codes, weight, len(ids)), 1e-12))
    return _RawFit(
        product_id=ids, elasticity=np.where(fit, slope, np.nan), se=np.where(fit, se, np.nan),
        level_last=level, level_var_last=np.full(len(ids), np.nan), price_mean=current_log_price, params={"final_intercepts": intercept}, models=models,
    )


# --- empirical Bayes --------------------------------------------------------------------------------


def shrink_within_category(
    raw: np.ndarray, se: np.ndarray, category: np.ndarray, *, min_category_products: int = 3, interval: float = 0.90
) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Normal-normal empirical Bayes: ``raw ~ N(e, se^2)``, ``e ~ N(mu_category, tau^2)``.

    Category means and a tau shared by all categories are estimated by REML over the products with
    a finite raw estimate; categories with fewer than ``min_category_products`` of them share one
    pooled mean. Returns (per product: elasticity, elasticity_sd, elasticity_low, elasticity_high,
    prior_elasticity, prior_sd, shrinkage; NaN where raw is NaN), the per-group table, and tau.
    """
    category = np.asarray(category, dtype=object)
    finite = np.isfinite(raw) & np.isfinite(se) & (se > 0)
    counts = pd.Series(category[finite]).value_counts()
    big = set(counts[counts >= min_category_products].index)
    group = np.where(pd.Series(category).isin(big).to_numpy(), category, "(pooled)")
    codes, groups = pd.factorize(group, sort=True)
    z = stats.norm.ppf(0.5 + interval / 2.0)
    n_groups = len(groups)
    theta, s2, g = raw[finite], se[finite] ** 2, codes[finite]

    def group_means(tau2: float) -> tuple[np.ndarray, np.ndarray]:
        w = 1.0 / (s2 + tau2)
        total = np.bincount(g, w, n_groups)
        return np.bincount(g, w * theta, n_groups) / np.where(total > 0, total, np.nan), total

    def negative_reml(log_tau: float) -> float:
        tau2 = np.exp(2.0 * log_tau)
        means, total = group_means(tau2)
        present = total > 0
        return 0.5 * (np.sum(np.log(s2 + tau2)) + np.sum(np.log(total[present]))
                      + np.sum((theta - means[g]) ** 2 / (s2 + tau2)))

    if finite.sum() >= 2:
        tau = float(np.exp(optimize.minimize_scalar(negative_reml, bounds=(np.log(0.02), np.log(5.0)), method="bounded").x))
    else:
        tau = 0.5  # one product cannot tell how much products differ: a wide, fixed prior
    means, total = group_means(tau**2)
    if finite.any():
        pooled_mean = float(np.sum(theta / (s2 + tau**2)) / np.sum(1.0 / (s2 + tau**2)))
        pooled_var = float(1.0 / np.sum(1.0 / (s2 + tau**2)))
    else:
        pooled_mean, pooled_var = np.nan, np.nan
    mean_var = np.where(total > 0, 1.0 / np.where(total > 0, total, 1.0), pooled_var)
    means = np.where(total > 0, means, pooled_mean)
    prior_mean, prior_mean_var = means[codes], mean_var[codes]
    shrink = tau**2 / (tau**2 + se**2)  # weight on the product's own estimate
    posterior = prior_mean + shrink * (raw - prior_mean)
    posterior_sd = np.sqrt(shrink * se**2 + (1.0 - shrink) ** 2 * prior_mean_var)
    per_product = pd.DataFrame(
        {
            "elasticity": np.where(finite, posterior, np.nan),
            "elasticity_sd": np.where(finite, posterior_sd, np.nan),
            "elasticity_low": np.where(finite, posterior - z * posterior_sd, np.nan),
            "elasticity_high": np.where(finite, posterior + z * posterior_sd, np.nan),
            "prior_elasticity": prior_mean,
            "prior_sd": np.sqrt(tau**2 + prior_mean_var),
            "shrinkage": np.where(finite, 1.0 - shrink, np.nan),
        }
    )
    table = pd.DataFrame(
        {"group": groups, "prior_mean": means, "prior_mean_se": np.sqrt(mean_var), "tau": tau,
         "n_products": np.bincount(g, minlength=n_groups)}
    )
    return per_product, table, tau


# --- estimation -------------------------------------------------------------------------------------


def _usable_rows(panel: pd.DataFrame) -> pd.Series:
    return panel["log_price_in_force"].notna()


def _fit_raw(panel: pd.DataFrame, config: ElasticityConfig) -> _RawFit:
    usable = _usable_rows(panel)
    return _fit_local_level(panel, config, usable) if config.method == "local_level" else _fit_dml(panel, config, usable)


def estimate_elasticities(panel: pd.DataFrame, config: ElasticityConfig | None = None) -> ElasticityEstimates:
    """Per-product own-price elasticity from a :func:`demand_history` panel (see the module docstring).

    ``products`` columns: product_id, category, elasticity (posterior mean; NaN when not estimated),
    elasticity_sd, elasticity_low, elasticity_high (``config.interval`` interval), raw_elasticity
    and raw_se (before shrinkage), prior_elasticity and prior_sd (the category prior; also for
    products not estimated), shrinkage (weight of the category prior), n_days (usable days),
    units, log_price_std, has_price_variation, estimated, min_price_observed,
    max_price_observed, current_list_price, expected_daily_units (at the current list price, at
    the end of the history), method.
    """
    return _estimate(panel, config or ElasticityConfig())[0]


def _estimate(panel: pd.DataFrame, config: ElasticityConfig) -> tuple[ElasticityEstimates, _RawFit]:
    began = time.perf_counter()
    raw = _fit_raw(panel, config)
    ids = raw.product_id
    usable = panel[_usable_rows(panel)]
    per_product = panel.groupby("product_id")
    usable_groups = usable.groupby("product_id")
    category = per_product["category"].first().reindex(ids).to_numpy(dtype=object)
    shrunk, table, tau = shrink_within_category(
        raw.elasticity, raw.se, category, min_category_products=config.min_category_products, interval=config.interval
    )
    log_price_std = usable_groups["log_price_in_force"].std(ddof=0).reindex(ids).fillna(0.0).to_numpy()
    has_variation = (log_price_std >= config.min_log_price_std) & (usable_groups["log_price_in_force"].nunique().reindex(ids).fillna(0).to_numpy() >= 2)
    current = per_product["list_price"].last().reindex(ids).to_numpy()
    days = panel["day"].max() - pd.Timedelta(days=config.anchor_days - 1)
    typical_lines = float(np.mean(panel.loc[panel["day"] >= days].groupby("day")["log_lines"].first()))
    e_for_anchor = np.where(np.isfinite(shrunk["elasticity"]), shrunk["elasticity"], shrunk["prior_elasticity"])
    e_for_anchor = np.nan_to_num(e_for_anchor, nan=-1.0)
    if config.method == "local_level":
        expected = np.exp(typical_lines + raw.level_last + e_for_anchor * (np.log(current) - raw.price_mean))
    else:
        expected = np.exp(typical_lines + raw.level_last)
    out = pd.DataFrame(
        {
            "product_id": ids.astype("int64"),
            "category": category,
            **{c: shrunk[c].to_numpy() for c in ("elasticity", "elasticity_sd", "elasticity_low", "elasticity_high")},
            "raw_elasticity": raw.elasticity,
            "raw_se": raw.se,
            "prior_elasticity": shrunk["prior_elasticity"].to_numpy(),
            "prior_sd": shrunk["prior_sd"].to_numpy(),
            "shrinkage": shrunk["shrinkage"].to_numpy(),
            "n_days": usable_groups.size().reindex(ids).fillna(0).astype("int64").to_numpy(),
            "units": per_product["units"].sum().reindex(ids).astype("int64").to_numpy(),
            "log_price_std": log_price_std,
            "has_price_variation": has_variation,
            "estimated": np.isfinite(raw.elasticity),
            "min_price_observed": per_product["price"].min().reindex(ids).to_numpy(),
            "max_price_observed": per_product["price"].max().reindex(ids).to_numpy(),
            "current_list_price": current,
            "expected_daily_units": expected,
            "method": config.method,
        }
    )
    table = table.rename(columns={"group": "category"})
    params = {
        "method": config.method, "tau": tau, "interval": config.interval,
        "n_products": len(ids), "n_estimated": int(np.isfinite(raw.elasticity).sum()),
        "level_sd": raw.params.get("level_sd"), "seconds": time.perf_counter() - began,
    }
    logger.info("elasticities (%s): %d of %d products estimated, tau %.3f, %.1fs", config.method,
                params["n_estimated"], len(ids), tau, params["seconds"])
    return ElasticityEstimates(products=out, categories=table, params=params), raw


# --- backtest and tuning ----------------------------------------------------------------------------


def _poisson_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    mu = np.clip(mu, 1e-9, None)
    term = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return float(2.0 * np.mean(term - (y - mu)))


def demand_backtest(panel: pd.DataFrame, config: ElasticityConfig | None = None,
                    validation_days: int = BACKTEST_DAYS) -> dict[str, float]:
    """Fit on the panel's days before ``last day - validation_days + 1``, predict daily units on the
    rest (with their realised prices and store traffic) and score the mean Poisson deviance.

    Also scores two references on the same rows: ``deviance_no_price`` (the same model with every
    elasticity 0) and ``deviance_naive`` (recent mean units scaled by traffic).
    """
    config = config or ElasticityConfig()
    split = panel["day"].max() - pd.Timedelta(days=validation_days - 1)
    train, holdout = panel[panel["day"] < split], panel[panel["day"] >= split]
    if train.empty:
        raise ValueError(f"demand backtest: the panel's days {panel['day'].min().date()}..{panel['day'].max().date()} "
                         f"leave none before the {validation_days} held-out days to fit on")
    fitted, raw = _estimate(train, config)
    estimates = fitted.products.set_index("product_id")
    holdout = holdout[holdout["product_id"].isin(raw.product_id)]
    position = np.searchsorted(raw.product_id, holdout["product_id"].to_numpy())
    e = estimates["elasticity"].fillna(estimates["prior_elasticity"]).reindex(raw.product_id).fillna(-1.0).to_numpy()[position]
    price = holdout["log_price_in_force"].fillna(holdout["log_price"]).to_numpy()
    y = holdout["units"].to_numpy(dtype=float)
    if config.method == "local_level":
        level_sd = raw.params["level_sd"]
        mu = _filtered_predictions(raw, holdout, position, e, price, level_sd)
        mu_flat = _filtered_predictions(raw, holdout, position, np.zeros_like(e), price, level_sd)
    else:
        X, offset, price_base = _dml_design(holdout)
        demand, price_model = raw.models
        mu_x = np.exp(offset + demand.predict(X, raw_score=True))
        m_x = price_base + price_model.predict(X)
        intercept = np.nan_to_num(raw.params["final_intercepts"])[position]
        mu = mu_x * np.exp(intercept + e * (price - m_x))
        mu_flat = mu_x * np.exp(intercept)
    recent = train[train["day"] >= split - pd.Timedelta(days=config.anchor_days)]
    scale = (recent.groupby("product_id")["units"].sum() + 0.5) / recent.groupby("product_id")["log_lines"].apply(lambda s: np.exp(s).sum())
    mu_naive = scale.reindex(holdout["product_id"]).fillna(0.5 / np.exp(recent["log_lines"]).sum()).to_numpy() * np.exp(holdout["log_lines"].to_numpy())
    return {
        "deviance": _poisson_deviance(y, mu),
        "deviance_no_price": _poisson_deviance(y, mu_flat),
        "deviance_naive": _poisson_deviance(y, mu_naive),
        "rows": float(len(y)),
    }


def _filtered_predictions(
    raw: _RawFit, holdout: pd.DataFrame, position: np.ndarray, e: np.ndarray, price: np.ndarray, level_sd: float
) -> np.ndarray:
    """One-day-ahead predictions through the holdout: the level starts from the fit's last day and
    is updated each day by a Poisson extended Kalman filter (elasticities fixed), so the backtest
    compares like with like against models whose controls are lagged demand. A loop over holdout
    days, vectorised over products."""
    day_codes, holdout_days = pd.factorize(holdout["day"].to_numpy(), sort=True)
    level = raw.level_last.copy()
    variance = np.nan_to_num(raw.level_var_last, nan=1.0)
    exponent = holdout["log_lines"].to_numpy() + e * (price - raw.price_mean[position])
    y = holdout["units"].to_numpy(dtype=float)
    mu = np.empty(len(holdout))
    for t in range(len(holdout_days)):
        today = np.flatnonzero(day_codes == t)
        cols = position[today]
        variance = variance + level_sd**2
        mu[today] = np.exp(exponent[today] + level[cols])
        # the update is the mode of the day's posterior for the level (a few damped 1-d Newton
        # steps: one plain EKF step overshoots on a lumpy day, e.g. one wholesale order)
        prior_mean, prior_var = level[cols], variance[cols]
        updated = prior_mean.copy()
        for _ in range(_FILTER_STEPS):
            rate = np.exp(exponent[today] + updated)
            gradient = y[today] - rate - (updated - prior_mean) / prior_var
            updated += np.clip(gradient / (rate + 1.0 / prior_var), -2.0, 2.0)
        level[cols] = updated
        variance[cols] = 1.0 / (np.exp(exponent[today] + updated) + 1.0 / prior_var)
    return mu


def _suggest(trial: optuna.Trial, config: ElasticityConfig) -> ElasticityConfig:
    if config.method == "local_level":
        return dataclasses.replace(config, level_sd=trial.suggest_float("level_sd", 0.01, 0.3, log=True))
    params = {
        "num_leaves": trial.suggest_int("num_leaves", 4, 63, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "num_boost_round": trial.suggest_int("num_boost_round", 50, 600, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 20, 1000, log=True),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
    }
    return dataclasses.replace(config, lgb_params=params)


def tune_demand_model(
    panel: pd.DataFrame,
    config: ElasticityConfig | None = None,
    *,
    n_trials: int = 20,
    timeout_seconds: float = 60.0,
    validation_days: int = BACKTEST_DAYS,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
) -> DemandTuning:
    """Optuna (TPE, seeded with ``config.random_state``) minimising :func:`demand_backtest` deviance.

    Searches ``level_sd`` for the local level, the LightGBM nuisance hyperparameters (shared by the
    demand and price models) for DML. The given config is scored too and kept unless a trial beats
    it on the backtest. Deterministic when bounded by ``n_trials`` rather than by
    ``timeout_seconds``. ``callbacks`` go to ``study.optimize`` (e.g. MLflow nested runs).
    """
    config = config or ElasticityConfig()
    default = demand_backtest(panel, config, validation_days)["deviance"]

    def objective(trial: optuna.Trial) -> float:
        candidate = _suggest(trial, config)
        scores = demand_backtest(panel, candidate, validation_days)
        for name, value in scores.items():
            trial.set_user_attr(name, value)
        return finite_or_nan(scores["deviance"])  # NaN: a failed trial, never the best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=config.random_state),
                                study_name=f"pricing-{config.method}")
    study.optimize(objective, n_trials=n_trials, timeout=timeout_seconds, callbacks=list(callbacks or []))
    finished = [t for t in study.trials if t.value is not None]
    # the given config stays unless a trial beats it; a non-finite deviance never does, and loses to any finite one
    if finished and beats(study.best_value, default, higher_is_better=False):
        best = _suggest(optuna.trial.FixedTrial(study.best_params), config)
        best_deviance = float(study.best_value)
    else:
        best, best_deviance = config, default
    logger.info("pricing tuning (%s): %d trials, backtest deviance %.4f (default config %.4f)", config.method,
                len(finished), best_deviance, default)
    return DemandTuning(config=best, best_deviance=best_deviance, default_deviance=default, n_trials=len(finished), study=study)


# --- optimiser --------------------------------------------------------------------------------------

_TOLERANCE = 1e-9
_MIN_PRICE = 0.01  # every price is at least a cent, whatever the guardrails say


def _latest(frame: pd.DataFrame | None, column: str, ids: np.ndarray) -> np.ndarray:
    """``column`` per product id (the last day's value when the frame has a ``day`` column); NaN when unknown."""
    if frame is None or len(frame) == 0:
        return np.full(len(ids), np.nan)
    latest = frame.sort_values("day", kind="stable") if "day" in frame.columns else frame
    return latest.groupby("product_id")[column].last().reindex(ids).to_numpy(dtype=float)


def _guardrail_bounds(
    guardrails: PricingGuardrails, cost: np.ndarray, current: np.ndarray, e_curve: np.ndarray, daily_units: np.ndarray,
    competitor: np.ndarray, on_hand: np.ndarray, observed_min: np.ndarray, observed_max: np.ndarray, horizon_days: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(lower, upper) per guardrail of :data:`GUARDRAIL_PRIORITY`; NaN where it does not apply."""
    n = len(cost)
    nan = np.full(n, np.nan)
    inf = np.full(n, np.inf)
    bounds = {
        "min_margin": (np.where(np.isfinite(cost), cost * (1.0 + guardrails.min_margin), np.nan), np.where(np.isfinite(cost), inf, np.nan)),
        "max_change": (current * (1.0 - guardrails.max_change), current * (1.0 + guardrails.max_change)),
    }
    stocked = np.isfinite(on_hand) & guardrails.inventory_cover & (e_curve < 0) & (daily_units > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # units(p) * horizon <= on_hand  <=>  p >= p0 * (on_hand / (q0 * horizon)) ** (1 / e) for e < 0
        floor = np.where(on_hand > 0, current * (on_hand / (daily_units * horizon_days)) ** (1.0 / e_curve), np.inf)
    bounds["inventory"] = (np.where(stocked, floor, np.nan), np.where(stocked, inf, np.nan))
    if guardrails.competitor_band is None:
        bounds["competitor_band"] = (nan, nan)
    else:
        known = np.isfinite(competitor) & (competitor > 0)
        band = guardrails.competitor_band
        bounds["competitor_band"] = (np.where(known, competitor * (1.0 - band), np.nan), np.where(known, competitor * (1.0 + band), np.nan))
    if guardrails.observed_range_slack is None:
        bounds["observed_range"] = (nan, nan)
    else:
        known = np.isfinite(observed_min) & np.isfinite(observed_max)
        slack = guardrails.observed_range_slack
        bounds["observed_range"] = (np.where(known, observed_min * (1.0 - slack), np.nan), np.where(known, observed_max * (1.0 + slack), np.nan))
    return bounds


def _intersect(bounds: dict[str, tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, ...]:
    """Intersect the guardrail intervals in priority order (one loop over guardrails, vectorised
    over products). A guardrail that would empty the interval is *relaxed minimally*: the interval
    shrinks to its end nearest to that guardrail (e.g. a margin floor above the max-change band
    gives exactly the floor), so the price still gets as close to it as the higher-priority ones
    allow. Returns lower, upper, the guardrail setting each, and a relaxed mask per guardrail."""
    lower, upper = np.full(n, _MIN_PRICE), np.full(n, np.inf)
    lower_by, upper_by = np.full(n, "none", dtype=object), np.full(n, "none", dtype=object)
    relaxed = {}
    for name in GUARDRAIL_PRIORITY:
        lo, hi = bounds[name]
        applies = ~np.isnan(lo) | ~np.isnan(hi)
        lo = np.where(np.isnan(lo), -np.inf, lo)
        hi = np.where(np.isnan(hi), np.inf, hi)
        new_lower, new_upper = np.maximum(lower, lo), np.minimum(upper, hi)
        feasible = (new_lower <= new_upper) & np.isfinite(new_lower)
        relaxed[name] = applies & ~feasible
        take = applies & feasible
        lower_by = np.where(take & (lo > lower), name, lower_by)
        upper_by = np.where(take & (hi < upper), name, upper_by)
        # relaxed: pin to the end of the current interval nearest to the guardrail (when finite)
        towards_upper = relaxed[name] & (lo > upper) & np.isfinite(upper)
        towards_lower = relaxed[name] & (hi < lower)
        lower_by = np.where(towards_upper, name, lower_by)
        upper_by = np.where(towards_lower, name, upper_by)
        lower = np.where(take, new_lower, np.where(towards_upper, upper, lower))
        upper = np.where(take, new_upper, np.where(towards_lower, lower, upper))
    return lower, upper, lower_by, upper_by, relaxed


def _within(price: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    return (price >= lower - _TOLERANCE) & (price <= upper + _TOLERANCE)


def _profit(price: np.ndarray, current: np.ndarray, daily_units: np.ndarray, e: np.ndarray, cost: np.ndarray) -> np.ndarray:
    return daily_units * (price / current) ** e * (price - cost)


def _round_inward(
    price: np.ndarray, lower: np.ndarray, upper: np.ndarray, ending: float | None,
    current: np.ndarray, daily_units: np.ndarray, e: np.ndarray, cost: np.ndarray, prefer_nearest: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Round to the price ending (the more profitable of the two neighbouring endings, or the
    nearer one where ``prefer_nearest``) or else to whole cents, never leaving [lower, upper].
    Returns the price and whether the ending could be applied."""
    cent_lower = np.ceil(lower * 100.0 - 1e-6) / 100.0
    cent_upper = np.floor(np.minimum(upper, 1e12) * 100.0 + 1e-6) / 100.0
    has_cent = cent_lower <= cent_upper
    cents = np.where(has_cent, np.clip(np.round(price * 100.0) / 100.0, cent_lower, cent_upper), price)
    if ending is None:
        return cents, np.ones(len(price), dtype=bool)
    down = np.round(np.floor(price - ending) + ending, 2)
    up = np.round(down + 1.0, 2)
    ok_down, ok_up = (_within(p, lower, upper) & (p > 0) for p in (down, up))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        up_better = _profit(up, current, daily_units, e, cost) > _profit(down, current, daily_units, e, cost)
    up_better = np.where(prefer_nearest, (up - price) < (price - down), up_better)
    chosen = np.where(ok_down & ok_up, np.where(up_better, up, down), np.where(ok_up, up, down))
    applied = ok_down | ok_up
    return np.where(applied, chosen, cents), applied


def recommend_prices(
    estimates: pd.DataFrame,
    products: pd.DataFrame,
    guardrails: PricingGuardrails | None = None,
    *,
    competitor_prices: pd.DataFrame | None = None,
    inventory: pd.DataFrame | None = None,
    horizon_days: int = 7,
) -> pd.DataFrame:
    """Profit-maximising list price per product of ``products`` under ``guardrails``.

    ``estimates`` is :attr:`ElasticityEstimates.products` (or any frame with product_id,
    elasticity, elasticity_low, elasticity_high, expected_daily_units, has_price_variation, n_days,
    min_price_observed, max_price_observed, prior_elasticity); ``products`` has product_id, cost,
    current_price. ``competitor_prices`` (product_id, competitor_price) and ``inventory``
    (product_id, on_hand), each optionally with a ``day`` column (the last day per product is
    used), switch on the competitor band and the inventory cover.

    Demand at price p is ``q0 (p / p0) ** e`` (p0 = current price, q0 = expected daily units at
    p0), so the unconstrained optimum is ``cost e / (1 + e)`` for ``e < -1`` and the upper bound for
    ``e >= -1``; it is clipped to the guardrail interval and rounded inward. Products with low
    confidence keep their current price, or the nearest price the guardrails allow. Expected
    units, revenue and profit are over ``horizon_days``; for products without an elasticity they
    use the category prior (or -1 when there is none either).

    Returns product_id, current_price, recommended_price, elasticity, elasticity_low,
    elasticity_high, expected_{units,revenue,profit}_{current,recommended}, binding_guardrail (the
    guardrail whose bound set the price, or 'none'), confidence ('high' | 'low') and reason, one
    row per product in ``products`` order. Deterministic; no loop over products.
    """
    guardrails = guardrails or PricingGuardrails()
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be >= 1, got {horizon_days}")
    missing = {"product_id", "cost", "current_price"} - set(products.columns)
    if missing:
        raise ValueError(f"products is missing columns {sorted(missing)}")
    ids = products["product_id"].to_numpy()
    est = estimates.drop_duplicates("product_id").set_index("product_id").reindex(ids)

    def column(name: str) -> np.ndarray:
        return est[name].to_numpy(dtype=float) if name in est.columns else np.full(len(ids), np.nan)

    cost = products["cost"].to_numpy(dtype=float)
    current = products["current_price"].to_numpy(dtype=float)
    e, low, high = column("elasticity"), column("elasticity_low"), column("elasticity_high")
    prior = column("prior_elasticity")
    e_curve = np.where(np.isfinite(e), e, np.where(np.isfinite(prior), prior, -1.0))
    daily_units = np.nan_to_num(column("expected_daily_units"), nan=0.0)
    anchored_at = column("current_list_price")  # the price expected_daily_units refers to
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        moved = np.isfinite(anchored_at) & (anchored_at > 0) & (anchored_at != current)
        daily_units = np.where(moved, daily_units * (current / anchored_at) ** e_curve, daily_units)
    n_days = np.nan_to_num(column("n_days"), nan=0.0)
    has_history = np.isfinite(column("n_days"))
    varied = est["has_price_variation"].fillna(False).to_numpy(dtype=bool) if "has_price_variation" in est.columns else has_history

    bounds = _guardrail_bounds(
        guardrails, cost, current, e_curve, daily_units,
        _latest(competitor_prices, "competitor_price", ids), _latest(inventory, "on_hand", ids),
        column("min_price_observed"), column("max_price_observed"), horizon_days,
    )
    lower, upper, lower_by, upper_by, relaxed = _intersect(bounds, len(ids))

    def best_price(elasticity: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            optimum = np.where(elasticity < -1.0, cost * elasticity / (1.0 + elasticity), np.inf)
        clipped = np.clip(optimum, lower, upper)
        # no upper bound survived (max_change relaxed for the margin floor): the smallest allowed move
        return np.where(np.isinf(clipped), lower, clipped)

    width = high - low
    # the optimal price is increasing in e, so the interval's ends bound every price it allows
    direction_certain = ((best_price(low) > current) & (best_price(high) > current)) | (
        (best_price(low) < current) & (best_price(high) < current))
    too_wide = ~(width <= guardrails.max_interval_width) & ~(guardrails.act_when_direction_certain & direction_certain)
    checks = [  # the first failing check gives the reason
        (~has_history, "hold: no sales in the history"),
        (has_history & ~varied, "hold: no price variation in the history"),
        (n_days < guardrails.min_days, "hold: too little usable history"),
        (~np.isfinite(e), "hold: elasticity not estimated"),
        (too_wide, "hold: elasticity interval too wide"),
    ]
    hold_reason = np.full(len(ids), "", dtype=object)
    for failed, text in reversed(checks):
        hold_reason = np.where(failed, text, hold_reason)
    confident = hold_reason == ""
    hold_reason = np.where(
        hold_reason == "hold: elasticity interval too wide",
        [f"hold: elasticity interval too wide ({w:.2f} > {guardrails.max_interval_width:.2f}) and its ends disagree on the direction" for w in width],
        hold_reason,
    )

    with np.errstate(divide="ignore", invalid="ignore"):
        optimum = np.where(e < -1.0, cost * e / (1.0 + e), np.inf)
    target = np.where(confident, optimum, current)
    continuous = np.where(confident, best_price(e), np.clip(current, lower, upper))
    binding = np.where(target < lower, lower_by, np.where(target > upper, upper_by, "none"))
    binding = np.where(confident & np.isinf(np.clip(target, lower, upper)), lower_by, binding)
    keep = ~confident & (continuous == current)
    rounded, ending_applied = _round_inward(
        continuous, lower, upper, guardrails.price_ending, current, daily_units, e_curve, cost, prefer_nearest=~confident
    )
    price = np.where(keep, current, rounded)
    # rounding to an ending can land below the current price's profit; then do not move at all
    current_allowed = _within(current, lower, upper)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        worse = (confident & current_allowed & (price != current)
                 & (_profit(price, current, daily_units, e_curve, cost) < _profit(current, current, daily_units, e_curve, cost)))
    price = np.where(worse, current, price)
    binding = np.where(worse, "none", binding)

    units_now = daily_units * horizon_days
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        units_new = units_now * (price / current) ** e_curve

    wide_but_sure = confident & ~(width <= guardrails.max_interval_width)
    reason = np.where(
        e < -1.0,
        [f"profit-maximising price cost x e/(1+e) = {p:.2f} (e = {v:.2f})" for p, v in zip(optimum, e)],
        [f"inelastic demand (e = {v:.2f}): profit rises with price up to the upper bound" for v in e],
    )
    reason = np.where(wide_but_sure, reason + "; interval wide but all of it moves the price the same way", reason)
    reason = np.where(confident, reason, hold_reason)
    reason = np.where(binding != "none", reason + "; limited by " + binding, reason)
    reason = np.where(~confident & (price != current), reason + "; moved to the nearest price the guardrails allow", reason)
    for name, mask in relaxed.items():
        reason = np.where(mask, reason + f"; relaxed {name} (conflicts with higher-priority guardrails; as close as they allow)", reason)
    reason = np.where(worse, reason + "; kept the current price: no rounded price within bounds earns more", reason)
    if guardrails.price_ending is not None:
        reason = np.where(~keep & ~worse & ~ending_applied,
                          reason + f"; no price ending .{round(guardrails.price_ending * 100):02d} within bounds, rounded to cents", reason)

    return pd.DataFrame(
        {
            "product_id": ids,
            "current_price": current,
            "recommended_price": price,
            "elasticity": e,
            "elasticity_low": low,
            "elasticity_high": high,
            "expected_units_current": units_now,
            "expected_units_recommended": units_new,
            "expected_revenue_current": units_now * current,
            "expected_revenue_recommended": units_new * price,
            "expected_profit_current": units_now * (current - cost),
            "expected_profit_recommended": units_new * (price - cost),
            "binding_guardrail": binding.astype(object),
            "confidence": np.where(confident, "high", "low").astype(object),
            "reason": reason.astype(object),
        }
    )
