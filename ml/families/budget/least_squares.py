"""The media model's arrays and its two nonlinear least-squares problems (the ``target="total"`` and
``target="attributed"`` models of :mod:`ml.families.budget`, section "The model"): the baseline
design, the adstock and Hill saturation with their derivatives, the weak priors as penalty
residuals, analytic Jacobians, and the multi-start bounded solve (scipy ``least_squares``).

Nothing here estimates anything on its own: :mod:`ml.families.budget.estimator` builds a problem
from a media history and a :class:`~ml.families.budget.estimator.MediaConfig` and solves it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import optimize, special
from scipy.signal import lfilter

from features.media import ORDERS_PREFIX, REVENUE_PREFIX, SPEND_PREFIX

if TYPE_CHECKING:  # the config reads only attributes here; the estimator imports this module
    from ml.families.budget.estimator import MediaConfig

logger = logging.getLogger(__name__)

_SLOPE_PRIOR = (0.0, 0.5)  # mean and sd of log S: concave (S = 1) unless the data show an S-shape
_HALF_SATURATION_PRIOR_SD = 1.0  # sd of log(k / typical spend)
_BETA_PRIOR_SD = 1.0
_TREND_PRIOR_SD = 1.0  # sd of a knot's slope change, log revenue per year
_START_DECAYS = (0.2, 0.5, 0.75)


# --- model arrays -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    """Arrays of one fit: baseline design, spend, target; nothing estimated."""

    X: np.ndarray  # (T, p) baseline design
    penalised: np.ndarray  # (p,) bool: trend knots (ridge)
    spend: np.ndarray  # (T, C) fitted channels
    reference: np.ndarray  # (C,) mean daily spend on days with spend
    warm: np.ndarray  # (C,) mean spend of the first week: the adstock's steady state before the window
    y: np.ndarray  # (T,) total target, or (T, C) attributed revenue
    fixed: np.ndarray  # (C, 3) fixed (decay, log k / reference, slope); NaN = fitted
    rows: np.ndarray  # (T,) bool: days whose residuals enter the fit (all but held-out weeks)


@dataclass(frozen=True)
class _Baseline:
    """How to build the baseline design for any day: origin, knots and Fourier order of the fit."""

    origin: pd.Timestamp
    knots: np.ndarray  # days since origin
    fourier_order: int
    end: float  # days since origin of the last fitted day: the trend stays flat after it

    def design(self, days: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
        t = np.minimum((days - self.origin).days.to_numpy().astype(float), self.end)
        columns = [np.ones_like(t), t / 365.25]
        penalised = [False, False]
        for knot in self.knots:
            columns.append(np.maximum(t - knot, 0.0) / 365.25)
            penalised.append(True)
        dow = days.dayofweek.to_numpy()
        for d in range(1, 7):
            columns.append((dow == d).astype(float))
            penalised.append(False)
        angle = 2.0 * np.pi * days.dayofyear.to_numpy() / 365.25  # weekday and season continue
        for k in range(1, self.fourier_order + 1):
            columns += [np.sin(k * angle), np.cos(k * angle)]
            penalised += [False, False]
        return np.column_stack(columns), np.asarray(penalised)


def _baseline_for(days: pd.DatetimeIndex, config: MediaConfig) -> _Baseline:
    n = len(days)
    step = config.trend_knot_days
    knots = np.arange(step, n - step // 2, step, dtype=float) if step > 0 else np.empty(0)
    # a yearly Fourier pair needs most of a year to be told apart from the trend
    order = config.fourier_order if n >= 300 else 0
    return _Baseline(origin=days[0], knots=knots, fourier_order=order, end=float(n - 1))


def _target(history: pd.DataFrame, config: MediaConfig, channels: Sequence[str], outcome: str | None = None) -> np.ndarray:
    """The series fitted: (T,) total minus excluded channels, or (T, C) attributed; in ``outcome`` units."""
    outcome = outcome or config.outcome
    prefix, total = (ORDERS_PREFIX, "orders") if outcome == "orders" else (REVENUE_PREFIX, "revenue")
    if config.target == "attributed":
        return history[[prefix + c for c in channels]].to_numpy(dtype=float)
    excluded = [prefix + c for c in config.exclude_channels if prefix + c in history.columns]
    return history[total].to_numpy(dtype=float) - history[excluded].to_numpy(dtype=float).sum(axis=1)


def _unit_value(history: pd.DataFrame, config: MediaConfig, channels: Sequence[str]) -> np.ndarray:
    """Revenue per unit of the fitted outcome per channel: 1 for revenue; for orders the average
    order value of the target's orders (total: over the last ``recent_days``; attributed: the
    channel's over the whole history, falling back to the store's when it has no orders)."""
    if config.outcome == "revenue":
        return np.ones(len(channels))
    recent = slice(max(len(history) - config.recent_days, 0), None)
    revenue, orders = _target(history, config, channels, "revenue"), _target(history, config, channels, "orders")
    store = float(history["revenue"].sum() / max(history["orders"].sum(), 1))
    if config.target == "total":
        value = float(revenue[recent].sum() / orders[recent].sum()) if orders[recent].sum() > 0 else store
        return np.full(len(channels), value)
    totals, counts = revenue.sum(axis=0), orders.sum(axis=0)
    return np.where(counts > 0, totals / np.maximum(counts, 1), store)


def _problem(history: pd.DataFrame, config: MediaConfig, channels: Sequence[str], baseline: _Baseline) -> _Problem:
    X, penalised = baseline.design(pd.DatetimeIndex(history["day"]))
    spend = history[[SPEND_PREFIX + c for c in channels]].to_numpy(dtype=float)
    positive = spend > 0
    reference = np.where(positive.any(axis=0), (spend * positive).sum(axis=0) / np.maximum(positive.sum(axis=0), 1), 1.0)
    fixed = np.full((len(channels), 3), np.nan)
    for i, c in enumerate(channels):
        given = config.fixed_parameters.get(c, {})
        if "decay" in given:
            fixed[i, 0] = given["decay"]
        if "half_saturation_spend" in given:
            fixed[i, 1] = np.log(given["half_saturation_spend"] / reference[i])
        if "slope" in given:
            fixed[i, 2] = given["slope"]
    return _Problem(X=X, penalised=penalised, spend=spend, reference=reference, warm=spend[:7].mean(axis=0),
                    y=_target(history, config, channels), fixed=fixed, rows=np.ones(len(X), dtype=bool))


def _adstock(x: np.ndarray, decay: float, warm: float) -> tuple[np.ndarray, np.ndarray]:
    """Geometric adstock from the steady state of ``warm`` daily spend, and its derivative in ``decay``."""
    before = warm / (1.0 - decay)
    a, _ = lfilter([1.0], [1.0, -decay], x, zi=[decay * before])
    lagged = np.concatenate([[before], a[:-1]])
    da, _ = lfilter([1.0], [1.0, -decay], lagged, zi=[decay * warm / (1.0 - decay) ** 2])
    return a, da


def _hill(x: np.ndarray, decay: float, log_k: float, slope: float, warm: float, reference: float,
          ) -> tuple[np.ndarray, np.ndarray]:
    """Saturation ``h`` of the adstock and ``d log z / d (decay, log_k, slope)`` with ``z = (a/K)^S``
    (``dh/dp = h (1 - h) d log z / dp``)."""
    a, da = _adstock(x, decay, warm)
    floor = 1e-9 * reference
    safe = np.maximum(a, floor)
    log_ratio = np.log(safe) - np.log(reference) - log_k + np.log(1.0 - decay)  # log(a / K)
    log_z = np.where(a > floor, slope * log_ratio, -np.inf)
    h = special.expit(log_z)
    dlogz = np.column_stack([
        slope * (da / safe - 1.0 / (1.0 - decay)),
        np.full_like(a, -slope),
        log_ratio,
    ])
    return h, np.where((a > floor)[:, None], dlogz, 0.0)


def _nonlinear(problem: _Problem, free: np.ndarray) -> np.ndarray:
    """(C, 3) decay, log k, slope from the free parameters (fixed ones filled in)."""
    out = problem.fixed.copy()
    out[np.isnan(out)] = free
    return out


def _nonlinear_bounds(problem: _Problem, config: MediaConfig) -> tuple[np.ndarray, np.ndarray]:
    lower = np.tile([config.decay_bounds[0], np.log(config.half_saturation_bounds[0]), config.slope_bounds[0]],
                    (len(problem.reference), 1))
    upper = np.tile([config.decay_bounds[1], np.log(config.half_saturation_bounds[1]), config.slope_bounds[1]],
                    (len(problem.reference), 1))
    free = np.isnan(problem.fixed)
    return lower[free], upper[free]


def _prior_rows(nonlinear: np.ndarray, free: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Penalty residuals for the free nonlinear parameters and their derivatives (diagonal)."""
    w = np.sqrt(strength)
    log_k, slope = nonlinear[:, 1], nonlinear[:, 2]
    residual = np.column_stack([np.zeros(len(slope)), w * log_k / _HALF_SATURATION_PRIOR_SD,
                                w * (np.log(slope) - _SLOPE_PRIOR[0]) / _SLOPE_PRIOR[1]])
    derivative = np.column_stack([np.zeros(len(slope)), np.full(len(slope), w / _HALF_SATURATION_PRIOR_SD),
                                  w / (slope * _SLOPE_PRIOR[1])])
    keep = free.copy()
    keep[:, 0] = False  # no prior on the decay
    return residual[keep], derivative[keep]


# --- the two models -----------------------------------------------------------------------------


class _TotalModel:
    """``log y = X gamma + log(1 + sum_c beta_c h_c)``, the baseline ``gamma`` profiled out.

    For given media parameters ``phi = [beta, free nonlinear]`` the baseline is a ridge regression
    of ``log y - log lift`` on ``X`` (the ridge on the trend knots), so it is solved exactly and the
    nonlinear least squares runs over ``phi`` alone (variable projection): with ``A`` the
    standardised design stacked on the ridge rows and ``P`` its residual projection, the
    residuals are ``P [(log y - log lift) / sigma; 0]`` and, ``A`` not depending on ``phi``, their
    Jacobian is ``P`` times that of the stacked vector, exactly.
    """

    def __init__(self, problem: _Problem, config: MediaConfig, log_y: np.ndarray, sigma: float) -> None:
        self.problem, self.config, self.log_y, self.sigma = problem, config, log_y, sigma
        self.n_x = problem.X.shape[1]
        self.n_c = problem.spend.shape[1]
        self.free = np.isnan(problem.fixed)
        rows = problem.rows
        penalised = np.flatnonzero(problem.penalised)
        ridge = np.zeros((len(penalised), self.n_x))
        ridge[np.arange(len(penalised)), penalised] = np.sqrt(config.trend_smoothing) / _TREND_PRIOR_SD
        self.A = np.vstack([problem.X[rows] / sigma, ridge])
        u, s, _ = np.linalg.svd(self.A, full_matrices=False)
        self.Q = u[:, s > s[0] * 1e-10]

    def _project(self, b: np.ndarray) -> np.ndarray:
        return b - self.Q @ (self.Q.T @ b)

    def _stacked(self, beta: np.ndarray, nonlinear: np.ndarray) -> np.ndarray:
        h, _ = self.saturation(nonlinear)
        z = (self.log_y - np.log1p(h @ beta)) / self.sigma
        return np.concatenate([z[self.problem.rows], np.zeros(self.A.shape[0] - int(self.problem.rows.sum()))])

    def split_media(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return phi[: self.n_c], _nonlinear(self.problem, phi[self.n_c :])

    def gamma(self, phi: np.ndarray) -> np.ndarray:
        return np.linalg.lstsq(self.A, self._stacked(*self.split_media(phi)), rcond=None)[0]

    def full(self, phi: np.ndarray) -> np.ndarray:
        """``[gamma, beta, free nonlinear]``, the layout :meth:`split` reads."""
        return np.concatenate([self.gamma(phi), phi])

    def split(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return v[: self.n_x], v[self.n_x : self.n_x + self.n_c], _nonlinear(self.problem, v[self.n_x + self.n_c :])

    def saturation(self, nonlinear: np.ndarray, spend: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        pr = self.problem
        spend = pr.spend if spend is None else spend
        parts = [_hill(spend[:, c], *nonlinear[c], pr.warm[c], pr.reference[c]) for c in range(self.n_c)]
        return np.column_stack([h for h, _ in parts]), np.stack([d for _, d in parts], axis=1)  # (T, C), (T, C, 3)

    def residuals(self, phi: np.ndarray) -> np.ndarray:
        beta, nonlinear = self.split_media(phi)
        prior, _ = _prior_rows(nonlinear, self.free, self.config.regularisation)
        return np.concatenate([self._project(self._stacked(beta, nonlinear)),
                               np.sqrt(self.config.regularisation) * beta / _BETA_PRIOR_SD, prior])

    def jacobian(self, phi: np.ndarray) -> np.ndarray:
        pr = self.problem
        beta, nonlinear = self.split_media(phi)
        h, dlogz = self.saturation(nonlinear)
        lift = 1.0 + h @ beta
        rows = pr.rows
        n_free = int(self.free.sum())
        d_beta = -(h / lift[:, None])[rows] / self.sigma
        dh = (h * (1.0 - h))[:, :, None] * dlogz  # (T, C, 3)
        d_nonlinear = (-(beta[None, :, None] * dh) / lift[:, None, None] / self.sigma)[rows][:, self.free]
        stacked = np.zeros((self.A.shape[0], self.n_c + n_free))
        stacked[: int(rows.sum())] = np.column_stack([d_beta, d_nonlinear])
        rows_prior = int(self.free[:, 1:].sum())
        J = np.zeros((self.A.shape[0] + self.n_c + rows_prior, self.n_c + n_free))
        J[: self.A.shape[0]] = self._project(stacked)
        r0 = self.A.shape[0]
        J[r0 : r0 + self.n_c, : self.n_c] = np.eye(self.n_c) * np.sqrt(self.config.regularisation) / _BETA_PRIOR_SD
        _, derivative = _prior_rows(nonlinear, self.free, self.config.regularisation)
        keep = self.free.copy()
        keep[:, 0] = False
        column = np.flatnonzero(keep[self.free])  # positions of the penalised params among the free ones
        J[r0 + self.n_c + np.arange(rows_prior), self.n_c + column] = derivative
        return J

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = _nonlinear_bounds(self.problem, self.config)
        return np.concatenate([np.zeros(self.n_c), lo]), np.concatenate([np.full(self.n_c, 10.0), hi])

    def starts(self) -> list[np.ndarray]:
        lo, hi = _nonlinear_bounds(self.problem, self.config)
        starts = []
        for decay in _START_DECAYS[: self.config.n_starts]:
            guess = np.tile([decay, 0.0, 1.0], (self.n_c, 1))[self.free]
            starts.append(np.concatenate([np.full(self.n_c, 0.1), np.clip(guess, lo + 1e-6, hi - 1e-6)]))
        return starts


class _ChannelModel:
    """One channel's attributed revenue ``exp(X gamma) h(a)``, residuals on the square-root scale."""

    def __init__(self, problem: _Problem, config: MediaConfig, c: int, y: np.ndarray, sigma: float) -> None:
        self.problem, self.config, self.c, self.y, self.sigma = problem, config, c, y, sigma
        self.root_y = np.sqrt(np.maximum(y, 0.0))
        self.n_x = problem.X.shape[1]
        self.free = np.isnan(problem.fixed[c : c + 1])

    def split(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nonlinear = self.problem.fixed[self.c].copy()
        nonlinear[np.isnan(nonlinear)] = v[self.n_x :]
        return v[: self.n_x], nonlinear

    def mean(self, v: np.ndarray, spend: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pr = self.problem
        gamma, nonlinear = self.split(v)
        x = pr.spend[:, self.c] if spend is None else spend
        h, dlogz = _hill(x, *nonlinear, pr.warm[self.c], pr.reference[self.c])
        scale = np.exp(np.clip(pr.X @ gamma, -50, 50))
        return scale * h, h, dlogz

    def residuals(self, v: np.ndarray) -> np.ndarray:
        gamma, nonlinear = self.split(v)
        mu, _, _ = self.mean(v)
        prior, _ = _prior_rows(nonlinear[None, :], self.free, self.config.regularisation)
        trend = np.sqrt(self.config.trend_smoothing) * gamma[self.problem.penalised] / _TREND_PRIOR_SD
        return np.concatenate([((self.root_y - np.sqrt(mu)) / self.sigma)[self.problem.rows], trend, prior])

    def jacobian(self, v: np.ndarray) -> np.ndarray:
        pr = self.problem
        _, nonlinear = self.split(v)
        mu, h, dlogz = self.mean(v)
        root = np.sqrt(mu)
        rows = pr.rows
        T = int(rows.sum())
        rows_trend = int(pr.penalised.sum())
        rows_prior = int(self.free[0, 1:].sum())
        n_free = int(self.free.sum())
        J = np.zeros((T + rows_trend + rows_prior, self.n_x + n_free))
        J[:T, : self.n_x] = (-(root / 2.0)[:, None] * pr.X / self.sigma)[rows]
        J[:T, self.n_x :] = (-(root * (1.0 - h) / 2.0)[:, None] * dlogz / self.sigma)[rows][:, self.free[0]]
        J[T : T + rows_trend, np.flatnonzero(pr.penalised)] = np.eye(rows_trend) * np.sqrt(self.config.trend_smoothing) / _TREND_PRIOR_SD
        _, derivative = _prior_rows(nonlinear[None, :], self.free, self.config.regularisation)
        keep = self.free[0].copy()
        keep[0] = False
        J[T + rows_trend + np.arange(rows_prior), self.n_x + np.flatnonzero(keep[self.free[0]])] = derivative
        return J

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lower = np.array([self.config.decay_bounds[0], np.log(self.config.half_saturation_bounds[0]), self.config.slope_bounds[0]])
        upper = np.array([self.config.decay_bounds[1], np.log(self.config.half_saturation_bounds[1]), self.config.slope_bounds[1]])
        f = self.free[0]
        return (np.concatenate([np.full(self.n_x, -np.inf), lower[f]]), np.concatenate([np.full(self.n_x, np.inf), upper[f]]))

    def starts(self) -> list[np.ndarray]:
        positive = (self.y > 0) & self.problem.rows
        level = np.log(max(float(self.y[positive].mean()) if positive.any() else 1.0, 1e-6))
        gamma0 = np.zeros(self.n_x)
        gamma0[0] = level + np.log(2.0)  # at half saturation the mean is half the scale
        lo, hi = self.bounds()
        starts = []
        for decay in _START_DECAYS[: self.config.n_starts]:
            guess = np.array([decay, 0.0, 1.0])[self.free[0]]
            starts.append(np.concatenate([gamma0, np.clip(guess, lo[self.n_x :] + 1e-6, hi[self.n_x :] - 1e-6)]))
        return starts


def _solve(model: Any, starts: Sequence[np.ndarray], max_nfev: int = 500) -> tuple[np.ndarray, float, str]:
    lo, hi = model.bounds()
    best: tuple[np.ndarray, float, str] | None = None
    for x0 in starts:
        x0 = np.clip(x0, lo, hi)
        try:
            result = optimize.least_squares(model.residuals, x0, jac=model.jacobian, bounds=(lo, hi), method="trf",
                                            x_scale="jac", max_nfev=max_nfev)
        except (ValueError, np.linalg.LinAlgError) as error:  # a start in a region with non-finite residuals
            logger.debug("media fit start failed: %s", error)
            continue
        cost = float(result.cost)
        if np.isfinite(cost) and (best is None or cost < best[1]):
            message = str(result.message) if result.status > 0 else f"not converged in {max_nfev} evaluations"
            best = (result.x, cost, message)
    if best is None:
        raise ValueError("media model: every starting point of the nonlinear fit failed")
    if best[2].startswith("not converged"):
        logger.warning("media model: the best start did not converge in %d evaluations", max_nfev)
    return best

