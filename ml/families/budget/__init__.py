"""Marketing budget allocation: a media mix model of daily revenue and the spend split that maximises it.

Verbs, all pure (frames in, new objects out):

- :func:`features.media.media_history` - the dense day x channel window: daily spend per paid
  channel, completed revenue and orders in total and per order channel (the nightly input is its
  spend, long: :func:`features.media.daily_spend`);
- :func:`fit_media_model` (:mod:`.estimator`) - per paid channel an adstock decay, a Hill
  saturation curve and an effect size, a baseline (trend, weekday, yearly Fourier terms) and
  bootstrap intervals (:class:`MediaFit`); the least-squares problems are in :mod:`.least_squares`;
- :func:`held_out_weeks` / :func:`media_backtest` (fit before the last ``holdout_weeks`` weeks, the
  **test window**, and score them), :func:`no_response_baseline` (the naive baseline there),
  :func:`media_crossval` (interleaved held-out weeks) and :func:`media_search_space` /
  :func:`tune_media_model` (:func:`ml.tuning.search` over the fit's hyperparameters on interleaved
  held-out weeks of the days before the test window) (:mod:`.backtest`);
- :func:`allocate_budget` / :func:`allocate_spend` (:mod:`.optimiser`) - the daily spend per channel
  that maximises the modelled steady-state revenue under :class:`BudgetConstraints`, with the
  reason it moved (or not);
- :func:`response_curves` - expected incremental revenue against daily spend, with intervals;
- :func:`fit_from_curves` - a :class:`MediaFit` from known curves (tests, benchmarks, experiments);
- :class:`BudgetModel` (:mod:`.model`) - the registered model: its ``predict`` is the nightly split;
- :data:`FAMILY` - the family as the runners drive it (:class:`ml.family.Family`).

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
stabilises the variance of counts and copes with days without attributed orders). The attributed
outcome is each order split over channels by the run's ``attribution_model`` (default the Markov
removal-effect model; :func:`target_orders`, docs/attribution.md) on its conversion path, or the
channel the store recorded (``recorded``, or a store without clickstream). That is only right as far as
the attribution measures incrementality, which no attribution guarantees (in
:mod:`revopt.sample_data.synth` the recorded channel is the last touch and the true cause is in
``truth.order_causes``); the benchmarks compare the targets.

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
and the Fourier order with Optuna on interleaved held-out weeks of the days before the test window,
and keeps the given config unless a trial is significantly better there.

Evaluation
----------
The history splits three ways in time. The **test window** is its last ``holdout_weeks`` weeks
(8): tuning, and its choice between trials, only ever see the days before it. The chosen config is
fitted on those days and predicts the test window's daily target revenue from its actual spend
(``Trained.test``); the champion's config is fitted and scored the same way (``evaluate``); the
naive baseline, "the current split" (revenue that does not respond to spend: the last four
pre-test weeks' mean daily revenue times the weekday profile, :func:`no_response_baseline`), is
scored on the same days. The gate's metric is the daily MAPE there (:data:`MAPE`), compared by a
paired bootstrap over whole weeks. The published model is then fitted on the whole history, test
window included.

Where history allows, a **rolling-origin backtest** repeats selection and test as of the run date
moved back ``holdout_weeks`` weeks at a time (``backtest_origins``, :mod:`ml.families.rolling_origin`):
each origin's media history is built from the ``lookback_days`` before its own run date, and the
origins stop at the first one :meth:`BudgetFamily.shortfall` refuses. The test MAPE, weekly MAPE, R^2
and the baseline's MAPE are logged per origin as ``backtest_<metric>_origin<k>`` (origin 0 is the
test window above) with their mean and standard deviation. Earlier origins tune with a quarter of
``n_trials`` (at least 2; the params ``backtest_earlier_*``): re-tuning fully at two earlier origins
added 92-161 % to the family's training time on the demo store, this budget adds 32 % (docs/budget.md).
The gate decides on origin 0 alone.

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

Why hand-written: pymc-marketing (installed, used by the CLV family) fits this family of models by
MCMC, which takes minutes per fit and cannot sit inside an Optuna search or a bootstrap within the
nightly budget; its MMM is additive in the channels' contributions (media do not scale with the
season) and its budget optimiser is one SLSQP run from an equal split. The numerical pieces here
are scipy's (``lfilter``, ``least_squares``, ``minimize``) and Optuna's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.media import current_spend, daily_spend, media_history, paid_channels
from ml.families.budget.backtest import (
    MAPE,
    MIN_TRAINING_DAYS,
    HeldOut,
    before_test_window,
    held_out_weeks,
    media_backtest,
    media_crossval,
    media_search_space,
    no_response_baseline,
    training_data_shortfall,
    tune_media_model,
)
from ml.families.budget.estimator import OUTCOMES, TARGETS, MediaConfig, MediaFit, fit_from_curves, fit_media_model
from ml.families.budget.model import ALLOCATION_COLUMNS, BudgetModel, allocation_rows, constraint_params
from ml.families.budget.optimiser import (
    BINDING,
    BudgetAllocation,
    BudgetConstraints,
    allocate_budget,
    allocate_spend,
    response_curves,
)
from ml.evaluation import Evaluation, summarise_backtest
from ml.families.rolling_origin import backtest_params, earlier_origin_params, earlier_origins
from ml.family import Frames, Trained, config_from_spec, config_spec, dated_window
from ml.params import RunParams
from ml.reuse import kept
from ml.tuning import Budget, Callback, Tuned, search

__all__ = [
    "ALLOCATION_COLUMNS", "BACKTEST_METRICS", "BINDING", "FAMILY", "MAPE", "MIN_TRAINING_DAYS", "MODEL_NAME", "OUTCOMES", "TARGETS",
    "BudgetAllocation", "BudgetConstraints", "BudgetFamily", "BudgetModel", "HeldOut", "MediaConfig", "MediaData",
    "MediaFit", "allocate_budget", "allocate_spend", "allocation_rows", "before_test_window", "budget_constraints",
    "constraint_params", "current_spend", "daily_spend", "fit_from_curves", "fit_media_model", "held_out_weeks",
    "media_backtest", "media_config", "media_crossval", "media_history", "media_search_space", "no_response_baseline",
    "paid_channels", "response_curves", "target_orders", "training_data_shortfall", "tune_media_model",
]

logger = logging.getLogger(__name__)

MODEL_NAME = "revopt_budget_allocation"
#: the conversion paths too: the attributed target splits orders by the run's attribution model, at training
#: and in the nightly shortfall check, which must read what training fitted
_DATASETS = ("marketing_spend", "orders", "conversion_paths")
_LOGGED_CONFIG = ("regularisation", "trend_knot_days", "trend_smoothing", "fourier_order")
#: Test metrics summarised over the rolling-origin backtest's origins (``backtest_<metric>_origin<k>``).
BACKTEST_METRICS = ("mape", "weekly_mape", "r2", "baseline_mape")


def budget_constraints(params: RunParams) -> BudgetConstraints:
    """The run's budget settings as the optimiser's constraints."""
    return BudgetConstraints(
        total_budget=params.budget_total, min_spend=dict(params.budget_min_spend), max_spend=dict(params.budget_max_spend),
        max_change=params.budget_max_change, horizon_days=params.budget_horizon_days,
    )


@kept
def target_orders(frames: Frames, run_date: dt.date, params: RunParams) -> pd.DataFrame:
    """The orders the media model's attributed target reads: each split over channels by the run's
    ``attribution_model`` (:func:`ml.attribution.nightly.attributed_orders`) when the extract has conversion
    paths with touchpoints, else as the store recorded them (one channel per order). Split once per training run
    (:mod:`ml.reuse`): the shortfall and the training data both read it."""
    from ml.attribution.nightly import attributed_orders, history_credits, settings_of

    paths = frames.get("conversion_paths")
    if paths is None:
        return frames["orders"]
    credits = history_credits(paths, frames["orders"], run_date, params.attribution_model, settings_of(params))
    return attributed_orders(frames["orders"], credits)


def media_config(frames: Frames, params: RunParams, orders: pd.DataFrame | None = None) -> MediaConfig:
    """The media model's configuration for this store: the attributed target when orders are credited to
    the paid channels (``orders``: :func:`target_orders`, else the recorded ``frames["orders"]``), else
    total revenue with the model separating baseline from channels (docs/budget.md); seeded with the run's
    seed."""
    orders = frames["orders"] if orders is None else orders
    attributed = set(orders["channel"]) & set(frames["marketing_spend"]["channel"])
    return MediaConfig(target="attributed" if attributed else "total", random_state=params.seed)


@dataclass(frozen=True)
class MediaData:
    """What training and the gate read: the media history of the run's window, the store's config
    (whose ``holdout_weeks`` is the test window: the last weeks of ``history``), and ``earlier``: the same
    as of each earlier origin of the rolling-origin backtest history allows
    (:mod:`ml.families.rolling_origin`)."""

    history: pd.DataFrame
    config: MediaConfig
    run_date: dt.date
    earlier: tuple[MediaData, ...] = ()

    @property
    def test_weeks(self) -> int:
        return self.config.holdout_weeks


@dataclass(frozen=True)
class _Tested:
    """Selection and test of one origin: the search on the days before its test window, the chosen
    config's predictions of the test window and the baseline's."""

    tuned: Tuned[MediaConfig]
    held_out: HeldOut
    baseline: Evaluation

    def backtest_metrics(self) -> dict[str, float]:
        scores = self.held_out.scores()
        return {**{key: scores[key] for key in ("mape", "weekly_mape", "r2")},
                f"baseline_{MAPE.name}": self.baseline.value(MAPE)}


class BudgetFamily:
    """The budget family (:class:`ml.family.Family`): the media model tuned on interleaved held-out
    weeks before the test window, gated on the test window's daily MAPE (the last ``holdout_weeks``
    weeks, against the no-spend-response baseline and the champion's config fitted on the same
    days), and its optimiser as the nightly output."""

    name = "budget"
    model_name = MODEL_NAME
    training_datasets = _DATASETS
    nightly_datasets = _DATASETS
    metric = MAPE
    description = ("Daily revenue as a response to each paid channel's spend (a media-mix model with adstock and "
                   "saturation curves), and the split of the budget across channels that maximises expected revenue "
                   "within the run's constraints: published as scores.budget_allocations.")

    def shortfall(self, frames: Frames, run_date: dt.date, params: RunParams) -> str | None:
        """No (or too little) marketing spend, no completed orders, or no paid channel that can be fitted
        (:func:`training_data_shortfall`)."""
        return _shortfall(frames, target_orders(frames, run_date, params), run_date, params)

    def training_data(self, frames: Frames, run_date: dt.date, params: RunParams) -> MediaData:
        """The media history as of ``run_date`` and, for the rolling-origin backtest, as of each earlier
        origin (one test window, ``holdout_weeks`` weeks, earlier each) whose history passes :meth:`shortfall`.
        The attributed target's orders are split by the run's attribution model (:func:`target_orders`)."""
        orders = target_orders(frames, run_date, params)
        config = media_config(frames, params, orders)

        def as_of(date: dt.date) -> MediaData:
            history = media_history(frames["marketing_spend"], orders, date, params.lookback_days)
            return MediaData(history=history, config=config, run_date=date)

        origins = earlier_origins(self.name, run_date, 7 * config.holdout_weeks, params,
                                  lambda origin: _shortfall(frames, orders, origin, params))
        return dataclasses.replace(as_of(run_date), earlier=tuple(as_of(origin) for origin in origins))

    def train(self, data: MediaData, params: RunParams, callbacks: Sequence[Callback]) -> Trained:
        """Tune on interleaved held-out weeks of the days before the test window
        (:func:`media_search_space` never sees it); fit the chosen config on those days and score it,
        and the no-spend-response baseline, on the test window (the gate's evaluations); then fit the
        published model, with intervals, on the whole history, test window included, and allocate the
        run's budget with it."""
        from ml.families.budget.figures import response_curves_figure  # matplotlib only when training

        history, run_date = data.history, data.run_date
        constraints = budget_constraints(params)
        tested = _select_and_test(data, params, callbacks)
        tuned, held_out, baseline = tested.tuned, tested.held_out, tested.baseline
        config = tuned.config
        spec = config_spec(self.name, config)
        config_json = spec["config"]
        test = held_out.evaluation("candidate")
        earlier = [_select_and_test(origin, earlier_origin_params(params)) for origin in data.earlier]
        backtest = summarise_backtest([tested.backtest_metrics(), *(origin.backtest_metrics() for origin in earlier)],
                                      BACKTEST_METRICS)
        fit = fit_media_model(history, config)
        allocation = allocate_budget(fit, history, constraints)
        table = allocation.table
        model = BudgetModel(fit, constraints)
        validation = {"valid_mape": tuned.value, "valid_default_mape": tuned.default_value,
                      "valid_paired_t": tuned.metrics.get("paired_t", np.nan)}
        return Trained(
            model=model,
            spec=spec,
            test=test,
            baseline=baseline,
            example=daily_spend(history.iloc[-constraints.current_window_days:]),
            predict_params=constraint_params(constraints),
            # the runner logs run_date, n_trials, timeout_seconds, seed (= the config's random_state), promotion_margin
            params={"lookback_days": params.lookback_days, "history_days": len(history),
                    "channels": ",".join(paid_channels(history)), "target": data.config.target,
                    "test_weeks": data.test_weeks, "test_window": test.window,
                    **backtest_params(params, 1 + len(data.earlier), 7 * data.test_weeks),
                    **{f"best_{key}": value for key, value in config_json.items() if key in _LOGGED_CONFIG}},
            metrics={**{f"test_{key}": value for key, value in held_out.scores().items()},
                     f"baseline_{self.metric.name}": baseline.value(self.metric),
                     **{key: float(value) for key, value in validation.items() if np.isfinite(value)},
                     **{key: float(value) for key, value in fit.params.items() if isinstance(value, (int, float))},
                     **backtest},
            figures={"response_curves.png": response_curves_figure(fit, allocation,
                                                                         f"response curves as of {run_date}")},
            tables={"channels.json": fit.channels, "allocation.json": table},
            tags={"revopt.budget.moved": str(allocation.moved), "revopt.budget.reason": allocation.reason[:5000]},
            # a channel the fit left out is held at its spend with no expected revenue (NULL, by design)
            # no separate validation window: the search cross-validates on interleaved weeks of the train days
            windows={"train": dated_window(before_test_window(history, data.test_weeks), "day",
                                           "daily spend per channel and revenue before the test window; the search "
                                           "scores interleaved held-out weeks of these days (no separate validation "
                                           "window)", target="revenue"),
                     "test": dated_window(history.iloc[len(before_test_window(history, data.test_weeks)):], "day",
                                          f"daily spend and revenue of the test window, the last {data.test_weeks} "
                                          "weeks", target="revenue")},
            checks={"channels' recommended spend": table["recommended_spend"],
                    "fitted channels' expected revenue":
                    table.loc[table["binding_constraint"] != "excluded", "expected_revenue_recommended"]},
        )

    def evaluate(self, data: MediaData, spec: Mapping[str, Any], params: RunParams) -> Evaluation | None:
        """The champion's config (from its spec) fitted on the days before the test window and scored on
        it, exactly as ``train`` scores the candidate; None when this version cannot rebuild the spec,
        when it cannot be fitted on these days, or when it models another target (other test
        outcomes: e.g. total revenue where the store now attributes orders)."""
        config = config_from_spec(self.name, spec, MediaConfig)
        if config is None:
            return None
        try:
            held_out = held_out_weeks(data.history, config, data.test_weeks)
        except ValueError as exc:
            logger.warning("budget: the champion's config cannot be fitted before the test window (%s)", exc)
            return None
        evaluation = held_out.evaluation("champion")
        reference = no_response_baseline(data.history, data.config, data.test_weeks)
        if not np.array_equal(evaluation.y, reference.y):
            logger.warning("budget: the champion's config models other outcomes (target %r, this store's %r); it "
                           "cannot be compared on this test window", config.target, data.config.target)
            return None
        return evaluation

    def nightly_input(self, frames: Frames, run_date: dt.date, params: RunParams) -> pd.DataFrame:
        """Tonight's daily spend per paid channel over the run's window, long (:func:`daily_spend`)."""
        return daily_spend(media_history(frames["marketing_spend"], frames["orders"], run_date, params.lookback_days))

    def predict_params(self, run_date: dt.date, params: RunParams) -> dict[str, Any]:
        return constraint_params(budget_constraints(params))


FAMILY = BudgetFamily()


def _shortfall(frames: Frames, orders: pd.DataFrame, run_date: dt.date, params: RunParams) -> str | None:
    """:meth:`BudgetFamily.shortfall` with the target's orders already split (:func:`target_orders`), so the
    check reads what training fits."""
    return training_data_shortfall(frames["marketing_spend"], orders, run_date, params.lookback_days,
                                   media_config(frames, params, orders))


def _select_and_test(data: MediaData, params: RunParams, callbacks: Sequence[Callback] = ()) -> _Tested:
    """Tune on interleaved held-out weeks of the days before the test window, then fit the chosen config
    on those days and predict the test window; the no-spend-response baseline on the same days."""
    tuned = search(media_search_space(data.history, data.config),
                   Budget(params.n_trials, params.tuning_timeout_seconds, params.seed), callbacks)
    return _Tested(tuned, held_out_weeks(data.history, tuned.config, data.test_weeks),
                   no_response_baseline(data.history, data.config, data.test_weeks))
