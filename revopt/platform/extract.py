"""Extract the sources as of a run date into Parquet files under the run folder.

Only rows with timestamps strictly before the run date D (midnight UTC) are read: a run for D
sees exactly what the store knew when D began, however late it runs. Heavy event aggregation
runs inside ClickHouse and only per-customer daily counts come back. The queries are in
:mod:`revopt.platform.extract_sql`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from revopt.platform.catalog import has_column, has_table
from revopt.platform.config import Settings
from revopt.platform.contract import EVENT_COLUMNS, EVENTS_TABLE, OPTIONAL_SOURCE_COLUMNS, SOURCE_COLUMNS
from revopt.platform.postgres import read_frame, read_large_frame
from revopt.platform.events import EventStore
from revopt.platform.extract_sql import (
    CUSTOMERS_SQL, ORDERS_SQL, ORDER_CATEGORIES_SQL, DAILY_EVENTS_SQL, MARKETING_SPEND_SQL, PRODUCTS_SQL,
    PRODUCT_DAILY_SALES_SQL, DAY_TOTALS_SQL, COMPETITOR_PRICES_SQL, INVENTORY_SQL, PROMOTIONS_SQL, PRODUCT_SALES_SQL,
    LISTINGS_SQL, PRODUCT_GROUPS_SQL, EXPERIMENT_EXPOSURES_SQL, EXPOSURE_COLUMNS, OFFERS_SQL, OFFER_COLUMNS,
    ORDER_ITEMS_SQL, ORDER_ITEM_COLUMNS, PRODUCT_VIEWS_SQL, PRODUCT_VIEW_COLUMNS,
)
from revopt.platform.engagement_extract import (engagement_by_hour, engagement_by_local_hour, empty_engagement,
                                                empty_local_engagement)
from revopt.platform.identity import account_map, canonical_customers, canonical_ids, events_source
from revopt.platform.privacy import id_secret
from revopt.platform.stack import connect_postgres, event_store
from revopt.platform.validation import DataValidationError

logger = logging.getLogger(__name__)

DATASETS = (
    "customers", "orders", "order_categories", "customer_daily_events", "products", "product_daily_sales", "day_totals",
    "competitor_prices", "inventory", "promotions", "product_sales", "listings", "product_groups", "engagement_by_hour",
    "marketing_spend", "experiment_exposures", "offers", "order_items", "product_views", "engagement_by_local_hour",
)
# Read from the ClickHouse events; empty, and not validated, for a store without clickstream.
EVENT_DATASETS = ("customer_daily_events", "engagement_by_hour", "product_views", "engagement_by_local_hour")
#: What the extract's ``tables`` part writes (:data:`EXTRACT_PARTS`): the datasets read from PostgreSQL. Everything
#: else an extract holds is the ``events`` part's (these, the datasets computed in the events store and the paths).
TABLE_DATASETS = tuple(name for name in DATASETS if name not in EVENT_DATASETS)
#: A dataset computed inside the events store by a caller's builder (e.g. the customers' event
#: features, ``features.customer.event_features_in_store``): (store or None, since, run_ts) -> frame.
EventBuilder = Callable[[EventStore | None, pd.Timestamp, pd.Timestamp], pd.DataFrame]
DAILY_EVENT_COLUMNS = (
    "customer_id", "day", "sessions", "page_views", "product_views", "add_to_carts", "checkouts", "purchases",
    "email_sends", "email_opens", "email_clicks", "known_from",
)


def extract_sources(settings: Settings, run_date: dt.date, lookback_days: int,
                    datasets: Collection[str] = DATASETS, derived: Mapping[str, EventBuilder] | None = None,
                    engagement_customers: Callable[[pd.Series], np.ndarray | None] | None = None,
                    part: str | None = None) -> dict[str, str]:
    """Write the run's extracts (``datasets``, all of :data:`DATASETS` by default, and the ``derived``
    event datasets, each built in the events store) and return their paths by dataset name.

    ``lookback_days`` bounds how much order and event history is read before the run date. The
    ClickHouse queries of event datasets that are not asked for do not run (the daily rows and the
    hourly engagement are the big ones at scale, see docs/scale.md). ``engagement_customers`` picks,
    from the extracted customers' ids, the customers whose ``engagement_by_hour`` is read (None from it:
    every customer's; the training DAG's customer sample, ``ml.pipeline``).

    ``part``: one of :data:`EXTRACT_PARTS` alone (the DAGs run both side by side, each in its own task), or
    None for both, one after the other. ``"tables"`` writes the PostgreSQL datasets; ``"events"`` the
    event datasets and the ``derived`` ones, reading the customers' time zones it needs from PostgreSQL
    itself (:class:`SourceTables`) when the tables part runs elsewhere.
    """
    derived = dict(derived or {})
    unknown = set(datasets) - set(DATASETS)
    if unknown:
        raise ValueError(f"unknown datasets {sorted(unknown)}; known: {', '.join(DATASETS)}")
    if part is not None and part not in EXTRACT_PARTS:
        raise ValueError(f"unknown extract part {part!r}; the parts: {', '.join(EXTRACT_PARTS)}")
    paths: dict[str, str] = {}
    if part in (None, "tables"):
        paths.update(_extract_tables(settings, run_date, lookback_days, datasets))
    if part in (None, "events"):
        tables = (ExtractFiles(paths) if "customers" in paths
                  else SourceTables(settings, run_date, lookback_days, ("customers",)))
        paths.update(_extract_events(settings, run_date, lookback_days, datasets, derived, engagement_customers, tables))
    # in the order of DATASETS, then the derived ones, whatever order they were built in
    return {name: paths[name] for name in (*DATASETS, *derived) if name in paths}


#: The extract's parts, each its own task in the DAGs (``extract``, mapped), side by side: the PostgreSQL
#: tables, and the datasets computed in the events store (one process at a time opens an embedded chDB).
EXTRACT_PARTS = ("tables", "events")


def merged_extract(parts: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """The extract's paths by dataset from its parts' (the mapped ``extract`` task's results, in
    :data:`EXTRACT_PARTS` order); a dataset two parts wrote is an error."""
    merged: dict[str, str] = {}
    for part in parts:
        twice = sorted(set(merged) & set(part))
        if twice:
            raise ValueError(f"datasets {twice} were extracted by two parts of the extract")
        merged.update(part)
    return merged


def _window(run_date: dt.date, lookback_days: int) -> dict:
    run_ts = pd.Timestamp(run_date, tz="UTC")
    since_ts = run_ts - pd.Timedelta(days=lookback_days)
    return {"run_date": run_date, "since": since_ts.date(), "run_ts": run_ts.to_pydatetime(),
            "since_ts": since_ts.to_pydatetime()}


def _writer(settings: Settings, run_date: dt.date, wanted: Collection[str], paths: dict[str, str]):
    out_dir = settings.run_dir(run_date) / "extract"
    out_dir.mkdir(parents=True, exist_ok=True)

    def emit(name: str, frame: pd.DataFrame | None) -> None:
        """Write ``frame`` as dataset ``name`` at once (when asked for) and keep nothing: at a million customers the
        datasets together are far more than one task may hold (docs/scale.md)."""
        if frame is None or name not in wanted:
            return
        path = out_dir / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        paths[name] = str(path)
        logger.info("extracted %s as of %s: %d rows -> %s", name, run_date, len(frame), path)

    return emit


def _customers(conn, window: dict, accounts) -> pd.DataFrame:
    no_profile = "do_not_profile" if _has_column(conn, "customers", "do_not_profile") else "false"
    return canonical_customers(
        _typed_customers(read_large_frame(conn, CUSTOMERS_SQL.format(do_not_profile=no_profile), window)), accounts)


def _orders(conn, window: dict, accounts) -> pd.DataFrame:
    return canonical_ids(_typed_orders(read_large_frame(conn, ORDERS_SQL, window)), accounts)


def _offers(conn, window: dict, accounts) -> pd.DataFrame:
    return canonical_ids(typed_offers(
        _read_optional(conn, "shop.offers", OFFERS_SQL, window, list(OFFER_COLUMNS))), accounts)


#: The PostgreSQL datasets the events part joins to the events (:class:`SourceTables`).
_SHARED_TABLES = {"customers": _customers, "orders": _orders, "offers": _offers}


class SourceTables(Mapping[str, pd.DataFrame]):
    """Datasets of the tables part (``names``, of customers, orders and offers) read from PostgreSQL on access,
    each exactly as the tables part writes it (canonical ids, the erased left out), instead of from its file:
    the events part, running beside the tables part, reads what it joins to the events itself."""

    def __init__(self, settings: Settings, run_date: dt.date, lookback_days: int, names: Iterable[str]) -> None:
        self.settings, self.run_date, self.lookback_days = settings, run_date, lookback_days
        self.names = tuple(names)
        unknown = set(self.names) - set(_SHARED_TABLES)
        if unknown:
            raise ValueError(f"{sorted(unknown)} are not read beside the tables part; these are: "
                             f"{', '.join(_SHARED_TABLES)}")

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self.names:
            raise KeyError(name)
        with connect_postgres(self.settings) as conn:
            run_ts = pd.Timestamp(self.run_date, tz="UTC")
            accounts = account_map(conn, run_ts, lambda: id_secret(self.settings))
            return _SHARED_TABLES[name](conn, _window(self.run_date, self.lookback_days), accounts)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _extract_tables(settings: Settings, run_date: dt.date, lookback_days: int,
                    datasets: Collection[str]) -> dict[str, str]:
    """The PostgreSQL datasets of ``datasets``, written; their paths."""
    window = _window(run_date, lookback_days)
    run_ts = pd.Timestamp(run_date, tz="UTC")
    paths: dict[str, str] = {}
    emit = _writer(settings, run_date, datasets, paths)
    with connect_postgres(settings) as conn:
        check_source_contract(conn, None, run_date)  # the events table's columns: checked by the events part
        accounts = account_map(conn, run_ts, lambda: id_secret(settings))
        if "customers" in datasets:
            emit("customers", _customers(conn, window, accounts))
        orders = _orders(conn, window, accounts)
        emit("orders", orders)
        order_ids = orders["order_id"] if accounts.erased else None  # an erased person's orders are gone
        del orders
        emit("products", _typed(read_frame(conn, PRODUCTS_SQL, window), {"product_id": "int64", "category": "str", "cost": "float64", "current_price": "float64", "listed_current_price": "float64"}))
        # The joins over every order line in the window run only when their dataset is asked for.
        if "order_categories" in datasets:
            order_categories = _typed(read_large_frame(conn, ORDER_CATEGORIES_SQL, window),
                                      {"order_id": "int64", "category": "str", "value": "float64"})
            if order_ids is not None:
                order_categories = order_categories.loc[order_categories["order_id"].isin(order_ids)]
            emit("order_categories", order_categories)
            del order_categories
        if "product_daily_sales" in datasets:
            emit("product_daily_sales", _typed(
                read_large_frame(conn, PRODUCT_DAILY_SALES_SQL, window),
                {"product_id": "int64", "units": "int64", "revenue": "float64", "list_price": "float64", "avg_discount": "float64"},
                dates=("day",),
            ))
        if "day_totals" in datasets:
            emit("day_totals", _typed(read_frame(conn, DAY_TOTALS_SQL, window), {"lines": "int64"}, dates=("day",)))
        emit("competitor_prices", _typed(
            _read_optional(conn, "shop.competitor_prices", COMPETITOR_PRICES_SQL, window, ["product_id", "day", "competitor_price"]),
            {"product_id": "int64", "competitor_price": "float64"}, dates=("day",),
        ))
        emit("inventory", _typed(
            _read_optional(conn, "shop.inventory", INVENTORY_SQL, window, ["product_id", "day", "on_hand"]),
            {"product_id": "int64", "on_hand": "int64"}, dates=("day",),
        ))
        if "promotions" in datasets:
            emit("promotions", _typed(
                _read_optional(conn, "shop.promotions", PROMOTIONS_SQL, window,
                               ["product_id", "start_date", "end_date", "promo_type", "depth"]),
                {"product_id": "int64", "promo_type": "str", "depth": "float64"}, dates=("start_date", "end_date"),
            ))
        if "product_sales" in datasets:
            emit("product_sales", _typed(
                _read_optional(conn, "shop.product_sales", PRODUCT_SALES_SQL, window,
                               ["product_id", "period_start", "period_days", "units", "revenue", "list_price"]),
                {"product_id": "int64", "period_days": "int64", "units": "float64", "revenue": "float64",
                 "list_price": "float64"},
                dates=("period_start",),
            ))
        if "listings" in datasets:
            emit("listings", _typed(
                _read_optional(conn, "shop.listings", LISTINGS_SQL, window, ["product_id", "start_date", "end_date"]),
                {"product_id": "int64"}, dates=("start_date", "end_date"),
            ))
        if "product_groups" in datasets:
            emit("product_groups", _typed(
                _read_optional(conn, "shop.product_groups", PRODUCT_GROUPS_SQL, window, ["product_id", "brand", "location"]),
                {"product_id": "int64", "brand": "str", "location": "str"},
            ))
        if "experiment_exposures" in datasets:
            emit("experiment_exposures", typed_exposures(
                _read_optional(conn, "shop.experiment_exposures", EXPERIMENT_EXPOSURES_SQL, window, list(EXPOSURE_COLUMNS))))
        if "offers" in datasets:
            emit("offers", _offers(conn, window, accounts))
        if "order_items" in datasets:
            emit("order_items", canonical_ids(typed_order_items(read_large_frame(
                conn, ORDER_ITEMS_SQL.format(name="name::text" if _has_column(conn, "products", "name") else "NULL::text"),
                window)), accounts))
        campaign = "campaign" if _has_column(conn, "marketing_spend", "campaign") else "''"
        emit("marketing_spend", _typed(
            read_frame(conn, MARKETING_SPEND_SQL.format(campaign=campaign), window),
            {"channel": "str", "campaign": "str", "spend": "float64", "impressions": "int64", "clicks": "int64"},
            dates=("day",),
        ))

    return paths


def _extract_events(settings: Settings, run_date: dt.date, lookback_days: int, datasets: Collection[str],
                    derived: Mapping[str, EventBuilder], engagement_customers, tables: Mapping[str, pd.DataFrame]
                    ) -> dict[str, str]:
    """The event datasets of ``datasets`` and the ``derived`` ones, computed in the events store and written; their
    paths. ``tables`` gives the customers (their ids and time zones), read only when an engagement dataset is asked
    for."""
    wanted = {*(name for name in datasets if name in EVENT_DATASETS), *derived}
    if not wanted:
        return {}
    run_ts = pd.Timestamp(run_date, tz="UTC")
    since_ts = run_ts - pd.Timedelta(days=lookback_days)
    paths: dict[str, str] = {}
    emit = _writer(settings, run_date, wanted, paths)
    store = event_store(settings) if settings.clickstream else None
    if store is None:
        logger.warning("clickstream off (REVOPT_CLICKSTREAM): %s are empty for %s; event features will be zero",
                       " and ".join(EVENT_DATASETS), run_date)
        emit("customer_daily_events", empty_daily_events())
        emit("engagement_by_hour", empty_engagement())
        emit("product_views", empty_product_views())
        emit("engagement_by_local_hour", empty_local_engagement())
    else:
        with connect_postgres(settings) as conn:
            check_source_contract(conn, store, run_date)
        if "product_views" in datasets:
            emit("product_views", product_views(store, since_ts, run_ts))
        if "customer_daily_events" in datasets:
            daily_events = store.query_df(
                DAILY_EVENTS_SQL.format(events=events_source(store, known_from=True)),
                {"since": since_ts.strftime("%Y-%m-%d %H:%M:%S"), "run_ts": run_ts.strftime("%Y-%m-%d %H:%M:%S")},
            )
            daily_events["day"] = pd.to_datetime(daily_events["day"]).astype("datetime64[ns]")
            daily_events["known_from"] = pd.to_datetime(daily_events["known_from"]).astype("datetime64[ns]")
            emit("customer_daily_events", daily_events)
            del daily_events
        if "engagement_by_hour" in datasets or "engagement_by_local_hour" in datasets:
            customers = tables["customers"]
            if "engagement_by_hour" in datasets:
                chosen = engagement_customers(customers["customer_id"]) if engagement_customers is not None else None
                if chosen is not None:
                    logger.info("engagement_by_hour as of %s: the hourly rows of %d of %d customers", run_date,
                                len(chosen), len(customers))
                emit("engagement_by_hour", engagement_by_hour(store, since_ts, run_ts, chosen))
            if "engagement_by_local_hour" in datasets:
                emit("engagement_by_local_hour", engagement_by_local_hour(store, since_ts, run_ts, customers))
            del customers
    for name, build in derived.items():
        emit(name, build(store, since_ts, run_ts))
    return paths


def product_views(store: EventStore, since_ts: pd.Timestamp, run_ts: pd.Timestamp) -> pd.DataFrame:
    """Product views per known customer, product and UTC day in ``[since_ts, run_ts)`` (see
    :data:`PRODUCT_VIEWS_SQL`); ``day`` is ``datetime64[ns]``."""
    frame = store.query_df(
        PRODUCT_VIEWS_SQL.format(events=events_source(store)),
        {"since": since_ts.strftime("%Y-%m-%d %H:%M:%S"), "run_ts": run_ts.strftime("%Y-%m-%d %H:%M:%S")},
    )
    return _typed_views(frame) if len(frame.columns) else empty_product_views()


def empty_product_views() -> pd.DataFrame:
    """A typed ``product_views`` extract with no rows (a store without clickstream)."""
    return _typed_views(pd.DataFrame(columns=list(PRODUCT_VIEW_COLUMNS)))


def _typed_views(frame: pd.DataFrame) -> pd.DataFrame:
    typed = frame.astype({"customer_id": "int64", "product_id": "int64", "views": "int64"})
    typed["day"] = pd.to_datetime(typed["day"]).astype("datetime64[ns]")
    return typed


def typed_order_items(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``order_items`` extract typed (ids and quantity int64, value float64, ``product_name`` str,
    ``order_ts`` ``datetime64[ns, UTC]``), the empty frame of a store without orders too."""
    if not len(frame.columns):
        frame = pd.DataFrame(columns=list(ORDER_ITEM_COLUMNS))
    dtypes = {"order_id": "int64", "customer_id": "int64", "product_id": "int64", "quantity": "int64", "value": "float64"}
    typed = _cast(frame, {**dtypes, "product_name": "str"})
    if not len(typed):
        typed = typed.astype({**dtypes, "product_name": object})
    typed["order_ts"] = pd.to_datetime(typed["order_ts"], utc=True).astype("datetime64[ns, UTC]")
    return typed


def empty_daily_events() -> pd.DataFrame:
    """A typed ``customer_daily_events`` extract with no rows (a store without clickstream)."""
    return _typed(pd.DataFrame({c: pd.Series(dtype="int64") for c in DAILY_EVENT_COLUMNS}), {}, dates=("day", "known_from"))


def typed_exposures(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``experiment_exposures`` extract typed: ``experiment_id`` str, ``unit_id`` int64 and
    ``first_exposed_at`` ``datetime64[ns, UTC]``, the empty frame of a store without exposures too
    (so its suite's type checks hold and it joins the int64 unit ids of the assignments)."""
    typed = _cast(frame, {"experiment_id": "str", "unit_id": "int64"})
    if not len(typed):
        typed = typed.astype({"experiment_id": object, "unit_id": "int64"})
    typed["first_exposed_at"] = pd.to_datetime(typed["first_exposed_at"], utc=True).astype("datetime64[ns, UTC]")
    return typed


def typed_offers(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``offers`` extract typed: ids int64, ``sent_at`` ``datetime64[ns, UTC]``, ``offer_type`` str,
    ``discount`` float64 and ``treated`` bool, the empty frame of a store without offers too."""
    typed = _cast(frame, {"offer_id": "int64", "customer_id": "int64", "offer_type": "str", "discount": "float64",
                          "treated": "bool"})
    if not len(typed):
        typed = typed.astype({"offer_id": "int64", "customer_id": "int64", "offer_type": object, "discount": "float64",
                              "treated": bool})
    typed["sent_at"] = pd.to_datetime(typed["sent_at"], utc=True).astype("datetime64[ns, UTC]")
    return typed


_PG_TYPES = {
    "integer": {"smallint", "integer", "bigint"},
    "numeric": {"smallint", "integer", "bigint", "numeric", "real", "double precision"},
    "text": {"text", "character varying", "character"},
    "date": {"date"},
    "timestamp": {"timestamp with time zone", "timestamp without time zone"},  # without: read as UTC
    "boolean": {"boolean"},
}
_CH_WRAPPER = re.compile(r"^(?:Nullable|LowCardinality)\((.*)\)$")


def _clickhouse_family(type_name: str) -> str:
    while match := _CH_WRAPPER.match(type_name):
        type_name = match.group(1)
    if re.match(r"^U?Int(8|16|32|64)$", type_name):
        return "integer"
    if type_name.startswith("DateTime"):
        return "datetime"
    if type_name == "String" or type_name.startswith("FixedString"):
        return "string"
    return type_name


def check_source_contract(conn, store: EventStore | None, run_date: dt.date) -> None:
    """Every source column revopt reads exists with a usable type (:data:`SOURCE_COLUMNS`, the
    :data:`OPTIONAL_SOURCE_COLUMNS` of the optional tables the store has, and :data:`EVENT_COLUMNS`,
    the latter unless ``store`` is None: no clickstream); else one
    :class:`DataValidationError` listing each missing or mistyped column, before any extract query
    fails on it with a database error."""
    found: dict[str, dict[str, str]] = {}
    rows = conn.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'shop'"
    ).fetchall()
    for table, column, data_type in rows:
        found.setdefault(table, {})[column] = data_type
    problems = [
        problem
        for table, columns in (*SOURCE_COLUMNS.items(),
                               *((name, wanted) for name, wanted in OPTIONAL_SOURCE_COLUMNS.items() if name in found))
        for problem in _column_problems(table, f"shop.{table}", found.get(table, {}), columns,
                                        lambda t, f: t in _PG_TYPES[f])
    ]
    if store is not None:
        events = store.query_df(
            "SELECT name, type FROM system.columns WHERE database = {database:String} AND table = {table:String}",
            {"database": store.database, "table": EVENTS_TABLE},
        )
        have = dict(zip(events["name"], events["type"])) if len(events.columns) else {}
        problems += _column_problems(EVENTS_TABLE, f"{store.database}.{EVENTS_TABLE}", have, EVENT_COLUMNS,
                                     lambda t, f: _clickhouse_family(t) == f)
    if problems:
        raise DataValidationError("\n".join(
            f"Source {table!r} ({qualified}) does not match the contract (README, Source contract) for run date "
            f"{run_date.isoformat()}: {problem}"
            for table, qualified, problem in problems
        ))


def _column_problems(table: str, qualified: str, have: dict[str, str], wanted: dict[str, str],
                     fits) -> list[tuple[str, str, str]]:
    if not have:
        return [(table, qualified, "the table does not exist")]
    return [
        (table, qualified, f"column {column!r} is missing" if column not in have
         else f"column {column!r} is {have[column]}, expected {family}")
        for column, family in wanted.items()
        if column not in have or not fits(have[column], family)
    ]


def read_extract(paths: dict[str, str]) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(Path(path)) for name, path in paths.items()}


class ExtractFiles(Mapping[str, pd.DataFrame]):
    """The extract's datasets read one at a time: each ``[name]`` reads its parquet file again and nothing is kept,
    so a loop over the items holds one dataset in memory (the validation gate at a million customers reads every
    dataset of the night, together far more than one task may hold). ``rows(name)`` reads the file's metadata only."""

    def __init__(self, paths: Mapping[str, str]) -> None:
        self.paths = dict(paths)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return pd.read_parquet(Path(self.paths[name]))

    def __contains__(self, name: object) -> bool:  # without reading the file
        return name in self.paths

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def rows(self, name: str) -> int:
        return self._metadata(name).num_rows

    def _metadata(self, name: str):
        import pyarrow.parquet as pq

        return pq.ParquetFile(Path(self.paths[name])).metadata

    def only(self, names: Iterable[str]) -> ExtractFiles:
        keep = set(names)
        return ExtractFiles({name: path for name, path in self.paths.items() if name in keep})

    def share(self, k: int, n: int) -> ExtractFiles:
        """The ``k``-th (from 0) of ``n`` shares of the datasets, about equal in work: each dataset weighs its cells
        (rows x columns, from its file's metadata) plus :data:`SHARE_DATASET_CELLS`, and goes, the heaviest first,
        to the lightest share so far. Every dataset is in exactly one share; ``share(0, 1)`` is all of them."""
        if not 0 <= k < n:
            raise ValueError(f"share {k} of {n}: shares are numbered 0 .. {n - 1}")
        weight = {name: meta.num_rows * meta.num_columns + SHARE_DATASET_CELLS
                  for name, meta in ((name, self._metadata(name)) for name in self.paths)}
        loads, owner = [0] * n, {}
        for name in sorted(weight, key=lambda name: (-weight[name], name)):
            owner[name] = min(range(n), key=lambda i: (loads[i], i))
            loads[owner[name]] += weight[name]
        return self.only(name for name in self.paths if owner[name] == k)


#: What a dataset weighs in :meth:`ExtractFiles.share` besides its cells: the fixed cost of validating one (Great
#: Expectations' batch and suite: about a second, what ~1M cells cost).
SHARE_DATASET_CELLS = 1_000_000


def _has_column(conn, table: str, column: str) -> bool:
    """Whether the store's ``shop.<table>`` has ``column`` (an optional column of the contract)."""
    return has_column(conn, "shop", table, column)


def _read_optional(conn, table: str, query: str, params: dict, columns: list[str]) -> pd.DataFrame:
    """Rows of an optional source, or an empty frame with its columns when the store lacks it."""
    return read_frame(conn, query, params) if has_table(conn, table) else pd.DataFrame(columns=columns)


def _typed(frame: pd.DataFrame, dtypes: dict[str, str], dates: tuple[str, ...] = ()) -> pd.DataFrame:
    typed = _cast(frame, dtypes) if len(frame.columns) else frame
    for column in dates:
        typed[column] = pd.to_datetime(typed[column]).astype("datetime64[ns]")
    return typed


def _cast(frame: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    """Cast each column only when every value converts: NULLs and stray types stay as read, so the
    dataset's suite names the column (``astype`` would fail with no dataset, or turn NULL into 'None')."""
    cast = frame.copy()
    for column, dtype in dtypes.items():
        if column not in cast.columns or not len(cast):
            continue
        values = cast[column]
        if dtype == "str":
            cast[column] = values.astype(object).where(values.notna(), None)
        elif dtype == "bool":
            if values.map(type).eq(bool).all():
                cast[column] = values.astype("bool")
        else:
            try:
                cast[column] = values.astype(dtype)
            except (TypeError, ValueError):
                logger.warning("column %s cannot be read as %s (NULLs or other types); kept as read", column, dtype)
    return cast


def _typed_customers(frame: pd.DataFrame) -> pd.DataFrame:
    return _cast(
        frame,
        {"customer_id": "int64", "country": "str", "timezone": "str", "acquisition_channel": "str", "email_opt_in": "bool",
         "do_not_profile": "bool"},
    ).assign(signup_date=lambda f: pd.to_datetime(f["signup_date"]).astype("datetime64[ns]"))


def _typed_orders(frame: pd.DataFrame) -> pd.DataFrame:
    return _cast(
        frame,
        {"order_id": "int64", "customer_id": "int64", "channel": "str", "status": "str", "n_lines": "int64",
         "order_value": "float64", "lines_without_product_id": "int64"},
    ).assign(order_ts=lambda f: pd.to_datetime(f["order_ts"], utc=True).astype("datetime64[ns, UTC]"))
