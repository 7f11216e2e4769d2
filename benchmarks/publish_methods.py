"""Benchmark (spike for issue 22 item 4): ways to publish a night's ``scores.customer_scores``, side by side.

Starts a fresh embedded PostgreSQL under a temporary ``REVOPT_HOME`` (like ``benchmarks/scale.py``),
applies revopt's migrations, builds N rows shaped like ``scores.customer_scores`` (every column of
the migrated table, filled by its type; ``top_factors`` a ~2 KB JSON per row like the three
families' top-3 factors of ``ml.families.explain.top_factors``, numbers varying per row) and, in one
run, measures:

- **the raw limit**: ``COPY FROM STDIN`` of the same rows already serialised (CSV bytes written by
  ``revopt.platform.postgres``'s Arrow writer; binary bytes from the encoder below) into a plain
  table shaped like the published one (primary key included), no staging, nothing else; and into
  an UNLOGGED table without index, for reference;
- **today's** ``publish_partition`` (CSV COPY into a temp stage + DELETE + INSERT ... SELECT);
- **binary COPY**: the same staged publish fed by psycopg's ``write_row`` loop (``set_types``), by
  a vectorised encoder of PostgreSQL's binary COPY format built on Arrow compute (below), and by
  ADBC's ``adbc_ingest`` (``adbc-driver-postgresql``, optional: ``--adbc-path`` or installed); also
  the vectorised binary COPY straight into the table after the DELETE (no stage);
- **a table partitioned by run date** (``PARTITION BY LIST (run_date)``): the publish COPYs into a
  fresh standalone table, adds its primary key and a ``CHECK (run_date = D)`` (so ATTACH skips the
  validation scan) and ATTACHes it; a re-run of the same date swaps it with DETACH + ATTACH in one
  transaction, or DETACH CONCURRENTLY then ATTACH, or keeps DELETE + INSERT through the parent;
  retention detaches the oldest partition CONCURRENTLY and drops it.

During every publish a reader (its own connection, ``statement_timeout`` 1 s) loops on the table's
``_latest`` view (``max(run_date)`` probe, then ``count(*)`` of the latest run date) and a monitor
samples the table-level locks the publisher holds. Reported per method: rows/s, ratio to the raw
limit (the faster of raw CSV and raw binary into the plain table), the reader's longest probe,
whether every read saw the complete old or the complete new state, and the strongest lock on the
published table.

Why a hand-written binary encoder: psycopg's binary ``write_row`` is a Python loop per row (and
ADBC is not a project dependency); the encoder here builds each column's ``<int32 length><bytes>``
fields as Arrow binary arrays and joins them per row with ``binary_join_element_wise``, so no
Python code runs per row.

    .venv/bin/python benchmarks/publish_methods.py --rows 200000
    PYTHONPATH=/tmp/adbc .venv/bin/python benchmarks/publish_methods.py          # 1,000,000 rows, with ADBC
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import resource
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TABLE = "customer_scores"
PLAIN, PARTED, RAW = "bench_plain", "bench_parted", "bench_raw"
DAY0 = dt.date(2025, 6, 1)
CHUNK_ROWS = 100_000
LOCK_STRENGTH = ["AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
                 "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"]

# --- the rows -------------------------------------------------------------------------------------

_FACTOR = ('{{"feature":"{f}","label":"{label}","unit":"{unit}","value":{v:.2f},"contribution":{c:.2f},'
           '"contribution_link":{l:.4f},"sentence":"{v:.0f} {label} in the last 30 days {verb} {what} by {c:.1f} {unit2}"}}')
_FEATURES = [("sessions_30d", "sessions", "sessions"), ("days_since_last_order", "days since the last order", "days"),
             ("orders_90d", "orders", "orders"), ("email_clicks_30d", "email clicks", "clicks"),
             ("discount_share", "share of spend on discount", "share"), ("add_to_carts_30d", "add-to-carts", "events"),
             ("avg_order_value", "average order value", "EUR"), ("product_views_30d", "product views", "views"),
             ("email_opens_30d", "email opens", "opens")]
_FAMILIES = [("purchase_propensity", "the purchase probability", "points"), ("churn_risk", "the churn risk", "points"),
             ("clv", "expected 90-day spend", "EUR")]


def _top_factors_template() -> str:
    """One row's JSON with %-slots for its 27 numbers: 3 families x 3 factors, like today's top_factors."""
    families = []
    for position, (family, what, unit2) in enumerate(_FAMILIES):
        factors = []
        for k in range(3):
            feature, label, unit = _FEATURES[(3 * position + k) % len(_FEATURES)]
            factors.append(_FACTOR.format(f=feature, label=label, unit=unit, v=111.0, c=222.0, l=333.0,
                                          verb="raises" if k % 2 == 0 else "lowers", what=what, unit2=unit2)
                           .replace("111.00", "%.2f").replace("222.00", "%.2f").replace("333.0000", "%.4f")
                           .replace("111 ", "%.0f ").replace("222.0", "%.1f"))
        families.append(f'"{family}":[{",".join(factors)}]')
    return "{" + ",".join(families) + "}"


def _top_factors(n: int, rng: np.random.Generator) -> np.ndarray:
    template = _top_factors_template()
    slots = template.count("%")
    numbers = rng.random((n, slots)) * 100
    return np.array([template % tuple(row) for row in numbers.tolist()], dtype=object)


def scores_frame(columns: list[tuple[str, str]], n: int, run_date: dt.date, seed: int = 7) -> pd.DataFrame:
    """``n`` rows of a customer_scores-shaped table, every column filled by its name and type."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for name, kind in columns:
        if kind == "date":
            data[name] = np.full(n, run_date)
        elif name == "customer_id":
            data[name] = np.arange(1, n + 1, dtype="int64") + 10**12  # no store customer: the consent guard keeps all
        elif kind in ("bigint", "integer", "smallint"):
            data[name] = rng.integers(0, 24, n)
        elif kind == "double precision":
            values = rng.random(n)
            if name != "purchase_propensity":
                values[rng.random(n) < 0.4] = np.nan  # e.g. churn_risk: NULL for customers not active
            data[name] = values
        elif kind == "boolean":
            data[name] = rng.random(n) < 0.5
        elif kind == "jsonb":
            data[name] = _top_factors(n, rng)
        elif name.endswith("_version"):
            data[name] = np.full(n, "12", dtype=object)
        elif name.endswith("_model"):
            data[name] = np.full(n, f"customer_{name.removesuffix('_model')}", dtype=object)
        elif name == "value_tier":
            data[name] = np.array(["high", "medium", "low"], dtype=object)[rng.integers(0, 3, n)]
        else:  # experiment_id, variant: mostly NULL
            data[name] = np.where(rng.random(n) < 0.1, "exp_a", None).astype(object)
    return pd.DataFrame(data)


# --- PostgreSQL binary COPY, vectorised -----------------------------------------------------------

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)
_NULL_FIELD = pa.scalar(b"\xff\xff\xff\xff", pa.binary())
_EMPTY = pa.scalar(b"", pa.binary())
_PG_EPOCH = np.datetime64("2000-01-01", "D")
_FIXED = {"date": ">i4", "bigint": ">i8", "integer": ">i4", "smallint": ">i2", "double precision": ">f8", "boolean": "?"}


def _fixed_fields(values: np.ndarray, null: np.ndarray | None, big_endian: str) -> pa.Array:
    """``<int32 size><value>`` per row (``-1`` alone for NULL), as an Arrow binary array."""
    size = np.dtype(big_endian).itemsize
    packed = np.empty(len(values), dtype=[("length", ">i4"), ("value", big_endian)])
    packed["length"] = size
    packed["value"] = values
    fields = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 + size), len(values), [None, pa.py_buffer(packed)])
    fields = fields.cast(pa.binary())
    if null is not None and null.any():
        fields = pc.if_else(pa.array(null), _NULL_FIELD, fields)
    return fields


def _varlena_fields(values: pa.Array, prefix: bytes = b"") -> pa.Array:
    """``<int32 size><prefix><bytes>`` per row (``-1`` alone for NULL); prefix: jsonb's version byte."""
    values = values.cast(pa.binary())
    lengths = (pc.fill_null(pc.binary_length(values), 0).to_numpy() + len(prefix)).astype(">i4")
    heads = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4), len(values), [None, pa.py_buffer(lengths)]).cast(pa.binary())
    parts = [heads, *([pa.scalar(prefix, pa.binary())] if prefix else []), values]
    fields = pc.binary_join_element_wise(*parts, _EMPTY)
    if values.null_count:
        fields = pc.if_else(pc.is_null(values), _NULL_FIELD, fields)
    return fields


def _column_fields(series: pd.Series, kind: str) -> pa.Array:
    if kind in _FIXED:
        values = series.to_numpy()
        if kind == "date":
            days = (pd.to_datetime(series).to_numpy().astype("datetime64[D]") - _PG_EPOCH).astype("int64")
            return _fixed_fields(days, series.isna().to_numpy(), ">i4")
        if kind == "double precision":
            values = values.astype("float64")
            return _fixed_fields(values, np.isnan(values), ">f8")
        return _fixed_fields(values, series.isna().to_numpy(), _FIXED[kind])
    text = pa.array(series, type=pa.string(), from_pandas=True)
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)  # like copy_frame: "" is NULL
    return _varlena_fields(text, b"\x01" if kind == "jsonb" else b"")


def binary_copy_chunks(frame: pd.DataFrame, kinds: dict[str, str], chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.Buffer]:
    """``frame`` in PostgreSQL's binary COPY format (header, tuples, trailer), ``chunk_rows`` tuples a buffer."""
    yield pa.py_buffer(_HEADER)
    count = pa.scalar(struct.pack("!h", len(frame.columns)), pa.binary())
    for start in range(0, len(frame), chunk_rows):
        chunk = frame.iloc[start : start + chunk_rows]
        fields = [_column_fields(chunk[name], kinds[name]) for name in frame.columns]
        rows = pc.binary_join_element_wise(count, *fields, _EMPTY)
        end = int(np.frombuffer(rows.buffers()[1], dtype=np.int32, count=len(rows) + 1, offset=4 * rows.offset)[-1])
        yield rows.buffers()[2].slice(0, end)
    yield pa.py_buffer(_TRAILER)


def _copy_statement(table: str, columns: list[str], form: str) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT {})").format(
        sql.Identifier(*table.split(".")), sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(form))


def copy_binary(conn: psycopg.Connection, table: str, frame: pd.DataFrame, kinds: dict[str, str]) -> int:
    with conn.cursor() as cur, cur.copy(_copy_statement(table, list(frame.columns), "binary")) as copy:
        for buffer in binary_copy_chunks(frame, kinds):
            copy.write(buffer)
    return len(frame)


def copy_serialised(conn: psycopg.Connection, table: str, columns: list[str], chunks: list, form: str) -> None:
    with conn.cursor() as cur, cur.copy(_copy_statement(table, columns, form)) as copy:
        for chunk in chunks:
            copy.write(chunk)


_PG_TYPES = {"date": "date", "bigint": "int8", "integer": "int4", "smallint": "int2", "double precision": "float8",
             "boolean": "bool", "text": "text", "jsonb": "jsonb"}


def copy_write_row(conn: psycopg.Connection, table: str, frame: pd.DataFrame, kinds: dict[str, str]) -> int:
    """psycopg's binary COPY, one ``write_row`` per row (NaN and "" as NULL, like copy_frame)."""
    objects = frame.astype(object).where(frame.notna(), None).replace({"": None})
    with conn.cursor() as cur, cur.copy(_copy_statement(table, list(frame.columns), "binary")) as copy:
        copy.set_types([_PG_TYPES[kinds[c]] for c in frame.columns])
        for row in objects.itertuples(index=False, name=None):
            copy.write_row(row)
    return len(frame)


# --- publish methods ------------------------------------------------------------------------------

#: Table-level lock modes this module's publishers held on a ``customer_scores`` table at the end of their
#: transactions (exact, where the lock monitor's sampling can miss a lock held for milliseconds).
HELD: set[str] = set()


def _note_locks(conn: psycopg.Connection) -> None:
    HELD.update(mode for (mode,) in conn.execute(
        "SELECT l.mode FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation WHERE l.pid = pg_backend_pid() "
        "AND l.locktype = 'relation' AND c.relname = %s AND l.granted", (TABLE,)).fetchall())


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split("."))


def staged_publish(conn: psycopg.Connection, table: str, run_date: dt.date, frame: pd.DataFrame,
                   load: Callable[[psycopg.Connection, str, pd.DataFrame], int]) -> int:
    """publish_partition's design (privacy filter, temp stage, DELETE + INSERT in one transaction), any loader."""
    from revopt.platform.privacy import withheld_rows

    frame = withheld_rows(conn, table, frame, run_date)
    stage = "_stage_" + table.replace(".", "_")
    with conn.transaction():
        conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(_ident(stage), _ident(table)))
        load(conn, stage, frame)
        conn.execute(sql.SQL("DELETE FROM {} WHERE run_date = %s").format(_ident(table)), (run_date,))
        conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(_ident(table), _ident(stage)))
        conn.execute(sql.SQL("DROP TABLE {}").format(_ident(stage)))
        _note_locks(conn)
    return len(frame)


def direct_publish(conn: psycopg.Connection, table: str, run_date: dt.date, frame: pd.DataFrame,
                   kinds: dict[str, str]) -> int:
    """DELETE the run date, then binary COPY straight into the table, one transaction (no stage)."""
    from revopt.platform.privacy import withheld_rows

    frame = withheld_rows(conn, table, frame, run_date)
    with conn.transaction():
        conn.execute(sql.SQL("DELETE FROM {} WHERE run_date = %s").format(_ident(table)), (run_date,))
        copy_binary(conn, table, frame, kinds)
        _note_locks(conn)
    return len(frame)


def adbc_publish(url: str, table: str, run_date: dt.date, frame: pd.DataFrame) -> int:
    """ADBC: adbc_ingest into a temp table (created by ADBC: text for jsonb), then DELETE + INSERT ... SELECT."""
    import adbc_driver_postgresql.dbapi as adbc

    columns = list(frame.columns)
    arrow = pa.Table.from_pandas(frame, preserve_index=False)  # NaN -> null
    stage = "_adbc_stage"
    select = sql.SQL(", ").join(
        sql.SQL("{}::jsonb").format(sql.Identifier(c)) if c == "top_factors" else sql.Identifier(c) for c in columns)
    with adbc.connect(url) as conn, conn.cursor() as cur:
        cur.adbc_ingest(stage, arrow, mode="create", temporary=True)
        cur.execute(sql.SQL("DELETE FROM {} WHERE run_date = '{}'").format(_ident(table), sql.SQL(run_date.isoformat()))
                    .as_string(None))
        cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
            _ident(table), sql.SQL(", ").join(map(sql.Identifier, columns)), select, sql.Identifier(stage)).as_string(None))
        cur.execute(f"DROP TABLE {stage}")
        conn.commit()
    return len(frame)


def _partition_name(run_date: dt.date, version: int) -> str:
    return f"{PARTED}.{TABLE}_{run_date:%Y%m%d}_v{version}"


def attach_publish(conn: psycopg.Connection, run_date: dt.date, frame: pd.DataFrame, kinds: dict[str, str],
                   version: int, replace: str | None = None, old: str | None = None) -> int:
    """Load a standalone table (binary COPY, then primary key and CHECK), then ATTACH it as ``run_date``'s partition.

    ``replace``: None (a new run date), ``"detach"`` (DETACH the old partition and ATTACH the new one in the
    load's transaction) or ``"concurrently"`` (load and commit; DETACH ... CONCURRENTLY; ATTACH)."""
    parent, part = f"{PARTED}.{TABLE}", _partition_name(run_date, version)
    check = sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (run_date, customer_id), ADD CONSTRAINT {} CHECK (run_date = {})").format(
        _ident(part), sql.Identifier(f"{TABLE}_{run_date:%Y%m%d}_v{version}_run_date"), sql.Literal(run_date))
    attach = sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
        _ident(parent), _ident(part), sql.Literal(run_date))
    with conn.transaction():
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(_ident(part), _ident(parent)))
        copy_binary(conn, part, frame, kinds)
        conn.execute(check)
        if replace == "detach":
            conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(_ident(parent), _ident(old)))
        if replace != "concurrently":
            conn.execute(attach)
        _note_locks(conn)
    if replace == "concurrently":
        conn.autocommit = True
        try:
            conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(_ident(parent), _ident(old)))
            conn.execute(attach)
        finally:
            conn.autocommit = False
    if old is not None:
        with conn.transaction():
            conn.execute(sql.SQL("DROP TABLE {}").format(_ident(old)))
    return len(frame)


def detach_oldest(conn: psycopg.Connection, partition: str) -> int:
    """Retention: DETACH ... CONCURRENTLY (SHARE UPDATE EXCLUSIVE on the parent), then DROP the detached table."""
    conn.autocommit = True
    try:
        conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(
            _ident(f"{PARTED}.{TABLE}"), _ident(partition)))
        conn.execute(sql.SQL("DROP TABLE {}").format(_ident(partition)))
    finally:
        conn.autocommit = False
    return 0


# --- readers and locks during a publish -----------------------------------------------------------


class Watch:
    """A reader loop on ``<table>_latest`` and a lock monitor on the publisher, while a publish runs."""

    def __init__(self, url: str, table: str, publisher_app: str, pause: float) -> None:
        self.url, self.table, self.app, self.pause = url, table, publisher_app, pause
        self.stop = threading.Event()
        self.probes: list[Any] = []  # lock probe seconds, or "timeout"
        self.reads: list[tuple[float, Any]] = []  # (read seconds, (max run_date, count) or "timeout")
        self.baseline: list[float] = []  # read seconds before the publish starts
        self.locks: set[str] = set()
        self.threads = [threading.Thread(target=self._read, daemon=True), threading.Thread(target=self._monitor, daemon=True)]

    def state(self) -> tuple[Any, int]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return tuple(conn.execute(sql.SQL("SELECT max(run_date), count(*) FROM {}").format(
                _ident(self.table + "_latest"))).fetchone())

    def __enter__(self) -> Watch:
        HELD.clear()
        self.before = self.state()
        with psycopg.connect(self.url, autocommit=True, options="-c statement_timeout=1000") as conn:
            for _ in range(3):
                began = time.perf_counter()
                self._latest(conn)
                self.baseline.append(time.perf_counter() - began)
        for thread in self.threads:
            thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
        self.after = self.state()

    def _read(self) -> None:
        """Each loop: a lock probe (takes ACCESS SHARE on the table, reads nothing: its time is a lock wait), then
        the read a downstream app makes (``max(run_date), count(*)`` of the ``_latest`` view), timed apart."""
        probe = sql.SQL("SELECT 1 FROM {} WHERE false").format(_ident(self.table))
        with psycopg.connect(self.url, autocommit=True, options="-c statement_timeout=1000") as conn:
            while not self.stop.is_set():
                began = time.perf_counter()
                try:
                    conn.execute(probe).fetchall()
                    waited: Any = time.perf_counter() - began
                except psycopg.errors.QueryCanceled:
                    waited = "timeout"
                self.probes.append(waited)
                began = time.perf_counter()
                state = self._latest(conn)
                self.reads.append((time.perf_counter() - began, state))
                self.stop.wait(self.pause)

    def _latest(self, conn: psycopg.Connection) -> Any:
        try:
            return tuple(conn.execute(sql.SQL("SELECT max(run_date), count(*) FROM {}").format(
                _ident(self.table + "_latest"))).fetchone())
        except psycopg.errors.QueryCanceled:
            return "timeout"

    def _monitor(self) -> None:
        schema = self.table.split(".")[0]
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                rows = conn.execute(
                    "SELECT l.mode, c.relname FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation "
                    "JOIN pg_namespace AS n ON n.oid = c.relnamespace JOIN pg_stat_activity AS a ON a.pid = l.pid "
                    "WHERE l.locktype = 'relation' AND n.nspname = %s AND c.relname = %s AND a.application_name = %s",
                    (schema, TABLE, self.app)).fetchall()
                self.locks.update(mode for mode, _ in rows)
                time.sleep(0.005)

    def summary(self) -> dict[str, Any]:
        expected = {self.before, self.after}
        states = [state for _, state in self.reads]
        odd = sorted({str(s) for s in states if s != "timeout" and s not in expected})
        waits = [w for w in self.probes if w != "timeout"]
        return {
            "reads": len(self.reads),
            "probe_timeouts": self.probes.count("timeout"),
            "reader_max_wait_s": 1.0 if "timeout" in self.probes else round(max(waits, default=0.0), 3),
            "read_timeouts": states.count("timeout"),
            "read_max_s": round(max((w for w, _ in self.reads), default=0.0), 3),
            "read_median_s": round(float(np.median([w for w, _ in self.reads])) if self.reads else 0.0, 3),
            "read_baseline_s": round(float(np.median(self.baseline)), 3),
            "before": str(self.before), "after": str(self.after),
            "odd_states": odd,
            "whole": not odd,
            "strongest_lock": max(self.locks | HELD, key=LOCK_STRENGTH.index) if self.locks | HELD else None,
        }


# --- the run --------------------------------------------------------------------------------------


def _settings(home: str):
    from revopt.platform.config import load_settings

    return load_settings({"REVOPT_HOME": home})


def _connect(url: str, app: str) -> psycopg.Connection:
    return psycopg.connect(url, options="-c TimeZone=UTC", application_name=app)


def _create_tables(url: str) -> None:
    """bench_raw / bench_plain: like scores.customer_scores; bench_parted: the same, partitioned by run date."""
    with psycopg.connect(url, autocommit=True) as conn:
        for schema in (RAW, PLAIN, PARTED):
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {RAW}.{TABLE} (LIKE scores.{TABLE} INCLUDING ALL)")
        conn.execute(f"CREATE UNLOGGED TABLE {RAW}.{TABLE}_unlogged (LIKE scores.{TABLE} INCLUDING DEFAULTS)")
        conn.execute(f"CREATE TABLE {PLAIN}.{TABLE} (LIKE scores.{TABLE} INCLUDING ALL)")
        conn.execute(f"CREATE TABLE {PARTED}.{TABLE} (LIKE scores.{TABLE} INCLUDING DEFAULTS) PARTITION BY LIST (run_date)")
        conn.execute(f"ALTER TABLE {PARTED}.{TABLE} ADD PRIMARY KEY (run_date, customer_id)")
        for schema in (PLAIN, PARTED):  # as migration 0002 defines scores.<table>_latest
            conn.execute(f"CREATE VIEW {schema}.{TABLE}_latest AS SELECT * FROM {schema}.{TABLE} "
                         f"WHERE run_date = (SELECT max(run_date) FROM {schema}.{TABLE})")


def _columns(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'scores' "
                            "AND table_name = %s ORDER BY ordinal_position", (TABLE,)).fetchall()


def _table_bytes(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT pg_total_relation_size(%s::regclass)", (table,)).fetchone()[0]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from revopt.platform.postgres import _csv, publish_partition
    from revopt.platform.schema import migrate
    from revopt.platform.stack import postgres_url, stop_stack

    results: list[dict[str, Any]] = []
    report: dict[str, Any] = {"rows": args.rows, "date": dt.date.today().isoformat(), "results": results,
                              "command": "python benchmarks/publish_methods.py " + " ".join(sys.argv[1:])}
    with tempfile.TemporaryDirectory(prefix="revopt-publish-") as home:
        settings = _settings(home)
        try:
            migrate(settings)
            url = postgres_url(settings)
            with psycopg.connect(url) as conn:
                report["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
            _create_tables(url)
            columns = _columns(url)
            kinds = dict(columns)
            names = [c for c, _ in columns]
            began = time.perf_counter()
            frame = scores_frame(columns, args.rows, DAY0)
            report["frame_seconds"] = round(time.perf_counter() - began, 1)
            report["top_factors_mean_bytes"] = round(float(frame["top_factors"].str.len().mean()))
            report["columns"] = len(columns)
            print(f"{args.rows:,} rows, {len(columns)} columns, top_factors {report['top_factors_mean_bytes']} B/row "
                  f"(built in {report['frame_seconds']} s); PostgreSQL {report['postgres']}", flush=True)

            def dated(day: dt.date, rows: int | None = None) -> pd.DataFrame:
                part = frame if rows is None or rows >= len(frame) else frame.iloc[:rows]
                return part.assign(run_date=day)

            def record(method: str, rows: int, seconds: float, **extra: Any) -> dict[str, Any]:
                entry = {"method": method, "rows": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds),
                         **extra}
                results.append(entry)
                watch = extra.get("watch") or {}
                print(f"  {method}: {seconds:.1f} s, {rows / seconds:,.0f} rows/s"
                      + (f", lock wait max {watch['reader_max_wait_s']} s, read max {watch['read_max_s']} s "
                         f"({watch['read_timeouts']}/{watch['reads']} timed out), whole {watch['whole']}, "
                         f"lock {watch['strongest_lock']}" if watch else ""), flush=True)
                return entry

            # 1. the raw limit: serialised bytes, COPY only (every load must land the same rows)
            checksums: set[tuple[int, int]] = set()
            for form in ("csv", "binary"):
                began = time.perf_counter()
                if form == "csv":
                    chunks = [_csv(frame.iloc[s : s + 200_000]) for s in range(0, len(frame), 200_000)]
                else:
                    chunks = [bytes(b) for b in binary_copy_chunks(frame, kinds)]
                encode = time.perf_counter() - began
                size = sum(len(c) for c in chunks)
                for target, label in ((f"{RAW}.{TABLE}", "plain table with primary key"),
                                      (f"{RAW}.{TABLE}_unlogged", "UNLOGGED, no index")):
                    with _connect(url, "raw") as conn:
                        began = time.perf_counter()
                        copy_serialised(conn, target, names, chunks, form)
                        conn.commit()
                        seconds = time.perf_counter() - began
                        checksums.add(conn.execute(sql.SQL("SELECT count(*), sum(hashtextextended(t::text, 0)) FROM {} AS t")
                                                   .format(_ident(target))).fetchone())
                        conn.execute(sql.SQL("TRUNCATE {}").format(_ident(target)))
                        conn.commit()
                    record(f"raw COPY {form.upper()}, serialised ({label})", len(frame), seconds, raw=True,
                           encode_seconds=round(encode, 2), megabytes=round(size / 2**20), target=label)
                del chunks
            if len(checksums) != 1:
                raise AssertionError(f"CSV and binary COPY landed different rows: {checksums}")
            report["raw_loads_identical"] = True

            def publish(method: str, table: str, rows: int, call: Callable[[], int], **extra: Any) -> dict[str, Any]:
                with Watch(url, table, method[:60], args.reader_pause) as watch:
                    began = time.perf_counter()
                    call()
                    seconds = time.perf_counter() - began
                return record(method, rows, seconds, watch=watch.summary(), **extra)

            def on_plain(method: str, day: dt.date, load: Callable[[psycopg.Connection, pd.DataFrame], int],
                         rows: int | None = None, **extra: Any) -> None:
                published = dated(day, rows)

                def call() -> int:
                    with _connect(url, method[:60]) as conn:
                        n = load(conn, published)
                        conn.commit()
                        return n
                publish(method, f"{PLAIN}.{TABLE}", len(published), call, **extra)

            # preload the previous night (not timed), then each method publishes a new run date
            with _connect(url, "preload") as conn:
                copy_binary(conn, f"{PLAIN}.{TABLE}", dated(DAY0), kinds)
                conn.commit()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"VACUUM ANALYZE {PLAIN}.{TABLE}")
            day = DAY0
            plain = f"{PLAIN}.{TABLE}"

            def next_day() -> dt.date:
                nonlocal day
                day += dt.timedelta(days=1)
                return day

            on_plain("today: publish_partition (CSV stage, DELETE + INSERT), new date", next_day(),
                     lambda conn, f: publish_partition(conn, plain, f["run_date"].iloc[0], f), atomic="y")
            on_plain("today: publish_partition, re-run of the same date", day,
                     lambda conn, f: publish_partition(conn, plain, f["run_date"].iloc[0], f), atomic="y")
            on_plain("binary COPY, vectorised encoder, staged (DELETE + INSERT)", next_day(),
                     lambda conn, f: staged_publish(conn, plain, f["run_date"].iloc[0], f,
                                                    lambda c, t, fr: copy_binary(c, t, fr, kinds)), atomic="y")
            on_plain("binary COPY, vectorised encoder, DELETE + COPY into the table", next_day(),
                     lambda conn, f: direct_publish(conn, plain, f["run_date"].iloc[0], f, kinds), atomic="y")
            on_plain("binary COPY, vectorised, DELETE + COPY, re-run of the same date", day,
                     lambda conn, f: direct_publish(conn, plain, f["run_date"].iloc[0], f, kinds), atomic="y")
            loop_rows = min(args.rows, args.write_row_rows)
            on_plain(f"binary COPY, psycopg write_row loop, staged ({loop_rows:,} rows)", next_day(),
                     lambda conn, f: staged_publish(conn, plain, f["run_date"].iloc[0], f,
                                                    lambda c, t, fr: copy_write_row(c, t, fr, kinds)),
                     rows=loop_rows, atomic="y")
            try:
                import adbc_driver_manager

                importlib.import_module("adbc_driver_postgresql.dbapi")
                report["adbc_version"] = adbc_driver_manager.__version__
            except ImportError:
                report["adbc_version"] = None
                print("  ADBC: adbc-driver-postgresql not importable, skipped (see --help)", flush=True)
            if report["adbc_version"]:
                published = dated(next_day())
                adbc_app = f"ADBC {report['adbc_version']} adbc_ingest (temp table), DELETE + INSERT"[:60]
                publish(f"ADBC {report['adbc_version']} adbc_ingest (temp table), DELETE + INSERT", plain, len(published),
                        lambda: adbc_publish(url + ("&" if "?" in url else "?") + "application_name=" + quote(adbc_app),
                                             plain, published["run_date"].iloc[0], published), atomic="y")

            # 2. partitioned by run date
            parent = f"{PARTED}.{TABLE}"
            with _connect(url, "preload") as conn:
                attach_publish(conn, DAY0, dated(DAY0), kinds, version=1)
                conn.commit()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"VACUUM ANALYZE {parent}")
            partitions = {DAY0: _partition_name(DAY0, 1)}
            new = DAY0 + dt.timedelta(days=1)

            def on_parted(method: str, call: Callable[[psycopg.Connection], int], rows: int, **extra: Any) -> None:
                def run_call() -> int:
                    with _connect(url, method[:60]) as conn:
                        n = call(conn)
                        conn.commit()
                        return n
                publish(method, parent, rows, run_call, **extra)

            on_parted("partitioned: COPY into a new table + ATTACH, new date",
                      lambda conn: attach_publish(conn, new, dated(new), kinds, version=1), args.rows, atomic="y")
            partitions[new] = _partition_name(new, 1)
            on_parted("partitioned: re-run, DETACH + ATTACH in one transaction",
                      lambda conn: attach_publish(conn, new, dated(new), kinds, version=2, replace="detach",
                                                  old=partitions[new]), args.rows, atomic="y")
            partitions[new] = _partition_name(new, 2)
            on_parted("partitioned: re-run, DETACH CONCURRENTLY, then ATTACH",
                      lambda conn: attach_publish(conn, new, dated(new), kinds, version=3, replace="concurrently",
                                                  old=partitions[new]), args.rows, atomic="n")
            partitions[new] = _partition_name(new, 3)
            on_parted("partitioned: re-run, DELETE + INSERT through the parent (binary stage)",
                      lambda conn: staged_publish(conn, parent, new, dated(new),
                                                  lambda c, t, fr: copy_binary(c, t, fr, kinds)), args.rows, atomic="y")
            on_parted("partitioned: retention, DETACH CONCURRENTLY + DROP the oldest",
                      lambda conn: detach_oldest(conn, partitions.pop(DAY0)), args.rows, atomic="y",
                      note="rows/s: rows of the partition removed")
            report["partition_megabytes"] = round(_table_bytes(url, partitions[new]) / 2**20)
            report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        finally:
            stop_stack(settings)
    raw = [r for r in results if r.get("raw") and r["target"] == "plain table with primary key"]
    limit = max(r["rows_per_second"] for r in raw)
    report["raw_limit_rows_per_second"] = limit
    for entry in results:
        entry["ratio_to_raw"] = round(entry["rows_per_second"] / limit, 2)
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [f"{report['rows']:,} rows x {report['columns']} columns, top_factors {report['top_factors_mean_bytes']} B/row, "
             f"PostgreSQL {report['postgres']}, ADBC {report.get('adbc_version') or 'not run'}; raw limit "
             f"{report['raw_limit_rows_per_second']:,} rows/s (the faster raw COPY into the plain table); one partition "
             f"{report['partition_megabytes']:,} MB on disk; benchmark peak RSS {report['peak_rss_mb']:,} MB", "",
             "| method | rows/s | ratio to raw COPY | reader max wait s | atomic | notes |", "|---|---|---|---|---|---|"]
    for entry in report["results"]:
        watch = entry.get("watch")
        if watch:
            wait = f"{watch['reader_max_wait_s']}" + (f" ({watch['probe_timeouts']} timeouts)" if watch["probe_timeouts"] else "")
            seen = "whole old/new only" if watch["whole"] else f"**saw {', '.join(watch['odd_states'])}**"
            notes = (f"{entry['seconds']} s; {seen}; lock {watch['strongest_lock']}; _latest read median "
                     f"{watch['read_median_s']} s (before: {watch['read_baseline_s']}), max {watch['read_max_s']}, "
                     f"{watch['read_timeouts']}/{watch['reads']} timed out")
        else:
            wait = "-"
            notes = (f"{entry['seconds']} s; {entry['megabytes']:,} MB serialised in {entry['encode_seconds']} s "
                     f"(not counted)")
        if entry.get("note"):
            notes += f"; {entry['note']}"
        lines.append(f"| {entry['method']} | {entry['rows_per_second']:,} | {entry['ratio_to_raw']} | {wait} | "
                     f"{entry.get('atomic', '-')} | {notes} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--write-row-rows", type=int, default=200_000,
                        help="rows for psycopg's write_row loop (a Python loop per row; rows/s compared)")
    parser.add_argument("--reader-pause", type=float, default=0.2, help="seconds between the reader's reads")
    parser.add_argument("--adbc-path", type=Path, help="a folder holding adbc_driver_postgresql (pip install --target)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    if args.adbc_path:
        sys.path.insert(0, str(args.adbc_path))
    report = run(args)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"publish-methods-{args.rows}"
    Path(f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = markdown(report)
    Path(f"{stem}.md").write_text(text)
    print()
    print(text)


if __name__ == "__main__":
    main()
