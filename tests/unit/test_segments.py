"""Customer segments (ml.personalisation.segments): the lifecycle rules on hand-made customers, their
thresholds as run params, missing churn / CLV scores, and the behavioural clusters and their labels."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from ml.params import RunParams
from ml.personalisation.segments import (
    LIFECYCLE_SEGMENTS, NO_ORDERS_CLUSTER, NO_ORDERS_LABEL, PROFILE_COLUMNS, SEGMENT_COLUMNS, UNKNOWN_SEGMENT,
    describe_clusters, segment_customers, segment_of, segment_profile_figure,
)

RUN_DATE = dt.date(2024, 6, 1)

#: One hand-made customer per segment under the default params (new 30, active 90, lost 365 days,
#: at risk from churn 0.6, champions the top 20 % of the active by CLV).
HAND_MADE = {
    # customer_id: (recency, days since first order, frequency, monetary, mean gap, churn risk, clv, expected)
    1: (None, None, 0, 0.0, None, np.nan, 0.0, "prospect"),
    2: (10.0, 20.0, 1, 50.0, None, 0.3, 40.0, "new"),
    3: (400.0, 700.0, 3, 300.0, 150.0, np.nan, 0.0, "lost"),
    4: (200.0, 600.0, 4, 400.0, 130.0, np.nan, 5.0, "hibernating"),
    5: (60.0, 500.0, 6, 600.0, 80.0, 0.8, 90.0, "at_risk"),
    6: (5.0, 400.0, 20, 4000.0, 20.0, 0.1, 900.0, "champion"),
    7: (40.0, 300.0, 5, 500.0, 60.0, 0.2, 100.0, "active"),
    8: (45.0, 350.0, 4, 450.0, 70.0, 0.3, 110.0, "active"),
    9: (50.0, 320.0, 3, 350.0, 90.0, 0.25, 120.0, "active"),
    10: (20.0, 330.0, 5, 550.0, 60.0, 0.5, 130.0, "active"),
    11: (8.0, 450.0, 12, 2500.0, 30.0, 0.2, 700.0, "champion"),  # top 20 % of 8 active customers: 2 of them
    12: (100.0, 500.0, 5, 400.0, 60.0, 0.7, 50.0, "hibernating"),  # at risk if 100 days still counted as active
}


def hand_made(rows: dict = HAND_MADE) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(features indexed by customer_id, customers, scores) of ``rows``."""
    ids = list(rows)
    tenure = 800.0
    recency = [r[0] if r[0] is not None else tenure for r in rows.values()]
    first = [r[1] if r[1] is not None else tenure for r in rows.values()]
    frequency = [r[2] for r in rows.values()]
    features = pd.DataFrame({
        "recency_days": recency, "days_since_first_order": first, "frequency": frequency,
        "monetary": [r[3] for r in rows.values()],
        "avg_order_value": [r[3] / r[2] if r[2] else 0.0 for r in rows.values()],
        "tenure_days": tenure, "mean_gap_days": [r[4] if r[4] is not None else f for r, f in zip(rows.values(), first)],
        "sessions_30d": [i % 4 for i in ids], "email_opens_30d": [i % 3 for i in ids],
    }, index=pd.Index(ids, name="customer_id"))
    customers = pd.DataFrame({"customer_id": ids, "signup_date": pd.Timestamp(RUN_DATE) - pd.Timedelta(days=tenure),
                              "email_opt_in": [i % 2 == 0 for i in ids]})
    scores = pd.DataFrame({"run_date": RUN_DATE, "customer_id": ids, "churn_risk": [r[5] for r in rows.values()],
                           "clv": [r[6] for r in rows.values()]})
    return features, customers, scores


def random_base(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A varied base of ``n`` customers (a tenth without orders), features with a customer_id column."""
    rng = np.random.default_rng(seed)
    frequency = rng.poisson(rng.choice([1.0, 4.0, 15.0], size=n))
    frequency[: n // 10] = 0
    monetary = frequency * rng.gamma(2.0, 40.0, size=n)
    tenure = rng.uniform(30, 900, size=n)
    recency = np.where(frequency > 0, rng.uniform(0, 1, size=n) * tenure, tenure)
    features = pd.DataFrame({
        "customer_id": np.arange(1, n + 1), "recency_days": recency,
        "days_since_first_order": np.where(frequency > 0, np.maximum(recency, tenure * 0.9), tenure),
        "frequency": frequency, "monetary": monetary,
        "avg_order_value": np.divide(monetary, frequency, out=np.zeros(n), where=frequency > 0),
        "tenure_days": tenure, "mean_gap_days": tenure / np.maximum(frequency, 1),
        "sessions_30d": rng.poisson(2.0, size=n), "product_views_30d": rng.poisson(5.0, size=n),
        "email_opens_30d": rng.poisson(rng.choice([0.2, 3.0], size=n)), "email_clicks_30d": rng.poisson(0.5, size=n),
        "discount_share": rng.uniform(0, 1, size=n),
    })
    customers = pd.DataFrame({"customer_id": features["customer_id"],
                              "signup_date": pd.Timestamp(RUN_DATE) - pd.to_timedelta(tenure, unit="D"),
                              "email_opt_in": rng.uniform(size=n) < 0.7})
    return features, customers


def segments_of(result) -> dict[int, str]:
    return result.customers.set_index("customer_id")["lifecycle_segment"].to_dict()


def test_each_lifecycle_segment_is_hit_with_its_reason_in_numbers():
    features, customers, scores = hand_made()
    result = segment_customers(features, customers, scores, RUN_DATE, RunParams())
    assert segments_of(result) == {i: row[-1] for i, row in HAND_MADE.items()}
    reasons = result.customers.set_index("customer_id")["lifecycle_reason"]
    assert reasons[4] == "last order 200 days ago (hibernating: 90-365 days)"
    assert reasons[3] == "last order 400 days ago (lost: 365+ days)"
    assert reasons[2] == "first order 20 days ago (new: within 30 days)"
    assert reasons[1] == "no completed order yet (signed up 800 days ago)"
    assert "churn risk 0.80" in reasons[5] and ">= 0.60" in reasons[5]
    assert "predicted CLV 900.00" in reasons[6] and "top 20%" in reasons[6]
    assert reasons[7] == "last order 40 days ago (active: within 90 days)"
    # scores.customer_segments' columns (migration 0009) minus run_date
    assert list(result.customers.columns) == list(SEGMENT_COLUMNS) == [
        "customer_id", "lifecycle_segment", "lifecycle_reason", "cluster", "cluster_label", "recency_days",
        "frequency", "monetary", "churn_risk", "predicted_clv"]


@pytest.mark.parametrize(("change", "customer", "before", "after"), [
    ({"segment_active_days": 30}, 7, "active", "hibernating"),
    ({"segment_active_days": 120}, 12, "hibernating", "at_risk"),
    ({"segment_lost_days": 180}, 4, "hibernating", "lost"),
    ({"segment_new_days": 5}, 2, "new", "active"),
    ({"segment_at_risk_churn": 0.9}, 5, "at_risk", "active"),
    ({"segment_at_risk_churn": 0.45}, 10, "active", "at_risk"),
    ({"segment_champion_quantile": 0.5}, 10, "active", "champion"),
])
def test_thresholds_from_params_move_customers(change, customer, before, after):
    features, customers, scores = hand_made()
    default = segments_of(segment_customers(features, customers, scores, RUN_DATE, RunParams()))
    moved = segments_of(segment_customers(features, customers, scores, RUN_DATE, RunParams(**change)))
    assert (default[customer], moved[customer]) == (before, after)


def test_an_at_risk_champion_is_at_risk_and_the_reason_says_both():
    rows = {**HAND_MADE, 6: (5.0, 400.0, 20, 4000.0, 20.0, 0.7, 900.0, "at_risk")}
    result = segment_customers(*hand_made(rows), RUN_DATE, RunParams())
    row = result.customers.set_index("customer_id").loc[6]
    assert row["lifecycle_segment"] == "at_risk"
    assert "churn risk 0.70" in row["lifecycle_reason"] and "predicted CLV in the top 20%" in row["lifecycle_reason"]


def test_without_churn_scores_an_overdue_customer_is_at_risk_by_their_own_rhythm():
    features, customers, scores = hand_made()
    # customer 5: last order 60 days ago, usually every 80 -> not overdue; customer 9: 50 days, every 20 -> 2.5x
    features = features.assign(mean_gap_days=features["mean_gap_days"].where(features.index != 9, 20.0))
    result = segment_customers(features, customers, scores.drop(columns="churn_risk"), RUN_DATE, RunParams())
    segments = segments_of(result)
    assert segments[5] == "active" and segments[9] == "at_risk"
    reason = result.customers.set_index("customer_id").loc[9, "lifecycle_reason"]
    assert reason.startswith("last order 50 days ago, 2.5x their usual 20 days between orders")
    assert result.customers["churn_risk"].isna().all()
    # a one-order customer has no rhythm to be late against
    one_order = {**HAND_MADE, 9: (50.0, 50.0, 1, 350.0, 1.0, np.nan, 120.0, "active")}
    features, customers, scores = hand_made(one_order)
    assert segments_of(segment_customers(features, customers, scores, RUN_DATE, RunParams()))[9] == "active"


def test_without_clv_champions_are_the_top_spenders_and_without_scores_nothing_breaks():
    features, customers, scores = hand_made()
    no_clv = segment_customers(features, customers, scores.drop(columns="clv"), RUN_DATE, RunParams())
    assert segments_of(no_clv)[6] == "champion"
    assert "spend 4,000.00" in no_clv.customers.set_index("customer_id").loc[6, "lifecycle_reason"]
    assert no_clv.customers["predicted_clv"].isna().all()
    # CLV ranks customer 10 first among the active ones, spend ranks customer 6 first
    flipped = scores.assign(clv=scores["clv"].where(scores["customer_id"] != 10, 5000.0))
    assert segments_of(segment_customers(features, customers, flipped, RUN_DATE, RunParams()))[10] == "champion"
    bare = segment_customers(features, customers, None, RUN_DATE, RunParams())
    assert len(bare.customers) == len(features) and bare.customers["lifecycle_segment"].notna().all()


def test_clusters_are_deterministic_with_the_seed_and_labelled_distinctly():
    features, customers = random_base()
    params = RunParams(segment_clusters=5, seed=7)
    first = segment_customers(features, customers, None, RUN_DATE, params)
    again = segment_customers(features, customers, None, RUN_DATE, params)
    pd.testing.assert_frame_equal(first.customers, again.customers)
    pd.testing.assert_frame_equal(first.profiles, again.profiles)
    clustered = first.customers[first.customers["frequency"] > 0]
    labels = clustered.groupby("cluster")["cluster_label"].unique()
    assert sorted(labels.index) == list(range(5))
    assert all(len(label) == 1 and label[0].strip() for label in labels)  # one non-empty label per cluster
    assert clustered.groupby("cluster_label")["cluster"].nunique().eq(1).all()  # and no label shared
    # clusters numbered by (log) spend, 0 the highest
    assert np.log1p(clustered["monetary"]).groupby(clustered["cluster"]).mean().is_monotonic_decreasing
    prospects = first.customers[first.customers["frequency"] == 0]
    assert (prospects["cluster"] == NO_ORDERS_CLUSTER).all() and (prospects["cluster_label"] == NO_ORDERS_LABEL).all()
    assert prospects["recency_days"].isna().all() and (prospects["lifecycle_segment"] == "prospect").all()
    assert first.metrics["clusters"] == 5 and -1 <= first.metrics["silhouette"] <= 1


def test_profiles_sum_to_the_customer_count_and_published_columns_have_no_nulls():
    features, customers = random_base()
    result = segment_customers(features, customers, None, RUN_DATE, RunParams())
    profiles = result.profiles
    assert list(profiles.columns) == list(PROFILE_COLUMNS) == [
        "kind", "segment", "customers", "share", "description", "profile"]
    for kind in ("lifecycle", "cluster"):
        rows = profiles[profiles["kind"] == kind]
        assert rows["customers"].sum() == len(features)
        assert rows["share"].sum() == pytest.approx(1.0)
        assert rows["segment"].is_unique
    assert list(profiles.loc[profiles["kind"] == "lifecycle", "segment"]) == list(LIFECYCLE_SEGMENTS)
    assert set(profiles.loc[profiles["kind"] == "cluster", "segment"]) == set(result.customers["cluster_label"])
    assert profiles.notna().all().all()
    for text in profiles["profile"]:
        assert isinstance(json.loads(text), dict)
    not_null = ["customer_id", "lifecycle_segment", "lifecycle_reason", "cluster", "cluster_label", "frequency",
                "monetary"]
    assert result.customers[not_null].notna().all().all()
    assert (result.customers["lifecycle_reason"].str.len() > 0).all()
    assert result.customers["customer_id"].dtype == "int64" and result.customers["cluster"].dtype == "int64"
    assert result.customers["frequency"].dtype == "int64"


def test_inputs_are_not_mutated():
    features, customers = random_base(n=120)
    before_features, before_customers = features.copy(), customers.copy()
    segment_customers(features, customers, None, RUN_DATE, RunParams())
    pd.testing.assert_frame_equal(features, before_features)
    pd.testing.assert_frame_equal(customers, before_customers)
    indexed, customers, scores = hand_made()
    indexed.index = indexed.index.astype("int32")  # ids as a narrower integer, e.g. from a parquet file
    before_indexed, before_scores = indexed.copy(), scores.copy()
    segment_customers(indexed, customers, scores, RUN_DATE, RunParams())
    pd.testing.assert_frame_equal(indexed, before_indexed)
    pd.testing.assert_frame_equal(scores, before_scores)


def test_describe_clusters_maps_the_furthest_features_to_phrases_and_keeps_labels_distinct():
    z = pd.DataFrame({"frequency": [1.5, 1.4, -1.0, 0.0], "monetary": [1.2, 1.3, -0.8, 0.1],
                      "recency_days": [-0.9, -0.9, 1.1, 0.0], "email_opens_30d": [0.5, -0.4, 0.0, 0.05]},
                     index=[0, 1, 2, 3])
    labels = describe_clusters(z)
    assert labels[2] == "lapsed, one-off buyers, low spenders"
    assert labels[3] == "typical buyers"
    # clusters 0 and 1 share their three strongest phrases; the next one tells them apart
    assert labels[0] != labels[1]
    assert labels[0].endswith("open many emails") and labels[1].endswith("rarely open emails")
    twins = describe_clusters(pd.DataFrame({"frequency": [1.0, 1.0]}, index=[0, 1]))
    assert len(set(twins.values())) == 2 and all(twins.values())


def test_segment_of_looks_customers_up_in_their_order():
    features, customers, scores = hand_made()
    result = segment_customers(features, customers, scores, RUN_DATE, RunParams())
    found = segment_of([6, 99, 3], result.customers)
    assert found.tolist() == ["champion", UNKNOWN_SEGMENT, "lost"] and found.index.tolist() == [6, 99, 3]
    assert segment_of([1], result.customers, "cluster_label").tolist() == [NO_ORDERS_LABEL]


def test_bad_params_and_missing_columns_name_the_run_date():
    features, customers, scores = hand_made()
    with pytest.raises(ValueError, match="2024-06-01.*segment_lost_days"):
        segment_customers(features, customers, scores, RUN_DATE, RunParams(segment_active_days=400))
    with pytest.raises(ValueError, match="customer_features for 2024-06-01 lack column.*monetary"):
        segment_customers(features.drop(columns="monetary"), customers, scores, RUN_DATE, RunParams())


def test_a_store_whose_customers_have_never_ordered_gets_prospects_only():
    features, customers, scores = hand_made({1: HAND_MADE[1], 2: (None, None, 0, 0.0, None, np.nan, 0.0, "prospect")})
    result = segment_customers(features, customers, scores, RUN_DATE, RunParams())
    assert set(result.customers["lifecycle_segment"]) == {"prospect"}
    assert set(result.customers["cluster"]) == {NO_ORDERS_CLUSTER}
    assert result.profiles.groupby("kind")["customers"].sum().to_dict() == {"cluster": 2, "lifecycle": 2}
    # two customers with orders: two clusters however many the params ask for
    few = {i: HAND_MADE[i] for i in (1, 2, 3)}
    result = segment_customers(*hand_made(few), RUN_DATE, RunParams(segment_clusters=5))
    assert sorted(set(result.customers["cluster"])) == [NO_ORDERS_CLUSTER, 0, 1]
    assert result.customers["cluster_label"].is_unique


def test_profile_figure_has_a_panel_per_kind():
    features, customers = random_base(n=150)
    result = segment_customers(features, customers, None, RUN_DATE, RunParams(segment_clusters=3))
    fig = segment_profile_figure(result, "segments")
    try:
        panels = [ax for ax in fig.axes if ax.get_title()]
        assert [ax.get_title() for ax in panels] == ["lifecycle segments", "cluster segments"]
        assert len(panels[1].get_yticklabels()) == 4  # 3 clusters and "no orders yet"
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)
