"""Training sets as of a cutoff: populations and labels for propensity and churn."""

from __future__ import annotations

import pandas as pd

from features.customer import churn_set, purchase_set

CUTOFF = pd.Timestamp("2024-06-01", tz="UTC")


def _frames() -> dict[str, pd.DataFrame]:
    customers = pd.DataFrame(
        {"customer_id": [1, 2, 3, 4], "signup_date": pd.to_datetime(["2023-01-01", "2023-01-01", "2024-01-01", "2024-07-01"])}
    )
    ts = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731
    orders = pd.DataFrame(
        {
            "order_id": [1, 2, 3, 4, 5],
            "customer_id": [1, 1, 2, 3, 2],
            "order_ts": [ts("2024-05-01"), ts("2024-06-10"), ts("2023-02-01"), ts("2024-05-31 23:59"), ts("2024-06-02")],
            "status": ["completed", "completed", "completed", "completed", "cancelled"],
            "order_value": [10.0, 20.0, 30.0, 40.0, 50.0],
        }
    )
    events = pd.DataFrame(columns=["customer_id", "day", "sessions", "page_views", "product_views", "add_to_carts",
                                   "checkouts", "purchases", "email_sends", "email_opens", "email_clicks"])
    events = events.astype({"customer_id": "int64", "day": "datetime64[ns]"} | {c: "int64" for c in events.columns[2:]})
    return {"customers": customers, "orders": orders, "customer_daily_events": events}


def test_propensity_population_is_everyone_signed_up_and_label_is_a_completed_order_in_the_window():
    data = purchase_set(_frames(), CUTOFF, horizon_days=30)
    assert list(data.X.index) == [1, 2, 3]  # customer 4 signs up after the cutoff
    assert data.y.to_dict() == {1: 1, 2: 0, 3: 0}  # customer 2's order in the window was cancelled


def test_churn_population_is_active_customers_and_label_is_no_completed_order():
    data = churn_set(_frames(), CUTOFF, horizon_days=30, active_days=180)
    assert list(data.X.index) == [1, 3]  # customer 2's last order is 16 months old: not active
    assert data.y.to_dict() == {1: 0, 3: 1}


def test_an_order_one_minute_before_the_cutoff_is_a_feature_not_a_label():
    data = purchase_set(_frames(), CUTOFF, horizon_days=30)
    assert data.X.loc[3, "frequency"] == 1
    assert data.y.loc[3] == 0
