"""The blocked conjugate-gradient step (ml.families.recommend.solver) against implicit's own."""

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from ml.families.recommend import solver
from ml.families.recommend.solver import BlockedALS


def _confidences(rows: int, items: int, per_row: float, seed: int) -> sp.csr_matrix:
    """Random confidences with rows of no items (the first five) and a few disliked items (negative)."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(per_row, rows)
    counts[:5] = 0
    row = np.repeat(np.arange(rows), counts)
    data = (np.log1p(rng.integers(1, 6, len(row))) * 3).astype(np.float32)
    data[rng.random(len(row)) < 0.05] *= -1
    matrix = sp.csr_matrix((data, (row, rng.integers(0, items, len(row)))), shape=(rows, items))
    matrix.sum_duplicates()
    return matrix


def _fit(model_class, matrix: sp.csr_matrix, factors: int):
    with threadpool_limits(limits=1, user_api="blas"):
        model = model_class(factors=factors, regularization=2.0, alpha=1.5, iterations=5, num_threads=1,
                            random_state=7)
        model.fit(matrix, show_progress=False)
    return model


@pytest.mark.parametrize("rows, items, factors", [
    (3000, 120, 32),   # more rows than items: rows solved in blocks, items read by row
    (150, 2000, 16),   # more items than rows: the rows solved in one block, read by item
])
def test_a_step_is_implicits_in_float64(rows, items, factors, monkeypatch):
    """In float64 rounding is far below the steps' differences: the same arithmetic gives the same factors."""
    from implicit.cpu import _als

    monkeypatch.setattr(solver, "BLOCK_ROWS", 512)  # several blocks
    matrix = _confidences(rows, items, 6.0, seed=rows).astype(np.float64)
    rng = np.random.default_rng(0)
    start, other = rng.random((rows, factors)) * 0.1, rng.random((items, factors)) * 0.1
    theirs, ours = start.copy(), start.copy()
    _als.least_squares_cg(matrix, theirs, other, 2.0, num_threads=1, cg_steps=3)
    solver.least_squares_cg(matrix, ours, other, 2.0, cg_steps=3)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12 * np.abs(theirs).max())
    assert not ours[:5].any()  # a row without items has no factors, as in implicit
    assert np.abs(ours - start).max() > 0.01  # the step moved the factors


@pytest.mark.parametrize("rows, items, factors", [(3000, 120, 32), (150, 2000, 16)])
def test_a_float32_fit_recommends_what_implicits_does(rows, items, factors):
    """Over sweeps float32 rounding grows (two float32 orders of the same sums differ ~1 % after five), so a whole
    fit is compared by what it recommends: each user's top five items."""
    matrix = _confidences(rows, items, 6.0, seed=rows)
    theirs, ours = _fit(AlternatingLeastSquares, matrix, factors), _fit(BlockedALS, matrix, factors)
    assert ours.item_factors.dtype == np.float32
    scores, expected = (model.user_factors[5:] @ model.item_factors.T for model in (ours, theirs))
    assert np.abs(scores - expected).max() < 0.02 * np.abs(expected).max()
    top, expected_top = (np.argsort(-values, axis=1)[:, :5] for values in (scores, expected))
    shared = [len(set(a) & set(b)) / 5 for a, b in zip(top, expected_top)]
    assert np.mean(shared) > 0.97


def test_a_fit_is_the_same_bits_every_time():
    matrix = _confidences(2000, 300, 5.0, seed=1)
    first = _fit(BlockedALS, matrix, 24)
    np.testing.assert_array_equal(first.item_factors, _fit(BlockedALS, matrix, 24).item_factors)
