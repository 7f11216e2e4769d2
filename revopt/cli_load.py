"""``revopt load TABLE FILE``: a store that starts from files loads them into the source contract, and
``revopt load --describe [TABLE]`` prints the contract's tables, columns and types (docs/workbench.md).

The file is read and every row validated (:mod:`revopt.platform.loading`) before the stack starts: a file with a
problem writes nothing anywhere, and its message names the table, the column, the expected type and the first bad
values with their rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from revopt.platform.config import Settings


def add_parser(commands: Any) -> None:
    load = commands.add_parser(
        "load", help="load a CSV or Parquet file into a source table (shop.* or events), validated against the contract",
        description="Load a CSV (.csv, .csv.gz) or Parquet file into one table of the source contract: a shop table in "
                    "PostgreSQL or the ClickHouse events. Every row is checked first (required columns, each column's "
                    "type, empty values in NOT NULL columns, repeated primary keys); nothing is written unless all "
                    "pass. `revopt load --describe` lists the tables and their columns.")
    load.add_argument("table", nargs="?", help="contract table, e.g. orders or shop.orders (or events)")
    load.add_argument("file", nargs="?", type=Path, help="the CSV or Parquet file")
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--replace", dest="mode", action="store_const", const="replace",
                      help="delete the table's rows first, in the same transaction (re-running gives the same table)")
    mode.add_argument("--append", dest="mode", action="store_const", const="append",
                      help="add the rows to those in the table (a key already there is refused, nothing is written)")
    load.add_argument("--drop-unknown", action="store_true",
                      help="leave out columns the table does not have (default: refuse the file)")
    load.add_argument("--describe", action="store_true",
                      help="print the contract's tables (or TABLE's columns, types and which are required) and exit")
    load.set_defaults(handler=_load, mode=None)


def _load(settings: Settings, args: argparse.Namespace) -> int:
    from revopt.platform.loading import LoadRefused, load_table, read_file, table_spec, validate_for_load

    if args.describe:
        return _describe(args.table)
    if not args.table or not args.file:
        print("revopt load: give TABLE and FILE (or --describe)", file=sys.stderr)
        return 2
    table = table_spec(args.table)
    if not args.file.is_file():
        print(f"revopt load: no file {args.file}", file=sys.stderr)
        return 1
    frame, problems = validate_for_load(table, read_file(args.file), drop_unknown=args.drop_unknown)
    if problems:
        print(f"revopt load: {args.file} was not loaded into {table.qualified}, nothing was written:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    from revopt.platform.schema import init_stores
    from revopt.platform.stack import close_event_stores, start_stack

    start_stack(settings)
    try:
        init_stores(settings)  # the contract's tables on a fresh state folder (idempotent)
        result = load_table(settings, table, frame, args.mode)
    except LoadRefused as exc:
        print(f"revopt load: {exc}", file=sys.stderr)
        return 1
    finally:
        close_event_stores()
    replaced = f" (replacing {result.replaced:,})" if args.mode == "replace" else ""
    print(f"loaded {result.rows:,} rows from {args.file} into {result.table}{replaced}")
    return 0


def _describe(name: str | None) -> int:
    from rich.console import Console
    from rich.table import Table

    from revopt.platform.loading import contract_tables, describe, table_spec

    console = Console()
    if name is None:
        listing = Table(title="source contract tables (revopt load --describe TABLE shows the columns)")
        listing.add_column("table", no_wrap=True)
        for column in ("store", "table is", "required columns", "primary key"):
            listing.add_column(column, overflow="fold")
        for table in contract_tables().values():
            listing.add_row(table.name, "PostgreSQL shop" if table.store == "postgres" else "ClickHouse",
                            "optional" if table.optional else "required",
                            ", ".join(column.name for column in table.columns if column.required),
                            ", ".join(table.primary_key) or "-")
        console.print(listing)
        return 0
    table = table_spec(name)
    shown = Table(title=f"{table.qualified} ({'optional table: may stay empty' if table.optional else 'required table'})")
    shown.add_column("column", no_wrap=True)
    for column in ("type", "values", "required"):
        shown.add_column(column, overflow="fold")
    for row in describe(table):
        shown.add_row(*row.values())
    console.print(shown)
    return 0
