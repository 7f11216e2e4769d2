"""Personalisation (docs/personalisation.md): affinity, product recommendations, segments and next best action.

- ``scores.customer_affinity``: per run date, customer, dimension (category / brand) and value, a score in
  [0, 1] from recency-weighted purchases and product views, refreshed several times a day by
  ``revopt_affinity`` (a refresh replaces its day's rows; ``as_of`` says which refresh they are).
- ``scores.affinity_state``: the un-normalised recency-weighted counts a refresh starts from, so the next one
  reads only what arrived since (revopt's own bookkeeping, a few days kept).
- ``scores.recommendations``: the top-K products per customer, with the reason and the model version.
- ``scores.customer_segments`` and ``scores.segment_profiles``: lifecycle segments (rules) and behavioural
  clusters (described in words) per customer, and each segment's size and profile.
- ``scores.next_best_action``: one action per customer with its expected incremental value and interval.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from revopt.platform.migrations import create_table, latest_view

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_NUM = "double precision"
_RUN = ("run_date", "date NOT NULL", "the run (a nightly run, or the day of an affinity refresh)")

_COUNTS = (
    ("as_of", "timestamptz NOT NULL", "the refresh's data cutoff: interactions before it are counted"),
    ("customer_id", "bigint NOT NULL", "customer"),
    ("dimension", "text NOT NULL", "category or brand"),
    ("value", "text NOT NULL", "the category or brand"),
)
_DECAYED = (
    ("purchases", _NUM + " NOT NULL", "order lines in this value, each weighted 2^(-age / half-life)"),
    ("views", _NUM + " NOT NULL", "product views in this value, weighted the same way"),
    ("last_interaction", "timestamptz", "the latest purchase or view counted"),
)

AFFINITY = (
    _RUN, *_COUNTS,
    ("affinity", _NUM + " NOT NULL", "score in [0, 1] (docs/personalisation.md says how to read it)"),
    ("interest", _NUM + " NOT NULL", "purchases + affinity_view_weight x views: the un-normalised score"),
    *_DECAYED,
)
STATE = (_RUN, *_COUNTS, *_DECAYED)

RECOMMENDATIONS = (
    _RUN,
    ("customer_id", "bigint NOT NULL", "customer"),
    ("rank", "integer NOT NULL", "1 = first recommendation"),
    ("product_id", "bigint NOT NULL", "recommended product"),
    ("category", "text", "its category"),
    ("score", _NUM + " NOT NULL", "the model's score (comparable within a customer's list)"),
    ("reason", "text NOT NULL", "why: bought with <product>, popular in your segment, popular, model"),
    ("reason_product_id", "bigint", "the product of 'bought with' (NULL otherwise)"),
    ("source", "text NOT NULL", "model, segment_popularity or popularity (cold start)"),
    ("model_name", "text NOT NULL", "the recommendations model"),
    ("model_version", "text NOT NULL", "its version"),
)

SEGMENTS = (
    _RUN,
    ("customer_id", "bigint NOT NULL", "customer"),
    ("lifecycle_segment", "text NOT NULL", "prospect, new, champion, at_risk, active, hibernating or lost"),
    ("lifecycle_reason", "text NOT NULL", "the rule that placed the customer, with the numbers"),
    ("cluster", "integer NOT NULL", "behavioural cluster (see scores.segment_profiles)"),
    ("cluster_label", "text NOT NULL", "the cluster described in words"),
    ("recency_days", _NUM, "days since the last order (NULL: none)"),
    ("frequency", "integer NOT NULL", "orders in the history read"),
    ("monetary", _NUM + " NOT NULL", "their value"),
    ("churn_risk", _NUM, "tonight's churn risk (NULL: not scored)"),
    ("predicted_clv", _NUM, "tonight's predicted CLV (NULL: not scored)"),
)

PROFILES = (
    _RUN,
    ("kind", "text NOT NULL", "lifecycle or cluster"),
    ("segment", "text NOT NULL", "the segment, or the cluster number"),
    ("customers", "integer NOT NULL", "customers in it"),
    ("share", _NUM + " NOT NULL", "their share of all customers"),
    ("description", "text NOT NULL", "the segment described in words"),
    ("profile", "jsonb NOT NULL", "feature -> the segment's mean"),
)

ACTIONS = (
    _RUN,
    ("customer_id", "bigint NOT NULL", "customer"),
    ("action", "text NOT NULL", "retention_offer, win_back, cross_sell, upsell or do_nothing"),
    ("product_id", "bigint", "the product of a cross-sell or upsell"),
    ("discount", _NUM, "the offer's discount (fraction off)"),
    ("expected_incremental_value", _NUM + " NOT NULL", "uplift x value - cost, in currency"),
    ("value_low", _NUM + " NOT NULL", "its interval"),
    ("value_high", _NUM + " NOT NULL", ""),
    ("uplift", _NUM, "incremental probability of ordering (offers)"),
    ("expected_cost", _NUM + " NOT NULL", "discounts and contact cost expected"),
    ("reason", "text NOT NULL", "why this action, with the numbers; or why none"),
    ("email_opt_in", "boolean NOT NULL", "marketing consent (without it the action is do_nothing)"),
    ("lifecycle_segment", "text", "tonight's lifecycle segment"),
    ("model_versions", "jsonb NOT NULL", "registered model -> version behind the action"),
)

TABLES = {
    "customer_affinity": (AFFINITY, "run_date, customer_id, dimension, value", "customer affinity per category / brand"),
    "affinity_state": (STATE, "run_date, customer_id, dimension, value",
                       "the recency-weighted counts an affinity refresh starts from"),
    "recommendations": (RECOMMENDATIONS, "run_date, customer_id, rank", "top-K product recommendations per customer"),
    "customer_segments": (SEGMENTS, "run_date, customer_id", "lifecycle segment and behavioural cluster per customer"),
    "segment_profiles": (PROFILES, "run_date, kind, segment", "each segment's size and profile"),
    "next_best_action": (ACTIONS, "run_date, customer_id", "one action per customer"),
}
_NO_VIEW = ("affinity_state",)


def upgrade() -> None:
    for table, (columns, key, comment) in TABLES.items():
        create_table(op, table, columns, f",\n    PRIMARY KEY ({key})", comment)
        if table not in _NO_VIEW:
            latest_view(op, table)


def downgrade() -> None:
    for table in reversed(list(TABLES)):
        op.execute(f"DROP VIEW IF EXISTS scores.{table}_latest")
        op.execute(f"DROP TABLE IF EXISTS scores.{table}")
