"""Binary classifiers shared by purchase propensity and churn: candidates, tuning, calibration,
metrics and native TreeSHAP explanations.

Candidates are LightGBM, XGBoost, CatBoost and a logistic-regression baseline. One Optuna study
searches the family and its hyperparameters together (a conditional search space), bounded by
trials and seconds; every trial fits on the training cutoff and is scored by ROC AUC on the
validation cutoff, with early stopping on the validation fold for the boosters.

The calibration method is chosen on the validation fold: ``none``, ``sigmoid`` (Platt scaling on
the log-odds) or ``isotonic``, whichever gives the lowest log loss when cross-fitted over two
stratified halves of it (:func:`choose_calibration`). The published model's calibrator is that method
fitted on the published model's own scores of rows it did not train on (:func:`calibrate`: the test
window, ``ml.families.binary``), and the calibration reported for it is cross-fitted there, so no
prediction is scored by a calibrator that saw its own label.

Explanations are each family's own additive contributions in log-odds: LightGBM's
``pred_contrib`` values (computed by :mod:`ml.families.treeshap`), XGBoost ``pred_contribs``, CatBoost ``ShapValues`` (all TreeSHAP), and for the
logistic baseline the exact linear SHAP values ``coef * (x - mean)`` on the standardised inputs;
:mod:`ml.families.explain` turns them into the published top factors.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd
import xgboost as xgb
from catboost import CatBoostClassifier, Pool
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from ml.families import deadline as deadlines
from ml.families import treeshap
from ml.gate import finite_or_nan, rank_key
from ml.tuning import Budget, Callback, Scored, SearchSpace, search

logger = logging.getLogger(__name__)

ESTIMATORS: tuple[str, ...] = ("lightgbm", "xgboost", "catboost", "logistic")
#: The families whose trial model (early-stopped on the validation customers) is the model a refit of its spec
#: (the rounds early stopping chose, no validation set) gives: the same trees or coefficients, bit for bit (tested).
#: A selection keeps their trial models as its refits. CatBoost's trees depend on the number of rounds it is asked
#: for (its random strength decays over them), so every CatBoost fit is asked for the trials' rounds
#: (:data:`_MAX_ROUNDS`) and a refit stops after its spec's: a CatBoost fit asked for only its 162 rounds scored the
#: validation customers up to 0.125 apart from the trial that chose them.
TRIAL_IS_REFIT: frozenset[str] = frozenset({"lightgbm", "xgboost", "catboost", "logistic"})
#: A blend of the best specification of the two or three best estimator families, averaged in log-odds
#: (:func:`tune` scores it beside the trials; it wins only when strictly better on validation).
ENSEMBLE = "ensemble"
CALIBRATIONS: tuple[str, ...] = ("none", "sigmoid", "isotonic")
_MAX_ROUNDS = 1000
_EARLY_STOPPING = 30
_EPS = 1e-6
#: Fewest customers of each label a training or validation set needs: below it the holdout ROC AUC
#: is noise, and the calibration (cross-fitted over two stratified halves) has next to nothing to fit.
MIN_PER_LABEL = 10


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to refit a model: family, hyperparameters and number of boosting rounds."""

    family: str
    params: dict[str, Any]
    num_rounds: int

    def to_json_dict(self) -> dict[str, Any]:
        return {"family": self.family, "params": self.params, "num_rounds": self.num_rounds}

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(family=data["family"], params=dict(data["params"]), num_rounds=int(data["num_rounds"]))


@dataclass
class BinaryModel:
    """A fitted classifier of one family, with probabilities and log-odds contributions."""

    spec: ModelSpec
    estimator: Any
    feature_names: list[str]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        X = X[self.feature_names]
        family = self.spec.family
        if family == ENSEMBLE:
            log_odds = np.mean([_logit(member.predict_proba(X)) for member in self.estimator], axis=0)
            return 1.0 / (1.0 + np.exp(-log_odds))
        if family == "lightgbm":
            return self.estimator.predict(X)
        if family == "xgboost":
            return self.estimator.predict(xgb.DMatrix(X), iteration_range=(0, self.spec.num_rounds))
        if family == "catboost":
            return self.estimator.predict_proba(X)[:, 1]
        # the log-odds summed row by row (numpy), not by BLAS's matrix-vector product: BLAS sums a row in an order
        # that depends on where the row falls in the batch, so a customer scored in a partition of the population
        # got another last bit than scored with everyone (docs/scale.md, partitioned execution)
        transform, scaler, logistic = (step for _, step in self.estimator.steps)
        standardised = np.ascontiguousarray(scaler.transform(transform.transform(X)), dtype=np.float64)
        return expit((standardised * logistic.coef_[0]).sum(axis=1) + logistic.intercept_[0])

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per-row, per-feature contributions to the log-odds (bias column dropped); an ensemble's are
        its members' averaged, as its log-odds are."""
        X = X[self.feature_names]
        family = self.spec.family
        if family == ENSEMBLE:
            return sum(member.contributions(X) for member in self.estimator) / len(self.estimator)
        if family == "lightgbm":
            values = lightgbm_contributions(self.estimator, X.to_numpy(dtype=np.float64))[:, :-1]
        elif family == "xgboost":
            values = xgboost_contributions(self.estimator, X.to_numpy(dtype=np.float64), self.spec.num_rounds)[:, :-1]
        elif family == "catboost":
            values = catboost_contributions(self.estimator, X)[:, :-1]
        else:
            transform, scaler, logistic = (step for _, step in self.estimator.steps)
            standardised = scaler.transform(transform.transform(X))
            values = standardised * logistic.coef_[0]  # scaler centres on the training mean
        return pd.DataFrame(values, index=X.index, columns=self.feature_names)


@dataclass
class Calibrator:
    method: str
    model: Any = None

    def transform(self, probability: np.ndarray) -> np.ndarray:
        if self.method == "none":
            return probability
        if self.method == "sigmoid":
            return self.model.predict_proba(_logit(probability).reshape(-1, 1))[:, 1]
        return self.model.predict(probability)


@dataclass
class CalibratedModel:
    """What scores: a fitted classifier and the calibrator chosen on the validation fold."""

    model: BinaryModel
    calibrator: Calibrator
    metadata: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.clip(self.calibrator.transform(self.model.predict_proba(X)), 0.0, 1.0)

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        return self.model.contributions(X)


@dataclass(frozen=True)
class TuningResult:
    best: ModelSpec
    best_value: float
    n_trials: int
    best_by_family: dict[str, float]


def suggest_spec(trial: optuna.Trial, families: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    family = trial.suggest_categorical("family", list(families))
    if family == "lightgbm":
        params = {
            "learning_rate": trial.suggest_float("lgb_learning_rate", 0.02, 0.2, log=True),
            "num_leaves": trial.suggest_int("lgb_num_leaves", 8, 64, log=True),
            "min_child_samples": trial.suggest_int("lgb_min_child_samples", 10, 200, log=True),
            "feature_fraction": trial.suggest_float("lgb_feature_fraction", 0.6, 1.0),
            "lambda_l2": trial.suggest_float("lgb_lambda_l2", 1e-3, 10.0, log=True),
        }
    elif family == "xgboost":
        params = {
            "eta": trial.suggest_float("xgb_eta", 0.02, 0.2, log=True),
            "max_depth": trial.suggest_int("xgb_max_depth", 2, 8),
            "min_child_weight": trial.suggest_float("xgb_min_child_weight", 1.0, 50.0, log=True),
            "subsample": trial.suggest_float("xgb_subsample", 0.6, 1.0),
            "lambda": trial.suggest_float("xgb_lambda", 1e-3, 10.0, log=True),
        }
    elif family == "catboost":
        params = {
            "learning_rate": trial.suggest_float("cb_learning_rate", 0.03, 0.3, log=True),
            "depth": trial.suggest_int("cb_depth", 3, 8),
            "l2_leaf_reg": trial.suggest_float("cb_l2_leaf_reg", 1.0, 20.0, log=True),
        }
    else:
        params = {"C": trial.suggest_float("lr_C", 1e-3, 10.0, log=True)}
    return family, params


def fit_model(
    family: str,
    params: dict[str, Any],
    X: pd.DataFrame,
    y: pd.Series,
    random_state: int,
    *,
    num_rounds: int | None = None,
    X_valid: pd.DataFrame | None = None,
    y_valid: pd.Series | None = None,
    refits: dict[str, BinaryModel] | None = None,
    deadline: float | None = None,
) -> BinaryModel:
    """Fit one family. With a validation fold, boosters early-stop on it and record their best
    round, and stop at the ``time.monotonic()`` ``deadline`` too (the tuning budget's,
    :mod:`ml.families.deadline`); without one they train exactly ``num_rounds`` rounds. ``refits``: see
    :func:`refit` (an ensemble's members)."""
    features = list(X.columns)
    if family == ENSEMBLE:  # members refitted with the rounds their own early stopping chose
        members = [refit(ModelSpec.from_json_dict(member), X, y, random_state, refits) for member in params["members"]]
        return BinaryModel(ModelSpec(ENSEMBLE, params, 1), members, features)
    early = X_valid is not None and y_valid is not None
    rounds = num_rounds or _MAX_ROUNDS
    if family == "lightgbm":
        base = {"objective": "binary", "metric": "auc", "verbosity": -1, "seed": random_state, "deterministic": True,
                "force_row_wise": True, "num_threads": 2}
        train = lgb.Dataset(X, label=y)
        kwargs: dict[str, Any] = {}
        if early:
            kwargs = {"valid_sets": [lgb.Dataset(X_valid, label=y_valid, reference=train)],
                      "callbacks": [lgb.early_stopping(_EARLY_STOPPING, verbose=False),
                                    *([] if deadline is None else [deadlines.lightgbm_callback(deadline)])]}
        booster = lgb.train({**base, **params}, train, num_boost_round=rounds, **kwargs)
        best = int(booster.best_iteration or rounds) if early else rounds
        return BinaryModel(ModelSpec(family, params, best), booster, features)
    if family == "xgboost":
        base = {"objective": "binary:logistic", "eval_metric": "auc", "seed": random_state, "nthread": 2, "tree_method": "hist"}
        train = xgb.DMatrix(X, label=y)
        kwargs = {}
        if early:
            # early stopping listed before the deadline: XGBoost stops asking after the first callback that says stop
            kwargs = {"evals": [(xgb.DMatrix(X_valid, label=y_valid), "valid")], "verbose_eval": False,
                      "callbacks": [xgb.callback.EarlyStopping(rounds=_EARLY_STOPPING),
                                    *([] if deadline is None else [deadlines.XGBoostDeadline(deadline)])]}
        booster = xgb.train({**base, **params}, train, num_boost_round=rounds, **kwargs)
        best = int(booster.best_iteration) + 1 if early else rounds
        return BinaryModel(ModelSpec(family, params, best), booster, features)
    if family == "catboost":
        # the trials' schedule of rounds, stopped after ``rounds`` (TRIAL_IS_REFIT)
        model = CatBoostClassifier(
            iterations=max(rounds, _MAX_ROUNDS), random_seed=random_state, thread_count=2, verbose=False,
            allow_writing_files=False, eval_metric="AUC", **params,
        )
        stops = [] if rounds >= _MAX_ROUNDS else [_CatBoostRounds(rounds)]
        if early:
            model.fit(X, y, eval_set=(X_valid, y_valid), early_stopping_rounds=_EARLY_STOPPING, use_best_model=True,
                      callbacks=[*stops, *([] if deadline is None else [deadlines.CatBoostDeadline(deadline)])] or None)
            best = int(model.get_best_iteration()) + 1
        else:
            model.fit(X, y, callbacks=stops or None)
            best = rounds
        return BinaryModel(ModelSpec(family, params, best), model, features)
    if family == "logistic":
        pipeline = make_pipeline(
            FunctionTransformer(np.log1p, feature_names_out="one-to-one"),  # counts and money are right-skewed
            StandardScaler(),
            LogisticRegression(C=params["C"], max_iter=2000, random_state=random_state),
        )
        pipeline.fit(X, y)
        return BinaryModel(ModelSpec(family, params, 1), pipeline, features)
    raise ValueError(f"unknown model family {family!r}; expected one of {ESTIMATORS}")


class _CatBoostRounds:
    """A CatBoost ``fit`` callback: stop after ``rounds`` rounds."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds

    def after_iteration(self, info: Any) -> bool:
        return info.iteration < self.rounds


def refit(spec: ModelSpec, X: pd.DataFrame, y: pd.Series, random_state: int,
          refits: dict[str, BinaryModel] | None = None) -> BinaryModel:
    """Refit a specification with its fixed number of rounds (no early stopping). ``refits``: the refits a
    caller already made on this same ``X``, ``y`` and seed, by spec; a spec found there is not fitted again
    (every estimator here is deterministic given its seed, so it would be the same model), and a new one is
    added. One selection refits each blend's members, then the chosen spec, on its training customers: at a
    million customers each refit of a 200k sample took up to a minute (docs/scale.md)."""
    key = _spec_key(spec)
    if refits is not None and key in refits:
        return refits[key]
    model = fit_model(spec.family, spec.params, X, y, random_state, num_rounds=spec.num_rounds, refits=refits)
    if refits is not None:
        refits[key] = model
    return model


def tune(
    X_train: pd.DataFrame,
    y_train: pd.Series,
    X_valid: pd.DataFrame,
    y_valid: pd.Series,
    budget: Budget,
    *,
    study_name: str,
    families: tuple[str, ...] = ESTIMATORS,
    callbacks: Sequence[Callback] = (),
    refits: dict[str, BinaryModel] | None = None,
) -> TuningResult:
    """Search family and hyperparameters (:func:`ml.tuning.search`), maximising validation ROC AUC;
    every family is tried once first, so the baseline is always in the comparison. A trial still boosting when
    ``budget.timeout_seconds`` have passed stops at its best round so far (:mod:`ml.families.deadline`).
    ``refits``: the models a refit of a spec on ``X_train`` gives are kept there (:func:`refit`): the trials' own
    models where they are the same (:data:`TRIAL_IS_REFIT`), and the blends' other members once refitted."""
    check_two_classes(y_train, "training")
    check_two_classes(y_valid, "validation")
    deadline = time.monotonic() + budget.timeout_seconds

    def score(candidate: tuple[str, dict[str, Any]]) -> Scored[ModelSpec]:
        family, params = candidate
        model = fit_model(family, params, X_train, y_train, budget.random_state, X_valid=X_valid, y_valid=y_valid,
                          refits=refits, deadline=None if family == ENSEMBLE else deadline)
        if refits is not None and family in TRIAL_IS_REFIT:
            refits.setdefault(_spec_key(model.spec), model)
        return Scored(model.spec, {"roc_auc": _roc_auc_or_nan(y_valid, model.predict_proba(X_valid))})

    def choose(default: Scored[ModelSpec] | None, finished: list[Scored[ModelSpec]]) -> Scored[ModelSpec]:
        """The best trial, or a blend of the best spec of the two / three best estimator families when
        the blend is strictly better on the same validation customers."""
        if not finished:
            raise RuntimeError(f"tuning {study_name}: no trial finished with a finite roc_auc")
        auc = lambda s: rank_key(s.metrics["roc_auc"], higher_is_better=True)  # noqa: E731
        best_per_family: dict[str, Scored[ModelSpec]] = {}
        for candidate in sorted(finished, key=auc):
            best_per_family.setdefault(candidate.config.family, candidate)
        ranked = sorted(best_per_family.values(), key=auc)
        candidates = [ranked[0]]
        for size in (2, 3):
            if len(ranked) >= size and all(np.isfinite(s.metrics["roc_auc"]) for s in ranked[:size]):
                blend = score((ENSEMBLE, {"members": [s.config.to_json_dict() for s in ranked[:size]]}))
                candidates.append(blend)
                blends.append(blend)
        return min(candidates, key=auc)  # ties: the first, a single model

    blends: list[Scored[ModelSpec]] = []
    space = SearchSpace(
        name=study_name, suggest=lambda trial: suggest_spec(trial, families), score=score, objective="roc_auc",
        direction="maximize", enqueue=[{"family": family} for family in families],
        n_startup_trials=max(len(families), 4), choose=choose,
    )
    tuned = search(space, budget, callbacks)
    by_family: dict[str, float] = {}
    for t in tuned.study.trials:
        if t.value is not None:
            family = t.params["family"]
            by_family[family] = max(by_family.get(family, -np.inf), float(t.value))
    if blends:
        by_family[ENSEMBLE] = max(float(b.metrics["roc_auc"]) for b in blends)
    logger.info("%s: best %s AUC %.4f; best per family %s", study_name, tuned.config.family, tuned.value, by_family)
    return TuningResult(best=tuned.config, best_value=tuned.value, n_trials=tuned.n_trials, best_by_family=by_family)


def _spec_key(spec: ModelSpec) -> str:
    return json.dumps(spec.to_json_dict(), sort_keys=True)


def choose_calibration(probability: np.ndarray, y: pd.Series, random_state: int,
                       methods: tuple[str, ...] = CALIBRATIONS) -> tuple[Calibrator, np.ndarray, dict[str, float]]:
    """Pick the calibration with the lowest cross-fitted log loss on the validation fold.

    Returns the chosen calibrator fitted on the whole fold, the cross-fitted calibrated
    probabilities (honest holdout predictions) and each method's cross-fitted log loss.
    """
    y_array = np.asarray(y)
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=random_state)
    crossfit = {method: np.empty_like(probability, dtype="float64") for method in methods}
    for fit_idx, eval_idx in folds.split(probability.reshape(-1, 1), y_array):
        for method in methods:
            calibrator = _fit_calibrator(method, probability[fit_idx], y_array[fit_idx])
            crossfit[method][eval_idx] = calibrator.transform(probability[eval_idx])
    losses = {method: _log_loss_or_nan(y_array, p) for method, p in crossfit.items()}
    # a method whose cross-fitted probabilities are not all finite has no loss: it is never chosen
    chosen = min(methods, key=lambda method: (rank_key(losses[method], higher_is_better=False), methods.index(method)))
    return _fit_calibrator(chosen, probability, y_array), crossfit[chosen], losses


def calibrate(method: str, probability: np.ndarray, y: pd.Series, random_state: int) -> tuple[Calibrator, np.ndarray]:
    """The ``method`` (chosen on the validation customers) fitted on these rows, for the published model,
    and its cross-fitted predictions over two stratified halves of them: each row calibrated by a
    calibrator that never saw its label, which is what the test window's calibration metrics measure."""
    y_array = np.asarray(y)
    crossfit = np.empty_like(probability, dtype="float64")
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=random_state)
    for fit_idx, eval_idx in folds.split(probability.reshape(-1, 1), y_array):
        crossfit[eval_idx] = _fit_calibrator(method, probability[fit_idx], y_array[fit_idx]).transform(probability[eval_idx])
    return _fit_calibrator(method, probability, y_array), np.clip(crossfit, 0.0, 1.0)


def _fit_calibrator(method: str, probability: np.ndarray, y: np.ndarray) -> Calibrator:
    if method == "none":
        return Calibrator("none")
    if method == "sigmoid":
        model = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(probability).reshape(-1, 1), y)
        return Calibrator("sigmoid", model)
    return Calibrator("isotonic", IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(probability, y))


def evaluate(y_true: pd.Series, probability: np.ndarray, n_bins: int = 10) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss, Brier, expected calibration error and top-decile lift."""
    y = np.asarray(y_true, dtype="float64")
    p = np.asarray(probability, dtype="float64")
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, _EPS, 1 - _EPS), labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "calibration_error": expected_calibration_error(y, p, n_bins),
        "lift_top_decile": top_decile_lift(y, p),
        "positive_rate": float(y.mean()),
        "mean_prediction": float(p.mean()),
    }


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Share-weighted mean |observed rate - mean prediction| over equal-width probability bins."""
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    observed = np.bincount(bins, weights=y, minlength=n_bins)
    predicted = np.bincount(bins, weights=p, minlength=n_bins)
    used = count > 0
    return float(np.sum(np.abs(observed[used] - predicted[used])) / len(p))


def top_decile_lift(y: np.ndarray, p: np.ndarray) -> float:
    """Positive rate among the 10 % highest scores divided by the overall positive rate."""
    n_top = max(1, int(np.ceil(0.1 * len(p))))
    top = np.argsort(-p, kind="stable")[:n_top]
    overall = float(np.mean(y))
    return float(np.mean(np.asarray(y)[top]) / overall) if overall > 0 else float("nan")


def lightgbm_contributions(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    """``booster.predict(X, pred_contrib=True)`` (bias last): the same exact path-dependent TreeSHAP
    values, to floating-point summation order, from :mod:`ml.families.treeshap` (compiled, parallel over
    rows, each distinct split pattern of a tree explained once), with the trees ``predict`` would use
    (up to ``best_iteration`` when set). Missing values and zero-as-missing splits are handled; falls
    back to LightGBM's own call for categorical splits, linear trees, random-forest averaging or
    several models per iteration.
    """
    X = np.asarray(X, dtype=np.float64)  # any memory order: treeshap reads it feature by feature
    model = booster.dump_model(num_iteration=booster.best_iteration or None)
    if not treeshap.supports(model):
        return booster.predict(X, pred_contrib=True)
    return treeshap.contributions(treeshap.tables(model), X)


def xgboost_contributions(booster: xgb.Booster, X: np.ndarray, num_rounds: int) -> np.ndarray:
    """``booster.predict(DMatrix(X), pred_contribs=True, iteration_range=(0, num_rounds))``'s feature columns from
    :mod:`ml.families.treeshap` (the trees as a LightGBM dump, :func:`~ml.families.treeshap.xgboost_dump`): the same
    TreeSHAP values to XGBoost's float32 precision (~1e-6 of the largest, tested). The last column is the trees'
    expected value without XGBoost's base score. Falls back to XGBoost's own call where the dump cannot hold the
    trees (another booster than one tree per round, categorical splits). At a million customers XGBoost's own took
    ~170 s of a 500k-customer score task (docs/scale.md, "Session 26")."""
    try:
        dump = treeshap.xgboost_dump(json.loads(booster.save_raw("json")), num_rounds)
    except ValueError:
        return booster.predict(xgb.DMatrix(X), pred_contribs=True, iteration_range=(0, num_rounds))
    return treeshap.contributions(treeshap.tables(dump), treeshap.float32_rows(X))


def catboost_contributions(model: CatBoostClassifier, X: pd.DataFrame) -> np.ndarray:
    """``model.get_feature_importance(Pool(X), type="ShapValues")`` from :mod:`ml.families.treeshap` (the oblivious
    trees as a LightGBM dump, :func:`~ml.families.treeshap.catboost_dump`): equal to CatBoost's to ~1e-15 (tested).
    Falls back to CatBoost's own call for categorical or text features. CatBoost's own took ~250 s of a
    500k-customer score task at a million customers (docs/scale.md, "Session 26")."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.json"
        model.save_model(str(path), format="json")
        exported = json.loads(path.read_text())
    try:
        dump = treeshap.catboost_dump(exported)
    except ValueError:
        return model.get_feature_importance(Pool(X), type="ShapValues")
    return treeshap.contributions(treeshap.tables(dump), treeshap.float32_rows(X.to_numpy(dtype=np.float64)))


def label_shortfall(label_sets: dict[str, pd.Series], min_per_label: int = MIN_PER_LABEL,
                    label_names: tuple[str, str] = ("with label 1", "with label 0")) -> str | None:
    """Why these 0/1 label sets (by name, e.g. ``{"training set at 2024-01-01": y}``) cannot train a
    classifier: the first with fewer than ``min_per_label`` customers of either label (named by
    ``label_names``, positive first). None when every set has enough of both."""
    for name, y in label_sets.items():
        positive = int(np.sum(np.asarray(y) == 1))
        negative = len(y) - positive
        if min(positive, negative) < min_per_label:
            return (f"{len(y)} customers in the {name} ({positive} {label_names[0]}, {negative} {label_names[1]}): too "
                    f"few to fit a classifier (needs >= {min_per_label} of each label)")
    return None


def check_two_classes(y: pd.Series, role: str) -> None:
    if len(y) == 0 or pd.Series(y).nunique() < 2:
        raise ValueError(
            f"the {role} set has {len(y)} rows and {int(pd.Series(y).sum()) if len(y) else 0} positives: "
            "both classes are needed to train a classifier"
        )


def _roc_auc_or_nan(y: pd.Series, probability: np.ndarray) -> float:
    """Validation ROC AUC, NaN when any prediction is not finite (sklearn would raise on NaN)."""
    probability = np.asarray(probability, dtype="float64")
    return finite_or_nan(roc_auc_score(y, probability)) if np.isfinite(probability).all() else float("nan")


def _log_loss_or_nan(y: np.ndarray, probability: np.ndarray) -> float:
    probability = np.asarray(probability, dtype="float64")
    if not np.isfinite(probability).all():
        return float("nan")
    return float(log_loss(y, np.clip(probability, _EPS, 1 - _EPS), labels=[0, 1]))


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, _EPS, 1 - _EPS)
    return np.log(clipped / (1 - clipped))
