"""Benchmark: the next-best-action offer budget (:mod:`ml.personalisation.nba`): its greedy by value per
cost with a repair step against the exact multiple-choice knapsack (``scipy.optimize.milp``, HiGHS), on
synthetic candidates for many customers (each: retention offers at each discount level, some win-back
offers, an offer-free action), at budgets that bind to different degrees.

Prints a markdown table: total expected incremental value of each, the greedy's gap to the MILP, wall
times, and whether the budget held::

    .venv/bin/python benchmarks/nba.py                    # 100 000 customers
    .venv/bin/python benchmarks/nba.py --customers 20000 --seed 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time

import numpy as np
import pandas as pd

from scipy import optimize, sparse

from ml.personalisation.nba import choose_offers_greedy


def synthetic_offers(customers: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Offers (customer_id, action, discount, value, cost) with a positive gain over the offer-free
    value for some customers; the offer-free value (customer_id -> value)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1, customers + 1)
    revenue = rng.lognormal(4.0, 0.6, customers)  # expected treated revenue within the horizon
    persuadable = rng.beta(1.2, 6.0, customers)  # relative revenue uplift at a 10 % discount
    rows = []
    for discount, response in ((0.1, 1.0), (0.2, 1.6), (0.3, 1.9)):
        gain_revenue = revenue * persuadable * response * rng.lognormal(0, 0.1, customers)
        discount_cost = discount * revenue * (1 + persuadable * response)
        value = gain_revenue * 0.45 - discount_cost - 0.05
        rows.append(pd.DataFrame({"customer_id": ids, "action": "retention_offer", "discount": discount,
                                  "value": value, "cost": discount_cost + 0.05}))
    free = pd.Series(np.where(rng.random(customers) < 0.6, rng.exponential(0.2, customers), 0.0), index=ids)
    offers = pd.concat(rows, ignore_index=True)
    offers = offers[offers["value"].to_numpy() > offers["customer_id"].map(free).to_numpy()].reset_index(drop=True)
    return offers, free


def choose_offers_milp(offers: pd.DataFrame, free_value: pd.Series, budget: float) -> pd.Index:
    """The exact reference: the offers (index labels of ``offers``: value, cost, customer_id) that
    maximise the total value, at most one per customer, instead of each customer's offer-free value
    (``free_value``; absent: 0), with total cost <= ``budget``: a multiple-choice knapsack, by HiGHS."""
    customer_codes, _ = pd.factorize(offers["customer_id"])
    gain = offers["value"].to_numpy() - offers["customer_id"].map(free_value).fillna(0.0).to_numpy()
    n = len(offers)
    one_per_customer = sparse.csr_array((np.ones(n), (customer_codes, np.arange(n))),
                                        shape=(customer_codes.max() + 1, n))
    constraints = [optimize.LinearConstraint(one_per_customer, 0, 1),
                   optimize.LinearConstraint(offers["cost"].to_numpy()[None, :], 0, budget)]
    result = optimize.milp(-gain, constraints=constraints, integrality=np.ones(n), bounds=optimize.Bounds(0, 1),
                           options={"time_limit": 600, "mip_rel_gap": 1e-6})
    if result.x is None:
        raise RuntimeError(f"next best action: the offer budget problem found no solution ({result.message})")
    return offers.index[result.x > 0.5]


def _total(offers: pd.DataFrame, taken: pd.Index, free: pd.Series) -> tuple[float, float]:
    chosen = offers.loc[taken]
    value = free.sum() + (chosen["value"] - chosen["customer_id"].map(free)).sum()
    return float(value), float(chosen["cost"].sum())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    offers, free = synthetic_offers(args.customers, args.seed)
    unconstrained = offers.sort_values("value", ascending=False).drop_duplicates("customer_id")["cost"].sum()
    print(f"`{shlex.join(['.venv/bin/python', 'benchmarks/nba.py', *sys.argv[1:]])}` on {dt.date.today()}: "
          f"{args.customers} customers, {offers['customer_id'].nunique()} with a worthwhile offer, "
          f"{len(offers)} offers; unconstrained offer cost {unconstrained:.0f}\n")
    print("| budget (share of unconstrained) | MILP value | greedy value | greedy gap | MILP s | greedy s | "
          "cost MILP / greedy |")
    print("|---|---|---|---|---|---|---|")
    for share in (0.05, 0.2, 0.5, 0.9):
        budget = share * unconstrained
        start = time.perf_counter()
        exact = choose_offers_milp(offers, free, budget)
        milp_seconds = time.perf_counter() - start
        start = time.perf_counter()
        greedy = choose_offers_greedy(offers, free, budget)
        greedy_seconds = time.perf_counter() - start
        (value_milp, cost_milp), (value_greedy, cost_greedy) = _total(offers, exact, free), _total(offers, greedy, free)
        gap = (value_milp - value_greedy) / abs(value_milp)
        print(f"| {budget:.0f} ({share:.0%}) | {value_milp:.2f} | {value_greedy:.2f} | {gap:.4%} | {milp_seconds:.1f} | "
              f"{greedy_seconds:.1f} | {cost_milp:.0f} / {cost_greedy:.0f} (<= {budget:.0f}) |")


if __name__ == "__main__":
    main()
