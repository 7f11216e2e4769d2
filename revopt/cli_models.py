"""``revopt model``: promote a registered model version, roll ``@champion`` back, and show its history
(docs/workbench.md, "Promotion and rollback").

Every move is recorded by :mod:`ml.promotion` in ``scores.model_promotions`` and as tags on the version
(who, when, why). Who: ``--actor``, else ``REVOPT_ACTOR``, else the OS user. ``ml`` is imported inside the
handlers only, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Mapping
from typing import Any

from revopt.platform.config import Settings

ACTOR_ENV = "REVOPT_ACTOR"


def add_parser(commands: Any) -> None:
    model = commands.add_parser("model", help="promote a model version, roll @champion back, show who moved it when")
    actions = model.add_subparsers(required=True, metavar="ACTION")

    promote = actions.add_parser(
        "promote", help="make VERSION the @champion of NAME, recording who, when and why",
        description="Move @champion of registered model NAME to VERSION (any version, also one the promotion gate "
                    "kept challenger). Recorded in scores.model_promotions (action 'promote') and as tags on the "
                    "version (revopt.promoted_by, revopt.promotion_reason, revopt.promoted_at). The nightly run "
                    "scores with it from its next run.")
    promote.add_argument("name", help="registered model name, e.g. purchase_propensity")
    promote.add_argument("version", help="the version number to promote")
    _add_who_and_why(promote)
    promote.set_defaults(handler=_promote)

    rollback = actions.add_parser(
        "rollback", help="move @champion of NAME back to the version it pointed at before",
        description="Move @champion of registered model NAME back to the previous champion in the recorded history "
                    "(a second rollback goes one further back). Recorded like a promotion (action 'rollback').")
    rollback.add_argument("name", help="registered model name")
    _add_who_and_why(rollback)
    rollback.set_defaults(handler=_rollback)

    shown = actions.add_parser("history", help="every gate decision and move of @champion of NAME, oldest first")
    shown.add_argument("name", help="registered model name")
    shown.set_defaults(handler=_history)


def _add_who_and_why(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded; required)")
    parser.add_argument("--actor", default=None, metavar="WHO",
                        help=f"who is moving it (default: ${ACTOR_ENV}, else the OS user)")


def actor_of(explicit: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """Who moves the alias: ``--actor``, else ``REVOPT_ACTOR``, else the OS user."""
    for candidate in (explicit, environ.get(ACTOR_ENV)):
        if candidate and candidate.strip():
            return candidate.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (some containers)
        return f"uid {os.getuid()}"


# --- handlers ---------------------------------------------------------------------------------------


def _promote(settings: Settings, args: argparse.Namespace) -> int:
    from ml.promotion import promote

    move = promote(_resources(settings), args.name, args.version, args.reason, actor_of(args.actor))
    print(move_line(move))
    return 0


def _rollback(settings: Settings, args: argparse.Namespace) -> int:
    from ml.promotion import rollback

    move = rollback(_resources(settings), args.name, args.reason, actor_of(args.actor))
    print(move_line(move))
    return 0


def _history(settings: Settings, args: argparse.Namespace) -> int:
    from rich.console import Console

    from ml.promotion import history

    frame = history(_resources(settings, read_only=True), args.name)
    if frame.empty:
        print(f"nothing recorded for {args.name} in scores.model_promotions (is the name right? `revopt where` lists "
              "the published tables)")
        return 1
    Console().print(history_table(args.name, frame))
    return 0


def move_line(move: Any) -> str:
    """One line saying what a move did."""
    was = f"v{move.previous_version}" if move.previous_version else "no champion"
    return (f"{move.model_name}: @champion -> v{move.version} (was {was}); {move.action} by {move.actor} at "
            f"{move.recorded_at:%Y-%m-%d %H:%M:%S} UTC: {move.reason}")


def history_table(model_name: str, frame: Any) -> Any:
    """``ml.promotion.history``'s rows as a rich table."""
    from rich.table import Table

    table = Table(title=f"{model_name}: gate decisions and moves of @champion")
    for column, style in (("when (UTC)", None), ("run date", None), ("action", "bold"), ("version", None),
                          ("was", None), ("@champion", None), ("by", None), ("reason", None)):
        table.add_column(column, style=style, overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(f"{row.recorded_at:%Y-%m-%d %H:%M}", str(row.run_date), row.action, f"v{row.version}",
                      f"v{row.previous_version}" if isinstance(row.previous_version, str) else "-",
                      "moved here" if row.moved else "kept", row.actor, row.reason)
    return table


def _resources(settings: Settings, *, read_only: bool = False):
    from revopt.cli_status import require_state
    from revopt.platform.resources import Resources
    from revopt.platform.stack import start_stack

    if read_only:
        require_state(settings)  # reads only: never starts a new, empty stack
    start_stack(settings)
    return Resources(settings)
