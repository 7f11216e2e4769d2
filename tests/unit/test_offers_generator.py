"""The synthetic store's randomised offers (revopt.sample_data.offers): contract shape, randomisation,
the four response types, and their effects visible in the orders the generator draws."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from revopt.platform.contract import SHOP_DDL, SHOP_OPTIONAL_TABLES, TRUTH_DDL, TRUTH_TABLES, ddl_columns
from revopt.sample_data.offers import RESPONSE_TYPES, OfferDesign
from revopt.sample_data.synth import SyntheticStore, generate_store

START = dt.date(2024, 1, 1)
DAYS = 330
HORIZON = OfferDesign().horizon_days


@pytest.fixture(scope="module")
def store() -> SyntheticStore:
    return generate_store(6000, DAYS, START, seed=21, offers=OfferDesign())


@pytest.fixture(scope="module")
def offers(store: SyntheticStore) -> pd.DataFrame:
    """Every offer with its truth and its realised outcome (a completed order within the horizon)."""
    offers = store.shop["offers"].merge(store.truth["offer_effects"], on=["offer_id", "customer_id"])
    completed = store.shop["orders"][store.shop["orders"]["status"] == "completed"]
    pairs = offers[["offer_id", "customer_id", "sent_at"]].merge(completed[["customer_id", "order_ts"]], on="customer_id")
    inside = pairs[(pairs["order_ts"] >= pairs["sent_at"]) & (pairs["order_ts"] < pairs["sent_at"] + pd.Timedelta(days=HORIZON))]
    offers["ordered"] = offers["offer_id"].isin(inside["offer_id"])
    # only campaigns whose whole horizon is inside the data
    return offers[offers["sent_at"] + pd.Timedelta(days=HORIZON) <= pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS)]


def test_offers_follow_the_contract_and_are_optional(store: SyntheticStore) -> None:
    assert "offers" in SHOP_OPTIONAL_TABLES and "offer_effects" in TRUTH_TABLES
    assert list(store.shop["offers"].columns) == ddl_columns(SHOP_DDL)["offers"]
    assert list(store.truth["offer_effects"].columns) == ddl_columns(TRUTH_DDL)["offer_effects"]
    assert str(store.shop["offers"]["sent_at"].dtype) == "datetime64[ns, UTC]"
    assert store.shop["offers"]["offer_id"].is_unique
    without = generate_store(300, 120, START, seed=21)
    assert "offers" not in without.shop and list(without.truth["offer_effects"].columns) == ddl_columns(TRUTH_DDL)["offer_effects"]
    assert without.truth["offer_effects"].empty


def test_offers_go_to_consenting_past_buyers_half_of_them_treated(store: SyntheticStore) -> None:
    offers = store.shop["offers"]
    customers = store.shop["customers"].set_index("customer_id")
    assert customers.loc[offers["customer_id"], "email_opt_in"].all()
    first_order = store.shop["orders"].groupby("customer_id")["order_ts"].min()
    assert (first_order.reindex(offers["customer_id"]).to_numpy() < offers["sent_at"].to_numpy()).all()
    assert abs(offers["treated"].mean() - 0.5) < 0.03
    assert offers["sent_at"].dt.normalize().nunique() == len(OfferDesign().campaign_days(DAYS))
    assert set(offers["offer_type"]) == {"retention", "win_back"}


def test_every_response_type_is_drawn_and_its_effect_shows_in_the_orders(offers: pd.DataFrame) -> None:
    assert set(offers["response_type"]) == set(RESPONSE_TYPES)
    realised = offers.groupby(["response_type", "treated"])["ordered"].mean().unstack()
    effect = realised[True] - realised[False]
    assert effect["persuadable"] > 0.08
    assert effect["sleeping_dog"] < -0.15
    assert abs(effect["sure_thing"]) < 0.08 and abs(effect["lost_cause"]) < 0.05
    # the truth's probabilities are what the orders show
    truth = offers.groupby(["response_type", "treated"])[["p_order_control", "p_order_treated"]].mean()
    for kind in RESPONSE_TYPES:
        assert abs(truth.loc[(kind, False), "p_order_control"] - realised.loc[kind, False]) < 0.08, kind
        assert abs(truth.loc[(kind, True), "p_order_treated"] - realised.loc[kind, True]) < 0.08, kind
    revenue = offers.groupby("response_type")["revenue_effect"].mean()
    assert revenue["persuadable"] > 0 > revenue["sleeping_dog"] and revenue["sure_thing"] == revenue["lost_cause"] == 0


def test_the_highest_churn_risk_are_not_the_persuadables(offers: pd.DataFrame, store: SyntheticStore) -> None:
    orders = store.shop["orders"]
    last = offers.merge(orders[["customer_id", "order_ts"]], on="customer_id")
    last = last[last["order_ts"] < last["sent_at"]].groupby("offer_id")["order_ts"].max()
    recency = (offers["sent_at"] - offers["offer_id"].map(last)).dt.days
    riskiest = offers[recency >= recency.quantile(0.8)]
    assert (riskiest["response_type"] == "lost_cause").mean() > 0.5
    heaviest = offers["response_type"] == "sure_thing"
    assert recency[heaviest].median() < recency.median()


def test_a_treated_customers_next_order_carries_the_discount(store: SyntheticStore) -> None:
    sent = store.shop["offers"][store.shop["offers"]["treated"]]
    orders = store.shop["orders"]
    pairs = sent.merge(orders[["order_id", "customer_id", "order_ts"]], on="customer_id")
    pairs = pairs[(pairs["order_ts"] >= pairs["sent_at"]) & (pairs["order_ts"] < pairs["sent_at"] + pd.Timedelta(days=HORIZON))]
    first = pairs.sort_values("order_ts").drop_duplicates("offer_id")
    lines = store.shop["order_lines"].merge(first[["order_id", "discount"]].rename(columns={"discount": "offered"}),
                                            on="order_id")
    assert len(lines) > 100
    assert (lines["discount"] >= lines["offered"] - 1e-9).all()
    others = store.shop["order_lines"][~store.shop["order_lines"]["order_id"].isin(first["order_id"])]
    assert (others["discount"] > 0).mean() < (lines["discount"] > 0).mean()


def test_sleeping_dogs_who_left_have_their_dropout_in_the_truth(store: SyntheticStore) -> None:
    effects = store.truth["offer_effects"].merge(store.shop["offers"], on=["offer_id", "customer_id"])
    dogs = effects[(effects["response_type"] == "sleeping_dog") & effects["treated"]]
    churn = store.truth["customers"].set_index("customer_id")["churn_date"].reindex(dogs["customer_id"])
    left = churn.to_numpy() <= (dogs["sent_at"].dt.tz_localize(None) + pd.Timedelta(days=8)).to_numpy()
    assert 0.5 < left.mean() <= 1.0
    orders = store.shop["orders"]
    after = dogs[left].merge(orders[["customer_id", "order_ts"]], on="customer_id")
    dropped = after["order_ts"].dt.tz_localize(None) >= after["customer_id"].map(
        store.truth["customers"].set_index("customer_id")["churn_date"])
    assert not dropped.any()


def test_the_design_refuses_overlapping_outcome_windows() -> None:
    with pytest.raises(ValueError, match="overlap"):
        OfferDesign(every_days=30, horizon_days=60)
    assert np.array_equal(OfferDesign().campaign_days(300), [84, 147, 210, 273])
