"""A synthetic scanner panel loads into the source contract: NULL depths and listing ends survive COPY."""

from __future__ import annotations

import pytest

from revopt.platform.postgres import read_frame
from revopt.platform.stack import connect_postgres
from revopt.sample_data.panel import generate_panel, load_panel

pytestmark = pytest.mark.e2e


def test_a_panel_loads_with_its_nulls_and_replaces_the_sources(settings) -> None:
    panel = generate_panel(n_stores=4, n_brands=3, periods=40, seed=5)
    rows = load_panel(settings, panel)
    for name in ("products", "product_prices", "promotions", "product_sales", "listings", "orders"):
        assert rows[f"shop.{name}"] == len(panel.shop[name]), name
    assert rows["truth.cross_elasticities"] == len(panel.truth["cross_elasticities"]) > 0
    with connect_postgres(settings) as conn:
        counts = read_frame(conn, """
            SELECT (SELECT count(*) FROM shop.promotions WHERE depth IS NULL) AS no_depth,
                   (SELECT count(*) FROM shop.listings WHERE end_date IS NULL) AS still_listed,
                   (SELECT count(*) FROM shop.product_sales WHERE units = 0) AS zero_units,
                   (SELECT sum(revenue) FROM shop.product_sales) AS revenue,
                   (SELECT count(*) FROM shop.orders) AS orders,
                   (SELECT count(*) FROM truth.promotion_effects) AS effects
        """).iloc[0]
    promotions, listings, sales = panel.shop["promotions"], panel.shop["listings"], panel.shop["product_sales"]
    assert counts["no_depth"] == (promotions["promo_type"] != "price_reduction").sum() > 0
    assert counts["still_listed"] == listings["end_date"].isna().sum() > 0
    assert counts["zero_units"] == (sales["units"] == 0).sum()
    assert float(counts["revenue"]) == pytest.approx(sales["revenue"].sum(), abs=0.01)
    assert counts["orders"] == 0 and counts["effects"] == 3
