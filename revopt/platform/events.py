"""The ClickHouse event store: chDB in process, or a ClickHouse server through clickhouse-connect.

Both run the same SQL text. Query parameters use ClickHouse's server-side binding syntax
(``{name:Type}``), which chDB and the server both understand, so no value is ever formatted into
SQL by hand.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from revopt.platform.contract import EVENTS_DDL

logger = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EventStore(Protocol):
    database: str

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None: ...

    def query_df(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame: ...

    def insert_arrow(self, table: str, data: pa.Table) -> None: ...

    def close(self) -> None: ...


def utc(moment: Any) -> pd.Timestamp:
    """``moment`` as a UTC timestamp: a naive one is taken to be UTC, an aware one converted."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def clickhouse_time(moment: Any) -> str:
    """``moment`` (UTC, see :func:`utc`) as the text of a ``{name:DateTime64(3, 'UTC')}`` query parameter,
    to the millisecond."""
    return utc(moment).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def validate_identifier(name: str) -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise (identifiers come from config)."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a valid SQL identifier: {name!r}")
    return name


def open_event_store(*, url: str | None, chdb_path: Path, database: str) -> EventStore:
    validate_identifier(database)
    store: EventStore
    if url:
        store = ServerEventStore(url, database)
    else:
        store = ChdbEventStore(chdb_path, database)
    store.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    store.command(EVENTS_DDL.format(database=database))
    return store


@contextlib.contextmanager
def scratch_tables(store: EventStore, definitions: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Tables of the events store's database for one step's queries (ids, time zones, journey windows sent
    from Python): each key of ``definitions`` named with a random suffix (concurrent steps never share one) and
    created as ``(columns) ENGINE ...`` from its value; the names by key, without the database. Dropped on
    leaving, whatever happened."""
    suffix = uuid.uuid4().hex[:12]
    names = {key: f"{key}_{suffix}" for key in definitions}
    try:
        for key, definition in definitions.items():
            store.command(f"CREATE TABLE {store.database}.{names[key]} {definition}")
        yield names
    finally:
        for name in names.values():
            store.command(f"DROP TABLE IF EXISTS {store.database}.{name}")


class ChdbEventStore:
    """In-process ClickHouse (chDB) with a persistent data folder."""

    def __init__(self, path: Path, database: str) -> None:
        from chdb import session

        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.database = database
        self._session = session.Session(str(path))

    def close(self) -> None:
        self._session.close()

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._session.query(sql, "CSV", params=params or {})

    def query_df(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self._session.query(sql, "DataFrame", params=params or {})

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        validate_identifier(table)
        # chDB reads local files directly; Parquet keeps the types exact.
        with tempfile.TemporaryDirectory(prefix="revopt-chdb-") as tmp:
            path = Path(tmp) / f"{table}.parquet"
            pq.write_table(data, path)
            columns = ", ".join(validate_identifier(c) for c in data.column_names)
            self._session.query(
                f"INSERT INTO {self.database}.{table} ({columns}) "
                f"SELECT {columns} FROM file({{path:String}}, Parquet)",
                "CSV",
                params={"path": str(path)},
            )


class ServerEventStore:
    """A ClickHouse server reached over HTTP(S) with clickhouse-connect."""

    def __init__(self, url: str, database: str) -> None:
        import clickhouse_connect

        self.database = database
        self._client = clickhouse_connect.get_client(dsn=url)

    def close(self) -> None:
        self._client.close()

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._client.command(sql, parameters=params or None)

    def query_df(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self._client.query_df(sql, parameters=params or None)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        validate_identifier(table)
        self._client.insert_arrow(table, data, database=self.database)
