"""Marketing budget allocation: a media mix model of daily revenue and the spend split that maximises it.

Verbs, all pure (frames in, new objects out):

- :func:`media_history` - the dense day x channel window: daily spend per paid channel, completed
  revenue and orders in total and per order channel;
- :func:`fit_media_model` - per paid channel an adstock decay, a Hill saturation curve and an effect
  size, a baseline (trend, weekday, yearly Fourier terms) and bootstrap intervals (:class:`MediaFit`);
- :func:`media_backtest` (fit before the last ``holdout_weeks`` weeks, score them),
  :func:`media_crossval` (interleaved held-out weeks) and :func:`tune_media_model` (Optuna over
  the fit's hyperparameters on held-out weeks);
- :func:`allocate_budget` / :func:`allocate_spend` - the daily spend per channel that maximises the
  modelled steady-state revenue under :class:`BudgetConstraints`, with the reason it moved (or not);
- :func:`response_curves` - expected incremental revenue against daily spend, with intervals;
- :func:`fit_from_curves` - a :class:`MediaFit` from known curves (tests, benchmarks, experiments).

The model
---------
Channel ``c`` with daily spend ``x_c(d)`` builds a geometric adstock ``a_c(d) = x_c(d) + theta_c
a_c(d - 1)`` (started at the steady state of the window's first week, so a window that begins mid
history does not start from zero) that saturates along a Hill curve ``h_c(a) = a^S / (a^S + K^S)``.
``target="total"`` (the default) fits the store's daily outcome ``y(d)`` (completed orders or
revenue, minus those of ``exclude_channels``) as::

    log y(d) = baseline(d) + log(1 + sum_c beta_c h_c(a_c(d))) + e(d)

with ``baseline`` linear in an intercept, a piecewise-linear trend with a knot every
``trend_knot_days`` whose slope changes are ridge-penalised (a penalised spline: dense knots, the
penalty sets the smoothness), weekday dummies and optional yearly Fourier terms (off by default:
with a year of history the dense trend carries the season, and Fourier terms fitted on less than
a year extrapolate badly). Beyond the fitted days the trend is held flat. Media multiply the
store's organic demand, so a channel's contribution scales with the season, and the baseline is
separated from the channels on total revenue without trusting attribution. The baseline is
profiled out exactly (variable projection, see :class:`_TotalModel`), so the nonlinear fit runs
over the media parameters only. ``target="attributed"`` fits each channel's *attributed* outcome
on its own as ``exp(baseline_c(d)) h_c(a_c(d))`` (residuals on the square-root scale, which
stabilises the variance of counts and copes with days without attributed orders). That is only
right when last-touch attribution measures incrementality, which a real store does not guarantee
(in :mod:`revopt.sample_data.synth` it does by construction); the benchmark compares both.

``outcome="orders"`` (the default) fits completed order counts and values them at the average
order value (the target's over the last ``recent_days``; per channel for the attributed target):
daily revenue is orders x basket value, and the basket-value noise (not the media) dominates its
day-to-day variance, so counts carry the same signal with about half the noise. This assumes
media change how many orders come, not their value. ``outcome="revenue"`` fits revenue itself.

``K_c`` is parametrised through the *steady-state daily spend* at half saturation,
``k_c = K_c (1 - theta_c)``: at constant spend ``s`` the adstock settles at ``s / (1 - theta_c)``,
so the steady-state response ``s^S / (s^S + k^S)`` depends on ``k`` and ``S`` only, and ``theta`` and
``k`` are not confounded in the fit. Parameters are fitted by bounded nonlinear least squares
(scipy ``least_squares``, analytic Jacobian, ``n_starts`` starting decays) with weak priors scaled
by ``regularisation``: ``log(k_c / typical spend_c) ~ N(0, 1)``, ``log S_c ~ N(0, 0.5)`` (concave
unless the data show an S-shape: without flights a channel's spend rarely ranges widely enough
to tell the slope from the half saturation), ``beta_c ~ N(0, 1)``. Residuals are standardised by a
first-pass estimate of their sd, so ``regularisation = 1`` is a MAP under those priors.
``decay`` / ``slope`` / ``half_saturation_spend`` can be fixed per channel (``fixed_parameters``),
e.g. from a lift test. :func:`tune_media_model` tunes the prior strength, the trend's smoothing
and the Fourier order with Optuna on held-out weeks, and keeps the given config unless a trial is
significantly better there.

Revenue from ``exclude_channels`` (default ``email``) is left out of the total target: owned
campaigns that are not in the spend table make large day-to-day spikes that would otherwise be
noise. The price is that the media effect on those orders is not counted, so revenue figures are
conservative; it scales every channel alike and does not move the allocation.

Intervals are a moving-block bootstrap over weeks: blocks of 7 days of residuals are resampled
(the same days for every channel), added to the fitted series and the model refitted from the
point estimate ``n_bootstrap`` times; the bands of every response are quantiles over the refits
(widened to contain the point estimate when the refits sit off-centre).
They measure noise, not bias: where the data cannot identify a channel's curve (the total target
on a small store), the estimate is biased towards the priors and the bands do not cover it (see
``docs/budget.md``).

The optimiser
-------------
Response at constant daily spend ``s`` over ``horizon_days``: ``horizon x M_c s^S / (s^S + k^S)``
with ``M_c`` the channel's revenue per day at full saturation over the fit's last ``recent_days``
days (``beta_c`` x the fitted baseline revenue for the total target). Maximise the sum subject to
``sum_c s_c = total`` and per-channel bounds (``min_spend``, ``max_spend``, ``max_change`` around
current spend). Hill curves with ``S > 1`` are S-shaped, so the problem is not concave, and a
local method started at the current split can stop there (the known failure: in raw units the
gradients are tiny and SLSQP reports convergence at its starting point). Instead: for a
multiplier ``lambda`` each channel's ``argmax M h(s) - lambda s`` on its bounds is found exactly
(the lower bound, the upper bound or the root of ``M h'(s) = lambda`` on the decreasing branch of
``h'``), the multiplier is bisected until the spends add up to the budget, and the result (and,
when a channel jumps at the multiplier, each way of closing the gap) is polished with SLSQP on
spend rescaled to the budget. The best candidate is checked against the current split and an
equal split; if either earns more, that is reported as an optimiser failure rather than returned
silently, and the reason always says why the split moved or did not.

Why hand-written: pymc-marketing (installed, used by :mod:`ml.clv`) fits this family of models by
MCMC, which takes minutes per fit and cannot sit inside an Optuna search or a bootstrap within the
nightly budget; its MMM is additive in the channels' contributions (media do not scale with the
season) and its budget optimiser is one SLSQP run from an equal split. The numerical pieces here
are scipy's (``lfilter``, ``least_squares``, ``minimize``) and Optuna's.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd
from scipy import optimize, special
from scipy.signal import lfilter
from threadpoolctl import threadpool_limits

from ml.gate import beats, finite_or_nan, is_finite

logger = logging.getLogger(__name__)

MODEL_NAME = "revopt_budget_allocation"
TARGETS: tuple[str, ...] = ("total", "attributed")
BINDING: tuple[str, ...] = ("min", "max", "max_change", "none", "excluded")

SPEND_PREFIX = "spend_"
REVENUE_PREFIX = "revenue_"
ORDERS_PREFIX = "orders_"
OUTCOMES: tuple[str, ...] = ("orders", "revenue")

_SPEND_COLUMNS = ("day", "channel", "spend")
_ORDER_COLUMNS = ("order_ts", "channel", "status", "order_value")
_SLOPE_PRIOR = (0.0, 0.5)  # mean and sd of log S: concave (S = 1) unless the data show an S-shape
_HALF_SATURATION_PRIOR_SD = 1.0  # sd of log(k / typical spend)
_BETA_PRIOR_SD = 1.0
_TREND_PRIOR_SD = 1.0  # sd of a knot's slope change, log revenue per year
_START_DECAYS = (0.2, 0.5, 0.75)
_MOVE_TOLERANCE = 0.005  # a split "equals" another when no channel differs by more than this share of the budget
_EQUAL_MARGINAL_TOLERANCE = 0.02  # marginal ROAS "equal" within 2 % of their mean
_NO_RESPONSE = 1e-3  # a channel whose full-saturation revenue is below this share of baseline revenue has none


def _one_blas_thread(function: Callable[..., Any]) -> Callable[..., Any]:
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
    - ``holdout_weeks``: the backtest's held-out weeks; ``interval``: the bands' coverage;
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


@dataclass(frozen=True)
class MediaTuning:
    """Output of :func:`tune_media_model`: the config to use, its held-out MAPE and the given
    config's, the paired t statistic of the best trial against the given config, the study."""

    config: MediaConfig
    best_mape: float
    default_mape: float
    n_trials: int
    study: optuna.Study
    t_statistic: float = float("nan")


@dataclass(frozen=True)
class BudgetConstraints:
    """What :func:`allocate_budget` must respect.

    - ``total_budget``: daily budget across all paid channels (None: the current total);
    - ``min_spend`` / ``max_spend``: daily bounds per channel (channels not named: 0 / none);
    - ``max_change``: each channel within current x (1 +/- max_change) (None: no such limit);
    - ``horizon_days``: the period the expected revenue figures cover;
    - ``current_window_days``: "current spend" = mean daily spend over the history's last days.
    """

    total_budget: float | None = None
    min_spend: dict[str, float] = field(default_factory=dict)
    max_spend: dict[str, float] = field(default_factory=dict)
    max_change: float | None = 0.3
    horizon_days: int = 28
    current_window_days: int = 28

    def __post_init__(self) -> None:
        checks = {
            "total_budget": self.total_budget is None or self.total_budget >= 0,
            "min_spend": all(v >= 0 for v in self.min_spend.values()),
            "max_spend": all(v >= 0 for v in self.max_spend.values()),
            "max_change": self.max_change is None or self.max_change >= 0,
            "horizon_days": self.horizon_days >= 1,
            "current_window_days": self.current_window_days >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"BudgetConstraints.{name} is out of range: {getattr(self, name)!r}")


@dataclass(frozen=True)
class BudgetAllocation:
    """Output of :func:`allocate_budget`.

    ``table``: one row per paid channel: channel, current_spend, recommended_spend (daily),
    expected_revenue_current, expected_revenue_recommended (+ ``_low`` / ``_high``): the channel's
    incremental revenue over ``horizon_days`` at steady state, baseline not included;
    marginal_roas (+ ``_low`` / ``_high``): d revenue / d spend at the recommended spend;
    binding_constraint (one of :data:`BINDING`) and reason (per channel).
    ``moved``: whether the recommendation differs from the current split; ``reason`` says why it
    moved or why not. Store totals over the horizon: ``expected_store_revenue_current`` /
    ``_recommended`` = baseline revenue (without paid media) + every channel's incremental revenue.
    """

    table: pd.DataFrame
    moved: bool
    reason: str
    total_budget: float
    horizon_days: int
    expected_store_revenue_current: float
    expected_store_revenue_recommended: float
    expected_store_revenue_recommended_low: float
    expected_store_revenue_recommended_high: float
    excluded: dict[str, str]
    solver: dict[str, Any]


# --- history ------------------------------------------------------------------------------------


def media_history(
    spend: pd.DataFrame,
    orders: pd.DataFrame,
    run_date: Any,
    lookback_days: int,
    *,
    min_days: int = 56,
) -> pd.DataFrame:
    """Dense daily window ``[max(run_date - lookback_days, first spend day), run_date)``.

    ``spend``: day, channel, spend (rows for the same day and channel are summed; a day without a
    row for a channel is a day without spend); ``orders``: order_ts (UTC), channel, status,
    order_value (only ``completed`` orders count; the day is the UTC date of ``order_ts``).

    Columns: day, ``spend_<channel>`` per paid channel (the channels of ``spend``, sorted),
    revenue (completed, all channels), orders (completed count), then ``revenue_<channel>`` and
    ``orders_<channel>`` (completed revenue and count attributed to the channel) for each paid
    channel (zeros when no order names it) and each other order channel.

    A paid channel without any spend in the window is kept (all zeros): :func:`fit_media_model`
    excludes it with a reason, since nothing can be learnt about it. Raises ``ValueError`` when a
    required column is missing, spend is negative, the window has fewer than ``min_days`` days,
    no channel spent anything, or no completed order falls in the window.
    """
    run = pd.Timestamp(run_date).normalize()
    if lookback_days < 1:
        raise ValueError(f"lookback_days must be >= 1, got {lookback_days}")
    for table, frame, columns in (("spend", spend, _SPEND_COLUMNS), ("orders", orders, _ORDER_COLUMNS)):
        missing = sorted(set(columns) - set(frame.columns))
        if missing:
            raise ValueError(f"{table} is missing columns {missing}")
    since = run - pd.Timedelta(days=lookback_days)
    window = spend[(spend["day"] >= since) & (spend["day"] < run)]
    if len(window) == 0:
        raise ValueError(f"spend: no marketing_spend rows in the {lookback_days} days before {run.date()}")
    if (window["spend"] < 0).any() or window["spend"].isna().any():
        bad = window.loc[~(window["spend"] >= 0), ["day", "channel"]].head(3).to_dict("records")
        raise ValueError(f"spend.spend must be a non-negative number before {run.date()}; e.g. {bad}")
    first = max(since, pd.Timestamp(window["day"].min()).normalize())
    days = pd.date_range(first, run - pd.Timedelta(days=1), freq="D")
    if len(days) < min_days:
        raise ValueError(
            f"spend: only {len(days)} days of marketing_spend between {first.date()} and {run.date()} "
            f"(need at least {min_days} for a media model)"
        )
    channels = sorted(str(c) for c in spend["channel"].dropna().unique())
    wide = (
        window.assign(day=window["day"].dt.normalize())
        .pivot_table(index="day", columns="channel", values="spend", aggfunc="sum")
        .reindex(index=days, columns=channels)
        .fillna(0.0)
    )
    if not (wide.to_numpy() > 0).any():
        raise ValueError(f"spend: every channel has zero spend in the {len(days)} days before {run.date()}")

    done = orders[orders["status"] == "completed"]
    stamps = done["order_ts"] if done["order_ts"].dt.tz is not None else done["order_ts"].dt.tz_localize("UTC")
    order_day = stamps.dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("D").astype("datetime64[ns]")
    inside = (order_day >= first) & (order_day < run)
    done, order_day = done[inside], order_day[inside]
    if len(done) == 0:
        raise ValueError(f"orders: no completed orders between {first.date()} and {run.date()}")
    value = done["order_value"].to_numpy(dtype=float)
    labelled = pd.DataFrame({"day": order_day.to_numpy(), "channel": done["channel"].astype(str).to_numpy(), "value": value})
    by_channel = labelled.pivot_table(index="day", columns="channel", values="value", aggfunc=["sum", "size"])
    other = sorted(c for c in by_channel["sum"].columns if c not in channels)
    revenue_by = by_channel["sum"].reindex(index=days, columns=channels + other).fillna(0.0)
    orders_by = by_channel["size"].reindex(index=days, columns=channels + other).fillna(0.0)
    totals = pd.DataFrame({"day": order_day.to_numpy(), "value": value}).groupby("day")["value"].agg(["sum", "size"])
    totals = totals.reindex(days).fillna(0.0)

    history = pd.DataFrame({"day": days})
    for c in channels:
        history[SPEND_PREFIX + c] = wide[c].to_numpy()
    history["revenue"] = totals["sum"].to_numpy()
    history["orders"] = totals["size"].to_numpy().astype("int64")
    for c in channels + other:
        history[REVENUE_PREFIX + c] = revenue_by[c].to_numpy()
    for c in channels + other:
        history[ORDERS_PREFIX + c] = orders_by[c].to_numpy().astype("int64")
    logger.info("media history: %d days from %s, %d paid channels, %.0f revenue per day", len(days), first.date(),
                len(channels), history["revenue"].mean())
    return history


#: days a media model fits on at least (the backtest holds out ``MediaConfig.holdout_weeks`` more)
MIN_TRAINING_DAYS = 56


def training_data_shortfall(spend: pd.DataFrame, orders: pd.DataFrame, run_date: Any, lookback_days: int,
                            config: MediaConfig | None = None) -> str | None:
    """Why the store cannot train the media model as of ``run_date`` (None when it can): no
    marketing spend in the ``lookback_days`` before it (nothing to allocate), fewer days of spend
    than the backtest needs (:data:`MIN_TRAINING_DAYS` plus the held-out weeks), no spend or no
    completed order in that window, or no paid channel with enough spend days (and attributed
    orders, for ``target="attributed"``) before the held-out weeks. The reason names the run date
    and tables."""
    config = config or MediaConfig()
    run = pd.Timestamp(run_date).normalize()
    since = run - pd.Timedelta(days=lookback_days)
    window = spend[(spend["day"] >= since) & (spend["day"] < run)]
    if window.empty:
        return f"the store has no marketing spend in the {lookback_days} days before {run.date()} (shop.marketing_spend)"
    first = max(since, pd.Timestamp(window["day"].min()).normalize())
    days, needed = (run - first).days, MIN_TRAINING_DAYS + 7 * config.holdout_weeks
    if days < needed:
        return (f"only {days} days of marketing spend before {run.date()} (from {first.date()}): the media model needs "
                f"{needed} ({MIN_TRAINING_DAYS} to fit, {config.holdout_weeks} weeks held out) (shop.marketing_spend)")
    if not (window["spend"] > 0).any():
        return f"every channel spent 0 in the {days} days before {run.date()} (shop.marketing_spend)"
    stamps = orders.loc[orders["status"] == "completed", "order_ts"]
    stamps = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps
    if not ((stamps >= first.tz_localize("UTC")) & (stamps < run.tz_localize("UTC"))).any():
        return f"no completed orders between {first.date()} and {run.date()}: no revenue to explain (shop.orders)"
    history = media_history(spend, orders, run, lookback_days)
    training = history.iloc[: len(history) - 7 * config.holdout_weeks]
    channels, excluded = _fitted_channels(training, config)
    if not channels:
        return (f"no paid channel can be fitted on the {len(training)} days before the held-out weeks (run date "
                f"{run.date()}): " + "; ".join(f"{c}: {why}" for c, why in excluded.items())
                + " (shop.marketing_spend, shop.orders)")
    return None


def paid_channels(history: pd.DataFrame) -> list[str]:
    """The paid channels of a :func:`media_history` frame (those with a spend column), in column order."""
    return [c[len(SPEND_PREFIX):] for c in history.columns if c.startswith(SPEND_PREFIX)]


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


@_one_blas_thread
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


# --- backtest and tuning ------------------------------------------------------------------------


def _mape(actual: np.ndarray, predicted: np.ndarray) -> float:
    ok = actual > 0
    return float(np.mean(np.abs(predicted[ok] - actual[ok]) / actual[ok])) if ok.any() else float("nan")


def _r2(actual: np.ndarray, predicted: np.ndarray) -> float:
    total = float(np.sum((actual - actual.mean()) ** 2))
    return 1.0 - float(np.sum((actual - predicted) ** 2)) / total if total > 0 else float("nan")


@_one_blas_thread
def media_backtest(history: pd.DataFrame, config: MediaConfig | None = None) -> dict[str, float]:
    """Fit on the days before the last ``holdout_weeks`` weeks, predict the target on them.

    The target is the revenue of the series the model fits (total revenue minus excluded channels,
    or the paid channels' attributed revenue summed; with ``outcome="orders"`` the predicted
    orders are valued at the training days' average order value). Predictions use the held-out days' actual spend (the
    question is how revenue responds to spend, not what will be spent) and the baseline
    extrapolated (trend continued, weekday and season from the calendar). Returns mape, rmse, r2
    (daily), weekly_mape (7-day sums from the split), mape_no_media (the same fit with every
    channel's contribution held at its training mean: what media variation adds), and
    holdout_days. No bootstrap.
    """
    config = dataclasses.replace(config or MediaConfig(), n_bootstrap=0)
    y, mu, flat = _backtest_predictions(history, config)
    weeks = np.arange(len(y)) // 7
    y_week, mu_week = np.bincount(weeks, y), np.bincount(weeks, mu)
    return {
        "mape": _mape(y, mu), "rmse": float(np.sqrt(np.mean((y - mu) ** 2))), "r2": _r2(y, mu),
        "weekly_mape": _mape(y_week, mu_week), "mape_no_media": _mape(y, flat), "holdout_days": float(len(y)),
    }


def _backtest_predictions(history: pd.DataFrame, config: MediaConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Actual and predicted target revenue on the last ``holdout_weeks`` weeks, and the prediction
    with every channel's contribution held at its training mean."""
    _check_history(history, config)
    n_holdout = 7 * config.holdout_weeks
    if len(history) - n_holdout < 56:
        raise ValueError(f"history has {len(history)} days: too few for a {config.holdout_weeks}-week holdout and 56 training days")
    train = history.iloc[: len(history) - n_holdout].reset_index(drop=True)
    channels, _ = _fitted_channels(train, config)
    if not channels:
        raise ValueError("no paid channel can be fitted on the training days")
    train_days = pd.DatetimeIndex(train["day"])
    estimate = _estimate(train, config, channels, _baseline_for(train_days, config))
    days = pd.DatetimeIndex(history["day"])
    spend = history[[SPEND_PREFIX + c for c in channels]].to_numpy(dtype=float)
    pred = _predict(estimate, config, days, spend)
    actual = _target(history, config, channels, "revenue")
    actual = actual.sum(axis=1) if actual.ndim == 2 else actual
    held = slice(len(train), None)
    y, mu = actual[held], pred.target[held]
    mean_contribution = pred.contribution[: len(train)].mean(axis=0)
    if config.target == "total":
        # the baseline times the training-mean lift
        flat = pred.baseline[held] * (1.0 + (mean_contribution / pred.baseline[: len(train)].mean()).sum())
    else:
        flat = np.full(len(y), mean_contribution.sum())
    return y, mu, flat


@_one_blas_thread
def media_crossval(history: pd.DataFrame, config: MediaConfig | None = None, n_folds: int = 4) -> dict[str, float]:
    """Blocked cross-validation over interleaved weeks: fold ``f`` holds out every week ``w`` (7-day
    blocks from the first day) with ``w % n_folds == f``, fits on the other days and predicts the
    held-out ones; the scores (mape, rmse, r2 of the daily target in revenue, as in
    :func:`media_backtest`) pool every held-out day.

    Unlike the last-weeks backtest, the baseline is interpolated rather than extrapolated, so the
    score measures how well spend explains revenue given the season, which is what the allocation
    relies on (the last weeks of a history ending in December are dominated by the holiday peak
    the training days never saw). The adstock runs over every day: held-out spend is known.
    """
    config = dataclasses.replace(config or MediaConfig(), n_bootstrap=0)
    actual, predicted = _crossval_predictions(history, config, n_folds)
    return {"mape": _mape(actual, predicted), "rmse": float(np.sqrt(np.mean((actual - predicted) ** 2))),
            "r2": _r2(actual, predicted), "folds": float(n_folds)}


def _crossval_predictions(history: pd.DataFrame, config: MediaConfig, n_folds: int = 4) -> tuple[np.ndarray, np.ndarray]:
    _check_history(history, config)
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    channels, _ = _fitted_channels(history, config)
    if not channels:
        raise ValueError("no paid channel can be fitted")
    days = pd.DatetimeIndex(history["day"])
    baseline = _baseline_for(days, config)
    fold = (np.arange(len(days)) // 7) % n_folds
    actual = _target(history, config, channels, "revenue")
    actual = actual.sum(axis=1) if actual.ndim == 2 else actual
    predicted = np.empty(len(days))
    for f in range(n_folds):
        held = fold == f
        estimate = _estimate(history, config, channels, baseline, rows=~held)
        predicted[held] = _predict(estimate, config, days, estimate.problem.spend).target[held]
    return actual, predicted


def _suggest(trial: optuna.Trial, config: MediaConfig) -> MediaConfig:
    return dataclasses.replace(
        config,
        regularisation=trial.suggest_float("regularisation", 0.01, 30.0, log=True),
        trend_smoothing=trial.suggest_float("trend_smoothing", 0.01, 100.0, log=True),
        fourier_order=trial.suggest_int("fourier_order", 0, 4),
    )


@_one_blas_thread
def tune_media_model(
    history: pd.DataFrame,
    config: MediaConfig | None = None,
    *,
    n_trials: int = 20,
    timeout_seconds: float = 120.0,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
    holdout: str = "interleaved",
    min_t: float = 2.0,
) -> MediaTuning:
    """Optuna (TPE, seeded with ``config.random_state``) minimising the held-out daily MAPE:
    of :func:`media_crossval` (``holdout="interleaved"``, the default: interleaved held-out weeks)
    or of :func:`media_backtest` (``holdout="last"``: the last ``holdout_weeks`` weeks).

    The best trial replaces the given config only when it beats it *significantly* on the same
    held-out days: a paired t statistic of the daily absolute percentage errors of at least
    ``min_t``. Held-out revenue is dominated by the baseline, and trials that win by noise
    moved allocations away from the truth in the benchmark (``docs/budget.md``).

    Searches the prior strength (``regularisation``), the trend's smoothing and the yearly
    Fourier order (the knot spacing stays the given config's); the adstock, slope and half
    saturation themselves are fitted by least squares inside every trial. Deterministic when
    bounded by ``n_trials`` rather than ``timeout_seconds``. ``callbacks`` go to
    ``study.optimize`` (e.g. MLflow nested runs); every trial's held-out MAPE is its user
    attribute ``mape``.
    """
    config = config or MediaConfig()
    if holdout not in ("interleaved", "last"):
        raise ValueError(f"holdout must be 'interleaved' or 'last', got {holdout!r}")

    def errors(candidate: MediaConfig) -> np.ndarray:
        """Absolute percentage error of every held-out day with revenue."""
        if holdout == "interleaved":
            actual, predicted = _crossval_predictions(history, candidate)
        else:
            actual, predicted, _ = _backtest_predictions(history, candidate)
        ok = actual > 0
        return np.abs(predicted[ok] - actual[ok]) / actual[ok]

    default_errors = errors(config)
    default = float(default_errors.mean())

    def objective(trial: optuna.Trial) -> float:
        mape = float(errors(_suggest(trial, config)).mean())
        trial.set_user_attr("mape", mape)
        logger.debug("media tuning trial %d: held-out MAPE %.4f", trial.number, mape)
        return finite_or_nan(mape)  # NaN: a failed trial, never the best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=config.random_state),
                                study_name=f"budget-{config.target}")
    study.optimize(objective, n_trials=n_trials, timeout=timeout_seconds, callbacks=list(callbacks or []))
    finished = [t for t in study.trials if t.value is not None]
    best, best_mape, t_statistic = config, default, float("nan")
    # a non-finite MAPE never beats the given config, and a given config without a finite MAPE loses to
    # any finite trial (there is nothing to test the difference against)
    if finished and beats(study.best_value, default, higher_is_better=False):
        candidate = _suggest(optuna.trial.FixedTrial(study.best_params), config)
        if not is_finite(default):
            best, best_mape = candidate, float(study.best_value)
        else:
            difference = default_errors - errors(candidate)
            spread = float(difference.std(ddof=1)) if len(difference) > 1 else 0.0
            t_statistic = float(difference.mean() / (spread / np.sqrt(len(difference)))) if spread > 0 else float("inf")
            if t_statistic >= min_t:
                best, best_mape = candidate, float(study.best_value)
    logger.info("media tuning (%s): %d trials, best held-out MAPE %.4f vs %.4f for the given config (paired t %.2f): %s",
                config.target, len(finished), float(study.best_value) if finished else default, default, t_statistic,
                "tuned" if best is not config else "kept the given config")
    return MediaTuning(config=best, best_mape=best_mape, default_mape=default, n_trials=len(finished), study=study,
                       t_statistic=t_statistic)


# --- response curves ----------------------------------------------------------------------------


def _curve_parameters(fit: MediaFit, channels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = fit.channels.set_index("channel").loc[list(channels)]
    return (table["max_revenue_per_day"].to_numpy(dtype=float), table["half_saturation_spend"].to_numpy(dtype=float),
            table["slope"].to_numpy(dtype=float))


def _response(spend: np.ndarray, scale: np.ndarray, k: np.ndarray, slope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steady-state revenue per day ``scale s^S / (s^S + k^S)`` and its derivative in ``s`` (broadcasting)."""
    s = np.maximum(spend, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(s > 0, (s / k) ** slope, 0.0)
        h = r / (1.0 + r)
        dh = np.where(s > 0, slope * r / (s * (1.0 + r) ** 2), np.where(slope < 1, np.inf, np.where(slope == 1, 1.0 / k, 0.0)))
    return scale * h, scale * dh


def _replicate_response(fit: MediaFit, channel: str, spend: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    reps = fit.replicates[fit.replicates["channel"] == channel]
    if not len(reps):
        return None
    return _response(spend[None, :], reps["max_revenue_per_day"].to_numpy(dtype=float)[:, None],
                     reps["half_saturation_spend"].to_numpy(dtype=float)[:, None], reps["slope"].to_numpy(dtype=float)[:, None])


def response_curves(fit: MediaFit, spend: Mapping[str, np.ndarray] | None = None, horizon_days: int = 1) -> pd.DataFrame:
    """Expected incremental revenue over ``horizon_days`` at constant daily spend, per fitted channel.

    ``spend``: daily spend values per channel (default: 61 points from 0 to 3x the channel's half
    saturation spend). Returns channel, spend, revenue, revenue_low, revenue_high, marginal_roas,
    marginal_roas_low, marginal_roas_high (bands: the bootstrap's ``config.interval`` quantiles).
    """
    alpha = (1.0 - fit.config.interval) / 2.0
    frames = []
    for _, row in fit.channels[fit.channels["fitted"].astype(bool)].iterrows():
        c = row["channel"]
        grid = np.asarray(spend[c] if spend is not None and c in spend else np.linspace(0.0, 3.0 * row["half_saturation_spend"], 61), dtype=float)
        revenue, marginal = _response(grid, row["max_revenue_per_day"], row["half_saturation_spend"], row["slope"])
        reps = _replicate_response(fit, c, grid)
        if reps is None:
            bands = (revenue, revenue, marginal, marginal)
        else:
            bands = (*_band(reps[0], revenue, alpha), *_band(reps[1], marginal, alpha))
        frames.append(pd.DataFrame({
            "channel": c, "spend": grid, "revenue": horizon_days * revenue, "revenue_low": horizon_days * bands[0],
            "revenue_high": horizon_days * bands[1], "marginal_roas": marginal, "marginal_roas_low": bands[2],
            "marginal_roas_high": bands[3],
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["channel", "spend", "revenue", "revenue_low", "revenue_high", "marginal_roas", "marginal_roas_low", "marginal_roas_high"])


# --- optimiser ----------------------------------------------------------------------------------


def current_spend(history: pd.DataFrame, window_days: int = 28) -> pd.Series:
    """Mean daily spend per paid channel over the history's last ``window_days`` days."""
    recent = history.iloc[-window_days:]
    return pd.Series({c: float(recent[SPEND_PREFIX + c].mean()) for c in paid_channels(history)}, name="current_spend")


def allocate_budget(fit: MediaFit, history: pd.DataFrame, constraints: BudgetConstraints | None = None) -> BudgetAllocation:
    """The revenue-maximising daily split of the budget across the paid channels of ``history``.

    Current spend is the mean over the last ``current_window_days`` days of ``history``; the rest
    is :func:`allocate_spend`.
    """
    constraints = constraints or BudgetConstraints()
    return allocate_spend(fit, current_spend(history, constraints.current_window_days), constraints)


def allocate_spend(fit: MediaFit, current: pd.Series | Mapping[str, float], constraints: BudgetConstraints | None = None,
                   ) -> BudgetAllocation:
    """The revenue-maximising daily split given current daily spend per channel (see the module docstring).

    Channels the fit did not estimate (or does not know) are held at their current spend
    (``binding_constraint='excluded'``) and the rest of the budget is optimised. Raises
    ``ValueError`` when the constraints cannot be met together (bounds of a channel cross, or the
    bounds' sum cannot reach the budget) or name unknown channels.
    """
    constraints = constraints or BudgetConstraints()
    current = pd.Series(current, dtype=float)
    if (current < 0).any() or current.isna().any():
        raise ValueError(f"current spend must be non-negative numbers, got {current.to_dict()}")
    channels = list(current.index)
    known = set(channels)
    for name in ("min_spend", "max_spend"):
        unknown = set(getattr(constraints, name)) - known
        if unknown:
            raise ValueError(f"BudgetConstraints.{name} names unknown channels {sorted(unknown)} (channels: {channels})")
    fitted_table = fit.channels[fit.channels["fitted"].astype(bool)]
    excluded = {c: why for c, why in fit.excluded.items() if c in known}
    for c in channels:
        if c not in set(fit.channels["channel"]):
            excluded[c] = "channel not in the fitted model"
    free = [c for c in channels if c in set(fitted_table["channel"])]
    held = [c for c in channels if c not in free]
    total = float(current.sum()) if constraints.total_budget is None else float(constraints.total_budget)
    budget = total - float(current[held].sum())
    if budget < -1e-9:
        raise ValueError(f"infeasible: the total budget {total:.2f} is below the current spend {current[held].sum():.2f} of the "
                         f"channels held because they cannot be optimised ({sorted(held)})")
    lower, upper, lower_by, upper_by = _bounds(free, current, constraints, total)
    _check_feasible(free, lower, upper, budget)

    scale, k, slope = _curve_parameters(fit, free)
    cur = current[free].to_numpy(dtype=float)
    began = time.perf_counter()
    if free:
        spend, solver = _optimise(scale, k, slope, lower, upper, budget, cur)
    else:
        spend, solver = np.empty(0), {"method": "none", "message": "no channel to optimise", "success": True}
    solver["seconds"] = time.perf_counter() - began
    return _allocation(fit, current, free, held, spend, lower, upper, lower_by, upper_by, total, budget, excluded, constraints, solver)


def _bounds(free: Sequence[str], current: pd.Series, constraints: BudgetConstraints, total: float,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cur = current[list(free)].to_numpy(dtype=float)
    n = len(free)
    lower, upper = np.zeros(n), np.full(n, total)
    lower_by, upper_by = np.full(n, "min", dtype=object), np.full(n, "max", dtype=object)
    if constraints.max_change is not None:
        lower, upper = np.maximum(lower, cur * (1.0 - constraints.max_change)), np.minimum(upper, cur * (1.0 + constraints.max_change))
        lower_by = np.where(cur * (1.0 - constraints.max_change) > 0, "max_change", lower_by)
        upper_by = np.where(cur * (1.0 + constraints.max_change) < total, "max_change", upper_by)
    for i, c in enumerate(free):
        if c in constraints.min_spend and constraints.min_spend[c] >= lower[i]:
            lower[i], lower_by[i] = constraints.min_spend[c], "min"
        if c in constraints.max_spend and constraints.max_spend[c] <= upper[i]:
            upper[i], upper_by[i] = constraints.max_spend[c], "max"
    return lower, upper, lower_by, upper_by


def _check_feasible(free: Sequence[str], lower: np.ndarray, upper: np.ndarray, budget: float) -> None:
    crossed = [f"{c} (lower {lo:.2f} > upper {hi:.2f})" for c, lo, hi in zip(free, lower, upper) if lo > hi + 1e-9]
    if crossed:
        raise ValueError("infeasible constraints: bounds cross for " + ", ".join(crossed)
                         + " (min_spend/max_spend against max_change around current spend)")
    tolerance = 1e-9 * max(budget, 1.0)
    if lower.sum() > budget + tolerance:
        raise ValueError(f"infeasible constraints: the channels' lower bounds add up to {lower.sum():.2f} per day, "
                         f"above the budget {budget:.2f} available to them")
    if upper.sum() < budget - tolerance:
        raise ValueError(f"infeasible constraints: the channels' upper bounds add up to {upper.sum():.2f} per day, "
                         f"below the budget {budget:.2f} to spend (loosen max_change / max_spend or lower total_budget)")


def _best_response(scale: np.ndarray, k: np.ndarray, slope: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                   multiplier: float) -> np.ndarray:
    """Per channel, the spend in ``[lower, upper]`` maximising ``revenue(s) - multiplier s`` exactly.

    The maximiser is a bound or a root of ``revenue'(s) = multiplier`` where ``revenue'`` falls
    (its rising branch holds minima only); ``revenue'`` peaks at ``k ((S-1)/(S+1))^(1/S)`` for
    ``S > 1`` and falls everywhere for ``S <= 1``. The root is bisected on log spend, vectorised.
    """
    peak = np.where(slope > 1, k * np.clip((slope - 1) / (slope + 1), 0, None) ** (1 / slope), 0.0)
    lo = np.maximum(lower, peak)
    hi = upper
    _, d_lo = _response(np.maximum(lo, 1e-12 * np.maximum(k, 1.0)), scale, k, slope)
    _, d_hi = _response(hi, scale, k, slope)
    has_root = (lo < hi) & (d_lo >= multiplier) & (d_hi <= multiplier)
    a, b = np.log(np.maximum(lo, 1e-12 * np.maximum(k, 1.0))), np.log(np.maximum(hi, 1e-12 * np.maximum(k, 1.0)))
    for _ in range(100):
        mid = 0.5 * (a + b)
        _, d = _response(np.exp(mid), scale, k, slope)
        above = d > multiplier
        a, b = np.where(above, mid, a), np.where(above, b, mid)
    root = np.exp(0.5 * (a + b))
    candidates = np.stack([lower, upper, np.where(has_root, root, lower)])
    value = _response(candidates, scale, k, slope)[0] - multiplier * candidates
    return candidates[np.argmax(value, axis=0), np.arange(len(scale))]


def _project(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, budget: float) -> np.ndarray:
    """The point of ``{sum = budget, lower <= s <= upper}`` closest to ``x`` (bisection on a shift)."""
    a, b = float(np.min(lower - x)), float(np.max(upper - x))
    for _ in range(200):
        mid = 0.5 * (a + b)
        if np.clip(x + mid, lower, upper).sum() < budget:
            a = mid
        else:
            b = mid
    return np.clip(x + 0.5 * (a + b), lower, upper)


def _optimise(scale: np.ndarray, k: np.ndarray, slope: np.ndarray, lower: np.ndarray, upper: np.ndarray, budget: float,
              current: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Maximise ``sum_c revenue_c(s_c)`` on ``{sum = budget, lower <= s <= upper}``; see the module docstring."""
    def revenue(s: np.ndarray) -> float:
        return float(_response(s, scale, k, slope)[0].sum())

    # the multiplier: bisection on sum(best response) = budget (the sum falls as the multiplier rises)
    peak = np.where(slope > 1, k * np.clip((slope - 1) / (slope + 1), 0, None) ** (1 / slope), lower)
    points = np.concatenate([lower, upper, np.clip(peak, lower, upper)])
    top = float(np.max(_response(points, np.tile(scale, 3), np.tile(k, 3), np.tile(slope, 3))[1]))
    top = top if np.isfinite(top) else 1e12
    a, b = 0.0, max(top, 1e-12) * 2.0 + 1.0
    for _ in range(200):
        mid = 0.5 * (a + b)
        if _best_response(scale, k, slope, lower, upper, mid).sum() > budget:
            a = mid
        else:
            b = mid
    above, below = _best_response(scale, k, slope, lower, upper, b), _best_response(scale, k, slope, lower, upper, a)
    candidates = [_project(above, lower, upper, budget), _project(below, lower, upper, budget)]
    for j in np.flatnonzero(~np.isclose(above, below, rtol=1e-6, atol=1e-9 * max(budget, 1.0))):
        gap = above.copy()  # a channel that jumps at the multiplier closes the gap on its own
        gap[j] = np.clip(budget - (above.sum() - above[j]), lower[j], upper[j])
        candidates.append(_project(gap, lower, upper, budget))
    candidates.append(_project(current, lower, upper, budget))
    polished, messages = [], []
    unit = max(budget, 1e-9)
    revenue_unit = max(float(np.sum(scale)), 1e-12)
    for x0 in candidates:
        if budget <= 0 or np.all(upper - lower <= 1e-12 * unit):
            polished.append(x0)
            continue
        result = optimize.minimize(
            lambda z: -revenue(z * unit) / revenue_unit, x0 / unit,
            jac=lambda z: -_response(z * unit, scale, k, slope)[1] * unit / revenue_unit,
            bounds=list(zip(lower / unit, upper / unit)),
            constraints=[{"type": "eq", "fun": lambda z: z.sum() - 1.0 if budget > 0 else z.sum(), "jac": lambda z: np.ones_like(z)}],
            method="SLSQP", options={"ftol": 1e-14, "maxiter": 500},
        )
        messages.append(str(result.message))
        polished.append(_project(np.clip(result.x * unit, lower, upper), lower, upper, budget))
    everything = candidates + polished
    values = np.array([revenue(x) for x in everything])
    best = int(np.argmax(np.where(np.isnan(values), -np.inf, values)))  # np.argmax would pick a NaN revenue
    solver = {"method": "multiplier bisection + SLSQP polish", "multiplier": 0.5 * (a + b), "candidates": len(everything),
              "message": "; ".join(sorted(set(messages))) or "closed form", "success": True}
    return everything[best], solver


def _allocation(fit: MediaFit, current: pd.Series, free: list[str], held: list[str], spend: np.ndarray, lower: np.ndarray,
                upper: np.ndarray, lower_by: np.ndarray, upper_by: np.ndarray, total: float, budget: float,
                excluded: dict[str, str], constraints: BudgetConstraints, solver: dict[str, Any]) -> BudgetAllocation:
    horizon = constraints.horizon_days
    alpha = (1.0 - fit.config.interval) / 2.0
    scale, k, slope = _curve_parameters(fit, free)
    cur = current[free].to_numpy(dtype=float)
    tol = _MOVE_TOLERANCE * max(total, 1e-9)

    # never return a split worse than the current one (when allowed) or an equal one
    references = {}
    if np.all(cur >= lower - 1e-9) and np.all(cur <= upper + 1e-9) and abs(cur.sum() - budget) <= 1e-6 * max(budget, 1.0):
        references["current"] = cur
    if len(free):
        equal = np.full(len(free), budget / len(free))
        if np.all(equal >= lower - 1e-9) and np.all(equal <= upper + 1e-9):
            references["equal"] = equal
    value = float(_response(spend, scale, k, slope)[0].sum())
    for name, ref in references.items():
        if float(_response(ref, scale, k, slope)[0].sum()) > value * (1 + 1e-9) + 1e-12:
            solver["success"] = False
            solver["message"] = f"optimiser failed to converge: the {name} split earns more than its answer ({solver['message']})"
            spend, value = ref.copy(), float(_response(ref, scale, k, slope)[0].sum())

    revenue_now, _ = _response(cur, scale, k, slope)
    revenue_new, marginal = _response(spend, scale, k, slope)
    low, high, m_low, m_high = revenue_new.copy(), revenue_new.copy(), marginal.copy(), marginal.copy()
    draws = []
    for i, c in enumerate(free):
        reps = _replicate_response(fit, c, spend[i : i + 1])
        if reps is not None:
            low[i], high[i] = _band(reps[0][:, 0], revenue_new[i], alpha)
            m_low[i], m_high[i] = _band(reps[1][:, 0], marginal[i], alpha)
            draws.append(reps[0][:, 0])
    at_lower = spend <= lower + 1e-6 * max(total, 1.0)
    at_upper = spend >= upper - 1e-6 * max(total, 1.0)
    binding = np.where(at_lower & (upper - lower > 1e-9), lower_by, np.where(at_upper, upper_by, "none"))
    binding = np.where(at_lower & (upper - lower <= 1e-9), lower_by, binding)

    moved, reason = _reason(fit, free, held, cur, spend, lower, upper, binding, marginal, scale, k, slope, total, budget,
                            tol, excluded, solver)
    rows = []
    for i, c in enumerate(free):
        note = "" if binding[i] == "none" else f"at its {binding[i]} bound"
        if scale[i] <= _NO_RESPONSE * max(fit.baseline_revenue_per_day, 1e-9):
            note = "model found no response"
        if not np.isfinite([marginal[i], m_low[i], m_high[i]]).all():
            # a paused channel on a curve concave from zero: the marginal return at 0 is unbounded
            note = "; ".join(filter(None, [note, "paused: marginal ROAS at zero spend is unbounded (published as NULL)"]))
        rows.append({"channel": c, "current_spend": cur[i], "recommended_spend": float(spend[i]),
                     "expected_revenue_current": horizon * revenue_now[i], "expected_revenue_recommended": horizon * revenue_new[i],
                     "expected_revenue_recommended_low": horizon * low[i], "expected_revenue_recommended_high": horizon * high[i],
                     "marginal_roas": _finite(marginal[i]), "marginal_roas_low": _finite(m_low[i]),
                     "marginal_roas_high": _finite(m_high[i]), "binding_constraint": str(binding[i]), "reason": note})
    for c in held:
        rows.append({"channel": c, "current_spend": float(current[c]), "recommended_spend": float(current[c]),
                     "expected_revenue_current": np.nan, "expected_revenue_recommended": np.nan,
                     "expected_revenue_recommended_low": np.nan, "expected_revenue_recommended_high": np.nan,
                     "marginal_roas": np.nan, "marginal_roas_low": np.nan, "marginal_roas_high": np.nan,
                     "binding_constraint": "excluded", "reason": excluded.get(c, "not optimised")})
    order = {c: i for i, c in enumerate(current.index)}
    table = pd.DataFrame(rows).sort_values("channel", key=lambda s: s.map(order)).reset_index(drop=True)
    base = horizon * fit.baseline_revenue_per_day
    store_draws = np.sum(draws, axis=0) if draws and len({len(d) for d in draws}) == 1 else None
    store_low, store_high = ((float(q) for q in _band(store_draws, float(revenue_new.sum()), alpha)) if store_draws is not None
                             else (float(revenue_new.sum()), float(revenue_new.sum())))
    logger.info("budget allocation: moved=%s, %s", moved, reason)
    return BudgetAllocation(
        table=table, moved=moved, reason=reason, total_budget=total, horizon_days=horizon,
        expected_store_revenue_current=base + horizon * float(revenue_now.sum()),
        expected_store_revenue_recommended=base + horizon * float(revenue_new.sum()),
        expected_store_revenue_recommended_low=base + horizon * store_low,
        expected_store_revenue_recommended_high=base + horizon * store_high,
        excluded=excluded, solver=solver,
    )


def _reason(fit: MediaFit, free: list[str], held: list[str], cur: np.ndarray, spend: np.ndarray, lower: np.ndarray,
            upper: np.ndarray, binding: np.ndarray, marginal: np.ndarray, scale: np.ndarray, k: np.ndarray, slope: np.ndarray,
            total: float, budget: float, tol: float, excluded: dict[str, str], solver: dict[str, Any]) -> tuple[bool, str]:
    """Whether the split moved and why, in words: never a silent current or equal split."""
    parts = []
    moved = bool(len(free)) and bool(np.any(np.abs(spend - cur) > tol))
    no_response = [c for c, s in zip(free, scale) if s <= _NO_RESPONSE * max(fit.baseline_revenue_per_day, 1e-9)]
    _, marginal_now = _response(cur, scale, k, slope)
    if not free:
        parts.append("no channel can be optimised")
    elif not solver.get("success", True):
        parts.append(solver["message"])
    elif not moved:
        pinned = np.all(upper - lower <= tol)
        at_bound = binding != "none"
        interior = ~at_bound
        spread = _relative_spread(marginal_now[interior]) if interior.any() else 0.0
        if pinned:
            parts.append("every channel is pinned by its bounds (min/max/max_change leave no room)")
        elif at_bound.all():
            parts.append("every channel at a bound: " + ", ".join(f"{c} ({b})" for c, b in zip(free, binding)))
        elif spread <= _EQUAL_MARGINAL_TOLERANCE:
            text = "marginal ROAS already equal across channels at the current split"
            text += f" ({np.min(marginal_now[interior]):.3g}-{np.max(marginal_now[interior]):.3g} on unbound channels)"
            parts.append(text)
        else:
            parts.append(f"the current split is within {_MOVE_TOLERANCE:.1%} of the budget of the optimum")
    else:
        interior = binding == "none"
        shifted = spend - cur
        gainers = [f"{c} {d:+.0f}" for c, d in zip(free, shifted) if d > tol]
        losers = [f"{c} {d:+.0f}" for c, d in zip(free, shifted) if d < -tol]
        text = f"moved {np.abs(shifted).sum() / 2 / max(total, 1e-9):.1%} of the daily budget ({', '.join(losers + gainers)})"
        spread_now = f"marginal ROAS at the current split {np.min(marginal_now):.3g}-{np.max(marginal_now):.3g}"
        if interior.any():
            text += f"; {spread_now}, equalised at {np.median(marginal[interior]):.3g} on unbound channels"
        else:
            text += f"; {spread_now}"
        bound = [f"{c} ({b})" for c, b in zip(free, binding) if b != "none"]
        if bound:
            text += "; at a bound: " + ", ".join(bound)
        parts.append(text)
        if len(free) > 1 and np.all(np.abs(spend - budget / len(free)) <= tol):
            parts.append("the recommendation coincides with an equal split: the fitted curves and bounds put the optimum there "
                         f"(marginal ROAS {np.min(marginal):.3g}-{np.max(marginal):.3g})")
    if no_response:
        parts.append("model found no response for channels " + ", ".join(no_response))
    if held:
        parts.append("held at current spend: " + "; ".join(f"{c}: {excluded.get(c, 'not optimised')}" for c in held))
    if free and abs(budget - cur.sum()) > tol:
        parts.append(f"budget {budget:.2f} per day for the optimised channels vs {cur.sum():.2f} now")
    return moved, "; ".join(parts)


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else np.nan


def _relative_spread(values: np.ndarray) -> float:
    mean = float(np.mean(values))
    return float((np.max(values) - np.min(values)) / mean) if mean > 0 else 0.0
