"""PostgreSQL helpers: COPY loads (binary, or CSV), reads into pandas and atomic publishing of a run date."""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pa_compute
import pyarrow.csv as pa_csv
from psycopg import sql

from revopt.platform.binary_copy import Unencodable, binary_copy_chunks, column_types, session_in_utc
from revopt.platform.events import validate_identifier
from revopt.platform.partitions import (ident, is_partitioned, partition_name, partitions, primary_key, staging_name,
                                        table_exists)
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


#: PostgreSQL result types (OIDs) :func:`read_large_frame` reads through Arrow's CSV parser, as Arrow types
_COPY_READ_TYPES = {
    16: pa.bool_(), 20: pa.int64(), 21: pa.int64(), 23: pa.int64(), 700: pa.float64(), 701: pa.float64(),
    1700: pa.float64(), 25: pa.string(), 1043: pa.string(), 1042: pa.string(), 19: pa.string(),
    1082: pa.date32(), 1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC"),
}


def read_large_frame(conn: psycopg.Connection, query: str,
                     params: dict[str, Any] | Sequence[Any] | None = None) -> pd.DataFrame:
    """:func:`read_frame` for results of millions of rows: the rows come as a CSV ``COPY`` of the query, parsed by
    Arrow with each column's PostgreSQL type, instead of a Python object per value (at a million customers the
    orders and their lines took 23 s and 34 s, and several GB, that way; docs/scale.md).

    The frame is what :func:`read_frame` gives, but for ``numeric`` columns: integers (float64 with NaN where a value
    is NULL), floats as float64, booleans (object with None where NULL), text as str with None for NULL (an empty
    string stays empty), dates as ``datetime.date``, timestamps in nanoseconds (UTC with a time zone). A ``numeric``
    arrives as float64 (correctly rounded), where :func:`read_frame` gives ``Decimal`` objects: read it here only
    when the caller casts it to float anyway. A result with any other column type is read by :func:`read_frame`."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(sql.SQL(query)), params)
        described = [(d.name, d.type_code) for d in cur.description or ()]
    if not described or any(oid not in _COPY_READ_TYPES for _, oid in described):
        return read_frame(conn, query, params)
    names = [name for name, _ in described]
    buffer = io.BytesIO()
    with conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(sql.SQL(query)), params) as copy:
            for chunk in copy:
                buffer.write(chunk)
    if not buffer.tell():  # no rows: what read_frame gives
        return pd.DataFrame(columns=names)
    buffer.seek(0)
    table = pa_csv.read_csv(
        buffer,
        read_options=pa_csv.ReadOptions(column_names=[f"c{i}" for i in range(len(names))]),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={f"c{i}": _COPY_READ_TYPES[oid] for i, (_, oid) in enumerate(described)},
            null_values=[""], true_values=["t"], false_values=["f"],
            strings_can_be_null=True, quoted_strings_can_be_null=False))
    del buffer
    frame = table.to_pandas(date_as_object=True, coerce_temporal_nanoseconds=True)
    frame.columns = names
    return frame


class PublishRejected(ValueError):
    """A publish refused by the database (a duplicate or NULL key, a row of another run date, a NOT NULL or
    type violation): nothing was published and the previous output stays. The message names the table, the run
    date and what the server said (the column, or the key and its duplicated value)."""


@contextmanager
def _rejections(table: str, run_date: dt.date) -> Iterator[None]:
    try:
        yield
    except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
        detail = f" ({exc.diag.message_detail})" if exc.diag.message_detail else ""
        raise PublishRejected(f"{table}, run_date {run_date}: {exc.diag.message_primary}{detail}; nothing was "
                              f"published, the previous output stays") from exc


def copy_rows(conn: psycopg.Connection, table: str, frame: pd.DataFrame) -> int:
    """Append ``frame`` to ``table`` with a binary COPY (:mod:`revopt.platform.binary_copy`), or with
    :func:`copy_frame`'s CSV when the encoder cannot write a column exactly as the CSV would. Returns rows."""
    try:
        chunks = binary_copy_chunks(frame, column_types(conn, table), naive_is_utc=session_in_utc(conn))
    except Unencodable as exc:
        logger.info("COPY into %s as CSV: %s", table, exc)
        return copy_frame(conn, table, frame)
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary)").format(
        qualified(table), sql.SQL(", ").join(sql.Identifier(validate_identifier(c)) for c in frame.columns))
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for chunk in chunks:
            copy.write(chunk)
    return len(frame)


def _require_run_date(table: str, run_date: dt.date, frame: pd.DataFrame) -> None:
    if "run_date" not in frame.columns or (frame["run_date"] != run_date).any():
        raise ValueError(f"every row published to {table} must carry run_date={run_date}")


def publish_partition(conn: psycopg.Connection, table: str, run_date: dt.date, frame: pd.DataFrame) -> int:
    """Replace ``table``'s rows for ``run_date`` with ``frame`` in one transaction. Returns rows published.

    Readers see either the previous complete run or the new one, never wait, and re-running a date never
    duplicates (tests/e2e/test_publish_concurrency.py, test_storage.py):

    - a table partitioned by run date (migration 0012), a **new run date**: a standalone table
      (``scores_partitions.<table>__p<yyyymmdd>``, with a ``CHECK`` of the run date) is loaded with a binary
      COPY, gets its primary key and statistics, and is ATTACHed as the date's partition. Nobody sees the table
      before the commit; ATTACH takes SHARE UPDATE EXCLUSIVE on the parent, which no read or write waits for.
      Publishing is no longer data only: it creates and attaches a partition (docs/scale.md, "Publishing");
    - a **run date already published** (a re-run, or a date of the legacy partition): DELETE + binary COPY
      through the parent (ROW EXCLUSIVE only);
    - a **plain table**: COPY into a temporary stage, then DELETE + INSERT (data only, ROW EXCLUSIVE).

    Bad rows (a duplicate or NULL key, another run date, a NOT NULL violation) raise :class:`PublishRejected`
    (or ValueError for another run date, before anything runs) and nothing changes. Equivalent to
    :func:`discard_staged`, :func:`stage_slice` of the whole frame and :func:`publish_staged`, done the cheapest
    way (one write of each row, no staging table committed)."""
    _require_run_date(table, run_date, frame)
    frame = withheld_rows(conn, table, frame, run_date)  # consent and do_not_profile (revopt.platform.privacy)
    with _rejections(table, run_date):
        if not is_partitioned(conn, table):
            deleted = _replace_staged_in_temp(conn, table, run_date, frame)
        elif _published_range(conn, table, run_date) is not None:
            with conn.transaction():
                deleted = _delete(conn, table, run_date)
                copy_rows(conn, table, frame)
        else:
            part = partition_name(table, run_date)
            with conn.transaction():
                _drop_leftovers(conn, table, run_date)
                _create_standalone(conn, table, run_date, part)
                copy_rows(conn, part, frame)
                _attach(conn, table, run_date, part)
            deleted = 0
    logger.info("published %d rows to %s for %s (replaced %d)", len(frame), table, run_date, deleted)
    return len(frame)


def discard_staged(conn: psycopg.Connection, table: str, run_date: dt.date) -> None:
    """Start ``table``'s staging of ``run_date`` afresh, once before the slices are staged: drop what an earlier,
    failed attempt left, and create the empty staging table, so that N slices COPY into it at once without one
    waiting for another's CREATE. Commits with the caller's transaction; nothing published is touched."""
    with conn.transaction():
        _drop_leftovers(conn, table, run_date)
        _create_standalone(conn, table, run_date, staging_name(table, run_date))


def _drop_leftovers(conn: psycopg.Connection, table: str, run_date: dt.date) -> None:
    for name in (staging_name(table, run_date), partition_name(table, run_date)):
        if table_exists(conn, name) and not _attached(conn, name):
            conn.execute(sql.SQL("DROP TABLE {}").format(ident(name)))


def stage_slice(conn: psycopg.Connection, table: str, run_date: dt.date, slice_frame: pd.DataFrame) -> int:
    """COPY one slice of ``run_date``'s rows (e.g. one customer-hash partition) into the run date's staging
    table, committed and invisible to readers (schema ``scores_partitions``), so N processes can each add a
    slice; :func:`publish_staged` then publishes them all at once. Call :func:`discard_staged` before the first
    slice. Rows of another run date or with a NULL key fail here; duplicates across slices in
    :func:`publish_staged`. Returns the rows staged (after the privacy filter).

    Given an idle connection, the slice is committed here; inside a transaction the caller has open, it commits
    with it (a task's connection commits when it closes). Without :func:`discard_staged` first, the first slice
    creates the staging table, and concurrent first slices wait for its transaction to end."""
    _require_run_date(table, run_date, slice_frame)
    stage = staging_name(table, run_date)
    with conn.transaction():
        if not table_exists(conn, stage):
            # two first slices at once: the second waits here for the first's CREATE, then finds the table
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (stage,))
            if not table_exists(conn, stage):
                _create_standalone(conn, table, run_date, stage)
    with _rejections(table, run_date), conn.transaction():
        frame = withheld_rows(conn, table, slice_frame, run_date)
        copy_rows(conn, stage, frame)
    return len(frame)


def publish_staged(conn: psycopg.Connection, table: str, run_date: dt.date) -> int:
    """Publish the slices staged for ``run_date`` as ``table``'s rows for that date, in one transaction, then drop
    the staging table. A new date of a partitioned table: the staging table gets the primary key and is
    ATTACHed; otherwise DELETE + INSERT ... SELECT. A duplicate key across slices fails before anything is
    visible (:class:`PublishRejected`). Returns rows published."""
    stage = staging_name(table, run_date)
    if not table_exists(conn, stage):
        raise ValueError(f"{table}, run_date {run_date}: nothing staged ({stage} does not exist); "
                         "stage_slice first")
    with _rejections(table, run_date), conn.transaction():
        if is_partitioned(conn, table) and _published_range(conn, table, run_date) is None:
            part = partition_name(table, run_date)
            conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(ident(stage), sql.Identifier(part.split(".")[1])))
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(part))).fetchone()[0]
            _attach(conn, table, run_date, part)
            deleted = 0
        else:
            deleted = _delete(conn, table, run_date)
            rows = conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(qualified(table), ident(stage))).rowcount
            conn.execute(sql.SQL("DROP TABLE {}").format(ident(stage)))
    logger.info("published %d staged rows to %s for %s (replaced %d)", rows, table, run_date, deleted)
    return rows


def _delete(conn: psycopg.Connection, table: str, run_date: dt.date) -> int:
    return conn.execute(sql.SQL("DELETE FROM {} WHERE run_date = %s").format(qualified(table)), (run_date,)).rowcount


def _replace_staged_in_temp(conn: psycopg.Connection, table: str, run_date: dt.date, frame: pd.DataFrame) -> int:
    """A plain table: COPY into a temporary stage (this session's own), then DELETE + INSERT, one transaction;
    data only, so the strongest lock on ``table`` is ROW EXCLUSIVE."""
    stage_name = "_stage_" + table.replace(".", "_")
    stage = qualified(stage_name)
    with conn.transaction():
        conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(stage, qualified(table)))
        copy_rows(conn, stage_name, frame)
        deleted = _delete(conn, table, run_date)
        conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(qualified(table), stage))
        conn.execute(sql.SQL("DROP TABLE {}").format(stage))
    return deleted


def _published_range(conn: psycopg.Connection, table: str, run_date: dt.date) -> str | None:
    """The attached partition already holding ``run_date`` (its own, or the legacy one), or None (a new date)."""
    return next((part.name for part in partitions(conn, table) if part.holds(run_date)), None)


def _attached(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = %s::regclass)",
                        (ident(name).as_string(conn),)).fetchone()[0]


def _create_standalone(conn: psycopg.Connection, table: str, run_date: dt.date, name: str) -> None:
    """A table shaped like ``table`` (columns, defaults, NOT NULL and CHECK constraints), holding ``run_date``
    only: the CHECK is the partition's range, so a wrong row fails its COPY and ATTACH needs no scan."""
    bare = name.split(".")[1]
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, CONSTRAINT {} "
                         "CHECK (run_date >= {} AND run_date < {}))").format(
        ident(name), qualified(table), sql.Identifier(f"{bare}_run_date"), sql.Literal(run_date),
        sql.Literal(run_date + dt.timedelta(days=1))))


def _attach(conn: psycopg.Connection, table: str, run_date: dt.date, part: str) -> None:
    """Primary key (one index build after the load; a duplicate or NULL key fails here), statistics, ATTACH."""
    key = primary_key(conn, table)
    if key:
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(ident(part), sql.SQL(", ").join(map(sql.Identifier, key))))
    conn.execute(sql.SQL("ANALYZE {}").format(ident(part)))
    conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
        qualified(table), ident(part), sql.Literal(run_date), sql.Literal(run_date + dt.timedelta(days=1))))
