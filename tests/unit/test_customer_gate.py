"""The promotion gate on the customer families, end to end through BinaryFamily.train / evaluate and
ml.gate.decide, on customers whose purchase probability is known: degraded candidates are rejected,
a candidate with more signal is promoted, and the test window is the only thing the gate reads.

Each scenario trains the way the runner does (``train`` on the candidate's data, ``evaluate`` of the
champion's spec on the same data, ``decide``); the labelled sets are built directly so the labels,
features and signal are under control."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features.customer import FEATURE_COLUMNS, LabelledSet
from ml import plots
from ml.families import binary
from ml.families.binary import BTYD_FEATURES, BinaryData
from ml.families.clv.btyd import fit_btyd
from ml.families.propensity import FAMILY
from ml.gate import decide
from ml.params import RunParams

PARAMS = RunParams(n_trials=4, seed=5, backtest_origins=1)
RUN_DATE = dt.date(2024, 6, 1)
#: The two features that reveal purchase intent; sessions_30d is the strongest.
INTENT = ("sessions_30d", "product_views_30d")


def _customers(n: int, seed: int, cutoff: str) -> LabelledSet:
    rng = np.random.default_rng(seed)
    intent = rng.normal(0, 1, n)  # a latent purchase intent the engagement features reveal
    X = pd.DataFrame({column: rng.poisson(2, n).astype("float64") for column in FEATURE_COLUMNS})
    X["recency_days"] = rng.gamma(2.0, 30.0, n)
    # a purchase history BG/NBD can read (first order before the last, at least one order)
    X["frequency"] = 1.0 + rng.poisson(2, n)
    X["days_since_first_order"] = X["recency_days"] + rng.gamma(2.0, 60.0, n) * (X["frequency"] > 1)
    X["sessions_30d"] = rng.poisson(np.exp(1.0 + 0.8 * intent)).astype("float64")
    X["product_views_30d"] = rng.poisson(np.exp(1.5 + 0.6 * intent)).astype("float64")
    logit = -1.0 - 0.012 * X["recency_days"] + 1.3 * intent
    y = pd.Series((rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int8"), name="label")
    index = pd.Index(np.arange(n) + seed * 1_000_000, name="customer_id")
    return LabelledSet(pd.Timestamp(cutoff, tz="UTC"), X.set_index(index), y.set_axis(index))


@pytest.fixture(scope="module")
def store() -> BinaryData:
    return BinaryData(RUN_DATE, 30, _customers(2500, 1, "2024-04-02"), _customers(2500, 2, "2024-05-02"))


@pytest.fixture(scope="module")
def champion(store):
    """The champion: trained on the store as it is."""
    return _train(FAMILY, store)


def _train(family, data: BinaryData):
    trained = family.train(data, PARAMS, [])
    for figure in trained.figures.values():
        plots.close(figure)
    return trained


def _gate(family, data: BinaryData, champion_spec: dict | None):
    trained = _train(family, data)
    champion = None if champion_spec is None else FAMILY.evaluate(data, champion_spec, PARAMS)
    return decide(model_name=FAMILY.model_name, candidate_version="2", metric=FAMILY.metric, candidate=trained.test,
                  baseline=trained.baseline, champion_version=None if champion_spec is None else "1",
                  champion=champion, margin=PARAMS.promotion_margin, alpha=PARAMS.promotion_alpha)


def test_the_first_model_beats_recency_on_the_test_window(champion):
    decision = decide(model_name=FAMILY.model_name, candidate_version="1", metric=FAMILY.metric, candidate=champion.test,
                      baseline=champion.baseline, champion_version=None, champion=None, margin=0.0)
    assert decision.promoted and decision.baseline_p_value < 0.001, decision.reason
    assert champion.test.value(FAMILY.metric) > champion.baseline.value(FAMILY.metric) + 0.05


def test_a_candidate_trained_on_shuffled_labels_is_rejected(store, champion):
    fit = store.fit
    shuffled = LabelledSet(fit.cutoff, fit.X, fit.y.sample(frac=1.0, random_state=0).set_axis(fit.y.index))
    for champion_spec in (None, champion.spec):  # as the first model, and against the champion
        decision = _gate(FAMILY, dataclasses.replace(store, fit=shuffled), champion_spec)
        assert not decision.promoted and "below the quality floor" in decision.reason


def test_a_candidate_trained_on_a_ten_percent_sample_is_rejected(store, champion):
    fit = store.fit
    sample = fit.X.sample(frac=0.1, random_state=1).index.sort_values()
    small = dataclasses.replace(store, fit=LabelledSet(fit.cutoff, fit.X.loc[sample], fit.y.loc[sample]))
    trained = _train(FAMILY, small)
    # the champion's spec, fitted on all the fit cutoff's customers, scored on the same test rows
    decision = decide(model_name=FAMILY.model_name, candidate_version="2", metric=FAMILY.metric,
                      candidate=trained.test, baseline=trained.baseline, champion_version="1",
                      champion=FAMILY.evaluate(store, champion.spec, PARAMS), margin=PARAMS.promotion_margin,
                      alpha=PARAMS.promotion_alpha)
    assert not decision.promoted and decision.difference < 0, decision.reason


def test_a_candidate_without_its_strongest_features_is_rejected(store, champion):
    weaker = dataclasses.replace(FAMILY, features=tuple(c for c in FEATURE_COLUMNS if c != "sessions_30d"))
    decision = _gate(weaker, store, champion.spec)
    # still above the floor (product views reveal some intent), but worse than the champion
    assert not decision.promoted and decision.baseline_p_value < 0.05, decision.reason
    assert decision.difference < 0 and decision.champion_value is not None, decision.reason


def test_a_candidate_with_more_signal_is_promoted(store):
    blind = dataclasses.replace(FAMILY, features=tuple(c for c in FEATURE_COLUMNS if c not in INTENT))
    weak_champion = _train(blind, store)
    decision = _gate(FAMILY, store, weak_champion.spec)
    assert decision.promoted and decision.p_value < 0.05 and decision.ci_low > 0, decision.reason
    assert decision.test_method == "delong" and decision.n_test == len(store.test.y)


def test_selection_never_sees_the_test_window(store, champion):
    """Whatever the test window's labels, the chosen spec and calibration method are the same; only the
    test numbers (and the published calibrator, fitted there) change."""
    test = store.test
    flipped = dataclasses.replace(store, test=LabelledSet(test.cutoff, test.X, (1 - test.y).astype("int8")))
    again = _train(FAMILY, flipped)
    assert again.spec == champion.spec and again.params["calibration"] == champion.params["calibration"]
    np.testing.assert_array_equal(again.test.predicted, champion.test.predicted)
    assert again.test.value(FAMILY.metric) == pytest.approx(1 - champion.test.value(FAMILY.metric))


def test_the_candidate_and_the_champion_are_fitted_the_same_way(store, champion):
    """evaluate(candidate's own spec) reproduces the candidate's test predictions exactly."""
    np.testing.assert_array_equal(FAMILY.evaluate(store, champion.spec, PARAMS).predicted, champion.test.predicted)


def test_the_published_model_is_the_tested_one_calibrated_on_rows_it_did_not_train_on(store, champion):
    published = champion.model.predict(None, store.test.X)
    raw = champion.test.predicted
    assert np.corrcoef(np.argsort(np.argsort(published)), np.argsort(np.argsort(raw)))[0, 1] > 0.99  # same ranking
    assert champion.metrics["test_calibration_error"] < 0.05  # cross-fitted on the test window
    assert abs(published.mean() - store.test.y.mean()) < 0.02  # calibrated to the test window's rate
    assert "calibration.png" in champion.figures


def test_the_published_models_check_reads_the_importance_sample_not_the_whole_window(store, monkeypatch):
    """Every test customer's raw score is checked finite; the published model is checked on the importance sample
    (at a million customers the whole window was a second full prediction)."""
    import ml.families.importance

    monkeypatch.setattr(ml.families.importance, "IMPORTANCE_CUSTOMERS", 400)
    trained = _train(FAMILY, store)
    (what, checked), = trained.checks.items()
    assert "400 of the test window's customers" in what and len(checked) == 400
    positions = store.test.X.index.get_indexer(
        ml.families.importance.importance_sample(store.test, PARAMS.training_sample_customers, PARAMS.seed).X.index)
    np.testing.assert_allclose(checked, trained.model.predict(None, store.test.X)[positions])


def test_the_rolling_origin_backtest_repeats_selection_at_each_earlier_origin(store, champion, monkeypatch):
    """Each earlier origin (fit, test) is selected and tested on its own, with the earlier origins' smaller tuning
    budget; the latest is the test window, selected with the run's."""
    from ml.families.rolling_origin import earlier_origin_params

    budgets = []
    select = binary.BinaryFamily.select

    def spy(self, fit, params, *args, **kwargs):
        budgets.append((params.n_trials, params.tuning_timeout_seconds))
        return select(self, fit, params, *args, **kwargs)

    monkeypatch.setattr(binary.BinaryFamily, "select", spy)
    earlier = dataclasses.replace(store, earlier=((_customers(2500, 3, "2024-03-02"), _customers(2500, 4, "2024-04-01")),))
    trained = _train(FAMILY, earlier)
    smaller = earlier_origin_params(PARAMS)
    assert budgets == [(PARAMS.n_trials, PARAMS.tuning_timeout_seconds),
                       (smaller.n_trials, smaller.tuning_timeout_seconds)] and smaller.n_trials < PARAMS.n_trials
    assert trained.params["backtest_earlier_n_trials"] == smaller.n_trials
    metrics = trained.metrics
    assert metrics["backtest_roc_auc_origin0"] == metrics["test_roc_auc"] == champion.metrics["test_roc_auc"]
    assert 0.6 < metrics["backtest_roc_auc_origin1"] < 1.0 and metrics["backtest_roc_auc_origin1"] != metrics["test_roc_auc"]
    assert metrics["backtest_roc_auc_mean"] == pytest.approx(
        (metrics["backtest_roc_auc_origin0"] + metrics["backtest_roc_auc_origin1"]) / 2)
    assert metrics["backtest_baseline_roc_auc_std"] >= 0 and trained.params["backtest_origins"] == 2
    assert trained.spec == champion.spec  # the earlier origins never change what the latest selected


def test_the_bg_nbd_columns_are_fitted_on_the_fit_cutoff_and_derived_by_the_published_model(store, champion):
    """The models see two BG/NBD columns fitted on the fit cutoff's customers (no label); the published
    pyfunc takes the plain customer features and derives them with those same parameters."""
    assert champion.spec["features"] == [*FEATURE_COLUMNS, *BTYD_FEATURES] and champion.params["btyd_features"]
    btyd = champion.model.btyd
    assert btyd.params == binary.fit_btyd_features(store.fit.X, store.horizon, "fit").params
    assert btyd.horizon_days == store.horizon
    plain = store.test.X[list(FEATURE_COLUMNS)]
    np.testing.assert_allclose(champion.model.predict(None, plain),
                               champion.model.model.predict_proba(btyd.transform(plain)), rtol=1e-12)
    derived = btyd.transform(plain)
    assert derived["btyd_p_alive"].between(0, 1).all() and (derived["btyd_expected_purchases"] >= 0).all()
    # for the same history, the longer a repeat buyer has been silent the fewer purchases it expects
    silent = plain.iloc[[0, 0]].assign(frequency=5.0, days_since_first_order=300.0, recency_days=[5.0, 250.0])
    expected = btyd.transform(silent)["btyd_expected_purchases"].to_numpy()
    assert expected[0] > expected[1]


def test_where_bg_nbd_cannot_be_fitted_the_models_do_without_its_columns(store, champion, monkeypatch):
    def cannot(features):
        raise ValueError("BTYD needs at least 10 buyers")

    monkeypatch.setattr(binary, "fit_btyd", cannot)
    fresh = dataclasses.replace(store, btyd_fits={})  # the module's store keeps the fits of earlier tests
    trained = _train(FAMILY, fresh)
    assert trained.spec["features"] == list(FEATURE_COLUMNS) and not trained.params["btyd_features"]
    assert trained.model.btyd is None
    # a champion whose spec used the columns cannot be rebuilt on such data: no comparison, not a crash
    assert FAMILY.evaluate(fresh, champion.spec, PARAMS) is None


def test_bg_nbd_is_fitted_once_per_fit_set_in_a_training_run(store, champion, monkeypatch):
    fitted = []

    def counting(features):
        fitted.append(len(features))
        return fit_btyd(features)

    monkeypatch.setattr(binary, "fit_btyd", counting)
    fresh = dataclasses.replace(store, btyd_fits={})
    trained = _train(FAMILY, fresh)
    assert FAMILY.evaluate(fresh, champion.spec, PARAMS) is not None
    assert fitted == [len(store.fit.y)] and trained.params["btyd_features"]
    # another fit set (here a sample) gets its own model, even at the same cutoff
    sample = dataclasses.replace(fresh, fit=LabelledSet(store.fit.cutoff, store.fit.X.iloc[::2], store.fit.y.iloc[::2]))
    FAMILY.evaluate(sample, champion.spec, PARAMS)
    assert fitted == [len(store.fit.y), len(store.fit.y[::2])]
