"""Top-K lists under the business rules: the ALS scores (or a baseline's) for customers with history,
segment popularity for the cold start, the same rules and the same ranking for all.

The rules (:class:`~ml.families.recommend.config.Rules`): products outside tonight's catalogue, in an
excluded category, out of stock (latest ``on_hand <= 0``, when asked; unknown stock passes) or bought
by the customer in the last ``exclude_bought_days`` days are never candidates; walking down the
customer's scores, a product is taken unless ``max_per_category`` of its category are in the list
already, until there are ``k`` (fewer when fewer candidates are left).

Reasons: a model recommendation names the product of the customer's purchase history that adds most
to its score ("bought with <name>", :class:`~ml.families.recommend.estimator.Solved`; "bought it before"
when that is the product itself, a reorder), or says "model" when no purchase adds anything (the
score comes from views, or from the customer's position in the factor space alone). Purchases in an
excluded category (postage, fees) explain nothing. A cold-start customer (no history on a product the model knows) gets the products
most bought in the last :data:`~ml.families.recommend.config.POPULARITY_DAYS` days by the buyers of
their segment (country x acquisition channel; with fewer than
:data:`~ml.families.recommend.config.MIN_SEGMENT_BUYERS` buyers, their country; then everybody):
"popular in your segment"; products no buyer of the segment bought come after them by overall
popularity, and so does everything for a customer without a segment: "popular".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import SEGMENT_COLUMNS, RecommendationInput
from ml.families.recommend.config import MIN_SEGMENT_BUYERS, Rules
from ml.families.recommend.estimator import ItemFactors, Strengths, fold_in, popularity, strengths
from ml.families.recommend.kernels import item_scores

PUBLISHED_COLUMNS: tuple[str, ...] = ("customer_id", "rank", "product_id", "category", "score", "reason",
                                      "reason_product_id", "source")
MODEL, SEGMENT_POPULARITY, POPULARITY = "model", "segment_popularity", "popularity"
SOURCES: tuple[str, ...] = (MODEL, SEGMENT_POPULARITY, POPULARITY)
#: how far below a segment's own products the overall popularity ranks the filler after them
_FILLER_SCALE = 1e-6
#: customers scored together (the dense score block is customers x catalogue)
BATCH_CUSTOMERS = 1024


@dataclass(frozen=True)
class Catalogue:
    """The products that may be recommended tonight, sorted by id, with category codes, names, whether
    their category is excluded, and the global rules' verdict (``allowed``: category not excluded, in
    stock or stock unknown)."""

    product_ids: np.ndarray
    category_codes: np.ndarray
    categories: np.ndarray
    names: np.ndarray
    excluded_category: np.ndarray
    allowed: np.ndarray

    def index(self, product_ids: np.ndarray) -> np.ndarray:
        """Each product's position here, -1 when it is not in the catalogue."""
        return positions_in(self.product_ids, product_ids)


def candidate_catalogue(catalogue: pd.DataFrame, rules: Rules) -> Catalogue:
    frame = catalogue.drop_duplicates("product_id").sort_values("product_id", kind="stable")
    category = frame["category"].astype(object).where(frame["category"].notna(), "")
    codes, names = pd.factorize(category, sort=True)
    excluded_category = category.isin(rules.exclude_categories).to_numpy()
    allowed = ~excluded_category
    if rules.exclude_out_of_stock:
        allowed &= ~(frame["on_hand"].to_numpy(dtype=np.float64) <= 0)  # NaN (unknown) passes
    return Catalogue(frame["product_id"].to_numpy(dtype=np.int64), codes.astype(np.int64),
                     np.asarray(names, dtype=object), frame["name"].to_numpy(dtype=object), excluded_category, allowed)


#: (customer ids, catalogue) -> blocks of (positions of the customers it scores, their scores)
WarmScorer = Callable[[np.ndarray, "Catalogue"], Iterator[tuple[np.ndarray, np.ndarray]]]


def positions_in(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Each of ``ids``' position in ``sorted_ids``, -1 when it is not there."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(sorted_ids):
        return np.full(len(ids), -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    return np.where(sorted_ids[at] == ids, at, -1)


@dataclass(frozen=True)
class Ranked:
    """Each customer's list: catalogue positions ``items`` (n, k; -1 none), ``scores``, ``source``
    (codes into :data:`SOURCES`) and ``reason_items`` (catalogue position of the explaining purchase, -1)."""

    customer_ids: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    source: np.ndarray
    reason_items: np.ndarray

    def product_ids(self, catalogue: Catalogue) -> np.ndarray:
        """(n, k) product ids, -1 where the list is shorter."""
        return np.where(self.items >= 0, catalogue.product_ids[np.maximum(self.items, 0)], -1)

    def frame(self, catalogue: Catalogue) -> pd.DataFrame:
        """The published rows (:data:`PUBLISHED_COLUMNS`), by customer and rank."""
        row, slot = np.nonzero(self.items >= 0)
        items, source = self.items[row, slot], self.source[row, slot]
        reason_item = self.reason_items[row, slot]
        explained = reason_item >= 0
        names = catalogue.names[np.maximum(reason_item, 0)]
        reason = np.where(source == SOURCES.index(SEGMENT_POPULARITY), "popular in your segment",
                          np.where(source == SOURCES.index(POPULARITY), "popular", "model")).astype(object)
        again = explained & (reason_item == items)
        reason[explained] = ["bought with " + str(name) for name in names[explained]]
        reason[again] = "bought it before"
        reason_product = catalogue.product_ids[np.maximum(reason_item, 0)]
        frame = pd.DataFrame({
            "customer_id": self.customer_ids[row].astype(np.int64), "rank": (slot + 1).astype(np.int64),
            "product_id": catalogue.product_ids[items].astype(np.int64),
            "category": catalogue.categories[catalogue.category_codes[items]].astype(object),
            "score": self.scores[row, slot].astype(np.float64), "reason": reason,
            "reason_product_id": pd.arrays.IntegerArray(reason_product.astype(np.int64), ~explained),
            "source": np.asarray(SOURCES, dtype=object)[source],
        })
        return frame[list(PUBLISHED_COLUMNS)]


def recommend(model: ItemFactors | None, data: RecommendationInput, as_of: pd.Timestamp, rules: Rules, *,
              customer_ids: np.ndarray | None = None, segments: bool = True,
              warm_scorer: WarmScorer | None = None) -> tuple[Ranked, Catalogue]:
    """The lists of ``customer_ids`` (default: every customer of ``data``), from the history of ``data``
    before ``as_of``: ALS scores (``model``; None: popularity for everybody) for customers with history
    on the model's products, popularity (within their segment unless ``segments`` is False) for the
    others. ``warm_scorer`` replaces ALS (the item-kNN benchmark): given the customer ids and the
    catalogue, it yields blocks of (positions of the customers it scores, scores (customers x catalogue))."""
    catalogue = candidate_catalogue(data.catalogue, rules)
    history = data.before(as_of)
    ids = np.asarray(data.customers["customer_id"].drop_duplicates() if customer_ids is None else customer_ids,
                     dtype=np.int64)
    ranked = _empty_ranked(ids, rules.k)
    excluded = _recently_bought(history.purchases, as_of, rules, ids, catalogue)
    warm = np.zeros(len(ids), dtype=bool)
    if warm_scorer is not None:
        for positions, scores in warm_scorer(ids, catalogue):
            _rank_block(ranked, positions, scores, catalogue, excluded, rules, SOURCES.index(MODEL))
            warm[positions] = True
    elif model is not None:
        # the history cells of these customers alone (a partition's: each customer's cells are their own rows'); the
        # popularity below ranks by everybody's
        cells = strengths(history if customer_ids is None else history.of_customers(ids), model.config.view_weight)
        warm = _rank_model(ranked, model, cells, pd.Index(ids).get_indexer(cells.customer_id), catalogue, excluded,
                           rules)
    warm &= ranked.items[:, 0] >= 0  # nothing the model knows may be recommended: popularity instead
    _rank_popular(ranked, np.flatnonzero(~warm), history, as_of, catalogue, excluded, rules, segments, data.customers)
    return ranked, catalogue


def top_k(scores: np.ndarray, categories: np.ndarray, k: int, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the positions of the ``k`` best finite scores with at most ``cap`` per category (codes
    ``categories``), best first: (n, k) positions (-1 where fewer qualify) and their scores (NaN)."""
    n, m = scores.shape
    chosen = np.full((n, k), -1, dtype=np.int64)
    values = np.full((n, k), np.nan)
    width = min(m, max(4 * k, k + 8))
    todo = np.arange(n)
    while len(todo) and m:
        block = scores[todo]
        if width < m:
            part = np.argpartition(-block, width - 1, axis=1)[:, :width]
        else:
            part = np.broadcast_to(np.arange(m), (len(todo), m)).copy()
        picked = np.take_along_axis(block, part, 1)
        order = np.argsort(-picked, axis=1, kind="stable")
        part, picked = np.take_along_axis(part, order, 1), np.take_along_axis(picked, order, 1)
        finite = np.isfinite(picked)
        keep = finite & (_rank_in_group(categories[part]) < cap)
        taken = np.cumsum(keep, axis=1)
        done = (taken[:, -1] >= k) | (width >= m) | ~finite[:, -1]
        pick = keep & (taken <= k) & done[:, None]
        r, c = np.nonzero(pick)
        chosen[todo[r], taken[r, c] - 1] = part[r, c]
        values[todo[r], taken[r, c] - 1] = picked[r, c]
        todo, width = todo[~done], min(m, width * 4)
    return chosen, values


def _rank_in_group(codes: np.ndarray) -> np.ndarray:
    """For each position of each row, how many earlier positions of the row share its code."""
    n, w = codes.shape
    order = np.argsort(codes, axis=1, kind="stable")
    ordered = np.take_along_axis(codes, order, 1)
    position = np.broadcast_to(np.arange(w), (n, w))
    starts = np.where(np.c_[np.ones((n, 1), dtype=bool), ordered[:, 1:] != ordered[:, :-1]], position, 0)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, position - np.maximum.accumulate(starts, axis=1), 1)
    return rank


def _empty_ranked(ids: np.ndarray, k: int) -> Ranked:
    shape = (len(ids), k)
    return Ranked(ids, np.full(shape, -1, dtype=np.int64), np.full(shape, np.nan), np.full(shape, -1, dtype=np.int64),
                  np.full(shape, -1, dtype=np.int64))


def _recently_bought(purchases: pd.DataFrame, as_of: pd.Timestamp, rules: Rules, ids: np.ndarray,
                     catalogue: Catalogue) -> sp.csr_matrix:
    """(customers x catalogue) True where the customer bought the product in the last ``exclude_bought_days``."""
    shape = (len(ids), len(catalogue.product_ids))
    if rules.exclude_bought_days <= 0 or not len(purchases):
        return sp.csr_matrix(shape, dtype=bool)
    recent = purchases.loc[purchases["day"] >= as_of - pd.Timedelta(days=rules.exclude_bought_days)]
    rows = pd.Index(ids).get_indexer(recent["customer_id"].to_numpy())
    columns = catalogue.index(recent["product_id"].to_numpy(dtype=np.int64))
    keep = (rows >= 0) & (columns >= 0)
    matrix = sp.csr_matrix((np.ones(int(keep.sum()), dtype=bool), (rows[keep], columns[keep])), shape=shape)
    matrix.sum_duplicates()
    return matrix


def _masked(scores: np.ndarray, positions: np.ndarray, catalogue: Catalogue, excluded: sp.csr_matrix) -> np.ndarray:
    """``scores`` of the customers at ``positions`` with every candidate the rules forbid at -inf."""
    scores = np.where(catalogue.allowed[None, :], scores, -np.inf)
    blocked = excluded[positions].tocoo()
    scores[blocked.row, blocked.col] = -np.inf
    return scores


def _rank_block(ranked: Ranked, at: np.ndarray, scores: np.ndarray, catalogue: Catalogue,
                excluded: sp.csr_matrix, rules: Rules, source: int) -> None:
    chosen, values = top_k(_masked(scores, at, catalogue, excluded), catalogue.category_codes, rules.k,
                           rules.max_per_category)
    ranked.items[at], ranked.scores[at] = chosen, values
    ranked.source[at] = np.where(chosen >= 0, source, -1)


def _rank_model(ranked: Ranked, model: ItemFactors, cells: Strengths, rows: np.ndarray, catalogue: Catalogue,
                excluded: sp.csr_matrix, rules: Rules) -> np.ndarray:
    """ALS lists (with their explanations) of the customers with history on the model's products; which
    customers those are."""
    item = positions_in(model.product_ids, cells.product_id)
    known = (rows >= 0) & (item >= 0)
    warm = np.zeros(len(ranked.customer_ids), dtype=bool)
    in_catalogue = catalogue.index(model.product_ids)
    scored = in_catalogue >= 0
    model_of = np.full(len(catalogue.product_ids), -1, dtype=np.int64)
    model_of[in_catalogue[scored]] = np.flatnonzero(scored)
    # a purchase explains a recommendation when the store can name it and its category is not excluded (postage)
    explains = scored & ~catalogue.excluded_category[np.maximum(in_catalogue, 0)]
    factors_t = np.ascontiguousarray(model.factors[scored].T)
    for solved in fold_in(model, rows[known], item[known], cells.n[known], cells.bought[known]):
        scores = np.full((len(solved.positions), len(catalogue.product_ids)), -np.inf)
        scores[:, in_catalogue[scored]] = item_scores(np.ascontiguousarray(solved.x, dtype=np.float64), factors_t)
        chosen, values = top_k(_masked(scores, solved.positions, catalogue, excluded), catalogue.category_codes,
                               rules.k, rules.max_per_category)
        chosen_items = np.where(chosen >= 0, model_of[np.maximum(chosen, 0)], -1)
        explainer = solved.bought & explains[np.maximum(solved.items, 0)]
        terms = np.where(explainer[:, None, :], solved.contributions(chosen_items), -np.inf)
        best = terms.argmax(axis=2)
        best_value = np.take_along_axis(terms, best[:, :, None], 2)[:, :, 0]
        reason = in_catalogue[np.maximum(np.take_along_axis(solved.items, best, 1), 0)]
        explained = (chosen >= 0) & (best_value > 0)
        at = solved.positions
        ranked.items[at], ranked.scores[at] = chosen, values
        ranked.source[at] = np.where(chosen >= 0, SOURCES.index(MODEL), -1)
        ranked.reason_items[at] = np.where(explained, reason, -1)
        warm[at] = True
    return warm


def _rank_popular(ranked: Ranked, positions: np.ndarray, history: RecommendationInput, as_of: pd.Timestamp,
                  catalogue: Catalogue, excluded: sp.csr_matrix, rules: Rules, segments: bool,
                  customers: pd.DataFrame) -> None:
    """Popularity lists (segment, then overall) for the customers at ``positions``."""
    if not len(positions):
        return
    buyers = popularity(history.purchases, as_of)
    segment_of = customers.drop_duplicates("customer_id").set_index("customer_id")
    n_items = len(catalogue.product_ids)
    overall = _shares(buyers, catalogue)
    keys = np.full(len(positions), "", dtype=object)
    vectors: dict[str, np.ndarray] = {"": overall}
    if segments and len(buyers):
        ids = ranked.customer_ids[positions]
        for level in (SEGMENT_COLUMNS, SEGMENT_COLUMNS[:1]):
            if not set(level) <= set(segment_of.columns):
                continue
            level_of_buyer = _segment_keys(segment_of.reindex(buyers["customer_id"].to_numpy())[list(level)])
            level_of_customer = _segment_keys(segment_of.reindex(ids)[list(level)])
            sizes = pd.Series(buyers["customer_id"].to_numpy()).groupby(level_of_buyer).nunique()
            big = set(sizes.index[(sizes >= MIN_SEGMENT_BUYERS) & (sizes.index != "")])
            for key in sorted(big & set(level_of_customer[keys == ""])):
                vectors[key] = _shares(buyers.loc[level_of_buyer == key], catalogue)
            keys = np.where((keys == "") & np.isin(level_of_customer, list(big)), level_of_customer, keys)
    for key in sorted(set(keys)):
        group = positions[keys == key]
        share = vectors[key]
        in_segment = (share > 0) if key != "" else np.zeros(n_items, dtype=bool)
        score = np.where(in_segment, share, _FILLER_SCALE * overall) if key != "" else overall
        score = np.where(score > 0, score, -np.inf)  # nobody bought it: not popular anywhere
        for start in range(0, len(group), BATCH_CUSTOMERS):
            at = group[start:start + BATCH_CUSTOMERS]
            _rank_block(ranked, at, np.tile(score, (len(at), 1)), catalogue, excluded, rules, SOURCES.index(POPULARITY))
            chosen = ranked.items[at]
            ranked.source[at] = np.where((chosen >= 0) & in_segment[np.maximum(chosen, 0)],
                                         SOURCES.index(SEGMENT_POPULARITY), ranked.source[at])


def _shares(buyers: pd.DataFrame, catalogue: Catalogue) -> np.ndarray:
    """Share of ``buyers``' distinct customers who bought each catalogue product."""
    share = np.zeros(len(catalogue.product_ids))
    if not len(buyers):
        return share
    at = catalogue.index(buyers["product_id"].to_numpy(dtype=np.int64))
    np.add.at(share, at[at >= 0], 1.0)
    return share / buyers["customer_id"].nunique()


def _segment_keys(frame: pd.DataFrame) -> np.ndarray:
    """One text key per row of the segment columns ("" when any is missing)."""
    values = frame.astype(object)
    missing = values.isna().any(axis=1).to_numpy()
    if not len(values) or not len(values.columns):
        return np.full(len(values), "", dtype=object)
    text = [values[column].astype(str) for column in values.columns]
    joined = text[0].str.cat(text[1:], sep="\x1f") if len(text) > 1 else text[0]  # a column at a time, not a row
    return np.where(missing, "", joined.to_numpy(dtype=object)).astype(object)
