"""Acquisition economics, the CAC forecast and campaign analytics (docs/attribution.md).

- ``scores.channel_economics``: per run date, level (channel / campaign), cohort month, channel and
  campaign: new customers credited by the run's attribution model, spend, CAC, realised value and
  predicted CLV per customer, LTV:CAC and payback.
- ``scores.cac_forecasts``: per run date and paid channel, the next 28 days' CAC with its interval, from
  the budget champion's response curves.
- ``scores.campaign_daily``: per run date, day, channel and campaign: traffic, credited conversions and
  revenue, cost, ROAS and their 7- and 28-day trends; ``scores.campaign_segment_daily`` the same per
  customer tier (no cost: it is not split by customer).
- ``scores.campaign_recommendations``: per run date and campaign, what to do (scale up / down, pause,
  change send time) with the expected impact and its interval, and why.

``campaign`` is NULL for none (a store without campaigns, or channel-level rows); the keys treat NULLs as
equal (``UNIQUE NULLS NOT DISTINCT``, PostgreSQL 15+).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from revopt.platform.migrations import create_table, latest_view

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_MONEY = "double precision"

ECONOMICS = (
    ("run_date", "date NOT NULL", "the nightly run"),
    ("level", "text NOT NULL", "channel (campaign NULL: all its campaigns) or campaign"),
    ("cohort_month", "date NOT NULL", "first day of the month of the customers' first completed order"),
    ("channel", "text NOT NULL", "the channel the first orders are credited to"),
    ("campaign", "text", "the campaign (NULL: none, or the channel level)"),
    ("new_customers", _MONEY + " NOT NULL", "first orders credited (fractional; summed over channels: the cohort)"),
    ("spend", _MONEY + " NOT NULL", "the channel's (campaign's) spend in the cohort month"),
    ("cac", _MONEY, "spend / new_customers (NULL: see cac_note)"),
    ("cac_note", "text", "why cac is NULL: unpaid (no spend) or no new customers"),
    ("realised_value_per_customer", _MONEY, "credit-weighted mean value of the cohort's completed orders to date"),
    ("predicted_clv", _MONEY, "credit-weighted mean of tonight's CLV (NULL: no CLV scores)"),
    ("clv_horizon_days", "integer", "the CLV horizon"),
    ("ltv", _MONEY, "realised_value_per_customer + predicted_clv"),
    ("ltv_cac", _MONEY, "ltv / cac"),
    ("payback_days", _MONEY, "days from the first order until the mean cumulative value reaches the CAC"),
    ("payback_reached", "boolean", "whether it has (NULL: no CAC)"),
    ("basis", "text NOT NULL", "revenue (default) or margin"),
    ("attribution_model", "text NOT NULL", "the attribution model that credited the first orders"),
)

FORECASTS = (
    ("run_date", "date NOT NULL", "the nightly run (the forecast covers the horizon_days from it)"),
    ("channel", "text NOT NULL", "paid channel of the budget model"),
    ("horizon_days", "integer NOT NULL", "forecast horizon"),
    ("spend_source", "text", "where the planned spend comes from (recent mean or given)"),
    ("planned_daily_spend", _MONEY, "planned spend per day"),
    ("planned_spend", _MONEY, "planned spend over the horizon"),
    ("expected_orders", _MONEY, "channel-driven orders from the response curve"),
    ("expected_orders_low", _MONEY, "interval (see interval)"),
    ("expected_orders_high", _MONEY, ""),
    ("new_customer_share", _MONEY, "share of the channel's credited orders that were first orders"),
    ("new_customer_share_low", _MONEY, ""),
    ("new_customer_share_high", _MONEY, ""),
    ("expected_new_customers", _MONEY, "expected_orders x new_customer_share"),
    ("expected_new_customers_low", _MONEY, ""),
    ("expected_new_customers_high", _MONEY, ""),
    ("cac", _MONEY, "planned_spend / expected_new_customers"),
    ("cac_low", _MONEY, ""),
    ("cac_high", _MONEY, "NULL: unbounded (some draws expect no new customers)"),
    ("interval", _MONEY, "the intervals' level"),
    ("reason", "text", "why a number is NULL"),
    ("attribution_model", "text NOT NULL", "the attribution model behind the new-customer share"),
    ("model_name", "text NOT NULL", "the budget model"),
    ("model_version", "text", "its version (NULL: no champion)"),
    ("mlflow_run_id", "text", "the forecast's MLflow run"),
)

_COUNTS = ("sessions", "email_sends", "human_opens", "human_clicks")

DAILY = (
    ("run_date", "date NOT NULL", "the nightly run"),
    ("day", "date NOT NULL", "UTC day"),
    ("channel", "text NOT NULL", "channel"),
    ("campaign", "text", "campaign (NULL: none)"),
    *((name, "bigint NOT NULL", "") for name in (*_COUNTS, "impressions", "ad_clicks", "clicks")),
    ("conversions", _MONEY + " NOT NULL", "orders credited by the run's attribution model"),
    ("revenue", _MONEY + " NOT NULL", "order value credited"),
    ("cost", _MONEY + " NOT NULL", "spend"),
    ("roas", _MONEY, "revenue / cost (NULL at zero cost)"),
    *((name, _MONEY, "trailing sum") for name in ("revenue_7d", "cost_7d", "conversions_7d", "revenue_28d", "cost_28d",
                                                  "conversions_28d")),
    ("roas_7d", _MONEY, ""), ("roas_28d", _MONEY, ""),
    ("roas_trend_7d_vs_28d", _MONEY, "roas_7d / roas_28d - 1"),
    ("conversions_trend_7d_vs_28d", _MONEY, "last week's daily conversions over the last four weeks' - 1"),
    ("attribution_model", "text NOT NULL", "the attribution model behind conversions and revenue"),
)

SEGMENT_DAILY = (
    ("run_date", "date NOT NULL", "the nightly run"),
    ("day", "date NOT NULL", "UTC day"),
    ("channel", "text NOT NULL", "channel"),
    ("campaign", "text", "campaign (NULL: none)"),
    ("tier", "text NOT NULL", "customer tier: new / high / mid / low (value), anonymous, unknown"),
    *((name, "bigint NOT NULL", "") for name in _COUNTS),
    ("conversions", _MONEY + " NOT NULL", "orders credited by the run's attribution model"),
    ("revenue", _MONEY + " NOT NULL", "order value credited"),
    ("attribution_model", "text NOT NULL", "the attribution model"),
)

RECOMMENDATIONS = (
    ("run_date", "date NOT NULL", "the nightly run"),
    ("campaign", "text", "campaign (NULL: the channel's spend without a campaign)"),
    ("channel", "text NOT NULL", "channel"),
    ("recommendation", "text NOT NULL", "scale_up, scale_down, pause or change_send_time"),
    ("current_value", _MONEY + " NOT NULL", "today's value (daily spend, or the modal local send hour)"),
    ("recommended_value", _MONEY + " NOT NULL", "the recommended value"),
    ("unit", "text NOT NULL", "daily_spend or local_hour"),
    ("expected_impact", _MONEY + " NOT NULL", "revenue (or opens) over the horizon"),
    ("impact_low", _MONEY + " NOT NULL", "its interval"),
    ("impact_high", _MONEY + " NOT NULL", ""),
    ("reason", "text NOT NULL", "why, with the numbers"),
    ("attribution_model", "text NOT NULL", "the attribution model behind the ROAS"),
)


TABLES = {
    "channel_economics": (ECONOMICS, "run_date, level, cohort_month, channel, campaign",
                          "acquisition economics per cohort month, channel and campaign"),
    "cac_forecasts": (FORECASTS, "run_date, channel", "the next 28 days' CAC per paid channel"),
    "campaign_daily": (DAILY, "run_date, day, channel, campaign", "daily campaign analytics with trends"),
    "campaign_segment_daily": (SEGMENT_DAILY, "run_date, day, channel, campaign, tier",
                               "daily campaign analytics per customer tier"),
    "campaign_recommendations": (RECOMMENDATIONS, "run_date, channel, campaign, recommendation",
                                 "what to do with each campaign, with the number behind it"),
}


def upgrade() -> None:
    for table, (columns, key, comment) in TABLES.items():
        create_table(op, table, columns, f",\n    UNIQUE NULLS NOT DISTINCT ({key})", comment)
        latest_view(op, table)


def downgrade() -> None:
    for table in reversed(list(TABLES)):
        op.execute(f"DROP VIEW IF EXISTS scores.{table}_latest")
        op.execute(f"DROP TABLE IF EXISTS scores.{table}")
