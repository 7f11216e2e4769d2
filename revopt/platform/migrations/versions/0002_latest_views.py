"""``scores.<table>_latest`` views: what downstream apps read.

Each view shows the latest run date of its table. A publish replaces a run date in one
transaction, so every run date present is complete: the view moves from the previous complete run
to the new one at the publish's commit, never in between. ``model_promotions_latest`` is the
latest decision per model instead.

A view's ``*`` is expanded when it is created: a later migration that adds columns to a table
must re-create its view.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: Tables whose latest run date a view shows.
LATEST_RUN_TABLES = (
    "customer_scores", "price_recommendations", "send_time_recommendations", "budget_allocations",
    "data_quality", "feature_drift", "drift_checks",
)


def upgrade() -> None:
    for table in LATEST_RUN_TABLES:
        op.execute(
            f"CREATE OR REPLACE VIEW scores.{table}_latest AS "
            f"SELECT * FROM scores.{table} WHERE run_date = (SELECT max(run_date) FROM scores.{table})"
        )
        op.execute(f"COMMENT ON VIEW scores.{table}_latest IS 'scores.{table} at its latest run date'")
    op.execute(
        "CREATE OR REPLACE VIEW scores.model_promotions_latest AS "
        "SELECT DISTINCT ON (model_name) * FROM scores.model_promotions "
        "ORDER BY model_name, run_date DESC, candidate_version::bigint DESC"
    )
    op.execute("COMMENT ON VIEW scores.model_promotions_latest IS 'the latest promotion-gate decision per model'")


def downgrade() -> None:
    for table in (*LATEST_RUN_TABLES, "model_promotions"):
        op.execute(f"DROP VIEW IF EXISTS scores.{table}_latest")
