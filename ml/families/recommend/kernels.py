"""The ALS fold-in per customer, compiled with numba and parallel over customers (``prange``).

For a customer with history items ``U`` (L x f, the items' factors), confidences ``c`` and ``d = c - 1``,
``A_u = G + U' D U`` with ``G = Y'Y + lambda I`` (:meth:`~ml.families.recommend.estimator.ItemFactors.gram`)
and the customer's factors are ``x = A_u^-1 U' c``. With fewer history items than factors (``L < f``)
the Woodbury identity gives ``A_u^-1 U' = G^-1 U' r`` with ``r = I - M^-1 D K``, ``K = U G^-1 U'`` and
``M = I + D K`` (L x L): a short history costs ``L^2 f`` rather than ``f^3``. Otherwise ``A_u`` is built
and solved directly (f x f). When the catalogue is small enough (:data:`ITEM_KERNEL_BYTES`), the caller
computes ``Y G^-1 Y'`` for every pair of items once, and a customer's ``K`` is looked up in it: a short
history then costs ``L^3`` and ``L f``, not ``L^2 f``.

A recommendation ``j``'s explanation is each history item's term of its score,
``y_j' A_u^-1 y_i c_i`` (Hu et al. 2008, section 5; ``implicit``'s ``explain``): with Woodbury
``y_j' A_u^-1 U' = q r`` for ``q = y_j' G^-1 U'``, i.e. ``q - (D z)' K`` with ``M' z = q'``;
directly ``U A_u^-1 y_j``.

Each customer is computed on their own, in the same order of operations whatever else is in the
batch, so scoring customers alone, together or in partitions gives the same bits (the numpy version
this replaces solved padded batches, and spent most of the recommend step in batched small matrix
products; docs/scale.md). The inner loops run over contiguous rows, so they vectorise without
reordering any sum.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

#: the largest catalogue x catalogue ``Y G^-1 Y'`` computed once per scoring (8,192 items at 512 MB)
ITEM_KERNEL_BYTES = 512 * 2**20


@njit(parallel=True, cache=True)
def item_scores(x: np.ndarray, factors_t: np.ndarray) -> np.ndarray:
    """Each customer's score of each item, ``x @ factors_t`` (customers x f times f x items), every score summed
    over the factors in order. BLAS's matrix product sums a row in an order that depends on where the row falls in
    the batch (its edge tiles): on an AVX2 machine ~4 % of the customers scored in a partition got another last bit
    than scored with everyone (tests/unit/test_recommend.py). The item loop is innermost, so it vectorises without
    reordering any sum; as fast as the BLAS product it replaces, measured beside it on this machine."""
    m, f = x.shape
    n = factors_t.shape[1]
    out = np.empty((m, n))
    for i in prange(m):
        row = out[i]
        for j in range(n):
            row[j] = 0.0
        for a in range(f):
            weight = x[i, a]
            factor = factors_t[a]
            for j in range(n):
                row[j] += weight * factor[j]
    return out


def item_kernel(factors: np.ndarray, projected: np.ndarray) -> np.ndarray:
    """``Y G^-1 Y'`` (items x items) when it fits :data:`ITEM_KERNEL_BYTES`, else an empty (0, 0): compute per customer."""
    if factors.shape[0] ** 2 * 8 > ITEM_KERNEL_BYTES:
        return np.zeros((0, 0))
    return np.ascontiguousarray(projected @ factors.T)


@njit(cache=True)
def _history(items: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``U'``: the history items' factors, transposed (f x L, contiguous)."""
    f = factors.shape[1]
    transposed = np.empty((f, len(items)))
    for b in range(len(items)):
        row = factors[items[b]]
        for g in range(f):
            transposed[g, b] = row[g]
    return transposed


@njit(cache=True)
def _woodbury(items: np.ndarray, c: np.ndarray, factors: np.ndarray, projected: np.ndarray, item_kernel: np.ndarray):
    """``K = U G^-1 U'`` and ``M = I + D K`` of a short history: looked up in the catalogue's ``Y G^-1 Y'`` when
    the caller has it (``item_kernel`` with rows), else computed (``L^2 f``)."""
    length, f = len(items), factors.shape[1]
    if item_kernel.shape[0]:
        k = np.empty((length, length))
        for a in range(length):
            row = item_kernel[items[a]]
            for b in range(length):
                k[a, b] = row[items[b]]
    else:
        history_t = _history(items, factors)
        k = np.zeros((length, length))
        for a in range(length):
            p = projected[items[a]]
            row = k[a]
            for g in range(f):
                pg = p[g]
                h = history_t[g]
                for b in range(length):
                    row[b] += pg * h[b]
    m = np.eye(length)
    for a in range(length):
        da = c[a] - 1.0
        for b in range(length):
            m[a, b] += da * k[a, b]
    return k, m


@njit(cache=True)
def _direct(c: np.ndarray, history_t: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """``A_u = G + U' D U`` of a long history."""
    f, length = history_t.shape
    a = gram.copy()
    for b in range(length):
        db = c[b] - 1.0
        for g in range(f):
            t = db * history_t[g, b]
            row = a[g]
            for h in range(f):
                row[h] += t * history_t[h, b]
    return a


@njit(cache=True)
def _solve_one(items, c, factors, projected, gram, item_kernel, out) -> None:
    length, f = len(items), factors.shape[1]
    if length < f:
        k, m = _woodbury(items, c, factors, projected, item_kernel)
        dkc = np.empty(length)
        for a in range(length):
            s = 0.0
            for b in range(length):
                s += k[a, b] * c[b]
            dkc[a] = (c[a] - 1.0) * s
        rc = c - np.linalg.solve(m, dkc)
        out[:] = 0.0
        for a in range(length):
            p = projected[items[a]]
            w = rc[a]
            for g in range(f):
                out[g] += w * p[g]
    else:
        history_t = _history(items, factors)
        rhs = np.zeros(f)
        for g in range(f):
            h = history_t[g]
            s = 0.0
            for b in range(length):
                s += h[b] * c[b]
            rhs[g] = s
        out[:] = np.linalg.solve(_direct(c, history_t, gram), rhs)


@njit(parallel=True, cache=True)
def solve(starts, lengths, items, confidence, factors, projected, gram, item_kernel) -> np.ndarray:
    """(n, f): the factors of the customers whose history cells are ``items[starts[u]:starts[u] + lengths[u]]``
    (rows of ``factors``) with ``confidence`` (``alpha`` x weight); ``item_kernel``: ``Y G^-1 Y'`` or (0, 0)."""
    x = np.empty((len(starts), factors.shape[1]))
    for u in prange(len(starts)):
        s, length = starts[u], lengths[u]
        _solve_one(items[s:s + length], confidence[s:s + length], factors, projected, gram, item_kernel, x[u])
    return x


@njit(cache=True)
def _terms_one(items, c, chosen, factors, projected, gram, item_kernel, out) -> None:
    """``out[j, i]``: history item i's term of chosen item j's score (0 where ``chosen[j] < 0``)."""
    length, f, n_chosen = len(items), factors.shape[1], len(chosen)
    q = np.zeros((n_chosen, length))
    if length < f:
        k, m = _woodbury(items, c, factors, projected, item_kernel)
        history_t = _history(items, factors) if not item_kernel.shape[0] else np.empty((0, 0))
        for j in range(n_chosen):
            if chosen[j] < 0:
                continue
            row = q[j]
            if item_kernel.shape[0]:
                looked_up = item_kernel[chosen[j]]
                for b in range(length):
                    row[b] = looked_up[items[b]]
            else:
                p = projected[chosen[j]]
                for g in range(f):
                    pg = p[g]
                    h = history_t[g]
                    for b in range(length):
                        row[b] += pg * h[b]
        z = np.linalg.solve(np.ascontiguousarray(m.T), np.ascontiguousarray(q.T))  # (L, chosen)
        for j in range(n_chosen):
            if chosen[j] < 0:
                continue
            t = q[j].copy()
            for a in range(length):
                w = z[a, j] * (c[a] - 1.0)
                ka = k[a]
                for b in range(length):
                    t[b] -= w * ka[b]
            for b in range(length):
                out[j, b] = t[b] * c[b]
    else:
        history_t = _history(items, factors)
        picked = np.zeros((f, n_chosen))
        for j in range(n_chosen):
            if chosen[j] >= 0:
                picked[:, j] = factors[chosen[j]]
        w = np.linalg.solve(_direct(c, history_t, gram), picked)  # A^-1 y_j: (f, chosen)
        for j in range(n_chosen):
            if chosen[j] < 0:
                continue
            t = np.zeros(length)
            for g in range(f):
                wg = w[g, j]
                h = history_t[g]
                for b in range(length):
                    t[b] += wg * h[b]
            for b in range(length):
                out[j, b] = t[b] * c[b]


@njit(parallel=True, cache=True)
def terms(starts, lengths, items, confidence, chosen, factors, projected, gram, item_kernel, width) -> np.ndarray:
    """(n, k, width): for each customer (as :func:`solve`) and each of their ``chosen`` items (n, k; rows of
    ``factors``, -1 for none), every history item's term of its score, padded with 0."""
    n, n_chosen = chosen.shape
    out = np.zeros((n, n_chosen, width))
    for u in prange(n):
        s, length = starts[u], lengths[u]
        _terms_one(items[s:s + length], confidence[s:s + length], chosen[u], factors, projected, gram, item_kernel,
                   out[u])
    return out
