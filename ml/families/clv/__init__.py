"""Customer lifetime value over a horizon: completed spend in the next H days.

Two candidates compete, three ways in time like every customer family
(:func:`features.customer.evaluation_cutoffs`): selection on the customers of the fit cutoff ``D - 2H``
only (split into training and validation customers), the gate and every reported ``test_*`` metric on
the test window ``[D - H, D)``, which no selection step has seen. The verbs:

- **training set as of a cutoff**: features from data before cutoff C (:func:`features.customer.
  customer_features`), label = completed spend in ``[C, C + H)`` (:func:`clv_label`);
- **BTYD baseline** (:func:`fit_btyd`): BG/NBD for the number of purchases and Gamma-Gamma for
  their value, from pymc-marketing, fitted by MAP. It is unsupervised: it needs only the features
  at a cutoff, never labels;
- **GBM** (:func:`tune_gbm`, :func:`fit_gbm`): LightGBM on :data:`FEATURE_COLUMNS` predicting the
  horizon spend, tuned with Optuna on the fit cutoff's training customers with early stopping on its
  validation customers;
- **select** (:func:`select_clv_model`): both are scored on the validation customers
  (:func:`evaluate_clv`); the better ``ClvConfig.selection_metric`` (RMSE by default, or Spearman
  rank correlation: the run param ``clv_selection_metric``) wins, ties go to BTYD as the simpler model;
- **test** (:func:`predict_test_window`): the winner refitted on all the fit cutoff's customers (BTYD:
  fitted on the test cutoff's own history, which needs no labels) predicts the test window; the
  gate compares its selection metric (RMSE by default; :data:`GATE_METRICS`, paired bootstrap over
  customers) with "repeat last period" (each customer's spend in the horizon before the test cutoff)
  and with the champion's spec refitted the same way: a store that ranks customers by CLV
  (``clv_selection_metric=spearman``) promotes the model that ranks them best, one that budgets with
  it the one whose spend is closest;
- **fit** the winner for scoring (:func:`fit_final_clv_model`) as a :class:`ClvModel`, an MLflow
  pyfunc that predicts expected spend over H from a features frame: the GBM refitted on the latest
  labelled cutoff ``D - H`` (its ``training_sample_customers`` sample, as every fit here), BTYD on the run
  date's history.

BTYD conventions (pymc-marketing, time unit = days, see :func:`btyd_inputs`): ``frequency`` is the
number of *repeat* purchases, ``recency`` the age of the customer at the last purchase, ``T`` the
age at the cutoff, both measured from the first purchase. Customers who never bought have no first
purchase; they are scored as if signup were it (frequency 0, recency 0, T = tenure). The BG/NBD
then gives them a purchase rate that shrinks with every day they stay silent (with no purchase a
BG/NBD customer cannot have dropped out, only be slow), and the Gamma-Gamma population mean for
spend. They are left out of the *fit*, because the BG/NBD likelihood would read their signup as a
purchase.

Why the closed-form BG/NBD and Gamma-Gamma expectations are written out here
(:func:`btyd_expected_spend`) instead of calling pymc-marketing at scoring time: the scoring model
must unpickle and predict in an environment with only numpy / scipy / pandas / lightgbm (the
project's pyfunc requirements), without importing pymc (seconds) or rebuilding a PyMC graph for
every batch, and pymc-marketing's ``expected_purchases`` needs a ``customer_id`` column and a built
model. The formulas are the ones pymc-marketing itself uses (Fader, Hardie & Lee 2005, eq. 10;
Fader & Hardie 2013, eq. 5); the unit tests check them against ``BetaGeoModel.expected_purchases``
and ``GammaGammaModel.expected_customer_spend`` to 1e-6 relative. Fitting uses pymc-marketing.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from features.customer import (
    EVENT_FEATURES_AT_CUTOFFS, FEATURE_COLUMNS, LabelledSet, clv_label, describe_test_window, evaluation_cutoffs,
    features_at, population, sampled, selection_split, spend_set,
)
from ml import plots
from ml.evaluation import (Evaluation, Metric, absolute_errors, mae, rmse, spearman, squared_errors,
                           summarise_backtest)
from ml.families.rolling_origin import backtest_params, earlier_origin_params
from ml.family import Frames, Trained, customer_window, require_finite
from ml.families.clv.btyd import (
    MIN_BTYD_CUSTOMERS, BtydParams, btyd_expected_order_value, btyd_expected_purchases, btyd_expected_spend,
    btyd_inputs, btyd_p_alive, fit_btyd,
)
from ml.families.clv.gbm import _base_params, _design, feature_matrix, fit_gbm, tune_gbm
from ml.families.clv.metrics import evaluate_clv, value_tier
from ml.families.clv.model import BTYD, GBM, ClvModel
from ml.families.importance import importance_sample
from ml.gate import beats
from ml.params import RunParams
from ml.tuning import Budget, Callback

logger = logging.getLogger(__name__)

MODEL_NAME = "revopt_customer_clv"
CANDIDATES: tuple[str, ...] = (BTYD, GBM)
#: Metrics that can pick the winner, and whether higher is better.
SELECTION_METRICS: dict[str, bool] = {"mae": False, "rmse": False, "spearman": True}
#: What the promotion gate compares for each ``clv_selection_metric``: errors with a margin relative to
#: the champion's, rank correlation with a margin in points.
GATE_METRICS: dict[str, Metric] = {
    "rmse": Metric("rmse", higher_is_better=False, relative_margin=True, score=rmse, terms=squared_errors,
                   finish=math.sqrt),
    "mae": Metric("mae", higher_is_better=False, relative_margin=True, score=mae, terms=absolute_errors),
    "spearman": Metric("spearman", higher_is_better=True, relative_margin=False, score=spearman),
}


@dataclass(frozen=True)
class ClvConfig:
    horizon_days: int = 90
    n_trials: int = 10
    timeout_seconds: float = 120.0
    random_state: int = 42
    # Holdout metric that picks the winner (one of SELECTION_METRICS). RMSE, because the forecast
    # is an expected spend: MAE is minimised by the median, which is 0 for most customers.
    selection_metric: str = "rmse"
    # The label window models are fitted and tested on (days); None: the horizon. Shorter when the
    # store's history cannot hold two label windows of the horizon (:func:`label_window`).
    label_days: int | None = None

    @property
    def window(self) -> int:
        """Days of the label windows (fit and test); the published horizon is ``horizon_days``."""
        return self.label_days or self.horizon_days


@dataclass(frozen=True)
class ClvSelection:
    """Both candidates scored on the validation cutoff, and the winner.

    ``specs`` holds each candidate's JSON-serialisable specification (see :func:`candidate_spec`),
    ``validation_predictions`` each candidate's expected spend, indexed like the validation label.
    """

    metrics: dict[str, dict[str, float]]
    winner: str
    specs: dict[str, dict[str, Any]]
    validation_predictions: dict[str, pd.Series]
    fit_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def spec(self) -> dict[str, Any]:
        """The winner's specification."""
        return self.specs[self.winner]


def training_data_shortfall(customers: pd.DataFrame, orders: pd.DataFrame, run_date: Any, horizon_days: int,
                            lookback_days: int | None = None) -> str | None:
    """Why the store cannot train the CLV candidates as of ``run_date`` (None when it can): BTYD is
    fitted on the customers of the fit cutoff ``D - 2H`` (selection) and of the test cutoff ``D - H``
    and needs :data:`MIN_BTYD_CUSTOMERS` buyers and as many repeat buyers with positive spend in the
    ``lookback_days`` before each; the GBM needs some spend in the ``horizon_days`` after each cutoff.
    Counts come from the customers and completed orders alone, so the nightly run can ask the same
    question. The reason names the cutoff, run date and tables."""
    fit_cutoff, test_cutoff = evaluation_cutoffs(run_date, horizon_days)
    for role, cutoff in (("fit", fit_cutoff), ("test", test_cutoff)):
        since = cutoff - pd.Timedelta(days=lookback_days) if lookback_days is not None else orders["order_ts"].min()
        past = orders[(orders["status"] == "completed") & (orders["order_ts"] < cutoff) & (orders["order_ts"] >= since)
                      & orders["customer_id"].isin(population(customers, cutoff))]
        per_customer = past.groupby("customer_id")["order_value"].agg(["size", "sum"])
        buyers, repeaters = len(per_customer), int(((per_customer["size"] > 1) & (per_customer["sum"] > 0)).sum())
        if min(buyers, repeaters) < MIN_BTYD_CUSTOMERS:
            return (f"{buyers} buyers and {repeaters} repeat buyers before the CLV {role} cutoff {cutoff.date()} "
                    f"(run date {pd.Timestamp(run_date).date()}, horizon {horizon_days} days): too few for the BTYD "
                    f"model (needs >= {MIN_BTYD_CUSTOMERS} of each; shop.customers / shop.orders)")
        if not (clv_label(population(customers, cutoff), orders, cutoff, horizon_days) > 0).any():
            return (f"no customer of the CLV {role} cutoff {cutoff.date()} spent in the {horizon_days} days after it "
                    f"(run date {pd.Timestamp(run_date).date()}): nothing to learn (shop.orders)")
    return None


# --- selection ----------------------------------------------------------------------------------


def select_clv_model(
    train_features: pd.DataFrame,
    train_label: pd.Series,
    valid_features: pd.DataFrame,
    valid_label: pd.Series,
    config: ClvConfig,
    callbacks: Sequence[Callback] = (),
    btyd_features: pd.DataFrame | None = None,
) -> ClvSelection:
    """Fit both candidates and pick the one with the better validation ``config.selection_metric``
    (RMSE by default); the GBM must be strictly better, so ties go to BTYD, the simpler model. A
    non-finite metric (a candidate predicting NaN or inf) loses to a finite one.

    BTYD is fitted on ``btyd_features`` (default ``valid_features``; it needs no labels, so all the
    customers of the cutoff) and predicts the validation customers; the GBM is tuned on
    ``train_features`` / ``train_label`` with early stopping on the validation set. Both are then scored
    on ``valid_label``. These validation metrics choose; they are not the model's test numbers (the
    same labels chose the GBM's hyperparameters and round count).
    ``callbacks`` go to Optuna's ``study.optimize`` (e.g. one logging nested MLflow runs).

    Features are indexed by customer id (:func:`training_set`) or carry a ``customer_id`` column
    (:func:`features.customer.customer_features`); labels are indexed by customer id.
    """
    if config.selection_metric not in SELECTION_METRICS:
        raise ValueError(f"selection_metric must be one of {SELECTION_METRICS}, got {config.selection_metric!r}")
    X_valid, y_valid = _design(valid_features, valid_label, "validation")  # fail before any fitting
    predictions, specs, seconds = {}, {}, {}

    started = time.perf_counter()
    btyd_params = fit_btyd(valid_features if btyd_features is None else btyd_features)
    predictions[BTYD] = btyd_expected_spend(btyd_params, valid_features, config.window)
    specs[BTYD] = candidate_spec(BTYD, config, btyd_params=btyd_params)
    seconds[BTYD] = time.perf_counter() - started

    started = time.perf_counter()
    tuned = tune_gbm(train_features, train_label, valid_features, valid_label,
                     Budget(config.n_trials, config.timeout_seconds, config.random_state), callbacks)
    if tuned is not None:  # the chosen trial's booster: fit_gbm of its spec on the training customers
        params, num_rounds, booster = dict(tuned[0]), tuned[1], tuned[2]
        predictions[GBM] = booster.predict(X_valid, num_iteration=num_rounds)
    else:  # every trial's validation RMSE was non-finite: the GBM has no score and cannot win
        params, num_rounds = {}, 1
        predictions[GBM] = np.full(len(y_valid), np.nan)
    specs[GBM] = candidate_spec(GBM, config, gbm_params=params, num_rounds=num_rounds)
    seconds[GBM] = time.perf_counter() - started

    metrics = {name: evaluate_clv(y_valid, predicted) for name, predicted in predictions.items()}
    metric = config.selection_metric
    # a non-finite validation metric loses (a NaN compares False, so plain "<" would hand BTYD the win)
    winner = GBM if beats(metrics[GBM][metric], metrics[BTYD][metric],
                          higher_is_better=SELECTION_METRICS[metric]) else BTYD
    logger.info(
        "CLV selection on %d validation customers by %s: BTYD %.3f, GBM %.3f -> %s",
        len(y_valid), metric, metrics[BTYD][metric], metrics[GBM][metric], winner,
    )
    return ClvSelection(
        metrics=metrics,
        winner=winner,
        specs=specs,
        validation_predictions={
            name: pd.Series(predicted, index=X_valid.index, name=name) for name, predicted in predictions.items()
        },
        fit_seconds=seconds,
    )


def candidate_spec(
    name: str,
    config: ClvConfig,
    *,
    btyd_params: BtydParams | None = None,
    gbm_params: dict[str, object] | None = None,
    num_rounds: int | None = None,
) -> dict[str, Any]:
    """JSON-serialisable description of a candidate: enough to refit it (GBM: params and rounds;
    BTYD: its fitted parameters, informative only, since refitting BTYD needs no spec)."""
    spec: dict[str, Any] = {"model": name, "horizon_days": config.horizon_days, "features": list(FEATURE_COLUMNS)}
    if name == BTYD:
        spec["params"] = {key: float(value) for key, value in asdict(btyd_params).items()}
    elif name == GBM:
        spec["params"] = {**_base_params(config.random_state), **gbm_params}
        spec["num_rounds"] = int(num_rounds)
    else:
        raise ValueError(f"unknown CLV candidate {name!r}; expected one of {CANDIDATES}")
    return spec


def predict_test_window(spec: Mapping[str, Any], fit: LabelledSet, test_features: pd.DataFrame,
                     config: ClvConfig) -> np.ndarray:
    """A specification fitted as the test window's model and its predictions for the test customers:
    the GBM refitted on all the fit cutoff's customers; BTYD fitted on the test customers' own history
    (before the test cutoff: it needs no labels). The candidate and a champion are fitted the same way."""
    if spec["model"] == BTYD:
        return btyd_expected_spend(fit_btyd(test_features), test_features, config.window)
    if spec["model"] == GBM:
        booster = fit_gbm(fit.X, fit.y, dict(spec["params"]), int(spec["num_rounds"]), config.random_state)
        return booster.predict(feature_matrix(test_features))
    raise ValueError(f"unknown CLV candidate {spec['model']!r}; expected one of {CANDIDATES}")


def last_period_spend(customer_ids: pd.Index, orders: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> np.ndarray:
    """The "repeat last period" baseline: each customer's completed spend in the ``horizon_days`` before
    ``cutoff``, as the forecast of the ``horizon_days`` after it."""
    start = cutoff - pd.Timedelta(days=horizon_days)
    return clv_label(customer_ids, orders, start, horizon_days).to_numpy()


def fit_final_clv_model(
    selection: ClvSelection,
    features_at_latest_cutoff: pd.DataFrame,
    label: pd.Series,
    config: ClvConfig,
    btyd_fit_features: pd.DataFrame | None = None,
) -> ClvModel:
    """Refit the winner for scoring.

    GBM: the winning params and round count on the latest labelled cutoff (``D - H`` features and
    their labels). BTYD: refitted on ``btyd_fit_features``, the features as of the run date (it is
    unsupervised, so it can use all history up to D); required when BTYD won.
    """
    spec = selection.spec
    if selection.winner == GBM:
        booster = fit_gbm(features_at_latest_cutoff, label, spec["params"], int(spec["num_rounds"]), config.random_state)
        # fitted on label windows of config.window days: its spend is scaled to the horizon
        return ClvModel(GBM, config.horizon_days, booster=booster, scale=config.horizon_days / config.window)
    if btyd_fit_features is None:
        raise ValueError("BTYD won the selection: pass btyd_fit_features (the features as of the run date)")
    return ClvModel(BTYD, config.horizon_days, btyd_params=fit_btyd(btyd_fit_features))


#: Test metrics summarised over the backtest's origins.
BACKTEST_METRICS = ("rmse", "spearman", "top_decile_capture")
#: The shortest label window a CLV model is fitted on (days).
MIN_LABEL_DAYS = 7


def label_window(orders: pd.DataFrame, run_date: Any, horizon_days: int) -> tuple[int, str | None]:
    """The label window (days) the CLV models are fitted and tested on, and a note when it is shorter
    than the horizon H. Fitting and testing need two label windows before the run date, and the fit
    cutoff as much history before it as a window is long: 3 windows in all. A store whose completed
    orders span less than 3H days gets the longest window that fits (at least :data:`MIN_LABEL_DAYS`);
    the GBM's spend is then scaled by H / window and BTYD, which needs no label window, predicts H."""
    run_ts = pd.Timestamp(run_date, tz="UTC") if pd.Timestamp(run_date).tzinfo is None else pd.Timestamp(run_date)
    completed = orders.loc[(orders["status"] == "completed") & (orders["order_ts"] < run_ts), "order_ts"]
    if completed.empty:
        return horizon_days, None
    history = (run_ts - completed.min()).days
    window = min(horizon_days, history // 3)
    if window >= horizon_days or window < MIN_LABEL_DAYS:
        return horizon_days, None  # the horizon fits, or nothing shorter does either (the shortfall says why)
    fit_cutoff, test_cutoff = evaluation_cutoffs(run_date, window)
    return window, (f"CLV horizon {horizon_days} days is longer than this store's history allows (first completed "
                    f"order {completed.min().date()}, run date {run_ts.date()}: {history} days, 3 label windows "
                    f"needed): models are fitted on {window}-day label windows (fit cutoff {fit_cutoff.date()}, test "
                    f"cutoff {test_cutoff.date()}), tested on {window} days, and the published GBM spend is scaled by "
                    f"{horizon_days}/{window}; BTYD predicts {horizon_days} days directly")


# --- the family ---------------------------------------------------------------------------------


def _fit_set(fit: LabelledSet, params: RunParams) -> LabelledSet:
    """The spend set at a fit cutoff, restricted to the ``training_sample_customers`` sample."""
    sample = sampled(fit, params.training_sample_customers, params.seed)
    if len(sample.y) < len(fit.y):
        logger.info("clv at %s: fitting on a sample of %d of %d customers (training_sample_customers)",
                    fit.cutoff.date(), len(sample.y), len(fit.y))
    return sample


@dataclass
class ClvData:
    run_date: dt.date
    config: ClvConfig
    fit: LabelledSet  # selection and the test window's model
    test: LabelledSet  # the test window
    features_now: pd.DataFrame  # features as of the run date: BTYD's final fit
    baseline: np.ndarray  # "repeat last period" for the test customers
    # BTYD fitted on the test customers' history is the same model whoever asks (no labels, no
    # hyperparameters): the candidate's test predictions are kept for a BTYD champion's gate.
    btyd_test_predictions: np.ndarray | None = None
    note: str | None = None  # set when the label windows are shorter than the horizon (:func:`label_window`)
    # the backtest's earlier origins history allows: (fit, test, repeat-last-period of the test customers)
    earlier: tuple[tuple[LabelledSet, LabelledSet, np.ndarray], ...] = ()

    @property
    def window(self) -> str:
        return describe_test_window(self.fit, self.test, self.config.window)


@dataclass(frozen=True)
class ClvFamily:
    name: str = "clv"
    model_name: str = MODEL_NAME
    training_datasets: tuple[str, ...] = ("customers", "orders", "order_categories", EVENT_FEATURES_AT_CUTOFFS)
    nightly_datasets: tuple[str, ...] = ("customers", "orders", "order_categories", "customer_event_features")
    # the gate's default metric: test-window RMSE (lower is better; paired bootstrap over customers), the
    # margin a share of the champion's error; a run's clv_selection_metric replaces it (Trained.metric)
    metric: Metric = GATE_METRICS["rmse"]
    description: str = ("Each customer's completed spend over the next clv_horizon_days (default 365), from their "
                        "customer features as of the run date: a BTYD model (BG/NBD with Gamma-Gamma) or a gradient-"
                        "boosted model of log spend, chosen per run on validation customers; published as "
                        "customer_scores.clv.")

    @staticmethod
    def config(params: RunParams, label_days: int | None = None) -> ClvConfig:
        return ClvConfig(horizon_days=params.clv_horizon_days, n_trials=params.n_trials,
                         timeout_seconds=params.tuning_timeout_seconds, random_state=params.seed,
                         selection_metric=params.clv_selection_metric, label_days=label_days)

    def shortfall(self, frames: Frames, run_date: dt.date, params: RunParams) -> str | None:
        window, _ = label_window(frames["orders"], run_date, params.clv_horizon_days)
        return training_data_shortfall(frames["customers"], frames["orders"], run_date, window, params.lookback_days)

    def training_cutoffs(self, frames: Frames, run_date: dt.date, params: RunParams) -> list[pd.Timestamp]:
        """Every cutoff :meth:`training_data` may build customer features at: each origin's fit and test
        cutoffs for the store's label window (:func:`label_window`), and the run date (BTYD's final fit)."""
        window, _ = label_window(frames["orders"], run_date, params.clv_horizon_days)
        return [*(cutoff for pair in self._origin_cutoffs(run_date, window, params) for cutoff in pair),
                pd.Timestamp(run_date, tz="UTC")]

    @staticmethod
    def _origin_cutoffs(run_date: dt.date, window: int, params: RunParams) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """(fit cutoff, test cutoff) of origins 0 .. ``backtest_origins - 1`` for ``window``-day labels."""
        return [evaluation_cutoffs(run_date, window, origin) for origin in range(params.backtest_origins)]

    def training_data(self, frames: Frames, run_date: dt.date, params: RunParams) -> ClvData:
        """The labelled sets at every origin's cutoffs; each fit set is the ``training_sample_customers``
        sample of its customers (:func:`features.customer.sample_customers`), each test set and the run
        date's features hold every customer. Each cutoff's set is built once: origin k's fit cutoff is origin
        k + 1's test cutoff, and at a million customers one cutoff's features take ~12 s (docs/scale.md, "Session
        29")."""
        window, note = label_window(frames["orders"], run_date, params.clv_horizon_days)
        spend_at = functools.cache(lambda cutoff: spend_set(frames, cutoff, window, params.lookback_days))
        if note:
            logger.warning("clv for %s: %s", run_date, note)
        config = self.config(params, window if note else None)
        (fit_cutoff, test_cutoff), *origins = self._origin_cutoffs(run_date, window, params)
        earlier = []
        first_order = frames["orders"]["order_ts"].min()
        for origin_fit, origin_test in origins:
            # an origin needs a window of history before its fit cutoff and what BTYD and the GBM need
            if (pd.isna(first_order) or first_order > origin_fit - pd.Timedelta(days=window)
                    or training_data_shortfall(frames["customers"], frames["orders"], (origin_test + pd.Timedelta(days=window)).date(),
                                               window, params.lookback_days)):
                break
            origin_test_set = spend_at(origin_test)
            earlier.append((_fit_set(spend_at(origin_fit), params), origin_test_set,
                            last_period_spend(origin_test_set.X.index, frames["orders"], origin_test, window)))
        test = spend_at(test_cutoff)
        return ClvData(
            run_date, config, _fit_set(spend_at(fit_cutoff), params), test,
            features_at(frames, pd.Timestamp(run_date, tz="UTC"), params.lookback_days),
            last_period_spend(test.X.index, frames["orders"], test_cutoff, window), note=note, earlier=tuple(earlier),
        )

    def _backtest(self, data: ClvData, params: RunParams, latest: Mapping[str, float], latest_baseline: float,
                  gate_metric: Metric) -> dict[str, float]:
        """Test metrics of every origin (the latest first; each earlier one repeats selection on its own
        fit cutoff, with the earlier origins' smaller budget) as ``backtest_<metric>_origin<k>``, with their
        mean and standard deviation, and the baseline's gate metric (``baseline_<gate metric>``)."""
        key = f"baseline_{gate_metric.name}"
        per_origin = [{**{name: latest[name] for name in BACKTEST_METRICS if name in latest}, key: latest_baseline}]
        earlier = earlier_origin_params(params)  # the earlier origins' smaller budget (ml.families.rolling_origin)
        config = replace(data.config, n_trials=earlier.n_trials, timeout_seconds=earlier.tuning_timeout_seconds)
        for fit, test, baseline in data.earlier:
            train, valid = selection_split(fit, config.random_state)
            selection = select_clv_model(train.X, train.y, valid.X, valid.y, config, btyd_features=fit.X)
            metrics = evaluate_clv(test.y, predict_test_window(selection.spec, fit, test.X, config))
            per_origin.append({**metrics, key: gate_metric.score(test.y.to_numpy(), baseline)})
        return summarise_backtest(per_origin, (*BACKTEST_METRICS, key))

    def train(self, data: ClvData, params: RunParams, callbacks: Sequence[Callback]) -> Trained:
        """Select between BTYD and GBM on the fit cutoff's customers (:func:`select_clv_model`), test the
        winner on the test window (:func:`predict_test_window`), refit it for scoring
        (:func:`fit_final_clv_model`)."""
        config, fit, test, run_date = data.config, data.fit, data.test, data.run_date
        metric = config.selection_metric
        train, valid = selection_split(fit, config.random_state)
        selection = select_clv_model(train.X, train.y, valid.X, valid.y, config, callbacks=callbacks,
                                     btyd_features=fit.X)
        logger.info("clv selection: %s wins by %s; %s", selection.winner, metric, selection.metrics)
        predicted = predict_test_window(selection.spec, fit, test.X, config)
        require_finite(self.name, self.model_name, run_date, f"test-window predictions of the winner ({selection.winner})",
                       predicted)
        if selection.winner == BTYD:
            data.btyd_test_predictions = predicted
        test_metrics = evaluate_clv(test.y, predicted)
        gate_metric = GATE_METRICS[metric]
        baseline = Evaluation("repeat-last-period baseline", test.y.to_numpy(), data.baseline, data.window)
        # the published GBM learns from the latest labelled window's ``training_sample_customers`` sample, as every
        # fit of the customer families does (all of them: 292 s of CLV's training at a million customers)
        latest = sampled(test, params.training_sample_customers, params.seed)
        final = fit_final_clv_model(selection, latest.X, latest.y, config, btyd_fit_features=data.features_now)
        # TreeSHAP over the sample of the test window's customers (all of them when it holds fewer), as the binary
        # families: at a million customers the whole window cost minutes for a plot and a logged mean
        contributions = final.contributions(importance_sample(test, params.training_sample_customers, params.seed).X)
        importance = None if contributions is None else contributions.abs().mean().rename(
            "mean |contribution| on the test window (log spend)")
        lookback = params.lookback_days
        return Trained(
            model=final,
            spec=selection.spec,
            test=Evaluation("candidate", test.y.to_numpy(), predicted, data.window),
            baseline=baseline,
            example=test.X.head(5),
            tags={} if data.note is None else {"revopt.clv.label_window": data.note},
            params={"horizon_days": config.horizon_days, "label_window_days": config.window, "selection_metric": metric,
                    **backtest_params(params, 1 + len(data.earlier), config.window),
                    "fit_cutoff": fit.cutoff.date().isoformat(), "test_cutoff": test.cutoff.date().isoformat(),
                    "n_fit": len(fit.y), "n_selection_train": len(train.y), "n_selection_valid": len(valid.y),
                    "n_test": len(test.y), "n_final_fit": len(latest.y), "winner": selection.winner,
                    "baseline": "repeat last period"},
            metrics={**{f"valid_{candidate}_{key}": value for candidate, values in selection.metrics.items()
                        for key, value in values.items()},
                     **{f"test_{key}": value for key, value in test_metrics.items()},
                     **self._backtest(data, params, test_metrics, baseline.value(gate_metric), gate_metric),
                     **{f"baseline_{key}": value for key, value in evaluate_clv(test.y, data.baseline).items()}},
            figures=self._figures(selection, test, predicted, importance),
            windows={"train": customer_window(train.X, train.y, fit.cutoff, config.window, lookback,
                                              "the fit cutoff's training customers; label: completed spend"),
                     "validation": customer_window(valid.X, valid.y, fit.cutoff, config.window, lookback,
                                                   "the fit cutoff's validation customers: BTYD vs GBM"),
                     "test": customer_window(test.X, test.y, test.cutoff, config.window, lookback,
                                             "the test window's customers; label: completed spend")},
            feature_importance=importance,
            checks={f"predictions of the final {selection.winner} model on the run date's customers":
                    final.predict(None, data.features_now)},
            metric=gate_metric,
        )

    def evaluate(self, data: ClvData, spec: Mapping[str, Any], params: RunParams) -> Evaluation | None:
        if spec.get("features") != list(data.test.X.columns) or spec.get("horizon_days") != data.config.horizon_days:
            return None
        if spec.get("model") == BTYD and data.btyd_test_predictions is not None:
            predicted = data.btyd_test_predictions
        else:
            predicted = predict_test_window(spec, data.fit, data.test.X, data.config)
        return Evaluation("champion", data.test.y.to_numpy(), predicted, data.window)

    def nightly_input(self, frames: Frames, run_date: dt.date, params: RunParams) -> pd.DataFrame:
        return frames["customer_features"].set_index("customer_id")[list(FEATURE_COLUMNS)]

    def predict_params(self, run_date: dt.date, params: RunParams) -> dict[str, Any]:
        return {}

    @staticmethod
    def _figures(selection: ClvSelection, test: LabelledSet, predicted: np.ndarray,
                 importance: pd.Series | None) -> dict[str, Any]:
        figures = {
            "predicted_vs_actual.png": plots.predicted_vs_actual_figure(
                test.y, {selection.winner: predicted},
                f"CLV test window from {test.cutoff.date()} (winner: {selection.winner})",
            )
        }
        if importance is not None:
            figures["feature_importance.png"] = plots.feature_importance_figure(
                importance, "clv: mean |contribution| on the test window (log spend)")
        return figures


FAMILY = ClvFamily()


__all__ = [
    "BTYD", "CANDIDATES", "FAMILY", "GATE_METRICS", "GBM", "MIN_BTYD_CUSTOMERS", "MODEL_NAME", "SELECTION_METRICS", "BtydParams",
    "ClvConfig", "ClvData", "ClvFamily", "ClvModel", "ClvSelection", "btyd_expected_order_value",
    "btyd_expected_purchases", "btyd_expected_spend", "btyd_inputs", "btyd_p_alive", "candidate_spec", "evaluate_clv", "fit_btyd",
    "MIN_LABEL_DAYS", "fit_final_clv_model", "fit_gbm", "label_window", "last_period_spend", "select_clv_model", "predict_test_window",
    "training_data_shortfall",
    "tune_gbm", "value_tier",
]
