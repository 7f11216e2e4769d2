"""The recommender's scorers: implicit ALS (fitted with the ``implicit`` library, scored here), item-kNN
(``implicit``'s BM25 item-item model, a benchmark) and popularity (overall, or within a segment).

Fitting uses the library's model with its conjugate-gradient step computed in blocks of rows
(:mod:`~ml.families.recommend.solver`: the same arithmetic, 2.3x on the 1M store's default fit); scoring a
customer from stored item factors is the closed form ALS itself solves for every user (``implicit``'s
``recalculate_user``, Hu et al. 2008 eq. 4), written here (:mod:`~ml.families.recommend.kernels`, numba) so
that the registered model does not need ``implicit`` to score, and so that the same solve also gives
each recommendation's explanation (the paper's section 5, ``implicit``'s ``explain``): with
``A_u = Y'Y + Y'(C_u - I)Y + lambda I``, the score of item j is ``sum_i c_ui y_j' A_u^-1 y_i`` over
the customer's history, so the history item with the largest term is the one that "explains" j most.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import RecommendationInput
from ml.families.recommend.config import POPULARITY_DAYS, RecsConfig

#: ALS fits on one thread: the same seed then gives the same factors on every machine
FIT_THREADS = 1
#: the customers scored together are bounded so a batch's factors, padded histories and explanation terms
#: stay near 16 MB, and their customers x catalogue scores (the caller's) at 1,024 rows
_BATCH_ELEMENTS = 1 << 21
_BATCH_CUSTOMERS = 1024


@dataclass(frozen=True)
class Strengths:
    """Customer x product interaction strengths: ``n`` = orders + ``view_weight`` x views over the
    history, ``bought`` whether any of it is a purchase; one row per cell with ``n > 0``."""

    customer_id: np.ndarray
    product_id: np.ndarray
    n: np.ndarray
    bought: np.ndarray

    def __len__(self) -> int:
        return len(self.n)


def strengths(data: RecommendationInput, view_weight: float) -> Strengths:
    """The history cells of ``data`` (all its interactions: window it first, :meth:`RecommendationInput.before`)."""
    bought = data.purchases.groupby(["customer_id", "product_id"], sort=False)["orders"].sum().rename("orders")
    viewed = data.views.groupby(["customer_id", "product_id"], sort=False)["views"].sum().rename("views")
    cells = pd.concat([bought, viewed], axis=1).fillna(0.0).sort_index()
    n = cells["orders"].to_numpy(dtype=np.float64) + view_weight * cells["views"].to_numpy(dtype=np.float64)
    keep = n > 0
    index = cells.index[keep]
    return Strengths(index.get_level_values(0).to_numpy(dtype=np.int64), index.get_level_values(1).to_numpy(dtype=np.int64),
                     n[keep], cells["orders"].to_numpy()[keep] > 0)


def weights(n: np.ndarray, config: RecsConfig) -> np.ndarray:
    """Confidence before ``alpha``: ``log(1 + n)`` or ``min(n, 1)`` (``binary``: a view-only cell keeps its
    smaller weight)."""
    return np.log1p(n) if config.weighting == "log" else np.minimum(n, 1.0)


@dataclass(frozen=True)
class ItemFactors:
    """A fitted ALS: the products it knows (sorted ids), their factors (float64) and its configuration."""

    product_ids: np.ndarray
    factors: np.ndarray
    config: RecsConfig

    def gram(self) -> np.ndarray:
        """``Y'Y + lambda I``: the part of every customer's normal equations that is theirs alike."""
        return self.factors.T @ self.factors + self.config.regularization * np.eye(self.factors.shape[1])


class _DeadlinePassed(Exception):
    """Raised from ``implicit``'s per-sweep callback to end a fit at the tuning budget's deadline; ``sweeps``: how
    many it made."""

    def __init__(self, sweeps: int) -> None:
        super().__init__(sweeps)
        self.sweeps = sweeps


def fit_als(cells: Strengths, config: RecsConfig, deadline: float | None = None) -> ItemFactors:
    """Item factors of an implicit ALS fitted on ``cells`` (``implicit``, one thread, seeded).

    ``deadline`` (``time.monotonic()``, a tuning trial's: :mod:`ml.families.deadline`): a fit still sweeping when it
    has passed stops after the sweep it is in. The factors are then those of a complete fit of that many sweeps (the
    same seed starts it, and each sweep is deterministic on one thread), and the model's configuration says so."""
    from threadpoolctl import threadpool_limits

    from ml.families.deadline import passed
    from ml.families.recommend.solver import BlockedALS  # training only: the registered model scores with numpy

    customers, rows = np.unique(cells.customer_id, return_inverse=True)
    products, columns = np.unique(cells.product_id, return_inverse=True)
    matrix = sp.csr_matrix((weights(cells.n, config).astype(np.float32), (rows, columns)),
                           shape=(len(customers), len(products)))
    with threadpool_limits(limits=1, user_api="blas"):  # implicit's advice: its own loop is the parallel one
        model = BlockedALS(factors=int(config.factors), regularization=float(config.regularization),
                           alpha=float(config.alpha), iterations=int(config.iterations), num_threads=FIT_THREADS,
                           random_state=int(config.random_state))

        def stop_at_deadline(iteration: int, elapsed: float, loss: float | None) -> None:
            if passed(deadline) and iteration + 1 < int(config.iterations):
                raise _DeadlinePassed(iteration + 1)

        try:
            model.fit(matrix, show_progress=False, callback=None if deadline is None else stop_at_deadline)
        except _DeadlinePassed as stopped:
            config = dataclasses.replace(config, iterations=stopped.sweeps)
    return ItemFactors(products, np.asarray(model.item_factors, dtype=np.float64), config)


@dataclass(frozen=True)
class Solved:
    """A batch of customers folded into an ALS: their positions in the caller's list, their factors
    ``x`` (B, f) and, for the explanation, their padded history: item indices ``items`` (B, L; -1 pad),
    confidences ``confidence`` (B, L) and ``bought`` (B, L). ``terms`` maps item indices to score, (B, k;
    -1 none), to every history item's term of their scores, (B, k, L) (:func:`kernels.terms`)."""

    positions: np.ndarray
    x: np.ndarray
    items: np.ndarray
    confidence: np.ndarray
    bought: np.ndarray
    terms: Callable[[np.ndarray], np.ndarray]

    def contributions(self, chosen: np.ndarray) -> np.ndarray:
        """(B, k, L): how much each history item adds to the score of each ``chosen`` item index (-1: none)."""
        return self.terms(np.ascontiguousarray(chosen, dtype=np.int64))


def fold_in(model: ItemFactors, customer_rows: np.ndarray, item_index: np.ndarray, n: np.ndarray,
            bought: np.ndarray) -> Iterator[Solved]:
    """Solve every customer's ALS factors from their history cells, in batches of similar history length.

    ``customer_rows`` (the position of the cell's customer in the caller's list), ``item_index`` (the
    product's row in ``model.factors``), ``n`` and ``bought`` describe one cell each; customers without
    cells are not yielded. Each customer is solved on their own (:mod:`ml.families.recommend.kernels`,
    numba over both cores): a batch is only how many are scored together."""
    from ml.families.recommend import kernels

    config, factors = model.config, np.ascontiguousarray(model.factors, dtype=np.float64)
    f = factors.shape[1]
    gram = model.gram()
    projected = np.ascontiguousarray(factors @ np.linalg.inv(gram))  # Y G^-1 (G is symmetric)
    pairs = kernels.item_kernel(factors, projected)
    rows, items, confidence, bought, starts, lengths = histories(customer_rows, item_index, n, bought, config)
    by_length = np.argsort(lengths, kind="stable")
    done = 0
    while done < len(by_length):
        size = 1
        while done + size < len(by_length) and size < _BATCH_CUSTOMERS and \
                (size + 1) * _batch_elements(int(lengths[by_length[done + size]]), f) <= _BATCH_ELEMENTS:
            size += 1
        batch = by_length[done:done + size]
        done += size
        batch_starts, batch_lengths = starts[batch].astype(np.int64), lengths[batch].astype(np.int64)
        longest = int(batch_lengths.max())
        offsets = np.arange(longest)
        valid = offsets[None, :] < batch_lengths[:, None]
        at = np.where(valid, batch_starts[:, None] + offsets[None, :], 0)
        x = kernels.solve(batch_starts, batch_lengths, items, confidence, factors, projected, gram, pairs)

        def explain(chosen: np.ndarray, batch_starts=batch_starts, batch_lengths=batch_lengths, longest=longest):
            return kernels.terms(batch_starts, batch_lengths, items, confidence, chosen, factors, projected, gram,
                                 pairs, longest)
        yield Solved(rows[batch_starts], x, np.where(valid, items[at], -1), np.where(valid, confidence[at], 0.0),
                     np.where(valid, bought[at], False), explain)


def histories(customer_rows: np.ndarray, item_index: np.ndarray, n: np.ndarray, bought: np.ndarray,
              config: RecsConfig) -> tuple[np.ndarray, ...]:
    """The cells sorted by customer, then item: ``rows``, ``items`` (int64), ``confidence`` (``alpha`` x weight,
    float64) and ``bought``, and each customer's ``starts`` and ``lengths`` in them."""
    order = np.lexsort((item_index, customer_rows))
    rows, items = customer_rows[order], np.ascontiguousarray(item_index[order], dtype=np.int64)
    confidence = np.ascontiguousarray(config.alpha * weights(n[order], config), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, dtype=np.int64)
    return rows, items, confidence, bought[order], starts, np.diff(np.r_[starts, len(rows)])


def _batch_elements(length: int, factors: int) -> int:
    """The numbers one customer of this history length holds in a batch: factors, padded history, terms."""
    return factors + 16 * length


def popularity(purchases: pd.DataFrame, as_of: pd.Timestamp, days: int = POPULARITY_DAYS) -> pd.DataFrame:
    """The distinct buyers (customer_id, product_id) of the last ``days`` before ``as_of``; all history
    when that window has none."""
    recent = purchases.loc[(purchases["day"] < as_of) & (purchases["day"] >= as_of - pd.Timedelta(days=days))]
    if not len(recent):
        recent = purchases.loc[purchases["day"] < as_of]
    return recent[["customer_id", "product_id"]].drop_duplicates().reset_index(drop=True)


def fit_item_knn(cells: Strengths, neighbours: int = 50) -> tuple[np.ndarray, sp.csr_matrix]:
    """``implicit``'s BM25 item-kNN on the history strengths: (product ids, item x item similarity)."""
    from implicit.nearest_neighbours import BM25Recommender

    customers, rows = np.unique(cells.customer_id, return_inverse=True)
    products, columns = np.unique(cells.product_id, return_inverse=True)
    matrix = sp.csr_matrix((cells.n.astype(np.float32), (rows, columns)), shape=(len(customers), len(products)))
    model = BM25Recommender(K=neighbours, num_threads=FIT_THREADS)
    with warnings.catch_warnings():  # its own BM25 weighting hands its kNN a COO matrix, and then warns about it
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        model.fit(matrix, show_progress=False)
    return products, model.similarity.tocsr()
