"""Time-split evaluation of the recommender: windows, test rows, ranking metrics and the tuning search.

A **window** ``[cutoff, end)`` is scored from a model fitted on the ``lookback_days`` before ``cutoff``
(what the nightly run would have known at ``cutoff``). Its **test rows** are the customers with
history before ``cutoff`` who bought something in the window that tonight's rules would let us
recommend: their relevant items are the products they bought in the window, less the excluded
categories and what they had bought in the ``exclude_bought_days`` before ``cutoff`` (the published
lists can never hold those, so the metric measures what is published). Out of stock is not applied:
the extract holds tonight's stock, not the stock at ``cutoff``. Products the model never saw stay
relevant (nobody can recommend them; recall says so).

Each model's predictions are its top-K product ids per test row (``(rows, K)``, -1 where a list is
shorter) and the outcomes the relevant ids (``(rows, most relevant)``, -1 padded), so two models are
compared paired on the same rows (:mod:`ml.evaluation`, a bootstrap over customers). The metrics
(:func:`ndcg_at_k`, :func:`precision_at_k`, :func:`recall_at_k`) are the usual binary-relevance ones
(NDCG's ideal list puts ``min(relevant, K)`` hits first); coverage is the share of the products
with history before ``cutoff`` that appear in some list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
import scipy.sparse as sp

from features.interactions import RecommendationInput
from ml.evaluation import Evaluation, Metric
from ml.families.recommend.config import RecsConfig, Rules
from ml.families.recommend.estimator import ItemFactors, fit_als, fit_item_knn, strengths
from ml.families.recommend.recommender import BATCH_CUSTOMERS, Catalogue, WarmScorer, recommend
from ml.tuning import Scored, SearchSpace

#: the ALS factor counts tuning chooses from
FACTOR_CHOICES = (32, 64, 128, 256)


def _hits(y: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, K) whether each recommended id is relevant, and the number of relevant ids per row."""
    truth, top = np.asarray(y, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    span = int(max(truth.max(initial=0), top.max(initial=0))) + 1
    rows = np.arange(len(top), dtype=np.int64)[:, None]
    relevant = (rows * span + truth)[truth >= 0]
    return np.isin(rows * span + top, relevant) & (top >= 0), (truth >= 0).sum(axis=1)


def _ndcg_per_row(y: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    hits, relevant = _hits(y, predicted)
    k = hits.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.clip(relevant, 1, k) - 1]
    return (hits * discounts).sum(axis=1) / ideal


def ndcg_at_k(y: np.ndarray, predicted: np.ndarray) -> float:
    per_row = _ndcg_per_row(y, predicted)
    return float(np.mean(per_row)) if len(per_row) else float("nan")


def ndcg_terms(y: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ndcg_at_k` as a ratio of sums (:data:`ml.evaluation.RowTerms`): each row's NDCG over a count of 1."""
    per_row = _ndcg_per_row(y, predicted)
    return per_row, np.ones(len(per_row))


def precision_at_k(y: np.ndarray, predicted: np.ndarray) -> float:
    hits, _ = _hits(y, predicted)
    return float(hits.sum(axis=1).mean() / hits.shape[1]) if len(hits) else float("nan")


def recall_at_k(y: np.ndarray, predicted: np.ndarray) -> float:
    hits, relevant = _hits(y, predicted)
    return float(np.mean(hits.sum(axis=1) / np.maximum(relevant, 1))) if len(hits) else float("nan")


NDCG = Metric("ndcg_at_k", higher_is_better=True, relative_margin=True, score=ndcg_at_k, terms=ndcg_terms)


@dataclass(frozen=True)
class Window:
    """One evaluation window: the history the models learn from (days in ``[cutoff - lookback, cutoff)``),
    the test rows' customer ids (sorted) and their relevant product ids ``truth`` (rows, most; -1 pad)."""

    cutoff: pd.Timestamp
    end: pd.Timestamp
    history: RecommendationInput
    customer_ids: np.ndarray
    truth: np.ndarray
    rules: Rules

    @property
    def description(self) -> str:
        return (f"purchases in [{self.cutoff.date()}, {self.end.date()}) of customers with history before "
                f"{self.cutoff.date()}, what the rules allow (K = {self.rules.k})")

    def catalogue_size(self) -> int:
        """Products with history before the cutoff (coverage's denominator)."""
        return int(pd.concat([self.history.purchases["product_id"], self.history.views["product_id"]]).nunique())


def window(data: RecommendationInput, cutoff: pd.Timestamp, end: pd.Timestamp, lookback_days: int,
           rules: Rules) -> Window:
    """The window ``[cutoff, end)`` of ``data`` (see the module docstring for its test rows)."""
    history = data.before(cutoff, since=cutoff - pd.Timedelta(days=lookback_days))
    # tonight's stock says nothing about the stock at the cutoff
    history = dataclasses.replace(history, catalogue=history.catalogue.assign(on_hand=np.nan))
    known = np.union1d(history.purchases["customer_id"].unique(), history.views["customer_id"].unique())
    bought = data.purchases.loc[(data.purchases["day"] >= cutoff) & (data.purchases["day"] < end),
                                ["customer_id", "product_id"]].drop_duplicates()
    bought = bought.loc[bought["customer_id"].isin(known)]
    category = data.catalogue.drop_duplicates("product_id").set_index("product_id")["category"]
    bought = bought.loc[~bought["product_id"].map(category).isin(rules.exclude_categories).to_numpy()]
    if rules.exclude_bought_days > 0:
        recent = history.purchases.loc[history.purchases["day"] >= cutoff - pd.Timedelta(days=rules.exclude_bought_days),
                                        ["customer_id", "product_id"]].drop_duplicates()
        both = bought.merge(recent, how="left", indicator=True)
        bought = both.loc[both["_merge"] == "left_only", ["customer_id", "product_id"]]
    bought = bought.sort_values(["customer_id", "product_id"], kind="stable")
    ids, starts, counts = np.unique(bought["customer_id"].to_numpy(dtype=np.int64), return_index=True,
                                    return_counts=True)
    truth = np.full((len(ids), int(counts.max(initial=1))), -1, dtype=np.int64)
    slot = np.arange(len(bought)) - np.repeat(starts, counts)
    truth[np.repeat(np.arange(len(ids)), counts), slot] = bought["product_id"].to_numpy(dtype=np.int64)
    customers = history.customers.loc[history.customers["customer_id"].isin(ids)]
    return Window(cutoff, end, dataclasses.replace(history, customers=customers), ids, truth.astype(np.float64), rules)


def predictions(win: Window, model: ItemFactors | None, *, knn: bool = False, view_weight: float = 0.0) -> np.ndarray:
    """The (rows, K) product ids a model recommends to the window's test rows (float, -1 where none):
    ALS (``model``), item-kNN (``knn``) or popularity (neither)."""
    scorer = _knn_scorer(win, view_weight) if knn else None
    ranked, catalogue = recommend(model, win.history, win.cutoff, win.rules, customer_ids=win.customer_ids,
                                  segments=False, warm_scorer=scorer)
    return ranked.product_ids(catalogue).astype(np.float64)


def _knn_scorer(win: Window, view_weight: float) -> WarmScorer:
    """``implicit``'s BM25 item-kNN fitted on the window's history, scoring each customer's history."""
    cells = strengths(win.history, view_weight)
    products, similarity = fit_item_knn(cells)

    def score(ids: np.ndarray, catalogue: Catalogue) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rows = pd.Index(ids).get_indexer(cells.customer_id)
        known = rows >= 0
        customers, index = np.unique(rows[known], return_inverse=True)
        matrix = sp.csr_matrix((cells.n[known], (index, np.searchsorted(products, cells.product_id[known]))),
                               shape=(len(customers), len(products)))
        at = catalogue.index(products)
        for start in range(0, len(customers), BATCH_CUSTOMERS):
            block = (matrix[start:start + BATCH_CUSTOMERS] @ similarity).toarray()
            scores = np.full((len(block), len(catalogue.product_ids)), -np.inf)
            scores[:, at[at >= 0]] = np.where(block[:, at >= 0] > 0, block[:, at >= 0], -np.inf)
            yield customers[start:start + BATCH_CUSTOMERS], scores

    return score


def scores(win: Window, predicted: np.ndarray) -> dict[str, float]:
    """NDCG, precision and recall at K and coverage of ``predicted`` on the window's rows."""
    recommended = np.unique(predicted[predicted >= 0])
    return {"ndcg_at_k": ndcg_at_k(win.truth, predicted), "precision_at_k": precision_at_k(win.truth, predicted),
            "recall_at_k": recall_at_k(win.truth, predicted),
            "coverage": len(recommended) / max(win.catalogue_size(), 1)}


def evaluation(win: Window, name: str, predicted: np.ndarray) -> Evaluation:
    return Evaluation(name, win.truth, predicted, window=win.description)


def fitted(win: Window, config: RecsConfig, deadline: float | None = None) -> ItemFactors:
    """``config`` fitted on the window's history (``deadline``: :func:`~ml.families.recommend.estimator.fit_als`)."""
    return fit_als(strengths(win.history, config.view_weight), config, deadline)


def search_space(win: Window, default: RecsConfig, deadline: float | None = None) -> SearchSpace[RecsConfig]:
    """ALS factors, regularization, confidence scale and weighting, sweeps and (with clickstream) the
    weight of a product view, chosen by NDCG@K on the validation window ``win``. A trial's fit still sweeping at
    the ``time.monotonic()`` ``deadline`` (the tuning budget's) stops there and is scored with the sweeps it made;
    the default is always fitted whole."""
    has_views = len(win.history.views) > 0

    def suggest(trial: optuna.Trial) -> RecsConfig:
        return dataclasses.replace(
            default, factors=trial.suggest_categorical("factors", FACTOR_CHOICES),
            regularization=trial.suggest_float("regularization", 0.01, 100.0, log=True),
            alpha=trial.suggest_float("alpha", 0.05, 50.0, log=True),
            iterations=trial.suggest_int("iterations", 5, 30),
            weighting=trial.suggest_categorical("weighting", ("log", "binary")),
            view_weight=trial.suggest_float("view_weight", 0.0, 1.0) if has_views else default.view_weight)

    def score(config: RecsConfig) -> Scored[RecsConfig]:
        model = fitted(win, config, None if config is default else deadline)
        return Scored(model.config, scores(win, predictions(win, model)))

    return SearchSpace("recommendations", suggest, score, objective="ndcg_at_k", direction="maximize", default=default)


def baselines(win: Window, view_weight: float) -> Mapping[str, np.ndarray]:
    """Popularity (the gate's floor) and item-kNN predictions of the window's rows."""
    return {"popularity": predictions(win, None), "item_knn": predictions(win, None, knn=True, view_weight=view_weight)}
