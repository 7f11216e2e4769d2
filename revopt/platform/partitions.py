"""Published tables partitioned by run date: names, the catalog, and retention (migration 0012; docs/scale.md).

A partitioned ``scores.<table>`` has one partition per run date, ``scores_partitions.<table>__p<yyyymmdd>``
(``FOR VALUES FROM (D) TO (D + 1)``), and possibly ``<table>__legacy`` (``FROM (MINVALUE) TO (...)``: the rows
published before the table was partitioned). A run date being staged by N slices
(:func:`revopt.platform.postgres.stage_slice`) is ``<table>__stage<yyyymmdd>``, not attached. Schema
``scores_partitions`` is not granted to the read-only role: readers read the parent.

Retention (:func:`drop_partitions_before`) runs outside any publish transaction: ``DETACH PARTITION ...
CONCURRENTLY`` (SHARE UPDATE EXCLUSIVE on the parent: no reader or writer waits; it cannot run in a transaction
block) then ``DROP TABLE``. An interrupted DETACH CONCURRENTLY leaves the partition "pending detach", and a parent
may have only one: the next retention run finalizes it first.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

PARTITION_SCHEMA = "scores_partitions"
_BOUND = re.compile(r"FROM \((MINVALUE|'([0-9-]+)')\) TO \((MAXVALUE|'([0-9-]+)')\)")


@dataclass(frozen=True)
class Partition:
    """One partition of a table partitioned by run date: run dates in [lower, upper) (None: unbounded)."""

    name: str  # schema-qualified
    lower: dt.date | None
    upper: dt.date | None
    detach_pending: bool = False

    def holds(self, run_date: dt.date) -> bool:
        return (self.lower is None or self.lower <= run_date) and (self.upper is None or run_date < self.upper)


def ident(name: str) -> sql.Identifier:
    """``schema.table`` (or ``table``) as a quoted identifier."""
    return sql.Identifier(*name.split("."))


def partition_name(table: str, run_date: dt.date) -> str:
    """The partition holding ``run_date`` of ``scores.<table>``: ``scores_partitions.<table>__p<yyyymmdd>``."""
    return f"{PARTITION_SCHEMA}.{table.split('.')[-1]}__p{run_date:%Y%m%d}"


def staging_name(table: str, run_date: dt.date) -> str:
    """Where the slices of ``run_date`` are staged before :func:`revopt.platform.postgres.publish_staged`."""
    return f"{PARTITION_SCHEMA}.{table.split('.')[-1]}__stage{run_date:%Y%m%d}"


def is_partitioned(conn: psycopg.Connection, table: str) -> bool:
    return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = %s::regclass)",
                             (ident(table).as_string(conn),)).fetchone()[0])


def table_exists(conn: psycopg.Connection, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (ident(table).as_string(conn),)).fetchone()[0]


def partitioned_tables(conn: psycopg.Connection, schema: str = "scores") -> list[str]:
    """Every partitioned table of ``schema``, schema-qualified."""
    rows = conn.execute("SELECT n.nspname || '.' || c.relname FROM pg_partitioned_table AS p JOIN pg_class AS c "
                        "ON c.oid = p.partrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = %s "
                        "ORDER BY 1", (schema,)).fetchall()
    return [name for (name,) in rows]


def partitions(conn: psycopg.Connection, table: str) -> list[Partition]:
    """``table``'s partitions with their run-date ranges, oldest first (pending detaches included)."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname, pg_get_expr(c.relpartbound, c.oid), i.inhdetachpending "
        "FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE i.inhparent = %s::regclass", (ident(table).as_string(conn),)).fetchall()
    found = []
    for name, bound, pending in rows:
        match = _BOUND.search(bound or "")
        if match is None:
            raise ValueError(f"{table}: partition {name} is not a run-date range ({bound})")
        lower, upper = (dt.date.fromisoformat(value) if value else None for value in (match.group(2), match.group(4)))
        found.append(Partition(name, lower, upper, bool(pending)))
    return sorted(found, key=lambda part: (part.lower or dt.date.min))


def primary_key(conn: psycopg.Connection, table: str) -> list[str]:
    """``table``'s primary-key columns, in key order."""
    rows = conn.execute(
        "SELECT a.attname FROM pg_index AS i JOIN pg_attribute AS a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY (i.indkey::int2[]) WHERE i.indrelid = %s::regclass AND i.indisprimary "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)", (ident(table).as_string(conn),)).fetchall()
    return [name for (name,) in rows]


def drop_partitions_before(conn: psycopg.Connection, table: str, cutoff: dt.date) -> dict[str, int]:
    """Drop ``table``'s run dates before ``cutoff``: partitions entirely older are detached CONCURRENTLY and
    dropped, older rows of a partition straddling it (the legacy one) deleted, and run-date tables a stopped run
    detached but did not drop are dropped. ``conn`` must be in autocommit
    mode (DETACH ... CONCURRENTLY runs outside a transaction block). Returns partitions dropped, rows deleted."""
    if not conn.autocommit:
        raise ValueError("drop_partitions_before needs an autocommit connection (DETACH ... CONCURRENTLY)")
    parent = ident(table)
    dropped = deleted = 0
    for part in partitions(conn, table):
        old = part.upper is not None and part.upper <= cutoff
        if part.detach_pending:  # an interrupted retention run: only one may be pending per parent
            conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} FINALIZE").format(parent, ident(part.name)))
            if not old:
                logger.warning("%s: finalized the pending detach of %s, which is not older than %s: left detached",
                               table, part.name, cutoff)
                continue
        elif old:
            conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(parent, ident(part.name)))
        if old:
            conn.execute(sql.SQL("DROP TABLE {}").format(ident(part.name)))
            dropped += 1
        elif part.lower is None or part.lower < cutoff:
            deleted += conn.execute(sql.SQL("DELETE FROM {} WHERE run_date < %s").format(ident(part.name)),
                                    (cutoff,)).rowcount
    for name, day in _detached(conn, table):  # a retention run stopped between its DETACH and its DROP
        if day < cutoff:
            conn.execute(sql.SQL("DROP TABLE {}").format(ident(name)))
            dropped += 1
    if dropped or deleted:
        logger.info("%s: run dates before %s removed (%d partitions dropped, %d rows deleted)", table, cutoff,
                    dropped, deleted)
    return {"partitions_dropped": dropped, "rows_deleted": deleted}


def _detached(conn: psycopg.Connection, table: str) -> list[tuple[str, dt.date]]:
    """Run-date partitions of ``table`` (by name) that are attached to nothing, with their run dates."""
    prefix = table.split(".")[-1] + "__p"
    rows = conn.execute(
        "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = %s "
        "AND c.relkind = 'r' AND starts_with(c.relname, %s) AND NOT EXISTS "
        "(SELECT 1 FROM pg_inherits AS i WHERE i.inhrelid = c.oid)", (PARTITION_SCHEMA, prefix)).fetchall()
    found = []
    for (name,) in rows:
        suffix = name[len(prefix):]
        if len(suffix) == 8 and suffix.isdigit():
            found.append((f"{PARTITION_SCHEMA}.{name}", dt.datetime.strptime(suffix, "%Y%m%d").date()))
    return found
