"""The media model's estimator (:mod:`ml.families.budget`, section "The model"): its configuration
(:class:`MediaConfig`), :func:`fit_media_model` (the point fit, then the moving-block bootstrap
refits behind every interval) and :func:`fit_from_curves` (a fit from known curves).

The fits multiply and decompose small matrices; they run with one BLAS thread
(:func:`one_blas_thread`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from features.media import ORDERS_PREFIX, REVENUE_PREFIX, SPEND_PREFIX, paid_channels
from ml.families.budget.least_squares import (
    _Baseline,
    _baseline_for,
    _ChannelModel,
    _Problem,
    _problem,
    _solve,
    _target,
    _TotalModel,
    _unit_value,
)

logger = logging.getLogger(__name__)

TARGETS: tuple[str, ...] = ("total", "attributed")
OUTCOMES: tuple[str, ...] = ("orders", "revenue")


def one_blas_thread(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run with one BLAS thread: the fits multiply and decompose matrices of a few hundred rows, where
    threads only add overhead, and on a busy 2-core machine they made fits 10-100x slower."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)
    return wrapper


# --- configuration and results ------------------------------------------------------------------


@dataclass(frozen=True)
class MediaConfig:
    """How :func:`fit_media_model` works. Defaults are the ones measured in ``docs/budget.md``.

    - ``target``: ``"total"`` (baseline + channels on total revenue) or ``"attributed"``;
    - ``outcome``: ``"orders"`` (fit completed order counts, valued at the average order value)
      or ``"revenue"`` (fit revenue itself);
    - ``regularisation``: strength of the priors on half saturation, slope and effect size (and
      of nothing else; 0 = plain least squares within the bounds);
    - ``trend_knot_days``: spacing of the baseline trend's knots (0: a straight line);
      ``trend_smoothing``: strength of the ridge on the knots' slope changes;
    - ``fourier_order``: yearly sin/cos pairs in the baseline (0: none; used only with >= 300 days);
    - ``decay_bounds``, ``slope_bounds``, ``half_saturation_bounds`` (the latter relative to the
      channel's mean daily spend on days it spent): the fitted parameters stay within them;
    - ``fixed_parameters``: ``{channel: {"decay" | "slope" | "half_saturation_spend": value}}``,
      held fixed instead of fitted;
    - ``exclude_channels``: order channels whose revenue is left out of the total target;
    - ``min_spend_days``: a paid channel needs this many days with spend to be fitted;
    - ``recent_days``: the last days of the history that set the revenue scale of the response
      curves (the season the recommendation is for);
    - ``holdout_weeks``: the test window, the history's last weeks (no tuning sees them; the gate
      scores them); ``interval``: the bands' coverage;
      ``n_bootstrap``: bootstrap refits (0: no intervals, bands collapse to the estimate);
      ``n_starts``: starting points of the nonlinear fit.
    """

    target: str = "total"
    outcome: str = "orders"
    regularisation: float = 1.0
    trend_knot_days: int = 7
    trend_smoothing: float = 1.0
    fourier_order: int = 0
    decay_bounds: tuple[float, float] = (0.0, 0.9)
    slope_bounds: tuple[float, float] = (0.5, 4.0)
    half_saturation_bounds: tuple[float, float] = (0.1, 10.0)
    fixed_parameters: dict[str, dict[str, float]] = field(default_factory=dict)
    exclude_channels: tuple[str, ...] = ("email",)
    min_spend_days: int = 14
    recent_days: int = 28
    holdout_weeks: int = 8
    interval: float = 0.90
    n_bootstrap: int = 40
    n_starts: int = 3
    random_state: int = 0

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"MediaConfig.target must be one of {TARGETS}, got {self.target!r}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"MediaConfig.outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        checks = {
            "regularisation": self.regularisation >= 0,
            "trend_knot_days": self.trend_knot_days >= 0,
            "trend_smoothing": self.trend_smoothing >= 0,
            "fourier_order": self.fourier_order >= 0,
            "decay_bounds": 0 <= self.decay_bounds[0] < self.decay_bounds[1] < 1,
            "slope_bounds": 0 < self.slope_bounds[0] < self.slope_bounds[1],
            "half_saturation_bounds": 0 < self.half_saturation_bounds[0] < self.half_saturation_bounds[1],
            "min_spend_days": self.min_spend_days >= 1,
            "recent_days": self.recent_days >= 1,
            "holdout_weeks": self.holdout_weeks >= 1,
            "interval": 0 < self.interval < 1,
            "n_bootstrap": self.n_bootstrap >= 0,
            "n_starts": self.n_starts >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"MediaConfig.{name} is out of range: {getattr(self, name)!r}")
        for channel, values in self.fixed_parameters.items():
            unknown = set(values) - {"decay", "slope", "half_saturation_spend"}
            if unknown:
                raise ValueError(f"MediaConfig.fixed_parameters[{channel!r}] has unknown keys {sorted(unknown)}")


@dataclass(frozen=True)
class MediaFit:
    """Output of :func:`fit_media_model` (plain data, picklable).

    ``channels``: one row per paid channel of the history: channel, fitted (bool), decay,
    half_saturation (adstock units, as ``truth.channels``), half_saturation_spend (steady-state
    daily spend at half saturation), slope, max_lift (effect at full saturation relative to the
    model's baseline revenue), max_revenue_per_day (revenue per day at full saturation over the
    last ``recent_days``), each with ``_low`` / ``_high`` bootstrap bounds, mean_spend, and reason
    (why a channel was not fitted; empty otherwise). ``replicates``: the bootstrap refits
    (replicate, channel, decay, half_saturation_spend, slope, max_revenue_per_day).
    ``daily``: day, revenue (total), target (the series fitted: total minus excluded channels, or
    the sum of attributed revenue), fitted, baseline (fitted revenue without media), and
    ``contribution_<channel>`` (fitted media revenue). ``baseline_revenue_per_day``: the store's
    revenue without paid media per day over the last ``recent_days`` (observed total revenue minus
    the fitted media contribution; used for store totals). ``params``: scalars for MLflow.
    """

    channels: pd.DataFrame
    replicates: pd.DataFrame
    daily: pd.DataFrame
    baseline_revenue_per_day: float
    config: MediaConfig
    params: dict[str, Any]

    @property
    def excluded(self) -> dict[str, str]:
        """Channels the fit could not estimate, with the reason."""
        rows = self.channels[~self.channels["fitted"].astype(bool)]
        return dict(zip(rows["channel"], rows["reason"]))



# --- fitting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Estimate:
    """Point estimate of one fit (parameters in the models' own layout) and what it needs to predict."""

    channels: tuple[str, ...]
    baseline: _Baseline
    problem: _Problem
    sigma: np.ndarray  # residual scale: (1,) total, (C,) attributed
    vectors: tuple[np.ndarray, ...]  # one vector (total) or one per channel (attributed)
    message: str
    unit_value: np.ndarray  # (C,) revenue per unit of the outcome


def _fitted_channels(history: pd.DataFrame, config: MediaConfig) -> tuple[list[str], dict[str, str]]:
    channels, excluded = [], {}
    n_days = len(history)
    for c in paid_channels(history):
        x = history[SPEND_PREFIX + c].to_numpy(dtype=float)
        spent = int((x > 0).sum())
        if spent == 0:
            excluded[c] = f"no spend in the {n_days}-day history: its response cannot be estimated"
        elif spent < config.min_spend_days:
            excluded[c] = f"spend on only {spent} of {n_days} days (need {config.min_spend_days}): response not estimable"
        elif config.target == "attributed" and not (history.get(ORDERS_PREFIX + c, pd.Series(0.0)).to_numpy() > 0).any():
            excluded[c] = "no attributed orders in the history (target='attributed')"
        else:
            channels.append(c)
    return channels, excluded


def _first_pass_sigma(problem: _Problem, y: np.ndarray) -> float:
    """Residual sd of a linear first pass (baseline + log spend): standardises the data rows."""
    design = np.column_stack([problem.X, np.log1p(problem.spend / problem.reference)])[problem.rows]
    y = y[problem.rows]
    residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    return float(max(np.std(residual) * np.sqrt(len(y) / max(len(y) - design.shape[1], 1)), 1e-6))


def _estimate(history: pd.DataFrame, config: MediaConfig, channels: Sequence[str], baseline: _Baseline,
              warm_start: _Estimate | None = None, target: np.ndarray | None = None,
              rows: np.ndarray | None = None) -> _Estimate:
    problem = _problem(history, config, channels, baseline)
    if rows is not None:
        problem = dataclasses.replace(problem, rows=rows)
    unit = warm_start.unit_value if warm_start is not None else _unit_value(history, config, channels)
    if target is not None:
        problem = dataclasses.replace(problem, y=target)
    if config.target == "total":
        y = problem.y
        floor = 0.01 * float(np.median(y[y > 0])) if (y > 0).any() else 1.0
        log_y = np.log(np.maximum(y, floor))
        sigma = warm_start.sigma if warm_start is not None else np.array([_first_pass_sigma(problem, log_y)])
        model = _TotalModel(problem, config, log_y, float(sigma[0]))
        starts = [warm_start.vectors[0][model.n_x :]] if warm_start is not None else model.starts()
        phi, _, message = _solve(model, starts)
        return _Estimate(tuple(channels), baseline, problem, sigma, (model.full(phi),), message, unit)
    vectors, sigmas, messages = [], [], []
    for i in range(len(channels)):
        y = problem.y[:, i]
        sigma = warm_start.sigma[i] if warm_start is not None else _first_pass_sigma(problem, np.sqrt(np.maximum(y, 0.0)))
        model = _ChannelModel(problem, config, i, y, sigma)
        starts = [warm_start.vectors[i]] if warm_start is not None else model.starts()
        vector, _, message = _solve(model, starts)
        vectors.append(vector)
        sigmas.append(sigma)
        messages.append(message)
    return _Estimate(tuple(channels), baseline, problem, np.asarray(sigmas), tuple(vectors), "; ".join(sorted(set(messages))),
                     unit)


@dataclass(frozen=True)
class _Prediction:
    target: np.ndarray  # (T,) fitted target series
    baseline: np.ndarray  # (T,) baseline revenue (total) or 0 (attributed)
    contribution: np.ndarray  # (T, C) media revenue per channel
    scale: np.ndarray  # (T, C) revenue per day at full saturation
    nonlinear: np.ndarray  # (C, 3)


def _predict(estimate: _Estimate, config: MediaConfig, days: pd.DatetimeIndex, spend: np.ndarray,
             revenue: bool = True) -> _Prediction:
    """The fitted curves applied to ``days`` and their ``spend`` (which may run past the fit's days:
    the adstock then starts from the fit's first week again, so pass the whole series), in revenue
    (or, with ``revenue=False``, in the outcome's units)."""
    units = _predict_units(estimate, config, days, spend)
    if not revenue:
        return units
    u = estimate.unit_value
    contribution = units.contribution * u[None, :]
    baseline = units.baseline * (u[0] if len(u) else 1.0)
    target = baseline + contribution.sum(axis=1)
    return _Prediction(target, baseline, contribution, units.scale * u[None, :], units.nonlinear)


def _predict_units(estimate: _Estimate, config: MediaConfig, days: pd.DatetimeIndex, spend: np.ndarray) -> _Prediction:
    X, _ = estimate.baseline.design(days)
    pr = dataclasses.replace(estimate.problem, X=X, spend=spend, rows=np.ones(len(days), dtype=bool))
    if config.target == "total":
        model = _TotalModel(pr, config, np.zeros(len(days)), 1.0)
        gamma, beta, nonlinear = model.split(estimate.vectors[0])
        h, _ = model.saturation(nonlinear)
        base = np.exp(X @ gamma)
        contribution = base[:, None] * beta[None, :] * h
        return _Prediction(base + contribution.sum(axis=1), base, contribution, base[:, None] * beta[None, :], nonlinear)
    contributions, scales, nonlinear = [], [], []
    for i, vector in enumerate(estimate.vectors):
        model = _ChannelModel(pr, config, i, np.zeros(len(days)), 1.0)
        mu, h, _ = model.mean(vector)
        gamma, params = model.split(vector)
        contributions.append(mu)
        scales.append(np.exp(np.clip(X @ gamma, -50, 50)))
        nonlinear.append(params)
    contribution = np.column_stack(contributions) if contributions else np.zeros((len(days), 0))
    return _Prediction(contribution.sum(axis=1), np.zeros(len(days)), contribution,
                       np.column_stack(scales) if scales else np.zeros((len(days), 0)), np.asarray(nonlinear).reshape(-1, 3))


def _bootstrap_target(estimate: _Estimate, config: MediaConfig, fitted: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One moving-block (7-day) bootstrap draw of the target around the fitted series."""
    y = estimate.problem.y
    T = y.shape[0]
    n_blocks = -(-T // 7)
    starts = rng.integers(0, max(T - 7, 0) + 1, n_blocks)
    index = (starts[:, None] + np.arange(7)[None, :]).ravel()[:T]
    if config.target == "total":
        floor = 0.01 * float(np.median(y[y > 0]))
        residual = np.log(np.maximum(y, floor)) - np.log(fitted)
        return fitted * np.exp(residual[index])
    residual = np.sqrt(np.maximum(y, 0.0)) - np.sqrt(fitted)
    return np.maximum(np.sqrt(fitted) + residual[index], 0.0) ** 2


def _check_history(history: pd.DataFrame, config: MediaConfig, min_days: int = 56) -> None:
    missing = {"day", "revenue"} - set(history.columns)
    if missing or not paid_channels(history):
        raise ValueError(f"history must come from media_history (day, revenue, spend_<channel> columns); missing {sorted(missing) or 'spend columns'}")
    if len(history) < min_days:
        raise ValueError(f"history has {len(history)} days; a media model needs at least {min_days}")


@one_blas_thread
def fit_media_model(history: pd.DataFrame, config: MediaConfig | None = None) -> MediaFit:
    """Fit the media model of the module docstring to a :func:`media_history` frame.

    Paid channels without spend (or with spend on fewer than ``min_spend_days`` days, or with no
    attributed revenue when ``target="attributed"``) are not fitted: they appear in
    :attr:`MediaFit.channels` with ``fitted=False`` and the reason, and :func:`allocate_budget`
    holds them at their current spend. Deterministic given ``config.random_state``.
    """
    config = config or MediaConfig()
    _check_history(history, config)
    began = time.perf_counter()
    channels, excluded = _fitted_channels(history, config)
    for c, why in excluded.items():
        logger.warning("media model: channel %s excluded: %s", c, why)
    if not channels:
        raise ValueError(f"no paid channel can be fitted: {excluded}")
    days = pd.DatetimeIndex(history["day"])
    baseline = _baseline_for(days, config)
    estimate = _estimate(history, config, channels, baseline)
    point = _predict(estimate, config, days, estimate.problem.spend)
    logger.info("media model (%s): point fit in %.1fs (%s)", config.target, time.perf_counter() - began, estimate.message)

    recent = slice(max(len(days) - config.recent_days, 0), None)
    rng = np.random.default_rng(config.random_state)
    replicate_rows = []
    units = _predict(estimate, config, days, estimate.problem.spend, revenue=False)
    around = np.maximum(units.target if config.target == "total" else units.contribution, 1e-9)
    for b in range(config.n_bootstrap):
        draw = _bootstrap_target(estimate, config, around, rng)
        refit = _estimate(history, config, channels, baseline, warm_start=estimate, target=draw)
        pred = _predict(refit, config, days, estimate.problem.spend)
        for i, c in enumerate(channels):
            replicate_rows.append((b, c, *_channel_summary(pred, i, estimate.problem.reference[i], recent)))
    replicates = pd.DataFrame(replicate_rows, columns=["replicate", "channel", "decay", "half_saturation_spend", "slope",
                                                       "max_revenue_per_day"])
    if config.n_bootstrap:
        logger.info("media model (%s): %d bootstrap refits in %.1fs", config.target, config.n_bootstrap, time.perf_counter() - began)

    revenue = history["revenue"].to_numpy(dtype=float)
    media = point.contribution.sum(axis=1)
    if config.target == "total":
        own_baseline = point.baseline
    else:
        paid = [REVENUE_PREFIX + c for c in paid_channels(history)]
        excluded_revenue = [REVENUE_PREFIX + c for c in config.exclude_channels if REVENUE_PREFIX + c in history.columns]
        own_baseline = revenue - history[paid + excluded_revenue].to_numpy(dtype=float).sum(axis=1)
    store_baseline = float(np.mean((revenue - media)[recent]))
    model_baseline = float(np.mean(own_baseline[recent]))
    alpha = (1.0 - config.interval) / 2.0
    rows = []
    for c in paid_channels(history):
        mean_spend = float(history[SPEND_PREFIX + c].mean())
        if c not in channels:
            rows.append({"channel": c, "fitted": False, "mean_spend": mean_spend, "reason": excluded[c]})
            continue
        i = channels.index(c)
        decay, k, slope, max_revenue = _channel_summary(point, i, estimate.problem.reference[i], recent)
        row = {"channel": c, "fitted": True, "decay": decay, "half_saturation": k / (1.0 - decay), "half_saturation_spend": k,
               "slope": slope, "max_lift": max_revenue / model_baseline if model_baseline > 0 else np.nan,
               "max_revenue_per_day": max_revenue, "mean_spend": mean_spend, "reason": ""}
        reps = replicates[replicates["channel"] == c]
        for name in ("decay", "half_saturation_spend", "slope", "max_revenue_per_day"):
            values = reps[name].to_numpy() if len(reps) else np.array([row[name]])
            row[f"{name}_low"], row[f"{name}_high"] = (float(q) for q in _band(values, row[name], alpha))
        if len(reps):
            half = reps["half_saturation_spend"] / (1.0 - reps["decay"])
            row["half_saturation_low"], row["half_saturation_high"] = (float(q) for q in _band(half.to_numpy(), row["half_saturation"], alpha))
        else:
            row["half_saturation_low"] = row["half_saturation_high"] = row["half_saturation"]
        row["max_lift_low"], row["max_lift_high"] = (row["max_revenue_per_day_low"] / model_baseline,
                                                     row["max_revenue_per_day_high"] / model_baseline)
        rows.append(row)
    columns = ["channel", "fitted"]
    for name in ("decay", "half_saturation", "half_saturation_spend", "slope", "max_lift", "max_revenue_per_day"):
        columns += [name, f"{name}_low", f"{name}_high"]
    table = pd.DataFrame(rows).reindex(columns=[*columns, "mean_spend", "reason"])
    table["fitted"] = table["fitted"].astype(bool)

    target_revenue = _target(history, config, channels, "revenue")
    target_revenue = target_revenue.sum(axis=1) if target_revenue.ndim == 2 else target_revenue
    daily = pd.DataFrame({"day": days, "revenue": revenue, "target": target_revenue, "fitted": point.target,
                          "baseline": own_baseline})
    for i, c in enumerate(channels):
        daily[f"contribution_{c}"] = point.contribution[:, i]
    target = daily["target"].to_numpy()
    params = {
        "target": config.target, "n_days": len(days), "n_channels": len(channels), "n_excluded": len(excluded),
        "mape_in_sample": _mape(target, point.target), "r2_in_sample": _r2(target, point.target),
        "baseline_revenue_per_day": store_baseline, "n_bootstrap": config.n_bootstrap, "solver": estimate.message,
        "seconds": time.perf_counter() - began,
    }
    logger.info("media model (%s): %d channels in %.1fs, in-sample MAPE %.3f", config.target, len(channels),
                params["seconds"], params["mape_in_sample"])
    return MediaFit(channels=table, replicates=replicates, daily=daily, baseline_revenue_per_day=store_baseline,
                    config=config, params=params)


def _band(draws: np.ndarray, point: Any, alpha: float) -> tuple[Any, Any]:
    """Percentile band of bootstrap ``draws`` (replicates along axis 0), widened to contain ``point``:
    refits of a regularised nonlinear fit can sit off-centre, and a band must hold the estimate it
    is drawn around."""
    with np.errstate(invalid="ignore"):  # infinite marginal returns at zero spend when S < 1
        low, high = np.quantile(draws, [alpha, 1.0 - alpha], axis=0)
    return np.minimum(low, point), np.maximum(high, point)


def _channel_summary(pred: _Prediction, i: int, reference: float, recent: slice) -> tuple[float, float, float, float]:
    decay, log_k, slope = pred.nonlinear[i]
    return float(decay), float(reference * np.exp(log_k)), float(slope), float(np.mean(pred.scale[recent, i]))


def fit_from_curves(channels: pd.DataFrame, baseline_revenue_per_day: float, config: MediaConfig | None = None) -> MediaFit:
    """A :class:`MediaFit` from known steady-state curves, without data (no intervals).

    ``channels``: channel, decay, half_saturation_spend (or half_saturation in adstock units),
    slope, max_revenue_per_day. For tests, benchmarks (the oracle on the true curves) and curves
    from experiments.
    """
    frame = channels.copy()
    if "half_saturation_spend" not in frame.columns:
        frame["half_saturation_spend"] = frame["half_saturation"] * (1.0 - frame["decay"])
    frame["half_saturation"] = frame["half_saturation_spend"] / (1.0 - frame["decay"])
    frame["max_lift"] = frame["max_revenue_per_day"] / baseline_revenue_per_day
    for name in ("decay", "half_saturation", "half_saturation_spend", "slope", "max_lift", "max_revenue_per_day"):
        frame[f"{name}_low"] = frame[name]
        frame[f"{name}_high"] = frame[name]
    frame["fitted"] = True
    frame["mean_spend"] = np.nan
    frame["reason"] = ""
    empty = pd.DataFrame(columns=["replicate", "channel", "decay", "half_saturation_spend", "slope", "max_revenue_per_day"])
    return MediaFit(channels=frame.reset_index(drop=True), replicates=empty, daily=pd.DataFrame(),
                    baseline_revenue_per_day=float(baseline_revenue_per_day), config=config or MediaConfig(n_bootstrap=0),
                    params={"source": "known curves"})




def _mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    ok = actual > 0
    return float(np.mean(np.abs(predicted[ok] - actual[ok]) / actual[ok])) if ok.any() else float("nan")


def _r2(actual: np.ndarray, predicted: np.ndarray) -> float:
    total = float(np.sum((actual - actual.mean()) ** 2))
    return 1.0 - float(np.sum((actual - predicted) ** 2)) / total if total > 0 else float("nan")
