"""Binary classifier family: tuning across families, calibration, metrics and explanations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml.families.classifier import (
    CALIBRATIONS,
    ENSEMBLE,
    ESTIMATORS,
    ModelSpec,
    choose_calibration,
    evaluate,
    expected_calibration_error,
    fit_model,
    label_shortfall,
    refit,
    top_decile_lift,
    tune,
)
from ml.tuning import Budget


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    n = 2400
    X = pd.DataFrame({"recency": rng.gamma(2.0, 20.0, n), "frequency": rng.poisson(3, n).astype(float), "noise": rng.random(n)})
    logit = 0.5 - 0.04 * X["recency"] + 0.4 * X["frequency"]
    y = pd.Series((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int))
    return X.iloc[:1600], y.iloc[:1600], X.iloc[1600:], y.iloc[1600:]


def test_every_family_is_tried_and_the_best_wins(data):
    X_train, y_train, X_valid, y_valid = data
    result = tune(X_train, y_train, X_valid, y_valid, Budget(n_trials=5, timeout_seconds=120, random_state=1), study_name="t")
    assert set(result.best_by_family) == {*ESTIMATORS, ENSEMBLE}  # the blend of the best families is a candidate
    assert result.best_value == pytest.approx(max(result.best_by_family.values()))
    assert result.best_by_family[result.best.family] == result.best_value
    assert result.best_value > 0.75


def test_tuning_is_deterministic_for_a_seed(data):
    X_train, y_train, X_valid, y_valid = data
    config = Budget(n_trials=5, timeout_seconds=120, random_state=5)
    first = tune(X_train, y_train, X_valid, y_valid, config, study_name="a")
    second = tune(X_train, y_train, X_valid, y_valid, config, study_name="b")
    assert first.best == second.best and first.best_value == second.best_value


def test_a_selections_refits_are_made_once_and_equal_fresh_ones(data, monkeypatch):
    """With ``refits`` the blends' members and the chosen spec are each refitted at most once on the training
    customers, those of LightGBM, XGBoost, CatBoost and the logistic baseline never (their trial models are kept), and
    every model kept equals a fresh refit of its spec (the estimators are deterministic for a seed)."""
    import ml.families.classifier as classifier

    X_train, y_train, X_valid, y_valid = data
    calls = []
    fit = classifier.fit_model

    def counted(family, params, X, y, random_state, **kwargs):
        if kwargs.get("num_rounds") is not None or family == ENSEMBLE:
            calls.append(json.dumps({"family": family, "params": params, "rounds": kwargs.get("num_rounds")}, sort_keys=True))
        return fit(family, params, X, y, random_state, **kwargs)

    monkeypatch.setattr(classifier, "fit_model", counted)
    refits: dict = {}
    result = tune(X_train, y_train, X_valid, y_valid, Budget(n_trials=5, timeout_seconds=120, random_state=1),
                  study_name="r", refits=refits)
    chosen = refit(result.best, X_train, y_train, 1, refits)
    members = [call for call in calls if '"ensemble"' not in call]
    # the blends of 2 and 3 and the chosen spec: no spec refitted twice (the blend of 3 reuses the blend of 2's),
    # and a trial model kept where it is the refit
    assert len(members) == len(set(members)) and len(refits) >= 3
    assert not [call for call in members if json.loads(call)["family"] in classifier.TRIAL_IS_REFIT]
    assert {json.loads(key)["family"] for key in refits} >= {"lightgbm", "xgboost", "catboost", "logistic"}
    monkeypatch.setattr(classifier, "fit_model", fit)
    for key, model in refits.items():
        fresh = refit(ModelSpec.from_json_dict(json.loads(key)), X_train, y_train, 1)
        np.testing.assert_array_equal(model.predict_proba(X_valid), fresh.predict_proba(X_valid))
    np.testing.assert_array_equal(chosen.predict_proba(X_valid), refit(result.best, X_train, y_train, 1).predict_proba(X_valid))


@pytest.mark.parametrize("family", ["lightgbm", "xgboost", "catboost"])
def test_a_trial_past_the_deadline_stops_at_its_best_round_so_far(data, family):
    """A booster still early-stopping when the tuning budget's deadline has passed stops, keeping its best round,
    and a spec with that round count refits to the same model; before it, nothing changes."""
    import time

    X_train, y_train, X_valid, y_valid = data
    params = {"lightgbm": {"learning_rate": 0.02, "num_leaves": 8}, "xgboost": {"eta": 0.02, "max_depth": 3},
              "catboost": {"learning_rate": 0.03, "depth": 4}}[family]
    free = fit_model(family, params, X_train, y_train, 1, X_valid=X_valid, y_valid=y_valid)
    later = fit_model(family, params, X_train, y_train, 1, X_valid=X_valid, y_valid=y_valid,
                      deadline=time.monotonic() + 3600)
    stopped = fit_model(family, params, X_train, y_train, 1, X_valid=X_valid, y_valid=y_valid,
                        deadline=time.monotonic() - 1)
    assert later.spec == free.spec and free.spec.num_rounds > 2
    assert stopped.spec.num_rounds == 1  # the deadline had passed at the first round
    probability = stopped.predict_proba(X_valid)
    assert np.isfinite(probability).all() and len(np.unique(probability)) > 1
    np.testing.assert_array_equal(probability, refit(stopped.spec, X_train, y_train, 1).predict_proba(X_valid))
    np.testing.assert_array_equal(free.predict_proba(X_valid), refit(free.spec, X_train, y_train, 1).predict_proba(X_valid))


def test_tuning_stops_the_trials_running_past_its_timeout(data, monkeypatch):
    """Optuna starts no trial after the timeout; a booster still running at it stops at its best round so far.
    Here the search's clock starts an hour early (Optuna's own does not), so every booster trial runs past it."""
    import time
    from types import SimpleNamespace

    import ml.families.classifier as classifier

    X_train, y_train, X_valid, y_valid = data
    trials, fit = [], classifier.fit_model

    def recorded(*args, **kwargs):
        model = fit(*args, **kwargs)
        if kwargs.get("X_valid") is not None and model.spec.family in ("lightgbm", "xgboost", "catboost"):
            trials.append(model.spec.num_rounds)
        return model

    monkeypatch.setattr(classifier, "fit_model", recorded)
    monkeypatch.setattr(classifier, "time", SimpleNamespace(monotonic=lambda: time.monotonic() - 3600))
    tune(X_train, y_train, X_valid, y_valid, Budget(n_trials=5, timeout_seconds=120, random_state=1), study_name="late")
    assert len(trials) >= 3 and set(trials) == {1}


def test_an_ensemble_averages_its_members_in_log_odds_and_explains_itself(data):
    X_train, y_train, X_valid, _ = data
    members = [{"family": "lightgbm", "params": {"learning_rate": 0.1, "num_leaves": 8}, "num_rounds": 40},
               {"family": "logistic", "params": {"C": 1.0}, "num_rounds": 1}]
    blend = refit(ModelSpec(ENSEMBLE, {"members": members}, 1), X_train, y_train, random_state=0)
    singles = [refit(ModelSpec.from_json_dict(m), X_train, y_train, random_state=0) for m in members]
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    expected = np.mean([logit(np.clip(m.predict_proba(X_valid), 1e-6, 1 - 1e-6)) for m in singles], axis=0)
    np.testing.assert_allclose(logit(blend.predict_proba(X_valid)), expected, rtol=1e-9, atol=1e-9)
    contributions = blend.contributions(X_valid)
    assert list(contributions.columns) == list(X_train.columns)
    # the members' biases are constants: contributions move exactly with the blend's log-odds
    moved = contributions.sum(axis=1).to_numpy() - expected
    np.testing.assert_allclose(moved, moved[0], atol=1e-6)
    json.dumps(blend.spec.to_json_dict())  # a spec the gate can refit from a tag


@pytest.mark.parametrize("family", ESTIMATORS)
def test_contributions_add_up_to_the_log_odds(data, family):
    X_train, y_train, X_valid, _ = data
    params = {"logistic": {"C": 1.0}}.get(family, {})
    model = refit(ModelSpec(family, params, 40), X_train, y_train, random_state=0)
    probability = model.predict_proba(X_valid)
    contributions = model.contributions(X_valid)
    assert list(contributions.columns) == list(X_valid.columns)
    log_odds = np.log(probability / (1 - probability))
    bias = log_odds - contributions.sum(axis=1).to_numpy()
    assert np.allclose(bias, bias[0], atol=1e-4), "contributions + a constant must equal the log-odds"
    # the pure-noise feature matters least on average
    assert contributions.abs().mean().idxmin() == "noise"


def test_calibration_repairs_a_distorted_score_and_none_stays_for_a_calibrated_one():
    rng = np.random.default_rng(0)
    true_p = rng.uniform(0.02, 0.98, 6000)
    y = pd.Series((rng.random(6000) < true_p).astype(int))
    distorted = true_p**3
    calibrator, crossfit, losses = choose_calibration(distorted, y, random_state=0)
    assert calibrator.method in {"sigmoid", "isotonic"}
    assert losses[calibrator.method] < losses["none"]
    assert expected_calibration_error(y.to_numpy(), crossfit) < expected_calibration_error(y.to_numpy(), distorted)
    calibrator, _, losses = choose_calibration(true_p, y, random_state=0)
    assert losses["none"] <= min(losses.values()) + 0.005


def test_metrics_on_a_hand_checked_example():
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert top_decile_lift(y, p) == pytest.approx(1.0 / 0.2)
    metrics = evaluate(pd.Series(y), p)
    assert metrics["roc_auc"] == pytest.approx((1.0 + 7 / 8) / 2)
    assert metrics["positive_rate"] == pytest.approx(0.2)
    assert 0 <= metrics["calibration_error"] <= 1


def _predicting_nan(monkeypatch, families: set[str]) -> None:
    """Models of ``families`` predict NaN for every other row, as a broken fit would."""
    import ml.families.classifier

    real = ml.families.classifier.fit_model

    def fit(family, *args, **kwargs):
        model = real(family, *args, **kwargs)
        if family in families:
            proper = model.predict_proba
            model.predict_proba = lambda X: np.where(np.arange(len(X)) % 2 == 0, np.nan, proper(X))
        return model

    monkeypatch.setattr(ml.families.classifier, "fit_model", fit)


def test_a_family_predicting_nan_never_becomes_the_best(data, monkeypatch):
    X_train, y_train, X_valid, y_valid = (part.iloc[:500] for part in data)
    config = Budget(n_trials=4, timeout_seconds=120, random_state=1)
    honest = tune(X_train, y_train, X_valid, y_valid, config, study_name="honest")
    best_single = max((f for f in honest.best_by_family if f != ENSEMBLE), key=honest.best_by_family.get)
    _predicting_nan(monkeypatch, {best_single})
    result = tune(X_train, y_train, X_valid, y_valid, config, study_name="broken")
    assert result.best.family != best_single and best_single not in result.best_by_family
    members = result.best.params["members"] if result.best.family == ENSEMBLE else []
    assert all(member["family"] != best_single for member in members)  # nor does it join a blend
    assert np.isfinite(result.best_value) and result.n_trials == 3


def test_tuning_where_every_trial_predicts_nan_is_an_error(data, monkeypatch):
    X_train, y_train, X_valid, y_valid = (part.iloc[:500] for part in data)
    _predicting_nan(monkeypatch, set(ESTIMATORS))
    with pytest.raises(RuntimeError, match="no trial finished with a finite roc_auc"):
        tune(X_train, y_train, X_valid, y_valid, Budget(n_trials=4, timeout_seconds=120, random_state=1), study_name="t")


@pytest.mark.parametrize("broken", CALIBRATIONS)
def test_a_calibration_predicting_nan_is_never_chosen(monkeypatch, broken):
    import ml.families.classifier

    rng = np.random.default_rng(0)
    true_p = rng.uniform(0.02, 0.98, 3000)
    y = pd.Series((rng.random(3000) < true_p).astype(int))
    real = ml.families.classifier._fit_calibrator

    def fit(method, probability, labels):
        calibrator = real(method, probability, labels)
        if method == broken:
            calibrator.transform = lambda p: np.full(len(p), np.nan)
        return calibrator

    monkeypatch.setattr(ml.families.classifier, "_fit_calibrator", fit)
    for score in (true_p, true_p**3):  # "none" wins on the first, a calibration on the second
        calibrator, crossfit, losses = choose_calibration(score, y, random_state=0)
        assert np.isnan(losses[broken]) and calibrator.method != broken and np.isfinite(crossfit).all()


def test_label_shortfall_names_the_set_and_both_counts():
    enough = pd.Series([0] * 10 + [1] * 10)
    assert label_shortfall({"training set at 2024-01-01": enough, "validation set at 2024-02-01": enough}) is None
    reason = label_shortfall({"training set at 2024-01-01": enough, "validation set at 2024-02-01": pd.Series([1] * 5)})
    assert reason == ("5 customers in the validation set at 2024-02-01 (5 with label 1, 0 with label 0): too few to fit "
                      "a classifier (needs >= 10 of each label)")
    assert "0 customers in the training set" in label_shortfall({"training set": pd.Series([], dtype="int8")})
    named = label_shortfall({"training set": pd.Series([1, 1, 0])}, label_names=("churned", "stayed"))
    assert "(2 churned, 1 stayed): too few" in named


# --- the champion's re-scoring for the gate (BinaryFamily.evaluate) -----------------------------------


def test_a_champion_spec_is_refitted_on_the_fit_cutoff_and_scored_on_the_test_window(data, monkeypatch):
    import datetime as dt

    from sklearn.metrics import roc_auc_score

    import ml.families.binary
    from features.customer import LabelledSet
    from ml.families.binary import BinaryData
    from ml.families.propensity import FAMILY
    from ml.params import RunParams

    X_train, y_train, X_valid, y_valid = data
    cutoff = pd.Timestamp("2024-01-01", tz="UTC")
    holdout = BinaryData(dt.date(2024, 2, 1), 30, LabelledSet(cutoff, X_train, y_train), LabelledSet(cutoff, X_valid, y_valid))
    params = RunParams(seed=3)
    spec = {"family": "lightgbm", "params": {"learning_rate": 0.1, "num_leaves": 8}, "num_rounds": 30,
            "features": list(X_train.columns)}
    refitted = refit(ModelSpec("lightgbm", spec["params"], 30), X_train, y_train, random_state=3)
    expected = roc_auc_score(y_valid, refitted.predict_proba(X_valid))
    evaluation = FAMILY.evaluate(holdout, spec, params)
    assert evaluation.value(FAMILY.metric) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_array_equal(evaluation.y, y_valid.to_numpy())  # the test window's rows, in order
    assert 0.75 < expected < 1.0  # the data's signal: a real score, not a constant
    # a weaker specification scores lower on the same rows (the gate compares like with like)
    stump = {**spec, "params": {"learning_rate": 0.1, "num_leaves": 2}, "num_rounds": 1}  # one split
    assert FAMILY.evaluate(holdout, stump, params).value(FAMILY.metric) < expected
    # a champion on a subset of the features is refitted on its own features
    subset = FAMILY.evaluate(holdout, {**spec, "features": ["noise"]}, params)
    assert abs(subset.value(FAMILY.metric) - 0.5) < 0.1
    # one on features the data does not hold cannot be compared; one without a spec neither
    assert FAMILY.evaluate(holdout, {**spec, "features": ["recency", "loyalty_points"]}, params) is None
    assert FAMILY.evaluate(holdout, {"C": 1.0}, params) is None
    # a champion predicting NaN scores NaN, which the gate counts as a loss
    real = ml.families.binary.refit

    def broken(*args, **kwargs):
        model = real(*args, **kwargs)
        model.predict_proba = lambda X: np.full(len(X), np.nan)
        return model

    monkeypatch.setattr(ml.families.binary, "refit", broken)
    assert np.isnan(FAMILY.evaluate(holdout, spec, params).value(FAMILY.metric))


def test_a_logistic_models_probability_of_a_row_does_not_depend_on_the_rows_scored_with_it():
    """Partitioned scoring (docs/scale.md) must publish what one scoring of everyone publishes, to the bit: BLAS's
    matrix-vector product summed a row in an order that depended on its place in the batch."""
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.lognormal(size=(5000, 33)), columns=[f"f{i}" for i in range(33)])
    y = pd.Series((X["f0"] + rng.normal(size=len(X)) > 1).astype(int))
    model = fit_model("logistic", {"C": 1.0}, X, y, random_state=0)
    whole = model.predict_proba(X)
    parts = np.arange(len(X)) % 7
    alone = np.empty_like(whole)
    for k in range(7):
        alone[parts == k] = model.predict_proba(X[parts == k])
    np.testing.assert_array_equal(alone, whole)
    # and it is the logistic regression's own probability, to rounding
    np.testing.assert_allclose(whole, model.estimator.predict_proba(X)[:, 1], rtol=0, atol=1e-14)
