"""The test window, held-out scores of the media model and its hyperparameter search
(:mod:`ml.families.budget`).

The history splits three ways in time. The **test window** is its last ``holdout_weeks`` weeks
(:func:`before_test_window` is everything else): no selection step sees it. Selection (every
Optuna trial and the choice rule) scores interleaved held-out weeks of the days *before* it; the
chosen config is then fitted on those days and scored on the test window, and so are the
champion's config and the naive baseline, on the same rows.

- :func:`held_out_weeks` fits before the last weeks and predicts them (:class:`HeldOut`: its
  scores, :func:`media_backtest`, and its :class:`ml.evaluation.Evaluation`, the gate's);
  :func:`no_response_baseline` is the family's naive baseline there ("the current split": revenue
  that does not respond to spend); :data:`MAPE` is the gate's metric, the daily MAPE of the target
  revenue, with the test window's weeks as the bootstrap's groups;
- :func:`media_crossval` scores interleaved held-out weeks (the tuning objective);
- :func:`media_search_space` is the search :func:`ml.tuning.search` runs, on the days before the
  test window only: the prior strength, the trend's smoothing and the yearly Fourier order, scored
  by the held-out daily MAPE, and a choice rule that keeps the given config unless the best trial
  beats it *significantly* (a paired t statistic of the daily absolute percentage errors of at
  least ``min_t``); held-out revenue is dominated by the baseline, and trials that win by noise
  moved allocations away from the truth in the benchmark (``docs/budget.md``).
  :func:`tune_media_model` runs it;
- :func:`training_data_shortfall` says why a store cannot train the model (too little spend for
  the fit and the test window, no paid channel that can be fitted).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd

from features.media import SPEND_PREFIX, media_history
from ml.families.budget.estimator import (
    MediaConfig,
    _baseline_for,
    _check_history,
    _estimate,
    _fitted_channels,
    _mape,
    _predict,
    _r2,
    one_blas_thread,
)
from ml.families.budget.least_squares import _target
from ml.evaluation import Evaluation, Metric
from ml.gate import beats, is_finite
from ml.tuning import Budget, Callback, Scored, SearchSpace, Tuned, search

logger = logging.getLogger(__name__)

HOLDOUTS: tuple[str, ...] = ("interleaved", "last")

#: days a media model fits on at least (before the test window of ``MediaConfig.holdout_weeks`` weeks)
MIN_TRAINING_DAYS = 56


def training_data_shortfall(spend: pd.DataFrame, orders: pd.DataFrame, run_date: Any, lookback_days: int,
                            config: MediaConfig | None = None) -> str | None:
    """Why the store cannot train the media model as of ``run_date`` (None when it can): no
    marketing spend in the ``lookback_days`` before it (nothing to allocate), fewer days of spend
    than the model needs (:data:`MIN_TRAINING_DAYS` plus the test window), no spend or no completed
    order in that window, or no paid channel with enough spend days (and attributed orders, for
    ``target="attributed"``) before the test window. The reason names the run date and tables."""
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
                f"{needed} ({MIN_TRAINING_DAYS} to fit, then {config.holdout_weeks} weeks to test on) (shop.marketing_spend)")
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
        return (f"no paid channel can be fitted on the {len(training)} days before the test window (run date "
                f"{run.date()}): " + "; ".join(f"{c}: {why}" for c, why in excluded.items())
                + " (shop.marketing_spend, shop.orders)")
    return None


def _mape_score(actual: np.ndarray, predicted: np.ndarray) -> float:
    return _mape(np.asarray(actual, dtype="float64"), np.asarray(predicted, dtype="float64"))


MAPE = Metric("mape", higher_is_better=False, relative_margin=True, score=_mape_score)
"""The gate's metric: the mean absolute percentage error of the daily target revenue on the test
window (days without revenue left out), as :func:`media_backtest`'s ``mape``; the paired bootstrap
resamples whole weeks (a week's days share the spend of its block and the baseline's errors)."""

#: weeks of the pre-test days whose mean target revenue sets the naive baseline's level
BASELINE_LEVEL_WEEKS = 4


def _held_days(history: pd.DataFrame, weeks: int) -> int:
    """Days in the test window: the last ``weeks`` weeks, provided :data:`MIN_TRAINING_DAYS` remain."""
    n_test = 7 * weeks
    if len(history) - n_test < MIN_TRAINING_DAYS:
        raise ValueError(f"history has {len(history)} days: too few for a {weeks}-week holdout and "
                         f"{MIN_TRAINING_DAYS} training days")
    return n_test


def before_test_window(history: pd.DataFrame, weeks: int) -> pd.DataFrame:
    """The days before the test window (all but the last ``weeks`` weeks): everything selection and
    the test-window fits may see."""
    return history.iloc[: len(history) - _held_days(history, weeks)].reset_index(drop=True)


@dataclass(frozen=True)
class HeldOut:
    """Actual and predicted target revenue on the last weeks of a history, from a fit on the days
    before them: ``no_media`` is the same fit with every channel's contribution held at its training
    mean (what media variation adds)."""

    days: pd.DatetimeIndex
    actual: np.ndarray
    predicted: np.ndarray
    no_media: np.ndarray
    training_days: int

    def scores(self) -> dict[str, float]:
        """mape, rmse, r2 (daily), weekly_mape (7-day sums from the window's first day), mape_no_media
        and days."""
        y, mu = self.actual, self.predicted
        weeks = np.arange(len(y)) // 7
        y_week, mu_week = np.bincount(weeks, y), np.bincount(weeks, mu)
        return {
            "mape": _mape(y, mu), "rmse": float(np.sqrt(np.mean((y - mu) ** 2))), "r2": _r2(y, mu),
            "weekly_mape": _mape(y_week, mu_week), "mape_no_media": _mape(y, self.no_media),
            "days": float(len(y)),
        }

    def evaluation(self, name: str) -> Evaluation:
        """These predictions as the gate reads them (:data:`MAPE`): one row per day, grouped by week."""
        return Evaluation(name, self.actual, self.predicted, window=_window(self.days, self.training_days),
                          groups=_week_labels(self.days))


def _window(days: pd.DatetimeIndex, training_days: int) -> str:
    return (f"daily revenue {days[0].date()} to {days[-1].date()} ({len(days) // 7} weeks; fitted on the "
            f"{training_days} days before)")


def _week_labels(days: pd.DatetimeIndex) -> np.ndarray:
    """The first day of each row's week, weeks counted from the window's first day."""
    first = days[(np.arange(len(days)) // 7) * 7]
    return np.asarray(first.strftime("%Y-%m-%d"))


def _actual_revenue(history: pd.DataFrame, config: MediaConfig, channels: Sequence[str]) -> np.ndarray:
    """The target in revenue (the attributed channels' summed): what every held-out score compares with."""
    actual = _target(history, config, channels, "revenue")
    return actual.sum(axis=1) if actual.ndim == 2 else actual


def _training_channels(train: pd.DataFrame, config: MediaConfig) -> list[str]:
    channels, _ = _fitted_channels(train, config)
    if not channels:
        raise ValueError("no paid channel can be fitted on the training days")
    return channels


@one_blas_thread
def held_out_weeks(history: pd.DataFrame, config: MediaConfig | None = None, weeks: int | None = None) -> HeldOut:
    """Fit on the days before the last ``weeks`` weeks (default ``config.holdout_weeks``), predict the
    target on them. No bootstrap.

    The target is the revenue of the series the model fits (total revenue minus excluded channels,
    or the paid channels' attributed revenue summed; with ``outcome="orders"`` the predicted orders
    are valued at the training days' average order value). Predictions use the held-out days'
    actual spend (the question is how revenue responds to spend, not what will be spent) and the
    baseline extrapolated (trend held flat, weekday and season from the calendar).
    """
    config = dataclasses.replace(config or MediaConfig(), n_bootstrap=0)
    _check_history(history, config)
    n_held = _held_days(history, config.holdout_weeks if weeks is None else weeks)
    train = history.iloc[: len(history) - n_held].reset_index(drop=True)
    channels = _training_channels(train, config)
    estimate = _estimate(train, config, channels, _baseline_for(pd.DatetimeIndex(train["day"]), config))
    days = pd.DatetimeIndex(history["day"])
    pred = _predict(estimate, config, days, history[[SPEND_PREFIX + c for c in channels]].to_numpy(dtype=float))
    held = slice(len(train), None)
    y, mu = _actual_revenue(history, config, channels)[held], pred.target[held]
    mean_contribution = pred.contribution[: len(train)].mean(axis=0)
    if config.target == "total":
        # the baseline times the training-mean lift
        flat = pred.baseline[held] * (1.0 + (mean_contribution / pred.baseline[: len(train)].mean()).sum())
    else:
        flat = np.full(len(y), mean_contribution.sum())
    return HeldOut(days[held], y, mu, flat, len(train))


def media_backtest(history: pd.DataFrame, config: MediaConfig | None = None) -> dict[str, float]:
    """:func:`held_out_weeks`' scores (:meth:`HeldOut.scores`) on the last ``holdout_weeks`` weeks."""
    return held_out_weeks(history, config).scores()


def no_response_baseline(history: pd.DataFrame, config: MediaConfig, weeks: int | None = None) -> Evaluation:
    """The family's naive baseline on the last ``weeks`` weeks (default ``config.holdout_weeks``):
    "the current split", i.e. revenue that does not respond to spend changes. From the days before
    the window only: the mean daily target revenue of their last :data:`BASELINE_LEVEL_WEEKS` weeks
    (the current level), times each weekday's mean over all of them relative to their mean (the
    weekday profile the model fits too). Same rows, outcomes and groups as :meth:`HeldOut.evaluation`."""
    n_held = _held_days(history, config.holdout_weeks if weeks is None else weeks)
    n_train = len(history) - n_held
    actual = _actual_revenue(history, config, _training_channels(history.iloc[:n_train], config))
    days = pd.DatetimeIndex(history["day"])
    before, weekday = actual[:n_train], days.dayofweek.to_numpy()
    profile = pd.Series(before).groupby(weekday[:n_train]).mean() / before.mean()
    level = before[-7 * BASELINE_LEVEL_WEEKS:].mean()
    predicted = level * profile.reindex(range(7)).fillna(1.0).to_numpy()[weekday[n_train:]]
    return Evaluation("no-spend-response baseline", actual[n_train:], predicted,
                      window=_window(days[n_train:], n_train), groups=_week_labels(days[n_train:]))


@one_blas_thread
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


def _held_out_errors(history: pd.DataFrame, config: MediaConfig, holdout: str) -> np.ndarray:
    """Absolute percentage error of every held-out day with revenue."""
    if holdout == "interleaved":
        actual, predicted = _crossval_predictions(history, config)
    else:
        held = held_out_weeks(history, config)
        actual, predicted = held.actual, held.predicted
    ok = actual > 0
    return np.abs(predicted[ok] - actual[ok]) / actual[ok]


def _paired_t(default_errors: np.ndarray, errors: np.ndarray) -> float:
    """The paired t statistic of the daily errors' improvement over the default's (inf when every day
    improves by the same amount; NaN when an error is not a number: there is nothing to test)."""
    difference = default_errors - errors
    if not np.isfinite(difference).all():
        return float("nan")
    spread = float(difference.std(ddof=1)) if len(difference) > 1 else 0.0
    return float(difference.mean() / (spread / np.sqrt(len(difference)))) if spread > 0 else float("inf")


def media_search_space(history: pd.DataFrame, config: MediaConfig | None = None, *, holdout: str = "interleaved",
                       min_t: float = 2.0) -> SearchSpace[MediaConfig]:
    """The media model's search for :func:`ml.tuning.search`, minimising the held-out daily MAPE
    (``mape``) of :func:`media_crossval` (``holdout="interleaved"``, the default) or of
    :func:`media_backtest` (``holdout="last"``) on the days of ``history`` *before its test window*
    (:func:`before_test_window`, the last ``config.holdout_weeks`` weeks): no trial, and not the
    choice between them, sees the test window's revenue, so the test-window score of the chosen
    config (:func:`held_out_weeks`, the gate's) is not the best of many tries on it.

    ``config`` (the default, scored first) is kept unless the best trial beats it with a paired t
    statistic of at least ``min_t`` on the same held-out days (every trial's ``paired_t`` against
    it is among its metrics); a given config without a finite MAPE loses to any finite trial (there
    is nothing to test the difference against), and a trial without one never wins. The study is
    seeded by the search's budget (:class:`ml.tuning.Budget`), deterministic when bounded by trials.
    """
    config = config or MediaConfig()
    if holdout not in HOLDOUTS:
        raise ValueError(f"holdout must be 'interleaved' or 'last', got {holdout!r}")
    selection = before_test_window(history, config.holdout_weeks)
    default_errors: list[np.ndarray] = []  # the default's, scored before any trial

    @one_blas_thread
    def score(candidate: MediaConfig) -> Scored[MediaConfig]:
        errors = _held_out_errors(selection, candidate, holdout)
        metrics = {"mape": float(errors.mean())}
        if candidate is config:
            default_errors[:] = [errors]
        else:
            metrics["paired_t"] = _paired_t(default_errors[0], errors)
            logger.debug("media tuning trial: held-out MAPE %.4f", metrics["mape"])
        return Scored(candidate, metrics)

    def choose(default: Scored[MediaConfig] | None, finished: list[Scored[MediaConfig]]) -> Scored[MediaConfig]:
        assert default is not None  # the space has a default
        default_mape = float(default.metrics["mape"])
        best = min(finished, key=lambda s: s.metrics["mape"]) if finished else None  # the first of equals, as Optuna
        chosen = default
        if best is not None and beats(best.metrics["mape"], default_mape, higher_is_better=False):
            if not is_finite(default_mape) or best.metrics["paired_t"] >= min_t:
                chosen = best
        logger.info("media tuning (%s): %d trials, best held-out MAPE %.4f vs %.4f for the given config (paired t %.2f): %s",
                    config.target, len(finished), best.metrics["mape"] if best else default_mape, default_mape,
                    best.metrics["paired_t"] if best else float("nan"),
                    "tuned" if chosen is not default else "kept the given config")
        return chosen

    return SearchSpace(name=f"budget-{config.target}", suggest=lambda trial: _suggest(trial, config), score=score,
                       objective="mape", direction="minimize", default=config, choose=choose)


@one_blas_thread
def tune_media_model(
    history: pd.DataFrame,
    config: MediaConfig | None = None,
    *,
    n_trials: int = 20,
    timeout_seconds: float = 120.0,
    callbacks: Sequence[Callback] = (),
    holdout: str = "interleaved",
    min_t: float = 2.0,
) -> Tuned[MediaConfig]:
    """:func:`ml.tuning.search` over :func:`media_search_space` (on the days before the test window),
    seeded with ``config.random_state``: the config to use (``config``, kept unless a trial is
    significantly better), its held-out MAPE (``value``, a validation number, not a test one) and the
    given config's (``default_value``).

    Searches the prior strength (``regularisation``), the trend's smoothing and the yearly
    Fourier order (the knot spacing stays the given config's); the adstock, slope and half
    saturation themselves are fitted by least squares inside every trial. ``callbacks`` go to
    ``study.optimize`` (e.g. MLflow nested runs); every trial's held-out MAPE is its user
    attribute ``mape``, its paired t against the given config ``paired_t``.
    """
    config = config or MediaConfig()
    space = media_search_space(history, config, holdout=holdout, min_t=min_t)
    return search(space, Budget(n_trials, timeout_seconds, config.random_state), callbacks)
