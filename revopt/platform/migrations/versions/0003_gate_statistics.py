"""``scores.model_promotions`` records the statistical gate: the test window the decision was made on,
the paired comparison with the champion (difference in the metric's good direction, its 95 %
interval, the one-sided p-value and the test: DeLong or paired bootstrap) and the quality floor (the
family's naive baseline, its value, the candidate's gain over it and that comparison's p-value).
Rows written before this revision keep NULLs there. ``model_promotions_latest`` is re-created so
its ``*`` includes the new columns.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: The view's ``*`` is expanded when it is created, so it is re-created around the column changes.
LATEST_VIEW = ("CREATE VIEW scores.model_promotions_latest AS "
               "SELECT DISTINCT ON (model_name) * FROM scores.model_promotions "
               "ORDER BY model_name, run_date DESC, candidate_version::bigint DESC")

COLUMNS = (
    ("test_window", "text", "the test rows the decision was made on, in words"),
    ("n_test", "integer", "rows of the test window"),
    ("alpha", "double precision", "significance level of both comparisons"),
    ("difference", "double precision", "candidate minus champion, in the metric's good direction"),
    ("ci_low", "double precision", "95 % interval of the difference, low end"),
    ("ci_high", "double precision", "95 % interval of the difference, high end"),
    ("p_value", "double precision", "one-sided p-value of 'the candidate is not better than the champion'"),
    ("test_method", "text", "delong or bootstrap"),
    ("baseline", "text", "the family's naive baseline (the quality floor)"),
    ("baseline_value", "double precision", "the baseline's metric on the test window"),
    ("baseline_difference", "double precision", "candidate minus baseline, in the metric's good direction"),
    ("baseline_p_value", "double precision", "one-sided p-value of 'the candidate is not better than the baseline'"),
)


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS scores.model_promotions_latest")
    for name, kind, comment in COLUMNS:
        op.execute(f"ALTER TABLE scores.model_promotions ADD COLUMN IF NOT EXISTS {name} {kind}")
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON COLUMN scores.model_promotions.{name} IS '{quoted}'")
    op.execute(LATEST_VIEW)
    op.execute("COMMENT ON VIEW scores.model_promotions_latest IS 'the latest promotion-gate decision per model'")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS scores.model_promotions_latest")
    for name, _, _ in COLUMNS:
        op.execute(f"ALTER TABLE scores.model_promotions DROP COLUMN IF EXISTS {name}")
    op.execute(LATEST_VIEW)
