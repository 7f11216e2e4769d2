"""Send-time optimisation: the local hour at which each customer is most likely to open an email.

The family (:data:`FAMILY`, :class:`ml.family.Family`) and its parts, all pure (frames in, new
objects out), split by concern:

- :mod:`features.engagement` (data preparation): :func:`~features.engagement.local_time` - UTC
  instants to the customer's local hour and day type (weekday / weekend), vectorised per time zone,
  DST respected; unknown or invalid zones read as UTC (and are counted); the nightly input, one long
  frame of customers, hourly engagement and orders (:func:`~features.engagement.engagement_input`);
- :mod:`.config`: :class:`SendTimeConfig` and the constants;
- :mod:`.evidence`: the rows and the evidence cube per customer, day type and local hour;
- :mod:`.estimator`: :func:`fit_send_time` - segment priors and every customer's posterior
  open-rate curve by local hour, arrays shaped (customers, day types, 24);
- :mod:`.backtest`: :func:`send_time_backtest` / :func:`tune_send_time` - fit on the data before
  ``as_of - holdout_days`` (:func:`holdout_start`), score the held-out sends (:func:`log_loss`:
  Bernoulli log loss of opens at the send's local hour), estimate the open rate the recommended
  hours would get (the *policy value*, cross-fitted over folds of all sends before ``as_of``) and
  search the hyperparameters of :class:`SendTimeConfig` with :func:`ml.tuning.search`
  (:func:`search_space`) on the config's ``objective`` (the policy value where the store sends at
  several hours, else the log loss); :func:`no_hour_preference` is the gate's naive baseline;
- :mod:`.recommender`: :func:`recommend_send_times` - best and runner-up hour per customer (and
  day type), never in the quiet hours, with the expected rate there and at the store's default
  hour; :func:`prior_recommendations` does the same from stored segment priors alone;
- :mod:`.model`: :class:`SendTimeModel`, the registered pyfunc, whose ``predict`` on the nightly
  input is what the nightly run publishes.

Inputs are the nightly extracts: ``engagement`` (``engagement_by_hour``: customer_id, hour_utc,
sends, opens, clicks, sessions per customer and UTC hour, see ``revopt.platform.engagement_extract.ENGAGEMENT_SQL``;
at night ``engagement_by_local_hour``, the same rows summed in the events store per customer, local day
type and local hour, each row's ``hour_utc`` a real hour of its cell, so the cube below is the same),
``orders`` (customer_id, order_ts) and ``customers`` (customer_id, timezone and the segment
column, ``country`` by default), within the nightly run's window (``lookback_days`` before the run
date; training reads the same window of its longer extract). Only data strictly before ``as_of``
is used.

1. **Priors.** Opens and sends are pooled per segment (``segment_column``; segments with fewer
   than ``min_segment_customers`` customers use the global prior) and per hour, smoothed with a
   circular Gaussian kernel of ``_PRIOR_BANDWIDTH_HOURS`` and shrunk towards the global curve with
   ``segment_strength`` pseudo-sends per hour (the global curve towards the store's mean open
   rate the same way, so hours the store never sends at get the mean). Activity profiles (share of
   activity per hour, summing to 1) are pooled and shrunk the same way.
2. **Customer level.** Customers differ far more in *how often* they open than in *when*:
   ``level_i = (opens_i + level_strength) / (expected_opens_i + level_strength)``, the expected
   opens being those of the segment curve at the hours customer i was actually sent (a Gamma prior
   with mean 1 on a multiplicative level).
3. **Activity tilt.** The prior curve ``level_i x segment_curve`` is multiplied by
   ``(q_i / q_segment) ** activity_weight`` (rescaled to keep its mean over the day), ``q_i`` the
   customer's activity profile shrunk towards the segment's with ``activity_strength`` pseudo
   events. ``activity_weight`` is tuned on the backtest: whether shopping hours say anything about
   email hours is an empirical question (in the synthetic store they do not; it finds ~0).
4. **Posterior curve.** The customer's sends and opens are smoothed across neighbouring hours
   (circular Gaussian kernel of ``bandwidth_hours``, mass preserving; 0 = none) and combined with
   the prior curve as ``(opens~ + prior_strength x prior) / (sends~ + prior_strength)``, the
   posterior mean of a Beta prior worth ``prior_strength`` pseudo-sends in each hour. One send
   barely moves the curve; dozens move its peak to the customer's own.
5. **Day types** (``by_day_type``): the weekday and the weekend curve each get the prior
   ``level_i x segment curve of that day type`` (tilted as above) and the customer's evidence of
   that day type, plus their evidence of the *other* day type counted with weight
   ``day_type_pooling``. With weight 1 the two curves share all the customer's evidence and differ
   only by the segment's day-type prior; with 0 they are independent; in between a customer with
   few weekend sends inherits their weekday shape. Weekend =
   local Saturday and Sunday. Whether separate curves are worth it, and how much they pool, is
   decided by the backtest (:func:`tune_send_time`).

Cold starts (no sends) get the prior, tilted by their activity if any. A store without any email
data (e.g. only orders, like UCI Online Retail) gets recommendations from activity: each
customer's activity profile shrunk towards their segment's, and the "expected rate" is then the
share of the customer's activity in that hour. ``signal`` says which evidence decided a
customer's curve: ``'email'`` (they have sends), ``'activity'`` (no sends, but their sessions /
orders shaped it: always in an activity-only store, and in an email store only when
``activity_weight > 0``), ``'prior'`` (nothing of their own).

Quiet hours ``(start, end)`` are local hours ``start <= h < end`` read around midnight: the
default ``(23, 6)`` is 23:00-05:59; ``None`` means no quiet hours. Hours with less than 0.1 % of
the store's sends have no send history: their email curve is the prior's guess, so they are not
allowed either (in an activity-only store every hour is). The best hour is the allowed hour with
the highest posterior (ties go to the hour nearest the default send hour); the
runner-up is the best allowed hour at least 2 h away from it on the 24-hour circle (hours
adjacent to the best are nearly the same recommendation), missing when there is none.

Tuning objective
----------------
The decision is the argmax hour, and held-out log loss is not aligned with it: it scores
calibration at every hour a send went out and prefers little shrinkage (``prior_strength`` ~0.7 on
the synthetic store), whose argmax suffers from the winner's curse (1-2 points of the oracle's open
rate below the default config). The policy value scores the decision itself: each send before
``as_of`` falls in one of ``policy_folds`` random folds, is scored against a fit on the other folds,
and counts when it went out exactly at the hour recommended for its customer; counted sends are
weighted by the inverse share of the store's sends at their local hour (self-normalised inverse
propensity). Where send hours vary independently of the customer's curve (an A/B test of send
hours) this is an off-policy estimate of the open rate of sending at the recommended hours. All
sends, not only the last ``holdout_days``, are used because the estimate is noisy (only ~1/17 of
sends land on the recommended hour); the exact hour, not +/-1 h, because on the synthetic store the
+/-1 h window consistently preferred too little shrinkage. ``objective='auto'`` uses it when at
least :data:`POLICY_MIN_HOURS` allowed local hours hold :data:`POLICY_MIN_HOUR_SHARE` of the sends
each (with fewer hours there is nothing to choose between, and the few sends at a recommended hour
make the estimate noise), else the log loss; activity-only stores have no opens and always use their
activity log loss. The backtest's ``objective`` (lower is better) is ``1 / policy_lift`` or the log loss.

Evaluation (:class:`SendTimeFamily`): the last ``holdout_days`` before the run date are the test
window. Tuning runs on the backtest as of the window's start, so neither its fits, its held-out
window nor its policy folds touch the test window; the chosen configuration, the champion's and the
no-hour-preference baseline are then fitted on everything before the window and scored on its sends
with the log loss (the gate's metric: the policy value is too thin on 28 days, see the class).
Where history allows, a rolling-origin backtest repeats tuning and test as of the run date moved back
``holdout_days`` at a time (``backtest_origins``, :mod:`ml.families.rolling_origin`; it stops at the
first origin the shortfall refuses) and logs the test log loss, the baseline's and the lift near the
best hour per origin with their mean and spread. Earlier origins tune with a quarter of ``n_trials``
(at least 2; the params ``backtest_earlier_*``): full re-tuning at two earlier origins tripled the
family's (one-second) training time on the demo store, this budget adds about 0.5 s (docs/send_time.md).

Why hand-written: the model is a few array operations (kernel smoothing is a 24 x 24 matrix
product, the shrinkage closed-form posterior means), vectorised over customers; no library fits
per-customer circular hour curves with hierarchical priors at 1M customers a night.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from features.customer import customer_sampler
from features.engagement import (
    CUSTOMERS,
    DAY_TYPES,
    ENGAGEMENT,
    ENGAGEMENT_COLUMNS,
    LOCAL_ENGAGEMENT,
    ORDER_COLUMNS,
    ORDERS,
    engagement_input,
    local_time,
    resolve_timezones,
    split_engagement_input,
    within_lookback,
)
from ml.families.send_time.backtest import (
    SIMPLICITY_MARGIN,
    Backtest,
    held_out_predictions,
    held_out_rows,
    held_out_scores,
    holdout_start,
    log_loss,
    log_loss_terms,
    log_progress,
    no_hour_preference,
    prepare_backtest,
    search_space,
    send_time_backtest,
    training_data_shortfall,
    tune_send_time,
)
from ml.families.send_time.config import (
    ANY_DAY,
    GLOBAL_SEGMENT,
    HOURS,
    OBJECTIVES,
    POLICY_MIN_HOUR_SHARE,
    POLICY_MIN_HOURS,
    RUNNER_UP_MIN_DISTANCE,
    SIGNALS,
    SendTimeConfig,
    _as_of,
    quiet_hours,
    quiet_mask,
)
from ml.families.send_time.estimator import SendTimeFit, fit_send_time, priors_frame
from ml.families.send_time.model import PREDICT_PARAMS, SendTimeModel
from ml.families.send_time.recommender import (
    PUBLISHED_COLUMNS,
    RECOMMENDATION_COLUMNS,
    prior_recommendations,
    recommend_send_times,
)
from ml.evaluation import Evaluation, Metric, summarise_backtest
from ml.families.rolling_origin import backtest_params, earlier_origin_params, earlier_origins
from ml.family import DataWindow, Frames, Trained, config_from_spec, config_spec, dated_window
from ml.params import RunParams
from ml.tuning import Budget, Callback, Tuned, search
from revopt.platform.timezones import FALLBACK_TIMEZONE

logger = logging.getLogger(__name__)


MODEL_NAME = "revopt_send_time"
#: the tuned fields of :class:`SendTimeConfig`, logged as ``best_<field>`` params
TUNED_FIELDS: tuple[str, ...] = ("prior_strength", "level_strength", "bandwidth_hours", "activity_weight",
                                 "activity_strength", "by_day_type", "day_type_pooling")
#: customers in the logged input example (their rows of the nightly input)
EXAMPLE_CUSTOMERS = 5
#: Test metrics summarised over the rolling-origin backtest's origins (``backtest_<metric>_origin<k>``;
#: ``lift_near_best`` only where the store sends email)
BACKTEST_METRICS = ("log_loss", "baseline_log_loss", "lift_near_best")


def send_time_config(params: RunParams) -> SendTimeConfig:
    """The run's default configuration: its quiet hours, default send hour and seed."""
    return SendTimeConfig(quiet_hours=quiet_hours(params.send_quiet_start, params.send_quiet_end),
                          default_send_hour=params.default_send_hour, random_state=params.seed)


@dataclass(frozen=True)
class SendTimeData:
    """What training and the gate read: the extract's engagement, orders and customers within the
    nightly window, the run date, the run's default configuration, and ``earlier``: the same as of each
    earlier origin of the rolling-origin backtest history allows (:mod:`ml.families.rolling_origin`)."""

    engagement: pd.DataFrame
    orders: pd.DataFrame
    customers: pd.DataFrame
    run_date: dt.date
    config: SendTimeConfig
    earlier: tuple[SendTimeData, ...] = ()

    @property
    def as_of(self) -> pd.Timestamp:
        return _as_of(self.run_date)


class SendTimeFamily:
    """Send time as a :class:`ml.family.Family`, evaluated on a three-way split in time.

    - **test window**: the last ``holdout_days`` before the run date;
    - **selection**: :func:`search_space` tunes the configuration on the backtest as of the test
      window's start (:func:`holdout_start`): it fits before ``run date - 2 x holdout_days``, scores
      the ``holdout_days`` after, and cross-fits its policy value over the sends before the test
      window; nothing it sees lies in the test window;
    - **test** (``Trained.test``): the chosen configuration fitted on everything before the test
      window, scored on the test window's sends; the naive baseline (``Trained.baseline``, no hour
      preference: :func:`no_hour_preference`) and the champion's configuration (:meth:`evaluate`) are
      fitted on the same data and scored on the same rows;
    - **rolling-origin backtest**: where history allows, selection and test are repeated as of the run
      date moved back ``holdout_days`` each (``backtest_origins``; :mod:`ml.families.rolling_origin`,
      earlier origins with a smaller tuning budget), for the mean and spread of the test metrics.

    The gate's metric is ``log_loss`` (:func:`log_loss`, lower is better, the margin a share of the
    champion's), the mean Bernoulli log loss of the test window's opens per send at the send's local
    hour (without email data, the categorical log loss of the sessions / orders there). Not the tuning
    objective ``1 / policy_lift``: that is a ratio of sums over the sends at each customer's
    recommended hour, about 1 in 17 of the sends, so on a 28-day window it is too noisy to decide
    on; it needs sends at 3 or more hours and does not exist in activity-only stores. The log loss is
    a sum over rows (each row one customer and hour: the paired bootstrap resamples customers), exists
    for every store the family trains on, and scores the curves the recommended hours are the argmax
    of and whose values are published as expected rates. The tuning's numbers are logged as
    ``valid_*``, the test window's as ``test_*``, the baseline's as ``baseline_log_loss`` and the
    rolling-origin backtest's as ``backtest_<metric>_origin<k>`` / ``_mean`` / ``_std``.

    The registered model (:class:`SendTimeModel`) is the configuration: its ``predict`` refits every
    customer's curves on tonight's history, the test window included (as the production fit logged
    with it does).
    """

    name = "send_time"
    model_name = MODEL_NAME
    training_datasets: tuple[str, ...] = (ENGAGEMENT, ORDERS, CUSTOMERS)
    # at night the engagement summed to the model's cells in the events store (the same cube, far fewer rows)
    nightly_datasets: tuple[str, ...] = (LOCAL_ENGAGEMENT, ORDERS, CUSTOMERS)
    metric = Metric("log_loss", higher_is_better=False, relative_margin=True, score=log_loss, terms=log_loss_terms)
    description = ("Each customer's best hour to receive an email (and the expected open rate there), from their "
                   "opens, sessions and orders by local hour, pooled with their segment's curve where they have "
                   "little history: published as scores.send_time_recommendations.")

    def shortfall(self, frames: Frames, run_date: dt.date, params: RunParams) -> str | None:
        """:func:`training_data_shortfall` on the nightly window of ``frames`` (the hourly engagement of
        training, or at night its cells, which keep the days of its windows apart: the same answer)."""
        frames = within_lookback(frames, run_date, params.lookback_days)
        return training_data_shortfall(_engagement(frames), frames[ORDERS], frames[CUSTOMERS], _as_of(run_date),
                                       send_time_config(params))

    def training_data(self, frames: Frames, run_date: dt.date, params: RunParams) -> SendTimeData:
        """The nightly window's frames as of ``run_date`` and, for the rolling-origin backtest, as of
        each earlier origin (``holdout_days`` earlier each) whose history passes :meth:`shortfall`; all of
        them of the ``training_sample_customers`` sample (:func:`training_sample`)."""
        config = send_time_config(params)
        frames = training_sample(frames, params)

        def as_of(date: dt.date) -> SendTimeData:
            window = within_lookback(frames, date, params.lookback_days)
            end = _as_of(date)  # an earlier origin keeps nothing after its own run date (every step ignores it)
            return SendTimeData(window[ENGAGEMENT].loc[lambda f: f["hour_utc"] < end],
                                window[ORDERS].loc[lambda f: f["order_ts"] < end], window[CUSTOMERS], date, config)

        origins = earlier_origins(self.name, run_date, config.holdout_days, params,
                                  lambda origin: self.shortfall(frames, origin, params))
        data = as_of(run_date)
        return dataclasses.replace(data, earlier=tuple(as_of(origin) for origin in origins))

    def train(self, data: SendTimeData, params: RunParams, callbacks: Sequence[Callback]) -> Trained:
        """Tune on the backtest before the test window, score the chosen configuration and the
        no-hour-preference baseline on the test window, fit every customer's curves with the chosen
        configuration on all history, and return the model with the priors, the recommended-hour
        figure and the backtest and test metrics."""
        from ml import plots  # matplotlib: only training draws (the registered model imports this package)

        config, run_date = data.config, data.run_date
        test_start = holdout_start(data.as_of, config)
        tested = _select_and_test(data, params, [log_progress, *callbacks])
        tuned, test, baseline, test_scores = tested.tuned, tested.test, tested.baseline, tested.scores
        earlier = [_select_and_test(origin, earlier_origin_params(params)) for origin in data.earlier]
        latest = tested.backtest_metrics()
        backtest = summarise_backtest([latest, *(origin.backtest_metrics() for origin in earlier)],
                                      [key for key in BACKTEST_METRICS if key in latest])
        spec = config_spec(self.name, tuned.config)
        config_json = spec["config"]
        fit = fit_send_time(data.engagement, data.orders, data.customers, data.as_of, tuned.config)
        recommendations = recommend_send_times(fit)
        model = SendTimeModel(tuned.config, run_date.isoformat(), fit.priors)
        example = self._example(data)
        predict_params = self.predict_params(run_date, params)
        return Trained(
            model=model, spec=spec, test=test, baseline=baseline, example=example,
            predict_params=predict_params,
            # (the runner logs run_date, n_trials, timeout_seconds, seed, promotion_margin and promotion_alpha)
            params={"holdout_days": config.holdout_days, "test_start": test_start.date().isoformat(),
                    "quiet_hours": str(config.quiet_hours), "default_send_hour": config.default_send_hour,
                    "training_sample_customers": params.training_sample_customers, "n_customers": len(data.customers),
                    **backtest_params(params, 1 + len(data.earlier), config.holdout_days),
                    **{f"best_{key}": value for key, value in config_json.items() if key in TUNED_FIELDS}},
            # tuning's objective is 1 / policy lift when send hours vary enough to estimate it, else the log loss
            metrics={"valid_objective": tuned.value, "valid_objective_default": tuned.default_value,
                     **{f"valid_{key}": value for key, value in tuned.metrics.items() if key != "objective"},
                     **_test_metrics(test_scores), "test_log_loss": test.value(self.metric),
                     "baseline_log_loss": baseline.value(self.metric),
                     **{key: float(value) for key, value in fit.params.items() if isinstance(value, (int, float))},
                     **backtest},
            tables={"send_time_priors.json": fit.priors},
            figures={"send_times.png": plots.send_time_figure(fit.priors, recommendations, f"send times as of {run_date}",
                                                              quiet_hours=tuned.config.quiet_hours)},
            windows=_windows(data, params),
            checks={"customers' recommended hours and rates": recommendations[["best_hour", "expected_rate_best"]],
                    "recommendations for the input example":
                        model.predict(None, example, predict_params)[["best_hour", "expected_rate_best"]]},
        )

    def evaluate(self, data: SendTimeData, spec: Mapping[str, Any], params: RunParams) -> Evaluation | None:
        """The configuration in ``spec`` (a champion's) fitted on the data before this run's test window
        and scored on its rows, exactly as :meth:`train` scores the candidate (``Trained.test``); None
        when the spec is another family's or its configuration cannot be rebuilt by this version."""
        config = config_from_spec(self.name, spec, SendTimeConfig)
        if config is None:
            return None
        return _test_evaluation(_test_backtest(data, config), config, "champion")

    def nightly_input(self, frames: Frames, run_date: dt.date, params: RunParams) -> pd.DataFrame:
        """The customers, engagement and orders of the nightly window as one frame
        (:func:`features.engagement.engagement_input`)."""
        frames = within_lookback(frames, run_date, params.lookback_days)
        return _input(_engagement(frames), frames[ORDERS], frames[CUSTOMERS], send_time_config(params))

    def nightly_predict(self, model: SendTimeModel, frames: Frames, run_date: dt.date, params: RunParams) -> pd.DataFrame:
        """What the champion's pyfunc ``predict`` returns on :meth:`nightly_input` (:meth:`SendTimeModel.recommend`,
        tested equal), without building that one long frame: at a million customers it and MLflow's checked copy
        of it are ~5 GB of a task's 8 (docs/scale.md)."""
        frames = within_lookback(frames, run_date, params.lookback_days)
        config = send_time_config(params)
        columns = ["customer_id", "timezone", *([config.segment_column] if config.segment_column is not None else [])]
        missing = [c for c in columns if c not in frames[CUSTOMERS].columns]
        if missing:
            raise ValueError(f"customers is missing column(s) {missing}; it has {list(frames[CUSTOMERS].columns)}")
        return model.recommend(_engagement(frames), frames[ORDERS], frames[CUSTOMERS][columns],
                               self.predict_params(run_date, params))

    def predict_params(self, run_date: dt.date, params: RunParams) -> dict[str, Any]:
        """The run date and this run's quiet hours and default send hour (see :class:`SendTimeModel`)."""
        return {"as_of": run_date.isoformat(), "send_quiet_start": params.send_quiet_start,
                "send_quiet_end": params.send_quiet_end, "default_send_hour": params.default_send_hour}

    @staticmethod
    def _example(data: SendTimeData) -> pd.DataFrame:
        """The nightly input of the first :data:`EXAMPLE_CUSTOMERS` customers (the logged input example)."""
        ids = data.customers["customer_id"].head(EXAMPLE_CUSTOMERS)
        return _input(data.engagement[data.engagement["customer_id"].isin(ids)], data.orders[data.orders["customer_id"].isin(ids)],
                      data.customers[data.customers["customer_id"].isin(ids)], data.config)


def training_sample(frames: Frames, params: RunParams) -> dict[str, pd.DataFrame]:
    """The training frames (hourly engagement, orders, customers) of the ``training_sample_customers`` sample of
    the customers alone (:func:`features.customer.customer_sampler`: the customer models' seeded sample). The
    training extract already holds only their hourly engagement (46M rows for everyone at a million customers,
    docs/scale.md); tuning, the test window and the logged priors are theirs, and the registered model refits
    every customer at night all the same."""
    frames = {name: frames[name] for name in (ENGAGEMENT, ORDERS, CUSTOMERS)}
    chosen = customer_sampler(params.training_sample_customers, params.seed)(frames[CUSTOMERS]["customer_id"])
    if chosen is None:
        return frames
    logger.info("send_time: training and testing on a sample of %d of %d customers (training_sample_customers)",
                len(chosen), len(frames[CUSTOMERS]))
    return {name: frame.loc[frame["customer_id"].isin(chosen)] for name, frame in frames.items()}


def _engagement(frames: Frames) -> pd.DataFrame:
    """The hourly engagement where the extract has it (training), else its cells (the nightly extract)."""
    return frames[ENGAGEMENT] if ENGAGEMENT in frames else frames[LOCAL_ENGAGEMENT]


def _input(engagement: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame, config: SendTimeConfig) -> pd.DataFrame:
    segments = (config.segment_column,) if config.segment_column is not None else ()
    return engagement_input(engagement, orders, customers, customer_columns=("timezone", *segments))


@dataclass(frozen=True)
class _Tested:
    """Selection and test of one origin: the search on the backtest before its test window, the chosen
    configuration and the baseline scored on the test window, and the chosen one's test-window scores."""

    tuned: Tuned[SendTimeConfig]
    test: Evaluation
    baseline: Evaluation
    scores: Mapping[str, float]

    def backtest_metrics(self) -> dict[str, float]:
        """The test window's :data:`BACKTEST_METRICS` (``lift_near_best`` only with email data)."""
        metric = SendTimeFamily.metric
        return {metric.name: self.test.value(metric), f"baseline_{metric.name}": self.baseline.value(metric),
                **{key: self.scores[key] for key in ("lift_near_best",) if key in self.scores}}


def _select_and_test(data: SendTimeData, params: RunParams, callbacks: Sequence[Callback] = ()) -> _Tested:
    """Tune on the backtest as of the test window's start (:func:`holdout_start`), then fit the chosen
    configuration, and the no-hour-preference baseline, before the test window and score them on it."""
    config = data.config
    backtest = prepare_backtest(data.engagement, data.orders, data.customers, holdout_start(data.as_of, config), config)
    tuned = search(search_space(backtest, config), Budget(params.n_trials, params.tuning_timeout_seconds, params.seed),
                   callbacks)
    test_backtest = _test_backtest(data, tuned.config)
    test = _test_evaluation(test_backtest, tuned.config, "candidate")
    baseline = dataclasses.replace(test, name="no-hour-preference baseline",
                                   predicted=no_hour_preference(test_backtest, config.level_strength))
    # log loss of the global curve, lift near the best hour, ...
    return _Tested(tuned, test, baseline, held_out_scores(test_backtest, tuned.config))


def _test_backtest(data: SendTimeData, config: SendTimeConfig) -> Backtest:
    """The run's test window as a backtest for ``config``: its rows before the window are what the
    model is fitted on, the window's rows what it is scored on. The window is the run's
    (``data.config.holdout_days``), whatever the scored configuration's own ``holdout_days``."""
    window = dataclasses.replace(config, holdout_days=data.config.holdout_days)
    return prepare_backtest(data.engagement, data.orders, data.customers, data.as_of, window)


def _test_evaluation(backtest: Backtest, config: SendTimeConfig, name: str) -> Evaluation:
    """``config`` fitted before the test window, read at each test row (:func:`held_out_rows`), the
    rows grouped by customer (a customer's sends share their level and curve)."""
    y, customer_id = held_out_rows(backtest)
    what = "sends" if backtest.train.sends.sum() > 0 else "sessions and orders"
    start, end = backtest.split.date(), backtest.as_of.date()
    window = f"{what} in [{start}, {end}), customers' curves fitted on the history before {start}"
    return Evaluation(name, y, held_out_predictions(backtest, config), window=window, groups=customer_id)


def _windows(data: SendTimeData, params: RunParams) -> dict[str, DataWindow]:
    """The engagement (sends, opens, sessions and orders per customer and hour) of each window: the
    search fits before ``run date - 2 x holdout_days`` (``train``) and scores the ``holdout_days`` after
    (``validation``); the chosen configuration is scored on the last ``holdout_days`` (``test``)."""
    test_start = holdout_start(data.as_of, data.config)
    valid_start = test_start - pd.Timedelta(days=data.config.holdout_days)
    hours = data.engagement["hour_utc"]
    first = data.as_of - pd.Timedelta(days=params.lookback_days)
    last = data.as_of - pd.Timedelta(days=1)
    what = "engagement per customer and hour"
    return {"train": dated_window(data.engagement[hours < valid_start], "hour_utc", f"{what} the search fits on",
                                  start=first, end=valid_start - pd.Timedelta(days=1)),
            "validation": dated_window(data.engagement[(hours >= valid_start) & (hours < test_start)], "hour_utc",
                                       f"{what}: the search's held-out {data.config.holdout_days} days",
                                       start=valid_start, end=test_start - pd.Timedelta(days=1)),
            "test": dated_window(data.engagement[hours >= test_start], "hour_utc",
                                 f"{what}: the test window, the last {data.config.holdout_days} days",
                                 start=test_start, end=last)}


def _test_metrics(scores: Mapping[str, float]) -> dict[str, float]:
    """The test window's diagnostics as ``test_*`` metrics (``holdout_sends`` -> ``test_sends``)."""
    skipped = {"log_loss", "objective", "objective_is_policy", "policy_hours", "email_evidence"}
    return {f"test_{key.removeprefix('holdout_')}": float(value) for key, value in scores.items() if key not in skipped}


FAMILY = SendTimeFamily()

__all__ = [
    "ANY_DAY", "BACKTEST_METRICS", "DAY_TYPES", "ENGAGEMENT_COLUMNS", "EXAMPLE_CUSTOMERS", "FALLBACK_TIMEZONE", "FAMILY", "GLOBAL_SEGMENT",
    "HOURS", "MODEL_NAME", "OBJECTIVES", "ORDER_COLUMNS", "POLICY_MIN_HOURS", "POLICY_MIN_HOUR_SHARE", "PREDICT_PARAMS",
    "PUBLISHED_COLUMNS", "RECOMMENDATION_COLUMNS", "RUNNER_UP_MIN_DISTANCE", "SIGNALS", "SIMPLICITY_MARGIN",
    "SendTimeConfig", "SendTimeData", "SendTimeFamily", "SendTimeFit", "SendTimeModel", "TUNED_FIELDS",
    "engagement_input", "fit_send_time", "holdout_start", "local_time", "log_loss", "no_hour_preference",
    "prior_recommendations", "priors_frame", "quiet_hours", "quiet_mask", "recommend_send_times", "resolve_timezones",
    "search_space", "send_time_backtest", "send_time_config", "split_engagement_input", "training_data_shortfall",
    "training_sample", "tune_send_time",
]
