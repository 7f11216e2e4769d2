"""Customer features and labels: nothing at or after the cutoff leaks into features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.customer import FEATURE_COLUMNS, customer_features, population, purchase_label
from revopt.platform.extract import empty_daily_events

CUTOFF = pd.Timestamp("2024-03-01", tz="UTC")


@pytest.fixture()
def frames() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(7)
    n = 50
    customers = pd.DataFrame(
        {
            "customer_id": np.arange(1, n + 1, dtype="int64"),
            "signup_date": pd.to_datetime("2023-06-01") + pd.to_timedelta(rng.integers(0, 300, n), unit="D"),
        }
    )
    n_orders = 400
    orders = pd.DataFrame(
        {
            "order_id": np.arange(n_orders, dtype="int64"),
            "customer_id": rng.integers(1, n + 1, n_orders).astype("int64"),
            "order_ts": pd.Timestamp("2023-09-01", tz="UTC") + pd.to_timedelta(rng.uniform(0, 240, n_orders), unit="D"),
            "status": np.where(rng.random(n_orders) < 0.05, "cancelled", "completed"),
            "order_value": rng.gamma(2.0, 30.0, n_orders),
        }
    )
    days = pd.date_range("2023-09-01", "2024-04-30", freq="D")
    events = pd.DataFrame(
        {
            "customer_id": rng.integers(1, n + 1, 3000).astype("int64"),
            "day": days[rng.integers(0, len(days), 3000)],
        }
    ).drop_duplicates(["customer_id", "day"])
    for column in ("sessions", "page_views", "product_views", "add_to_carts", "checkouts", "purchases", "email_sends", "email_opens", "email_clicks"):
        events[column] = rng.integers(0, 4, len(events)).astype("int64")
    return {"customers": customers, "orders": orders, "customer_daily_events": events}


def test_features_ignore_everything_at_or_after_the_cutoff(frames):
    full = customer_features(frames["customers"], frames["orders"], frames["customer_daily_events"], CUTOFF)
    orders_before = frames["orders"][frames["orders"]["order_ts"] < CUTOFF]
    events_before = frames["customer_daily_events"][frames["customer_daily_events"]["day"] < CUTOFF.tz_localize(None)]
    # Scramble everything in the future: features must not move.
    future_orders = frames["orders"][frames["orders"]["order_ts"] >= CUTOFF].assign(order_value=1e9)
    tampered = customer_features(
        frames["customers"], pd.concat([orders_before, future_orders]), events_before, CUTOFF
    )
    pd.testing.assert_frame_equal(full, tampered)
    assert len(orders_before) < len(frames["orders"]), "the fixture must have orders after the cutoff"


def test_one_row_per_signed_up_customer_with_all_features(frames):
    features = customer_features(frames["customers"], frames["orders"], frames["customer_daily_events"], CUTOFF)
    expected_ids = frames["customers"].loc[frames["customers"]["signup_date"] < "2024-03-01", "customer_id"]
    assert features["customer_id"].is_unique
    assert sorted(features["customer_id"]) == sorted(expected_ids)
    assert list(features.columns) == ["customer_id", *FEATURE_COLUMNS]
    assert not features[list(FEATURE_COLUMNS)].isna().any().any()
    assert (features[list(FEATURE_COLUMNS)] >= 0).all().all()


def test_rfm_values_match_a_hand_count(frames):
    features = customer_features(frames["customers"], frames["orders"], frames["customer_daily_events"], CUTOFF).set_index("customer_id")
    orders = frames["orders"]
    done = orders[(orders["order_ts"] < CUTOFF) & (orders["status"] == "completed")]
    customer = done["customer_id"].value_counts().index[0]
    mine = done[done["customer_id"] == customer]
    row = features.loc[customer]
    assert row["frequency"] == len(mine)
    assert row["monetary"] == pytest.approx(mine["order_value"].sum())
    assert row["recency_days"] == pytest.approx((CUTOFF - mine["order_ts"].max()).total_seconds() / 86400)
    assert row["orders_30d"] == (mine["order_ts"] >= CUTOFF - pd.Timedelta(days=30)).sum()


def test_label_counts_completed_orders_inside_the_window_only(frames):
    ids = population(frames["customers"], CUTOFF)
    label = purchase_label(ids, frames["orders"], CUTOFF, horizon_days=14)
    orders = frames["orders"]
    window = orders[
        (orders["order_ts"] >= CUTOFF)
        & (orders["order_ts"] < CUTOFF + pd.Timedelta(days=14))
        & (orders["status"] == "completed")
    ]
    assert set(label[label == 1].index) == set(window["customer_id"]) & set(ids)
    assert label.index.equals(ids)


def test_inputs_are_not_mutated(frames):
    before = {name: frame.copy() for name, frame in frames.items()}
    customer_features(frames["customers"], frames["orders"], frames["customer_daily_events"], CUTOFF)
    for name, frame in frames.items():
        pd.testing.assert_frame_equal(frame, before[name])


def _category_shop() -> dict[str, pd.DataFrame]:
    customers = pd.DataFrame({"customer_id": np.arange(1, 5, dtype="int64"),
                              "signup_date": pd.to_datetime(["2023-01-01"] * 4)})
    day = pd.Timestamp("2024-01-10", tz="UTC")
    orders = pd.DataFrame({
        "order_id": np.arange(1, 8, dtype="int64"),
        "customer_id": np.array([1, 1, 2, 2, 3, 3, 4], dtype="int64"),
        "order_ts": [day, day + pd.Timedelta(days=5), day, day + pd.Timedelta(days=9), day, day,
                     CUTOFF + pd.Timedelta(hours=1)],
        "status": ["completed"] * 5 + ["cancelled", "completed"],
        "order_value": [40.0, 20.0, 10.0, 10.0, 5.0, 5.0, 99.0],
    })
    order_categories = pd.DataFrame({
        "order_id": np.array([1, 1, 2, 3, 4, 5, 5, 6, 7], dtype="int64"),
        "category": ["kitchen", "toys", "kitchen", "kitchen", "kitchen", "kitchen", "toys", "toys", "kitchen"],
        "value": [30.0, 10.0, 20.0, 10.0, 10.0, 5.0, 5.0, 5.0, 99.0],
    })
    return {"customers": customers, "orders": orders, "order_categories": order_categories}


def test_category_mix_matches_a_hand_count():
    shop = _category_shop()
    features = customer_features(shop["customers"], shop["orders"], empty_daily_events(), CUTOFF,
                                 order_categories=shop["order_categories"]).set_index("customer_id")
    # customer 1: kitchen 50 over two orders, toys 10 once; customer 2: kitchen twice; customer 3: kitchen 5
    # and toys 5 in one order (its cancelled order does not count); customer 4 only orders after the cutoff
    assert features["categories_bought"].tolist() == [2, 1, 2, 0]
    shares = np.array([5 / 6, 1 / 6])
    assert features.loc[1, "category_entropy"] == pytest.approx(-(shares * np.log(shares)).sum())
    assert features.loc[3, "category_entropy"] == pytest.approx(np.log(2))
    assert features.loc[[2, 4], "category_entropy"].tolist() == [0.0, 0.0]
    assert features["top_category_share"].tolist() == pytest.approx([5 / 6, 1.0, 0.5, 0.0])
    # leave-one-out over the other buyers: kitchen is bought again by 1 of customer 1's 2 fellow buyers (2 and
    # 3), by 1 of 2 for customer 2, by 2 of 2 for customer 3; nobody else buys toys again
    assert features["category_repeat_rate"].tolist() == pytest.approx([5 / 6 * 0.5, 0.5, 0.5 * 1.0, 0.0])


def test_category_mix_without_categories_is_nothing_bought():
    shop = _category_shop()
    features = customer_features(shop["customers"], shop["orders"], empty_daily_events(), CUTOFF)
    assert (features[["categories_bought", "category_entropy", "top_category_share", "category_repeat_rate"]] == 0).all().all()


def test_category_mix_ignores_orders_at_or_after_the_cutoff():
    shop = _category_shop()
    before = customer_features(shop["customers"], shop["orders"], empty_daily_events(), CUTOFF, order_categories=shop["order_categories"])
    late = shop["order_categories"]["order_id"] == 7
    tampered = pd.concat([shop["order_categories"].assign(value=shop["order_categories"]["value"].where(~late, 1e9)),
                          pd.DataFrame({"order_id": [7], "category": ["toys"], "value": [3.0]})])
    after = customer_features(shop["customers"], shop["orders"], empty_daily_events(), CUTOFF, order_categories=tampered)
    pd.testing.assert_frame_equal(before, after)


def test_orders_by_customer_and_time_are_pandas_stable_sort():
    """order_rhythm's sort by numpy's lexsort: the rows and order of pandas' stable sort, ties kept in row order,
    any time unit and zone; keys with a missing value take pandas' sort."""
    from features.order_history import _by_customer_and_time

    rng = np.random.default_rng(3)
    n = 5_000
    orders = pd.DataFrame({
        "order_id": np.arange(n),
        "customer_id": rng.integers(1, 300, n),
        "order_ts": pd.to_datetime(rng.integers(0, 50, n), unit="D", utc=True),  # many ties
    }, index=rng.permutation(n) * 3)
    expected = orders.sort_values(["customer_id", "order_ts"], kind="stable")
    pd.testing.assert_frame_equal(_by_customer_and_time(orders), expected)
    in_seconds = orders.assign(order_ts=orders["order_ts"].dt.tz_convert("Europe/Paris").astype("datetime64[s, Europe/Paris]"))
    pd.testing.assert_frame_equal(_by_customer_and_time(in_seconds),
                                  in_seconds.sort_values(["customer_id", "order_ts"], kind="stable"))
    gaps = orders.astype({"customer_id": "float64"})
    gaps.iloc[::7, gaps.columns.get_loc("customer_id")] = np.nan
    pd.testing.assert_frame_equal(_by_customer_and_time(gaps), gaps.sort_values(["customer_id", "order_ts"], kind="stable"))
