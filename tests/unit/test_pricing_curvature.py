"""The shared curvature of the log-price response (ml.families.pricing.estimator.CURVATURE_TERM): kept only
when constant elasticity is rejected, and then the shift it made widens the elasticity's interval."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from ml.families.pricing.estimator import CURVATURE_TERM, ElasticityConfig, _estimate
from revopt.sample_data.panel import generate_panel
from test_pricing_grain import scanner_panel


def _fit(misspecified: bool):
    store = generate_panel(n_stores=30, n_brands=5, periods=120, seed=4, misspecified=misspecified)
    estimates, raw = _estimate(scanner_panel(store), ElasticityConfig())
    truth = store.truth["products"].set_index("product_id")["elasticity"].reindex(estimates.products["product_id"])
    return estimates, raw, truth.to_numpy()


@pytest.fixture(scope="module")
def fits():
    return {misspecified: _fit(misspecified) for misspecified in (False, True)}


def _coverage(estimates, truth) -> float:
    p = estimates.products
    return float(((p["elasticity_low"] <= truth) & (truth <= p["elasticity_high"])).mean())


def test_constant_elasticity_is_kept_when_the_data_do_not_reject_it(fits):
    estimates, raw, truth = fits[False]
    assert abs(estimates.params["curvature_z"]) < 2.0
    assert f"{CURVATURE_TERM}_effect" not in estimates.params
    assert not np.any(raw.specification_allowance > 0)
    assert np.abs(estimates.products["elasticity"] - truth).mean() < 0.3


def test_a_saturating_response_is_detected_and_widens_the_intervals(fits):
    estimates, raw, truth = fits[True]
    # the generator's tanh saturation: deep cuts sell less than constant elasticity says (kappa > 0 for e < 0)
    assert estimates.params["curvature_z"] > 2.0
    assert estimates.params[f"{CURVATURE_TERM}_effect"] > 0
    allowance = raw.specification_allowance[np.isfinite(raw.elasticity)]
    assert np.median(allowance) > 0.02
    p = estimates.products
    width = (p["elasticity_high"] - p["elasticity_low"]).to_numpy()
    sampling = 2 * norm.ppf(0.95) * p["elasticity_sd"].to_numpy()
    np.testing.assert_allclose(width - sampling, 2 * raw.specification_allowance, atol=1e-6)
    assert _coverage(estimates, truth) > 0.8


def test_the_curvature_enters_the_expected_units_at_a_price_away_from_the_mean(fits):
    estimates, raw, _ = fits[True]
    kappa = estimates.params[f"{CURVATURE_TERM}_effect"]
    p = estimates.products
    offset = np.log(p["current_list_price"].to_numpy()) - raw.price_mean
    assert np.abs(offset).max() > 0.05
    # expected units relative to a plain constant-elasticity forecast from the same level
    e = p["elasticity"].to_numpy()
    ratio = p["expected_daily_units"].to_numpy() / np.exp(raw.level_last + e * offset)
    np.testing.assert_allclose(np.log(ratio / np.median(ratio * np.exp(-kappa * offset**3))), kappa * offset**3, atol=1e-6)
