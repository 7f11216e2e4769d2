"""The binary COPY encoder, decoded back here: values, NULL conventions (copy_frame's), chunking, refusals.

The same frames loaded by the server both ways (binary and CSV) are compared row for row in
tests/e2e/test_storage.py; this tier checks the bytes without a database."""

from __future__ import annotations

import datetime as dt
import struct

import numpy as np
import pandas as pd
import pytest

from revopt.platform.binary_copy import Unencodable, binary_copy_chunks

_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
_DECODE = {
    "int2": lambda b: struct.unpack("!h", b)[0],
    "int4": lambda b: struct.unpack("!i", b)[0],
    "int8": lambda b: struct.unpack("!q", b)[0],
    "float8": lambda b: struct.unpack("!d", b)[0],
    "bool": lambda b: b == b"\x01",
    "date": lambda b: dt.date(2000, 1, 1) + dt.timedelta(days=struct.unpack("!i", b)[0]),
    "timestamptz": lambda b: _EPOCH + dt.timedelta(microseconds=struct.unpack("!q", b)[0]),
    "text": lambda b: b.decode(),
    "jsonb": lambda b: (b[:1], b[1:].decode()),
}


def _decode(frame: pd.DataFrame, types: dict[str, str], **kwargs) -> list[tuple]:
    """Encode ``frame``, then parse the stream as the server would: header, rows, trailer."""
    data = b"".join(bytes(buffer) for buffer in binary_copy_chunks(frame, types, **kwargs))
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00" and data[11:19] == b"\x00" * 8
    position, rows, kinds = 19, [], [types[c] for c in frame.columns]
    while True:
        (width,) = struct.unpack_from("!h", data, position)
        position += 2
        if width == -1:
            break
        assert width == len(kinds)
        row = []
        for kind in kinds:
            (length,) = struct.unpack_from("!i", data, position)
            position += 4
            if length == -1:
                row.append(None)
                continue
            row.append(_DECODE[kind](data[position:position + length]))
            position += length
        rows.append(tuple(row))
    assert position == len(data), "bytes after the trailer"
    return rows


def test_values_and_nulls_follow_the_csv_paths_conventions():
    frame = pd.DataFrame({
        "run_date": [dt.date(2025, 1, 1), dt.date(2025, 1, 2), dt.date(1999, 12, 31)],
        "customer_id": [1, 2**40, -3],
        "hour": pd.Series([1.0, np.nan, 23.0]),            # a nullable integer arrives as float: whole numbers only
        "score": [0.25, np.nan, -1e300],
        "moved": [True, None, False],
        "tier": ["high", "", None],                       # "" is NULL, like copy_frame
        "factors": ['{"a": 1}', None, '{"é": "x"}'],
        "as_of": pd.to_datetime(["2025-01-01 10:00:00.1234567", None, "1999-12-31 23:59:59"], format="ISO8601").tz_localize("Europe/Paris"),
    })
    types = {"run_date": "date", "customer_id": "int8", "hour": "int2", "score": "float8", "moved": "bool",
             "tier": "text", "factors": "jsonb", "as_of": "timestamptz"}
    rows = _decode(frame, types)
    paris = dt.timezone(dt.timedelta(hours=1))
    assert rows == [
        (dt.date(2025, 1, 1), 1, 1, 0.25, True, "high", (b"\x01", '{"a": 1}'),
         dt.datetime(2025, 1, 1, 10, 0, 0, 123457, tzinfo=paris)),  # rounded to the microsecond, like the server
        (dt.date(2025, 1, 2), 2**40, None, None, None, None, None, None),
        (dt.date(1999, 12, 31), -3, 23, -1e300, False, None, (b"\x01", '{"é": "x"}'),
         dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=paris)),
    ]


def test_dates_from_timestamps_and_text_from_integers_and_booleans():
    frame = pd.DataFrame({
        "naive": pd.to_datetime(["2025-03-01 00:00", "2025-03-02 13:00"]),              # the CSV path writes the time too;
        "aware": pd.to_datetime(["2025-03-01 23:30", None]).tz_localize("UTC"),  # the server keeps the date
        "segment": [3, 4],
        "flag": [True, False],
        "label": pd.Categorical(["a", ""]),
        "naive_ts": pd.to_datetime(["2025-03-01 12:00", "2025-03-01 12:00:00.000001"], format="ISO8601"),
    })
    types = {"naive": "date", "aware": "date", "segment": "text", "flag": "text", "label": "text",
             "naive_ts": "timestamptz"}
    utc = dt.timezone.utc
    assert _decode(frame, types) == [
        (dt.date(2025, 3, 1), dt.date(2025, 3, 1), "3", "true", "a", dt.datetime(2025, 3, 1, 12, tzinfo=utc)),
        (dt.date(2025, 3, 2), None, "4", "false", None, dt.datetime(2025, 3, 1, 12, 0, 0, 1, tzinfo=utc)),
    ]


def test_chunks_join_into_the_same_stream():
    frame = pd.DataFrame({"customer_id": range(7), "tier": ["a", "", "bb", None, "c", "d", "é"]})
    types = {"customer_id": "int8", "tier": "text"}
    whole = b"".join(bytes(b) for b in binary_copy_chunks(frame, types))
    chunked = b"".join(bytes(b) for b in binary_copy_chunks(frame, types, chunk_rows=3))
    sliced = b"".join(bytes(b) for b in binary_copy_chunks(frame.iloc[2:], types, chunk_rows=2))
    assert whole == chunked
    assert _decode(frame.iloc[2:], types) == [(i, t) for i, t in [(2, "bb"), (3, None), (4, "c"), (5, "d"), (6, "é")]]
    assert sliced == b"".join(bytes(b) for b in binary_copy_chunks(frame.iloc[2:].reset_index(drop=True), types))


def test_an_empty_frame_is_a_header_and_a_trailer():
    assert _decode(pd.DataFrame({"customer_id": pd.Series([], dtype="int64")}), {"customer_id": "int8"}) == []


@pytest.mark.parametrize("column, kind, reason", [
    (pd.Series([1.5, 2.0]), "int8", "not whole numbers"),
    (pd.Series([40_000, 1]), "int2", "out of range"),
    (pd.Series(["1", "2"]), "int8", "integer column"),
    (pd.Series([True, False]), "int4", "booleans"),
    (pd.Series(["a", 3], dtype=object), "text", "not all strings"),
    (pd.Series([0.5, 1.5]), "text", "for a text column"),
    (pd.Series([1, 2]), "numeric", "not encoded"),
    (pd.Series([[1], [2]]), "_int8", "not encoded"),
    (pd.Series(["2025-01-01", "x"]), "date", "not all dates"),
    (pd.Series([1, 0]), "bool", "for a boolean column"),
    (pd.Series([{"a": 1}, None]), "jsonb", "not all strings"),
])
def test_what_it_cannot_write_as_the_csv_would_is_refused_before_any_byte(column, kind, reason):
    frame = pd.DataFrame({"c": column})
    with pytest.raises(Unencodable, match=reason):
        binary_copy_chunks(frame, {"c": kind})


def test_naive_timestamps_need_a_session_in_utc_and_columns_must_exist():
    frame = pd.DataFrame({"t": pd.to_datetime(["2025-01-01"])})
    with pytest.raises(Unencodable, match="not in UTC"):
        binary_copy_chunks(frame, {"t": "timestamptz"}, naive_is_utc=False)
    aware = frame.assign(t=frame["t"].dt.tz_localize("UTC"))
    assert _decode(aware, {"t": "timestamptz"}, naive_is_utc=False) == [(dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc),)]
    with pytest.raises(Unencodable, match="not in the target table"):
        binary_copy_chunks(frame, {"other": "date"})
