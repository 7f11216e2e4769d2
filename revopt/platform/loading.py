"""Load a store's own files into the source contract (``revopt load TABLE FILE``): validate every row first,
write nothing unless the whole file is valid.

The contract's tables, columns and types are read from the DDL itself (:data:`revopt.platform.contract.SHOP_DDL`
for the ``shop`` tables in PostgreSQL, :data:`~revopt.platform.contract.EVENTS_DDL` for the ClickHouse
``events``), so this module and ``revopt init-db`` can never disagree about them. A column is *required* when it
is NOT NULL without a default; a nullable column or one with a default may be left out of the file.

Validation (:func:`validate_for_load`) gathers every problem before anything is written, one message per column:
a missing required column, a column the table does not have, values that are not of the column's type (the
expected type and the first bad values with their row numbers, counted from 1 on the first data row, the header
not counted), empty values in a NOT NULL column, and rows that repeat a primary key. The values are then written
with the same COPY the seeders use (:func:`revopt.platform.postgres.copy_frame`), in one transaction: a
``--replace`` deletes the table's rows first (so a re-run gives the same table), an ``--append`` adds to them
(a key already in the table is refused by PostgreSQL and nothing is written).

Why not the Great Expectations suites of :mod:`revopt.platform.validation`: those describe the *extract's*
datasets on a run date (freshness, row counts against recent runs); a load needs the contract's column types
with the offending rows named, which is plain pandas.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from revopt.platform import contract
from revopt.platform.config import Settings

logger = logging.getLogger(__name__)

#: How many bad values (with their rows) one column's message shows.
EXAMPLES = 5

_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\S+) \((.*?)\n\)", re.DOTALL)
_COLUMN = re.compile(r"^\s*(\w+)\s+(\w+(?:\([^)]*\))?)(.*)$")
_TABLE_KEY = re.compile(r"^\s*PRIMARY KEY\s*\(([^)]*)\)", re.IGNORECASE)
_DECIMAL = re.compile(r"numeric\((\d+),\s*(\d+)\)")

#: How a file's values are read for each kind of column, shown by ``revopt load --describe``.
FORMATS = {
    "integer": "whole number",
    "numeric": "decimal number",
    "text": "any text",
    "boolean": "true or false; also t/f, yes/no, 1/0",
    "date": "YYYY-MM-DD",
    "timestamp": "ISO 8601 date and time, e.g. 2024-05-01T13:45:00Z; without a zone: UTC",
}
_INTEGER_RANGES = {"bigint": (-2**63, 2**63 - 1), "integer": (-2**31, 2**31 - 1), "UInt64": (0, 2**64 - 1),
                   "UInt8": (0, 255)}
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


@dataclass(frozen=True)
class ColumnSpec:
    """One contract column: its type as the DDL writes it and whether a file must carry it."""

    name: str
    sql_type: str
    kind: str  # integer | numeric | text | boolean | date | timestamp
    nullable: bool
    default: str | None  # the DDL's DEFAULT expression, or None

    @property
    def required(self) -> bool:
        """A file must have this column: NOT NULL and no default."""
        return not self.nullable and self.default is None


@dataclass(frozen=True)
class TableSpec:
    """One contract table a store may load: where it lives, its columns and its primary key."""

    name: str
    qualified: str  # shop.orders, or events (ClickHouse, in the configured database)
    store: str  # postgres | clickhouse
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]
    optional: bool  # an optional source table: a store may leave it empty

    def column(self, name: str) -> ColumnSpec:
        return next(column for column in self.columns if column.name == name)


class LoadRefused(ValueError):
    """Nothing was written: ``problems`` says why, one line each."""

    def __init__(self, table: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{table}: nothing was loaded:\n  " + "\n  ".join(self.problems))


def contract_tables() -> dict[str, TableSpec]:
    """Every table ``revopt load`` writes, by name: the ``shop`` tables (required ones first) and ``events``."""
    tables = {}
    for qualified, body in _TABLE.findall(contract.SHOP_DDL):
        name = qualified.split(".")[-1]
        columns, key = _parse_columns(body, _postgres_kind)
        tables[name] = TableSpec(name, qualified, "postgres", columns, key, name in contract.SHOP_OPTIONAL_TABLES)
    ordered = {name: tables[name] for name in (*contract.SHOP_TABLES, *contract.SHOP_OPTIONAL_TABLES) if name in tables}
    _, body = _TABLE.findall(contract.EVENTS_DDL)[0]
    columns, _ = _parse_columns(body, _clickhouse_kind)
    # ClickHouse columns are never NULL unless declared Nullable(...)
    ordered[contract.EVENTS_TABLE] = TableSpec(contract.EVENTS_TABLE, contract.EVENTS_TABLE, "clickhouse", columns, (),
                                               False)
    return ordered


def table_spec(name: str) -> TableSpec:
    """The contract table ``name`` (``orders`` or ``shop.orders``); ValueError naming the tables otherwise."""
    tables = contract_tables()
    bare = name.split(".", 1)[1] if name.startswith(f"{contract.SHOP_SCHEMA}.") else name
    if bare not in tables:
        raise ValueError(f"no contract table {name!r}; the tables are: {', '.join(tables)} (revopt load --describe)")
    return tables[bare]


def _parse_columns(body: str, kind_of) -> tuple[tuple[ColumnSpec, ...], tuple[str, ...]]:
    columns, key = [], ()
    for line in body.splitlines():
        text = line.split("--")[0].rstrip().rstrip(",")
        if not text.strip():
            continue
        if found := _TABLE_KEY.match(text):
            key = tuple(part.strip() for part in found.group(1).split(","))
            continue
        name, sql_type, rest = _COLUMN.match(text).groups()
        upper = rest.upper()
        default = re.search(r"DEFAULT\s+(\S+)", rest, re.IGNORECASE)
        nullable = "NOT NULL" not in upper if kind_of is _postgres_kind else sql_type.startswith("Nullable")
        columns.append(ColumnSpec(name, sql_type, kind_of(sql_type), nullable, default.group(1) if default else None))
        if "PRIMARY KEY" in upper:
            key = (name,)
    # a primary key's columns are NOT NULL whether the DDL says so or not
    columns = [ColumnSpec(c.name, c.sql_type, c.kind, False, c.default) if c.name in key else c for c in columns]
    return tuple(columns), key


def _postgres_kind(sql_type: str) -> str:
    base = sql_type.split("(")[0].lower()
    return {"bigint": "integer", "integer": "integer", "numeric": "numeric", "text": "text", "boolean": "boolean",
            "date": "date", "timestamptz": "timestamp"}[base]


def _clickhouse_kind(sql_type: str) -> str:
    if sql_type.startswith("DateTime"):
        return "timestamp"
    if sql_type.startswith(("UInt", "Int")):
        return "integer"
    return "text"  # String, LowCardinality(String)


def describe(table: TableSpec) -> list[dict[str, str]]:
    """The rows ``revopt load --describe`` prints for ``table``: each column, its type, what a file may hold."""
    return [{"column": column.name + (" (key)" if column.name in table.primary_key else ""),
             "type": column.sql_type, "values": FORMATS[column.kind],
             "required": "required" if column.required else (f"optional (default {column.default})" if column.default
                                                             else "optional (may be empty)")}
            for column in table.columns]


# --- reading and validating ----------------------------------------------------------------------------------------


def read_file(path: Path) -> pd.DataFrame:
    """A CSV (optionally compressed: .csv.gz, ...) or Parquet file as a frame. CSV values stay text until
    :func:`validate_for_load` reads them as their column's type; an empty field is an empty value."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        frame = pd.read_parquet(path)
    elif ".csv" in suffixes or ".tsv" in suffixes:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""],
                            sep="\t" if ".tsv" in suffixes else ",")
    else:
        raise ValueError(f"{path}: not a CSV (.csv, .csv.gz) or Parquet (.parquet) file")
    return frame.reset_index(drop=True)


def validate_for_load(table: TableSpec, frame: pd.DataFrame, *, drop_unknown: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """The frame's values as the contract's types, in the contract's column order, and the problems found
    (empty when it can be loaded). Every column is checked; no problem stops the others being reported.
    ``drop_unknown``: leave out columns the table does not have instead of refusing them."""
    problems = []
    names = [str(name).strip() for name in frame.columns]
    frame = frame.set_axis(names, axis=1)
    known = {column.name for column in table.columns}
    unknown = [name for name in names if name not in known]
    if unknown and not drop_unknown:
        problems.append(f"{table.qualified}: column(s) not in the contract: {', '.join(unknown)} (its columns: "
                        f"{', '.join(column.name for column in table.columns)}; --drop-unknown leaves them out)")
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        problems.append(f"{table.qualified}: column(s) given more than once: {', '.join(duplicated)}")
        return frame, problems
    missing = [column.name for column in table.columns if column.required and column.name not in names]
    if missing:
        problems.append(f"{table.qualified}: required column(s) missing: {', '.join(missing)}")
    typed, mistyped = {}, set()
    for column in table.columns:
        if column.name not in names:
            continue
        values, bad = _coerce(frame[column.name], column)
        typed[column.name] = values
        if bad:
            mistyped.add(column.name)
            problems.append(f"{table.qualified}.{column.name}: expected {column.sql_type} ({FORMATS[column.kind]}); "
                            f"{bad}")
            continue
        empty = values.isna()
        if column.default is not None and empty.any():
            values = values.where(~empty, _default_value(column))
            typed[column.name] = values
            empty = values.isna()
        if not column.nullable and empty.any():
            problems.append(f"{table.qualified}.{column.name}: {int(empty.sum()):,} empty value(s) in a NOT NULL "
                            f"column, {_rows(empty)}")
    result = pd.DataFrame(typed, index=frame.index)
    present_key = [name for name in table.primary_key if name in result.columns]
    if table.primary_key and present_key == list(table.primary_key) and not mistyped & set(present_key):
        repeated = result.duplicated(subset=present_key, keep=False)
        if repeated.any():
            problems.append(f"{table.qualified}: {int(repeated.sum()):,} row(s) share a primary key "
                            f"({', '.join(present_key)}): {_duplicates(result, present_key, repeated)}")
    return result, problems


def _coerce(raw: pd.Series, column: ColumnSpec) -> tuple[pd.Series, str]:
    """The values as the column's type, and a description of those that are not (empty when all are)."""
    present = raw.notna()
    if column.kind == "text":
        return raw.astype("string").where(present, pd.NA), ""
    if column.kind == "boolean":
        if pd.api.types.is_bool_dtype(raw.dtype):
            return raw.astype("boolean"), ""
        text = raw.astype("string").str.strip().str.lower()
        values = pd.Series(pd.NA, index=raw.index, dtype="boolean")
        values[text.isin(_TRUE).fillna(False)] = True
        values[text.isin(_FALSE).fillna(False)] = False
        return values, _bad(raw, present & values.isna())
    if column.kind in ("date", "timestamp"):
        return _coerce_time(raw, present, column)
    numbers = pd.to_numeric(raw.astype("string").str.strip() if raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype)
                            else raw, errors="coerce")
    bad = present & numbers.isna()
    if column.kind == "integer":
        low, high = _INTEGER_RANGES.get(column.sql_type.split("(")[0], _INTEGER_RANGES["bigint"])
        whole = numbers.notna() & (numbers == numbers.round())
        out_of_range = numbers.notna() & ((numbers < low) | (numbers > high))
        bad |= numbers.notna() & (~whole | out_of_range)
        if bad.any():
            return numbers, _bad(raw, bad)
        return numbers.astype("Int64"), ""
    if found := _DECIMAL.fullmatch(column.sql_type):
        precision, scale = int(found.group(1)), int(found.group(2))
        bad |= numbers.notna() & (numbers.abs().round(scale) >= 10.0 ** (precision - scale))
    bad |= numbers.isin([float("inf"), float("-inf")])
    return numbers.astype("Float64") if not bad.any() else numbers, _bad(raw, bad)


def _coerce_time(raw: pd.Series, present: pd.Series, column: ColumnSpec) -> tuple[pd.Series, str]:
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        values = raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw.dt.tz_convert("UTC")
    else:
        text = raw.astype("string").str.strip() if not pd.api.types.is_object_dtype(raw.dtype) else raw.map(
            lambda value: value.isoformat() if hasattr(value, "isoformat") else value)
        values = _parse_times(text)
    bad = present & values.isna()
    if column.kind == "date":
        has_time = values.notna() & (values != values.dt.normalize())
        bad |= has_time
        return (values.dt.date if not bad.any() else values), _bad(raw, bad)
    return values, _bad(raw, bad)


def _parse_times(text: pd.Series) -> pd.Series:
    """ISO 8601 text as UTC timestamps (NaT where a value is not one); values without a zone are UTC."""
    try:
        return pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    except (ValueError, TypeError):  # mixed shapes pandas refuses as a whole: value by value
        return pd.Series([pd.to_datetime(value, errors="coerce", utc=True, format="ISO8601") for value in text],
                         index=text.index, dtype="datetime64[ns, UTC]")


def _default_value(column: ColumnSpec):
    value = column.default.strip("'")
    if column.kind == "boolean":
        return value.lower() == "true"
    return value


def _bad(raw: pd.Series, bad: pd.Series) -> str:
    if not bad.any():
        return ""
    rows = bad[bad].index[:EXAMPLES]
    shown = ", ".join(f"row {index + 1}: {raw[index]!r}" for index in rows)
    return f"{int(bad.sum()):,} value(s) are not; first {shown}"


def _rows(mask: pd.Series) -> str:
    rows = [str(index + 1) for index in mask[mask].index[:EXAMPLES]]
    return f"first on row(s) {', '.join(rows)}"


def _duplicates(frame: pd.DataFrame, key: list[str], repeated: pd.Series) -> str:
    groups = frame[repeated].groupby(key, sort=False, dropna=False).groups
    shown = []
    for values, index in list(groups.items())[:EXAMPLES]:
        values = values if isinstance(values, tuple) else (values,)
        where = ", ".join(f"{name}={value}" for name, value in zip(key, values))
        shown.append(f"{where} on rows {', '.join(str(i + 1) for i in list(index)[:EXAMPLES])}")
    return "; ".join(shown)


# --- writing -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    table: str
    rows: int  # rows written
    replaced: int  # rows the table held before a --replace (0 for an append)


def load_table(settings: Settings, table: TableSpec, frame: pd.DataFrame, mode: str | None) -> LoadResult:
    """Write a frame :func:`validate_for_load` passed into ``table``: ``mode`` ``replace`` (the table's rows are
    deleted first, in the same transaction), ``append``, or None (only into an empty table: LoadRefused otherwise).
    """
    if mode not in (None, "replace", "append"):
        raise ValueError(f"mode must be replace, append or None, got {mode!r}")
    if table.store == "clickhouse":
        return _load_events(settings, table, frame, mode)
    import psycopg
    from psycopg import sql

    from revopt.platform.postgres import copy_frame, qualified
    from revopt.platform.stack import connect_postgres

    try:
        with connect_postgres(settings) as conn:
            held = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(qualified(table.qualified))).fetchone()[0]
            _refuse_unless_empty(table, held, mode)
            if mode == "replace":
                conn.execute(sql.SQL("DELETE FROM {}").format(qualified(table.qualified)))
            for part in _parts_by_defaults(table, frame):
                copy_frame(conn, table.qualified, part)
    except psycopg.errors.UniqueViolation as exc:
        detail = exc.diag.message_detail or str(exc)
        raise LoadRefused(table.qualified, [f"a row's primary key is already in the table ({detail.strip()}): "
                                            "--replace the table's rows instead of appending"]) from None
    except psycopg.errors.DataError as exc:
        raise LoadRefused(table.qualified, [str(exc).strip()]) from None
    logger.info("loaded %s: %d rows (%s)", table.qualified, len(frame), mode or "into an empty table")
    return LoadResult(table.qualified, len(frame), held if mode == "replace" else 0)


def _refuse_unless_empty(table: TableSpec, held: int, mode: str | None) -> None:
    if held and mode is None:
        raise LoadRefused(table.qualified, [f"the table already holds {held:,} row(s): --replace them or --append "
                                            "to them"])


def _parts_by_defaults(table: TableSpec, frame: pd.DataFrame) -> list[pd.DataFrame]:
    """The frame, split so COPY never sends an empty string where a NOT NULL column's default is the empty string
    (copy_frame loads '' as NULL): rows with '' there are copied without the column, which takes its default."""
    empty_default = [column.name for column in table.columns
                     if column.name in frame.columns and column.default == "''" and not column.nullable]
    if not empty_default:
        return [frame]
    blank = frame[empty_default].eq("").fillna(False)
    parts = []
    for pattern, rows in frame.groupby([blank[name] for name in empty_default], sort=False).groups.items():
        pattern = pattern if isinstance(pattern, tuple) else (pattern,)
        dropped = [name for name, is_blank in zip(empty_default, pattern) if is_blank]
        parts.append(frame.loc[rows].drop(columns=dropped))
    return parts


def _load_events(settings: Settings, table: TableSpec, frame: pd.DataFrame, mode: str | None) -> LoadResult:
    from revopt.platform.stack import event_store

    store = event_store(settings)
    name = f"{store.database}.{contract.EVENTS_TABLE}"
    held = int(store.query_df(f"SELECT count() AS n FROM {name}")["n"].iloc[0])
    _refuse_unless_empty(table, held, mode)
    arrow = pa.table({column.name: _arrow_column(frame[column.name], column)
                      for column in table.columns if column.name in frame.columns})
    if mode == "replace":
        store.command(f"TRUNCATE TABLE {name}")
    if len(frame):
        store.insert_arrow(contract.EVENTS_TABLE, arrow)
    return LoadResult(f"clickhouse {name}", len(frame), held if mode == "replace" else 0)


def _arrow_column(values: pd.Series, column: ColumnSpec) -> pa.Array:
    if column.kind == "timestamp":
        return pa.array(values, type=pa.timestamp("ms", tz="UTC"))
    if column.kind == "integer":
        return pa.array(values.astype("int64" if column.sql_type.startswith("Int") else "uint64"),
                        type=pa.int64() if column.sql_type.startswith("Int") else pa.uint64())
    return pa.array(values.astype(str), type=pa.string())
