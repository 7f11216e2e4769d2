"""PostgreSQL helpers: schema setup, COPY loads, reads into pandas and atomic partition publishing."""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pa_compute
import pyarrow.csv as pa_csv
from psycopg import sql

from revopt.platform.events import validate_identifier
from revopt.platform.privacy import withheld_rows

logger = logging.getLogger(__name__)

_COPY_CHUNK_ROWS = 200_000


def qualified(table: str) -> sql.Identifier:
    """``schema.table`` (or ``table``) as a safely quoted identifier, each part validated."""
    return sql.Identifier(*(validate_identifier(part) for part in table.split(".")))


def copy_frame(conn: psycopg.Connection, table: str, frame: pd.DataFrame) -> int:
    """Append ``frame`` to ``table`` with COPY (CSV), columns matched by name. Returns rows copied.

    The CSV is written by Arrow (several times faster than ``DataFrame.to_csv``, which dominated
    publishing a million customer scores, see docs/scale.md), with pandas' conventions kept: NaN,
    None and empty strings all arrive as NULL. Frames Arrow cannot convert (e.g. Python objects in a
    column) are written by pandas.
    """
    columns = [validate_identifier(c) for c in frame.columns]
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        qualified(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for start in range(0, len(frame), _COPY_CHUNK_ROWS):
            copy.write(_csv(frame.iloc[start : start + _COPY_CHUNK_ROWS]))
    return len(frame)


def _csv(frame: pd.DataFrame) -> bytes | str:
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = pa.table([_empty_as_null(column) for column in table.columns], names=table.column_names)
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False))
        return sink.getvalue().to_pybytes()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False, header=False)
        return buffer.getvalue()


def _empty_as_null(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """``DataFrame.to_csv`` writes an empty string like a NULL (an empty field); so does this."""
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return column
    if pa.types.is_dictionary(column.type):
        column = column.cast(kind)
    return pa_compute.if_else(pa_compute.equal(column, ""), pa.scalar(None, kind), column)


def upsert_rows(conn: psycopg.Connection, table: str, rows: Sequence[dict[str, Any]], key: Sequence[str]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table``, replacing rows with the same ``key``."""
    if not rows:
        return
    columns = list(rows[0])
    statement = sql.SQL("INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT ({key}) DO UPDATE SET {updates}").format(
        table=qualified(table),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        values=sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
        key=sql.SQL(", ").join(map(sql.Identifier, key)),
        updates=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns if c not in key),
    )
    with conn.cursor() as cur:
        cur.executemany(statement, rows)


def read_frame(conn: psycopg.Connection, query: str, params: dict[str, Any] | Sequence[Any] | None = None) -> pd.DataFrame:
    """Run a parameterised query and return its rows as a DataFrame with the query's column names."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        columns = [d.name for d in cur.description or ()]
        return pd.DataFrame(cur.fetchall(), columns=columns)


def publish_partition(conn: psycopg.Connection, table: str, run_date: dt.date, frame: pd.DataFrame) -> int:
    """Replace ``table``'s rows for ``run_date`` with ``frame`` in one transaction.

    Rows are COPYed into a temporary staging table first, then the partition is swapped with a
    DELETE + INSERT inside the same transaction, so readers see either the previous complete run
    or the new one, and re-running a date never duplicates. Data only: no DDL touches ``table``
    (the staging table is this session's own), so the strongest lock taken on it is ROW EXCLUSIVE
    and readers never wait (tests/e2e/test_publish_concurrency.py).
    """
    if "run_date" not in frame.columns or (frame["run_date"] != run_date).any():
        raise ValueError(f"every row published to {table} must carry run_date={run_date}")
    frame = withheld_rows(conn, table, frame, run_date)  # consent and do_not_profile (revopt.platform.privacy)
    target = qualified(table)
    stage_name = "_stage_" + table.replace(".", "_")
    stage = qualified(stage_name)
    with conn.transaction():
        conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(stage, target))
        copy_frame(conn, stage_name, frame)
        deleted = conn.execute(sql.SQL("DELETE FROM {} WHERE run_date = %s").format(target), (run_date,)).rowcount
        conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(target, stage))
        conn.execute(sql.SQL("DROP TABLE {}").format(stage))
    logger.info("published %d rows to %s for %s (replaced %d)", len(frame), table, run_date, deleted)
    return len(frame)
