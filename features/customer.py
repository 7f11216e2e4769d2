"""Customer features and labels as of a cutoff.

Every function takes the extracted source frames and a cutoff timestamp and uses only rows
strictly before the cutoff, so a training set built at cutoff ``C`` never sees the label window
``[C, C + horizon)``. Inputs are never mutated.

Input frames (the nightly extract, see :mod:`revopt.platform.extract`):

- ``customers``: customer_id, signup_date (datetime64), ...
- ``orders``: order_id, customer_id, order_ts (UTC), status, order_value, and (optional)
  discounted_value, the part of the order's value bought on a discount (0 when absent)
- ``daily_events``: customer_id, day (datetime64), sessions, page_views, product_views,
  add_to_carts, checkouts, purchases, email_sends, email_opens, email_clicks
- ``order_categories`` (optional): order_id, category, value: each order's spend per product
  category (lines without a known product are left out); without it the category mix columns
  take their "nothing bought" values
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.order_history import CATEGORY_MIX_COLUMNS, ORDER_RHYTHM_COLUMNS, category_mix, order_rhythm
from revopt.platform.events import utc
from revopt.platform.identity import events_source

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
    *ORDER_RHYTHM_COLUMNS,
    *CATEGORY_MIX_COLUMNS,
)

#: Engagement columns summed from the event history (:func:`customer_event_features`).
EVENT_FEATURE_COLUMNS: tuple[str, ...] = (
    "sessions_7d", "sessions_30d", "product_views_30d", "add_to_carts_30d", "email_opens_30d", "email_clicks_30d",
)


def population(customers: pd.DataFrame, cutoff: pd.Timestamp) -> pd.Index:
    """Customer ids that had signed up before ``cutoff``, sorted."""
    signed_up = customers.loc[customers["signup_date"] < _naive(cutoff), "customer_id"]
    return pd.Index(signed_up.sort_values().to_numpy(), name="customer_id")


def customer_features(
    customers: pd.DataFrame,
    orders: pd.DataFrame,
    daily_events: pd.DataFrame | None,
    cutoff: pd.Timestamp,
    event_features: pd.DataFrame | None = None,
    lookback_days: int | None = None,
    order_categories: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per customer signed up before ``cutoff``: RFM, recent activity and engagement.

    ``lookback_days`` bounds the history to ``[cutoff - lookback_days, cutoff)``, as a nightly
    extract as of ``cutoff`` would (:func:`history_since`): a training set built at a past cutoff
    from a longer extract then means the same as tonight's features (``frequency``, ``monetary``
    and ``days_since_first_order`` count only that window). None: everything given.

    The engagement columns come from ``event_features`` when given (one row per customer as of
    the same ``cutoff``, e.g. computed inside ClickHouse with :func:`event_features_sql`), else
    from ``daily_events`` with :func:`customer_event_features`; both give identical features.
    The category mix columns come from ``order_categories`` (:func:`category_mix`).
    """
    ids = population(customers, cutoff)
    cutoff_utc = utc(cutoff)
    if lookback_days is not None:
        orders, daily_events = history_since(orders, daily_events, cutoff_utc - pd.Timedelta(days=lookback_days))
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

    rhythm = order_rhythm(orders[orders["order_ts"] < cutoff_utc], cutoff_utc).reindex(ids)

    if event_features is None:
        event_features = customer_event_features(daily_events, cutoff)
    engagement = event_features.set_index("customer_id").reindex(ids)
    engagement["last_session_age"] = (_naive(cutoff) - engagement["last_session_day"]).dt.days

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
    # customers without the orders a rhythm needs: "no rhythm yet" values that trees and the logistic
    # baseline both read (no NaN): their gap is as long as we have known them, nothing overdue
    known_for = features["days_since_first_order"]
    defaults = {"orders_180d": 0, "spend_180d": 0.0, "mean_gap_days": known_for, "gap_spread": 0.0, "gap_trend": 1.0,
                "overdue_ratio": 1.0, "cancel_share": 0.0, "discount_share": 0.0, "orders_same_season_last_year": 0,
                "spend_same_season_last_year": 0.0, "order_hour_regularity": 0.0}
    for column, default in defaults.items():
        features[column] = rhythm[column].fillna(default).astype("float64") if column in rhythm else default
    features["orders_180d"] = features["orders_180d"].astype("int64")
    features["orders_same_season_last_year"] = features["orders_same_season_last_year"].astype("int64")
    mix = category_mix(past, order_categories).reindex(ids)
    for column in CATEGORY_MIX_COLUMNS:
        features[column] = mix[column].fillna(0.0).astype("float64") if column in mix else 0.0
    features["categories_bought"] = features["categories_bought"].astype("int64")
    return features.reset_index()


def history_since(orders: pd.DataFrame, daily_events: pd.DataFrame | None,
                  since: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Orders and daily events from ``since`` on (the window start of an extract as of a later date)."""
    since_utc = utc(since)
    kept_orders = orders[orders["order_ts"] >= since_utc]
    if daily_events is None:
        return kept_orders, None
    return kept_orders, daily_events[daily_events["day"] >= _naive(since_utc).normalize()]


def customer_event_features(daily_events: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """Per customer with any event before ``cutoff``: :data:`EVENT_FEATURE_COLUMNS` summed over the
    last 7 / 30 days before ``cutoff`` and ``last_session_day``, the latest day with a web session
    (NaT when there is none). Rows whose ``known_from`` (optional: identity resolution) is not before the
    cutoff are left out: their device's login came later."""
    cutoff_day = _naive(cutoff)
    known = daily_events["day"] < cutoff_day
    if "known_from" in daily_events.columns:  # an anonymous session counts only once its device's login is known
        known &= daily_events["known_from"] < cutoff_day
    events = daily_events[known]
    event_age = (cutoff_day - events["day"]).dt.days
    recent = events.assign(
        sessions_7d=events["sessions"].where(event_age <= 7, 0),
        sessions_30d=events["sessions"].where(event_age <= 30, 0),
        product_views_30d=events["product_views"].where(event_age <= 30, 0),
        add_to_carts_30d=events["add_to_carts"].where(event_age <= 30, 0),
        email_opens_30d=events["email_opens"].where(event_age <= 30, 0),
        email_clicks_30d=events["email_clicks"].where(event_age <= 30, 0),
        session_day=events["day"].where(events["sessions"] > 0),
    ).groupby("customer_id")
    engagement = recent[list(EVENT_FEATURE_COLUMNS)].sum().astype("int64")
    engagement["last_session_day"] = recent["session_day"].max().astype("datetime64[ns]")
    return engagement.reset_index()


def event_features_sql(database: str, events: str | None = None) -> str:
    """ClickHouse SQL computing :func:`customer_event_features` straight from the ``events`` table,
    one row per customer, so only a row per customer leaves the database. ``events`` is what to read
    instead of the raw table (identity resolution: :func:`revopt.platform.identity.events_source`).

    Parameters: ``since`` and ``run_ts`` (``DateTime64(3, 'UTC')``, the extract window) and
    ``day_7`` / ``day_30`` (``Date``: the run date minus 7 and 30 days). Day boundaries are UTC
    days, and sessions are counted per day like ``customer_daily_events`` does (a session across
    midnight counts on both days).
    """
    return f"""
WITH window_events AS (
    SELECT customer_id, event_time, session_id, event_type, is_machine
    FROM {events or f"{database}.events"}
    WHERE customer_id != 0
      AND event_time >= {{since:DateTime64(3, 'UTC')}}
      AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
)
SELECT
    toInt64(customer_id) AS customer_id,
    toInt64(sum(sessions_7d)) AS sessions_7d,
    toInt64(sum(sessions_30d)) AS sessions_30d,
    toInt64(sum(product_views_30d)) AS product_views_30d,
    toInt64(sum(add_to_carts_30d)) AS add_to_carts_30d,
    toInt64(sum(email_opens_30d)) AS email_opens_30d,
    toInt64(sum(email_clicks_30d)) AS email_clicks_30d,
    max(last_session_day) AS last_session_day
FROM (
    SELECT customer_id,
           sumIf(sessions, day >= {{day_7:Date}}) AS sessions_7d,
           sum(sessions) AS sessions_30d,
           sum(product_views) AS product_views_30d,
           sum(add_to_carts) AS add_to_carts_30d,
           sum(email_opens) AS email_opens_30d,
           sum(email_clicks) AS email_clicks_30d,
           CAST(NULL AS Nullable(Date)) AS last_session_day
    FROM (
        SELECT customer_id, toDate(event_time) AS day,
               uniqExactIf(session_id, event_type NOT LIKE 'email_%') AS sessions,
               countIf(event_type = 'product_view') AS product_views,
               countIf(event_type = 'add_to_cart') AS add_to_carts,
               countIf(event_type = 'email_open' AND is_machine = 0) AS email_opens,
               countIf(event_type = 'email_click' AND is_machine = 0) AS email_clicks
        FROM window_events
        WHERE toDate(event_time) >= {{day_30:Date}}
        GROUP BY customer_id, day
    )
    GROUP BY customer_id
    UNION ALL
    SELECT customer_id, 0, 0, 0, 0, 0, 0, CAST(max(toDate(event_time)) AS Nullable(Date))
    FROM window_events
    WHERE event_type NOT LIKE 'email_%'
    GROUP BY customer_id
)
GROUP BY customer_id
ORDER BY customer_id
"""


def event_features_params(since_ts: pd.Timestamp, cutoff: pd.Timestamp) -> dict[str, str]:
    """The parameters of :func:`event_features_sql` for the window ``[since_ts, cutoff)``."""
    day = _naive(cutoff).normalize()
    return {
        "since": utc(since_ts).strftime("%Y-%m-%d %H:%M:%S"),
        "run_ts": utc(cutoff).strftime("%Y-%m-%d %H:%M:%S"),
        "day_7": (day - pd.Timedelta(days=7)).strftime("%Y-%m-%d"),
        "day_30": (day - pd.Timedelta(days=30)).strftime("%Y-%m-%d"),
    }


def typed_event_features(frame: pd.DataFrame) -> pd.DataFrame:
    """A result of :func:`event_features_sql` with the dtypes of :func:`customer_event_features`."""
    columns = ["customer_id", *EVENT_FEATURE_COLUMNS, "last_session_day"]
    if not len(frame.columns):
        frame = pd.DataFrame({column: pd.Series(dtype="int64") for column in columns[:-1]})
        frame["last_session_day"] = pd.Series(dtype="datetime64[ns]")
    typed = frame[columns].astype({column: "int64" for column in columns[:-1]})
    typed["last_session_day"] = pd.to_datetime(typed["last_session_day"]).astype("datetime64[ns]")
    return typed


def event_features_in_store(store, since_ts: pd.Timestamp, run_ts: pd.Timestamp) -> pd.DataFrame:
    """:func:`customer_event_features` computed inside ClickHouse over ``[since_ts, run_ts)`` (one row
    per customer leaves the database); ``store`` is a :class:`revopt.platform.events.EventStore`, or
    None when the clickstream is off (then no customer has events: an empty frame)."""
    if store is None:
        return typed_event_features(pd.DataFrame())
    return typed_event_features(store.query_df(event_features_sql(store.database, events_source(store)),
                                               event_features_params(since_ts, run_ts)))


#: The training extract's event features: :func:`customer_event_features` at every cutoff a training run
#: builds customer features at, one row per customer and cutoff, computed in ClickHouse
#: (:func:`event_features_at_cutoffs_sql`), so no per-customer-day row leaves the database.
EVENT_FEATURES_AT_CUTOFFS = "customer_event_features_at_cutoffs"


def event_features_at_cutoffs_sql(database: str, cutoffs: Sequence[pd.Timestamp], lookback_days: int | None,
                                  events: str | None = None) -> str:
    """ClickHouse SQL computing :func:`customer_event_features` at every one of ``cutoffs`` (midnight UTC
    days) in one query: one row per customer and cutoff, with a ``cutoff`` column, for the customers
    with any event in ``[cutoff - lookback_days, cutoff)`` (all of the extract's window when None), as
    :func:`customer_features` sees them from a training extract's daily rows cut at that cutoff
    (:func:`history_since`). ``events`` must carry ``known_from``
    (:func:`revopt.platform.identity.events_source` with ``known_from=True``): an event counts at a
    cutoff only if its day and its ``known_from`` are both before it.

    Parameters: ``since`` and ``run_ts`` (``DateTime64(3, 'UTC')``, the extract window); the cutoffs
    and the lookback are written into the SQL (dates and an integer we format ourselves).

    Two parts, each reading the events once. The 30-day counts: every event is repeated for the
    (few) cutoffs whose 30 days it falls in (``ARRAY JOIN``), then counted per customer and cutoff;
    a session counts once per day and ``known_from``, as the daily rows count it. The last session
    day: each event goes to one bucket, the first cutoff it counts at (the first cutoff after both
    its day and its ``known_from``); the latest (session) day of a customer at cutoff ``i`` is the
    maximum over buckets ``<= i``, kept when it is within the lookback (if the latest is not, no
    earlier day is either), so nothing is repeated over the long lookback.
    """
    days = sorted({_naive(cutoff).normalize() for cutoff in cutoffs})
    if not days:
        raise ValueError("event features at cutoffs need at least one cutoff")
    array = "[" + ", ".join(f"toDate('{day.strftime('%Y-%m-%d')}')" for day in days) + "]"
    lookback = 1_000_000 if lookback_days is None else int(lookback_days)
    return f"""
WITH {array} AS cutoffs,
window_events AS (
    SELECT customer_id, toDate(event_time) AS day, known_from, session_id, event_type, is_machine
    FROM {events or f"{database}.events"}
    WHERE customer_id != 0
      AND event_time >= {{since:DateTime64(3, 'UTC')}}
      AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
)
SELECT
    toInt64(customer_id) AS customer_id,
    cutoff,
    toInt64(sum(sessions_7d)) AS sessions_7d,
    toInt64(sum(sessions_30d)) AS sessions_30d,
    toInt64(sum(product_views_30d)) AS product_views_30d,
    toInt64(sum(add_to_carts_30d)) AS add_to_carts_30d,
    toInt64(sum(email_opens_30d)) AS email_opens_30d,
    toInt64(sum(email_clicks_30d)) AS email_clicks_30d,
    max(last_session_day) AS last_session_day
FROM (
    SELECT customer_id, cutoff,
           uniqExactIf((day, known_from, session_id), event_type NOT LIKE 'email_%' AND day >= cutoff - 7) AS sessions_7d,
           uniqExactIf((day, known_from, session_id), event_type NOT LIKE 'email_%') AS sessions_30d,
           countIf(event_type = 'product_view') AS product_views_30d,
           countIf(event_type = 'add_to_cart') AS add_to_carts_30d,
           countIf(event_type = 'email_open' AND is_machine = 0) AS email_opens_30d,
           countIf(event_type = 'email_click' AND is_machine = 0) AS email_clicks_30d,
           CAST(NULL AS Nullable(Date)) AS last_session_day
    FROM window_events
    ARRAY JOIN arrayFilter(c -> day < c AND known_from < c AND day >= c - 30 AND day >= c - {lookback}, cutoffs) AS cutoff
    GROUP BY customer_id, cutoff
    UNION ALL
    SELECT customer_id, cutoffs[i] AS cutoff, 0, 0, 0, 0, 0, 0,
           if(max(session_day) >= cutoffs[i] - {lookback}, max(session_day), NULL) AS last_session_day
    FROM (
        SELECT customer_id, arrayFirstIndex(c -> c > greatest(day, known_from), cutoffs) AS bucket,
               max(day) AS any_day,
               max(if(event_type NOT LIKE 'email_%', toNullable(day), NULL)) AS session_day
        FROM window_events
        GROUP BY customer_id, bucket
        HAVING bucket > 0
    )
    ARRAY JOIN arrayFilter(i -> i >= bucket, arrayEnumerate(cutoffs)) AS i
    GROUP BY customer_id, i
    HAVING max(any_day) >= cutoffs[i] - {lookback}
)
GROUP BY customer_id, cutoff
ORDER BY cutoff, customer_id
"""


def typed_event_features_at_cutoffs(frame: pd.DataFrame, cutoffs: Sequence[pd.Timestamp],
                                    lookback_days: int | None) -> pd.DataFrame:
    """A result of :func:`event_features_at_cutoffs_sql` with the dtypes of :func:`customer_event_features`,
    ``cutoff`` as ``datetime64[ns]`` (midnight UTC, naive), and what it was computed for in ``attrs``
    (which Parquet keeps): ``cutoffs`` (ISO days, with or without rows) and ``lookback_days``."""
    cutoff = pd.to_datetime(frame["cutoff"] if "cutoff" in frame.columns else pd.Series(dtype="datetime64[ns]"))
    typed = typed_event_features(frame.drop(columns=["cutoff"], errors="ignore"))
    typed.insert(1, "cutoff", cutoff.astype("datetime64[ns]").to_numpy())
    typed.attrs["cutoffs"] = sorted({_naive(day).normalize().date().isoformat() for day in cutoffs})
    typed.attrs["lookback_days"] = lookback_days
    return typed


def event_features_at_cutoffs_in_store(store, since_ts: pd.Timestamp, run_ts: pd.Timestamp,
                                       cutoffs: Sequence[pd.Timestamp], lookback_days: int | None) -> pd.DataFrame:
    """:func:`customer_event_features` at each of ``cutoffs`` computed inside ClickHouse from the events of
    ``[since_ts, run_ts)`` (:func:`event_features_at_cutoffs_sql`); ``store`` is a
    :class:`revopt.platform.events.EventStore`, or None when the clickstream is off (an empty frame)."""
    if store is None or not len(cutoffs):
        return typed_event_features_at_cutoffs(pd.DataFrame(), cutoffs, lookback_days)
    sql = event_features_at_cutoffs_sql(store.database, cutoffs, lookback_days, events_source(store, known_from=True))
    params = {"since": utc(since_ts).strftime("%Y-%m-%d %H:%M:%S"), "run_ts": utc(run_ts).strftime("%Y-%m-%d %H:%M:%S")}
    return typed_event_features_at_cutoffs(store.query_df(sql, params), cutoffs, lookback_days)


def event_features_at(at_cutoffs: pd.DataFrame, cutoff: pd.Timestamp, lookback_days: int | None) -> pd.DataFrame:
    """The rows of an :data:`EVENT_FEATURES_AT_CUTOFFS` frame at ``cutoff``, as :func:`customer_event_features`
    returns them from the daily rows of the ``lookback_days`` before it; a cutoff or a lookback the frame was
    not computed for raises (its customers would silently get other engagement features)."""
    day = _naive(cutoff).normalize()
    if day != _naive(cutoff):
        raise ValueError(f"event features at cutoffs are computed at midnight UTC; {cutoff} is not")
    if "lookback_days" in at_cutoffs.attrs and at_cutoffs.attrs["lookback_days"] != lookback_days:
        raise ValueError(f"{EVENT_FEATURES_AT_CUTOFFS} was computed over {at_cutoffs.attrs['lookback_days']} days "
                         f"before each cutoff, not {lookback_days}: extract and train with the same params")
    computed = at_cutoffs.attrs.get("cutoffs")
    if computed is not None and day.date().isoformat() not in computed:
        raise KeyError(f"{EVENT_FEATURES_AT_CUTOFFS} was computed at {', '.join(computed)}, not at {day.date()}: the "
                       "training extract's cutoffs (ml.training_cutoffs) miss one the family builds features at")
    return at_cutoffs.loc[at_cutoffs["cutoff"] == day].drop(columns=["cutoff"]).reset_index(drop=True)


def sample_customers(ids: pd.Index, n: int, seed: int) -> pd.Index:
    """``n`` of the customer ids ``ids`` (all of them when ``n`` is 0 or at least their number), sorted:
    the ``n`` with the smallest seeded hash of their id (:func:`customer_hash`). The same customer ranks the
    same at every cutoff and in every run with this seed, so samples of different cutoffs (populations)
    overlap as much as they can and a re-run draws the same sample."""
    if n <= 0 or len(ids) <= n:
        return ids
    keys = customer_hash(ids.to_numpy(dtype="int64"), seed)
    chosen = np.argpartition(keys, n - 1)[:n]
    return pd.Index(np.sort(ids.to_numpy()[chosen]), name=ids.name)


def customer_sampler(n: int, seed: int) -> Callable[[pd.Series], np.ndarray | None]:
    """ids -> their :func:`sample_customers` as an array, or None when that is every one of them (``n`` 0 or
    at least their number): what restricts an extract to the sample, None reading everyone without a filter."""
    def sample(ids: pd.Series) -> np.ndarray | None:
        index = pd.Index(ids)
        chosen = sample_customers(index, n, seed)
        return None if len(chosen) == len(index) else chosen.to_numpy()
    return sample


def customer_hash(customer_ids: np.ndarray, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each customer id (SplitMix64's finaliser of ``id + seed x golden ratio``):
    uniform, stable across runs, machines and library versions (unlike Python's ``hash``); written here
    because it is four lines of arithmetic."""
    with np.errstate(over="ignore"):
        x = customer_ids.astype("uint64") + np.uint64(seed % 2**64) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def sampled(labelled: LabelledSet, n: int, seed: int) -> LabelledSet:
    """``labelled`` restricted to :func:`sample_customers` of its customers (itself when ``n`` is 0 or
    covers them all)."""
    ids = sample_customers(labelled.X.index, n, seed)
    if len(ids) == len(labelled.X):
        return labelled
    return LabelledSet(labelled.cutoff, labelled.X.loc[ids], labelled.y.loc[ids])


def completed_orders_in_window(orders: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> pd.DataFrame:
    """Completed orders in the label window ``[cutoff, cutoff + horizon_days)``."""
    start = utc(cutoff)
    end = start + pd.Timedelta(days=horizon_days)
    return orders[(orders["order_ts"] >= start) & (orders["order_ts"] < end) & (orders["status"] == "completed")]


def purchase_label(customer_ids: pd.Index, orders: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> pd.Series:
    """1 if the customer completed an order in ``[cutoff, cutoff + horizon_days)``, else 0."""
    window = completed_orders_in_window(orders, cutoff, horizon_days)
    buyers = pd.Index(window["customer_id"].unique())
    return pd.Series(customer_ids.isin(buyers).astype("int8"), index=customer_ids, name="label")


def clv_label(customer_ids: pd.Index, orders: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> pd.Series:
    """Completed spend in ``[cutoff, cutoff + horizon_days)`` per customer, 0 if none."""
    window = completed_orders_in_window(orders, cutoff, horizon_days)
    spend = window.groupby("customer_id")["order_value"].sum()
    label = spend.reindex(customer_ids, fill_value=0.0).astype("float64")
    return pd.Series(label.to_numpy(), index=customer_ids, name="label")


# --- labelled sets at a cutoff ----------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledSet:
    """Features as of ``cutoff`` (indexed by customer id) and each customer's label after it."""

    cutoff: pd.Timestamp
    X: pd.DataFrame
    y: pd.Series

    @property
    def positive_rate(self) -> float:
        return float(self.y.mean()) if len(self.y) else float("nan")


#: Share of the fitting cutoff's customers held out for selection (family, hyperparameters, early
#: stopping, calibration method): the validation customers (:func:`selection_split`).
VALIDATION_SHARE = 0.25


def evaluation_cutoffs(run_date: dt.date, horizon_days: int, origin: int = 0) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(fit cutoff, test cutoff) of every customer family with horizon h at run date D.

    The test window is the last horizon whose labels are known, ``[D - h, D)`` for ``origin`` 0: its
    customers are scored as of the test cutoff ``D - h`` by models fitted on the customers of the fit
    cutoff ``D - 2h``, whose labels end exactly where the test window starts. Selection uses only the
    fit cutoff (:func:`selection_split`), so no selection step sees the test window. Origin k of a
    rolling-origin backtest moves both cutoffs back by k horizons."""
    run_ts = pd.Timestamp(run_date, tz="UTC")
    test = run_ts - pd.Timedelta(days=(1 + origin) * horizon_days)
    return test - pd.Timedelta(days=horizon_days), test


def selection_split(fit: LabelledSet, random_state: int,
                    share: float = VALIDATION_SHARE) -> tuple[LabelledSet, LabelledSet]:
    """The fit cutoff's customers split for selection: (training customers, validation customers), a
    seeded random ``share`` held out, stratified by ``y > 0`` (buyers and non-buyers, spenders and
    non-spenders keep their share in both)."""
    from sklearn.model_selection import train_test_split  # sklearn only where models are selected

    positive = (fit.y > 0).to_numpy()
    stratify = positive if min(positive.sum(), (~positive).sum()) >= 2 else None
    train_ids, valid_ids = train_test_split(fit.X.index.to_numpy(), test_size=share, random_state=random_state,
                                            stratify=stratify)
    train_ids, valid_ids = np.sort(train_ids), np.sort(valid_ids)
    return (LabelledSet(fit.cutoff, fit.X.loc[train_ids], fit.y.loc[train_ids]),
            LabelledSet(fit.cutoff, fit.X.loc[valid_ids], fit.y.loc[valid_ids]))


def describe_test_window(fit: LabelledSet, test: LabelledSet, horizon_days: int) -> str:
    """The test window in words, e.g. "1,234 customers as of 2024-05-02, labels to 2024-06-01 (fitted on
    5,678 customers as of 2024-04-02)"."""
    end = (test.cutoff + pd.Timedelta(days=horizon_days)).date()
    return (f"{len(test.y):,} customers as of {test.cutoff.date()}, labels to {end} "
            f"(fitted on {len(fit.y):,} customers as of {fit.cutoff.date()})")


def features_at(frames: dict[str, pd.DataFrame], cutoff: pd.Timestamp, lookback_days: int | None = None) -> pd.DataFrame:
    """Customer features as of ``cutoff``, indexed by customer_id, from the ``lookback_days`` before it
    (the nightly run's window, so training and scoring features mean the same; None: all given). The
    engagement columns come from ``frames[EVENT_FEATURES_AT_CUTOFFS]`` (computed in ClickHouse at the
    training run's cutoffs, :func:`event_features_at_cutoffs_sql`) when the frames hold it, else from
    ``frames["customer_daily_events"]``: identical features."""
    at_cutoffs = frames.get(EVENT_FEATURES_AT_CUTOFFS)
    features = customer_features(frames["customers"], frames["orders"], frames.get("customer_daily_events"), cutoff,
                                 event_features=None if at_cutoffs is None else event_features_at(at_cutoffs, cutoff, lookback_days),
                                 lookback_days=lookback_days, order_categories=frames.get("order_categories"))
    return features.set_index("customer_id")[list(FEATURE_COLUMNS)]


def active_mask(features: pd.DataFrame, active_days: int) -> pd.Series:
    """Customers with a completed order within ``active_days`` of the cutoff (churn's population)."""
    return (features["frequency"] > 0) & (features["recency_days"] <= active_days)


def purchase_set(frames: dict[str, pd.DataFrame], cutoff: pd.Timestamp, horizon_days: int,
                 lookback_days: int | None = None) -> LabelledSet:
    """Purchase propensity: features as of ``cutoff`` and 1 if the customer completes an order in
    the following ``horizon_days``."""
    X = features_at(frames, cutoff, lookback_days)
    return LabelledSet(cutoff=cutoff, X=X, y=purchase_label(X.index, frames["orders"], cutoff, horizon_days))


def churn_set(frames: dict[str, pd.DataFrame], cutoff: pd.Timestamp, horizon_days: int, active_days: int,
              lookback_days: int | None = None) -> LabelledSet:
    """Churn: the customers active at ``cutoff`` (:func:`active_mask`) and 1 if they complete no order
    in the following ``horizon_days``."""
    features = features_at(frames, cutoff, lookback_days)
    X = features[active_mask(features, active_days)]
    bought = purchase_label(X.index, frames["orders"], cutoff, horizon_days)
    return LabelledSet(cutoff=cutoff, X=X, y=(1 - bought).astype("int8").rename("label"))


def spend_set(frames: dict[str, pd.DataFrame], cutoff: pd.Timestamp, horizon_days: int,
              lookback_days: int | None = None) -> LabelledSet:
    """CLV: features as of ``cutoff`` and the completed spend over the following ``horizon_days``."""
    X = features_at(frames, cutoff, lookback_days)
    return LabelledSet(cutoff=cutoff, X=X, y=clv_label(X.index, frames["orders"], cutoff, horizon_days))




def _naive(ts: pd.Timestamp) -> pd.Timestamp:
    return utc(ts).tz_localize(None)
