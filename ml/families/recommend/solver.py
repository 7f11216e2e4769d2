"""``implicit``'s ALS with its conjugate-gradient step computed a block of rows at a time.

``implicit`` (0.7) solves each user's (then each item's) factors with a few conjugate-gradient steps
(``implicit.cpu.als.least_squares_cg``, Takacs et al. 2011): per row ``x`` with items ``i`` of
confidence ``c_i``, ``A x = b`` for ``A = Y'Y + lambda I + sum_i (c_i - 1) y_i y_i'`` and ``b = sum_i c_i y_i``,
where ``A p`` is computed as ``(Y'Y + lambda I) p`` plus one term per item. Its compiled loop does the first
part as one matrix-vector product per row and step: most of a fit's arithmetic at 256 factors.

:func:`least_squares_cg` is the same arithmetic, the same start, steps and stopping rules, with that part
as one matrix product for a block of rows (BLAS-3 instead of BLAS-2), and the per-item terms in numba.
One step equals the library's to float64 rounding; in float32 the sums' order differs, and over a fit's
sweeps the factors drift apart by ~1 % (what they recommend stays: docs/personalisation.md). A fit is the
same bits run to run on one thread. :class:`BlockedALS` is the library's model with this solver: its own
initialisation, sweeps, callback and scoring.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from numba import njit

#: rows solved together: a block's five (rows x factors) float32 arrays stay near 20 MB at 256 factors
BLOCK_ROWS = 4096
#: ``implicit``'s tolerance: a row whose residual's squared norm is below it is left as it is
TOLERANCE = 1e-20


@njit(cache=True, fastmath=True)
def _add_item_terms(ptr, other, data, y, v, out, residual, by_item):
    """``out[u] += sum_i w_ui y_i`` over row u's items: ``w = c - (c - 1) y_i'v_u`` (``residual``: the
    right-hand side minus ``A`` times the start ``v``) or ``(c - 1) y_i'v_u`` (the item part of ``A v``);
    ``c < 0`` (a disliked item) counts as ``|c|`` with no preference, as in ``implicit``. ``ptr``, ``other``,
    ``data``: the confidences by row (``other``: each entry's item) or, ``by_item``, by item (``other``: each
    entry's row), so that a large ``y`` is read once in order rather than at random."""
    factors = y.shape[1]
    for outer in range(len(ptr) - 1):
        for k in range(ptr[outer], ptr[outer + 1]):
            row, item = (other[k], outer) if by_item else (outer, other[k])
            confidence = data[k]
            preference = confidence if confidence > 0 else np.float32(0.0)
            confidence = abs(confidence)
            dot = np.float32(0.0)
            for f in range(factors):
                dot += y[item, f] * v[row, f]
            weight = (confidence - np.float32(1.0)) * dot
            if residual:
                weight = preference - weight
            for f in range(factors):
                out[row, f] += weight * y[item, f]


@njit(cache=True, fastmath=True)
def _cg_step(x, r, p, ap, rs_old, active):
    """One conjugate-gradient step of every ``active`` row (``implicit``'s, row by row): ``x``, ``r``, ``p``
    and ``rs_old`` updated in place; a row whose residual falls below :data:`TOLERANCE` stops."""
    for u in range(x.shape[0]):
        if not active[u]:
            continue
        p_ap = np.float32(0.0)
        for f in range(x.shape[1]):
            p_ap += p[u, f] * ap[u, f]
        alpha = rs_old[u] / p_ap
        rs_new = np.float32(0.0)
        for f in range(x.shape[1]):
            x[u, f] += alpha * p[u, f]
            r[u, f] -= alpha * ap[u, f]
            rs_new += r[u, f] * r[u, f]
        if rs_new < TOLERANCE:
            active[u] = False
            continue
        beta = rs_new / rs_old[u]
        for f in range(x.shape[1]):
            p[u, f] = r[u, f] + beta * p[u, f]
        rs_old[u] = rs_new


def _solve(x: np.ndarray, y: np.ndarray, gram: np.ndarray, confidences: sp.csr_matrix, cg_steps: int,
           by_item: bool) -> None:
    """``x`` (rows x factors) updated in place from the confidences (rows x items, CSR), read by item
    (``by_item``) or by row."""
    has_items = np.diff(confidences.indptr) > 0
    if by_item:
        confidences = confidences.tocsc()
    ptr, other = confidences.indptr, confidences.indices
    data = confidences.data.astype(x.dtype, copy=False)
    r = -(x @ gram)
    _add_item_terms(ptr, other, data, y, x, r, True, by_item)
    p = r.copy()
    rs_old = np.einsum("ij,ij->i", r, r)
    active = has_items & (rs_old >= TOLERANCE)
    for _ in range(cg_steps):
        if not active.any():
            break
        ap = p @ gram
        _add_item_terms(ptr, other, data, y, p, ap, False, by_item)
        _cg_step(x, r, p, ap, rs_old, active)
    x[~has_items] = 0


def least_squares_cg(Cui: sp.csr_matrix, X: np.ndarray, Y: np.ndarray, regularization: float, num_threads: int = 0,
                     cg_steps: int = 3) -> None:
    """``X``'s rows updated in place from ``Y`` and the confidences ``Cui`` (rows x items), as
    ``implicit.cpu.als.least_squares_cg``: ``cg_steps`` conjugate-gradient steps from each row's current
    value; a row without items becomes zero. ``num_threads`` is accepted for the library's call and unused:
    one thread. When ``Y`` has more rows than ``X`` (the item half-sweep) the rows are solved in one block,
    reading the confidences by item so that ``Y`` is read in order; otherwise in blocks of :data:`BLOCK_ROWS`."""
    factors = X.shape[1]
    gram = (Y.T.dot(Y) + regularization * np.eye(factors, dtype=Y.dtype)).astype(X.dtype)
    if Y.shape[0] > X.shape[0]:
        _solve(X, Y, gram, Cui, cg_steps, by_item=True)
        return
    for start in range(0, X.shape[0], BLOCK_ROWS):
        _solve(X[start:start + BLOCK_ROWS], Y, gram, Cui[start:start + BLOCK_ROWS], cg_steps, by_item=False)


class BlockedALS(AlternatingLeastSquares):
    """``implicit``'s CPU ALS whose conjugate-gradient step is :func:`least_squares_cg`."""

    @property
    def solver(self):
        return functools.partial(least_squares_cg, cg_steps=self.cg_steps)
