"""What a customer-affinity refresh reads (issue 19, item 1): the purchases and product views in a window
``[since, until)``, per customer, dimension (``category``, and ``brand`` where the store has
``shop.product_groups``), value and UTC hour, aggregated inside the databases so only small frames come back.

Every reader returns the same frame, :data:`INTERACTION_COLUMNS`:

- ``customer_id`` (int64), ``dimension`` ('category' | 'brand'), ``value`` (the category or brand);
- ``ts``: the start of the UTC hour of the interactions (``datetime64[ns, UTC]``). Interactions are timed to
  their hour, so the counts of an hour split between two refreshes add up to the count one refresh over both
  would read (the recency weighting, :mod:`ml.personalisation.affinity`, is linear in the counts);
- ``kind``: 'purchase' (an order line of a completed order: a line counts once, whatever its quantity) or
  'view' (a ``product_view`` event of a known customer, ``customer_id > 0``, not flagged ``is_machine``);
- ``count`` (int64): the interactions of that customer, value, hour and kind.

A product in several dimensions (its category and its brand) gives one row per dimension. Lines and views of
a product the catalogue does not know (or, for brands, a product without a ``shop.product_groups`` row) count
in no dimension. The window is half open like every extract: a refresh as of ``until`` counts what happened
strictly before it, and the next refresh reads on from there.

Product views need the product's category and brand, which live in PostgreSQL: :func:`product_dimensions`
reads them and :func:`view_interactions` loads them into the ClickHouse table :data:`PRODUCTS_TABLE`
(truncated and refilled by each call, as :mod:`features.campaigns` does with its inputs: two refreshes must
not run at once against one database; the DAG runs one at a time) and joins the events to it there.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from revopt.platform.catalog import has_table
from revopt.platform.events import clickhouse_time, utc
from revopt.platform.identity import AccountMap, canonical_ids, events_source
from revopt.platform.postgres import read_frame

INTERACTION_COLUMNS = ("customer_id", "dimension", "value", "ts", "kind", "count")
DIMENSIONS = ("category", "brand")
KINDS = ("purchase", "view")
#: ClickHouse table holding the catalogue's (product_id, dimension, value) rows for the views' join
PRODUCTS_TABLE = "affinity_products"

_PRODUCTS_DDL = """CREATE TABLE IF NOT EXISTS {database}.affinity_products (
    product_id UInt64, dimension String, value String
) ENGINE = MergeTree ORDER BY product_id"""

# Completed orders' lines per customer, category and UTC hour. Orders are picked distinct by id, so a
# duplicated order row in a store's view cannot multiply its lines.
_ORDERS_CTE = """
WITH o AS (
    SELECT DISTINCT order_id, customer_id, order_ts
    FROM shop.orders
    WHERE status = 'completed' AND order_ts >= %(since)s AND order_ts < %(until)s
)"""
_PURCHASES_BY = """
SELECT o.customer_id::bigint AS customer_id, '{dimension}' AS dimension, {value_column}::text AS value,
       date_trunc('hour', o.order_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS ts,
       'purchase' AS kind, count(*)::bigint AS count
FROM o
JOIN shop.order_lines AS l ON l.order_id = o.order_id
{joins}
GROUP BY 1, 2, 3, 4"""
_CATEGORY_JOIN = "JOIN shop.products AS p ON p.product_id = l.product_id"
_BRAND_JOIN = "JOIN shop.product_groups AS g ON g.product_id = l.product_id"

_PRODUCT_DIMENSIONS_SQL = "SELECT product_id::bigint AS product_id, 'category' AS dimension, category::text AS value FROM shop.products"
_PRODUCT_BRANDS_SQL = "SELECT product_id::bigint, 'brand', brand::text FROM shop.product_groups"

# Product views per customer, dimension, value and UTC hour, the events filtered before the join.
_VIEWS_SQL = """
SELECT toInt64(e.customer_id) AS customer_id, d.dimension AS dimension, d.value AS value,
       toStartOfHour(e.event_time) AS ts, 'view' AS kind, toInt64(count()) AS count
FROM (
    SELECT customer_id, product_id, event_time
    FROM {events}
    WHERE event_type = 'product_view' AND customer_id > 0 AND is_machine = 0
      AND event_time >= {{since:DateTime64(3, 'UTC')}} AND event_time < {{until:DateTime64(3, 'UTC')}}
) AS e
INNER JOIN {database}.affinity_products AS d ON d.product_id = e.product_id
GROUP BY customer_id, dimension, value, ts
ORDER BY customer_id, dimension, value, ts
"""


def has_brands(conn) -> bool:
    """Whether the store keeps ``shop.product_groups`` (the optional table naming each product's brand)."""
    return has_table(conn, "shop.product_groups")


def purchases_sql(with_brands: bool) -> str:
    """PostgreSQL query of :func:`purchase_interactions` (parameters ``since`` and ``until``)."""
    parts = [_PURCHASES_BY.format(dimension="category", value_column="p.category", joins=_CATEGORY_JOIN)]
    if with_brands:
        parts.append(_PURCHASES_BY.format(dimension="brand", value_column="g.brand", joins=_BRAND_JOIN))
    return _ORDERS_CTE + "\nUNION ALL".join(parts) + "\nORDER BY 1, 2, 3, 4"


def purchase_interactions(conn, since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    """The lines of the completed orders placed in ``[since, until)``, per customer, dimension, value and UTC
    hour (:data:`INTERACTION_COLUMNS`); brands only where the store has ``shop.product_groups``."""
    window = {"since": utc(since).to_pydatetime(), "until": utc(until).to_pydatetime()}
    return typed_interactions(read_frame(conn, purchases_sql(has_brands(conn)), window))


def product_dimensions(conn) -> pd.DataFrame:
    """Every product's (product_id, dimension, value) rows: its category, and its brand where the store has
    ``shop.product_groups``."""
    sql = _PRODUCT_DIMENSIONS_SQL
    if has_brands(conn):
        sql += "\nUNION ALL\n" + _PRODUCT_BRANDS_SQL
    frame = read_frame(conn, sql + "\nORDER BY 1, 2")
    if not len(frame.columns):
        frame = pd.DataFrame(columns=["product_id", "dimension", "value"])
    return frame.astype({"product_id": "int64", "dimension": object, "value": object})


def view_interactions(store, dimensions: pd.DataFrame, since: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    """The product views of known customers in ``[since, until)`` per customer, dimension, value and UTC hour
    (:data:`INTERACTION_COLUMNS`), ``dimensions`` being :func:`product_dimensions`; aggregated in ClickHouse.
    ``store`` is a :class:`revopt.platform.events.EventStore`, or None when the clickstream is off (no views)."""
    if store is None or dimensions.empty:
        return typed_interactions(pd.DataFrame())
    store.command(_PRODUCTS_DDL.format(database=store.database))
    store.command(f"TRUNCATE TABLE {store.database}.{PRODUCTS_TABLE}")
    store.insert_arrow(PRODUCTS_TABLE, pa.table({
        "product_id": pa.array(dimensions["product_id"].to_numpy(dtype="uint64")),
        "dimension": pa.array(dimensions["dimension"].astype(str).to_numpy(dtype=object), pa.string()),
        "value": pa.array(dimensions["value"].astype(str).to_numpy(dtype=object), pa.string()),
    }))
    return typed_interactions(store.query_df(views_sql(store.database, events_source(store, until="until")),
                                                 views_params(since, until)))


def views_sql(database: str, events: str | None = None) -> str:
    """ClickHouse query of :func:`view_interactions` (parameters :func:`views_params`); ``events`` is what to
    read instead of the raw table (identity resolution: :func:`revopt.platform.identity.events_source`)."""
    return _VIEWS_SQL.format(database=database, events=events or f"{database}.events")


def views_params(since: pd.Timestamp, until: pd.Timestamp) -> dict[str, str]:
    """The bound parameters of :func:`views_sql` for ``[since, until)`` (UTC, to the millisecond)."""
    return {"since": clickhouse_time(since), "until": clickhouse_time(until)}


def interactions(conn, store, since: pd.Timestamp, until: pd.Timestamp,
                 accounts: AccountMap | None = None) -> pd.DataFrame:
    """Purchases (PostgreSQL) and product views (ClickHouse; none when ``store`` is None) in ``[since, until)``:
    one frame of :data:`INTERACTION_COLUMNS`, the input of :func:`ml.personalisation.affinity.refresh`. The
    purchases' accounts are put onto their canonical customer by ``accounts`` (the views are resolved in
    ClickHouse, :func:`revopt.platform.identity.events_source`)."""
    purchases = purchase_interactions(conn, since, until)
    if accounts:
        keys = ["customer_id", "dimension", "value", "ts", "kind"]
        purchases = typed_interactions(canonical_ids(purchases, accounts).groupby(keys, as_index=False)["count"].sum())
    views = view_interactions(store, product_dimensions(conn), since, until) if store is not None \
        else typed_interactions(pd.DataFrame())
    frames = [frame for frame in (purchases, views) if len(frame)]
    return typed_interactions(pd.concat(frames, ignore_index=True)) if frames else purchases


def typed_interactions(frame: pd.DataFrame) -> pd.DataFrame:
    """A reader's result with :data:`INTERACTION_COLUMNS` and their dtypes (the empty frame too)."""
    if not len(frame.columns):
        frame = pd.DataFrame({column: [] for column in INTERACTION_COLUMNS})
    typed = frame[list(INTERACTION_COLUMNS)].astype({"customer_id": "int64", "count": "int64",
                                                      "dimension": object, "value": object, "kind": object})
    typed["ts"] = pd.to_datetime(typed["ts"], utc=True).astype("datetime64[ns, UTC]")
    return typed.reset_index(drop=True)



