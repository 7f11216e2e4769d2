"""``revopt erase`` and ``revopt gc``: the right to be forgotten, and retention of run folders (docs/privacy.md).

``erase`` removes one person from everything revopt wrote (:mod:`revopt.platform.erasure`) and prints what it
removed where, and the accounts and anonymous ids it found for the person: the store must delete those from its
own sources (until it does, every extract leaves the erased accounts out). ``gc`` deletes run folders older than
the retention period (:mod:`revopt.platform.retention`), as the nightly run does.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from revopt.platform.config import Settings
from revopt.platform.retention import DEFAULT_KEEP_DAYS


def add_parser(commands: Any) -> None:
    erase = commands.add_parser(
        "erase", help="remove one person from everything revopt wrote (published tables, identity map, run folders, "
                      "MLflow artifacts, ClickHouse tables) and log a hashed entry in scores.erasure_log",
        description="Erase one person: the account or anonymous id given and every account and device identity "
                    "resolution joined to it. The store's own sources are not touched: delete the accounts printed "
                    "there too (until then, extracts leave them out). Do not run while a DAG run is writing.")
    who = erase.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer", type=int, metavar="ID", help="a customer (account) id")
    who.add_argument("--anonymous-id", dest="anonymous_id", metavar="X", help="an anonymous (cookie / device) id")
    erase.add_argument("--reason", metavar="TEXT",
                       help="the request's reference, e.g. a ticket number (recorded; never personal data)")
    erase.set_defaults(handler=_erase)

    gc = commands.add_parser("gc", help="delete run folders older than the retention period")
    gc.add_argument("--keep-days", type=int, default=DEFAULT_KEEP_DAYS,
                    help=f"keep the run folders of this many days before --date (default {DEFAULT_KEEP_DAYS}, the "
                         "run param run_folder_retention_days)")
    gc.add_argument("--date", type=dt.date.fromisoformat, default=None, help="the day to count back from "
                                                                               "(default: today, UTC)")
    gc.set_defaults(handler=_gc)


def _erase(settings: Settings, args: argparse.Namespace) -> int:
    from revopt.platform.erasure import erase
    from revopt.platform.stack import close_event_stores, start_stack

    start_stack(settings)
    try:
        report = erase(settings, customer_id=args.customer, anonymous_id=args.anonymous_id, reason=args.reason)
    finally:
        close_event_stores()
    subject = f"customer {args.customer}" if args.customer is not None else f"anonymous id {args.anonymous_id}"
    print(f"erased {subject}: {len(report.accounts)} account(s), {len(report.anonymous_ids)} anonymous id(s)")
    for line in report_lines(report):
        print(line)
    return 1 if report.left else 0


def report_lines(report: Any) -> list[str]:
    """What an erasure removed where, what it could not, and what the store must delete itself."""
    lines = [f"    {where}: {count:,}" for where, count in sorted(report.removed.items())]
    if not report.removed:
        lines.append("    nothing of this person was found in revopt's state")
    for where in sorted(report.left):
        lines.append(f"    NOT REMOVED: {where}")
    if report.accounts:
        lines.append("accounts to delete from the store's sources: " + ", ".join(str(a) for a in report.accounts))
    if report.anonymous_ids:
        lines.append("anonymous ids to delete from the store's events: " + ", ".join(report.anonymous_ids))
    return lines


def _gc(settings: Settings, args: argparse.Namespace) -> int:
    from revopt.platform.retention import remove_old_run_folders

    on = args.date or dt.datetime.now(dt.timezone.utc).date()
    result = remove_old_run_folders(settings, on, args.keep_days)
    print(f"run folders before {result['cutoff']} removed: {result['removed']}; kept: {result['kept']}"
          + (f" (oldest {result['oldest_kept']})" if result["oldest_kept"] else "") + f" under {settings.runs_dir}")
    return 0
