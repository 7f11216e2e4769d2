"""Customers per second of scoring every customer family with its top factors (issue 22 item 2).

Draws a synthetic store (``revopt.sample_data.synth``, in chunks of 50k customers), builds tonight's
customer features for all of them and features + labels one horizon earlier for the first chunk, and
trains champions shaped like the ones tuning picks (LightGBM, ``--trees`` x ``--leaves``; the
classifiers with their BG/NBD columns and a Platt calibrator, CLV a Tweedie booster). Then, per
family and for the three together (churn on its active customers only, as ``score_customers`` does):

- ``predict``: the pyfunc's ``predict``, the limit;
- ``contributions``: TreeSHAP values, "before" (the pattern-by-pattern LightGBM calls this replaced,
  copied below so the ratio stays measurable, on the first ``--before-rows`` rows) and "after"
  (:func:`ml.families.classifier.lightgbm_contributions`, :mod:`ml.families.treeshap`);
- ``factors``: :func:`ml.families.explain.factors_json` (contributions + values + JSON);
- ``score step``: predict + factors of every family + the combined JSON, what ``score_customers``
  computes per customer (reading the features and writing the parquet file left out).

Run from the repository root (``--profile``: a cProfile of one "after" score step):

    PYTHONPATH=. .venv/bin/python benchmarks/scoring.py [--customers 200000] [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime as dt
import pstats
import time
from contextlib import contextmanager
from typing import Any, Callable
from unittest import mock

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from benchmarks.customer_models import synthetic_frames
from features.customer import FEATURE_COLUMNS, active_mask, clv_label, features_at, purchase_label
from ml.families import classifier as classifier_module
from ml.families.binary import CalibratedClassifierModel, fit_btyd_features, with_btyd
from ml.families.classifier import BinaryModel, CalibratedModel, Calibrator, ModelSpec
from ml.families.clv import model as clv_model_module
from ml.families.clv.model import GBM, ClvModel
from ml.families.explain import factors_json
from ml.pipeline import _combine_json
from revopt.sample_data.synth import generate_store_chunks

START = dt.date(2023, 1, 1)
DAYS = 500
HORIZON = 30
ACTIVE_DAYS = 90
_INT64_KEYS = 2**62


def legacy_contributions(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    """``lightgbm_contributions`` before issue 22 (commit 63cbf09), verbatim: LightGBM's TreeSHAP called tree by
    tree on each tree's distinct split patterns."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    if not len(X):
        return np.zeros((0, X.shape[1] + 1))
    trees = booster.trees_to_dataframe()
    splits = trees[trees["split_feature"].notna()]
    if (np.isnan(X).any() or booster.num_model_per_iteration() != 1 or (splits["decision_type"] != "<=").any()
            or (splits["missing_type"] == "Zero").any()):
        return booster.predict(X, pred_contrib=True)
    column = {name: i for i, name in enumerate(booster.feature_name())}
    thresholds = {feature: np.unique(group["threshold"].to_numpy(dtype=np.float64))
                  for feature, group in splits.groupby("split_feature")}
    codes = {feature: np.searchsorted(th, X[:, column[feature]], side="left").astype(np.int32)
             for feature, th in thresholds.items()}
    out = np.zeros((len(X), X.shape[1] + 1))
    for tree_index, tree in splits.groupby("tree_index", sort=True):
        key = np.zeros(len(X), dtype=np.int64)
        size = 1
        for feature, group in tree.groupby("split_feature"):
            own = np.unique(group["threshold"].to_numpy(dtype=np.float64))
            local = np.searchsorted(own, np.append(thresholds[feature], np.inf), side="left")
            size *= len(own) + 1
            if size >= _INT64_KEYS:
                return booster.predict(X, pred_contrib=True)
            key = key * (len(own) + 1) + local[codes[feature]]
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        out += booster.predict(X[first], pred_contrib=True, start_iteration=int(tree_index), num_iteration=1)[inverse]
    constant = sorted(set(trees["tree_index"]) - set(splits["tree_index"]))
    for tree_index in constant:
        out[:, -1] += booster.predict(X[:1], pred_contrib=True, start_iteration=int(tree_index), num_iteration=1)[0, -1]
    return out


@contextmanager
def legacy():
    """Every family explained by :func:`legacy_contributions` inside the block."""
    with mock.patch.object(classifier_module, "lightgbm_contributions", legacy_contributions), \
            mock.patch.object(clv_model_module, "lightgbm_contributions", legacy_contributions):
        yield


def store_features(customers: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tonight's features of every customer; the first chunk's features one horizon earlier with
    their labels (purchase, spend) for training."""
    run_date = START + dt.timedelta(days=DAYS)
    cutoff = pd.Timestamp(run_date - dt.timedelta(days=HORIZON))
    tonight, fit, products = [], None, None
    for chunk in generate_store_chunks(customers, DAYS, START, seed, chunk_customers=50_000):
        products = chunk.shop.get("products", products)  # store-wide tables come with the first chunk only
        frames = synthetic_frames(dataclasses.replace(chunk, shop={**chunk.shop, "products": products}), run_date)
        tonight.append(features_at(frames, pd.Timestamp(run_date), 730))
        if fit is None:
            fit = features_at(frames, cutoff, 730)
            bought = purchase_label(fit.index, frames["orders"], cutoff, HORIZON)
            spend = clv_label(fit.index, frames["orders"], cutoff, HORIZON)
            labels = pd.DataFrame({"bought": bought, "spend": spend})
    return pd.concat(tonight), fit, labels


def train_models(fit: pd.DataFrame, labels: pd.DataFrame, trees: int, leaves: int, seed: int) -> dict[str, Any]:
    """Champions shaped like tuning's: propensity, churn (active customers) and CLV."""
    params = {"num_leaves": leaves, "learning_rate": 0.05, "min_child_samples": 20, "feature_fraction": 0.9}
    base = {"verbosity": -1, "seed": seed, "deterministic": True, "force_row_wise": True, "num_threads": 2}
    models: dict[str, Any] = {}
    active = active_mask(fit, ACTIVE_DAYS).to_numpy()
    for name, rows, y in (("purchase_propensity", np.ones(len(fit), bool), labels["bought"]),
                          ("churn_risk", active, 1 - labels["bought"])):
        btyd = fit_btyd_features(fit[rows], HORIZON, name)
        X = with_btyd(fit[rows], btyd)
        booster = lgb.train({**base, **params, "objective": "binary"}, lgb.Dataset(X, label=y[rows]), trees)
        raw = booster.predict(X, raw_score=True).reshape(-1, 1)
        platt = LogisticRegression(C=1e6, max_iter=1000).fit(raw, y[rows])
        model = BinaryModel(ModelSpec("lightgbm", params, trees), booster, list(X.columns))
        models[name] = CalibratedClassifierModel(CalibratedModel(model, Calibrator("sigmoid", platt)), btyd)
    booster = lgb.train({**base, **params, "objective": "tweedie", "tweedie_variance_power": 1.5},
                        lgb.Dataset(fit[list(FEATURE_COLUMNS)], label=labels["spend"]), trees)
    models["clv"] = ClvModel(GBM, HORIZON, booster)
    return models


def inputs_of(features: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {"purchase_propensity": features, "churn_risk": features[active_mask(features, ACTIVE_DAYS).to_numpy()],
            "clv": features}


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = call()
    return time.perf_counter() - started, out


def score_step(models: dict[str, Any], inputs: dict[str, pd.DataFrame], index: pd.Index) -> np.ndarray:
    """What score_customers computes: each score and its factors, reindexed to every customer, combined."""
    factors = {}
    for name, X in inputs.items():
        output = models[name].predict(None, X)
        factors[name] = factors_json(models[name], X, name, output).reindex(index, fill_value="null")
    return _combine_json(factors)


def measure(models: dict[str, Any], inputs: dict[str, pd.DataFrame], label: str) -> dict[str, float]:
    """Seconds per family of predict, contributions and factors, and of the whole score step."""
    seconds: dict[str, float] = {}
    for name, X in inputs.items():
        model = models[name]
        seconds[f"{name} predict"], output = timed(lambda: model.predict(None, X))
        seconds[f"{name} contributions"], _ = timed(lambda: model.contributions(X))
        seconds[f"{name} factors"], _ = timed(lambda: factors_json(model, X, name, output))
    seconds["score step"], _ = timed(lambda: score_step(models, inputs, next(iter(inputs.values())).index))
    print(f"  {label}: " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()), flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--before-rows", type=int, default=50_000, help="rows the 'before' method explains")
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--leaves", type=int, default=31)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    prepare, (features, fit, labels) = timed(lambda: store_features(args.customers, args.seed))
    models = train_models(fit, labels, args.trees, args.leaves, args.seed)
    print(f"{len(features):,} customers ({prepare:.0f} s to draw); champions {args.trees} trees x {args.leaves} "
          f"leaves trained on {len(fit):,}", flush=True)
    # warm up (numba compiles or loads its cache once per process)
    score_step(models, inputs_of(features.head(1_000)), features.head(1_000).index)

    sizes = {"after": len(features), "before": min(args.before_rows, len(features))}
    results = {"after": measure(models, inputs_of(features), "after")}
    with legacy():
        results["before"] = measure(models, inputs_of(features.head(sizes["before"])), "before")
    churn_rows = {k: len(inputs_of(features.head(n))["churn_risk"]) for k, n in sizes.items()}

    def rate(kind: str, key: str) -> float:
        rows = churn_rows[kind] if key.startswith("churn_risk") else sizes[kind]
        return rows / results[kind][key]

    print(f"\n| step (rows/s) | before ({sizes['before']:,} customers) | after ({sizes['after']:,}) | after / before |")
    print("|---|---|---|---|")
    for key in results["after"]:
        before, after = rate("before", key), rate("after", key)
        print(f"| {key}{' (customers/s)' if key == 'score step' else ''} | {before:,.0f} | {after:,.0f} | "
              f"{after / before:.1f}x |")
    predict_all = sum(results["after"][f"{name} predict"] for name in inputs_of(features.head(1)))
    print(f"\nlimit, the three predicts alone: {len(features) / predict_all:,.0f} customers/s; churn scores "
          f"{churn_rows['after']:,} active customers of {sizes['after']:,}")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(score_step, models, inputs_of(features), features.index)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
