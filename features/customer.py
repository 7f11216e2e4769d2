"""Customer features and labels as of a cutoff.

Every function takes the extracted source frames and a cutoff timestamp and uses only rows
strictly before the cutoff, so a training set built at cutoff ``C`` never sees the label window
``[C, C + horizon)``. Inputs are never mutated.

Input frames (the nightly extract, see :mod:`revopt.extract`):

- ``customers``: customer_id, signup_date (datetime64), ...
- ``orders``: order_id, customer_id, order_ts (UTC), status, order_value, ...
- ``daily_events``: customer_id, day (datetime64), sessions, page_views, product_views,
  add_to_carts, checkouts, purchases, email_sends, email_opens, email_clicks
"""

from __future__ import annotations

import pandas as pd

FEATURE_COLUMNS: tuple[str, ...] = (
    "recency_days",
    "days_since_first_order",
    "frequency",
    "monetary",
    "avg_order_value",
    "tenure_days",
    "orders_30d",
    "orders_90d",
    "spend_90d",
    "sessions_7d",
    "sessions_30d",
    "product_views_30d",
    "add_to_carts_30d",
    "email_opens_30d",
    "email_clicks_30d",
    "days_since_last_session",
)


def population(customers: pd.DataFrame, cutoff: pd.Timestamp) -> pd.Index:
    """Customer ids that had signed up before ``cutoff``, sorted."""
    signed_up = customers.loc[customers["signup_date"] < _naive(cutoff), "customer_id"]
    return pd.Index(signed_up.sort_values().to_numpy(), name="customer_id")


def customer_features(
    customers: pd.DataFrame,
    orders: pd.DataFrame,
    daily_events: pd.DataFrame,
    cutoff: pd.Timestamp,
) -> pd.DataFrame:
    """One row per customer signed up before ``cutoff``: RFM, recent activity and engagement."""
    ids = population(customers, cutoff)
    cutoff_utc = _utc(cutoff)
    signup = customers.set_index("customer_id")["signup_date"].reindex(ids)
    tenure_days = (_naive(cutoff) - signup).dt.days.astype("int64")

    past = orders[(orders["order_ts"] < cutoff_utc) & (orders["status"] == "completed")]
    age_days = (cutoff_utc - past["order_ts"]).dt.total_seconds() / 86_400.0
    by_customer = past.assign(
        age_days=age_days,
        in_30d=age_days <= 30,
        in_90d=age_days <= 90,
        value_90d=past["order_value"].where(age_days <= 90, 0.0),
    ).groupby("customer_id")
    rfm = pd.DataFrame(
        {
            "last_order_age": by_customer["age_days"].min(),
            "first_order_age": by_customer["age_days"].max(),
            "frequency": by_customer.size(),
            "monetary": by_customer["order_value"].sum(),
            "orders_30d": by_customer["in_30d"].sum(),
            "orders_90d": by_customer["in_90d"].sum(),
            "spend_90d": by_customer["value_90d"].sum(),
        }
    ).reindex(ids)

    events = daily_events[daily_events["day"] < _naive(cutoff)]
    event_age = (_naive(cutoff) - events["day"]).dt.days
    recent = events.assign(
        sessions_7d=events["sessions"].where(event_age <= 7, 0),
        sessions_30d=events["sessions"].where(event_age <= 30, 0),
        product_views_30d=events["product_views"].where(event_age <= 30, 0),
        add_to_carts_30d=events["add_to_carts"].where(event_age <= 30, 0),
        email_opens_30d=events["email_opens"].where(event_age <= 30, 0),
        email_clicks_30d=events["email_clicks"].where(event_age <= 30, 0),
        session_age=event_age.where(events["sessions"] > 0),
    ).groupby("customer_id")
    engagement = recent[
        ["sessions_7d", "sessions_30d", "product_views_30d", "add_to_carts_30d", "email_opens_30d", "email_clicks_30d"]
    ].sum()
    engagement["last_session_age"] = recent["session_age"].min()
    engagement = engagement.reindex(ids)

    frequency = rfm["frequency"].fillna(0).astype("int64")
    monetary = rfm["monetary"].fillna(0.0)
    features = pd.DataFrame(
        {
            # Customers who never ordered get their tenure: "as long ago as we have known them".
            "recency_days": rfm["last_order_age"].fillna(tenure_days).clip(lower=0.0),
            # Same convention as recency for customers who never ordered.
            "days_since_first_order": rfm["first_order_age"].fillna(tenure_days).clip(lower=0.0),
            "frequency": frequency,
            "monetary": monetary,
            "avg_order_value": (monetary / frequency.where(frequency > 0)).fillna(0.0),
            "tenure_days": tenure_days,
            "orders_30d": rfm["orders_30d"].fillna(0).astype("int64"),
            "orders_90d": rfm["orders_90d"].fillna(0).astype("int64"),
            "spend_90d": rfm["spend_90d"].fillna(0.0),
            "sessions_7d": engagement["sessions_7d"].fillna(0).astype("int64"),
            "sessions_30d": engagement["sessions_30d"].fillna(0).astype("int64"),
            "product_views_30d": engagement["product_views_30d"].fillna(0).astype("int64"),
            "add_to_carts_30d": engagement["add_to_carts_30d"].fillna(0).astype("int64"),
            "email_opens_30d": engagement["email_opens_30d"].fillna(0).astype("int64"),
            "email_clicks_30d": engagement["email_clicks_30d"].fillna(0).astype("int64"),
            "days_since_last_session": engagement["last_session_age"].fillna(tenure_days).astype("float64"),
        },
        index=ids,
    )
    return features.reset_index()


def completed_orders_in_window(orders: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> pd.DataFrame:
    """Completed orders in the label window ``[cutoff, cutoff + horizon_days)``."""
    start = _utc(cutoff)
    end = start + pd.Timedelta(days=horizon_days)
    return orders[(orders["order_ts"] >= start) & (orders["order_ts"] < end) & (orders["status"] == "completed")]


def purchase_label(customer_ids: pd.Index, orders: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> pd.Series:
    """1 if the customer completed an order in ``[cutoff, cutoff + horizon_days)``, else 0."""
    window = completed_orders_in_window(orders, cutoff, horizon_days)
    buyers = pd.Index(window["customer_id"].unique())
    return pd.Series(customer_ids.isin(buyers).astype("int8"), index=customer_ids, name="label")


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _naive(ts: pd.Timestamp) -> pd.Timestamp:
    return _utc(ts).tz_localize(None)
