"""The champion history read from recorded moves (lineage, rollback target, manual moves), the rows and tags
of a move, and ``revopt model``'s parser and actor; no registry or database."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from ml.promotion import (
    GATE, MANUAL, PROMOTE, ROLLBACK, TAG_ACTION, TAG_AT, TAG_BY, TAG_PREVIOUS, TAG_REASON, UNKNOWN_ACTOR, Move,
    _required, champion_lineage, manual_move, rollback_target,
)
from revopt import cli_models

T0 = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.timezone.utc)


def _move(version: str, previous: str | None, action: str = GATE, hours: int = 0) -> Move:
    at = T0 + dt.timedelta(hours=hours)
    return Move("m", version, previous, action, "someone", "because", at, at.date())


def test_lineage_follows_gate_and_hand_moves():
    moves = [_move("1", None), _move("2", "1", hours=1), _move("4", "2", PROMOTE, hours=2)]
    assert champion_lineage(moves) == ["1", "2", "4"]


def test_a_rollback_pops_so_two_rollbacks_step_back_twice():
    moves = [_move("1", None), _move("2", "1"), _move("3", "2"), _move("2", "3", ROLLBACK)]
    assert champion_lineage(moves) == ["1", "2"]
    assert rollback_target("m", champion_lineage(moves), "2") == "1"  # not back to 3


def test_a_move_from_an_unrecorded_champion_reveals_it():
    # v1 -> v2 recorded; someone moved it to v5 by hand, unnoticed; the gate then promoted v6 over v5
    moves = [_move("1", None), _move("2", "1"), _move("6", "5")]
    assert champion_lineage(moves) == ["1", "2", "5", "6"]
    assert rollback_target("m", champion_lineage(moves), "6") == "5"


def test_rollback_target_refuses_without_history_and_names_the_model():
    with pytest.raises(LookupError, match=r"'purchase_propensity'.*v1.*promote"):
        rollback_target("purchase_propensity", ["1"], "1")
    with pytest.raises(LookupError, match="no earlier @champion"):
        rollback_target("m", ["1", "2"], "7")  # the registry disagrees with the record: never guess


def test_a_manual_move_is_found_only_when_the_alias_differs():
    now = T0 + dt.timedelta(days=1)
    assert manual_move("m", "3", "3", now.date(), now) is None
    assert manual_move("m", "3", None, now.date(), now) is None  # alias removed: no version to record
    move = manual_move("m", "3", "2", dt.date(2026, 12, 2), now)
    assert (move.version, move.previous_version, move.action, move.actor) == ("2", "3", MANUAL, UNKNOWN_ACTOR)
    assert "v2" in move.reason and "v3" in move.reason and move.run_date == dt.date(2026, 12, 2)
    first = manual_move("m", None, "1", now.date(), now)
    assert first.previous_version is None and "no @champion recorded" in first.reason


def test_a_moves_row_and_tags_say_who_when_why_and_from_what():
    move = _move("4", "2", PROMOTE)
    row = move.as_row(action_seq=2, mlflow_run_id="abc")
    assert row["action"] == PROMOTE and row["action_seq"] == 2 and row["promoted"] is True
    assert row["candidate_version"] == "4" and row["previous_version"] == row["champion_version"] == "2"
    assert row["actor"] == "someone" and row["reason"] == "because" and row["recorded_at"] == T0
    tags = move.as_tags()
    assert tags == {TAG_BY: "someone", TAG_REASON: "because", TAG_AT: T0.isoformat(), TAG_ACTION: PROMOTE,
                    TAG_PREVIOUS: "2"}
    assert len(Move("m", "1", None, PROMOTE, "a", "x" * 9000, T0, T0.date()).as_tags()[TAG_REASON]) <= 5000


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_a_reason_is_required(reason):
    with pytest.raises(ValueError, match="reason is required"):
        _required("reason", reason)
    assert _required("reason", "  bad night  ") == "bad night"


def test_the_actor_is_the_option_then_the_environment_then_the_os_user():
    assert cli_models.actor_of("ana", {"REVOPT_ACTOR": "ci"}) == "ana"
    assert cli_models.actor_of(None, {"REVOPT_ACTOR": "ci"}) == "ci"
    assert cli_models.actor_of("  ", {"REVOPT_ACTOR": " "}) == cli_models.getpass.getuser()


def test_the_model_commands_parse():
    import argparse

    parser = argparse.ArgumentParser()
    cli_models.add_parser(parser.add_subparsers())
    args = parser.parse_args(["model", "promote", "purchase_propensity", "7", "--reason", "A/B won", "--actor", "ana"])
    assert (args.handler, args.name, args.version, args.reason, args.actor) == (
        cli_models._promote, "purchase_propensity", "7", "A/B won", "ana")
    args = parser.parse_args(["model", "rollback", "churn_risk", "--reason", "bad night"])
    assert (args.handler, args.name, args.actor) == (cli_models._rollback, "churn_risk", None)
    assert parser.parse_args(["model", "history", "clv"]).handler is cli_models._history
    with pytest.raises(SystemExit):  # a reason is required
        parser.parse_args(["model", "rollback", "churn_risk"])


def test_the_history_table_shows_every_column():
    from rich.console import Console

    frame = pd.DataFrame({"recorded_at": [T0], "run_date": [T0.date()], "action": ["rollback"], "version": ["2"],
                          "previous_version": ["3"], "actor": ["ana"], "moved": [True], "reason": ["bad night"]})
    console = Console(width=200, record=True)
    console.print(cli_models.history_table("m", frame))
    text = console.export_text()
    for shown in ("2026-12-01 03:00", "rollback", "v2", "v3", "moved here", "ana", "bad night"):
        assert shown in text
