"""Experiments: their definitions, who is in which variant, and the nightly analysis.

- ``scores.experiments``: one row per experiment, written by ``revopt experiment create / stop``
  and read by the nightly runs. revopt owns it (not ``shop``): the store's schema is read through a
  read-only path, and an experiment is revopt's decision about what it serves, not store data.
- ``scores.experiment_assignments``: one row per experiment and unit, keyed by the run date that
  first assigned it (``run_date``); a unit keeps its variant for the life of the experiment, so a
  re-run of D replaces exactly the units first assigned on D.
- ``scores.experiment_results``: the nightly analysis per run date, experiment, variant and metric.
- ``scores.customer_scores``, ``price_recommendations`` and ``send_time_recommendations`` rows carry
  the experiment and variant that chose what they serve (NULL: no experiment).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

EXPERIMENTS = (
    ("experiment_id", "text PRIMARY KEY", "short id ([a-z0-9_-]), also the default assignment salt"),
    ("name", "text NOT NULL", "what is tested, in words"),
    ("unit", "text NOT NULL", "customer or product"),
    ("kind", "text NOT NULL", "what is served: model (customer scores), price, message (send times)"),
    ("variants", "jsonb NOT NULL", "[{name, weight, config}], the first is the control unless control names another"),
    ("control", "text NOT NULL", "the control variant's name"),
    ("start_date", "date NOT NULL", "first run date that assigns units"),
    ("end_date", "date", "last run date that assigns units (NULL: until stopped)"),
    ("primary_metric", "text NOT NULL", "conversion, revenue_per_unit, order_value or open_rate"),
    ("guardrails", "jsonb NOT NULL", "[{metric, direction, tolerance}]"),
    ("mde", "double precision NOT NULL", "relative minimum detectable effect the experiment is planned for"),
    ("alpha", "double precision NOT NULL", "significance level"),
    ("power", "double precision NOT NULL", "planned power"),
    ("layer", "text NOT NULL", "experiments in one layer never share a unit"),
    ("traffic", "double precision NOT NULL", "share of the layer's units this experiment takes"),
    ("salt", "text NOT NULL", "salt of the variant hash"),
    ("status", "text NOT NULL", "running or stopped"),
    ("stopped_on", "date", "the run date it was stopped on (no new units from then)"),
    ("planned_units", "integer", "units (all variants) the plan needs; the sequential tests are tuned to it"),
    ("created_at", "timestamptz NOT NULL DEFAULT now()", "when it was created (audit only; runs never read it)"),
)

ASSIGNMENTS = (
    ("run_date", "date NOT NULL", "the run date that first assigned the unit"),
    ("experiment_id", "text NOT NULL", "scores.experiments.experiment_id"),
    ("unit_id", "bigint NOT NULL", "customer_id or product_id (the experiment's unit)"),
    ("variant", "text NOT NULL", "the variant the unit is in for the whole experiment"),
)

RESULTS = (
    ("run_date", "date NOT NULL", "the nightly run that analysed (outcomes before it)"),
    ("experiment_id", "text NOT NULL", "scores.experiments.experiment_id"),
    ("variant", "text NOT NULL", "the variant (the control has no estimate)"),
    ("metric", "text NOT NULL", "the primary metric or a guardrail"),
    ("is_primary", "boolean NOT NULL", "the experiment's primary metric"),
    ("n", "integer NOT NULL", "units assigned before the run date"),
    ("mean", "double precision", "the variant's mean of the metric per unit"),
    ("estimate", "double precision", "difference of means vs the control (CUPED-adjusted where a pre-period exists)"),
    ("lift", "double precision", "estimate over the control mean"),
    ("ci_low", "double precision", "fixed-horizon interval of the difference (1 - alpha)"),
    ("ci_high", "double precision", "its upper end"),
    ("p_value", "double precision", "fixed-horizon p-value (z test for conversions, Welch t otherwise)"),
    ("p_value_adjusted", "double precision", "the same adjusted over the treatment variants (Holm)"),
    ("p_value_sequential", "double precision", "always-valid p-value, running minimum over the nightly looks"),
    ("p_value_sequential_adjusted", "double precision", "the same adjusted over the treatment variants (Holm); the "
                                                        "decision reads this one"),
    ("cs_low", "double precision", "always-valid interval of the difference"),
    ("cs_high", "double precision", "its upper end"),
    ("z_statistic", "double precision", "the difference over its standard error (the group-sequential test's z)"),
    ("information_fraction", "double precision", "unit-days in the experiment over the plan's (NULL: no plan)"),
    ("gs_boundary", "double precision", "tonight's group-sequential boundary for |z| (Lan-DeMets O'Brien-Fleming)"),
    ("p_value_gs", "double precision", "repeated p-value of the group-sequential test (< alpha iff a boundary "
                                       "was crossed)"),
    ("gs_low", "double precision", "repeated confidence interval of the difference, low end"),
    ("gs_high", "double precision", "its upper end"),
    ("chance_to_beat", "double precision", "posterior probability the variant beats the control"),
    ("expected_loss", "double precision", "expected loss of choosing it (metric units per unit)"),
    ("cuped_variance_reduction", "double precision", "share of the variance removed by the pre-period covariate"),
    ("srm_p_value", "double precision", "sample ratio mismatch chi-square p-value (per experiment)"),
    ("sequential_test", "text NOT NULL", "which sequential test decided: group (a planned experiment) or msprt"),
    ("decision", "text NOT NULL", "keep running / ship <variant> / stop: no effect / stop: harm on <guardrail> / "
                                  "stop: sample ratio mismatch (per experiment)"),
    ("reason", "text NOT NULL", "why, in words"),
    ("mlflow_run_id", "text", "the experiment's MLflow run (plots)"),
)


#: published tables whose rows say which experiment variant chose what they serve
SERVED = {"customer_scores": "the model versions that scored this row",
          "price_recommendations": "this price (control: held at the current price)",
          "send_time_recommendations": "this send time (control: the default hour)"}


def _create(table: str, columns, key: str, comment: str) -> None:
    body = ",\n    ".join(f"{name} {kind}" for name, kind, _ in columns)
    op.execute(f"CREATE TABLE IF NOT EXISTS scores.{table} (\n    {body}{key}\n)")
    op.execute(f"COMMENT ON TABLE scores.{table} IS '{comment}'")
    for name, _, text in columns:
        quoted = text.replace("'", "''")
        op.execute(f"COMMENT ON COLUMN scores.{table}.{name} IS '{quoted}'")


def upgrade() -> None:
    _create("experiments", EXPERIMENTS, "", "experiment definitions (revopt experiment create)")
    _create("experiment_assignments", ASSIGNMENTS, ",\n    PRIMARY KEY (experiment_id, unit_id)",
            "each unit of an experiment and its variant, by the run date that first assigned it")
    op.execute("CREATE INDEX IF NOT EXISTS experiment_assignments_run_date ON scores.experiment_assignments (run_date)")
    _create("experiment_results", RESULTS, ",\n    PRIMARY KEY (run_date, experiment_id, variant, metric)",
            "nightly experiment analysis: per variant and metric, fixed-horizon and always-valid statistics")
    op.execute(
        "CREATE OR REPLACE VIEW scores.experiment_results_latest AS SELECT * FROM scores.experiment_results "
        "WHERE run_date = (SELECT max(run_date) FROM scores.experiment_results)"
    )
    op.execute("COMMENT ON VIEW scores.experiment_results_latest IS 'scores.experiment_results at its latest run date'")
    for table, served in SERVED.items():
        for name, text in (("experiment_id", f"the experiment whose variant chose {served} (NULL: none)"),
                           ("variant", "that variant")):
            op.execute(f"ALTER TABLE scores.{table} ADD COLUMN IF NOT EXISTS {name} text")
            op.execute(f"COMMENT ON COLUMN scores.{table}.{name} IS '{text}'")
        _latest_view(table)


def downgrade() -> None:
    for table in SERVED:
        op.execute(f"DROP VIEW IF EXISTS scores.{table}_latest")
        for name in ("experiment_id", "variant"):
            op.execute(f"ALTER TABLE scores.{table} DROP COLUMN IF EXISTS {name}")
        _latest_view(table)
    op.execute("DROP VIEW IF EXISTS scores.experiment_results_latest")
    for table in ("experiment_results", "experiment_assignments", "experiments"):
        op.execute(f"DROP TABLE IF EXISTS scores.{table}")


def _latest_view(table: str) -> None:
    # re-created so its * includes the new columns (0002's note)
    op.execute(f"CREATE OR REPLACE VIEW scores.{table}_latest AS SELECT * FROM scores.{table} "
               f"WHERE run_date = (SELECT max(run_date) FROM scores.{table})")
