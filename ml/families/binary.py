"""A calibrated binary classifier of customers, as a family: purchase propensity and churn are two
instances (:mod:`ml.families.propensity`, :mod:`ml.families.churn`) that differ only in their labelled
set, horizon, population and naive baseline.

Training at run date D with horizon h, three ways in time (:func:`features.customer.evaluation_cutoffs`):

- **selection** sees only the customers of the fit cutoff ``D - 2h`` (labels end at ``D - h``), split
  into training and validation customers (:func:`features.customer.selection_split`): Optuna picks the
  estimator family and hyperparameters with early stopping on the validation customers
  (:func:`ml.families.classifier.tune`), and the calibration method is chosen on them (cross-fitted);
- **test**: the chosen spec is refitted on all customers of the fit cutoff and scores the customers of
  the test cutoff ``D - h``, whose labels ``[D - h, D)`` no selection step has seen. The gate compares
  its raw ROC AUC (DeLong, paired) with the family's naive baseline (recency) and with the champion's
  spec refitted the same way (:meth:`BinaryFamily.evaluate`), on the same rows; every reported
  ``test_*`` metric is this model's, calibration cross-fitted over the test rows;
- **published**: that same model, with the chosen calibration fitted on its scores of the test window
  (rows it did not train on). The discriminating model is thus exactly the one the test window
  measured; it is one horizon older than a refit on the latest labels would be, the price of
  measuring what is published;
- **backtest**: where history allows, selection and test are repeated one horizon earlier each
  (``backtest_origins``), for the mean and spread of every test metric over origins.

**BG/NBD features.** Besides the customer features, every model sees two columns derived by a BG/NBD
model (:mod:`ml.families.clv.btyd`) fitted on the customers of the fit cutoff, on their history before
it and no label (:class:`BtydFeatures`): the expected completed orders in the family's horizon and the
probability of still being active. The parametric model pools every customer's purchase rhythm, which
a tree ensemble fitted on a few thousand customers learns poorly from recency and frequency alone
(measured on UCI Online Retail, docs/customer_models.md). The published model carries the fitted
parameters and derives the columns from tonight's features itself, so its input stays the customer
features. Where BG/NBD cannot be fitted (too few repeat buyers) the models do without the two columns,
and a champion's spec says which it used.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from features.customer import (
    EVENT_FEATURES_AT_CUTOFFS, FEATURE_COLUMNS, LabelledSet, active_mask, describe_test_window, evaluation_cutoffs,
    population, purchase_label, sampled, selection_split,
)
from ml import plots
from ml.evaluation import ROC_AUC, Evaluation, Metric, summarise_backtest
from ml.families.clv.btyd import BtydParams, btyd_expected_purchases, btyd_inputs, btyd_p_alive, fit_btyd
from ml.families.classifier import (
    ESTIMATORS, MIN_PER_LABEL, CalibratedModel, ModelSpec, calibrate, choose_calibration, evaluate, label_shortfall,
    refit, tune,
)
from ml.families.importance import importance_sample
from ml.families.rolling_origin import backtest_params, earlier_origin_params
from ml.family import DataWindow, Frames, Trained, customer_window, require_finite
from ml.params import RunParams
from ml.tuning import Budget, Callback

logger = logging.getLogger(__name__)

CUSTOMER_DATASETS = ("customers", "orders", "order_categories")
#: Fewest customers of each label at the fit cutoff: selection holds out ``VALIDATION_SHARE`` of them
#: (stratified), so its validation customers hold about five of each at this minimum.
MIN_FIT_PER_LABEL = 2 * MIN_PER_LABEL
#: The calibrations the published model chooses from. Never "none": it is applied one horizon after
#: the data it was fitted on, so its level is always re-fitted on the latest labelled window (a store's
#: rate moves with the season); the choice is Platt scaling or isotonic, on the validation customers.
RECALIBRATIONS = ("sigmoid", "isotonic")
#: Test metrics summarised over the backtest's origins.
BACKTEST_METRICS = ("roc_auc", "pr_auc", "lift_top_decile", "calibration_error", "baseline_roc_auc")
#: The columns :class:`BtydFeatures` adds to the customer features.
BTYD_FEATURES = ("btyd_expected_purchases", "btyd_p_alive")


@dataclass(frozen=True)
class BtydFeatures:
    """A BG/NBD model of the customers of one cutoff (their history before it, no label) and the
    horizon it looks over: :meth:`transform` adds :data:`BTYD_FEATURES` to any customer features frame
    (the expected completed orders in the next ``horizon_days`` and the probability of being alive),
    with the parameters fixed, so a later frame is scored by the same model."""

    params: BtydParams
    horizon_days: int

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        summary = btyd_inputs(X)
        expected = btyd_expected_purchases(self.params, summary, self.horizon_days)
        alive = btyd_p_alive(self.params, summary)
        return X.assign(btyd_expected_purchases=np.nan_to_num(np.clip(expected, 0.0, None), nan=0.0, posinf=0.0),
                        btyd_p_alive=np.nan_to_num(np.clip(alive, 0.0, 1.0), nan=1.0))


#: A purchase-rate shape ``r`` or scale ``alpha`` outside this range means the optimiser ran off to a
#: boundary: the data do not identify the model, so its columns would be noise. (Very large ``a`` and
#: ``b`` are a legitimate fit: the same dropout probability for every customer.)
_PLAUSIBLE = (1e-6, 1e6)


def fit_btyd_features(X: pd.DataFrame, horizon_days: int, where: str) -> BtydFeatures | None:
    """:class:`BtydFeatures` fitted on the customer features ``X`` of one cutoff (``where`` names it in
    the log), or None, with the reason logged, when BG/NBD cannot be fitted on them."""
    try:
        params = fit_btyd(X)
    except (ValueError, ArithmeticError, RuntimeError) as error:
        logger.info("BG/NBD features left out for %s: %s", where, error)
        return None
    if not (all(_PLAUSIBLE[0] < value < _PLAUSIBLE[1] for value in (params.r, params.alpha))
            and all(np.isfinite(value) and value > 0 for value in (params.a, params.b))):
        logger.info("BG/NBD features left out for %s: the fit ran to the edge of the parameter space (%s)", where, params)
        return None
    return BtydFeatures(params, int(horizon_days))


def with_btyd(X: pd.DataFrame, btyd: BtydFeatures | None) -> pd.DataFrame:
    """``X`` with the BG/NBD columns when there is a BG/NBD model, else ``X`` itself."""
    return X if btyd is None else btyd.transform(X)


class CalibratedClassifierModel(mlflow.pyfunc.PythonModel):
    """The pyfunc: the calibrated probability of the positive class for each row of a customer
    features frame (:data:`features.customer.FEATURE_COLUMNS`; other columns are ignored)."""

    #: the BG/NBD columns' model (None: the classifier uses the customer features alone; also the value
    #: of versions pickled before the columns existed)
    btyd: BtydFeatures | None = None

    def __init__(self, model: CalibratedModel, btyd: BtydFeatures | None = None) -> None:
        self.model = model
        self.btyd = btyd

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        return self.model.predict_proba(with_btyd(model_input, self.btyd))

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        """Per-feature log-odds contributions (the published top factors)."""
        return self.explained(features)[0]

    def explained(self, features: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The contributions and the values they explain: the features with the BG/NBD columns, derived once."""
        values = with_btyd(features, self.btyd)
        return self.model.contributions(values), values


@dataclass(frozen=True)
class BinaryData:
    """The labelled sets of one training run: ``fit`` (selection and fitting) and ``test`` (the test
    window), and ``earlier``: the (fit, test) pairs of the backtest's earlier origins history allows."""

    run_date: dt.date
    horizon: int
    fit: LabelledSet
    test: LabelledSet
    earlier: tuple[tuple[LabelledSet, LabelledSet], ...] = ()
    #: the BG/NBD models fitted so far (training and the champion's re-scoring share them), see
    #: :meth:`BinaryFamily.design`
    btyd_fits: dict[int, tuple[LabelledSet, BtydFeatures | None]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def window(self) -> str:
        return describe_test_window(self.fit, self.test, self.horizon)


@dataclass(frozen=True)
class Selected:
    """What selection on the fit cutoff's customers chose: the spec and the calibration method."""

    spec: ModelSpec
    calibration: str
    best_by_family: dict[str, float]
    best_value: float
    calibration_losses: dict[str, float]
    n_train: int
    n_valid: int


@dataclass(frozen=True)
class BinaryFamily:
    """A binary customer family. ``labelled_set(frames, cutoff, params)`` builds its features and labels
    at a cutoff; ``horizon(params)`` is its label window; ``active_days(params)`` (churn) restricts the
    population to customers active before the cutoff; ``label_names`` name the two labels in reasons;
    ``baseline`` scores a features frame with the family's naive baseline (``baseline_name``);
    ``features`` are the columns its models use (a champion that used others is refitted on its own, as
    long as the labelled sets hold them)."""

    name: str
    model_name: str
    horizon: Callable[[RunParams], int]
    labelled_set: Callable[[Frames, pd.Timestamp, RunParams], LabelledSet]
    label_names: tuple[str, str]
    baseline: Callable[[pd.DataFrame], np.ndarray]
    baseline_name: str
    active_days: Callable[[RunParams], int] | None = None
    features: tuple[str, ...] = FEATURE_COLUMNS
    metric: Metric = ROC_AUC
    training_datasets: tuple[str, ...] = (*CUSTOMER_DATASETS, EVENT_FEATURES_AT_CUTOFFS)
    nightly_datasets: tuple[str, ...] = (*CUSTOMER_DATASETS, "customer_event_features")
    #: what the family predicts, in a paragraph (the registered model's description)
    description: str = ""

    def shortfall(self, frames: Frames, run_date: dt.date, params: RunParams) -> str | None:
        """Too few customers of either label at the fit or test cutoff, counted from the customers and
        orders alone (the nightly extract has no daily events): the test window needs
        ``MIN_PER_LABEL`` of each, the fit cutoff twice as many (:data:`MIN_FIT_PER_LABEL`: its
        validation customers then hold a handful of each)."""
        horizon = self.horizon(params)
        fit_labels, test_labels = self._label_sets(frames, run_date, params)
        names = (self.label_names[0].format(horizon=horizon), self.label_names[1])
        reason = (label_shortfall(fit_labels, MIN_FIT_PER_LABEL, names)
                  or label_shortfall(test_labels, MIN_PER_LABEL, names))
        if reason is None:
            return None
        population_note = "" if self.active_days is None else (
            f", among customers active in the {self.active_days(params)} days before each cutoff")
        return f"{self.name.replace('_', ' ')} for {run_date}: {reason}{population_note} (shop.customers, shop.orders)"

    def _label_sets(self, frames: Frames, run_date: dt.date, params: RunParams,
                    origin: int = 0) -> tuple[dict[str, pd.Series], dict[str, pd.Series]]:
        """The fit and test cutoffs' 0/1 labels, each as ``{"<role> at <cutoff>": labels}``; for churn,
        active customers only and 1 for no completed order in the horizon."""
        customers, orders = frames["customers"], frames["orders"]
        completed = orders[orders["status"] == "completed"]
        horizon = self.horizon(params)
        label_sets = []
        for role, cutoff in zip(("fitting set", "test window"), evaluation_cutoffs(run_date, horizon, origin)):
            ids = population(customers, cutoff)
            if self.active_days is not None:
                since = cutoff - pd.Timedelta(days=min(self.active_days(params), params.lookback_days))
                recent = completed[(completed["order_ts"] >= since) & (completed["order_ts"] < cutoff)]
                ids = ids[ids.isin(recent["customer_id"])]
            bought = purchase_label(ids, orders, cutoff, horizon)
            label_sets.append({f"{role} at {cutoff.date()}": bought if self.active_days is None else 1 - bought})
        return label_sets[0], label_sets[1]

    def training_cutoffs(self, frames: Frames, run_date: dt.date, params: RunParams) -> list[pd.Timestamp]:
        """Every cutoff :meth:`training_data` may build customer features at: the fit and test cutoffs of
        each backtest origin (the training extract computes the event features at these,
        :mod:`ml.training_cutoffs`)."""
        return [cutoff for pair in self._origin_cutoffs(run_date, params) for cutoff in pair]

    def _origin_cutoffs(self, run_date: dt.date, params: RunParams) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
        """(fit cutoff, test cutoff) of origins 0 .. ``backtest_origins - 1``."""
        return [evaluation_cutoffs(run_date, self.horizon(params), origin) for origin in range(params.backtest_origins)]

    def training_data(self, frames: Frames, run_date: dt.date, params: RunParams) -> BinaryData:
        """The labelled sets at every origin's cutoffs; each fit set is the ``training_sample_customers``
        sample of its customers (:func:`features.customer.sample_customers`: selection and fitting see only
        them), each test set holds every customer of its window (the gate's test is on the whole window).
        Each cutoff's set is built once: origin k's fit cutoff is origin k + 1's test cutoff, and at a million
        customers one cutoff's features take ~15 s (docs/scale.md, "Session 29")."""
        horizon = self.horizon(params)
        labelled_at = functools.cache(lambda cutoff: self.labelled_set(frames, cutoff, params))
        (fit_cutoff, test_cutoff), *origins = self._origin_cutoffs(run_date, params)
        earlier = []
        first_order = frames["orders"]["order_ts"].min()
        for origin, (origin_fit, origin_test) in enumerate(origins, start=1):
            fit_labels, test_labels = self._label_sets(frames, run_date, params, origin)
            # an origin needs a horizon of history before its fit cutoff and both labels at both cutoffs
            if (pd.isna(first_order) or first_order > origin_fit - pd.Timedelta(days=horizon)
                    or label_shortfall(fit_labels, MIN_FIT_PER_LABEL)
                    or label_shortfall(test_labels)):
                logger.info("%s backtest for %s: history allows %d origin(s) (origin %d would fit at %s)", self.name,
                            run_date, origin, origin, origin_fit.date())
                break
            earlier.append((self._fit_set(labelled_at(origin_fit), params), labelled_at(origin_test)))
        return BinaryData(run_date, horizon, self._fit_set(labelled_at(fit_cutoff), params), labelled_at(test_cutoff),
                          tuple(earlier))

    def _fit_set(self, fit: LabelledSet, params: RunParams) -> LabelledSet:
        """The ``training_sample_customers`` sample of the customers of one fit cutoff."""
        sample = sampled(fit, params.training_sample_customers, params.seed)
        if len(sample.y) < len(fit.y):
            logger.info("%s at %s: fitting on a sample of %d of %d customers (training_sample_customers)", self.name,
                        fit.cutoff.date(), len(sample.y), len(fit.y))
        return sample

    def select(self, fit: LabelledSet, params: RunParams, run_date: dt.date, study_name: str,
               callbacks: Sequence[Callback] = (), features: Sequence[str] | None = None) -> Selected:
        """Selection on the fit cutoff's customers alone: estimator and hyperparameters tuned on its
        training customers with early stopping on its validation customers, and the calibration method
        whose cross-fitted log loss on the validation customers is lowest. ``features``: the columns of
        ``fit.X`` the models use (default: the family's)."""
        seed = params.seed
        columns = list(self.features if features is None else features)
        train, valid = selection_split(LabelledSet(fit.cutoff, fit.X[columns], fit.y), seed)
        refits: dict = {}  # the blends' member refits on the training customers, reused for the chosen spec
        result = tune(train.X, train.y, valid.X, valid.y, Budget(params.n_trials, params.tuning_timeout_seconds, seed),
                      study_name=study_name, callbacks=callbacks, refits=refits)
        chosen = refit(result.best, train.X, train.y, seed, refits)
        raw = chosen.predict_proba(valid.X)
        require_finite(self.name, self.model_name, run_date,
                       f"validation predictions of the chosen spec (fit cutoff {fit.cutoff.date()})", raw)
        calibrator, _, losses = choose_calibration(raw, valid.y, seed, methods=RECALIBRATIONS)
        return Selected(result.best, calibrator.method, result.best_by_family, result.best_value, losses,
                        len(train.y), len(valid.y))

    def design(self, fit: LabelledSet, test: LabelledSet, horizon: int, features: Sequence[str] | None = None,
               fits: dict[int, tuple[LabelledSet, BtydFeatures | None]] | None = None,
               ) -> tuple[LabelledSet, LabelledSet, BtydFeatures | None, list[str]]:
        """The fit and test sets as the models see them: with the BG/NBD columns of a model fitted on
        the fit cutoff's customers, unless ``features`` (a spec's) leave them out or it cannot be
        fitted; and the feature columns the models use. ``fits`` keeps the BG/NBD model fitted on each fit
        set (:attr:`BinaryData.btyd_fits`, by identity, the set held so its id stays its own), so it is
        fitted once per training run."""
        wanted = list(self.features) + list(BTYD_FEATURES) if features is None else list(features)
        btyd = None
        if set(BTYD_FEATURES) & set(wanted):
            fits = {} if fits is None else fits
            if id(fit) not in fits:
                fits[id(fit)] = (fit, fit_btyd_features(fit.X, horizon, f"{self.name} at {fit.cutoff.date()}"))
            btyd = fits[id(fit)][1]
        if btyd is None:
            if features is not None and set(BTYD_FEATURES) & set(wanted):
                raise ValueError(f"{self.name}: the spec uses {', '.join(BTYD_FEATURES)}, which cannot be fitted "
                                 f"on the customers of {fit.cutoff.date()}")
            wanted = [column for column in wanted if column not in BTYD_FEATURES]
        return (LabelledSet(fit.cutoff, with_btyd(fit.X, btyd), fit.y),
                LabelledSet(test.cutoff, with_btyd(test.X, btyd), test.y), btyd, wanted)

    def train(self, data: BinaryData, params: RunParams, callbacks: Sequence[Callback]) -> Trained:
        run_date, seed = data.run_date, params.seed
        fit, test, btyd, features = self.design(data.fit, data.test, data.horizon, fits=data.btyd_fits)
        selected = self.select(fit, params, run_date, f"{self.name}-{run_date}", callbacks, features)
        model = refit(selected.spec, fit.X[features], fit.y, seed)
        raw = model.predict_proba(test.X)
        require_finite(self.name, self.model_name, run_date, "test-window predictions", raw)
        calibrator, calibrated = calibrate(selected.calibration, raw, test.y, seed)
        final = CalibratedClassifierModel(
            CalibratedModel(model, calibrator, {"family": self.name, "run_date": run_date.isoformat()}), btyd)
        metrics = evaluate(test.y, calibrated)
        metrics["roc_auc"] = float(ROC_AUC.score(test.y.to_numpy(), raw))  # the gate's: raw scores, before calibration
        baseline = self.baseline_evaluation(test, data.window)
        backtest = self._backtest(data, params, metrics, baseline.value(self.metric))
        # TreeSHAP over a sample of the test window's customers (all of them when it holds fewer): at a million
        # customers the whole window would cost minutes for a plot and a logged mean
        explained = importance_sample(test, params.training_sample_customers, seed)
        importance = model.contributions(explained.X).abs().mean().rename(
            "mean |contribution| on the test window (log-odds)")
        return Trained(
            model=final,
            spec={**selected.spec.to_json_dict(), "features": features},
            test=Evaluation("candidate", test.y.to_numpy(), raw, data.window),
            baseline=baseline,
            example=data.test.X.head(5),
            params={
                "horizon_days": data.horizon, "families": ",".join(ESTIMATORS),
                "fit_cutoff": fit.cutoff.date().isoformat(), "test_cutoff": test.cutoff.date().isoformat(),
                "n_fit": len(fit.y), "training_sample_customers": params.training_sample_customers,
                "n_selection_train": selected.n_train, "n_selection_valid": selected.n_valid,
                "n_test": len(test.y), "best_family": selected.spec.family, "best_num_rounds": selected.spec.num_rounds,
                "calibration": selected.calibration, "baseline": self.baseline_name,
                **backtest_params(params, 1 + len(data.earlier), data.horizon), "btyd_features": btyd is not None,
                **{f"best_{key}": value for key, value in selected.spec.params.items()},
            },
            metrics={
                **{f"test_{key}": value for key, value in metrics.items()},
                f"baseline_{self.metric.name}": baseline.value(self.metric),
                "valid_roc_auc": selected.best_value,
                **{f"valid_roc_auc_{family}": value for family, value in selected.best_by_family.items()},
                **{f"valid_calibration_log_loss_{method}": value for method, value in selected.calibration_losses.items()},
                **backtest,
                **({} if btyd is None else {f"btyd_{key}": value for key, value in vars(btyd.params).items()}),
            },
            figures=self._figures(importance, test, raw, calibrated),
            windows=self._windows(fit, test, features, data.horizon, params),
            feature_importance=importance,
            # every test customer's raw score was checked above; the published model (the same model, calibrated,
            # its BG/NBD columns computed from the features) on the importance sample: at a million customers the
            # whole window was a second full prediction (44 s of propensity's training, docs/scale.md)
            checks={f"predictions of the published model on {len(explained.y):,} of the test window's customers "
                    f"({test.cutoff.date()})": final.predict(None, data.test.X.loc[explained.X.index])},
            reference_features=data.fit.X,
        )

    def _windows(self, fit: LabelledSet, test: LabelledSet, features: list[str], horizon: int,
                 params: RunParams) -> dict[str, DataWindow]:
        """The data the run saw: the fit cutoff's customers split as selection split them (training and
        validation customers), and the test window's customers, each with the columns the models use."""
        train, valid = selection_split(LabelledSet(fit.cutoff, fit.X[features], fit.y), params.seed)
        lookback = params.lookback_days
        return {"train": customer_window(train.X, train.y, fit.cutoff, horizon, lookback,
                                         "the fit cutoff's training customers"),
                "validation": customer_window(valid.X, valid.y, fit.cutoff, horizon, lookback,
                                              "the fit cutoff's validation customers: selection and calibration"),
                "test": customer_window(test.X[features], test.y, test.cutoff, horizon, lookback,
                                        "the test window's customers")}

    def baseline_evaluation(self, test: LabelledSet, window: str) -> Evaluation:
        return Evaluation(f"{self.baseline_name} baseline", test.y.to_numpy(), self.baseline(test.X), window)

    def evaluate(self, data: BinaryData, spec: Mapping[str, Any], params: RunParams) -> Evaluation | None:
        """The spec refitted on the fit cutoff's customers exactly as the candidate's test model is (on the
        spec's own features), and its raw scores of the test window; None when this version cannot
        rebuild it (no classifier spec, or features the labelled sets do not hold)."""
        features = spec.get("features")
        if "family" not in spec or not features or not set(features) <= set(data.fit.X.columns) | set(BTYD_FEATURES):
            return None
        try:
            fit, test, _, features = self.design(data.fit, data.test, data.horizon, features, data.btyd_fits)
        except ValueError as error:
            logger.info("%s", error)
            return None
        refitted = refit(ModelSpec.from_json_dict(dict(spec)), fit.X[features], fit.y, params.seed)
        return Evaluation("champion", test.y.to_numpy(), refitted.predict_proba(test.X), data.window)

    def _backtest(self, data: BinaryData, params: RunParams, latest: Mapping[str, float],
                  latest_baseline: float) -> dict[str, float]:
        """Test metrics of every origin (the latest first; each earlier one repeats selection on its own
        fit cutoff, with the earlier origins' smaller budget, :func:`ml.families.rolling_origin.earlier_origin_params`)
        as ``backtest_<metric>_origin<k>``, with their mean and standard deviation."""
        per_origin = [{**{key: latest[key] for key in BACKTEST_METRICS if key in latest},
                       "baseline_roc_auc": latest_baseline}]
        for k, (origin_fit, origin_test) in enumerate(data.earlier, start=1):
            fit, test, _, features = self.design(origin_fit, origin_test, data.horizon, fits=data.btyd_fits)
            selected = self.select(fit, earlier_origin_params(params), data.run_date,
                                   f"{self.name}-{data.run_date}-origin{k}", features=features)
            raw = refit(selected.spec, fit.X[features], fit.y, params.seed).predict_proba(test.X)
            _, calibrated = calibrate(selected.calibration, raw, test.y, params.seed)
            metrics = evaluate(test.y, calibrated)
            metrics["roc_auc"] = float(ROC_AUC.score(test.y.to_numpy(), raw))
            metrics["baseline_roc_auc"] = self.baseline_evaluation(test, "").value(self.metric)
            per_origin.append(metrics)
        return summarise_backtest(per_origin, BACKTEST_METRICS)

    def nightly_input(self, frames: Frames, run_date: dt.date, params: RunParams) -> pd.DataFrame:
        """Tonight's customer features (``frames["customer_features"]``), indexed by customer id; for a
        family with a population (churn), its customers only."""
        X = frames["customer_features"].set_index("customer_id")[list(FEATURE_COLUMNS)]
        if self.active_days is None:
            return X
        return X[active_mask(X, self.active_days(params)).to_numpy()]

    def predict_params(self, run_date: dt.date, params: RunParams) -> dict[str, Any]:
        return {}

    def _figures(self, importance: pd.Series, test: LabelledSet, raw: np.ndarray,
                 calibrated: np.ndarray) -> dict[str, Any]:
        title = f"{self.name} test window from {test.cutoff.date()}"
        return {
            "roc_pr.png": plots.roc_pr_figure(test.y, calibrated, title),
            "calibration.png": plots.calibration_figure(test.y, raw, calibrated, title),
            "lift.png": plots.lift_figure(test.y, calibrated, title),
            "feature_importance.png": plots.feature_importance_figure(
                importance, f"{self.name}: mean |contribution| on the test window"),
        }
