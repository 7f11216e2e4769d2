"""Extract the sources as of a run date into Parquet files under the run folder.

Only rows with timestamps strictly before the run date D (midnight UTC) are read: a run for D
sees exactly what the store knew when D began, however late it runs. Heavy event aggregation
runs inside ClickHouse and only per-customer daily counts come back.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pandas as pd

from revopt.config import Settings
from revopt.postgres import read_frame
from revopt.events import EventStore
from revopt.stack import connect_postgres, event_store

logger = logging.getLogger(__name__)

CUSTOMERS_SQL = """
SELECT customer_id, signup_date, country, timezone, acquisition_channel, email_opt_in
FROM shop.customers
WHERE signup_date < %(run_date)s
ORDER BY customer_id
"""

ORDERS_SQL = """
SELECT o.order_id, o.customer_id, o.order_ts, o.channel, o.status,
       count(l.line_no)::bigint AS n_lines,
       coalesce(sum(l.quantity * l.unit_price), 0)::float8 AS order_value
FROM shop.orders AS o
LEFT JOIN shop.order_lines AS l ON l.order_id = o.order_id
WHERE o.order_ts < %(run_ts)s AND o.order_ts >= %(since_ts)s
GROUP BY o.order_id, o.customer_id, o.order_ts, o.channel, o.status
ORDER BY o.order_id
"""

DAILY_EVENTS_SQL = """
SELECT
    toInt64(customer_id) AS customer_id,
    toDate(event_time) AS day,
    toInt64(uniqExactIf(session_id, event_type NOT LIKE 'email_%')) AS sessions,
    toInt64(countIf(event_type = 'page_view')) AS page_views,
    toInt64(countIf(event_type = 'product_view')) AS product_views,
    toInt64(countIf(event_type = 'add_to_cart')) AS add_to_carts,
    toInt64(countIf(event_type = 'checkout')) AS checkouts,
    toInt64(countIf(event_type = 'purchase')) AS purchases,
    toInt64(countIf(event_type = 'email_send')) AS email_sends,
    toInt64(countIf(event_type = 'email_open' AND is_machine = 0)) AS email_opens,
    toInt64(countIf(event_type = 'email_click' AND is_machine = 0)) AS email_clicks
FROM {database}.events
WHERE customer_id != 0
  AND event_time >= {{since:DateTime64(3, 'UTC')}}
  AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
GROUP BY customer_id, day
ORDER BY customer_id, day
"""

# Send-time evidence per customer and UTC hour: campaign sends in that hour with whether each was
# opened / clicked by a human (a response belongs to the customer's latest send before it;
# machine opens are excluded), plus the web sessions the customer started in that hour.
ENGAGEMENT_SQL = """
WITH
sends AS (
    SELECT customer_id, event_time AS send_time
    FROM {database}.events
    WHERE event_type = 'email_send' AND customer_id != 0
      AND event_time >= {{since:DateTime64(3, 'UTC')}} AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
),
responses AS (
    SELECT r.customer_id AS customer_id, s.send_time AS send_time,
           max(r.event_type = 'email_open') AS opened, max(r.event_type = 'email_click') AS clicked
    FROM (
        SELECT customer_id, event_time, event_type
        FROM {database}.events
        WHERE event_type IN ('email_open', 'email_click') AND is_machine = 0 AND customer_id != 0
          AND event_time >= {{since:DateTime64(3, 'UTC')}} AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
    ) AS r
    ASOF INNER JOIN sends AS s ON r.customer_id = s.customer_id AND r.event_time >= s.send_time
    GROUP BY r.customer_id, s.send_time
),
email AS (
    SELECT s.customer_id AS customer_id, toStartOfHour(s.send_time) AS hour_utc,
           count() AS sends, sum(r.opened) AS opens, sum(r.clicked) AS clicks, 0 AS sessions
    FROM sends AS s
    LEFT JOIN responses AS r ON r.customer_id = s.customer_id AND r.send_time = s.send_time
    GROUP BY customer_id, hour_utc
),
visits AS (
    SELECT customer_id, toStartOfHour(min(event_time)) AS hour_utc, 0 AS sends, 0 AS opens, 0 AS clicks, 1 AS sessions
    FROM {database}.events
    WHERE session_id != 0 AND customer_id != 0
      AND event_time >= {{since:DateTime64(3, 'UTC')}} AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
    GROUP BY customer_id, session_id
)
SELECT toInt64(customer_id) AS customer_id, hour_utc,
       toInt64(sum(sends)) AS sends, toInt64(sum(opens)) AS opens,
       toInt64(sum(clicks)) AS clicks, toInt64(sum(sessions)) AS sessions
FROM (SELECT * FROM email UNION ALL SELECT * FROM visits)
GROUP BY customer_id, hour_utc
ORDER BY customer_id, hour_utc
"""

MARKETING_SPEND_SQL = """
SELECT day, channel, spend::float8 AS spend, impressions, clicks
FROM shop.marketing_spend
WHERE day >= %(since)s AND day < %(run_date)s
ORDER BY day, channel
"""

PRODUCTS_SQL = """
SELECT product_id, category, cost::float8 AS cost, current_price::float8 AS current_price
FROM shop.products
ORDER BY product_id
"""

# Dense product x day panel of completed-order demand for every day a product had a list price
# (from shop.product_prices; a product without price history uses its current price throughout).
PRODUCT_DAILY_SALES_SQL = """
WITH days AS (
    SELECT generate_series(%(since)s::date, %(run_date)s::date - 1, interval '1 day')::date AS day
),
history AS (
    SELECT product_id, valid_from, list_price FROM shop.product_prices WHERE valid_from < %(run_date)s
    UNION ALL
    SELECT p.product_id, DATE '1900-01-01', p.current_price FROM shop.products AS p
    WHERE NOT EXISTS (SELECT 1 FROM shop.product_prices AS pp WHERE pp.product_id = p.product_id)
),
spells AS (
    SELECT product_id, valid_from, list_price,
           lead(valid_from) OVER (PARTITION BY product_id ORDER BY valid_from) AS valid_to
    FROM history
),
sales AS (
    SELECT l.product_id, (o.order_ts AT TIME ZONE 'UTC')::date AS day,
           sum(l.quantity)::bigint AS units,
           sum(l.quantity * l.unit_price)::float8 AS revenue,
           (sum(l.quantity * l.discount) / nullif(sum(l.quantity), 0))::float8 AS avg_discount
    FROM shop.order_lines AS l
    JOIN shop.orders AS o ON o.order_id = l.order_id
    WHERE o.status = 'completed' AND o.order_ts >= %(since_ts)s AND o.order_ts < %(run_ts)s
    GROUP BY l.product_id, (o.order_ts AT TIME ZONE 'UTC')::date
)
SELECT s.product_id, d.day,
       coalesce(x.units, 0)::bigint AS units,
       coalesce(x.revenue, 0)::float8 AS revenue,
       s.list_price::float8 AS list_price,
       coalesce(x.avg_discount, 0)::float8 AS avg_discount
FROM spells AS s
JOIN days AS d ON d.day >= s.valid_from AND (s.valid_to IS NULL OR d.day < s.valid_to)
LEFT JOIN sales AS x ON x.product_id = s.product_id AND x.day = d.day
ORDER BY s.product_id, d.day
"""

DAY_TOTALS_SQL = """
SELECT (o.order_ts AT TIME ZONE 'UTC')::date AS day, count(*)::bigint AS lines
FROM shop.order_lines AS l
JOIN shop.orders AS o ON o.order_id = l.order_id
WHERE o.status = 'completed' AND o.order_ts >= %(since_ts)s AND o.order_ts < %(run_ts)s
GROUP BY 1
ORDER BY 1
"""

# Optional sources: the latest observation per product before the run date (empty if not tracked).
COMPETITOR_PRICES_SQL = """
SELECT DISTINCT ON (product_id) product_id, day, competitor_price::float8 AS competitor_price
FROM shop.competitor_prices
WHERE day < %(run_date)s
ORDER BY product_id, day DESC
"""

INVENTORY_SQL = """
SELECT DISTINCT ON (product_id) product_id, day, on_hand::bigint AS on_hand
FROM shop.inventory
WHERE day < %(run_date)s
ORDER BY product_id, day DESC
"""

DATASETS = (
    "customers", "orders", "customer_daily_events", "products", "product_daily_sales", "day_totals",
    "competitor_prices", "inventory", "engagement_by_hour", "marketing_spend",
)


def extract_sources(settings: Settings, run_date: dt.date, lookback_days: int) -> dict[str, str]:
    """Write the run's extracts (see :data:`DATASETS`) and return their paths by dataset name.

    ``lookback_days`` bounds how much order and event history is read before the run date.
    """
    out_dir = settings.run_dir(run_date) / "extract"
    out_dir.mkdir(parents=True, exist_ok=True)
    run_ts = pd.Timestamp(run_date, tz="UTC")
    since_ts = run_ts - pd.Timedelta(days=lookback_days)

    window = {
        "run_date": run_date, "since": since_ts.date(),
        "run_ts": run_ts.to_pydatetime(), "since_ts": since_ts.to_pydatetime(),
    }
    with connect_postgres(settings) as conn:
        customers = _typed_customers(read_frame(conn, CUSTOMERS_SQL, window))
        orders = _typed_orders(read_frame(conn, ORDERS_SQL, window))
        products = _typed(read_frame(conn, PRODUCTS_SQL), {"product_id": "int64", "category": "str", "cost": "float64", "current_price": "float64"})
        sales = _typed(
            read_frame(conn, PRODUCT_DAILY_SALES_SQL, window),
            {"product_id": "int64", "units": "int64", "revenue": "float64", "list_price": "float64", "avg_discount": "float64"},
            dates=("day",),
        )
        day_totals = _typed(read_frame(conn, DAY_TOTALS_SQL, window), {"lines": "int64"}, dates=("day",))
        competitor_prices = _typed(
            _read_optional(conn, "shop.competitor_prices", COMPETITOR_PRICES_SQL, window, ["product_id", "day", "competitor_price"]),
            {"product_id": "int64", "competitor_price": "float64"}, dates=("day",),
        )
        inventory = _typed(
            _read_optional(conn, "shop.inventory", INVENTORY_SQL, window, ["product_id", "day", "on_hand"]),
            {"product_id": "int64", "on_hand": "int64"}, dates=("day",),
        )
        spend = _typed(
            read_frame(conn, MARKETING_SPEND_SQL, window),
            {"channel": "str", "spend": "float64", "impressions": "int64", "clicks": "int64"}, dates=("day",),
        )

    store = event_store(settings)
    daily_events = store.query_df(
        DAILY_EVENTS_SQL.format(database=store.database),
        {"since": since_ts.strftime("%Y-%m-%d %H:%M:%S"), "run_ts": run_ts.strftime("%Y-%m-%d %H:%M:%S")},
    )
    daily_events["day"] = pd.to_datetime(daily_events["day"]).astype("datetime64[ns]")
    engagement = engagement_by_hour(store, since_ts, run_ts)

    paths = {}
    extracted = {
        "customers": customers, "orders": orders, "customer_daily_events": daily_events,
        "products": products, "product_daily_sales": sales, "day_totals": day_totals,
        "competitor_prices": competitor_prices, "inventory": inventory,
        "engagement_by_hour": engagement, "marketing_spend": spend,
    }
    for name, frame in extracted.items():
        path = out_dir / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        paths[name] = str(path)
        logger.info("extracted %s as of %s: %d rows -> %s", name, run_date, len(frame), path)
    return paths


def engagement_by_hour(store: EventStore, since_ts: pd.Timestamp, run_ts: pd.Timestamp) -> pd.DataFrame:
    """Email sends / human opens / clicks and web sessions per customer and UTC hour in
    ``[since_ts, run_ts)`` (see :data:`ENGAGEMENT_SQL`); ``hour_utc`` is ``datetime64[ns, UTC]``."""
    frame = store.query_df(
        ENGAGEMENT_SQL.format(database=store.database),
        {"since": since_ts.strftime("%Y-%m-%d %H:%M:%S"), "run_ts": run_ts.strftime("%Y-%m-%d %H:%M:%S")},
    )
    if not len(frame.columns):
        frame = pd.DataFrame(columns=["customer_id", "hour_utc", "sends", "opens", "clicks", "sessions"])
    typed = frame.astype({column: "int64" for column in ("customer_id", "sends", "opens", "clicks", "sessions")})
    typed["hour_utc"] = pd.to_datetime(typed["hour_utc"], utc=True).astype("datetime64[ns, UTC]")
    return typed


def read_extract(paths: dict[str, str]) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(Path(path)) for name, path in paths.items()}


def _read_optional(conn, table: str, query: str, params: dict, columns: list[str]) -> pd.DataFrame:
    """Rows of an optional source, or an empty frame with its columns when the store lacks it."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]
    return read_frame(conn, query, params) if exists else pd.DataFrame(columns=columns)


def _typed(frame: pd.DataFrame, dtypes: dict[str, str], dates: tuple[str, ...] = ()) -> pd.DataFrame:
    typed = frame.astype(dtypes) if len(frame.columns) else frame
    for column in dates:
        typed[column] = pd.to_datetime(typed[column]).astype("datetime64[ns]")
    return typed


def _typed_customers(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(
        {"customer_id": "int64", "country": "str", "timezone": "str", "acquisition_channel": "str", "email_opt_in": "bool"}
    ).assign(signup_date=lambda f: pd.to_datetime(f["signup_date"]).astype("datetime64[ns]"))


def _typed_orders(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(
        {"order_id": "int64", "customer_id": "int64", "channel": "str", "status": "str", "n_lines": "int64", "order_value": "float64"}
    ).assign(order_ts=lambda f: pd.to_datetime(f["order_ts"], utc=True).astype("datetime64[ns, UTC]"))
