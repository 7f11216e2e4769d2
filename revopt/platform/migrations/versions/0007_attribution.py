"""Attribution: every model's credit per channel and campaign, and per order (docs/attribution.md).

- ``scores.attribution``: per run date, model, channel and campaign the orders of the attribution window
  credited to it (conversions, revenue), the window's spend and ROAS; every model's conversions and
  revenue sum to the window's orders (checked before publishing).
- ``scores.order_attribution``: per run date, order, model, channel and campaign the order's credit.
- ``scores.channel_attribution``: a view, ``scores.attribution`` summed over campaigns.
- ``*_latest`` views at the latest run date, like the other published tables.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from revopt.platform.migrations import create_table, latest_view

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ATTRIBUTION = (
    ("run_date", "date NOT NULL", "the nightly run (orders of the window_days before it)"),
    ("model", "text NOT NULL", "first_touch, last_non_direct_touch, linear, time_decay, position_based, markov, "
                               "shapley, or recorded (the channel the store recorded on the order)"),
    ("channel", "text NOT NULL", "the credited channel ((none): an order without touches)"),
    ("campaign", "text", "the credited campaign (NULL: none, i.e. channel-level spend or touches without one)"),
    ("conversions", "double precision NOT NULL", "orders credited (fractional; a model's sum is the window's orders)"),
    ("revenue", "double precision NOT NULL", "order value credited (a model's sum is the window's revenue)"),
    ("spend", "double precision NOT NULL", "marketing spend of the window (shop.marketing_spend)"),
    ("roas", "double precision", "revenue / spend (NULL without spend)"),
    ("window_days", "integer NOT NULL", "the attribution window (days before run_date)"),
)

ORDER_ATTRIBUTION = (
    ("run_date", "date NOT NULL", "the nightly run"),
    ("order_id", "bigint NOT NULL", "shop.orders.order_id"),
    ("model", "text NOT NULL", "the attribution model (as in scores.attribution)"),
    ("channel", "text NOT NULL", "the credited channel"),
    ("campaign", "text", "the credited campaign (NULL: none)"),
    ("credit", "double precision NOT NULL", "share of the order (sums to 1 per order and model)"),
    ("revenue_credit", "double precision NOT NULL", "credit x order value"),
)


def upgrade() -> None:
    # campaign is NULL for none: a key that treats NULLs as equal (PostgreSQL 15+), not a primary key
    create_table(op, "attribution", ATTRIBUTION, ",\n    UNIQUE NULLS NOT DISTINCT (run_date, model, channel, campaign)",
            "attributed conversions, revenue, spend and ROAS per model, channel and campaign")
    create_table(op, "order_attribution", ORDER_ATTRIBUTION,
            ",\n    UNIQUE NULLS NOT DISTINCT (run_date, order_id, model, channel, campaign)",
            "each order of the attribution window: its credit per model, channel and campaign")
    op.execute(
        "CREATE OR REPLACE VIEW scores.channel_attribution AS "
        "SELECT run_date, model, channel, sum(conversions) AS conversions, sum(revenue) AS revenue, "
        "sum(spend) AS spend, sum(revenue) / nullif(sum(spend), 0) AS roas, max(window_days) AS window_days "
        "FROM scores.attribution GROUP BY run_date, model, channel"
    )
    op.execute("COMMENT ON VIEW scores.channel_attribution IS 'scores.attribution summed over campaigns'")
    for table in ("attribution", "order_attribution", "channel_attribution"):
        latest_view(op, table)


def downgrade() -> None:
    for table in ("channel_attribution", "order_attribution", "attribution"):
        op.execute(f"DROP VIEW IF EXISTS scores.{table}_latest")
    op.execute("DROP VIEW IF EXISTS scores.channel_attribution")
    for table in ("order_attribution", "attribution"):
        op.execute(f"DROP TABLE IF EXISTS scores.{table}")
