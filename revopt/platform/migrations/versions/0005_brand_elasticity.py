"""``scores.price_recommendations`` carries the brand-level elasticity beside the product's.

A store whose products are one brand at many locations (``shop.product_groups``) gets each product's
elasticity shrunk towards its brand's, and the brand's towards its category's
(``ml.families.pricing.estimator.shrink_within_brand``); the brand's posterior and its interval are
published on every product row of the brand. NULL for a store without brands.

The ``_latest`` view is re-created so its ``*`` includes the new columns (0002's note).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = (
    ("brand_elasticity", "the brand's elasticity (posterior mean over its products at every location)"),
    ("brand_elasticity_low", "lower end of its interval (the level of the product's, see docs/pricing.md)"),
    ("brand_elasticity_high", "upper end of its interval"),
)


def upgrade() -> None:
    for name, comment in COLUMNS:
        op.execute(f"ALTER TABLE scores.price_recommendations ADD COLUMN IF NOT EXISTS {name} double precision")
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON COLUMN scores.price_recommendations.{name} IS '{quoted}'")
    op.execute(
        "CREATE OR REPLACE VIEW scores.price_recommendations_latest AS SELECT * FROM scores.price_recommendations "
        "WHERE run_date = (SELECT max(run_date) FROM scores.price_recommendations)"
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS scores.price_recommendations_latest")
    for name, _ in COLUMNS:
        op.execute(f"ALTER TABLE scores.price_recommendations DROP COLUMN IF EXISTS {name}")
    op.execute(
        "CREATE OR REPLACE VIEW scores.price_recommendations_latest AS SELECT * FROM scores.price_recommendations "
        "WHERE run_date = (SELECT max(run_date) FROM scores.price_recommendations)"
    )
