"""Exact path-dependent TreeSHAP for LightGBM boosters (and XGBoost's and CatBoost's trees, as LightGBM dumps:
:func:`xgboost_dump`, :func:`catboost_dump`), compiled with numba, parallel over rows.

The values are LightGBM's own ``pred_contrib`` (Lundberg et al.'s path-dependent TreeSHAP, covers
from the training counts), to floating-point summation order (~1e-12), computed differently:

For one leaf ``l`` (value ``v``) of a tree, let ``P`` be the distinct features on its path (``d`` of
them), ``z_i`` the share of the training rows that follow the path's conditions on feature ``i``
(the product of the count ratios of those splits) and, for a row ``x``, ``O`` the features of ``P``
whose conditions ``x`` satisfies, ``Z = P \\ O``. Path-dependent TreeSHAP gives feature ``j``

    phi_j = v (o_j - z_j) sum_{S in P\\{j}} |S|!(d-1-|S|)!/d! prod_{i in S} o_i prod_{i notin S, i != j} z_i

and since ``o_i`` is 0 or 1 only subsets of ``O`` count. With ``H(T) = sum_{S in T} c(|S|) prod_{T\\S} z``
and ``pz = prod_{i in Z} z_i``:

    j in O: phi_j = v (1 - z_j) pz H(O \\ {j});      j in Z: phi_j = -v pz H(O)  (the same for all of Z)

``v H`` and ``pz`` depend on the row only through the bit mask ``O``, so the ``d`` values of a leaf are
tabulated once for all ``2^d`` masks (the idea of Fast TreeSHAP v2, Yang 2021): a leaf costs ``d`` additions
from one contiguous row of its table instead of LightGBM's ``O(d^2)``. Leaves with more than
:data:`MAX_TABLE_BITS` distinct path features (or beyond :data:`MAX_TABLE_BYTES` of tables) are computed from
the elementary symmetric polynomials of their ``z`` (``O(d^2)``, exact too).

Rows are explained in blocks, one per thread when the rows allow (numba ``prange``, at most
:data:`BLOCK_ROWS` rows each). A block's rows are first coded against the booster's sorted thresholds per
feature, so a split's decisions over all rows are one vectorised integer comparison; each row's decisions in
a tree form a 64-bit key (one bit per distinct split condition), and each distinct key is explained once (a walk of the tree
with the key's decisions) and added to every row that has it (customers with the same counts and recencies
share most keys: ~9 % of a tree's rows are distinct at 200,000 rows on the scoring benchmark's store), so the
cost per row falls as blocks grow.

Written here because no maintained library computes LightGBM's TreeSHAP faster than LightGBM itself
(``shap`` and ``fasttreeshap`` call into their own C++ over the same O(d^2) recursion per row, and
fasttreeshap is unmaintained). Categorical splits and linear trees are not handled: the caller falls
back to LightGBM (:func:`supports`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import get_num_threads, njit, prange

#: Leaves with up to this many distinct features on their path are tabulated (2 x 2^12 doubles = 64 kB)...
MAX_TABLE_BITS = 12
#: ... as long as a booster's tables stay within this many bytes (else fewer bits: a memory bound).
MAX_TABLE_BYTES = 256 * 2**20
#: At most this many rows deduplicated together: each block's distinct split patterns are explained once per
#: tree; blocks run in parallel, one per thread when the rows allow. Larger blocks share more patterns (fewer
#: explained: 15 % of a tree's rows at 65,536, 9 % at 200,000 on the scoring benchmark's store) but hold more
#: memory (~200 bytes a row: ~100 MB a block). A million rows on two threads: two blocks of 500,000, whose score
#: step took 43 s against 46.5 s as four blocks of 250,000 (docs/scale.md, "Scoring speed").
BLOCK_ROWS = 524_288
#: A tree with at most this many distinct split conditions numbers its patterns by their keys (a table of 2^bits
#: entries per block) instead of hashing every row's key. At a million customers, on blends a full search chose
#: (500k rows): LightGBM's 749 trees of 8 leaves 1.66x faster, XGBoost's 999 of depth 2 2.41x, CatBoost's ~370
#: oblivious trees of depth 8 1.2-1.4x, the same values bit for bit (docs/scale.md, "Session 27").
DIRECT_BITS = 12
_MISSING_TYPES = {"None": 0, "Zero": 1, "NaN": 2}
#: LightGBM's kZeroThreshold (1e-35f, a float): |x| at or below it is read as 0.
_ZERO = float(np.float32(1e-35))


@dataclass(frozen=True)
class TreeTables:
    """A booster's trees flattened into arrays for :func:`contributions`. Children: ``>= 0`` an
    internal node, ``< 0`` ``~leaf``; ``roots`` likewise (a single-leaf tree only adds to ``bias``)."""

    n_features: int
    bias: float
    roots: np.ndarray
    node_end: np.ndarray
    tree_features: np.ndarray
    tree_feature_count: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing: np.ndarray
    default_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    bit: np.ndarray
    condition: np.ndarray
    tree_conditions: np.ndarray
    leaf_value: np.ndarray
    leaf_bits: np.ndarray
    leaf_start: np.ndarray
    leaf_table: np.ndarray
    path_feature: np.ndarray
    path_zero: np.ndarray
    table: np.ndarray
    max_depth: int
    rank: np.ndarray
    feature_thresholds: np.ndarray
    feature_offset: np.ndarray


def supports(model: dict[str, Any]) -> bool:
    """Whether :func:`tables` can explain this ``booster.dump_model()``: one model per iteration, no
    averaged output (random forest), no categorical splits, no linear trees."""
    if model.get("num_tree_per_iteration", 1) != 1 or model.get("average_output"):
        return False
    for info in model["tree_info"]:
        if info.get("num_cat", 0):
            return False
        stack = [info["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_index" in node:
                if node["decision_type"] != "<=":
                    return False
                stack += [node["left_child"], node["right_child"]]
            elif "leaf_coeff" in node:
                return False
    return True


def catboost_dump(model: dict[str, Any]) -> dict[str, Any]:
    """A CatBoost model's JSON (``save_model(format="json")``: oblivious trees of float features) as the
    ``dump_model()`` of a LightGBM booster with the same trees, for :func:`tables`. A tree of depth ``d`` tests
    one condition per level, ``x > border`` setting bit ``i`` of the leaf index for its ``i``-th split; it
    becomes a full binary tree with the last split at the root (the order CatBoost's own ``ShapValues`` walk:
    equal to them to ~1e-15, tested), the leaves' training weights as their counts. The rows must be rounded
    to float32 first (:func:`float32_rows`), as CatBoost compares them; a missing value goes where CatBoost sends
    it (``nan_value_treatment``: ``AsTrue`` right, else left)."""
    scale = float(model["scale_and_bias"][0])
    features = model["features_info"]["float_features"]
    nan_left = [feature.get("nan_value_treatment") != "AsTrue" for feature in features]

    def node(splits: list[dict], values: list[float], weights: list[float], level: int, index: int) -> dict[str, Any]:
        if level < 0:
            return {"leaf_value": scale * float(values[index]), "leaf_count": float(weights[index])}
        split = splits[level]
        left, right = (node(splits, values, weights, level - 1, index | side << level) for side in (0, 1))
        count = sum(child.get("internal_count", child.get("leaf_count", 0.0)) for child in (left, right))
        f = int(split["float_feature_index"])
        return {"split_index": level, "split_feature": f, "threshold": float(split["border"]), "decision_type": "<=",
                "missing_type": "NaN", "default_left": nan_left[f], "internal_count": count, "left_child": left,
                "right_child": right}

    if set(model["features_info"]) - {"float_features"} or any(
            split.get("split_type", "FloatFeature") != "FloatFeature" for tree in model["oblivious_trees"]
            for split in tree["splits"]):
        raise ValueError("categorical or text features: use CatBoost's own ShapValues")
    trees = [{"tree_structure": node(tree["splits"], tree["leaf_values"], tree["leaf_weights"], len(tree["splits"]) - 1, 0)}
             for tree in model["oblivious_trees"]]
    return {"tree_info": trees, "max_feature_idx": len(features) - 1}


def xgboost_dump(model: dict[str, Any], num_trees: int) -> dict[str, Any]:
    """The first ``num_trees`` trees of an XGBoost booster's JSON (``save_raw("json")``, one tree per round) as
    a LightGBM ``dump_model()``, for :func:`tables`: XGBoost's ``x < split`` (float32) is ``x <= `` the double
    just below it, missing values take the node's default way, the covers are the nodes' hessian sums (what
    XGBoost's own TreeSHAP weighs by). The rows must be rounded to float32 first (:func:`float32_rows`). A
    ValueError for what a dump cannot hold: another booster than ``gbtree`` of one tree per round, categorical
    splits."""
    booster = model["learner"]["gradient_booster"]
    if booster.get("name") != "gbtree" or int(booster["model"]["gbtree_model_param"].get("num_parallel_tree", 1)) != 1:
        raise ValueError("not one gbtree tree per round: use XGBoost's own pred_contribs")
    trees = booster["model"]["trees"][:num_trees]

    def node(tree: dict[str, list], i: int) -> dict[str, Any]:
        if tree["left_children"][i] < 0:
            return {"leaf_value": float(tree["split_conditions"][i]), "leaf_count": float(tree["sum_hessian"][i])}
        return {"split_index": i, "split_feature": int(tree["split_indices"][i]),
                "threshold": float(np.nextafter(np.float64(np.float32(tree["split_conditions"][i])), -np.inf)),
                "decision_type": "<=", "missing_type": "NaN", "default_left": bool(tree["default_left"][i]),
                "internal_count": float(tree["sum_hessian"][i]),
                "left_child": node(tree, tree["left_children"][i]), "right_child": node(tree, tree["right_children"][i])}

    if any(tree.get("categories_nodes") for tree in trees):
        raise ValueError("categorical splits: use XGBoost's own pred_contribs")
    return {"tree_info": [{"tree_structure": node(tree, 0)} for tree in trees],
            "max_feature_idx": int(model["learner"]["learner_model_param"]["num_feature"]) - 1}


def float32_rows(X: np.ndarray) -> np.ndarray:
    """``X`` rounded to float32 and back (as XGBoost and CatBoost read their inputs), for their dumps' tables."""
    return np.asarray(X, dtype=np.float32).astype(np.float64)


def tables(model: dict[str, Any], num_trees: int | None = None) -> TreeTables:
    """The first ``num_trees`` trees (all: None) of a ``booster.dump_model()`` that :func:`supports`
    accepts, as arrays."""
    infos = model["tree_info"][:num_trees] if num_trees else model["tree_info"]
    feature, threshold, missing, default_left, left, right, bit = [], [], [], [], [], [], []
    leaf_value, leaf_count, leaf_bits, leaf_start, path_feature, path_zero = [], [], [], [], [], []
    roots, node_end, tree_features, bias, max_depth = [], [], [], 0.0, 1

    def visit(node: dict[str, Any], path: list[int], zeros: list[float], depth: int) -> int:
        """Flatten ``node``, reached with the distinct features ``path`` and their zero fractions
        ``zeros``, depth first (so a tree's splits are contiguous, its root first); its index."""
        nonlocal max_depth
        max_depth = max(max_depth, depth)
        if "split_index" not in node:
            leaf_value.append(float(node["leaf_value"]))
            leaf_count.append(float(node.get("leaf_count", 0)))
            leaf_bits.append(len(path))
            leaf_start.append(len(path_feature))
            path_feature.extend(path)
            path_zero.extend(zeros)
            return ~(len(leaf_value) - 1)
        index = len(feature)
        f = int(node["split_feature"])
        position = path.index(f) if f in path else len(path)
        feature.append(f)
        threshold.append(float(node["threshold"]))
        missing.append(_MISSING_TYPES[node["missing_type"]])
        default_left.append(bool(node["default_left"]))
        bit.append(position)
        left.append(0)
        right.append(0)
        own = float(node["internal_count"])
        for children, child in ((left, node["left_child"]), (right, node["right_child"])):
            share = float(child.get("internal_count", child.get("leaf_count", 0))) / own if own else 0.0
            child_path, child_zeros = list(path), list(zeros)
            if position == len(path):
                child_path.append(f)
                child_zeros.append(share)
            else:  # a feature split again: its conditions' fractions multiply (LightGBM unwinds and re-extends)
                child_zeros[position] *= share
            children[index] = visit(child, child_path, child_zeros, depth + 1)
        return index

    for info in infos:
        root = info["tree_structure"]
        first_leaf, first_split = len(leaf_value), len(feature)
        roots.append(visit(root, [], [], 1))
        node_end.append(len(feature))
        tree_features.append(sorted(set(feature[first_split:])))
        if "split_index" in root:  # the tree's expected value: leaves weighted by their training counts
            bias += float(np.dot(leaf_value[first_leaf:], leaf_count[first_leaf:])) / float(root["internal_count"])
        else:
            bias += float(root["leaf_value"])
    # a tree's distinct split conditions, numbered in node order: a row's decisions in the tree are one bit per
    # condition (an oblivious tree of depth d, CatBoost's, has d of them over its 2^d - 1 splits)
    condition, tree_conditions = [], []
    for first_split, end in zip([0, *node_end[:-1]], node_end):
        numbers: dict[tuple, int] = {}
        for node in range(first_split, end):
            condition.append(numbers.setdefault((feature[node], threshold[node], missing[node], default_left[node]),
                                                len(numbers)))
        tree_conditions.append(len(numbers))
    bits = np.asarray(leaf_bits, dtype=np.int64)
    cap = MAX_TABLE_BITS  # lowered until the tables fit their budget: the deepest leaves are computed per row
    while cap > 0 and 8 * int(np.sum(np.where(bits <= cap, bits << np.minimum(bits, cap), 0))) > MAX_TABLE_BYTES:
        cap -= 1
    tabulated = bits <= cap
    sizes = np.where(tabulated, bits << np.minimum(bits, cap), 0)  # d values for each of the 2^d masks
    leaf_table = np.where(tabulated, np.cumsum(sizes) - sizes, -1).astype(np.int64)
    start = np.asarray(leaf_start, dtype=np.int64)
    value = np.asarray(leaf_value, dtype=np.float64)
    zeros = np.asarray(path_zero, dtype=np.float64)
    table = np.empty(int(sizes.sum()), dtype=np.float64)
    _fill_tables(value, bits, start, leaf_table, zeros, table)
    used = np.zeros((len(infos), max([len(f) for f in tree_features] + [1])), dtype=np.int64)
    for tree, features in enumerate(tree_features):
        used[tree, :len(features)] = features
    as_int = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
    n_features = int(model["max_feature_idx"]) + 1
    split_feature, split_threshold = as_int(feature), np.asarray(threshold, dtype=np.float64)
    lists = [np.unique(split_threshold[split_feature == f]) for f in range(n_features)]
    offset = np.zeros(n_features + 1, dtype=np.int64)
    offset[1:] = np.cumsum([len(values) for values in lists])
    rank = np.asarray([np.searchsorted(lists[f], th) for f, th in zip(feature, threshold)], dtype=np.int64)
    return TreeTables(
        n_features=n_features, bias=bias, roots=as_int(roots), node_end=as_int(node_end),
        tree_features=used, tree_feature_count=as_int([len(f) for f in tree_features]), feature=as_int(feature),
        threshold=np.asarray(threshold, dtype=np.float64), missing=as_int(missing),
        default_left=np.asarray(default_left, dtype=np.bool_), left=as_int(left), right=as_int(right), bit=as_int(bit),
        condition=as_int(condition), tree_conditions=as_int(tree_conditions),
        leaf_value=value, leaf_bits=bits, leaf_start=start, leaf_table=leaf_table,
        path_feature=as_int(path_feature), path_zero=zeros, table=table, max_depth=max_depth,
        rank=rank, feature_thresholds=np.concatenate(lists + [np.empty(0)]), feature_offset=offset,
    )


def contributions(t: TreeTables, X: np.ndarray, block_rows: int | None = None) -> np.ndarray:
    """Rows x (features + 1) TreeSHAP values of the raw score, the bias (expected value) last, as
    LightGBM's ``predict(X, pred_contrib=True)``. ``block_rows``: rows deduplicated together (a
    block's distinct split patterns are explained once per tree; blocks run in parallel); by default the
    rows split evenly over numba's threads, at most :data:`BLOCK_ROWS` a block. The values do not depend on it."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != t.n_features:
        raise ValueError(f"X has shape {X.shape}; the booster has {t.n_features} features")
    XT = np.ascontiguousarray(X.T)  # read feature by feature: no copy for a DataFrame's values (column-major)
    if block_rows is None:
        block_rows = max(1, min(BLOCK_ROWS, -(-len(X) // get_num_threads())))
    out = np.zeros((t.n_features + 1, len(X)), dtype=np.float64)  # feature-major while summing, rows x features after
    if len(X):
        _explain(XT, out, int(block_rows), t.roots, t.node_end, t.tree_features, t.tree_feature_count, t.feature,
                 t.threshold, t.missing, t.default_left, t.left, t.right, t.bit, t.leaf_value, t.leaf_bits, t.leaf_start,
                 t.leaf_table, t.path_feature, t.path_zero, t.table, t.max_depth + 1, t.rank, t.feature_thresholds,
                 t.feature_offset, t.condition, t.tree_conditions)
        out[-1] += t.bias
    return out.T


@njit(cache=True)
def _shapley_weights(d: int) -> np.ndarray:
    """``c(k) = k! (d-1-k)! / d!`` for k = 0 .. d-1."""
    c = np.empty(max(d, 1), dtype=np.float64)
    for k in range(d):
        value = 1.0 / d
        # k! (d-1-k)! / (d-1)! = 1 / binom(d-1, k)
        for i in range(1, k + 1):
            value *= i / (d - k - 1 + i)
        c[k] = value
    return c


@njit(cache=True)
def _fill_tables(value, bits, start, leaf_table, zeros, table):
    """Per tabulated leaf and mask ``O`` of its path features, the values of its ``d`` path features in order:
    ``v (1 - z_j) pz(O) H(O \\ {j})`` for ``j`` in ``O``, ``-v pz(O) H(O)`` for the others, where
    ``pz(O) = prod_{i notin O} z_i`` and ``H`` from the elementary symmetric polynomials of ``z`` over ``O``."""
    for leaf in range(len(value)):
        if leaf_table[leaf] < 0:
            continue
        d = bits[leaf]
        z = zeros[start[leaf]:start[leaf] + d]
        c = _shapley_weights(d)
        n_masks = 1 << d
        poly = np.zeros((n_masks, d + 1), dtype=np.float64)  # elementary symmetric polynomials of z over O
        poly[0, 0] = 1.0
        for mask in range(1, n_masks):
            top = 0
            while (mask >> (top + 1)) != 0:
                top += 1
            rest = mask ^ (1 << top)
            poly[mask, 0] = 1.0
            for k in range(1, d + 1):
                poly[mask, k] = poly[rest, k] + z[top] * poly[rest, k - 1]
        h = np.empty(n_masks, dtype=np.float64)
        pz = np.empty(n_masks, dtype=np.float64)
        for mask in range(n_masks):
            size = 0
            product = 1.0
            for i in range(d):
                if (mask >> i) & 1:
                    size += 1
                else:
                    product *= z[i]
            total = 0.0
            for k in range(size + 1):  # |S| = k, |O \ S| = size - k
                if k < d:
                    total += c[k] * poly[mask, size - k]
            h[mask] = value[leaf] * total
            pz[mask] = product
        for mask in range(n_masks):
            share = pz[mask]
            negative = share * h[mask]
            at = leaf_table[leaf] + mask * d
            for i in range(d):
                flag = 1 << i
                if mask & flag:
                    table[at + i] = (1.0 - z[i]) * share * h[mask ^ flag]
                else:
                    table[at + i] = -negative


@njit(cache=True)
def _direct_leaf(o, v, d, z, features, row_out):
    """A leaf with too many path features to tabulate: the same formulas from the polynomials of z."""
    c = _shapley_weights(d)
    poly = np.zeros(d + 1, dtype=np.float64)
    poly[0] = 1.0
    size = 0
    product = 1.0
    for i in range(d):
        if (o >> i) & 1:
            size += 1
            for k in range(size, 0, -1):
                poly[k] += z[i] * poly[k - 1]
        else:
            product *= z[i]
    h_all = 0.0
    for k in range(size + 1):
        if k < d:
            h_all += c[k] * poly[size - k]
    without = np.empty(d + 1, dtype=np.float64)
    for i in range(d):
        if (o >> i) & 1:  # the polynomial of O \ {i}: divide by (1 + z_i t)
            without[0] = 1.0
            for k in range(1, size):
                without[k] = poly[k] - z[i] * without[k - 1]
            h = 0.0
            for k in range(size):
                h += c[k] * without[size - 1 - k]
            row_out[features[i]] += v * (1.0 - z[i]) * product * h
        else:
            row_out[features[i]] -= v * product * h_all


@njit(cache=True)
def _goes_left(x, node, feature, threshold, missing, default_left):
    """LightGBM's numerical decision (``Tree::NumericalDecision``), missing values included."""
    value = x[feature[node]]
    kind = missing[node]
    if np.isnan(value):
        if kind == 2:
            return default_left[node]
        value = 0.0  # NaN where the split has no missing direction: read as 0
    elif -_ZERO <= value <= _ZERO:
        value = 0.0  # LightGBM reads |x| <= kZeroThreshold as 0 when it loads a row
    if kind == 1 and value == 0.0:
        return default_left[node]
    return value <= threshold[node]


@njit(cache=True)
def _explain_tree(x, key, keyed, row_out, root, feature, threshold, missing, default_left, left, right, bit, leaf_value,
                  leaf_bits, leaf_start, leaf_table, path_feature, path_zero, table, stack_node, stack_failed, condition):
    """Add one tree's TreeSHAP values to ``row_out``: every leaf, with the mask of the path features whose
    conditions are satisfied (one depth-first walk of the tree). The decisions are row ``x``'s, or with
    ``keyed`` a pattern's: bit ``condition[node]`` of ``key`` set where its rows go left."""
    stack_node[0] = root
    stack_failed[0] = 0
    top = 1
    while top > 0:
        top -= 1
        node = stack_node[top]
        failed = stack_failed[top]
        while node >= 0:  # down the left children, the right ones stacked
            if keyed:
                goes_left = (key >> condition[node]) & 1 == 1
            else:
                goes_left = _goes_left(x, node, feature, threshold, missing, default_left)
            flag = 1 << bit[node]
            stack_node[top] = right[node]
            stack_failed[top] = failed | flag if goes_left else failed
            top += 1
            if not goes_left:
                failed |= flag
            node = left[node]
        leaf = ~node
        d = leaf_bits[leaf]
        begin = leaf_start[leaf]
        o = ((1 << d) - 1) & ~failed
        base = leaf_table[leaf]
        if base < 0:
            _direct_leaf(o, leaf_value[leaf], d, path_zero[begin:begin + d], path_feature[begin:begin + d], row_out)
            continue
        at = base + o * d
        for i in range(d):
            row_out[path_feature[begin + i]] += table[at + i]


@njit(cache=True)
def _column_codes(column, first, last, thresholds, codes, status):
    """Per row ``first .. last - 1`` of one feature's ``column``: how many of the feature's sorted split
    ``thresholds`` are below its value (``x <= threshold k`` iff ``code <= k``) and its status, 0 a number, 1 zero
    (or below LightGBM's zero threshold), 2 NaN; NaN is coded as 0 for the splits without a NaN direction, as
    LightGBM reads it. Returns how many rows are zero or NaN."""
    special = 0
    for row in range(last - first):
        value = column[first + row]
        if np.isnan(value):
            status[row] = 2
            value = 0.0
        elif -_ZERO <= value <= _ZERO:
            status[row] = 1
            value = 0.0
        else:
            status[row] = 0
        if status[row] != 0:
            special += 1
        low = 0
        high = len(thresholds)
        while low < high:  # the first threshold >= value
            middle = (low + high) >> 1
            if thresholds[middle] < value:
                low = middle + 1
            else:
                high = middle
        codes[row] = low
    return special


@njit(cache=True)
def _insert(key, table, patterns, pattern_keys):
    """The pattern number of ``key`` in an open-addressing table of (key, number) pairs; -1 if it is new (then
    numbered ``patterns``)."""
    mask = len(table) // 2 - 1
    mixed = key * -7046029254386353131  # 0x9E3779B97F4A7C15, wrapping
    slot = (mixed ^ (mixed >> 29)) & mask
    while table[2 * slot + 1] >= 0:
        if table[2 * slot] == key:
            return table[2 * slot + 1]
        slot = (slot + 1) & mask
    table[2 * slot] = key
    table[2 * slot + 1] = patterns
    pattern_keys[patterns] = key
    return -1


@njit(cache=True)
def _block_codes(XT, first, last, feature_thresholds, feature_offset):
    """The block's rows coded (:func:`_column_codes`) feature-major, so a split's decisions over the rows are one
    vectorised comparison; and, per feature, the rows whose value is zero or NaN (``special``, CSR by
    ``special_start``), which a split with a missing-value direction sends its default way. ``XT`` is features x
    rows: each feature's values are read in order."""
    rows = last - first
    n_features = XT.shape[0]
    codes = np.empty((n_features, rows), dtype=np.int32)
    status = np.empty((n_features, rows), dtype=np.int8)
    counts = np.zeros(n_features + 1, dtype=np.int64)
    for f in range(n_features):
        counts[f + 1] = _column_codes(XT[f], first, last, feature_thresholds[feature_offset[f]:feature_offset[f + 1]],
                                      codes[f], status[f])
    special_start = np.cumsum(counts)
    special = np.empty(special_start[-1], dtype=np.int64)
    filled = special_start[:-1].copy()
    for f in range(n_features):
        for row in range(rows):
            if status[f, row] != 0:
                special[filled[f]] = row
                filled[f] += 1
    return codes, status, special, special_start


@njit(cache=True)
def _tree_keys(codes, status, special, special_start, root, end, feature, rank, missing, default_left, keys, condition):
    """Each row's split decisions in one tree as a key (bit ``condition[node]`` set: the row goes left), each
    distinct condition decided once (at its first node)."""
    keys[:] = 0
    seen = 0
    for node in range(root, end):
        shift = condition[node]
        if shift < seen:  # a condition an earlier node of the tree decided
            continue
        seen += 1
        f = feature[node]
        column = codes[f]
        limit = rank[node]
        for row in range(len(keys)):  # vectorised by LLVM
            keys[row] |= np.int64(column[row] <= limit) << shift
        kind = missing[node]
        if kind == 0:
            continue
        flag = np.int64(1) << shift
        for i in range(special_start[f], special_start[f + 1]):
            row = special[i]
            state = status[f, row]
            if state == 2 or kind == 1:  # NaN (either kind) or zero where zero is missing: the default way
                if default_left[node]:
                    keys[row] |= flag
                else:
                    keys[row] &= ~flag


@njit(cache=True)
def _patterns(keys, pattern_keys, pattern_of):
    """The distinct keys (``pattern_keys``, their count returned) and each row's pattern number
    (``pattern_of``), by an open-addressing table grown to stay at most half full."""
    capacity = 1024
    table = np.full(2 * capacity, -1, dtype=np.int64)
    patterns = 0
    for row in range(len(keys)):
        pattern = _insert(keys[row], table, patterns, pattern_keys)
        if pattern < 0:
            pattern = patterns
            patterns += 1
            if 2 * patterns > capacity:
                capacity *= 2
                table = np.full(2 * capacity, -1, dtype=np.int64)
                for old in range(patterns):
                    _insert(pattern_keys[old], table, old, pattern_keys)
        pattern_of[row] = pattern
    return patterns


@njit(cache=True)
def _seen_keys(keys, n_keys, seen, pattern_keys):
    """The distinct keys of a tree with ``n_keys`` possible ones (``pattern_keys``, their count returned), by a
    table of flags: each key is its own pattern number (:data:`DIRECT_BITS`)."""
    seen[:n_keys] = False
    for row in range(len(keys)):
        seen[keys[row]] = True
    patterns = 0
    for key in range(n_keys):
        if seen[key]:
            pattern_keys[patterns] = key
            patterns += 1
    return patterns


@njit(parallel=True, cache=True)
def _explain(XT, out, block_rows, roots, node_end, tree_features, tree_feature_count, feature, threshold, missing,
             default_left, left, right, bit, leaf_value, leaf_bits, leaf_start, leaf_table, path_feature, path_zero,
             table, stack_size, rank, feature_thresholds, feature_offset, condition, tree_conditions):
    """Blocks of rows in parallel; in a block, tree by tree, each distinct pattern of the tree's split
    decisions (a 64-bit key: one bit per distinct split condition) is explained once and added to every row
    that has it.
    The rows are coded once against the booster's thresholds, so a tree's keys are integer comparisons
    over whole columns."""
    n = XT.shape[1]
    n_blocks = (n + block_rows - 1) // block_rows
    for block in prange(n_blocks):
        first = block * block_rows
        last = min(n, first + block_rows)
        rows = last - first
        codes, status, special, special_start = _block_codes(XT, first, last, feature_thresholds, feature_offset)
        keys = np.empty(rows, dtype=np.int64)
        pattern_keys = np.empty(rows, dtype=np.int64)
        pattern_of = np.empty(rows, dtype=np.int64)
        values = np.empty((tree_features.shape[1], max(rows, 1 << DIRECT_BITS)), dtype=np.float64)
        seen = np.zeros(1 << DIRECT_BITS, dtype=np.bool_)
        scratch = np.zeros(XT.shape[0], dtype=np.float64)
        x = np.zeros(XT.shape[0], dtype=np.float64)  # one row's values, where a tree is walked row by row
        stack_node = np.empty(stack_size, dtype=np.int64)
        stack_failed = np.empty(stack_size, dtype=np.int64)
        for tree in range(len(roots)):
            root = roots[tree]
            if root < 0:
                continue
            end = node_end[tree]
            used = tree_feature_count[tree]
            if tree_conditions[tree] > 64:  # too many conditions for a 64-bit key: every row explained on its own
                for row in range(first, last):
                    x[:] = XT[:, row]
                    _explain_tree(x, 0, False, scratch, root, feature, threshold, missing, default_left, left,
                                  right, bit, leaf_value, leaf_bits, leaf_start, leaf_table, path_feature, path_zero,
                                  table, stack_node, stack_failed, condition)
                    for k in range(used):
                        f = tree_features[tree, k]
                        out[f, row] += scratch[f]
                        scratch[f] = 0.0
                continue
            _tree_keys(codes, status, special, special_start, root, end, feature, rank, missing, default_left, keys,
                       condition)
            direct = tree_conditions[tree] <= DIRECT_BITS  # a key is its own pattern number: no hashing
            if direct:
                patterns = _seen_keys(keys, 1 << tree_conditions[tree], seen, pattern_keys)
                lookup = keys
            else:
                patterns = _patterns(keys, pattern_keys, pattern_of)
                lookup = pattern_of
            for pattern in range(patterns):
                key = pattern_keys[pattern]
                _explain_tree(x, key, True, scratch, root, feature, threshold, missing, default_left, left, right,
                              bit, leaf_value, leaf_bits, leaf_start, leaf_table, path_feature, path_zero, table,
                              stack_node, stack_failed, condition)
                slot = key if direct else pattern  # where ``lookup`` finds it
                for k in range(used):
                    f = tree_features[tree, k]
                    values[k, slot] = scratch[f]
                    scratch[f] = 0.0
            for k in range(used):  # feature by feature over the rows: a vectorised gather
                column = out[tree_features[tree, k], first:last]
                explained = values[k]
                for row in range(rows):
                    column[row] += explained[lookup[row]]
