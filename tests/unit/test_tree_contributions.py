"""ml.families.classifier.lightgbm_contributions and ml.families.treeshap: LightGBM's TreeSHAP values, computed
by the compiled kernel (tabulated leaves, distinct split patterns), equal to ``pred_contrib``."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from ml.families import treeshap
from ml.families.classifier import lightgbm_contributions

_BASE = {"objective": "binary", "verbosity": -1, "seed": 1, "deterministic": True, "num_threads": 1}


def _data(seed: int = 0, n: int = 4_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack([
        rng.poisson(1.0, n),  # small counts, many zeros (like sessions_7d)
        rng.integers(0, 900, n),  # days
        rng.gamma(2.0, 50.0, n),  # money
        rng.normal(0.0, 1.0, n),  # negative values too
    ]).astype(np.float64)
    logit = 0.8 * X[:, 0] - 0.004 * X[:, 1] + 0.01 * X[:, 2] + 0.5 * X[:, 3] * (X[:, 0] > 1) - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def _train(X: np.ndarray, y: np.ndarray, rounds: int = 40, **params) -> lgb.Booster:
    return lgb.train({**_BASE, "num_leaves": 31, "min_child_samples": 5, **params}, lgb.Dataset(X, y),
                     num_boost_round=rounds)


def _on_thresholds(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    """``X`` with some values exactly on a split threshold of their feature."""
    X = X.copy()
    splits = booster.trees_to_dataframe().dropna(subset=["threshold"])
    for i, (_, split) in enumerate(splits.head(40).iterrows()):
        X[i, booster.feature_name().index(split["split_feature"])] = split["threshold"]
    return X


def _assert_same(booster: lgb.Booster, X: np.ndarray) -> None:
    expected = booster.predict(X, pred_contrib=True)
    got = lightgbm_contributions(booster, X)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.sum(axis=1), booster.predict(X, raw_score=True), atol=1e-9)


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    return _train(*_data())


def test_equals_lightgbm_pred_contrib(booster: lgb.Booster) -> None:
    X, _ = _data(seed=5, n=3_000)
    _assert_same(booster, _on_thresholds(booster, X))


@pytest.mark.parametrize("num_leaves", [8, 31])
def test_blocks_and_repeated_patterns(num_leaves: int) -> None:
    """Rows deduplicated per block of any size give each row its own values (rows repeated, so patterns recur), for
    trees whose keys number their patterns (8 leaves: at most 7 conditions, DIRECT_BITS) and trees whose keys are
    hashed (31 leaves)."""
    booster = _train(*_data(), num_leaves=num_leaves)
    conditions = treeshap.tables(booster.dump_model()).tree_conditions
    assert (conditions <= treeshap.DIRECT_BITS).all() if num_leaves == 8 else (conditions > treeshap.DIRECT_BITS).any()
    X, _ = _data(seed=7, n=300)
    X = np.vstack([X, X[::-1], X[:50]])
    expected = booster.predict(X, pred_contrib=True)
    tables = treeshap.tables(booster.dump_model())
    for block_rows in (1, 7, 64, 10_000):
        np.testing.assert_allclose(treeshap.contributions(tables, X, block_rows), expected, rtol=0, atol=1e-9)


def test_leaves_too_deep_to_tabulate(booster: lgb.Booster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaves with more distinct path features than MAX_TABLE_BITS take the per-row formula: same values."""
    X, _ = _data(seed=8, n=1_000)
    monkeypatch.setattr(treeshap, "MAX_TABLE_BITS", 1)
    tables = treeshap.tables(booster.dump_model())
    assert (tables.leaf_table < 0).any() and (tables.leaf_table >= 0).any()
    np.testing.assert_allclose(treeshap.contributions(tables, X), booster.predict(X, pred_contrib=True), atol=1e-9)
    monkeypatch.setattr(treeshap, "MAX_TABLE_BITS", 12)
    monkeypatch.setattr(treeshap, "MAX_TABLE_BYTES", 16 * 2**10)  # the byte budget lowers the bits instead
    tables = treeshap.tables(booster.dump_model())
    assert 8 * len(tables.table) <= 16 * 2**10 and (tables.leaf_table < 0).any()
    np.testing.assert_allclose(treeshap.contributions(tables, X), booster.predict(X, pred_contrib=True), atol=1e-9)


def test_trees_with_more_splits_than_a_key_holds() -> None:
    X, y = _data(seed=9, n=6_000)
    booster = _train(X, y, rounds=5, num_leaves=120, min_child_samples=2)
    assert max(tree["num_leaves"] for tree in booster.dump_model()["tree_info"]) > 65
    _assert_same(booster, _data(seed=10, n=2_000)[0])


@pytest.mark.parametrize("num_leaves", [8, 31])
def test_missing_values_and_zero_as_missing(num_leaves: int) -> None:
    X, y = _data(seed=11, n=5_000)
    X[::5, 2] = np.nan  # trained with missing values: NaN splits with a learned default direction
    X[::9, 3] = np.nan
    for params in ({}, {"zero_as_missing": True}, {"use_missing": False}):
        booster = _train(X, y, num_leaves=num_leaves, **params)
        types = set(booster.trees_to_dataframe()["missing_type"].dropna())
        assert types <= {"NaN", "Zero", "None"}
        scored, _ = _data(seed=12, n=2_000)
        scored[::3, 2] = np.nan
        scored[::4, 0] = 0.0
        scored[::6, 1] = np.nan  # missing where training had none: LightGBM reads it as 0
        scored[1::10, 3] = 1e-36  # below LightGBM's zero threshold: read as 0
        scored[2::10, 3] = -1e-36
        _assert_same(booster, _on_thresholds(booster, scored))


def test_depth_one_and_single_leaf_trees(booster: lgb.Booster) -> None:
    X, y = _data(seed=13, n=2_000)
    stumps = _train(X, y, num_leaves=2)
    _assert_same(stumps, X[:500])
    # too few rows to split: one constant tree, which only sets the bias
    constant = _train(X[:40], y[:40], rounds=5, min_child_samples=30)
    assert [tree["num_leaves"] for tree in constant.dump_model()["tree_info"]] == [1]
    _assert_same(constant, X[:500])
    # a constant tree among split ones (LightGBM keeps one only as a first tree): it adds its value to the bias
    model = booster.dump_model()
    mixed = {**model, "tree_info": [constant.dump_model()["tree_info"][0], *model["tree_info"]]}
    expected = booster.predict(X[:500], pred_contrib=True)
    expected[:, -1] += constant.predict(X[:1], raw_score=True)[0]
    np.testing.assert_allclose(treeshap.contributions(treeshap.tables(mixed), X[:500]), expected, atol=1e-9)


def test_uses_the_trees_predict_uses() -> None:
    X, y = _data(seed=14, n=3_000)
    booster = lgb.train({**_BASE, "num_leaves": 15, "metric": "auc"}, lgb.Dataset(X[:2_000], y[:2_000]),
                        num_boost_round=200, valid_sets=[lgb.Dataset(X[2_000:], y[2_000:])],
                        callbacks=[lgb.early_stopping(5, verbose=False)], keep_training_booster=True)
    assert 0 < booster.best_iteration < booster.num_trees()
    _assert_same(booster, X[:500])


def test_categorical_splits_fall_back_to_lightgbm() -> None:
    X, y = _data(seed=15, n=3_000)
    X[:, 0] = np.minimum(X[:, 0], 5)
    booster = lgb.train({**_BASE, "num_leaves": 15, "min_data_per_group": 5, "cat_smooth": 1.0},
                        lgb.Dataset(X, y, categorical_feature=[0]), num_boost_round=20)
    assert (booster.trees_to_dataframe()["decision_type"] == "==").any()
    assert not treeshap.supports(booster.dump_model())
    np.testing.assert_array_equal(lightgbm_contributions(booster, X[:300]), booster.predict(X[:300], pred_contrib=True))


def test_regression_booster(booster: lgb.Booster) -> None:
    """The CLV model's Tweedie booster: contributions of the raw (log-link) score."""
    X, _ = _data(seed=16, n=3_000)
    spend = np.random.default_rng(0).gamma(1.0, 1.0 + X[:, 0] * 10.0)
    tweedie = lgb.train({**_BASE, "objective": "tweedie", "num_leaves": 31}, lgb.Dataset(X, spend), num_boost_round=30)
    _assert_same(tweedie, X[:1_000])


def test_no_rows(booster: lgb.Booster) -> None:
    assert lightgbm_contributions(booster, np.empty((0, 4))).shape == (0, 5)


def test_published_factors_are_lightgbms(booster: lgb.Booster) -> None:
    """A classifier pyfunc's published factors (its derived column computed once, with its contributions)
    are those of LightGBM's own pred_contrib."""
    from ml.families.binary import CalibratedClassifierModel
    from ml.families.classifier import BinaryModel, CalibratedModel, Calibrator, ModelSpec
    from ml.families.explain import factors_json, score_terms, top_factors

    class Derived:  # stands in for BtydFeatures: a column the model derives from the features
        def transform(self, X):
            return X.assign(btyd_p_alive=1.0 / (1.0 + X["recency_days"] / 100.0))

    raw, y = _data(seed=17, n=3_000)
    X = pd.DataFrame({"orders_90d": raw[:, 0], "recency_days": raw[:, 1], "monetary": raw[:, 2]},
                     index=pd.Index(np.arange(len(raw)), name="customer_id"))
    design = Derived().transform(X)
    fitted = lgb.train({**_BASE, "num_leaves": 15}, lgb.Dataset(design, y), num_boost_round=30)
    model = CalibratedClassifierModel(CalibratedModel(
        BinaryModel(ModelSpec("lightgbm", {}, 30), fitted, list(design.columns)), Calibrator("none")), Derived())
    score = model.predict(None, X)
    expected = pd.DataFrame(fitted.predict(design, pred_contrib=True)[:, :-1], index=X.index, columns=design.columns)
    published = factors_json(model, X, "purchase_propensity", score)
    assert list(published) == list(top_factors(expected, design, score, score_terms("purchase_propensity"), k=3))
    assert '"feature":"btyd_p_alive"' in "".join(published)


def _on_split_values(X: np.ndarray, values: list[tuple[int, float]]) -> np.ndarray:
    """``X`` with some values exactly on a split value of their feature, and a few missing."""
    X = X.copy()
    for i, (feature, value) in enumerate(values[:40]):
        X[i, feature] = value
    X[40:50, 3] = np.nan
    return X


@pytest.mark.parametrize("depth", [3, 8])  # at depth 8 most trees have more splits than a 64-bit key holds
def test_xgboost_contributions_equal_its_pred_contribs(depth: int) -> None:
    import json

    import xgboost as xgb

    from ml.families.classifier import xgboost_contributions

    X, y = _data(seed=1)
    X[::97, 3] = np.nan  # missing values in training: splits learn a default way
    booster = xgb.train({"objective": "binary:logistic", "max_depth": depth, "eta": 0.1, "seed": 1, "nthread": 1,
                         "tree_method": "hist"}, xgb.DMatrix(X, label=y), 60)
    trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
    splits = [(t["split_indices"][i], t["split_conditions"][i]) for t in trees for i in range(len(t["left_children"]))
              if t["left_children"][i] >= 0]
    rows = _on_split_values(_data(seed=6, n=3_000)[0], splits)
    for rounds in (60, 25):  # the rounds a spec uses (iteration_range)
        expected = booster.predict(xgb.DMatrix(rows), pred_contribs=True, iteration_range=(0, rounds))
        got = xgboost_contributions(booster, rows, rounds)
        # XGBoost sums in float32: equal to its precision
        np.testing.assert_allclose(got[:, :-1], expected[:, :-1], rtol=0, atol=2e-6 * np.abs(expected).max())
    if depth == 8:
        assert max(len(t["left_children"]) for t in trees) > 2 * 64


@pytest.mark.parametrize("depth", [2, 8])  # depth 8: 255 splits a tree, 8 distinct conditions
def test_catboost_contributions_equal_its_shap_values(depth: int) -> None:
    from catboost import CatBoostClassifier, Pool

    from ml.families.classifier import catboost_contributions

    X, y = _data(seed=2)
    X[::89, 3] = np.nan
    columns = ["a", "b", "c", "d"]
    model = CatBoostClassifier(iterations=40, depth=depth, learning_rate=0.1, random_seed=1, thread_count=1,
                               verbose=False, allow_writing_files=False).fit(pd.DataFrame(X, columns=columns), y)
    borders = [(f, b) for f, values in enumerate(model.get_borders().values()) for b in values[:10]]
    rows = pd.DataFrame(_on_split_values(_data(seed=7, n=3_000)[0], borders), columns=columns)
    expected = model.get_feature_importance(Pool(rows), type="ShapValues")
    got = catboost_contributions(model, rows)
    np.testing.assert_allclose(got[:, :-1], expected[:, :-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), model.predict(rows, prediction_type="RawFormulaVal"), atol=1e-9)
