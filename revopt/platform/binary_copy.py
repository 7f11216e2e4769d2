"""PostgreSQL's binary COPY format, encoded a column at a time with Arrow: no Python code runs per row.

Why binary: the server stores numbers, dates, timestamps and NULLs from binary without parsing text (1.2-1.5x
faster than CSV for the published rows, docs/scale.md), and this encoder serialises a million customer scores
in ~3 s where Arrow's CSV writer takes ~10 s. Why by hand: psycopg's binary ``write_row`` is a Python loop per
row, and ADBC (``adbc-driver-postgresql``) creates its own staging types (``text`` for ``jsonb``) and is not a
dependency; the format itself is small and documented (PostgreSQL, "COPY": binary format): a header, then per
row an int16 field count and per field an int32 length (-1 for NULL) and the type's binary ``send`` form, then
an int16 -1.

A field is built as ``<int32 length><value>`` for the whole column (fixed-width types: one numpy structured
array; text and jsonb: Arrow's ``binary_join_element_wise``), and the fields of a row are joined the same way.

The conventions are :func:`revopt.platform.postgres.copy_frame`'s (the CSV path), so a frame lands the same
either way: NaN, None, NaT and empty strings arrive as NULL; an integer-valued float goes into an integer
column; integers and booleans go into a text column as Arrow writes them in CSV; a naive timestamp goes into a
``timestamptz`` column as the session's time zone reads it (encoded here only when the session is in UTC);
timestamps are rounded to the microsecond as the server rounds a text timestamp. Whatever it cannot encode
exactly as the CSV path would (a type outside :data:`ENCODED_TYPES`, e.g. ``numeric`` or an array; a float
with a fraction for an integer column; objects of mixed kinds) raises :class:`Unencodable` *before* anything is
written, and the caller sends that frame as CSV.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

#: Rows per buffer handed to ``COPY``: ~200 MB for the customer scores' ~2 KB rows.
CHUNK_ROWS = 100_000

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)
_NULL_FIELD = pa.scalar(b"\xff\xff\xff\xff", pa.large_binary())
_EMPTY = pa.scalar(b"", pa.large_binary())
_PG_EPOCH = np.datetime64("2000-01-01", "D")
_PG_EPOCH_NS = np.datetime64("2000-01-01", "ns").astype("int64")
_INTEGERS = {"int2": ">i2", "int4": ">i4", "int8": ">i8"}
#: text-like types and the bytes their binary form puts before the UTF-8 text (jsonb: its format version)
_TEXTS = {"text": b"", "varchar": b"", "json": b"", "jsonb": b"\x01"}
#: ``pg_type.typname`` of the column types this module encodes (every type revopt's published tables use).
ENCODED_TYPES = frozenset({*_INTEGERS, "float8", "bool", "date", "timestamptz", "timestamp", *_TEXTS})

#: a column's fields for rows [start, stop)
_Fields = Callable[[int, int], pa.Array]


class Unencodable(ValueError):
    """A column the binary encoder cannot write exactly as the CSV path would: send the frame as CSV."""


def column_types(conn: psycopg.Connection, table: str) -> dict[str, str]:
    """``table``'s columns -> ``pg_type.typname`` (e.g. ``int8``, ``float8``, ``jsonb``), from the catalog."""
    relation = sql.Identifier(*table.split(".")).as_string(conn)
    rows = conn.execute("SELECT a.attname, t.typname FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid "
                        "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped", (relation,)).fetchall()
    return dict(rows)


def session_in_utc(conn: psycopg.Connection) -> bool:
    """Whether the session reads a naive timestamp as UTC (revopt's connections set ``TimeZone=UTC``)."""
    return conn.info.parameter_status("TimeZone") in ("UTC", "Etc/UTC", "GMT", "Etc/GMT")


def binary_copy_chunks(frame: pd.DataFrame, types: dict[str, str], *, naive_is_utc: bool = True,
                       chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.Buffer]:
    """``frame`` in binary COPY format (header, rows, trailer), ``chunk_rows`` rows a buffer, for
    ``COPY <table> (<frame's columns>) FROM STDIN WITH (FORMAT binary)``.

    ``types``: the target columns' ``typname`` (:func:`column_types`). Every column is checked (and the
    fixed-width ones encoded) before this returns, so :class:`Unencodable` is raised here, never while the
    buffers are being written."""
    missing = [name for name in frame.columns if name not in types]
    if missing:
        raise Unencodable(f"columns {missing} are not in the target table")
    columns = [_column(frame[name], types[name], str(name), naive_is_utc) for name in frame.columns]
    return _buffers(columns, len(frame), len(frame.columns), chunk_rows)


def _buffers(columns: list[_Fields], rows: int, width: int, chunk_rows: int) -> Iterator[pa.Buffer]:
    yield pa.py_buffer(_HEADER)
    count = pa.scalar(struct.pack("!h", width), pa.large_binary())
    for start in range(0, rows, chunk_rows):
        stop = min(start + chunk_rows, rows)
        joined = pc.binary_join_element_wise(count, *(fields(start, stop) for fields in columns), _EMPTY)
        offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64, count=len(joined) + 1, offset=8 * joined.offset)
        yield joined.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    yield pa.py_buffer(_TRAILER)


def _column(series: pd.Series, kind: str, name: str, naive_is_utc: bool) -> _Fields:
    if kind in _TEXTS:
        _check_text(series, name)
        prefix = _TEXTS[kind]
        return lambda start, stop: _varlena_fields(_text(series.iloc[start:stop]), prefix)
    null = series.isna().to_numpy()
    if kind in _INTEGERS:
        fields = _fixed_fields(_integers(series, null, kind, name), null, _INTEGERS[kind])
    elif kind == "float8":
        fields = _fixed_fields(_floats(series, name), null, ">f8")
    elif kind == "bool":
        fields = _fixed_fields(_booleans(series, name), null, "?")
    elif kind == "date":
        days = (_utc_datetimes(series, name).astype("datetime64[D]") - _PG_EPOCH).astype("int64")
        fields = _fixed_fields(np.where(null, 0, days), null, ">i4")
    elif kind in ("timestamptz", "timestamp"):
        if kind == "timestamptz" and not naive_is_utc and not isinstance(series.dtype, pd.DatetimeTZDtype):
            raise Unencodable(f"column {name}: naive timestamps for timestamptz in a session not in UTC")
        nanoseconds = _utc_datetimes(series, name).astype("datetime64[ns]").astype("int64")
        micros = np.floor_divide(np.where(null, 0, nanoseconds - _PG_EPOCH_NS) + 500, 1000)
        fields = _fixed_fields(micros, null, ">i8")
    else:
        raise Unencodable(f"column {name}: type {kind} is not encoded in binary")
    return lambda start, stop: fields.slice(start, stop - start)


def _fixed_fields(values: np.ndarray, null: np.ndarray, big_endian: str) -> pa.Array:
    """``<int32 size><value>`` per row (``-1`` alone for NULL)."""
    size = np.dtype(big_endian).itemsize
    packed = np.empty(len(values), dtype=[("length", ">i4"), ("value", big_endian)])
    packed["length"] = size
    packed["value"] = values
    fields = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 + size), len(values), [None, pa.py_buffer(packed)])
    fields = fields.cast(pa.large_binary())
    if null.any():
        fields = pc.if_else(pa.array(null), _NULL_FIELD, fields)
    return fields


def _varlena_fields(values: pa.Array, prefix: bytes) -> pa.Array:
    """``<int32 size><prefix><bytes>`` per row (``-1`` alone for NULL); ``prefix``: jsonb's version byte."""
    values = values.cast(pa.large_binary())
    lengths = (pc.fill_null(pc.binary_length(values), 0).to_numpy(zero_copy_only=False) + len(prefix)).astype(">i4")
    heads = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4), len(values), [None, pa.py_buffer(lengths)])
    parts = [heads.cast(pa.large_binary()), *([pa.scalar(prefix, pa.large_binary())] if prefix else []), values]
    fields = pc.binary_join_element_wise(*parts, _EMPTY)
    if values.null_count:
        fields = pc.if_else(pc.is_null(values), _NULL_FIELD, fields)
    return fields


def _integers(series: pd.Series, null: np.ndarray, kind: str, name: str) -> np.ndarray:
    if series.dtype == object:
        if pd.api.types.infer_dtype(series, skipna=True) not in ("integer", "empty"):
            raise Unencodable(f"column {name}: objects that are not all integers, for an integer column")
        series = pd.Series(pd.array(series.where(~null, None), dtype="Int64"), index=series.index)
    if pd.api.types.is_bool_dtype(series.dtype):
        raise Unencodable(f"column {name}: booleans for an integer column")
    if pd.api.types.is_integer_dtype(series.dtype):
        if series.dtype.kind == "u" and len(series) and series.max() >= 2**63:
            raise Unencodable(f"column {name}: unsigned integers beyond bigint")
        values = series.to_numpy(dtype="int64", na_value=0)
    elif pd.api.types.is_float_dtype(series.dtype):
        floats = np.where(null, 0.0, series.to_numpy(dtype="float64", na_value=np.nan))
        if not (np.isfinite(floats).all() and (np.abs(floats) < 2**53).all() and (floats == np.trunc(floats)).all()):
            raise Unencodable(f"column {name}: floats that are not whole numbers, for an integer column")
        values = floats.astype("int64")
    else:
        raise Unencodable(f"column {name}: {series.dtype} for an integer column")
    bits = 8 * np.dtype(_INTEGERS[kind]).itemsize
    kept = values[~null]
    if len(kept) and (kept.min() < -(2 ** (bits - 1)) or kept.max() >= 2 ** (bits - 1)):
        raise Unencodable(f"column {name}: values out of range for {kind}")
    return np.where(null, 0, values)


def _floats(series: pd.Series, name: str) -> np.ndarray:
    if series.dtype == object:
        if pd.api.types.infer_dtype(series, skipna=True) not in ("floating", "integer", "mixed-integer-float",
                                                                 "decimal", "empty"):
            raise Unencodable(f"column {name}: objects that are not all numbers, for a double precision column")
        series = pd.to_numeric(series)
    if pd.api.types.is_bool_dtype(series.dtype) or not pd.api.types.is_numeric_dtype(series.dtype):
        raise Unencodable(f"column {name}: {series.dtype} for a double precision column")
    return series.to_numpy(dtype="float64", na_value=np.nan)


def _booleans(series: pd.Series, name: str) -> np.ndarray:
    if series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) in ("boolean", "empty"):
        return series.where(series.notna(), False).astype(bool).to_numpy()
    if not pd.api.types.is_bool_dtype(series.dtype):
        raise Unencodable(f"column {name}: {series.dtype} for a boolean column")
    return series.to_numpy(dtype=bool, na_value=False)


def _utc_datetimes(series: pd.Series, name: str) -> np.ndarray:
    """Naive ``datetime64[ns]`` in UTC (tz-aware values converted, as the CSV path writes them with a ``Z``)."""
    if series.dtype == object:
        if pd.api.types.infer_dtype(series, skipna=True) not in ("date", "datetime", "datetime64", "empty"):
            raise Unencodable(f"column {name}: objects that are not all dates or datetimes")
        try:
            series = pd.to_datetime(series)
        except (ValueError, TypeError) as exc:
            raise Unencodable(f"column {name}: {exc}") from None
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    if not pd.api.types.is_datetime64_dtype(series.dtype):
        raise Unencodable(f"column {name}: {series.dtype} for a date or timestamp column")
    return series.to_numpy(dtype="datetime64[ns]")


def _check_text(series: pd.Series, name: str) -> None:
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        dtype = dtype.categories.dtype
        values = series.cat.categories.to_series()
    else:
        values = series
    if dtype == object:
        if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
            raise Unencodable(f"column {name}: objects that are not all strings, for a text column")
    elif not (pd.api.types.is_string_dtype(dtype) or pd.api.types.is_integer_dtype(dtype)
              or pd.api.types.is_bool_dtype(dtype)):
        raise Unencodable(f"column {name}: {dtype} for a text column")


def _text(series: pd.Series) -> pa.Array:
    """The column as Arrow strings, "" as NULL; integers and booleans as Arrow's CSV writer spells them."""
    values = pa.Array.from_pandas(series)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), pa.large_string())
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = pc.cast(values, pa.string())
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, values.type), values)
