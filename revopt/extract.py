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

DATASETS = ("customers", "orders", "customer_daily_events")


def extract_sources(settings: Settings, run_date: dt.date, lookback_days: int) -> dict[str, str]:
    """Write the run's extracts (see :data:`DATASETS`) and return their paths by dataset name.

    ``lookback_days`` bounds how much order and event history is read before the run date.
    """
    out_dir = settings.run_dir(run_date) / "extract"
    out_dir.mkdir(parents=True, exist_ok=True)
    run_ts = pd.Timestamp(run_date, tz="UTC")
    since_ts = run_ts - pd.Timedelta(days=lookback_days)

    with connect_postgres(settings) as conn:
        customers = read_frame(conn, CUSTOMERS_SQL, {"run_date": run_date})
        orders = read_frame(conn, ORDERS_SQL, {"run_ts": run_ts.to_pydatetime(), "since_ts": since_ts.to_pydatetime()})
    customers = _typed_customers(customers)
    orders = _typed_orders(orders)

    store = event_store(settings)
    daily_events = store.query_df(
        DAILY_EVENTS_SQL.format(database=store.database),
        {"since": since_ts.strftime("%Y-%m-%d %H:%M:%S"), "run_ts": run_ts.strftime("%Y-%m-%d %H:%M:%S")},
    )
    daily_events["day"] = pd.to_datetime(daily_events["day"]).astype("datetime64[ns]")

    paths = {}
    for name, frame in (("customers", customers), ("orders", orders), ("customer_daily_events", daily_events)):
        path = out_dir / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        paths[name] = str(path)
        logger.info("extracted %s as of %s: %d rows -> %s", name, run_date, len(frame), path)
    return paths


def read_extract(paths: dict[str, str]) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(Path(path)) for name, path in paths.items()}


def _typed_customers(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(
        {"customer_id": "int64", "country": "str", "timezone": "str", "acquisition_channel": "str", "email_opt_in": "bool"}
    ).assign(signup_date=lambda f: pd.to_datetime(f["signup_date"]).astype("datetime64[ns]"))


def _typed_orders(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(
        {"order_id": "int64", "customer_id": "int64", "channel": "str", "status": "str", "n_lines": "int64", "order_value": "float64"}
    ).assign(order_ts=lambda f: pd.to_datetime(f["order_ts"], utc=True).astype("datetime64[ns, UTC]"))
