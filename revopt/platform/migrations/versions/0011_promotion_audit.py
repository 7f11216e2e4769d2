"""``scores.model_promotions`` records every move of ``@champion``, not only the gate's decisions (docs/workbench.md,
"Promotion and rollback"; :mod:`ml.promotion`).

- ``action``: ``gate`` (the nightly promotion gate; every row written before this revision), ``promote`` and
  ``rollback`` (``revopt model promote`` / ``rollback``), ``manual`` (a move made in the MLflow UI or API, noticed
  by the next run); ``actor``: who (the gate: ``promotion gate``; a person: ``--actor``, ``REVOPT_ACTOR`` or the OS
  user); ``previous_version``: where ``@champion`` pointed before (old rows: their ``champion_version``);
  ``recorded_at``: when (old rows: their run date, 00:00 UTC).
- The key gains ``action_seq``: 0 for the gate's row of a run date, model and version (a re-run replaces it, as
  before: the gate writes with ``key=(..., "action_seq")``), 1, 2, ... for the hand moves of that version that day,
  so two promotions of one version on one day are both kept.
- A hand move has no test-window statistics: ``metric``, ``higher_is_better``, ``candidate_value``, ``margin`` and
  ``mlflow_run_id`` may be NULL, except on ``gate`` rows (a check says so).
- ``model_promotions_latest`` stays "the latest promotion-gate decision per model": ``action = 'gate'`` rows only
  (re-created, so its ``*`` includes the new columns).

Written to run again on a database that has it (tests re-run every revision from 0001).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLE = "scores.model_promotions"
ACTIONS = ("gate", "promote", "rollback", "manual")
#: columns only a gate decision has (NOT NULL before this revision)
GATE_ONLY = ("metric", "higher_is_better", "candidate_value", "margin", "mlflow_run_id")
COLUMNS = (
    ("action", "text", "'gate'", "gate (the nightly promotion gate), promote or rollback (revopt model ...), manual "
                                 "(moved in the MLflow UI or API, noticed by the next run)"),
    ("actor", "text", "'promotion gate'", "who moved the alias: promotion gate, a person (--actor, REVOPT_ACTOR or "
                                          "the OS user), or unknown (MLflow UI or API)"),
    ("previous_version", "text", None, "the version @champion pointed at before this row (NULL: none)"),
    ("recorded_at", "timestamptz", "now()", "when the alias moved or the gate decided (rows before revision 0011: "
                                            "their run date, 00:00 UTC)"),
    ("action_seq", "integer", "0", "0: the gate's row of its run date (a re-run replaces it); 1, 2, ...: moves by "
                                   "hand of this version that day, in order"),
)
LATEST_VIEW = ("CREATE VIEW scores.model_promotions_latest AS "
               "SELECT DISTINCT ON (model_name) * FROM scores.model_promotions WHERE action = 'gate' "
               "ORDER BY model_name, run_date DESC, candidate_version::bigint DESC")
#: the view as revisions 0002 / 0003 define it (downgrade)
PREVIOUS_VIEW = ("CREATE VIEW scores.model_promotions_latest AS "
                 "SELECT DISTINCT ON (model_name) * FROM scores.model_promotions "
                 "ORDER BY model_name, run_date DESC, candidate_version::bigint DESC")


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS scores.model_promotions_latest")
    for name, kind, default, comment in COLUMNS:
        op.execute(f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {name} {kind}")
        op.execute("COMMENT ON COLUMN {}.{} IS '{}'".format(TABLE, name, comment.replace("'", "''")))
    op.execute(f"UPDATE {TABLE} SET action = 'gate' WHERE action IS NULL")
    op.execute(f"UPDATE {TABLE} SET actor = 'promotion gate' WHERE actor IS NULL")
    op.execute(f"UPDATE {TABLE} SET previous_version = champion_version WHERE previous_version IS NULL AND action = 'gate'")
    op.execute(f"UPDATE {TABLE} SET recorded_at = run_date::timestamp AT TIME ZONE 'UTC' WHERE recorded_at IS NULL")
    op.execute(f"UPDATE {TABLE} SET action_seq = 0 WHERE action_seq IS NULL")
    for name, _, default, _ in COLUMNS:
        if default is not None:
            op.execute(f"ALTER TABLE {TABLE} ALTER COLUMN {name} SET DEFAULT {default}, ALTER COLUMN {name} SET NOT NULL")
    for name in GATE_ONLY:
        op.execute(f"ALTER TABLE {TABLE} ALTER COLUMN {name} DROP NOT NULL")
    actions = ", ".join(f"'{a}'" for a in ACTIONS)
    op.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS model_promotions_action_check")
    op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT model_promotions_action_check CHECK (action IN ({actions}))")
    gate_columns = " AND ".join(f"{name} IS NOT NULL" for name in GATE_ONLY)
    op.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS model_promotions_gate_check")
    op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT model_promotions_gate_check "
               f"CHECK (action <> 'gate' OR ({gate_columns}))")
    op.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS model_promotions_pkey")
    op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT model_promotions_pkey "
               "PRIMARY KEY (run_date, model_name, candidate_version, action_seq)")
    op.execute(f"COMMENT ON TABLE {TABLE} IS 'every promotion-gate decision and every move of @champion "
               "(revopt model promote / rollback, or noticed after a move in the MLflow UI)'")
    op.execute(LATEST_VIEW)
    op.execute("COMMENT ON VIEW scores.model_promotions_latest IS 'the latest promotion-gate decision per model'")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS scores.model_promotions_latest")
    op.execute(f"DELETE FROM {TABLE} WHERE action <> 'gate'")  # the old shape holds the gate's decisions only
    for constraint in ("model_promotions_pkey", "model_promotions_gate_check", "model_promotions_action_check"):
        op.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS {constraint}")
    op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT model_promotions_pkey PRIMARY KEY (run_date, model_name, candidate_version)")
    for name in GATE_ONLY:
        op.execute(f"ALTER TABLE {TABLE} ALTER COLUMN {name} SET NOT NULL")
    for name, _, _, _ in COLUMNS:
        op.execute(f"ALTER TABLE {TABLE} DROP COLUMN IF EXISTS {name}")
    op.execute(PREVIOUS_VIEW)
