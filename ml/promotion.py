"""Moving ``@champion`` by hand, as an audited action: promote, roll back, and notice moves made elsewhere.

The nightly promotion gate (:func:`ml.registry.apply_decision`) moves ``@champion`` on evidence. A person
sometimes has to move it on judgement: a version the gate kept challenger, or back to the previous champion
after a bad night. :func:`promote` and :func:`rollback` do that, and every move, whoever made it, leaves
the same trace:

- a row in ``scores.model_promotions`` (``action`` promote / rollback / manual beside the gate's ``gate``
  rows, ``actor``, ``reason``, ``previous_version``, ``recorded_at``; migration 0011), and
- tags on the model version that became champion (:data:`TAG_BY`, :data:`TAG_REASON`, :data:`TAG_AT`,
  :data:`TAG_ACTION`, :data:`TAG_PREVIOUS`), readable on its MLflow page.

A move made in the MLflow UI or API bypasses both. :func:`record_manual_alias_moves` (called by the DAGs
before they read a champion) compares where ``@champion`` points with the last move revopt recorded and
records a difference as ``manual``, actor :data:`UNKNOWN_ACTOR`.

**History and rollback.** A model's champion history is its alias-moving rows in time order (gate rows
that promoted, and every hand move). :func:`champion_lineage` reads it as a stack: each move pushes the new
champion, a rollback pops the version it undid, and a move whose ``previous_version`` is not the last one
recorded reveals a move nobody recorded (that version is pushed first). :func:`rollback` goes to the entry
below the top, so rolling back twice from v3 (after v1 -> v2 -> v3) goes to v2, then v1.

Moves of one model are serialised by a PostgreSQL advisory lock held for the recording transaction; the row
is written before the alias moves, so a failed alias move leaves no row. The key of a hand move is
``(run_date, model_name, candidate_version, action_seq)`` with ``action_seq`` 1, 2, ... (the gate's row of a
run date keeps 0, so its re-run replaces it): two promotions of one version on one day are both kept.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
import psycopg
from mlflow import MlflowClient

from ml.registry import CHAMPION, current_version, set_alias
from revopt.platform.postgres import read_frame
from revopt.platform.resources import Resources

logger = logging.getLogger(__name__)

TABLE = "scores.model_promotions"
GATE, PROMOTE, ROLLBACK, MANUAL = "gate", "promote", "rollback", "manual"
GATE_ACTOR = "promotion gate"
UNKNOWN_ACTOR = "unknown (MLflow UI or API)"
TAG_BY = "revopt.promoted_by"
TAG_REASON = "revopt.promotion_reason"
TAG_AT = "revopt.promoted_at"
TAG_ACTION = "revopt.promotion_action"
TAG_PREVIOUS = "revopt.previous_champion"
#: first key of the two-key advisory lock serialising moves of one model ("prom" in ASCII)
_LOCK_CLASS = 0x70726F6D
#: MLflow keeps tag values up to 5000 characters; reasons longer than this are cut in the tag (not the row)
_TAG_LIMIT = 4000


@dataclass(frozen=True)
class Move:
    """One move of ``@champion`` (or, for ``gate`` rows read back, a gate decision that moved it)."""

    model_name: str
    version: str
    previous_version: str | None
    action: str
    actor: str
    reason: str
    recorded_at: dt.datetime
    run_date: dt.date

    def as_tags(self) -> dict[str, str]:
        """The model-version tags of the version this move made champion."""
        return {TAG_BY: self.actor, TAG_REASON: self.reason[:_TAG_LIMIT], TAG_AT: self.recorded_at.isoformat(),
                TAG_ACTION: self.action, TAG_PREVIOUS: self.previous_version or ""}

    def as_row(self, action_seq: int, mlflow_run_id: str | None) -> dict[str, Any]:
        """The ``scores.model_promotions`` row of a hand move: the gate's statistics stay NULL; the champion it
        replaced is both ``previous_version`` and (as in the gate's rows) ``champion_version``."""
        return {"run_date": self.run_date, "model_name": self.model_name, "candidate_version": self.version,
                "champion_version": self.previous_version, "previous_version": self.previous_version,
                "promoted": True, "reason": self.reason, "action": self.action, "actor": self.actor,
                "recorded_at": self.recorded_at, "action_seq": action_seq, "mlflow_run_id": mlflow_run_id}


# --- the three actions ------------------------------------------------------------------------------------


def promote(resources: Resources, model_name: str, version: str | int, reason: str, actor: str) -> Move:
    """Make ``version`` of ``model_name`` its ``@champion`` and record who, when and why. Refuses a version
    that does not exist, one that is champion already, and an empty reason or actor."""
    reason, actor, version = _required("reason", reason), _required("actor", actor), str(version).strip()
    resources.use_tracking()
    run_id = _require_version(model_name, version)
    now = _now()
    with resources.scores() as conn:
        _lock(conn, model_name)
        _reconcile(conn, model_name, now.date(), now)
        previous = current_version(model_name, CHAMPION)
        if previous == version:
            raise ValueError(f"{model_name} v{version} is @champion already: nothing to promote")
        move = Move(model_name, version, previous, PROMOTE, actor, reason, now, now.date())
        _record(conn, move, run_id)
    return move


def rollback(resources: Resources, model_name: str, reason: str, actor: str) -> Move:
    """Move ``@champion`` of ``model_name`` back to the version it pointed at before the current one (from
    the recorded history, :func:`champion_lineage`) and record who, when and why."""
    reason, actor = _required("reason", reason), _required("actor", actor)
    resources.use_tracking()
    now = _now()
    with resources.scores() as conn:
        _lock(conn, model_name)
        _reconcile(conn, model_name, now.date(), now)
        current = current_version(model_name, CHAMPION)
        if current is None:
            raise LookupError(f"registered model {model_name!r} has no @champion: there is nothing to roll back")
        target = rollback_target(model_name, champion_lineage(recorded_moves(conn, model_name)), current)
        run_id = _require_version(model_name, target)
        move = Move(model_name, target, current, ROLLBACK, actor, reason, now, now.date())
        _record(conn, move, run_id)
    return move


def record_manual_alias_moves(resources: Resources, run_date: dt.date) -> list[Move]:
    """For every model revopt has recorded a decision of, a move of ``@champion`` made outside revopt (the
    MLflow UI or API) since the last one recorded, recorded now as ``manual`` under ``run_date``. Idempotent:
    a second call finds the alias where the last record says and records nothing."""
    resources.use_tracking()
    now = _now()
    moves = []
    with resources.scores() as conn:
        names = [row[0] for row in conn.execute(f"SELECT DISTINCT model_name FROM {TABLE} ORDER BY 1").fetchall()]
        for name in names:
            _lock(conn, name)
            if (move := _reconcile(conn, name, run_date, now)) is not None:
                moves.append(move)
    return moves


def history(resources: Resources, model_name: str) -> pd.DataFrame:
    """Every recorded decision and move of ``model_name``, oldest first (the gate's decisions that kept
    the champion too: ``moved`` says whether ``@champion`` moved)."""
    with resources.scores() as conn:
        return read_frame(conn, f"""
            SELECT recorded_at, run_date, action, candidate_version AS version, previous_version, actor,
                   (action <> '{GATE}' OR promoted) AS moved, reason
            FROM {TABLE} WHERE model_name = %s ORDER BY recorded_at, action_seq, candidate_version""", (model_name,))


# --- the history, as pure functions -----------------------------------------------------------------------


def champion_lineage(moves: Iterable[Move]) -> list[str]:
    """The versions ``@champion`` pointed at, oldest first, with rolled-back entries popped (module docstring).
    ``moves``: the alias-moving moves in time order."""
    stack: list[str] = []
    for move in moves:
        if move.previous_version is not None and (not stack or stack[-1] != move.previous_version):
            stack.append(move.previous_version)  # the champion was moved there without a record
        if move.action == ROLLBACK and len(stack) >= 2 and stack[-2] == move.version:
            stack.pop()
        elif not stack or stack[-1] != move.version:
            stack.append(move.version)
    return stack


def rollback_target(model_name: str, lineage: Sequence[str], current: str) -> str:
    """The version a rollback from ``current`` goes to, or a LookupError naming the model."""
    if len(lineage) >= 2 and lineage[-1] == current:
        return lineage[-2]
    recorded = " -> ".join(f"v{v}" for v in lineage) or "none"
    raise LookupError(f"registered model {model_name!r}: no earlier @champion is recorded to roll back to from "
                      f"v{current} (recorded champions: {recorded}); promote a version instead "
                      f"(`revopt model promote {model_name} VERSION --reason ...`)")


def manual_move(model_name: str, recorded: str | None, current: str | None, run_date: dt.date,
                now: dt.datetime) -> Move | None:
    """The ``manual`` move that explains ``@champion`` at ``current`` when revopt last recorded ``recorded``,
    or None when they agree (or the alias was removed: there is no version to record as champion)."""
    if current is None or current == recorded:
        return None
    before = f"v{recorded}" if recorded is not None else "no @champion recorded by revopt"
    reason = (f"@champion found at v{current} on {now:%Y-%m-%d %H:%M} UTC, moved outside revopt (the MLflow UI "
              f"or API) from {before}; no reason was given")
    return Move(model_name, current, recorded, MANUAL, UNKNOWN_ACTOR, reason, now, run_date)


def recorded_moves(conn: psycopg.Connection, model_name: str) -> list[Move]:
    """``model_name``'s alias-moving rows (gate rows that promoted, and every hand move), in time order."""
    frame = read_frame(conn, f"""
        SELECT model_name, candidate_version, previous_version, champion_version, action, actor, reason,
               recorded_at, run_date
        FROM {TABLE} WHERE model_name = %s AND (action <> '{GATE}' OR promoted)
        ORDER BY recorded_at, action_seq, candidate_version""", (model_name,))
    return [Move(r.model_name, r.candidate_version, _previous(r), r.action, r.actor, r.reason, r.recorded_at,
                 r.run_date) for r in frame.itertuples(index=False)]


def _previous(row: Any) -> str | None:
    # a gate row written before revision 0011 has no previous_version; its champion_version is the same fact
    for value in (row.previous_version, row.champion_version):
        if value is not None and not pd.isna(value):
            return str(value)
    return None


# --- helpers ----------------------------------------------------------------------------------------------


def _reconcile(conn: psycopg.Connection, model_name: str, run_date: dt.date, now: dt.datetime) -> Move | None:
    lineage = champion_lineage(recorded_moves(conn, model_name))
    current = current_version(model_name, CHAMPION)
    move = manual_move(model_name, lineage[-1] if lineage else None, current, run_date, now)
    if move is None:
        if current is None and lineage:
            logger.warning("%s has no @champion in the registry (revopt last recorded v%s); nothing recorded",
                           model_name, lineage[-1])
        return None
    logger.warning("%s: @champion was moved outside revopt from %s to v%s; recorded as a manual move", model_name,
                   move.previous_version and f"v{move.previous_version}", move.version)
    _record(conn, move, _version_run_id(model_name, move.version), move_alias=False)
    return move


def _record(conn: psycopg.Connection, move: Move, run_id: str | None, *, move_alias: bool = True) -> None:
    """Insert ``move``'s row, then move the alias and tag the version (inside the caller's transaction:
    a failed alias move leaves no row)."""
    action_seq = conn.execute(
        f"SELECT coalesce(max(action_seq), 0) + 1 FROM {TABLE} WHERE run_date = %s AND model_name = %s "
        "AND candidate_version = %s", (move.run_date, move.model_name, move.version)).fetchone()[0]
    row = move.as_row(action_seq, run_id)
    columns = ", ".join(row)
    conn.execute(f"INSERT INTO {TABLE} ({columns}) VALUES ({', '.join(['%s'] * len(row))})", list(row.values()))
    if move_alias:
        set_alias(move.model_name, CHAMPION, move.version)
    client = MlflowClient()
    for key, value in move.as_tags().items():
        client.set_model_version_tag(move.model_name, move.version, key, value)
    logger.info("%s v%s is @champion (%s by %s, was %s): %s", move.model_name, move.version, move.action, move.actor,
                move.previous_version and f"v{move.previous_version}", move.reason)


def _lock(conn: psycopg.Connection, model_name: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, model_name))


def _require_version(model_name: str, version: str) -> str | None:
    """The version's run id; a LookupError naming the model and its versions if it does not exist."""
    client = MlflowClient()
    try:
        return client.get_model_version(model_name, version).run_id or None
    except mlflow.exceptions.MlflowException:
        try:
            versions = sorted((int(v.version) for v in client.search_model_versions(f"name = '{model_name}'")))
        except mlflow.exceptions.MlflowException:
            versions = []
        known = ", ".join(f"v{v}" for v in versions) if versions else "none (is the name right?)"
        raise LookupError(f"registered model {model_name!r} has no version {version!r}; its versions: {known}") from None


def _version_run_id(model_name: str, version: str) -> str | None:
    try:
        return MlflowClient().get_model_version(model_name, version).run_id or None
    except mlflow.exceptions.MlflowException:
        return None


def _required(what: str, text: str | None) -> str:
    if text is None or not str(text).strip():
        raise ValueError(f"a {what} is required: say why the alias moves (it is recorded in {TABLE} and as a tag)"
                         if what == "reason" else f"an {what} is required (who moves the alias)")
    return str(text).strip()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
