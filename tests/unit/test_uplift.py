"""The uplift family (ml.families.uplift): its Qini metric, shortfall, time split, that it beats churn-risk
targeting on a store with planted offer effects, the champion's refit, and the pyfunc round trip."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import mlflow
from mlflow.models import infer_signature
import numpy as np
import pandas as pd
import pytest

from features.customer import FEATURE_COLUMNS
from ml.families import FAMILIES
from ml.families.uplift import FAMILY, UpliftData
from ml.families.uplift.model import OUTPUT_COLUMNS, QINI, qini_coefficient
from ml.family import Family, Trained
from ml.params import RunParams
from revopt.sample_data.offers import OfferDesign, uplift_extract
from revopt.sample_data.synth import SyntheticStore, generate_store

START = dt.date(2024, 1, 1)
DAYS = 420
RUN_DATE = START + dt.timedelta(days=DAYS)
PARAMS = RunParams(n_trials=2, seed=3)


@pytest.fixture(scope="module")
def store() -> SyntheticStore:
    return generate_store(8000, DAYS, START, seed=4, offers=OfferDesign())


@pytest.fixture(scope="module")
def frames(store: SyntheticStore) -> dict[str, pd.DataFrame]:
    return uplift_extract(store.shop, store.events, pd.Timestamp(RUN_DATE), PARAMS.training_extract_days)


@pytest.fixture(scope="module")
def data(frames) -> UpliftData:
    return FAMILY.training_data(frames, RUN_DATE, PARAMS)


@pytest.fixture(scope="module")
def trained(data: UpliftData) -> Trained:
    return FAMILY.train(data, PARAMS, [])


# --- the metric --------------------------------------------------------------------------------------


def test_qini_is_one_for_the_perfect_ranking_about_zero_at_random_and_negative_reversed() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    treated = rng.random(n) < 0.5
    persuadable = rng.random(n) < 0.3
    ordered = np.where(treated & persuadable, rng.random(n) < 0.8, rng.random(n) < 0.2)
    y = np.column_stack([treated, ordered]).astype(float)
    perfect = ordered * 1.0 * treated - ordered * 1.0 * ~treated
    assert qini_coefficient(y, perfect) == pytest.approx(1.0)
    assert qini_coefficient(y, persuadable + rng.random(n) * 0.1) > 0.2
    assert abs(qini_coefficient(y, rng.random(n))) < 0.1
    assert qini_coefficient(y, -1.0 * persuadable + rng.random(n) * 0.1) < -0.2
    with pytest.raises(ValueError, match="treated and control"):
        qini_coefficient(np.column_stack([np.ones(n), ordered]), perfect)


# --- shortfall and split -----------------------------------------------------------------------------


def test_the_family_is_registered_and_implements_the_protocol() -> None:
    assert FAMILY in FAMILIES and isinstance(FAMILY, Family)
    assert FAMILY.model_name == "revopt_uplift" and FAMILY.name == "uplift" and FAMILY.metric is QINI


def test_shortfall_names_shop_offers_and_the_run_date(frames) -> None:
    assert FAMILY.shortfall(frames, RUN_DATE, PARAMS) is None
    no_offers = {**frames, "offers": frames["offers"].iloc[:0]}
    reason = FAMILY.shortfall(no_offers, RUN_DATE, PARAMS)
    assert "shop.offers" in reason and str(RUN_DATE) in reason
    assert "no offers" in FAMILY.shortfall({k: v for k, v in frames.items() if k != "offers"}, RUN_DATE, PARAMS)
    all_sent = {**frames, "offers": frames["offers"][frames["offers"]["treated"]]}
    reason = FAMILY.shortfall(all_sent, RUN_DATE, PARAMS)
    assert "control group" in reason and "shop.offers" in reason and str(RUN_DATE) in reason
    early = dt.date(2024, 7, 1)  # only the first campaign (day 84) has ended its horizon
    reason = FAMILY.shortfall(frames, early, PARAMS)
    assert "two are needed" in reason and str(early) in reason


def test_the_test_campaign_is_the_latest_one_whose_horizon_passed(data: UpliftData) -> None:
    campaigns = sorted(set(data.fit.campaign) | set(data.test.campaign))
    assert set(data.test.campaign) == {campaigns[-1]}
    assert pd.Timestamp(campaigns[-1]) + pd.Timedelta(days=PARAMS.uplift_horizon_days) <= pd.Timestamp(RUN_DATE)
    assert campaigns[-1] not in set(data.select_train.campaign) | set(data.select_valid.campaign)
    assert set(data.select_valid.campaign) == {sorted(set(data.fit.campaign))[-1]}
    # features are as of the campaign: nothing of the outcome window leaks in
    assert (data.test.X["recency_days"] > 0).all()


# --- the model ---------------------------------------------------------------------------------------


def test_uplift_targeting_beats_churn_risk_targeting_on_planted_offers(store, data: UpliftData, trained: Trained) -> None:
    assert trained.test.value(QINI) > trained.baseline.value(QINI)
    truth = store.truth["offer_effects"].set_index("offer_id").reindex(data.test.X.index)
    k = int(0.3 * len(data.test))

    def incremental_revenue(score: np.ndarray) -> float:
        return float(truth["revenue_effect"].to_numpy()[np.argsort(-score, kind="stable")[:k]].sum())

    model, churn_risk = incremental_revenue(trained.test.predicted), incremental_revenue(trained.baseline.predicted)
    at_random = k * float(truth["revenue_effect"].mean())
    assert model > 1.5 * max(churn_risk, at_random, 0.0)
    dogs = (truth["response_type"] == "sleeping_dog").to_numpy()
    offered = np.zeros(len(dogs), dtype=bool)
    offered[np.argsort(-trained.test.predicted, kind="stable")[:k]] = True
    assert (offered & dogs).sum() / dogs.sum() < 0.2  # at random: 0.3


def test_the_discount_cost_is_the_coupon_on_the_next_order_as_the_store_redeemed_it(frames, data: UpliftData,
                                                                                     trained: Trained) -> None:
    # the test campaign's sent offers, each scored at its own (offer type, discount) on its campaign's features
    sent = data.test.subset(data.test.treated)
    features = sent.X.reset_index(drop=True).assign(customer_id=sent.customer_id)
    rows = trained.model.predict(None, FAMILY.nightly_input({"customer_features": features}, RUN_DATE, PARAMS), {})
    own = pd.DataFrame({"offer_id": sent.X.index, "customer_id": sent.customer_id, "offer_type": sent.offer_type,
                        "discount": sent.discount, "avg_order_value": sent.X["avg_order_value"].to_numpy()}).merge(
        rows, on=["customer_id", "offer_type", "discount"])
    assert len(own) > 0.9 * len(sent)
    np.testing.assert_allclose(own["expected_discount_cost"],
                               own["discount"] * own["p_order_treated"] * own["avg_order_value"])
    # what the coupons gave away: the discount on the first completed order in each offer's horizon (its
    # order_value is after the coupon), not on every order there
    offers = frames["offers"].set_index("offer_id").loc[own["offer_id"]].reset_index()
    orders = frames["orders"].loc[frames["orders"]["status"] == "completed", ["customer_id", "order_ts", "order_value"]]
    pairs = offers.merge(orders, on="customer_id")
    pairs = pairs[(pairs["order_ts"] >= pairs["sent_at"])
                  & (pairs["order_ts"] < pairs["sent_at"] + pd.Timedelta(days=PARAMS.uplift_horizon_days))]
    first = pairs.sort_values("order_ts", kind="stable").drop_duplicates("offer_id")
    given = float((first["order_value"] * first["discount"] / (1.0 - first["discount"])).sum())
    assert 0.75 < own["expected_discount_cost"].sum() / given < 1.33


def test_evaluate_refits_the_spec_exactly_as_train_tested_it(data: UpliftData, trained: Trained) -> None:
    again = FAMILY.evaluate(data, json.loads(json.dumps(trained.spec)), PARAMS)
    np.testing.assert_array_equal(again.y, trained.test.y)
    np.testing.assert_allclose(again.predicted, trained.test.predicted)
    assert FAMILY.evaluate(data, {"family": "churn"}, PARAMS) is None
    assert FAMILY.evaluate(data, {**trained.spec, "features": ["recency_days"]}, PARAMS) is None


def test_the_pyfunc_round_trip_gives_one_row_per_customer_and_candidate_offer(data, trained: Trained, tmp_path) -> None:
    features = data.test.X.reset_index(drop=True).assign(customer_id=data.test.customer_id)
    # typed as tonight's customer features are (features.customer: frequency is an integer count)
    features = features.drop_duplicates("customer_id").head(300).astype({"frequency": "int64"})
    tonight = FAMILY.nightly_input({"customer_features": features}, RUN_DATE, PARAMS)
    assert list(tonight.columns) == ["customer_id", *FEATURE_COLUMNS]
    params = FAMILY.predict_params(RUN_DATE, PARAMS)
    # with the signature the registry logs (input example from training): MLflow enforces its types
    signature = infer_signature(trained.example, trained.model.predict(None, trained.example, params), params=params)
    mlflow.pyfunc.save_model(str(tmp_path / "model"), python_model=trained.model, signature=signature)
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    out = loaded.predict(tonight, params=params)
    np.testing.assert_allclose(out.drop(columns=["customer_id", "offer_type"]).to_numpy(dtype=float),
                               trained.model.predict(None, tonight, params).drop(columns=["customer_id", "offer_type"])
                               .to_numpy(dtype=float))
    assert list(out.columns) == list(OUTPUT_COLUMNS)
    assert set(out["offer_type"]) <= {"retention", "win_back"} and set(out["discount"]) <= {0.1, 0.2}
    assert set(out["customer_id"]) <= set(tonight["customer_id"])
    np.testing.assert_allclose(out["uplift"], out["p_order_treated"] - out["p_order_control"])
    assert (out["revenue_uplift_low"] <= out["revenue_uplift"]).all() and (out["revenue_uplift"] <= out["revenue_uplift_high"]).all()
    np.testing.assert_allclose(out["expected_discount_cost"] / out["discount"] >= 0, True)
    assert (out["horizon_days"] == PARAMS.uplift_horizon_days).all()
    # the run's discount levels restrict the candidates (within the range the history saw)
    only = trained.model.predict(None, tonight, FAMILY.predict_params(RUN_DATE, replace(PARAMS, nba_discount_levels=[0.2, 0.5])))
    assert set(only["discount"]) == {0.2}
