"""``scores.model_performance``: what each published score turned out to be worth once its horizon passed.

One row per run date scored, family, model version and metric: the realised value of the metric on the
customers scored that night (their outcomes in the family's horizon after it), how many rows it was
computed on, and the same metric of that version on its test window at training time, for comparison.
Written by the nightly outcome check (``ml.pipeline.evaluate_outcomes``); an evaluation re-run on the
same night replaces its rows. ``model_performance_latest`` shows the latest night that evaluated anything.

Written with IF NOT EXISTS / OR REPLACE, like 0001 and 0002, so a database adopted without a revision
table migrates again cleanly.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = (
    ("run_date_scored", "date NOT NULL", "the run date whose published scores are evaluated"),
    ("run_date_evaluated", "date NOT NULL", "the nightly run date that evaluated them (its horizon had passed)"),
    ("family", "text NOT NULL", "the model family (purchase_propensity, churn, clv)"),
    ("model_name", "text NOT NULL", "the registered model that scored"),
    ("model_version", "text NOT NULL", "its version (the champion that night)"),
    ("metric", "text NOT NULL", "roc_auc, pr_auc, calibration_error, lift_top_decile, positive_rate, "
                                "mean_prediction (propensity, churn); rmse, mae, spearman, top_decile_capture, "
                                "total_predicted, total_actual (clv)"),
    ("value", "double precision NOT NULL", "the realised value on the customers scored that night"),
    ("n", "integer NOT NULL", "customers it was computed on"),
    ("horizon_days", "integer NOT NULL", "the version's horizon: outcomes in [run_date_scored, + horizon_days)"),
    ("test_value", "double precision", "the same metric of the version on its test window at training (NULL: unknown)"),
)


def upgrade() -> None:
    columns = ",\n    ".join(f"{name} {kind}" for name, kind, _ in COLUMNS)
    op.execute(
        f"CREATE TABLE IF NOT EXISTS scores.model_performance (\n    {columns},\n"
        "    PRIMARY KEY (run_date_scored, family, model_version, metric)\n)"
    )
    op.execute("COMMENT ON TABLE scores.model_performance IS "
               "'realised performance of published scores once their horizon passed, next to the test-window value'")
    for name, _, comment in COLUMNS:
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON COLUMN scores.model_performance.{name} IS '{quoted}'")
    op.execute(
        "CREATE OR REPLACE VIEW scores.model_performance_latest AS SELECT * FROM scores.model_performance "
        "WHERE run_date_evaluated = (SELECT max(run_date_evaluated) FROM scores.model_performance)"
    )
    op.execute("COMMENT ON VIEW scores.model_performance_latest IS "
               "'scores.model_performance at its latest run date evaluated'")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS scores.model_performance_latest")
    op.execute("DROP TABLE IF EXISTS scores.model_performance")
