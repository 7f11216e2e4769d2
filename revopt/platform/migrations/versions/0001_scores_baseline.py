"""The scores schema as revopt published it before migrations existed (release 0.1).

Written with IF NOT EXISTS so that a database created by an earlier ``revopt init-db`` (or by a
publish, which used to run this DDL itself) is adopted as it is; the ALTER adds the columns
added after the first release to tables created before them.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCORES_DDL = """
CREATE SCHEMA IF NOT EXISTS scores;

CREATE TABLE IF NOT EXISTS scores.customer_scores (
    run_date              date NOT NULL,
    customer_id           bigint NOT NULL,
    purchase_propensity   double precision NOT NULL,  -- P(completed order in the next N days)
    propensity_model      text NOT NULL,
    propensity_version    text NOT NULL,
    PRIMARY KEY (run_date, customer_id)
);
-- Columns added after the first release: tables created earlier gain them here.
ALTER TABLE scores.customer_scores
    ADD COLUMN IF NOT EXISTS churn_risk     double precision,  -- P(no order in the next M days); NULL: not an active customer
    ADD COLUMN IF NOT EXISTS clv            double precision,  -- expected spend over the next H days
    ADD COLUMN IF NOT EXISTS value_tier     text,              -- high (top 10 % CLV) | medium (next 40 %) | low
    ADD COLUMN IF NOT EXISTS top_factors    jsonb,             -- {"purchase_propensity": [{feature, label, unit, value, contribution, ...}, x3], ...}: docs/explanations.md
    ADD COLUMN IF NOT EXISTS churn_model    text,
    ADD COLUMN IF NOT EXISTS churn_version  text,
    ADD COLUMN IF NOT EXISTS clv_model      text,
    ADD COLUMN IF NOT EXISTS clv_version    text;

CREATE TABLE IF NOT EXISTS scores.price_recommendations (
    run_date                      date NOT NULL,
    product_id                    bigint NOT NULL,
    current_price                 double precision NOT NULL,
    recommended_price             double precision NOT NULL,
    elasticity                    double precision,   -- NULL: could not be estimated (e.g. no price variation)
    elasticity_low                double precision,   -- interval bounds (see docs/pricing.md for the level)
    elasticity_high               double precision,
    expected_units_current        double precision NOT NULL,  -- over the recommendation horizon
    expected_units_recommended    double precision NOT NULL,
    expected_revenue_current      double precision NOT NULL,
    expected_revenue_recommended  double precision NOT NULL,
    expected_profit_current       double precision NOT NULL,
    expected_profit_recommended   double precision NOT NULL,
    binding_guardrail             text NOT NULL,      -- which bound decided the price, or 'none'
    confidence                    text NOT NULL,
    reason                        text NOT NULL,
    model_name                    text NOT NULL,
    model_version                 text NOT NULL,
    PRIMARY KEY (run_date, product_id)
);

CREATE TABLE IF NOT EXISTS scores.send_time_recommendations (
    run_date               date NOT NULL,
    customer_id            bigint NOT NULL,
    day_type               text NOT NULL,              -- 'any', or 'weekday' / 'weekend' when the backtest favoured separate curves
    timezone               text NOT NULL,              -- the zone the hours are in (UTC when the customer's zone is unknown)
    best_hour              smallint NOT NULL,          -- local hour 0..23, never a quiet hour
    runner_up_hour         smallint,                   -- best allowed hour at least 2 h from best_hour
    default_hour           smallint NOT NULL,          -- the store's default send hour
    expected_rate_best     double precision NOT NULL,  -- expected open rate at best_hour (activity share when signal = 'activity')
    expected_rate_default  double precision NOT NULL,  -- the same at default_hour
    n_events               bigint NOT NULL,            -- sends, opens, clicks, sessions and orders behind the estimate
    signal                 text NOT NULL,              -- 'email' | 'activity' | 'prior'
    model_name             text NOT NULL,
    model_version          text NOT NULL,
    PRIMARY KEY (run_date, customer_id, day_type)
);

CREATE TABLE IF NOT EXISTS scores.budget_allocations (
    run_date                          date NOT NULL,
    channel                           text NOT NULL,
    current_spend                     double precision NOT NULL,  -- mean daily spend over the recent window
    recommended_spend                 double precision NOT NULL,  -- daily
    expected_revenue_current          double precision NOT NULL,  -- channel-driven revenue over horizon_days at current spend
    expected_revenue_recommended      double precision NOT NULL,  -- the same at recommended spend
    expected_revenue_recommended_low  double precision,           -- interval bounds (see docs/budget.md for the level)
    expected_revenue_recommended_high double precision,
    marginal_roas                     double precision,           -- d revenue / d spend at the recommended point
    marginal_roas_low                 double precision,
    marginal_roas_high                double precision,
    binding_constraint                text NOT NULL,              -- 'min' | 'max' | 'max_change' | 'none' | 'excluded'
    horizon_days                      integer NOT NULL,
    moved                             boolean NOT NULL,           -- false: the recommendation is the current split (reason says why)
    reason                            text NOT NULL,
    model_name                        text NOT NULL,
    model_version                     text NOT NULL,
    PRIMARY KEY (run_date, channel)
);

CREATE TABLE IF NOT EXISTS scores.data_quality (         -- one row per validated dataset and run date (the latest validation)
    run_date        date NOT NULL,
    dataset         text NOT NULL,
    success         boolean NOT NULL,
    row_count       bigint NOT NULL,
    lookback_days   integer,                              -- the extract window the rows came from (NULL: not windowed)
    evaluated       integer NOT NULL,
    failed          integer NOT NULL,
    failures        text NOT NULL,                        -- one line per failed expectation: expectation, column, expected, seen
    result_path     text NOT NULL,                        -- GX validation result (JSON)
    docs_path       text NOT NULL,                        -- GX data docs page (HTML)
    validated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_date, dataset)
);

CREATE TABLE IF NOT EXISTS scores.feature_drift (       -- per-column drift of tonight's features / scores vs the training reference
    run_date           date NOT NULL,
    column_name        text NOT NULL,
    kind               text NOT NULL,                     -- 'feature' | 'score'
    stattest           text NOT NULL,                     -- the test Evidently applied
    drift_score        double precision,                  -- its statistic (p-value or distance, see docs/drift.md)
    threshold          double precision,
    drifted            boolean NOT NULL,
    reference_model    text NOT NULL,                     -- the champion whose training features are the reference
    reference_version  text NOT NULL,
    PRIMARY KEY (run_date, column_name)
);

CREATE TABLE IF NOT EXISTS scores.drift_checks (        -- one decision per run date
    run_date           date PRIMARY KEY,
    drift_share        double precision NOT NULL,         -- share of feature columns drifted
    threshold          double precision NOT NULL,         -- retraining is requested above this share
    retrain_requested  boolean NOT NULL,
    reason             text NOT NULL,
    n_reference        bigint NOT NULL,
    n_current          bigint NOT NULL,
    reference_model    text NOT NULL,
    reference_version  text NOT NULL,
    mlflow_run_id      text NOT NULL                      -- the run holding the Evidently HTML report
);

CREATE TABLE IF NOT EXISTS scores.model_promotions (   -- every promotion-gate decision
    run_date           date NOT NULL,
    model_name         text NOT NULL,
    candidate_version  text NOT NULL,
    champion_version   text,                          -- NULL: there was no champion
    metric             text NOT NULL,
    higher_is_better   boolean NOT NULL,
    candidate_value    double precision NOT NULL,
    champion_value     double precision,              -- NULL: champion could not be evaluated
    margin             double precision NOT NULL,
    promoted           boolean NOT NULL,
    reason             text NOT NULL,
    mlflow_run_id      text NOT NULL,
    PRIMARY KEY (run_date, model_name, candidate_version)
);
"""


def upgrade() -> None:
    op.execute(SCORES_DDL)


def downgrade() -> None:
    raise NotImplementedError("revopt does not drop its published tables: restore a backup instead")
