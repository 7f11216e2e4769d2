"""The pricing panel benchmark's truth (benchmarks/pricing_panel.py): ``true_daily_units`` replays the
panel generator and must match what the panel really sold."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.pricing_panel import true_daily_units
from revopt.sample_data.panel import generate_panel


@pytest.mark.parametrize("misspecified", [False, True])
def test_true_daily_units_match_the_units_sold_in_the_last_week(misspecified: bool) -> None:
    # No promotions, no delistings, Poisson units in large numbers: a product's last-week units are its
    # true expected units times the store's shock of that week (shared by the store's products), give or
    # take ~2 % of counting noise. The last week is Christmas week: a missing season would show.
    panel = generate_panel(n_stores=30, n_brands=5, periods=51, seed=5, weekly_units=40_000.0, overdispersion=0.0,
                           price_reduction_share=0.0, display_share=0.0, feature_share=0.0, delisted_share=0.0,
                           misspecified=misspecified)
    truth = true_daily_units(panel)
    assert truth is not None, "the replay of the generator no longer reproduces the panel"
    sales = panel.shop["product_sales"]
    last = sales[sales["period_start"] == sales["period_start"].max()]
    merged = last.merge(truth, on="product_id").merge(panel.brands, on="product_id")
    assert len(merged) == len(panel.shop["products"])
    log_ratio = np.log(merged["units"] / 7.0 / merged["daily_units"])
    store_shock = log_ratio.groupby(merged["store"]).transform("mean")
    assert abs(np.median(log_ratio)) < 0.06
    assert (log_ratio - store_shock).std() < 0.03
    assert 0.03 < store_shock.std() < 0.15  # the store's per-period shock (sd 0.08) is left out of the truth
