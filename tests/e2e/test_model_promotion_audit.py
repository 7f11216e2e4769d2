"""Promotion as an audited action, against the real registry and scores schema, without training: three versions
of a trivial pyfunc under a name of this module's own; the gate's row written as ``apply_decision`` writes it;
then promote, roll back (twice), a move in the MLflow "UI" (the client), and ``revopt model`` on top."""

from __future__ import annotations

import argparse
import datetime as dt
import uuid

import mlflow
import pytest
from mlflow import MlflowClient

from ml import promotion
from ml.promotion import MANUAL, PROMOTE, ROLLBACK, TAG_ACTION, TAG_BY, TAG_PREVIOUS, TAG_REASON, UNKNOWN_ACTOR
from ml.registry import CHAMPION, current_version, set_alias
from revopt import cli_models, cli_status
from revopt.platform.postgres import read_frame, upsert_rows
from revopt.platform.resources import Resources
from revopt.platform.stack import connect_postgres

GATE_DATE = dt.date(2019, 6, 3)  # before today (the moves by hand), far from other modules' run dates
#: the key the promotion gate (ml.registry.apply_decision) upserts its row with
GATE_KEY = ("run_date", "model_name", "candidate_version", "action_seq")


class _Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [0.5] * len(model_input)


@pytest.fixture(scope="module")
def model(settings) -> str:
    """A registered model with versions 1, 2, 3 of one logged trivial pyfunc, none of them @champion yet."""
    name = f"promotion_audit_{uuid.uuid4().hex[:8]}"
    Resources(settings).use_tracking()
    with mlflow.start_run(run_name=name):
        info = mlflow.pyfunc.log_model(name="model", python_model=_Constant(), pip_requirements=["mlflow"])
    for _ in range(3):
        mlflow.register_model(info.model_uri, name)
    return name


def _gate_row(model_name: str, version: str, champion: str | None, *, reason: str) -> dict:
    """The row ``apply_decision`` upserts for a promoting decision (the statistics abridged)."""
    return {"run_date": GATE_DATE, "model_name": model_name, "candidate_version": version,
            "champion_version": champion, "metric": "roc_auc", "higher_is_better": True, "candidate_value": 0.7,
            "champion_value": None, "margin": 0.0, "promoted": True, "reason": reason, "mlflow_run_id": "gate-run",
            "action": "gate", "actor": "promotion gate", "previous_version": champion,
            "recorded_at": dt.datetime.now(dt.timezone.utc)}


def _rows(settings, model_name: str):
    with connect_postgres(settings) as conn:
        return read_frame(conn, "SELECT * FROM scores.model_promotions WHERE model_name = %s "
                                "ORDER BY recorded_at, action_seq", (model_name,))


def _status_champion(settings, model_name: str) -> tuple:
    """The champion row ``revopt status`` shows for ``model_name`` (version, metric, value), rendered once."""
    with connect_postgres(settings) as conn:
        rows = [row for row in cli_status._champions(conn) if row[0] == model_name]
    cli_status.champions_table(rows)  # a version without a gate metric renders too
    assert len(rows) == 1
    return rows[0][1], rows[0][3], rows[0][4]


def _tags(model_name: str, version: str) -> dict[str, str]:
    return MlflowClient().get_model_version(model_name, version).tags


def test_promote_and_rollback_move_the_alias_and_record_who_when_why(settings, model):
    resources = Resources(settings)
    # the gate promotes v1; its re-run of the same night replaces its row (the key keeps it idempotent)
    with resources.scores() as conn:
        set_alias(model, CHAMPION, "1")
        upsert_rows(conn, "scores.model_promotions", [_gate_row(model, "1", None, reason="first run")], key=GATE_KEY)
        upsert_rows(conn, "scores.model_promotions", [_gate_row(model, "1", None, reason="re-run")], key=GATE_KEY)
    assert list(_rows(settings, model)["reason"]) == ["re-run"]

    moved = promotion.promote(resources, model, "2", "A/B test won", "ana")
    assert (moved.version, moved.previous_version, moved.action) == ("2", "1", PROMOTE)
    assert current_version(model, CHAMPION) == "2"
    assert {k: _tags(model, "2")[k] for k in (TAG_BY, TAG_REASON, TAG_ACTION, TAG_PREVIOUS)} == {
        TAG_BY: "ana", TAG_REASON: "A/B test won", TAG_ACTION: PROMOTE, TAG_PREVIOUS: "1"}

    with pytest.raises(LookupError, match=rf"{model}.*no version '9'.*v1, v2, v3"):
        promotion.promote(resources, model, "9", "typo", "ana")
    with pytest.raises(ValueError, match="already"):
        promotion.promote(resources, model, "2", "again", "ana")
    with pytest.raises(ValueError, match="reason is required"):
        promotion.promote(resources, model, "3", "  ", "ana")
    assert current_version(model, CHAMPION) == "2" and len(_rows(settings, model)) == 2  # refusals record nothing

    promotion.promote(resources, model, "3", "try the newest", "bo")
    back = promotion.rollback(resources, model, "bad night", "bo")
    assert (back.version, back.previous_version, back.action) == ("2", "3", ROLLBACK)
    assert promotion.rollback(resources, model, "still bad", "bo").version == "1"  # one further back, not to v3
    assert current_version(model, CHAMPION) == "1"
    # revopt status names the same champion (moves of one day in the order recorded) with v1's gate metric
    assert _status_champion(settings, model) == ("1", "roc_auc", 0.7)
    with pytest.raises(LookupError, match=rf"'{model}'.*no earlier @champion"):
        promotion.rollback(resources, model, "nothing before v1", "bo")

    promotion.promote(resources, model, "3", "second try", "bo")  # v3 promoted twice today: both kept
    assert _status_champion(settings, model) == ("3", None, None)  # promoted by hand: no gate metric to show
    rows = _rows(settings, model)
    assert list(rows["action"]) == ["gate", PROMOTE, PROMOTE, ROLLBACK, ROLLBACK, PROMOTE]
    assert list(rows["candidate_version"]) == ["1", "2", "3", "2", "1", "3"]
    assert list(rows["previous_version"]) == [None, "1", "2", "3", "2", "1"]
    assert list(rows["actor"]) == ["promotion gate", "ana", "bo", "bo", "bo", "bo"]
    assert sorted(rows.loc[rows["candidate_version"] == "3", "action_seq"]) == [1, 2]
    assert rows["recorded_at"].is_monotonic_increasing
    # downstream apps' view stays the latest gate decision
    with connect_postgres(settings) as conn:
        latest = read_frame(conn, "SELECT action, candidate_version FROM scores.model_promotions_latest "
                                  "WHERE model_name = %s", (model,))
    assert latest.values.tolist() == [["gate", "1"]]


def test_a_move_in_the_mlflow_ui_is_recorded_once_as_manual(settings, model):
    resources = Resources(settings)
    assert current_version(model, CHAMPION) == "3"
    MlflowClient().set_registered_model_alias(model, CHAMPION, "2")  # what the MLflow UI does

    found = [m for m in promotion.record_manual_alias_moves(resources, GATE_DATE) if m.model_name == model]
    assert [(m.version, m.previous_version, m.action, m.actor) for m in found] == [("2", "3", MANUAL, UNKNOWN_ACTOR)]
    assert "v2" in found[0].reason and "v3" in found[0].reason
    assert _tags(model, "2")[TAG_BY] == UNKNOWN_ACTOR and _tags(model, "2")[TAG_ACTION] == MANUAL
    assert not [m for m in promotion.record_manual_alias_moves(resources, GATE_DATE) if m.model_name == model]
    last = _rows(settings, model).iloc[-1]
    assert (last["action"], last["candidate_version"], last["run_date"]) == (MANUAL, "2", GATE_DATE)
    # the history knows it: a rollback undoes the UI's move
    assert promotion.rollback(resources, model, "undo the UI move", "ana").version == "3"


def test_revopt_model_promotes_with_the_actor_from_the_environment_and_shows_the_history(settings, model, capsys,
                                                                                          monkeypatch):
    parser = argparse.ArgumentParser()
    cli_models.add_parser(parser.add_subparsers())
    monkeypatch.setenv(cli_models.ACTOR_ENV, "release bot")

    args = parser.parse_args(["model", "promote", model, "1", "--reason", "pin the first version"])
    assert args.handler(settings, args) == 0
    assert f"{model}: @champion -> v1 (was v3); promote by release bot" in capsys.readouterr().out

    args = parser.parse_args(["model", "history", model])
    assert args.handler(settings, args) == 0
    shown = capsys.readouterr().out
    for word in ("gate", "promote", "rollback", "manual", "release", "ana"):  # the table may wrap long cells
        assert word in shown
