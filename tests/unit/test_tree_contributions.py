"""ml.families.classifier.lightgbm_contributions: LightGBM's TreeSHAP, tree by tree on distinct split patterns."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from ml.families.classifier import lightgbm_contributions


def _data(seed: int = 0, n: int = 4_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack([
        rng.poisson(1.0, n),  # small counts, many zeros (like sessions_7d)
        rng.integers(0, 900, n),  # days
        rng.gamma(2.0, 50.0, n),  # money
        rng.normal(0.0, 1.0, n),  # negative values too
    ]).astype(np.float64)
    logit = 0.8 * X[:, 0] - 0.004 * X[:, 1] + 0.01 * X[:, 2] + 0.5 * X[:, 3] - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    X, y = _data()
    params = {"objective": "binary", "num_leaves": 31, "min_child_samples": 5, "verbosity": -1, "seed": 1,
              "deterministic": True, "num_threads": 1}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=40)


def test_equals_lightgbm_pred_contrib(booster: lgb.Booster) -> None:
    X, _ = _data(seed=5, n=3_000)
    X[:10, 2] = booster.trees_to_dataframe()["threshold"].dropna().to_numpy()[:10]  # values exactly on a threshold
    expected = booster.predict(X, pred_contrib=True)
    got = lightgbm_contributions(booster, X)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.sum(axis=1), booster.predict(X, raw_score=True), atol=1e-9)


def test_missing_values_fall_back_to_lightgbm(booster: lgb.Booster) -> None:
    X, _ = _data(seed=6, n=500)
    X[::7, 1] = np.nan
    np.testing.assert_array_equal(lightgbm_contributions(booster, X), booster.predict(X, pred_contrib=True))


def test_no_rows(booster: lgb.Booster) -> None:
    assert lightgbm_contributions(booster, np.empty((0, 4))).shape == (0, 5)
