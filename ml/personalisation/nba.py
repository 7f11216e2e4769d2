"""Next best action: one marketing action per customer, chosen to maximise the expected *incremental*
margin under a total offer budget, contact-frequency caps and consent (``scores.next_best_action``).

The candidates
--------------
- ``retention_offer`` / ``win_back``: one per row of the uplift champion's nightly output (``offer_type``
  'retention' / 'win_back', one row per discount level in ``nba_discount_levels``). Win-back rows are
  candidates only for customers whose lifecycle segment is hibernating or lost (any customer when the
  segments are unknown); without win-back rows nothing is invented. Without an uplift champion (no
  uplift frame) no offer is a candidate, and every reason says so.
- ``cross_sell``: the customer's best-ranked recommendation from a category they have not bought.
- ``upsell``: for the customer's top recommendation, the highest-margin product of the same category
  whose margin is higher and whose price is at most :data:`UPSELL_MAX_PRICE_RATIO` times its price.
- ``do_nothing``: value 0, cost 0; chosen whenever nothing else has a positive expected value.

Expected incremental value (currency, contribution margin)
----------------------------------------------------------
Everything is valued in *margin*, so an offer and a product suggestion compare on one scale:

- offers: ``revenue_uplift x margin_share - expected_discount_cost - contact_cost``. ``revenue_uplift``
  is the uplift model's incremental revenue within its horizon before the discount; ``margin_share`` is
  the catalogue's (sum of price - cost over sum of price: one store-wide share, the customers' own mix
  is not known here). ``expected_discount_cost`` is the coupon: the discount off the customer's *next*
  order, paid whether or not that order would have happened anyway (discount x P(order | offer) x
  their average order value, :func:`ml.families.uplift.model.expected_discount_cost`), which is why
  "sure things" (high baseline, little uplift) are not worth an offer. The interval uses the uplift
  rows' 80 % interval of ``revenue_uplift`` (the discount cost is taken as known). An offer whose
  order-probability uplift is below ``nba_min_order_uplift`` (:data:`MIN_ORDER_UPLIFT`) is never made, whatever its revenue
  says: "sleeping dogs", whom an offer makes less likely to order, get no offer, and neither do
  customers whose predicted uplift is too small to tell from the model's noise. Without that floor the
  budgeted choice, which ranks by value per cost, spent the budget on "lost causes": near-zero
  predicted cost (they rarely order, so the coupon is rarely redeemed) and a small, noisy positive
  predicted uplift give them the best value per cost on paper and none in truth (``benchmarks/uplift.py``).
- cross-sell / upsell: ``P(incremental purchase) x product margin - contact_cost``. The recommender's
  scores are rankings, not calibrated probabilities, so P is an **assumption, not a measurement**:
  :data:`CROSS_SELL_INCREMENTAL_RATE` and :data:`UPSELL_INCREMENTAL_RATE` (the reason says "assumed").
  Only when the caller states the scores are calibrated probabilities is the score used. Their
  interval runs from no effect (the contact cost lost) to twice the assumed rate: a statement of
  ignorance, not a measured interval. ``uplift`` is left empty for them: nothing was measured.

The choice
----------
Customers without marketing consent (``email_opt_in`` false or unknown) get ``do_nothing`` with the
reason "no marketing consent", whatever their candidates; so does a customer contacted (an email sent,
or an earlier published action) ``nba_max_contacts`` times within ``nba_contact_cap_days`` before the run
date, with how often and when. Every
other customer gets the candidate of the highest expected value if it is positive. With
``nba_offer_budget`` the offers (retention and win-back; cross-sell and upsell give nothing away and do
not count) must together cost at most the budget (their ``expected_cost``: discount plus contact).
That is a multiple-choice knapsack (each customer: one of their offers or their best offer-free
action), over the customers for whom an offer beats their offer-free action. It is solved by the
classic greedy (:func:`choose_offers_greedy`): each customer's offers reduced to the upper convex hull
of (cost, gain), hull steps taken by gain per cost while they fit, then a repair step that spends what
is left. Written by hand although ``scipy.optimize.milp`` solves it exactly, because on 100 000
customers (16 562 with a worthwhile offer, ``benchmarks/nba.py``) the greedy came within 0.003 % of
HiGHS's optimum at every budget tried (5-90 % of the unconstrained offers' cost) in 0.1-0.3 s against
20-55 s; its loss is never more than one offer's gain (the LP-relaxation bound). Customers whose offer
did not fit get their best offer-free action and a reason naming the offer left out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from ml.params import RunParams

logger = logging.getLogger(__name__)

ACTIONS = ("retention_offer", "win_back", "cross_sell", "upsell", "do_nothing")
OFFER_ACTIONS = ("retention_offer", "win_back")
#: ``scores.next_best_action`` minus run_date (added when published)
OUTPUT_COLUMNS = ("customer_id", "action", "product_id", "discount", "expected_incremental_value", "value_low",
                  "value_high", "uplift", "expected_cost", "reason", "email_opt_in", "lifecycle_segment",
                  "model_versions")
UPLIFT_COLUMNS = ("customer_id", "offer_type", "discount", "uplift", "revenue_uplift", "revenue_uplift_low",
                  "revenue_uplift_high", "expected_discount_cost", "horizon_days")
OFFER_TYPE_ACTION = {"retention": "retention_offer", "win_back": "win_back"}
WIN_BACK_SEGMENTS = ("hibernating", "lost")

#: Default of ``nba_min_order_uplift``, the smallest order-probability uplift (P(order | offer) - P(order | no
#: offer)) for which an offer is made. Measured on ``benchmarks/uplift.py`` (5,000 and 20,000 customers, seeds 1-3): the X-learner's predicted
#: uplift of the customers an offer cannot move ("lost causes", true uplift 0) has a standard deviation
#: of 6-9 pp; at the churn policy's budget a floor of 5 pp (against none) raised the chosen offers' true
#: incremental margin at both sizes (summed over the seeds: 401 -> 551 and 2,592 -> 3,728) and kept more
#: sleeping dogs without an offer. A store whose offers move P(order) by less than this (the generator's
#: persuadables gain 20-40 pp) needs it lower.
MIN_ORDER_UPLIFT = 0.05
#: ASSUMED (not measured) probability that a cross-sell email makes a purchase of the product happen
#: that would not have happened otherwise: typical recommendation-email conversion is 1-3 %, of which
#: only part is incremental. Replace with a measured rate when an experiment gives one.
CROSS_SELL_INCREMENTAL_RATE = 0.01
#: ASSUMED (not measured) incremental purchase rate of an upsell suggestion (a dearer product than the
#: one the customer is likely to buy: lower than a cross-sell's).
UPSELL_INCREMENTAL_RATE = 0.005
#: an upsell product costs at most this many times the recommended product's price
UPSELL_MAX_PRICE_RATIO = 1.5

_CANDIDATE_COLUMNS = ("customer_id", "action", "product_id", "discount", "value", "value_low", "value_high", "uplift",
                      "cost", "reason")
_LABEL = {"retention_offer": "retention offer", "win_back": "win-back offer"}


@dataclass(frozen=True)
class NbaSettings:
    """The run parameters the choice reads (``RunParams.nba_*``)."""

    offer_budget: float | None = None
    discount_levels: tuple[float, ...] = (0.1, 0.2)
    contact_cap_days: int = 7
    max_contacts: int = 2
    min_order_uplift: float = MIN_ORDER_UPLIFT
    contact_cost: float = 0.05

    @classmethod
    def from_params(cls, params: RunParams) -> NbaSettings:
        return cls(offer_budget=params.nba_offer_budget, discount_levels=tuple(params.nba_discount_levels),
                   contact_cap_days=int(params.nba_contact_cap_days), max_contacts=int(params.nba_max_contacts),
                   min_order_uplift=float(params.nba_min_order_uplift),
                   contact_cost=float(params.nba_contact_cost))


def next_best_actions(customers: pd.DataFrame, uplift: pd.DataFrame | None, recommendations: pd.DataFrame | None,
                      segments: pd.DataFrame | None, products: pd.DataFrame, contacts: pd.DataFrame | None,
                      run_date: date, params: RunParams, model_versions: Mapping[str, str], *,
                      purchased_categories: pd.DataFrame | None = None,
                      scores_are_probabilities: bool = False) -> pd.DataFrame:
    """One action per customer of ``customers`` (customer_id, email_opt_in): :data:`OUTPUT_COLUMNS`.

    ``uplift``: the uplift champion's nightly rows (:data:`UPLIFT_COLUMNS`; None: no champion, no
    offers). ``recommendations``: customer_id, rank, product_id, category, score, reason (None: no
    product actions). ``segments``: customer_id, lifecycle_segment (None: unknown). ``products``: the
    sellable catalogue (product_id, current_price, cost, category; optional name). ``contacts``:
    customer_id, last_contact_ts (UTC). ``purchased_categories``: customer_id, category bought before
    (None: none known, so every top recommendation counts as a cross-sell). ``params``: the run's
    ``RunParams`` (``nba_*``). ``scores_are_probabilities``: the recommendation scores are calibrated
    purchase probabilities (else the assumed rates are used)."""
    settings = NbaSettings.from_params(params)
    customers = _customers(customers, segments)
    margin = catalogue_margin_share(products)
    offers = (offer_candidates(uplift, customers, margin, settings) if uplift is not None
              else _empty_candidates())
    product_actions = product_candidates(recommendations, products, purchased_categories, settings.contact_cost,
                                         scores_are_probabilities)
    candidates = pd.concat([offers, product_actions], ignore_index=True)
    candidates = candidates[candidates["customer_id"].isin(customers["customer_id"])]

    blocked = _blocked_reasons(customers, contacts, run_date, settings.contact_cap_days, settings.max_contacts)
    eligible = candidates[~candidates["customer_id"].isin(blocked.index)]
    chosen, left_out = choose_actions(eligible, settings.offer_budget)
    result = _assemble(customers, candidates, chosen, left_out, blocked, uplift is None, model_versions,
                       settings.offer_budget)
    logger.info("next best action for %d customers on %s: %s", len(result), run_date,
                result["action"].value_counts().to_dict())
    return result


def catalogue_margin_share(products: pd.DataFrame) -> float:
    """Sum of (price - cost) over sum of price across the catalogue (products priced above 0)."""
    price = pd.to_numeric(products["current_price"], errors="coerce").astype(float)
    cost = pd.to_numeric(products["cost"], errors="coerce").astype(float)
    known = (price > 0) & cost.notna()
    if not known.any():
        raise ValueError("shop.products: no product with a current_price > 0 and a cost; the next best action "
                         "needs the catalogue's margin")
    return float((price[known] - cost[known]).sum() / price[known].sum())


def offer_candidates(uplift: pd.DataFrame, customers: pd.DataFrame, margin_share: float,
                     settings: NbaSettings) -> pd.DataFrame:
    """Retention and win-back candidates from the uplift rows (see the module docstring)."""
    missing = sorted(set(UPLIFT_COLUMNS) - set(uplift.columns))
    if missing:
        raise ValueError(f"uplift scores: columns {missing} missing")
    rows = uplift[uplift["offer_type"].isin(list(OFFER_TYPE_ACTION))]
    levels = np.asarray(settings.discount_levels, dtype=float)
    discount = rows["discount"].astype(float).to_numpy()
    on_level = np.isclose(discount[:, None], levels[None, :], atol=1e-9).any(axis=1) if len(levels) else (
        np.zeros(len(rows), dtype=bool))
    usable = rows[["uplift", "revenue_uplift", "revenue_uplift_low", "revenue_uplift_high",
                   "expected_discount_cost"]].notna().all(axis=1)
    if (~usable).any():
        logger.warning("uplift scores: %d rows without a value left out", int((~usable).sum()))
    rows = rows[on_level & usable.to_numpy()]
    segment = rows["customer_id"].map(customers.set_index("customer_id")["lifecycle_segment"])
    segments_known = customers["lifecycle_segment"].notna().any()
    win_back_allowed = segment.isin(WIN_BACK_SEGMENTS) if segments_known else pd.Series(True, index=rows.index)
    rows = rows[(rows["offer_type"] == "retention") | win_back_allowed]
    if rows.empty:
        return _empty_candidates()

    action = rows["offer_type"].map(OFFER_TYPE_ACTION)
    discount_cost = rows["expected_discount_cost"].astype(float)
    fixed = discount_cost + settings.contact_cost
    revenue = rows["revenue_uplift"].astype(float)
    value = revenue * margin_share - fixed
    value_low = rows["revenue_uplift_low"].astype(float) * margin_share - fixed
    value_high = rows["revenue_uplift_high"].astype(float) * margin_share - fixed
    p_uplift = rows["uplift"].astype(float)
    # an offer that does not make ordering clearly likelier is never made ("sleeping dogs", and uplifts
    # the model cannot tell from noise: nba_min_order_uplift), whatever its revenue says
    moves = p_uplift >= settings.min_order_uplift
    value = value.where(moves, np.minimum(value, -fixed))
    reason = [
        f"{_LABEL[a]} {d * 100:.0f} %: {u * 100:+.1f} pp order probability in {int(h)} days, {r:+.2f} incremental "
        f"revenue x {margin_share * 100:.0f} % margin - {dc:.2f} discount on the next order - "
        f"{settings.contact_cost:.2f} contact = {v:+.2f} expected incremental margin (80 % interval {lo:+.2f} to "
        f"{hi:+.2f})" + ("" if ok else f"; not offered: order probability uplift below {settings.min_order_uplift * 100:.0f} pp")
        for a, d, u, h, r, dc, v, lo, hi, ok in zip(action, rows["discount"].astype(float), p_uplift,
                                                    rows["horizon_days"], revenue, discount_cost, value, value_low,
                                                    value_high, moves)]
    return pd.DataFrame({
        "customer_id": rows["customer_id"].astype("int64").to_numpy(), "action": action.to_numpy(),
        "product_id": pd.array([pd.NA] * len(rows), dtype="Int64"), "discount": rows["discount"].astype(float).to_numpy(),
        "value": value.to_numpy(), "value_low": np.minimum(value_low, value).to_numpy(),
        "value_high": np.maximum(value_high, value).to_numpy(), "uplift": p_uplift.to_numpy(),
        "cost": fixed.to_numpy(), "reason": reason})


def product_candidates(recommendations: pd.DataFrame | None, products: pd.DataFrame,
                       purchased_categories: pd.DataFrame | None, contact_cost: float,
                       scores_are_probabilities: bool = False) -> pd.DataFrame:
    """Cross-sell and upsell candidates from the recommendations (see the module docstring)."""
    if recommendations is None or recommendations.empty:
        return _empty_candidates()
    catalogue = _catalogue(products)
    recs = recommendations.sort_values(["customer_id", "rank"], kind="stable")
    recs = recs[recs["product_id"].isin(catalogue.index)]
    recs = recs.assign(margin=recs["product_id"].map(catalogue["margin"]).to_numpy(),
                       price=recs["product_id"].map(catalogue["current_price"]).to_numpy())
    cross = _cross_sell(recs, purchased_categories, catalogue, contact_cost, scores_are_probabilities)
    upsell = _upsell(recs.drop_duplicates("customer_id"), catalogue, contact_cost)
    return pd.concat([frame for frame in (cross, upsell) if not frame.empty] or [_empty_candidates()],
                     ignore_index=True)


def choose_actions(candidates: pd.DataFrame, budget: float | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each customer's chosen candidate with a positive value (customers without one are absent), and
    the offers left out for the budget (the best offer of each customer who lost one)."""
    positive = candidates[candidates["value"] > 0]
    if positive.empty:
        return positive, positive
    ordered = positive.sort_values(["customer_id", "value", "action"], ascending=[True, False, True], kind="stable")
    best = ordered.drop_duplicates("customer_id")
    if budget is None:
        return best, positive.iloc[0:0]
    is_offer = ordered["action"].isin(OFFER_ACTIONS)
    free = ordered[~is_offer].drop_duplicates("customer_id").set_index("customer_id")["value"]
    offers = ordered[is_offer]
    base = offers["customer_id"].map(free).fillna(0.0)
    offers = offers[offers["value"].to_numpy() > base.to_numpy()]
    wanted = best[best["action"].isin(OFFER_ACTIONS)]
    if offers.empty or wanted["cost"].sum() <= budget:
        return best, positive.iloc[0:0]

    taken = choose_offers_greedy(offers, free, budget)
    chosen_offers = offers.loc[taken]
    rest = ordered[~ordered["customer_id"].isin(chosen_offers["customer_id"])]
    fallback = rest[~rest["action"].isin(OFFER_ACTIONS)].drop_duplicates("customer_id")
    chosen = pd.concat([chosen_offers, fallback]).sort_values("customer_id", kind="stable")
    left_out = wanted[~wanted["customer_id"].isin(chosen_offers["customer_id"])]
    logger.info("offer budget %.2f: %d of %d wanted offers made, cost %.2f", budget, len(chosen_offers),
                len(wanted), chosen_offers["cost"].sum())
    return chosen, left_out


def choose_offers_greedy(offers: pd.DataFrame, free_value: pd.Series, budget: float) -> pd.Index:
    """The offers (index labels of ``offers``: customer_id, value, cost) that maximise the total value, at
    most one per customer in place of the customer's offer-free value (``free_value``; absent: 0), with
    total cost <= ``budget`` (a multiple-choice knapsack), by the greedy of the module docstring.

    Hull steps are taken in order of gain per cost; a step that does not fit ends that customer's
    upgrades while smaller steps of others still fill the budget. Repair: then each customer, in the
    order their upgrades stopped, moves to the offer of the highest gain whose extra cost fits."""
    gain = offers["value"].to_numpy() - offers["customer_id"].map(free_value).fillna(0.0).to_numpy()
    frame = pd.DataFrame({"customer_id": offers["customer_id"].to_numpy(), "cost": offers["cost"].to_numpy(float),
                          "gain": gain, "label": offers.index})
    frame = frame[frame["gain"] > 0].sort_values(["customer_id", "cost", "gain"], ascending=[True, True, False])
    customer, cost, gain = frame["customer_id"].to_numpy(), frame["cost"].to_numpy(), frame["gain"].to_numpy()
    starts = np.flatnonzero(np.r_[True, customer[1:] != customer[:-1]]) if len(frame) else np.array([], int)
    ends = np.r_[starts[1:], len(frame)]
    steps = []  # (gain per cost, group, order on the hull, extra cost, position)
    for group, (start, end) in enumerate(zip(starts, ends)):
        previous_cost, previous_gain = 0.0, 0.0
        for order, offset in enumerate(_upper_hull(cost[start:end], gain[start:end])):
            position = start + offset
            d_cost, d_gain = cost[position] - previous_cost, gain[position] - previous_gain
            steps.append((d_gain / max(d_cost, 1e-12), group, order, d_cost, position))
            previous_cost, previous_gain = cost[position], gain[position]
    steps.sort(key=lambda step: (-step[0], step[1], step[2]))
    remaining, level, stopped, chosen = float(budget), {}, {}, {}
    for _, group, order, d_cost, position in steps:
        if group in stopped or level.get(group, 0) != order:
            continue
        if d_cost <= remaining + 1e-9:
            remaining -= d_cost
            level[group] = order + 1
            chosen[group] = position
        else:
            stopped[group] = None  # a dict: ordered, and fast to look up
    for group in stopped:  # the repair: spend what is left on the best upgrade that still fits
        start, end = starts[group], ends[group]
        now_cost, now_gain = (cost[chosen[group]], gain[chosen[group]]) if group in chosen else (0.0, 0.0)
        fits = (cost[start:end] - now_cost <= remaining + 1e-9) & (gain[start:end] > now_gain)
        if fits.any():
            position = start + int(np.argmax(np.where(fits, gain[start:end], -np.inf)))
            remaining -= cost[position] - now_cost
            chosen[group] = position
    return pd.Index(frame["label"].to_numpy()[sorted(chosen.values())])


def _upper_hull(cost: np.ndarray, gain: np.ndarray) -> list[int]:
    """Positions (cost ascending) on the upper concave hull from (0, 0) over points with gain > 0, each
    step's gain per cost lower than the previous one's."""
    hull: list[int] = []
    for i in range(len(cost)):
        if gain[i] <= 0 or (hull and gain[i] <= gain[hull[-1]]):
            continue
        while hull:
            j = hull[-1]
            k_cost, k_gain = (cost[hull[-2]], gain[hull[-2]]) if len(hull) > 1 else (0.0, 0.0)
            # drop j when it lies on or below the line from the point before it to i
            if (gain[j] - k_gain) * (cost[i] - k_cost) <= (gain[i] - k_gain) * (cost[j] - k_cost):
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def _customers(customers: pd.DataFrame, segments: pd.DataFrame | None) -> pd.DataFrame:
    if customers["customer_id"].duplicated().any():
        raise ValueError("shop.customers: customer_id not unique")
    frame = pd.DataFrame({"customer_id": customers["customer_id"].astype("int64").to_numpy(),
                          # unknown consent is no consent
                          "email_opt_in": customers["email_opt_in"].astype("boolean").fillna(False).astype(bool).to_numpy()})
    if segments is None:
        return frame.assign(lifecycle_segment=None)
    segment = segments.drop_duplicates("customer_id").set_index("customer_id")["lifecycle_segment"]
    return frame.assign(lifecycle_segment=frame["customer_id"].map(segment).astype(object).where(
        frame["customer_id"].isin(segment.index), None))


def _blocked_reasons(customers: pd.DataFrame, contacts: pd.DataFrame | None, run_date: date,
                     cap_days: int, max_contacts: int) -> pd.Series:
    """customer_id -> why do_nothing, for customers without consent or at the contact cap: ``max_contacts``
    contacts or more in the ``cap_days`` before the run date. ``contacts``: customer_id, last_contact_ts and
    optionally contacts (how many contacts the row stands for, latest at last_contact_ts; default 1)."""
    reasons = pd.Series("no marketing consent", index=customers.loc[~customers["email_opt_in"], "customer_id"],
                        dtype=object)
    if contacts is None or contacts.empty or cap_days <= 0:
        return reasons
    start = pd.Timestamp(run_date, tz="UTC")
    when = pd.to_datetime(contacts["last_contact_ts"], utc=True)
    recent = contacts[(when > start - pd.Timedelta(days=cap_days)) & (when < start)].assign(
        last_contact_ts=when, contacts=contacts["contacts"] if "contacts" in contacts else 1)
    per_customer = recent.groupby(recent["customer_id"].astype("int64")).agg(
        contacts=("contacts", "sum"), last=("last_contact_ts", "max"))
    capped = per_customer[(per_customer["contacts"] >= max_contacts) & per_customer.index.isin(customers["customer_id"])
                          & ~per_customer.index.isin(reasons.index)]
    days = ((start - capped["last"]) / pd.Timedelta(days=1)).clip(lower=0).astype(int)
    text = pd.Series([f"contact cap: {int(n)} contact{'s' if n != 1 else ''} in the last {cap_days} days (at most "
                      f"{max_contacts}), the latest {d} day{'s' if d != 1 else ''} ago ({ts:%Y-%m-%d})"
                      for n, d, ts in zip(capped["contacts"], days, capped["last"])], index=capped.index, dtype=object)
    return pd.concat([reasons, text])


def _catalogue(products: pd.DataFrame) -> pd.DataFrame:
    price = pd.to_numeric(products["current_price"], errors="coerce").astype(float)
    cost = pd.to_numeric(products["cost"], errors="coerce").astype(float)
    name = products["name"].astype(str) if "name" in products else "product " + products["product_id"].astype(str)
    catalogue = pd.DataFrame({"current_price": price.to_numpy(), "margin": (price - cost).to_numpy(),
                              "category": products["category"].astype(str).to_numpy(), "name": name.to_numpy()},
                             index=products["product_id"].astype("int64").to_numpy())
    return catalogue[catalogue["current_price"].notna() & catalogue["margin"].notna()]


def _cross_sell(recs: pd.DataFrame, purchased: pd.DataFrame | None, catalogue: pd.DataFrame, contact_cost: float,
                scores_are_probabilities: bool) -> pd.DataFrame:
    if purchased is not None and not purchased.empty:
        bought = pd.MultiIndex.from_frame(purchased[["customer_id", "category"]].astype({"customer_id": "int64",
                                                                                      "category": str}))
        seen = pd.MultiIndex.from_arrays([recs["customer_id"].astype("int64"), recs["category"].astype(str)])
        recs = recs[~seen.isin(bought)]
    top = recs.drop_duplicates("customer_id")
    if top.empty:
        return _empty_candidates()
    if scores_are_probabilities:
        rate = top["score"].astype(float).clip(0, 1)
        how = "purchase probability"
    else:
        rate = pd.Series(CROSS_SELL_INCREMENTAL_RATE, index=top.index)
        how = "ASSUMED incremental purchase rate (not measured)"
    value = rate * top["margin"] - contact_cost
    names = top["product_id"].map(catalogue["name"])
    reason = [f"cross-sell {n} ({c}, a category not bought yet; {why}): {r * 100:.1f} % {how} x {m:.2f} margin - "
              f"{contact_cost:.2f} contact = {v:+.2f} expected incremental margin"
              for n, c, why, r, m, v in zip(names, top["category"], top["reason"], rate, top["margin"], value)]
    return _product_frame(top["customer_id"], top["product_id"], rate, top["margin"], value, contact_cost, reason,
                          "cross_sell")


def _upsell(top: pd.DataFrame, catalogue: pd.DataFrame, contact_cost: float) -> pd.DataFrame:
    """For each customer's top recommendation, the highest-margin product of its category with a higher
    margin and a price at most :data:`UPSELL_MAX_PRICE_RATIO` times its price (chosen per product)."""
    recommended = catalogue.loc[top["product_id"].unique()].reset_index(names="product_id")
    pairs = recommended.merge(catalogue.reset_index(names="product_id"), on="category", suffixes=("", "_up"))
    pairs = pairs[(pairs["margin_up"] > pairs["margin"])
                  & (pairs["current_price_up"] <= UPSELL_MAX_PRICE_RATIO * pairs["current_price"])]
    pairs = pairs.sort_values(["product_id", "margin_up", "product_id_up"], ascending=[True, False, True])
    upsell = pairs.drop_duplicates("product_id").set_index("product_id")
    if upsell.empty:
        return _empty_candidates()
    value = UPSELL_INCREMENTAL_RATE * upsell["margin_up"] - contact_cost
    reason = pd.Series([
        f"upsell {n} ({c}, {mu:.2f} margin against {m:.2f} for the recommended {rn}): "
        f"{UPSELL_INCREMENTAL_RATE * 100:.1f} % ASSUMED incremental purchase rate (not measured) x {mu:.2f} margin - "
        f"{contact_cost:.2f} contact = {v:+.2f} expected incremental margin"
        for n, c, mu, m, rn, v in zip(upsell["name_up"], upsell["category"], upsell["margin_up"], upsell["margin"],
                                      upsell["name"], value)], index=upsell.index)
    top = top[top["product_id"].isin(upsell.index)]
    up = upsell.loc[top["product_id"]]
    return _product_frame(top["customer_id"], up.index.to_series().map(upsell["product_id_up"]),
                          pd.Series(UPSELL_INCREMENTAL_RATE, index=up.index), up["margin_up"],
                          value.loc[top["product_id"]], contact_cost, reason.loc[top["product_id"]].tolist(), "upsell")


def _product_frame(customer_id: pd.Series, product_id: pd.Series, rate: pd.Series, margin: pd.Series,
                   value: pd.Series, contact_cost: float, reason: list[str], action: str) -> pd.DataFrame:
    n = len(customer_id)
    return pd.DataFrame({
        "customer_id": customer_id.astype("int64").to_numpy(), "action": action,
        "product_id": pd.array(product_id.astype("int64").to_numpy(), dtype="Int64"), "discount": np.nan,
        "value": value.to_numpy(float), "value_low": np.full(n, -contact_cost),
        "value_high": np.maximum((2 * rate * margin - contact_cost).to_numpy(float), value.to_numpy(float)),
        "uplift": np.nan, "cost": np.full(n, contact_cost), "reason": reason})


def _empty_candidates() -> pd.DataFrame:
    frame = pd.DataFrame({column: pd.Series(dtype=float) for column in _CANDIDATE_COLUMNS})
    return frame.astype({"customer_id": "int64", "action": object, "product_id": "Int64", "reason": object})


def _assemble(customers: pd.DataFrame, candidates: pd.DataFrame, chosen: pd.DataFrame, left_out: pd.DataFrame,
              blocked: pd.Series, no_uplift: bool, model_versions: Mapping[str, str],
              budget: float | None) -> pd.DataFrame:
    rows = customers.merge(chosen, on="customer_id", how="left")
    nothing = rows["action"].isna()
    best = candidates.sort_values(["customer_id", "value"], ascending=[True, False]).drop_duplicates("customer_id")
    best_text = best.set_index("customer_id")["reason"]
    reason = rows["reason"].astype(object)
    reason[nothing] = [f"no action with a positive expected incremental value (best: {best_text[c]})"
                       if c in best_text.index else "no candidate action (no uplift rows or recommendations)"
                       for c in rows.loc[nothing, "customer_id"]]
    if not left_out.empty:
        lost = left_out.set_index("customer_id")
        dropped = rows["customer_id"].isin(lost.index)
        reason[dropped] = [
            f"{text if has_action else 'do nothing'}; {_LABEL[lost.at[c, 'action']]} {lost.at[c, 'discount'] * 100:.0f} % "
            f"({lost.at[c, 'value']:+.2f}) left out: the offer budget {budget:.2f} went to offers worth more per cost"
            for text, has_action, c in zip(reason[dropped], ~nothing[dropped], rows.loc[dropped, "customer_id"])]
    if no_uplift:
        reason = reason + "; no retention or win-back offers: no uplift model champion"
    is_blocked = rows["customer_id"].isin(blocked.index)
    reason[is_blocked] = rows.loc[is_blocked, "customer_id"].map(blocked)
    nothing = nothing | is_blocked
    zero = lambda column: rows[column].astype(float).where(~nothing, 0.0)  # noqa: E731
    return pd.DataFrame({
        "customer_id": rows["customer_id"].astype("int64"),
        "action": rows["action"].where(~nothing, "do_nothing").astype(str),
        "product_id": rows["product_id"].astype("Int64").where(~nothing, pd.NA),
        "discount": rows["discount"].astype(float).where(~nothing, np.nan),
        "expected_incremental_value": zero("value"), "value_low": zero("value_low"),
        "value_high": zero("value_high"),
        "uplift": rows["uplift"].astype(float).where(~nothing, np.nan),
        "expected_cost": zero("cost"), "reason": reason.astype(str),
        "email_opt_in": rows["email_opt_in"].astype(bool),
        "lifecycle_segment": rows["lifecycle_segment"].astype(object),
        "model_versions": json.dumps(dict(model_versions), sort_keys=True),
    }).reset_index(drop=True)[list(OUTPUT_COLUMNS)]
