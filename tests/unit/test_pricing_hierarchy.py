"""Brand-level shrinkage (ml.families.pricing.estimator.shrink_within_brand): products that are one brand
at many locations borrow from their brand, brands from their category; intervals keep their level."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.families.pricing.estimator import shrink_within_brand, shrink_within_category

TAU_BRAND, TAU_PRODUCT = 0.5, 0.2


def _products(seed: int, n_brands: int = 24, locations: int = 15, se: float = 0.4):
    rng = np.random.default_rng(seed)
    brand_e = rng.normal(-2.5, TAU_BRAND, n_brands)
    brand = np.repeat(np.arange(n_brands), locations)
    true = brand_e[brand] + rng.normal(0.0, TAU_PRODUCT, brand.size)
    s = np.full(brand.size, se) * rng.uniform(0.7, 1.3, brand.size)
    raw = true + rng.normal(0.0, s)
    labels = np.array([f"brand {b:02d}" for b in brand], dtype=object)
    return raw, s, np.full(brand.size, "coffee", dtype=object), labels, true, brand_e


@pytest.fixture(scope="module")
def fits():
    return [(_products(seed), shrink_within_brand(*_products(seed)[:4])) for seed in range(6)]


def test_both_levels_of_variation_are_recovered(fits):
    taus = np.array([[t["tau_product"], t["tau_brand"]] for _, (_, _, t) in fits])
    assert taus[:, 0].mean() == pytest.approx(TAU_PRODUCT, abs=0.08)
    assert taus[:, 1].mean() == pytest.approx(TAU_BRAND, abs=0.15)


def test_products_borrow_from_their_brand_better_than_from_the_category(fits):
    for (raw, se, category, brand, true, _), (per_product, _, _) in fits:
        flat, _, _ = shrink_within_category(raw, se, category)
        by_brand = np.abs(per_product["elasticity"] - true).mean()
        assert by_brand < np.abs(flat["elasticity"] - true).mean() - 0.05
        assert by_brand < np.abs(raw - true).mean() - 0.1


def test_intervals_cover_at_their_level(fits):
    covered = [((per_product["elasticity_low"] <= true) & (true <= per_product["elasticity_high"])).mean()
               for (_, _, _, _, true, _), (per_product, _, _) in fits]
    assert 0.85 <= np.mean(covered) <= 0.95


def test_the_brand_elasticity_is_published_beside_the_product_and_covers_the_truth(fits):
    covered, errors = [], []
    for (_, _, _, brand, _, brand_e), (per_product, table, _) in fits:
        assert list(table["brand"]) == sorted(set(brand)) and (table["n_products"] == 15).all()
        truth = pd.Series(brand_e, index=[f"brand {b:02d}" for b in range(len(brand_e))]).reindex(table["brand"]).to_numpy()
        covered.append(((table["elasticity_low"] <= truth) & (truth <= table["elasticity_high"])).mean())
        errors.append(np.abs(table["elasticity"] - truth).mean())
        # each product row carries its brand's posterior
        first = per_product.groupby(brand)["brand_elasticity"].first()
        np.testing.assert_allclose(first.reindex(table["brand"]).to_numpy(), table["elasticity"].to_numpy())
    assert np.mean(errors) < 0.15 and 0.8 <= np.mean(covered) <= 1.0


def test_a_product_without_an_estimate_gets_its_brand_and_a_brand_without_any_its_category():
    raw, se, category, brand, _, _ = _products(1)
    raw, se = raw.copy(), se.copy()
    raw[0] = np.nan  # one product of brand 00
    orphan = brand == "brand 01"
    raw[orphan] = np.nan
    per_product, table, taus = shrink_within_brand(raw, se, category, brand)
    assert np.isnan(per_product.loc[0, "elasticity"])
    assert per_product.loc[0, "prior_elasticity"] == pytest.approx(per_product.loc[1, "brand_elasticity"])
    assert per_product.loc[0, "prior_sd"] > taus["tau_product"]
    category_mean = np.nanmean(table.loc[table["n_products"] > 0, "raw_mean"])
    assert per_product.loc[orphan, "brand_elasticity"].iloc[0] == pytest.approx(category_mean, abs=0.15)
    assert table.loc[table["brand"] == "brand 01", "n_products"].item() == 0


def test_the_published_recommendations_carry_the_brand_elasticity():
    from ml.families.pricing.model import PricingModel
    from ml.families.pricing.optimiser import PricingGuardrails

    estimates = pd.DataFrame({
        "product_id": [1, 2], "elasticity": [-2.0, -3.0], "elasticity_low": [-2.5, -3.5], "elasticity_high": [-1.5, -2.5],
        "expected_daily_units": [5.0, 5.0], "has_price_variation": [True, True], "n_days": [200, 200],
        "min_price_observed": [8.0, 8.0], "max_price_observed": [12.0, 12.0], "prior_elasticity": [-2.2, -2.8],
        "brand_elasticity": [-2.2, -2.8], "brand_elasticity_low": [-2.4, -3.0], "brand_elasticity_high": [-2.0, -2.6],
    })
    products = pd.DataFrame({"product_id": [2, 1, 3], "cost": [5.0, 5.0, 5.0], "current_price": [10.0, 10.0, 10.0]})
    prices = PricingModel(estimates, PricingGuardrails(), 7).predict(None, products)
    assert prices["brand_elasticity"].tolist()[:2] == [-2.8, -2.2] and np.isnan(prices["brand_elasticity"].iloc[2])
    assert prices["brand_elasticity_low"].tolist()[:2] == [-3.0, -2.4]
    # a model logged before brands existed publishes NULLs, not an error
    old = PricingModel(estimates.drop(columns=["brand_elasticity", "brand_elasticity_low", "brand_elasticity_high"]),
                       PricingGuardrails(), 7).predict(None, products)
    assert old["brand_elasticity"].isna().all()
