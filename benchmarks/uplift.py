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

**Through the product path** (:func:`product_path`, issue 19 item 5): the same published model is
scored as the nightly run of the held-out campaign's send day would score it (tonight's extract of
``lookback_days``, :func:`features.customer.customer_features` as of midnight UTC, ``FAMILY.nightly_input``
and the pyfunc's ``predict`` with ``FAMILY.predict_params``), and its rows go to
:func:`ml.personalisation.nba.next_best_actions` with every generated customer signed up by then (consent:
their ``email_opt_in``), no recommendations, no segments, no contact history, and an offer budget
(``nba_offer_budget``) equal to what the churn-risk policy spends (the model's ``expected_discount_cost``
plus ``nba_contact_cost``) when it offers the same ``--budget`` share of the campaign's customers: the
highest churn risk by the churn classifier (``1 - p_order_control`` of the nightly rows, the seeds'
policy), each the campaign's offer type at the lowest of ``nba_discount_levels``. Judged against the
truth at the discount each policy chose (a persuadable's effect scales with ``sqrt(discount)``, the
others' do not depend on it: :mod:`revopt.sample_data.offers`): incremental revenue, and incremental
margin = revenue effect x the catalogue's margin share - discount x P(order | offer) x the customer's
mean basket value (the coupon is on the first order only) - contact cost; the ratio next best action /
churn risk (target >= 1.5); the campaign's sleeping dogs given no offer, at the budget and with no
budget (target >= 90 %); marketing actions for customers without consent (must be 0); and the Qini /
AUUC of the nightly rankings (the customer's own offer's uplift, the next best action's best offer
value, churn risk) on the campaign's outcomes and truth.

Writes ``benchmarks/results/uplift.json`` and prints markdown tables::

    .venv/bin/python benchmarks/uplift.py                       # 5,000 and 20,000 customers, seeds 1 2 3
    .venv/bin/python benchmarks/uplift.py --customers 8000 --seeds 1 --trials 4
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.customer import customer_features
from ml.families.uplift import FAMILY, _concat
from ml.families.uplift.data import OfferSet, known_offers, offer_set
from ml.families.uplift.model import UpliftModel, qini_coefficient
from ml.params import RunParams
from ml.personalisation import nba
from revopt.sample_data.offers import OfferDesign, uplift_extract
from revopt.sample_data.synth import generate_store

START = dt.date(2023, 1, 2)
DAYS = 460
RUN_DAY = 400
HELD_OUT_DAY = 399
#: the response type whose effect depends on the discount (sqrt(discount / 0.15): revopt.sample_data.offers)
PERSUADABLE = "persuadable"
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
        "training_offers": len(_concat(data.fit, data.test)),
        "product_path": product_path(store, trained.model, held, params, budget),
        "seconds": time.perf_counter() - began,
    }


def _truth_auuc(true_uplift: np.ndarray, score: np.ndarray) -> float:
    """The area under the cumulative true uplift of a ranking, over that of the best ranking by the
    truth (1: perfect order; random: about the mean's area)."""
    def area(order: np.ndarray) -> float:
        return float(np.cumsum(true_uplift[order]).sum())
    best = area(np.argsort(-true_uplift, kind="stable"))
    random = float(true_uplift.sum()) * (len(true_uplift) + 1) / 2.0
    return (area(np.argsort(-score, kind="stable")) - random) / (best - random)


def product_path(store, model: UpliftModel, held: OfferSet, params: RunParams, budget: float) -> dict[str, object]:
    """The held-out campaign's customers through the nightly uplift scoring and the next best action
    (module docstring). ``model`` is the family's published pyfunc (trained at day :data:`RUN_DAY`: the
    campaigns whose horizon had ended are the same as at the send day), ``held`` the campaign's offers
    with their realised outcomes."""
    send = START + dt.timedelta(days=HELD_OUT_DAY)
    send_ts = pd.Timestamp(send, tz="UTC")
    # the nightly run of the send day: tonight's extract, features as build_features computes them, the pyfunc
    frames = uplift_extract(store.shop, store.events, pd.Timestamp(send), params.lookback_days)
    features = customer_features(frames["customers"], frames["orders"], frames["customer_daily_events"], send_ts,
                                 order_categories=frames["order_categories"])
    inputs = FAMILY.nightly_input({"customer_features": features}, send, params)
    rows = model.predict(None, inputs, FAMILY.predict_params(send, params))
    customers = store.shop["customers"]
    customers = customers.loc[customers["signup_date"] < pd.Timestamp(send), ["customer_id", "email_opt_in"]]
    products = store.shop["products"]
    margin_share = nba.catalogue_margin_share(products)

    # the campaign: each customer's own offer, its truth and realised outcome
    offers = store.shop["offers"].set_index("offer_id").loc[held.X.index]
    truth = store.truth["offer_effects"].set_index("offer_id").loc[held.X.index]
    campaign = pd.DataFrame({
        "customer_id": held.customer_id, "offer_type": offers["offer_type"].to_numpy(), "discount": held.discount,
        "treated": held.treated, "ordered": held.ordered, "response_type": truth["response_type"].to_numpy(),
        "p_order_control": truth["p_order_control"].to_numpy(), "p_order_treated": truth["p_order_treated"].to_numpy(),
        "revenue_effect": truth["revenue_effect"].to_numpy(),
        "basket_value": pd.Series(held.customer_id).map(
            store.truth["customers"].set_index("customer_id")["mean_basket_value"]).to_numpy()})

    # the churn-risk policy: the top --budget share of the campaign by the churn classifier, the lowest discount
    control = rows.drop_duplicates("customer_id").set_index("customer_id")["p_order_control"]
    churn_risk = 1.0 - campaign["customer_id"].map(control)
    k = int(round(budget * len(campaign)))
    lowest = float(min(params.nba_discount_levels))
    churn_top = campaign.loc[churn_risk.dropna().sort_values(ascending=False, kind="stable").index[:k]]
    churn_offers = _policy_offers(churn_top, rows, lowest, params.nba_contact_cost, margin_share)
    spend = float(churn_offers["expected_cost"].sum())

    versions = {FAMILY.model_name: "benchmark"}
    budgeted = nba.next_best_actions(customers, rows, None, None, products, None, send,
                                     dataclasses.replace(params, nba_offer_budget=spend), versions)
    unlimited = nba.next_best_actions(customers, rows, None, None, products, None, send,
                                      dataclasses.replace(params, nba_offer_budget=None), versions)
    consent = customers.set_index("customer_id")["email_opt_in"].astype("boolean").fillna(False).astype(bool)

    policies = {"next best action": _judge(campaign, budgeted[budgeted["action"].isin(nba.OFFER_ACTIONS)],
                                           margin_share, params.nba_contact_cost),
                "churn risk: classifier": _judge(campaign, churn_offers, margin_share, params.nba_contact_cost),
                "next best action, no budget": _judge(campaign, unlimited[unlimited["action"].isin(nba.OFFER_ACTIONS)],
                                                      margin_share, params.nba_contact_cost)}
    dogs = int((campaign["response_type"] == "sleeping_dog").sum())

    # the rankings of the campaign's customers (customers the nightly run did not score: last)
    candidates = nba.offer_candidates(rows, customers.assign(lifecycle_segment=None), margin_share,
                                      nba.NbaSettings.from_params(params))
    own = campaign[["customer_id", "offer_type", "discount"]].merge(rows, how="left",
                                                                   on=["customer_id", "offer_type", "discount"])
    recency = features.set_index("customer_id")["recency_days"].where(features.set_index("customer_id")["frequency"] > 0)
    rankings = {"uplift of the own offer (nightly)": own["uplift"].to_numpy(dtype="float64"),
                "next best action value": campaign["customer_id"].map(
                    candidates.groupby("customer_id")["value"].max()).to_numpy(dtype="float64"),
                "churn risk: classifier": churn_risk.to_numpy(dtype="float64"),
                "churn risk: recency": campaign["customer_id"].map(recency).to_numpy(dtype="float64")}
    true_uplift = (campaign["p_order_treated"] - campaign["p_order_control"]).to_numpy()
    y = np.column_stack([campaign["treated"].to_numpy(dtype="float64"), campaign["ordered"].to_numpy(dtype="float64")])
    ranking_scores = {}
    for name, score in rankings.items():
        ranked = np.where(np.isnan(score), -np.inf, score)
        ranking_scores[name] = {"qini_observed": qini_coefficient(y, ranked),
                                "auuc_vs_truth": float(_truth_auuc(true_uplift, ranked))}
    offline = model.learner.uplift(held.X, held.discount, held.offer_type)
    nba_margin = policies["next best action"]["incremental_margin"]
    churn_margin = policies["churn risk: classifier"]["incremental_margin"]
    nba_revenue = policies["next best action"]["incremental_revenue"]
    churn_revenue = policies["churn risk: classifier"]["incremental_revenue"]
    return {
        "send_date": send.isoformat(), "campaign_customers": len(campaign),
        "scored_customers": int(inputs["customer_id"].nunique()), "uplift_rows": len(rows),
        "campaign_not_scored": int((~campaign["customer_id"].isin(rows["customer_id"])).sum()),
        "nightly_vs_offline_max_abs_uplift_difference": float(np.nanmax(np.abs(own["uplift"].to_numpy() - offline))),
        "churn_offers": k, "churn_discount": lowest, "offer_budget": spend, "margin_share": margin_share,
        "policies": policies,
        "revenue_ratio": nba_revenue / churn_revenue if churn_revenue > 0 else None,
        "margin_ratio": nba_margin / churn_margin if churn_margin > 0 else None,
        "sleeping_dogs": dogs,
        "sleeping_dogs_no_offer": 1.0 - policies["next best action"]["sleeping_dogs_offered"] / max(dogs, 1),
        "sleeping_dogs_no_offer_no_budget": 1.0 - policies["next best action, no budget"]["sleeping_dogs_offered"] / max(dogs, 1),
        "consent_violations": int(sum(((frame["action"] != "do_nothing") & ~frame["customer_id"].map(consent)).sum()
                                      for frame in (budgeted, unlimited))),
        "customers_without_consent": int((~consent).sum()),
        "rankings": ranking_scores,
    }


def _policy_offers(chosen: pd.DataFrame, rows: pd.DataFrame, discount: float, contact_cost: float,
                   margin_share: float) -> pd.DataFrame:
    """The offer (customer_id, action, discount, expected_cost, expected_incremental_value) a rule-based
    policy sends each ``chosen`` customer: their campaign offer type (the other type when the nightly rows
    have not that one) at ``discount``, valued and costed as the next best action values and costs it."""
    at = rows[np.isclose(rows["discount"], discount)].set_index(["customer_id", "offer_type"])
    other = {"retention": "win_back", "win_back": "retention"}
    kinds = [kind if (customer, kind) in at.index else other[kind]
             for customer, kind in zip(chosen["customer_id"], chosen["offer_type"])]
    row = at.reindex(pd.MultiIndex.from_arrays([chosen["customer_id"].to_numpy(), kinds]))
    fixed = row["expected_discount_cost"].fillna(0.0).to_numpy() + contact_cost
    return pd.DataFrame({"customer_id": chosen["customer_id"].to_numpy(), "action": pd.Series(kinds).map(
        nba.OFFER_TYPE_ACTION).to_numpy(), "discount": discount, "expected_cost": fixed,
        "expected_incremental_value": row["revenue_uplift"].fillna(0.0).to_numpy() * margin_share - fixed})


def _judge(campaign: pd.DataFrame, offers: pd.DataFrame, margin_share: float, contact_cost: float) -> dict[str, object]:
    """The truth of ``offers`` (customer_id, discount, expected_cost, expected_incremental_value: the next
    best action's columns) on the campaign's customers, next to what the model expected, at the
    discount offered: a persuadable's extra-order probability (and revenue effect) scales with
    sqrt(discount), the other response types' effects do not depend on it (:mod:`revopt.sample_data.offers`)."""
    truth = campaign.set_index("customer_id")
    inside = offers[offers["customer_id"].isin(truth.index)]
    t = truth.loc[inside["customer_id"]]
    scale = np.where(t["response_type"] == PERSUADABLE, np.sqrt(inside["discount"].to_numpy() / t["discount"].to_numpy()),
                     1.0)
    lift = 1.0 - (1.0 - t["p_order_treated"]) / (1.0 - t["p_order_control"]).clip(lower=1e-12)
    p_treated = np.where(t["response_type"] == PERSUADABLE,
                         1.0 - (1.0 - t["p_order_control"]) * (1.0 - lift * scale), t["p_order_treated"])
    revenue = t["revenue_effect"].to_numpy() * scale
    discount_cost = inside["discount"].to_numpy() * p_treated * t["basket_value"].to_numpy()
    return {
        "offers": len(offers), "offers_outside_campaign": int(len(offers) - len(inside)),
        "expected_cost": float(offers["expected_cost"].sum()),
        "predicted_margin": float(offers["expected_incremental_value"].sum()),
        "discounts": inside["discount"].round(4).value_counts().sort_index().to_dict(),
        "incremental_revenue": float(revenue.sum()),
        "incremental_orders": float((p_treated - t["p_order_control"]).sum()),
        "true_discount_cost": float(discount_cost.sum()),
        "incremental_margin": float((revenue * margin_share - discount_cost).sum() - contact_cost * len(offers)),
        "sleeping_dogs_offered": int((t["response_type"] == "sleeping_dog").sum()),
        "types_targeted": t["response_type"].value_counts().to_dict(),
    }


def print_table(results: list[dict[str, object]]) -> None:
    print("| customers | seed | policy | incremental revenue | incremental orders | sleeping dogs offered | "
          "Qini (observed) | AUUC vs truth |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for name, p in r["policies"].items():
            print(f"| {r['customers']:,} | {r['seed']} | {name} | {p['incremental_revenue']:,.0f} | "
                  f"{p['incremental_orders']:.1f} | {p['sleeping_dogs_offered']} of {r['sleeping_dogs']} | "
                  f"{p['qini_observed']:.3f} | {p['qini_truth_uplift']:.3f} |")
    print()
    for r in results:
        ratio = r["revenue_ratio_vs_recency"]
        print(f"{r['customers']:,} customers, seed {r['seed']}: {r['offers_targeted']} of {r['offers_held_out']} held-out "
              f"offers; revenue ratio uplift / churn risk (recency) "
              f"{'n/a (churn targeting loses revenue)' if ratio is None else f'{ratio:.2f}x'}, "
              f"vs classifier {r['revenue_ratio_vs_classifier'] or float('nan'):.2f}x; sleeping dogs not offered "
              f"{r['sleeping_dogs_not_offered']:.1%}; family test Qini {r['family_test_qini']:.3f} vs baseline "
              f"{r['family_baseline_qini']:.3f} ({r['seconds']:.0f} s)")


def print_product_table(results: list[dict[str, object]]) -> None:
    """The product-path section (:func:`product_path`): one row per store and seed."""
    print("| customers | seed | budget | NBA offers / churn offers | incremental revenue NBA / churn (ratio) | "
          "incremental margin NBA / churn (ratio) | sleeping dogs without offer (no budget) | consent violations | "
          "Qini nightly uplift / NBA value / churn | AUUC vs truth nightly uplift / NBA value / churn |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        p = r["product_path"]
        ours, churn = p["policies"]["next best action"], p["policies"]["churn risk: classifier"]
        ranks = [p["rankings"][name] for name in ("uplift of the own offer (nightly)", "next best action value",
                                                  "churn risk: classifier")]
        print(f"| {r['customers']:,} | {r['seed']} | {p['offer_budget']:,.0f} | {ours['offers']} / {churn['offers']} | "
              f"{ours['incremental_revenue']:,.0f} / {churn['incremental_revenue']:,.0f} ({_ratio(p['revenue_ratio'])}) | "
              f"{ours['incremental_margin']:,.0f} / {churn['incremental_margin']:,.0f} ({_ratio(p['margin_ratio'])}) | "
              f"{p['sleeping_dogs_no_offer']:.1%} ({p['sleeping_dogs_no_offer_no_budget']:.1%}) of {p['sleeping_dogs']} | "
              f"{p['consent_violations']} of {p['customers_without_consent']:,} | "
              f"{_joined(ranks, 'qini_observed')} | {_joined(ranks, 'auuc_vs_truth')} |")


def _joined(rankings: list[dict[str, float]], metric: str) -> str:
    return " / ".join(f"{ranking[metric]:.3f}" for ranking in rankings)


def _ratio(value: float | None) -> str:
    return "n/a: churn targeting loses" if value is None else f"{value:.2f}x"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[5_000, 20_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--budget", type=float, default=0.3, help="share of the held-out campaign's customers offered")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    began = time.perf_counter()
    results = [run(customers, seed, args.trials, args.budget) for customers in args.customers for seed in args.seeds]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"command": " ".join([".venv/bin/python benchmarks/uplift.py", *argv]),
                                   "date": dt.date.today().isoformat(), "python": platform.python_version(),
                                   "seconds": time.perf_counter() - began, "results": results}, indent=1, default=str))
    print(f"uplift benchmark, {dt.date.today()}: {', '.join(f'{n:,}' for n in args.customers)} customers x {DAYS} days, "
          f"budget {args.budget:.0%} of the held-out campaign ({time.perf_counter() - began:.0f} s)\n")
    print_table(results)
    print("\nThrough the product path (nightly uplift rows -> next best action at the churn policy's spend):\n")
    print_product_table(results)


if __name__ == "__main__":
    main()
