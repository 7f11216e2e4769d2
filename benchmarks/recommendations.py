"""Benchmark: product recommendations (:mod:`ml.families.recommend`) on UCI Online Retail and on the
synthetic store, against popularity and item-kNN.

1. **uci**: UCI Online Retail (``../shared/data/online_retail.csv.gz``) through the product's importer
   (:mod:`revopt.sample_data.importer`), its completed orders as the ``order_items`` extract. Time split:
   models learn from the orders before 2011-09-01 and are scored on what the customers then bought
   to 2011-12-09; tuning (Optuna, ``--trials``) validates on 2011-06-01..2011-08-31 with a fit on the
   orders before it. Two rule sets: ``new items`` (nothing the customer ever bought is recommended or
   counts as relevant: the protocol the choice of library was measured with, the issue's target) and
   ``published`` (the default run params: no product bought in the last 30 days, at most 4 per
   category, K = 10). No views, no stock.
2. **synthetic**: :func:`revopt.sample_data.synth.generate_store` (with whatever customer taste the
   generator draws), its product views (the ``product_views`` extract, computed from its events as
   the ClickHouse query does) and its orders; the family's own windows: test = the last 28 days,
   validation the 28 before, the default rules.

Every model is ranked by the same code and rules as the published lists (:func:`ml.families.recommend.recommend`);
popularity is the gate's baseline (distinct buyers of the last 90 days), item-kNN ``implicit``'s BM25
(K = 50). Metrics at K = 10: precision, recall, NDCG, catalogue coverage; ``x pop`` = NDCG / popularity's.
Writes ``benchmarks/results/recommendations.json`` and prints markdown tables::

    .venv/bin/python benchmarks/recommendations.py                       # both sections
    .venv/bin/python benchmarks/recommendations.py --section uci --trials 20
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd

from features.interactions import (
    RecommendationInput,
    catalogue,
    customer_segments,
    daily_purchases,
    daily_views,
    order_items_from_shop,
)
from ml.families.recommend import RecsConfig, Rules
from ml.families.recommend.backtest import Window, baselines, fitted, predictions, scores, search_space, window
from ml.params import RunParams
from ml.tuning import Budget, search
from revopt.sample_data.importer import uci_online_retail
from revopt.sample_data.synth import generate_store

logger = logging.getLogger("benchmarks.recommendations")

ROOT = Path(__file__).resolve().parents[1]
UCI_PATH = ROOT.parent / "shared" / "data" / "online_retail.csv.gz"
RESULTS = Path(__file__).parent / "results" / "recommendations.json"
UCI_SPLIT = (pd.Timestamp("2011-06-01"), pd.Timestamp("2011-09-01"), pd.Timestamp("2011-12-10"))
EXCLUDED = tuple(RunParams().recs_exclude_categories)
#: the rule sets of the UCI section (K = 10 both)
UCI_RULES = {"new items": Rules(k=10, exclude_bought_days=100_000, exclude_categories=EXCLUDED, max_per_category=10,
                                exclude_out_of_stock=False),
             "published": Rules(k=10, exclude_bought_days=30, exclude_categories=EXCLUDED, max_per_category=4)}
SYNTHETIC_START = dt.date(2024, 1, 1)
LOOKBACK_DAYS = 100_000  # all history


def uci_input(path: Path) -> RecommendationInput:
    shop, _ = uci_online_retail(path)
    items = order_items_from_shop(shop["orders"], shop["order_lines"], shop["products"])
    return RecommendationInput(customer_segments(shop["customers"]), daily_purchases(items),
                               daily_views(pd.DataFrame(columns=["customer_id", "product_id", "day", "views"])),
                               catalogue(shop["products"], None, items))


def synthetic_input(customers: int, days: int, seed: int) -> tuple[RecommendationInput, pd.Timestamp]:
    store = generate_store(customers, days, SYNTHETIC_START, seed)
    shop = store.shop
    items = order_items_from_shop(shop["orders"], shop["order_lines"], shop["products"])
    events = store.events
    viewed = events.loc[(events["event_type"].astype(str) == "product_view") & (events["customer_id"] > 0)
                        & (events["product_id"] > 0) & (events["is_machine"] == 0)]
    day = pd.to_datetime(viewed["event_time"], utc=True).dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("D")
    views = viewed.assign(day=day).groupby(["customer_id", "product_id", "day"]).size().rename("views").reset_index()
    data = RecommendationInput(customer_segments(shop["customers"]), daily_purchases(items), daily_views(views),
                               catalogue(shop["products"], None, items))
    return data, pd.Timestamp(SYNTHETIC_START) + pd.Timedelta(days=days)


def compare_models(valid: Window, test: Window, trials: int, seed: int) -> dict[str, dict[str, float]]:
    """Tune ALS on ``valid``; score ALS (default and tuned), popularity and item-kNN on ``test``."""
    default = RecsConfig(random_state=seed)
    started = time.perf_counter()
    tuned = search(search_space(valid, default), Budget(trials, 3600.0, seed))
    tune_seconds = time.perf_counter() - started
    logger.info("tuned in %.0f s: %s (valid NDCG %.4f, default %.4f)", tune_seconds, tuned.config, tuned.value,
                tuned.default_value)
    rows: dict[str, dict[str, float]] = {}
    for name, config in (("ALS (default)", default), ("ALS (tuned)", tuned.config)):
        started = time.perf_counter()
        model = fitted(test, config)
        rows[name] = {**scores(test, predictions(test, model)), "seconds": time.perf_counter() - started}
    others = baselines(test, tuned.config.view_weight)
    rows["popularity"] = scores(test, others["popularity"])
    rows["item-kNN (BM25)"] = scores(test, others["item_knn"])
    popular = rows["popularity"]["ndcg_at_k"]
    for row in rows.values():
        row["ndcg_over_popularity"] = row["ndcg_at_k"] / popular if popular > 0 else float("nan")
    rows["ALS (tuned)"]["config"] = dataclasses.asdict(tuned.config)
    rows["ALS (tuned)"]["tune_seconds"] = tune_seconds
    rows["ALS (tuned)"]["valid_ndcg_at_k"] = tuned.value
    return rows


def run_uci(path: Path, trials: int, seed: int) -> list[dict[str, object]]:
    started = time.perf_counter()
    data = uci_input(path)
    logger.info("UCI read in %.0f s: %d purchase rows", time.perf_counter() - started, len(data.purchases))
    valid_start, test_start, end = UCI_SPLIT
    out = []
    for rules_name, rules in UCI_RULES.items():
        valid = window(data, valid_start, test_start, LOOKBACK_DAYS, rules)
        test = window(data, test_start, end, LOOKBACK_DAYS, rules)
        out.append({"data": "UCI Online Retail", "rules": rules_name, "test": test.description,
                    "test_rows": len(test.customer_ids), "valid_rows": len(valid.customer_ids),
                    "models": compare_models(valid, test, trials, seed)})
    return out


def run_synthetic(customers: int, days: int, seed: int, trials: int) -> list[dict[str, object]]:
    data, end = synthetic_input(customers, days, seed)
    params = RunParams()
    rules = Rules(k=params.recs_k, exclude_bought_days=params.recs_exclude_bought_days,
                  exclude_categories=tuple(params.recs_exclude_categories), max_per_category=params.recs_max_per_category)
    test_start = end - pd.Timedelta(days=params.recs_test_days)
    valid = window(data, test_start - pd.Timedelta(days=params.recs_test_days), test_start, params.lookback_days, rules)
    test = window(data, test_start, end, params.lookback_days, rules)
    return [{"data": f"synthetic {customers} customers x {days} days (seed {seed})", "rules": "published",
             "test": test.description, "test_rows": len(test.customer_ids), "valid_rows": len(valid.customer_ids),
             "views": int(data.views["views"].sum()), "models": compare_models(valid, test, trials, seed)}]


def print_tables(results: list[dict[str, object]]) -> None:
    for result in results:
        print(f"\n### {result['data']}, rules: {result['rules']} ({result['test_rows']} test customers)\n")
        print(f"{result['test']}\n")
        print("| model | P@10 | R@10 | NDCG@10 | coverage | x pop |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, row in result["models"].items():
            print(f"| {name} | {row['precision_at_k']:.4f} | {row['recall_at_k']:.4f} | {row['ndcg_at_k']:.4f} | "
                  f"{row['coverage']:.3f} | {row['ndcg_over_popularity']:.2f} |")
        tuned = result["models"]["ALS (tuned)"]
        print(f"\ntuned ALS: {tuned['config']} (validation NDCG@10 {tuned['valid_ndcg_at_k']:.4f}, "
              f"{tuned['tune_seconds']:.0f} s of tuning)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=("uci", "synthetic", "both"), default="both")
    parser.add_argument("--trials", type=int, default=12, help="Optuna trials (the run param's default)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--uci", type=Path, default=UCI_PATH)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    results: list[dict[str, object]] = []
    if args.section in ("uci", "both"):
        results += run_uci(args.uci, args.trials, args.seed)
    if args.section in ("synthetic", "both"):
        results += run_synthetic(args.customers, args.days, args.seed, args.trials)
    command = "benchmarks/recommendations.py " + " ".join(argv if argv is not None else sys.argv[1:])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"command": command.strip(), "date": dt.date.today().isoformat(),
                                   "seconds": round(time.perf_counter() - started), "results": results},
                                  indent=1, default=float) + "\n")
    print(f"`{command.strip()}` ({dt.date.today()}, {time.perf_counter() - started:.0f} s)")
    print_tables(results)


if __name__ == "__main__":
    main()
