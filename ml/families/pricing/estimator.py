"""Per-product own-price elasticities with intervals: the local-level estimator (the default), the
double-machine-learning variant, and the naive log-log baseline they are compared with; the raw
estimates are shrunk by :mod:`~ml.families.pricing.shrinkage` (re-exported here). The model, its assumptions and why it is written by hand are in
the package docstring (:mod:`ml.families.pricing`); the panel it reads is
:func:`features.demand.demand_history`'s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from ml.families.pricing.shrinkage import shrink_within_brand, shrink_within_category
from ml.gate import rank_key

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("local_level", "dml")

#: raw elasticities beyond this are treated as failed fits (no product is that elastic)
MAX_ABS_ELASTICITY = 10.0

_LEVEL_SD_GRID: tuple[float, ...] = (0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3)
#: the level's innovation sd when no product has the days and units to inform it (mid-grid; the
#: synthetic store's generator drifts by 0.084 a day)
_FALLBACK_LEVEL_SD = 0.08
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
class ElasticityEstimates:
    """Output of :func:`estimate_elasticities`.

    ``products``: one row per product of the panel (see :func:`estimate_elasticities`);
    ``categories``: category, prior mean, its se, tau, number of estimated products;
    ``params``: scalars worth logging (method, level_sd, tau, counts).
    """

    products: pd.DataFrame
    categories: pd.DataFrame
    params: dict[str, Any]


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
    #: widening of both ends of the interval for misspecification (0: none detected)
    specification_allowance: np.ndarray | None = None


def _wide(panel: pd.DataFrame, column: str, ids: np.ndarray, days: pd.DatetimeIndex) -> np.ndarray:
    return panel.pivot(index="day", columns="product_id", values=column).reindex(index=days, columns=ids).to_numpy(dtype=float)


def _thomas(diag: np.ndarray, off: float | np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve symmetric tridiagonal systems along axis 0 (days), one per product column.

    ``diag`` (T, n), off-diagonal ``off`` constant along the days (a scalar, or one per column (n,)),
    ``rhs`` (T, n, k). Returns the solution, the
    log-determinant per column and the last diagonal element of the inverse (the posterior variance
    of the last day's level). A loop over days, vectorised over products and right-hand sides.
    """
    n_days = diag.shape[0]
    off = np.broadcast_to(np.asarray(off, dtype=float), diag.shape[1:])
    pivot = np.empty_like(diag)
    ratio = np.empty_like(diag)
    forward = np.empty_like(rhs)
    pivot[0] = diag[0]
    forward[0] = rhs[0] / pivot[0][:, None]
    for t in range(1, n_days):
        ratio[t - 1] = off / pivot[t - 1]
        pivot[t] = diag[t] - off * ratio[t - 1]
        forward[t] = (rhs[t] - off[:, None] * forward[t - 1]) / pivot[t][:, None]
    solution = np.empty_like(rhs)
    solution[-1] = forward[-1]
    for t in range(n_days - 2, -1, -1):
        solution[t] = forward[t] - ratio[t][:, None] * solution[t + 1]
    return solution, np.log(pivot).sum(axis=0), 1.0 / pivot[-1]


def _local_level_newton(
    y: np.ndarray, price: np.ndarray, offset: np.ndarray, mask: np.ndarray, level_sd: float,
    max_iter: int = 60, tol: float = 1e-8, Z: list[np.ndarray] | None = None, dispersion: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Penalised Poisson fit of log mu = offset + e * price + u(t) + sum_k beta_k Z_k, u a random walk,
    per column (product), with ``beta`` (the promotion effects, ``Z`` days x products each) shared by
    all columns and fitted jointly.

    ``price`` must be centred per column over ``mask``. Returns e, its robust se, the level path,
    the Laplace log marginal likelihood per column, the information about e, and ``beta`` with its
    standard errors clustered by column (empty without ``Z``).

    ``dispersion`` (per column, >= 1; None: 1) makes it a quasi-likelihood fit: the Poisson
    log-likelihood of an over-dispersed column counts ``1 / dispersion`` as much against the level's
    random-walk prior, so the level does not chase noise that is only over-dispersion (and the
    marginal likelihood that chooses ``level_sd`` is the quasi one).
    """
    phi = np.ones(y.shape[1]) if dispersion is None else np.asarray(dispersion, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _local_level_newton_steps(y, price, offset, mask, level_sd, max_iter, tol, list(Z or []), phi)


def _local_level_newton_steps(
    y: np.ndarray, price: np.ndarray, offset: np.ndarray, mask: np.ndarray, level_sd: float, max_iter: int, tol: float,
    Z: list[np.ndarray], phi: np.ndarray,
) -> dict[str, np.ndarray]:
    """Newton on the joint concave objective (the Poisson log-likelihood minus ``phi`` times the
    level's penalty, per column: the quasi-likelihood scaled by ``phi``). Per product the (level, e)
    block is tridiagonal plus one dense row (a Thomas sweep and a Schur step for e); the shared ``beta`` couple the products, so
    their step is the Schur complement of all the products' blocks (k x k, k = len(Z))."""
    n_days, n = y.shape
    k = len(Z)
    lam_prior = 1.0 / level_sd**2
    lam = lam_prior * phi  # per column
    penalty_diag = np.full((n_days, 1), 2.0) * lam
    penalty_diag[0] = penalty_diag[-1] = lam
    exp_offset = np.where(mask, np.exp(offset), 0.0)
    level = np.tile(np.log((y.sum(axis=0) + 0.5) / exp_offset.sum(axis=0)), (n_days, 1))
    e = np.zeros(n)
    beta = np.zeros(k)

    def mean() -> np.ndarray:
        shift = sum((b * z for b, z in zip(beta, Z)), np.zeros_like(level))
        return exp_offset * np.exp(e * price + level + shift)

    def block_solves(mu: np.ndarray, rhs: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """A^-1 [cross, rhs...] (A: the level's tridiagonal block), the Schur term of e, and cross."""
        cross = mu * price
        solved, _, _ = _thomas(mu + penalty_diag, -lam, np.stack([cross, *rhs], axis=2))
        info = (cross * price).sum(axis=0) - (cross * solved[..., 0]).sum(axis=0)
        return solved[..., 0], [solved[..., 1 + i] for i in range(len(rhs))], info

    for _ in range(max_iter):
        mu = mean()
        resid = y - mu
        step = np.diff(level, axis=0)
        grad_level = resid.copy()
        grad_level[:-1] += lam * step
        grad_level[1:] -= lam * step
        grad_e = (price * resid).sum(axis=0)
        mu_z = [mu * z for z in Z]
        x_c, (x_g, *x_z), info = block_solves(mu, [grad_level, *mu_z])
        cross = mu * price
        de_g = np.nan_to_num((grad_e - (cross * x_g).sum(axis=0)) / info)
        du_g = x_g - x_c * de_g
        dbeta = np.zeros(k)
        if k:
            ez = [(m * price).sum(axis=0) for m in mu_z]  # e-beta cross terms per product
            de_z = [np.nan_to_num((ez[i] - (cross * x_z[i]).sum(axis=0)) / info) for i in range(k)]
            du_z = [x_z[i] - x_c * de_z[i] for i in range(k)]
            schur = np.array([[(mu_z[a] * Z[b]).sum() - ((mu_z[a] * du_z[b]).sum() + (ez[a] * de_z[b]).sum())
                               for b in range(k)] for a in range(k)])
            rhs = np.array([(Z[a] * resid).sum() - ((mu_z[a] * du_g).sum() + (ez[a] * de_g).sum()) for a in range(k)])
            dbeta = np.clip(_shared_step(schur, rhs), -1.0, 1.0)
            de_g = de_g - sum(de_z[i] * dbeta[i] for i in range(k))
            du_g = du_g - sum(du_z[i] * dbeta[i] for i in range(k))
        de = np.clip(de_g, -1.0, 1.0)
        dlevel = np.clip(du_g, -3.0, 3.0)
        e += de
        level += dlevel
        beta += dbeta
        if np.max(np.abs(de)) < tol and np.max(np.abs(dlevel)) < 1e-6 and (not k or np.max(np.abs(dbeta)) < 1e-8):
            break
    converged = np.abs(de) < 1e-4
    mu = mean()
    resid = y - mu
    cross = mu * price
    solved, logdet, last_var = _thomas(mu + penalty_diag, -lam, np.stack([cross, *(mu * z for z in Z)], axis=2))
    partialled = price - solved[..., 0]  # the price the smooth level does not follow
    info = (cross * partialled).sum(axis=0)  # = [H^-1]_ee^-1, the information about e with the level integrated out
    # Laplace posterior variance 1 / info, scaled by the over-dispersion seen where the price moves
    # (a partialled-out-price-weighted Pearson ratio): calibrated on the synthetic store (z-scores sd ~1)
    dispersion = (resid**2 * partialled**2).sum(axis=0) / (mu * partialled**2).sum(axis=0)
    se = np.sqrt(dispersion / info)
    beta_se = np.full(k, np.nan)
    if k:
        # sandwich clustered by product on the promotion terms the product's level and price do not follow
        de_z = [np.nan_to_num(((mu * z * price).sum(axis=0) - (cross * solved[..., 1 + i]).sum(axis=0)) / info)
                for i, z in enumerate(Z)]
        tilde = [z - (solved[..., 1 + i] - solved[..., 0] * de_z[i]) - de_z[i] * price for i, z in enumerate(Z)]
        scores = np.stack([(t * resid * mask).sum(axis=0) for t in tilde], axis=1)
        hessian = np.array([[(mu * a * b).sum() for b in tilde] for a in tilde])
        if np.isfinite(hessian).all() and np.isfinite(scores).all():  # else unknown (NaN): never significant
            bread = np.linalg.pinv(hessian)
            beta_se = np.sqrt(np.clip(np.diag(bread @ (scores.T @ scores) @ bread), 0.0, None))
    loglik = np.where(mask, y * np.log(np.where(mu > 0, mu, 1.0)) - mu, 0.0).sum(axis=0)
    # quasi log marginal likelihood: loglik / phi - the prior's; logdet of (H + phi lam D'D) differs from the
    # quasi Hessian's by n_days log phi, which does not depend on level_sd
    log_ml = (loglik / phi - 0.5 * lam_prior * (np.diff(level, axis=0) ** 2).sum(axis=0)
              + 0.5 * (n_days - 1) * np.log(lam_prior) - 0.5 * logdet)
    return {"e": e, "se": se, "level": level, "log_ml": log_ml, "info": info, "level_var_last": last_var,
            "converged": converged, "beta": beta, "beta_se": beta_se, "mu": mu}


def _shared_step(schur: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """The Newton step of the shared (promotion, cross-price) terms: solved exactly; by least squares when a
    term no product's data can tell apart makes the system singular; no step when it is not finite (a term
    with no variation at all, e.g. a store without promotions, whose entries are 0 x inf)."""
    if not (np.isfinite(schur).all() and np.isfinite(rhs).all()):
        return np.zeros(len(rhs))
    try:
        return np.linalg.solve(schur, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(schur, rhs, rcond=None)[0]


#: The shared terms of the local-level model, from the panel's :data:`features.demand.PROMOTION_COLUMNS`:
#: a temporary price reduction's extra response beyond the product's own elasticity (on log(1 - depth),
#: so it adds to the elasticity during a cut), the log lifts of a display and of a feature; and the
#: cross-price elasticity on the substitutes' prices (``cross_log_price``, :func:`features.demand.with_cross_prices`).
PROMOTION_TERMS: dict[str, str] = {"promo_price_cut": "promo_depth", "promo_display": "promo_display",
                                   "promo_feature": "promo_feature", "cross_price": "cross_log_price"}


def promotion_design(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The promotion terms (:data:`PROMOTION_TERMS`) of the rows of a panel, only those that are not 0
    on every row (a store without promotions has none): name -> values per row."""
    design = {}
    for term, column in PROMOTION_TERMS.items():
        if column not in frame.columns:
            continue
        values = frame[column].to_numpy(dtype=float)
        values = np.log1p(-np.clip(values, 0.0, 0.95)) if term == "promo_price_cut" else values
        if np.any(values != 0.0):
            design[term] = values
    return design


#: The shared curvature of the log-price response: log demand moves by ``e x + kappa x^3`` with ``x``
#: the log price minus the product's mean log price over its history, so ``e`` stays the elasticity at
#: that mean while deep cuts and far-off list prices may respond less (kappa of the opposite sign to
#: ``e``, i.e. > 0 for a normal good: saturation, e.g. stockpiling limits) or more than a constant
#: elasticity says. Without it a saturating
#: response is read as a smaller elasticity everywhere (docs/pricing_panel.md, scenario d).
CURVATURE_TERM = "price_curvature"
#: the term is fitted only when some product's price moves at least this far (log) from its mean,
#: and kept only when constant elasticity is rejected: |kappa| at least this many se from 0
_CURVATURE_MIN_DEVIATION = 0.05
_CURVATURE_MIN_Z = 2.0


def curvature_shift(log_price_offset: np.ndarray, effects: dict[str, float]) -> np.ndarray:
    """The log-demand shift of the fitted curvature (``effects[CURVATURE_TERM]``, 0 without) at log
    prices ``log_price_offset`` away from each product's mean log price."""
    return effects.get(CURVATURE_TERM, 0.0) * np.asarray(log_price_offset, dtype=float) ** 3


def promotion_shift(frame: pd.DataFrame, effects: dict[str, float]) -> np.ndarray:
    """The log-demand shift of each row of ``frame`` from the fitted promotion ``effects`` (0 without)."""
    shift = np.zeros(len(frame))
    for term, values in promotion_design(frame).items():
        shift += effects.get(term, 0.0) * values
    return shift


def days_per_row(frame: pd.DataFrame) -> np.ndarray:
    """The days each panel row covers: its ``period_days`` (aggregated sales), else 1 (a daily panel)."""
    return frame["period_days"].to_numpy(dtype=float) if "period_days" in frame.columns else np.ones(len(frame))


def _fit_local_level(panel: pd.DataFrame, config: ElasticityConfig, usable: pd.Series) -> _RawFit:
    ids = np.sort(panel["product_id"].unique())
    days = pd.date_range(panel["day"].min(), panel["day"].max(), freq="D")
    rows = panel[usable]
    y = np.nan_to_num(_wide(rows, "units", ids, days))
    mask = ~np.isnan(_wide(rows, "log_price_in_force", ids, days))
    price = np.nan_to_num(_wide(rows, "log_price_in_force", ids, days))
    # each row's own store-level offset (a period of aggregated sales spans its days: it is on its first)
    offset = np.nan_to_num(_wide(panel, "log_lines", ids, days))
    terms = promotion_design(rows)
    design = {name: np.nan_to_num(_wide(rows.assign(**{name: values}), name, ids, days)) for name, values in terms.items()}
    y = np.where(mask, y, 0.0)
    count = mask.sum(axis=0)
    # the history a product needs is counted in days, whatever the grain (a week of sales covers 7)
    covered = np.nan_to_num(_wide(rows.assign(days_covered=days_per_row(rows)), "days_covered", ids, days)).sum(axis=0)
    price_mean = np.where(count > 0, np.where(mask, price, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
    centred = np.where(mask, price - np.nan_to_num(price_mean), 0.0)
    price_sd = np.sqrt((centred**2).sum(axis=0) / np.maximum(count, 1))
    fit = (covered >= config.min_days) & (y.sum(axis=0) >= config.min_units) & (price_sd >= config.min_log_price_std)
    if np.any(np.abs(centred[:, fit]) >= _CURVATURE_MIN_DEVIATION):
        design[CURVATURE_TERM] = centred**3

    elasticity = np.full(len(ids), np.nan)
    se = np.full(len(ids), np.nan)
    level_last = np.full(len(ids), np.nan)
    level_var_last = np.full(len(ids), np.nan)
    level_sd = config.level_sd
    dispersion_median = 1.0
    curvature_z: float | None = None
    allowance = np.zeros(len(ids))
    log_ml_by_sd: dict[float, float] = {}
    effects: dict[str, float] = {}
    effects_se: dict[str, float] = {}
    if fit.any():
        args = (y[:, fit], centred[:, fit], offset[:, fit], mask[:, fit])
        Z = [values[:, fit] for values in design.values()]
        # the over-dispersion from a Poisson fit with a stiff level (see _over_dispersion), then the
        # quasi-likelihood fits with it
        phi = _over_dispersion(args[0], args[3], _local_level_newton(*args, level_sd=_LEVEL_SD_GRID[2], Z=Z))
        if level_sd is None:
            results = {sd: _local_level_newton(*args, level_sd=sd, Z=Z, dispersion=phi) for sd in _LEVEL_SD_GRID}
            log_ml_by_sd = {sd: float(np.sum(r["log_ml"])) for sd, r in results.items()}
            level_sd = _most_likely_level_sd(log_ml_by_sd)
            result = results[level_sd]
        else:
            result = _local_level_newton(*args, level_sd=level_sd, Z=Z, dispersion=phi)
        curvature_z = _curvature_z(design, result)
        if curvature_z is not None and abs(curvature_z) < _CURVATURE_MIN_Z:
            # constant elasticity is not rejected: refit without the term (it would only add noise)
            del design[CURVATURE_TERM]
            Z = [values[:, fit] for values in design.values()]
            result = _local_level_newton(*args, level_sd=level_sd, Z=Z, dispersion=phi)
        elif curvature_z is not None:
            # constant elasticity is rejected, and a cubic is only a better approximation: the shift it
            # made to each product's elasticity is kept as an allowance for the misspecification left
            # (assumed no larger than what the term corrected), added to both ends of the interval
            linear = _local_level_newton(*args, level_sd=level_sd, dispersion=phi,
                                         Z=[values[:, fit] for name, values in design.items() if name != CURVATURE_TERM])
            allowance[np.flatnonzero(fit)] = np.nan_to_num(np.abs(result["e"] - linear["e"]))
        dispersion_median = float(np.median(phi))
        effects = dict(zip(design, result["beta"].tolist()))
        effects_se = dict(zip(design, result["beta_se"].tolist()))
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
        informative = (covered >= config.min_days) & (y.sum(axis=0) >= config.min_units)
        if informative.any():
            args = (y[:, informative], np.zeros_like(centred[:, informative]), offset[:, informative], mask[:, informative])
            log_ml_by_sd = {sd: float(np.sum(_local_level_newton(*args, level_sd=sd)["log_ml"])) for sd in _LEVEL_SD_GRID}
            level_sd = _most_likely_level_sd(log_ml_by_sd)
        else:
            level_sd = _FALLBACK_LEVEL_SD
    # products the smoother did not fit: their level is the plain mean of recent demand per unit of
    # store-level demand (over the rows of the last anchor days, whatever their grain)
    recent = slice(max(0, len(days) - config.anchor_days), None)
    missing = ~np.isfinite(level_last)
    plain = np.nan_to_num(_wide(panel, "units", ids, days))[recent].sum(axis=0) + 0.5
    has_row = ~np.isnan(_wide(panel, "log_lines", ids, days))[recent]
    exposure = np.where(has_row, np.exp(offset[recent]), 0.0).sum(axis=0)
    level_last = np.where(missing, np.log(plain / np.maximum(exposure, 1e-9)), level_last)
    level_var_last = np.where(missing, 1.0 / plain, level_var_last)
    return _RawFit(
        product_id=ids, elasticity=elasticity, se=se, level_last=level_last, level_var_last=level_var_last,
        price_mean=np.where(np.isfinite(price_mean), price_mean, np.log(panel.groupby("product_id")["price"].last().reindex(ids).to_numpy())),
        specification_allowance=allowance,
        params={"level_sd": level_sd, "log_ml_by_level_sd": log_ml_by_sd, "promotion_effects": effects,
                "dispersion_median": dispersion_median, "curvature_z": curvature_z,
                "promotion_effects_se": effects_se},
    )


def _curvature_z(design: dict[str, np.ndarray], result: dict[str, np.ndarray]) -> float | None:
    """The curvature's estimate over its (product-clustered) se: the Wald test of constant
    elasticity; None when the term was not fitted."""
    if CURVATURE_TERM not in design:
        return None
    at = list(design).index(CURVATURE_TERM)
    se = result["beta_se"][at]
    return float(result["beta"][at] / se) if np.isfinite(se) and se > 0 else 0.0


#: products' Pearson dispersions are shrunk towards their median with the weight of this many rows
_DISPERSION_PRIOR_ROWS = 30


def _over_dispersion(y: np.ndarray, mask: np.ndarray, fitted: dict[str, np.ndarray]) -> np.ndarray:
    """Per column: how over-dispersed its units are (>= 1), from consecutive rows: with ``r = y / mu``
    (``mu`` the ``fitted`` means, price and promotions included), ``E[(r_t - r_s)^2] ~ phi (1 / mu_t +
    1 / mu_s)`` plus the square of whatever the fit's level missed between the two rows, which is
    small from one row to the next. So the estimate does not depend on how flexible the fitted level
    is (a level that follows the noise would hide it from a plain Pearson ratio, a stiff one would
    count real demand drift as noise). Shrunk towards the columns' median (a column's own ratio from
    a few dozen rows is noisy). Units come in baskets and scanner weeks are noisier than Poisson;
    without this the level would chase the extra noise (see :func:`_local_level_newton`)."""
    n = y.shape[1]
    # every observed row paired with the column's next observed one (rows are sparse in days for
    # aggregated data): column-major, so consecutive entries of one column are its consecutive rows
    cols, rows = np.nonzero(mask.T)
    mu = np.maximum(fitted["mu"][rows, cols], 1e-9)
    ratio = y[rows, cols] / mu
    same = cols[1:] == cols[:-1]
    col = cols[1:][same]
    spread = np.bincount(col, (np.diff(ratio)[same]) ** 2, n)
    scale = np.bincount(col, (1.0 / mu[1:] + 1.0 / mu[:-1])[same], n)
    pairs = np.bincount(col, minlength=n).astype(float)
    pairs = np.where(pairs >= 2, pairs, 0.0)  # a column needs three rows
    own = np.where((pairs > 0) & (scale > 0), spread / np.where(scale > 0, scale, 1.0), 1.0)
    typical = float(np.median(own[pairs > 0])) if (pairs > 0).any() else 1.0
    return np.clip((pairs * own + _DISPERSION_PRIOR_ROWS * typical) / (pairs + _DISPERSION_PRIOR_ROWS), 1.0, 100.0)


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


# --- estimation -------------------------------------------------------------------------------------


#: The brand-level elasticity published beside each product's (NaN when the store has no brands).
BRAND_COLUMNS: tuple[str, ...] = ("brand_elasticity", "brand_elasticity_low", "brand_elasticity_high")


def _brands(panel: pd.DataFrame, ids: np.ndarray) -> np.ndarray | None:
    """Each product's brand (``shop.product_groups``; a product without one is a brand of its own), or
    None when no product of the panel has a brand."""
    if "brand" not in panel.columns or panel["brand"].isna().all():
        return None
    brand = panel.groupby("product_id")["brand"].first().reindex(ids)
    return np.where(brand.isna(), [f"(product {i})" for i in ids], brand.astype(object)).astype(object)


def _usable_rows(panel: pd.DataFrame) -> pd.Series:
    return panel["log_price_in_force"].notna()


def _fit_raw(panel: pd.DataFrame, config: ElasticityConfig) -> _RawFit:
    usable = _usable_rows(panel)
    return _fit_local_level(panel, config, usable) if config.method == "local_level" else _fit_dml(panel, config, usable)


def estimate_elasticities(panel: pd.DataFrame, config: ElasticityConfig | None = None) -> ElasticityEstimates:
    """Per-product own-price elasticity from a :func:`features.demand.demand_history` panel (see
    the package docstring).

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
    brand = _brands(panel, ids)
    taus: dict[str, float] = {}
    if brand is None:
        shrunk, table, tau = shrink_within_category(
            raw.elasticity, raw.se, category, min_category_products=config.min_category_products, interval=config.interval
        )
        shrunk = shrunk.assign(brand_elasticity=np.nan, brand_elasticity_low=np.nan, brand_elasticity_high=np.nan)
        table = table.rename(columns={"group": "category"})
    else:
        shrunk, table, taus = shrink_within_brand(raw.elasticity, raw.se, category, brand,
                                                  min_category_products=config.min_category_products,
                                                  interval=config.interval)
        tau = taus["tau_product"]
    if raw.specification_allowance is not None and np.any(raw.specification_allowance > 0):
        widen = np.where(np.isfinite(shrunk["elasticity"]), raw.specification_allowance, 0.0)
        shrunk = shrunk.assign(elasticity_low=shrunk["elasticity_low"] - widen,
                               elasticity_high=shrunk["elasticity_high"] + widen)
    log_price_std = usable_groups["log_price_in_force"].std(ddof=0).reindex(ids).fillna(0.0).to_numpy()
    has_variation = (log_price_std >= config.min_log_price_std) & (usable_groups["log_price_in_force"].nunique().reindex(ids).fillna(0).to_numpy() >= 2)
    current = per_product["list_price"].last().reindex(ids).to_numpy()
    days = panel["day"].max() - pd.Timedelta(days=config.anchor_days - 1)
    # the store-level demand of a typical recent *day* (a period's offset covers its days)
    per_day = panel.assign(daily_log_lines=panel["log_lines"].to_numpy() - np.log(days_per_row(panel)))
    typical_lines = float(np.mean(per_day.loc[per_day["day"] >= days].groupby("day")["daily_log_lines"].first()))
    e_for_anchor = np.where(np.isfinite(shrunk["elasticity"]), shrunk["elasticity"], shrunk["prior_elasticity"])
    e_for_anchor = np.nan_to_num(e_for_anchor, nan=-1.0)
    if config.method == "local_level":
        offset = np.log(current) - raw.price_mean
        expected = np.exp(typical_lines + raw.level_last + e_for_anchor * offset
                          + curvature_shift(offset, raw.params.get("promotion_effects", {})))
    else:
        expected = np.exp(typical_lines + raw.level_last)
    out = pd.DataFrame(
        {
            "product_id": ids.astype("int64"),
            "category": category,
            **{c: shrunk[c].to_numpy() for c in ("elasticity", "elasticity_sd", "elasticity_low", "elasticity_high")},
            "brand": brand if brand is not None else np.full(len(ids), None, dtype=object),
            # what a joint optimiser needs to price substitutes together (see with_cross_prices)
            "substitute_group": (per_product["substitute_group"].first().reindex(ids).to_numpy(dtype=object)
                                 if "substitute_group" in panel.columns else category),
            "group_share": (per_product["group_share"].first().reindex(ids).to_numpy(dtype=float)
                            if "group_share" in panel.columns else np.full(len(ids), np.nan)),
            **{c: shrunk[c].to_numpy() for c in BRAND_COLUMNS},
            "raw_elasticity": raw.elasticity,
            "raw_se": raw.se,
            "prior_elasticity": shrunk["prior_elasticity"].to_numpy(),
            "prior_sd": shrunk["prior_sd"].to_numpy(),
            "shrinkage": shrunk["shrinkage"].to_numpy(),
            "n_days": usable.assign(days_covered=days_per_row(usable)).groupby("product_id")["days_covered"].sum()
            .reindex(ids).fillna(0).astype("int64").to_numpy(),
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
    params = {
        "method": config.method, "tau": tau, "interval": config.interval,
        "n_products": len(ids), "n_estimated": int(np.isfinite(raw.elasticity).sum()),
        "level_sd": raw.params.get("level_sd"), "seconds": time.perf_counter() - began,
        "grain_days": int(np.median(days_per_row(panel))), **taus,
        **({"dispersion_median": raw.params["dispersion_median"]} if "dispersion_median" in raw.params else {}),
        **({"curvature_z": raw.params["curvature_z"]} if raw.params.get("curvature_z") is not None else {}),
        **({"specification_allowance_median": float(np.median(raw.specification_allowance[np.isfinite(raw.elasticity)]))}
           if raw.specification_allowance is not None and np.isfinite(raw.elasticity).any() else {}),
        **{f"{term}_effect": value for term, value in raw.params.get("promotion_effects", {}).items()},
        **{f"{term}_effect_se": value for term, value in raw.params.get("promotion_effects_se", {}).items()},
    }
    logger.info("elasticities (%s): %d of %d products estimated, tau %.3f, %.1fs", config.method,
                params["n_estimated"], len(ids), tau, params["seconds"])
    return ElasticityEstimates(products=out, categories=table, params=params), raw

