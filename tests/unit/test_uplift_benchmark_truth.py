"""The uplift benchmark's truth at another discount (benchmarks/uplift.py ``_judge``): the next best action
may choose a discount the campaign did not draw for a customer; the benchmark re-derives that offer's
truth from the drawn one, which must match what the generator draws at that discount."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks.uplift import _judge
from revopt.sample_data.offers import OfferDesign, draw_offers

N, DAYS, MARGIN, CONTACT = 3000, 100, 0.4, 0.05


def _campaign(discount: float) -> pd.DataFrame:
    """The truth of one campaign (day 84) over the same customers, every offer at ``discount``."""
    rng = np.random.default_rng(7)
    signup = rng.integers(-700, 40, N)  # some long-standing customers: sleeping dogs
    rate = rng.gamma(1.0, 0.02, N)
    churn = np.where(rng.random(N) < 0.3, rng.integers(50, 84, N), 10_000)
    order_customer = np.repeat(np.arange(N), 2)
    order_day = np.clip(np.maximum(signup[order_customer], 0) + rng.integers(1, 40, 2 * N), 0, 83)
    basket = rng.uniform(20.0, 80.0, N)
    draw = draw_offers(np.random.default_rng(11), OfferDesign(discounts=(discount,)), signup_day=signup,
                       churn_day=churn, rate=rate, open_rate=rng.uniform(0.0, 0.6, N), opt_in=np.ones(N, dtype=bool),
                       basket_value=basket, email_boost=np.zeros(N), order_customer=order_customer,
                       order_day=order_day, intensity=np.ones(DAYS), origin=pd.Timestamp("2024-01-01", tz="UTC"))
    effects = draw.effects.merge(draw.offers[["offer_id", "discount"]], on="offer_id")
    return effects.assign(basket_value=basket[effects["customer_id"].to_numpy() - 1])


@pytest.fixture(scope="module")
def drawn() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _campaign(0.1), _campaign(0.2)


def _offers(campaign: pd.DataFrame, discount: float) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": campaign["customer_id"], "discount": discount, "expected_cost": 1.0,
                         "expected_incremental_value": 0.5})


def test_the_truth_at_the_drawn_discount_is_the_generators(drawn: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    low, _ = drawn
    judged = _judge(low, _offers(low, 0.1), MARGIN, CONTACT)
    treated = low["p_order_treated"]
    assert judged["incremental_revenue"] == pytest.approx(low["revenue_effect"].sum())
    assert judged["incremental_orders"] == pytest.approx((treated - low["p_order_control"]).sum())
    # the coupon is on the first order: discount x P(order | offer) x the mean basket
    expected_margin = (MARGIN * low["revenue_effect"] - 0.1 * treated * low["basket_value"] - CONTACT).sum()
    assert judged["incremental_margin"] == pytest.approx(expected_margin)
    assert judged["predicted_margin"] == pytest.approx(0.5 * len(low))


def test_the_truth_at_another_discount_is_what_the_generator_draws_there(
        drawn: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    low, high = drawn
    assert (low["response_type"].to_numpy() == high["response_type"].to_numpy()).all()
    assert set(low["response_type"]) == {"persuadable", "sure_thing", "lost_cause", "sleeping_dog"}
    for campaign, other, discount in ((low, high, 0.2), (high, low, 0.1)):
        judged = _judge(campaign, _offers(campaign, discount), MARGIN, CONTACT)
        truth = _judge(other, _offers(other, discount), MARGIN, CONTACT)
        for key in ("incremental_revenue", "incremental_orders", "true_discount_cost", "incremental_margin"):
            assert judged[key] == pytest.approx(truth[key], rel=1e-9), key
        assert judged["sleeping_dogs_offered"] == int((campaign["response_type"] == "sleeping_dog").sum())
