"""Benchmark: uplift targeting (:mod:`ml.families.uplift`) against churn-risk targeting on synthetic
stores with randomised offers of known effect (:mod:`revopt.sample_data.offers`).

For each seed: a store with offer campaigns every 63 days; the family is trained at run date ``day 400``
(so the campaigns up to day 336 are known: the latest is its test campaign, the earlier ones selection
and fitting), then the **held-out campaign** of day 399, which training never saw (its horizon had
not passed), is ranked by the published model (each customer's own offer) and by churn risk: the days
since the last order (the seeds' policy), and the model's own control arm, ``1 - P(order | no
offer)``, a plain churn classifier on the same features. At the same number of offers (``--budget``,
a share of the campaign's customers) it reports, from the truth (``truth.offer_effects``):

- the incremental revenue of each policy (the sum of the targeted offers' ``revenue_effect``) and the
  ratio uplift / churn risk (target >= 1.5);
- the share of the campaign's sleeping dogs the uplift ranking does *not* offer (target >= 90 %);
- the normalised Qini coefficient of each ranking on the campaign's realised outcomes (treated vs
  control, orders within 60 days) and on the truth (``p_order_treated - p_order_control``), the
  "perfect" ranking for reference.

Writes ``benchmarks/results/uplift.json`` and prints a markdown table::

    .venv/bin/python benchmarks/uplift.py                       # 20,000 customers, seeds 1 2 3
    .venv/bin/python benchmarks/uplift.py --customers 8000 --seeds 1 --trials 4
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ml.families.uplift import FAMILY, _concat
from ml.families.uplift.data import known_offers, offer_set
from ml.families.uplift.model import qini_coefficient
from ml.params import RunParams
from revopt.sample_data.offers import OfferDesign, uplift_extract
from revopt.sample_data.synth import generate_store

START = dt.date(2023, 1, 2)
DAYS = 460
RUN_DAY = 400
HELD_OUT_DAY = 399
RESULTS = Path(__file__).parent / "results" / "uplift.json"


def run(n_customers: int, seed: int, trials: int, budget: float) -> dict[str, object]:
    began = time.perf_counter()
    store = generate_store(n_customers, DAYS, START, seed=seed, offers=OfferDesign())
    run_date = START + dt.timedelta(days=RUN_DAY)
    params = RunParams(n_trials=trials, seed=seed)
    frames = uplift_extract(store.shop, store.events, pd.Timestamp(run_date), params.training_extract_days)
    reason = FAMILY.shortfall(frames, run_date, params)
    if reason:
        raise RuntimeError(reason)
    data = FAMILY.training_data(frames, run_date, params)
    trained = FAMILY.train(data, params, [])
    learner = trained.model.learner
    # the held-out campaign: its features as of its day, from a later extract (its outcomes are truth)
    later = START + dt.timedelta(days=DAYS)
    later_frames = uplift_extract(store.shop, store.events, pd.Timestamp(later), params.training_extract_days)
    sent_day = pd.Timestamp(START + dt.timedelta(days=HELD_OUT_DAY), tz="UTC")
    offers = known_offers(later_frames["offers"], later, params.uplift_horizon_days)
    held = offer_set(later_frames, offers[offers["sent_at"].dt.normalize() == sent_day], params.uplift_horizon_days,
                     params.lookback_days)
    truth = store.truth["offer_effects"].set_index("offer_id").reindex(held.X.index)
    uplift = learner.uplift(held.X, held.discount, held.offer_type)
    control, _ = learner.p_orders(held.X, held.discount, held.offer_type)
    rankings = {"uplift model": uplift, "churn risk: recency": held.X["recency_days"].to_numpy(dtype="float64"),
                "churn risk: classifier": 1.0 - control}
    k = int(round(budget * len(held)))
    true_uplift = (truth["p_order_treated"] - truth["p_order_control"]).to_numpy()
    dogs = (truth["response_type"] == "sleeping_dog").to_numpy()
    policies = {}
    for name, score in rankings.items():
        top = np.zeros(len(held), dtype=bool)
        top[np.argsort(-score, kind="stable")[:k]] = True
        policies[name] = {
            "incremental_revenue": float(truth["revenue_effect"].to_numpy()[top].sum()),
            "incremental_orders": float(true_uplift[top].sum()),
            "sleeping_dogs_offered": int((top & dogs).sum()),
            "qini_observed": qini_coefficient(held.y, score),
            "qini_truth_uplift": float(_truth_auuc(true_uplift, score)),
            "types_targeted": truth["response_type"][top].value_counts().to_dict(),
        }
    churn = policies["churn risk: recency"]["incremental_revenue"]
    model = policies["uplift model"]["incremental_revenue"]
    return {
        "customers": n_customers, "seed": seed, "budget_share": budget, "offers_held_out": len(held),
        "offers_targeted": k, "sleeping_dogs": int(dogs.sum()),
        "types": truth["response_type"].value_counts().to_dict(),
        "policies": policies,
        "revenue_ratio_vs_recency": model / churn if churn > 0 else None,
        "revenue_ratio_vs_classifier": (model / policies["churn risk: classifier"]["incremental_revenue"]
                                        if policies["churn risk: classifier"]["incremental_revenue"] > 0 else None),
        "sleeping_dogs_not_offered": 1.0 - policies["uplift model"]["sleeping_dogs_offered"] / max(int(dogs.sum()), 1),
        "qini_truth_ranking_observed": qini_coefficient(held.y, true_uplift),
        "family_test_qini": trained.metrics["test_qini"], "family_baseline_qini": trained.metrics["baseline_qini"],
        "training_offers": len(_concat(data.fit, data.test)), "seconds": time.perf_counter() - began,
    }


def _truth_auuc(true_uplift: np.ndarray, score: np.ndarray) -> float:
    """The area under the cumulative true uplift of a ranking, over that of the best ranking by the
    truth (1: perfect order; random: about the mean's area)."""
    def area(order: np.ndarray) -> float:
        return float(np.cumsum(true_uplift[order]).sum())
    best = area(np.argsort(-true_uplift, kind="stable"))
    random = float(true_uplift.sum()) * (len(true_uplift) + 1) / 2.0
    return (area(np.argsort(-score, kind="stable")) - random) / (best - random)


def print_table(results: list[dict[str, object]]) -> None:
    print("| seed | policy | incremental revenue | incremental orders | sleeping dogs offered | Qini (observed) | "
          "AUUC vs truth |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for name, p in r["policies"].items():
            print(f"| {r['seed']} | {name} | {p['incremental_revenue']:,.0f} | {p['incremental_orders']:.1f} | "
                  f"{p['sleeping_dogs_offered']} of {r['sleeping_dogs']} | {p['qini_observed']:.3f} | "
                  f"{p['qini_truth_uplift']:.3f} |")
    print()
    for r in results:
        ratio = r["revenue_ratio_vs_recency"]
        print(f"seed {r['seed']}: {r['offers_targeted']} of {r['offers_held_out']} held-out offers; revenue ratio uplift / "
              f"churn risk (recency) {'n/a (churn targeting loses revenue)' if ratio is None else f'{ratio:.2f}x'}, "
              f"vs classifier {r['revenue_ratio_vs_classifier'] or float('nan'):.2f}x; sleeping dogs not offered "
              f"{r['sleeping_dogs_not_offered']:.1%}; family test Qini {r['family_test_qini']:.3f} vs baseline "
              f"{r['family_baseline_qini']:.3f} ({r['seconds']:.0f} s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--budget", type=float, default=0.3, help="share of the held-out campaign's customers offered")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = [run(args.customers, seed, args.trials, args.budget) for seed in args.seeds]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"command": "benchmarks/uplift.py " + " ".join(argv or []),
                                   "date": dt.date.today().isoformat(), "python": platform.python_version(),
                                   "results": results}, indent=1, default=str))
    print(f"uplift benchmark, {dt.date.today()}: {args.customers:,} customers x {DAYS} days, budget {args.budget:.0%}\n")
    print_table(results)


if __name__ == "__main__":
    main()
