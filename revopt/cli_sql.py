"""``revopt sql QUERY``: one read-only statement as the read-only role (:mod:`revopt.platform.query`), printed as a
table or CSV, or exported in full to a CSV or Parquet file (``--output``: every row, streamed in chunks, not
limited by ``--limit``). Both paths use the same read-only connection: exporting cannot write either."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from revopt.platform.config import Settings

FORMATS = ("table", "csv", "parquet")


def add_parser(commands: Any) -> None:
    query = commands.add_parser(
        "sql", help="run one read-only SQL statement on the revopt PostgreSQL (as the read-only role): print the rows "
                    "or export them all to a CSV or Parquet file")
    query.add_argument("query")
    query.add_argument("--limit", type=int, default=50, help="print at most this many rows (not with --output)")
    query.add_argument("--timeout", type=float, default=30.0, help="cancel the statement after this many seconds")
    query.add_argument("--format", choices=FORMATS, default=None,
                       help="table (default on screen), csv, or parquet (only with --output); default with --output: "
                            "from the file's suffix")
    query.add_argument("--output", "-o", type=Path, default=None, help="write every row to this file")
    query.set_defaults(handler=_sql)


def _sql(settings: Settings, args: argparse.Namespace) -> int:
    from revopt.cli_status import require_state
    from revopt.platform.query import QueryRefused

    require_state(settings)
    print(f"(state folder {settings.home})", file=sys.stderr)
    form = args.format or (_format_of(args.output) if args.output else "table")
    try:
        if args.output is not None:
            rows = export(settings, args.query, args.output, form, timeout_seconds=args.timeout)
            print(f"wrote {rows:,} rows to {args.output} ({form})", file=sys.stderr)
            return 0
        if form == "parquet":
            print("revopt sql: --format parquet needs --output FILE", file=sys.stderr)
            return 2
        return _print_rows(settings, args, form)
    except QueryRefused as exc:
        print(f"revopt sql: {exc}", file=sys.stderr)
        return 1


def _format_of(path: Path) -> str:
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else ("table" if path.suffix.lower() == ".txt"
                                                                          else "csv")


def _print_rows(settings: Settings, args: argparse.Namespace, form: str) -> int:
    import pandas as pd

    from revopt.platform.query import run_read_only

    frame, more = run_read_only(settings, args.query, max_rows=args.limit, timeout_seconds=args.timeout)
    if form == "csv":
        frame.to_csv(sys.stdout, index=False)
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(frame.to_string(index=False) if len(frame) else "(no rows)")
    if more:
        print(f"... more rows (showing the first {args.limit:,}; --limit N shows more, --output FILE writes them all)",
              file=sys.stderr if form == "csv" else sys.stdout)
    return 0


def export(settings: Settings, query: str, path: Path, form: str, *, timeout_seconds: float = 30.0,
           chunk_rows: int = 50_000) -> int:
    """Write every row of ``query`` to ``path`` as ``form`` (csv, parquet or table text), chunk by chunk; the file
    appears only once complete (written beside it, then renamed). Returns the rows written."""
    import os

    from revopt.platform.query import stream_read_only

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    rows = 0
    writer = None
    try:
        with partial.open("wb") as sink:
            for number, frame in enumerate(stream_read_only(settings, query, chunk_rows=chunk_rows,
                                                            timeout_seconds=timeout_seconds)):
                if form == "parquet":
                    writer = _write_parquet(sink, frame, writer)
                elif form == "csv":
                    sink.write(frame.to_csv(index=False, header=number == 0).encode())
                else:
                    text = frame.to_string(index=False, header=number == 0) if len(frame) else ""
                    sink.write((text + "\n").encode() if text else b"")
                rows += len(frame)
            if writer is not None:
                writer.close()
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return rows


def _write_parquet(sink, frame, writer):
    """Append ``frame`` to the Parquet file, whose schema the first chunk fixes (later chunks are cast to it;
    a column all empty in the first chunk is kept as text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if writer is None:
        fields = [pa.field(field.name, pa.string()) if pa.types.is_null(field.type) else field for field in table.schema]
        writer = pq.ParquetWriter(sink, pa.schema(fields))
    writer.write_table(table.cast(writer.schema))
    return writer
