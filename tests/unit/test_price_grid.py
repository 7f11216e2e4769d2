"""Every recommended price is on the store's price grid (whole cents, or the price ending) whichever
guardrail binds, never below the margin floor, and the reason and ``binding_guardrail`` name the
guardrail that really bound (ml.families.pricing.optimiser; revopt issue 16, item 6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml.families.pricing import GUARDRAIL_PRIORITY, PricingGuardrails, recommend_prices

TOL = 1e-9


def _price(cost: float, current: float, e: float, *, half_width: float = 0.2, n_days: int = 300,
           observed: tuple[float, float] = (0.01, 1e7), competitor: float = np.nan, on_hand: float = np.nan,
           horizon_days: int = 7, **guardrails: object) -> pd.Series:
    """One product (10 expected units a day at its current price) priced under ``guardrails``
    (competitor band and observed range off unless given)."""
    est = pd.DataFrame({
        "product_id": [1], "elasticity": [e], "elasticity_low": [e - half_width], "elasticity_high": [e + half_width],
        "expected_daily_units": [10.0], "has_price_variation": [True], "n_days": [n_days],
        "min_price_observed": [observed[0]], "max_price_observed": [observed[1]], "prior_elasticity": [-1.5],
    })
    products = pd.DataFrame({"product_id": [1], "cost": [cost], "current_price": [current],
                             "competitor_price": [competitor], "on_hand": [on_hand]})
    settings_ = {"competitor_band": None, "observed_range_slack": None, **guardrails}
    return recommend_prices(est, products, PricingGuardrails(**settings_), horizon_days=horizon_days).iloc[0]


def _relaxed(reason: str) -> list[str]:
    return [name for name in GUARDRAIL_PRIORITY if f"relaxed {name}" in reason]


# --- the case found on a real panel -------------------------------------------------------------


def test_a_margin_floor_over_the_change_cap_rounds_up_to_the_next_cent_and_names_min_margin():
    # floor 1.66 x 1.10 = 1.826, far above the +/-10 % band [1.08, 1.32] around 1.20: max_change gives way
    rec = _price(1.66, 1.20, -2.0, min_margin=0.10, max_change=0.10)
    assert rec["recommended_price"] == 1.83
    assert rec["binding_guardrail"] == "min_margin"
    assert "limited by min_margin" in rec["reason"] and "limited by max_change" not in rec["reason"]
    assert _relaxed(rec["reason"]) == ["max_change"]
    assert rec["confidence"] == "high"
    # the same with .99 endings, and for a held product (it still has to move up to the floor)
    assert _price(1.66, 1.20, -2.0, min_margin=0.10, max_change=0.10, price_ending=0.99)["recommended_price"] == 1.99
    held = _price(1.66, 1.20, -2.0, n_days=10, min_margin=0.10, max_change=0.10)
    assert (held["recommended_price"], held["binding_guardrail"], held["confidence"]) == (1.83, "min_margin", "low")
    assert "moved to the nearest price the guardrails allow" in held["reason"]


def test_a_floor_on_a_large_price_rounds_up_too():
    rec = _price(123456.789, 100000.0, -2.0, min_margin=0.10, max_change=0.10)  # floor 135802.4679
    assert rec["recommended_price"] == 135802.47 and rec["binding_guardrail"] == "min_margin"


# --- each guardrail binding, its bound off the grid: the price is the grid price just inside it ----


CASES = {
    # name: (product and guardrails, binding guardrail, price in whole cents, price with .99 endings)
    "max_change, cut": (dict(cost=10.0, current=20.07, e=-3.0, max_change=0.13), "max_change", 17.47, 17.99),
    "max_change, raise": (dict(cost=10.0, current=20.07, e=-0.5, max_change=0.13), "max_change", 22.67, 21.99),
    "inventory": (dict(cost=10.0, current=20.0, e=-3.0, on_hand=50.0, max_change=0.2), "inventory", 22.38, 22.99),
    "competitor_band, raise": (dict(cost=10.0, current=20.0, e=-0.5, competitor=21.3, competitor_band=0.05, max_change=0.2),
                               "competitor_band", 22.36, 21.99),
    "competitor_band, cut": (dict(cost=10.0, current=20.0, e=-3.0, competitor=18.1, competitor_band=0.05, max_change=0.2),
                             "competitor_band", 17.20, 17.99),
    "observed_range, cut": (dict(cost=10.0, current=20.0, e=-3.0, observed=(17.31, 30.0), observed_range_slack=0.05,
                                 max_change=0.3), "observed_range", 16.45, 16.99),
    "observed_range, raise": (dict(cost=10.0, current=20.0, e=-0.5, observed=(15.0, 20.91), observed_range_slack=0.05,
                                   max_change=0.2), "observed_range", 21.95, 20.99),
    # optimum 16.17 x 6 / 5 = 19.40 below the floor 16.17 x 1.3 = 21.021
    "min_margin": (dict(cost=16.17, current=22.0, e=-6.0, min_margin=0.3, max_change=0.2), "min_margin", 21.03, 21.99),
}


@pytest.mark.parametrize("ending", [None, 0.99])
@pytest.mark.parametrize("case", list(CASES))
def test_each_guardrail_binds_at_the_grid_price_just_inside_its_bound(case, ending):
    kwargs, binding, cents, nines = CASES[case]
    rec = _price(**kwargs, price_ending=ending)
    assert rec["recommended_price"] == (cents if ending is None else nines)
    assert rec["binding_guardrail"] == binding
    assert f"limited by {binding}" in rec["reason"] and _relaxed(rec["reason"]) == []


def test_every_guardrail_has_a_binding_case():
    assert {binding for _, binding, _, _ in CASES.values()} == set(GUARDRAIL_PRIORITY)


# --- relaxations, holds and kept prices -----------------------------------------------------------


@pytest.mark.parametrize(("competitor", "expected"), [(19.6, 19.99), (21.3, 20.99)])
def test_a_band_holding_no_grid_price_is_relaxed_to_the_nearest_one(competitor, expected):
    # 19.60 +/- 1 % is [19.404, 19.796]: no .99 price and not the current 20.00; 19.99 is 0.194 above it,
    # 18.99 0.414 below (21.30 +/- 1 %: 20.99 is 0.097 below, 21.99 0.477 above)
    rec = _price(10.0, 20.0, -3.0, competitor=competitor, competitor_band=0.01, max_change=0.2, price_ending=0.99)
    assert rec["recommended_price"] == expected
    assert _relaxed(rec["reason"]) == ["competitor_band"] and "no price on the grid within it" in rec["reason"]
    assert rec["binding_guardrail"] == "competitor_band"  # without it the price would be 16.99


def test_a_narrow_change_band_around_an_off_grid_price_keeps_it_rather_than_relaxing():
    # +/-2 % of 3.55 holds no .99 price, but keeping 3.55 breaks no guardrail
    rec = _price(1.0, 3.55, -3.0, max_change=0.02, price_ending=0.99)
    assert rec["recommended_price"] == 3.55 and _relaxed(rec["reason"]) == []
    assert "kept the current price (off the price grid)" in rec["reason"]


def test_a_held_product_keeps_an_off_grid_current_price_the_guardrails_allow():
    rec = _price(3.0, 5.00, -2.0, n_days=10, price_ending=0.99)
    assert (rec["recommended_price"], rec["binding_guardrail"], rec["confidence"]) == (5.00, "none", "low")
    assert "moved" not in rec["reason"] and _relaxed(rec["reason"]) == []


def test_a_held_product_below_the_floor_moves_up_to_the_first_grid_price_above_it():
    for ending, expected in [(None, 5.50), (0.99, 5.99)]:
        rec = _price(5.0, 5.00, -2.0, n_days=10, min_margin=0.1, max_change=0.1, price_ending=ending)
        assert (rec["recommended_price"], rec["binding_guardrail"]) == (expected, "min_margin")
        assert "moved to the nearest price the guardrails allow" in rec["reason"]


def test_an_off_grid_current_price_is_kept_when_no_grid_price_within_bounds_earns_more():
    # optimum 3.40 x 1.5 = 5.10 in [4.50, 5.50]: the .99 prices within bounds are 4.99 only; 5.00 earns more
    rec = _price(3.40, 5.00, -3.0, max_change=0.1, price_ending=0.99)
    assert rec["recommended_price"] == 5.00 and rec["binding_guardrail"] == "none"
    assert "kept the current price (off the price grid)" in rec["reason"]
    assert rec["expected_profit_recommended"] == pytest.approx(rec["expected_profit_current"])


def test_two_guardrails_holding_the_same_grid_price_name_the_higher_priority_one():
    # +/-10 % of 20 allows up to 21.99, so does 21 +/- 5 %: neither alone moves the price, together they do
    rec = _price(10.0, 20.0, -0.5, competitor=21.0, competitor_band=0.05, max_change=0.1, price_ending=0.99)
    assert rec["recommended_price"] == 21.99 and rec["binding_guardrail"] == "max_change"
    assert _relaxed(rec["reason"]) == []


def test_a_relaxed_guardrail_far_from_the_price_does_not_bind_though_it_moved_it():
    # .99 endings, +/-20 % of 3.05 is [2.44, 3.66]: 2.99 and the current 3.05 are allowed, and inelastic demand
    # would keep 3.05. A competitor at 1.75 (band 0) is out of reach: relaxed, it pulls the price down to 2.99.
    # There 1.99 is below the floor (cost 2.00) and below the change limit: each holds the price at 2.99 on its
    # own, so the higher-priority one binds; the competitor's bound is 1.24 away and it does not
    rec = _price(2.00, 3.05, -0.5, competitor=1.75, competitor_band=0.0, min_margin=0.0, max_change=0.2,
                 price_ending=0.99)
    assert rec["recommended_price"] == 2.99 and _relaxed(rec["reason"]) == ["competitor_band"]
    assert rec["binding_guardrail"] == "min_margin"
    assert _price(2.00, 3.05, -0.5, min_margin=0.0, max_change=0.2, price_ending=0.99)["recommended_price"] == 3.05


def test_an_optimum_on_a_bound_it_does_not_need_names_no_guardrail():
    # optimum exactly 15.00, which is also the whole competitor band: the band changes nothing
    rec = _price(10.0, 20.0, -3.0, competitor=15.0, competitor_band=0.0, max_change=0.5)
    assert (rec["recommended_price"], rec["binding_guardrail"]) == (15.0, "none")
    assert "limited by" not in rec["reason"] and _relaxed(rec["reason"]) == []


def test_a_tiny_price_stays_on_the_grid():
    assert _price(0.001, 0.01, -3.0, max_change=0.1)["recommended_price"] == 0.01  # the smallest price
    # floor 0.001 x 21 = 0.021 above 0.01 +/- 10 %: the next grid price up
    for ending, expected in [(None, 0.03), (0.99, 0.99), (0.0, 1.0)]:
        rec = _price(0.001, 0.01, -3.0, min_margin=20.0, max_change=0.1, price_ending=ending)
        assert (rec["recommended_price"], rec["binding_guardrail"]) == (expected, "min_margin")


@pytest.mark.parametrize("ending", [0.995, 0.001])
def test_a_price_ending_that_is_not_whole_cents_is_refused(ending):
    with pytest.raises(ValueError, match="price_ending"):
        PricingGuardrails(price_ending=ending)


# --- property: random guardrails and products ----------------------------------------------------


def _maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


_GUARDRAILS = st.builds(
    PricingGuardrails,
    min_margin=st.one_of(st.sampled_from([0.0, 0.1, 0.3, 1.0]), st.floats(0.0, 2.0)),
    max_change=st.one_of(st.sampled_from([0.0, 0.02, 0.1, 0.5]), st.floats(0.0, 0.9)),
    competitor_band=_maybe(st.one_of(st.sampled_from([0.0, 0.05]), st.floats(0.0, 0.5))),
    observed_range_slack=_maybe(st.one_of(st.sampled_from([0.0, 0.05]), st.floats(0.0, 0.5))),
    inventory_cover=st.booleans(),
    price_ending=st.sampled_from([None, 0.99, 0.95, 0.0]),
    max_interval_width=st.sampled_from([0.3, 1.2, 10.0]),
    act_when_direction_certain=st.booleans(),
    min_days=st.sampled_from([0, 56]),
)

_PRODUCT = st.fixed_dictionaries({
    "scale": st.floats(-2.0, 6.0),  # log10 of the cost: 0.01 .. 1e6
    "cost_cents": st.booleans(),
    "markup": st.floats(0.3, 4.0),  # current price / cost
    "current_off_grid": st.integers(0, 9),  # 0: a current price that is not whole cents
    "competitor": _maybe(st.floats(0.5, 2.0)),  # x current
    "observed_low": _maybe(st.floats(0.5, 1.2)),  # x current
    "observed_span": st.floats(1.0, 2.0),
    "elasticity": st.one_of(st.floats(-6.0, -1.0), st.floats(-1.0, 0.5), st.none()),
    "half_width": st.one_of(st.floats(0.0, 0.5), st.floats(0.0, 3.0)),
    "units": st.one_of(st.sampled_from([0.0, 0.3, 5.0, 80.0]), st.floats(0.0, 200.0)),
    "n_days": st.integers(0, 400),
    "varied": st.sampled_from([True, True, True, False]),
    "on_hand": _maybe(st.one_of(st.sampled_from([0.0, 5.0, 50.0, 500.0]), st.floats(0.0, 1e4))),
})


def _frames(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    cost = np.array([10.0 ** r["scale"] for r in rows])
    cost = np.maximum(np.where([r["cost_cents"] for r in rows], np.round(cost, 2), cost), 0.001)
    current = cost * np.array([r["markup"] for r in rows])
    current = np.maximum(np.where([r["current_off_grid"] == 0 for r in rows], current, np.round(current, 2)), 0.01)

    def column(key: str) -> np.ndarray:
        return np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)

    e, half = column("elasticity"), column("half_width")
    observed_low = current * column("observed_low")
    ids = np.arange(len(rows))
    est = pd.DataFrame({
        "product_id": ids, "elasticity": e, "elasticity_low": e - half, "elasticity_high": e + half,
        "expected_daily_units": column("units"), "has_price_variation": [r["varied"] for r in rows],
        "n_days": column("n_days"), "min_price_observed": observed_low,
        "max_price_observed": observed_low * column("observed_span"), "prior_elasticity": -1.5,
    })
    products = pd.DataFrame({"product_id": ids, "cost": cost, "current_price": current,
                             "competitor_price": current * column("competitor"), "on_hand": column("on_hand")})
    return est, products


def _bounds(est: pd.DataFrame, products: pd.DataFrame, g: PricingGuardrails, horizon: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each guardrail's (lower, upper) bound on the price, NaN where it is off, written out afresh."""
    cost, current = products["cost"].to_numpy(), products["current_price"].to_numpy()
    nan = np.full(len(cost), np.nan)
    comp = products["competitor_price"].to_numpy()
    lo, hi = est["min_price_observed"].to_numpy(), est["max_price_observed"].to_numpy()
    e_curve = est["elasticity"].fillna(est["prior_elasticity"]).to_numpy()
    units, on_hand = est["expected_daily_units"].to_numpy() * horizon, products["on_hand"].to_numpy()
    stocked = g.inventory_cover & ~np.isnan(on_hand) & (e_curve < 0) & (units > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        floor = np.where(on_hand > 0, current * (on_hand / units) ** (1 / e_curve), np.inf)
    return {
        "min_margin": (cost * (1 + g.min_margin), np.full(len(cost), np.inf)),
        "max_change": (current * (1 - g.max_change), current * (1 + g.max_change)),
        "inventory": (np.where(stocked, floor, np.nan), np.where(stocked, np.inf, np.nan)),
        "competitor_band": (nan, nan) if g.competitor_band is None else
        (comp * (1 - g.competitor_band), comp * (1 + g.competitor_band)),
        "observed_range": (nan, nan) if g.observed_range_slack is None else
        (lo * (1 - g.observed_range_slack), hi * (1 + g.observed_range_slack)),
    }


def _next_grid_price(x: np.ndarray, ending: float | None) -> np.ndarray:
    """The smallest price >= x that is whole cents (and ends in ``ending``), written out afresh."""
    with np.errstate(invalid="ignore", over="ignore"):
        if ending is None:
            return np.maximum(np.ceil(x * 100), 1) / 100
        cents = round(ending * 100)
        units = np.maximum(np.ceil((x * 100 - cents) / 100), 0 if cents else 1)
        return (units * 100 + cents) / 100


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(guardrails=_GUARDRAILS, rows=st.lists(_PRODUCT, min_size=1, max_size=25), horizon=st.sampled_from([1, 7, 28]))
def test_every_price_is_on_the_grid_above_the_floor_and_within_every_guardrail_not_relaxed(guardrails, rows, horizon):
    est, products = _frames(rows)
    rec = recommend_prices(est, products, guardrails, horizon_days=horizon)
    p = rec["recommended_price"].to_numpy()
    cost, current = products["cost"].to_numpy(), products["current_price"].to_numpy()
    reason, binding = rec["reason"], rec["binding_guardrail"].to_numpy()
    relaxed = {name: reason.str.contains(f"relaxed {name}", regex=False).to_numpy() for name in GUARDRAIL_PRIORITY}
    bounds = _bounds(est, products, guardrails, horizon)
    assert np.isfinite(p).all() and (p >= 0.01 - TOL).all()
    assert set(binding) <= {*GUARDRAIL_PRIORITY, "none"}

    # on the grid, unless it is the current price kept as it is
    kept = p == current
    cents = np.abs(p * 100 - np.round(p * 100)) < 1e-6
    assert (cents | kept).all(), rec[~(cents | kept)]
    if guardrails.price_ending is not None:
        ends = np.abs(np.round(p * 100) % 100 - round(guardrails.price_ending * 100)) < 1e-6
        assert (ends | kept).all(), rec[~(ends | kept)]

    # the margin floor is never relaxed, held products included
    assert not relaxed["min_margin"].any()
    assert (p >= cost * (1 + guardrails.min_margin) - TOL).all(), rec[p < cost * (1 + guardrails.min_margin) - TOL]

    # within the bounds of every guardrail not named as relaxed
    scale = TOL * np.maximum(1.0, p)
    inside = {name: (~(p < lo - scale) & ~(p > hi + scale)) for name, (lo, hi) in bounds.items()}
    for name in GUARDRAIL_PRIORITY:
        assert (inside[name] | relaxed[name]).all(), (name, rec[~(inside[name] | relaxed[name])])
    units, on_hand = rec["expected_units_recommended"].to_numpy(), products["on_hand"].to_numpy()
    stocked = ~np.isnan(bounds["inventory"][0])
    assert (~stocked | relaxed["inventory"] | (units <= on_hand * (1 + 1e-7) + 1e-9)).all()

    # the highest-priority guardrail relaxed had to be: no grid price, nor the current one, fits it and every
    # guardrail before it (checked with a margin, so that it fails only on clear cases)
    first_relaxed = np.full(len(p), "none", dtype=object)
    for name in reversed(GUARDRAIL_PRIORITY):
        first_relaxed = np.where(relaxed[name], name, first_relaxed)
    for i, name in enumerate(GUARDRAIL_PRIORITY):
        lo = np.max([np.nan_to_num(bounds[n][0], nan=-np.inf) for n in GUARDRAIL_PRIORITY[:i + 1]] + [np.full(len(p), 0.01)], axis=0)
        hi = np.min([np.nan_to_num(bounds[n][1], nan=np.inf) for n in GUARDRAIL_PRIORITY[:i + 1]], axis=0)
        fits = (_next_grid_price(lo, guardrails.price_ending) < hi - 1e-7) | ((current > lo + 1e-7) & (current < hi - 1e-7))
        assert not (fits & (first_relaxed == name)).any(), (name, rec[fits & (first_relaxed == name)])

    # the binding guardrail's bound is less than a grid step from the price, and the reason says so
    step = 0.01 if guardrails.price_ending is None else 1.0
    for name in GUARDRAIL_PRIORITY:
        lo, hi = bounds[name]
        named = binding == name
        with np.errstate(invalid="ignore"):
            near = (np.abs(p - lo) < step) | (np.abs(p - hi) < step)
        assert near[named].all(), rec[named & ~near]
        assert (reason.str.contains(f"limited by {name}", regex=False).to_numpy() == named).all()

    # a current price every guardrail allows forces no relaxation, a held product keeps it, and no
    # confident product earns less than there
    with np.errstate(invalid="ignore"):
        current_ok = np.all([~(current < lo - TOL * np.maximum(1.0, current)) & ~(current > hi + TOL * np.maximum(1.0, current))
                             for lo, hi in bounds.values()], axis=0)
    current_ok &= ~stocked | (rec["expected_units_current"].to_numpy() <= on_hand)
    assert not (current_ok & np.any(list(relaxed.values()), axis=0)).any()
    held = rec["confidence"].to_numpy() == "low"
    assert (p[held & current_ok] == current[held & current_ok]).all()
    gain = rec["expected_profit_recommended"].to_numpy() - rec["expected_profit_current"].to_numpy()
    sure = ~held & current_ok
    assert (gain[sure] >= -1e-9 * np.maximum(1.0, np.abs(rec["expected_profit_current"].to_numpy()[sure]))).all()


def test_substitutes_priced_jointly_earn_more_under_their_cross_elasticity():
    from ml.families.pricing.optimiser import _substitution

    n = 6
    estimates = pd.DataFrame({
        "product_id": np.arange(1, n + 1), "elasticity": [-2.5, -3.0, -2.2, -2.8, -2.5, -3.2],
        "expected_daily_units": [20.0, 10.0, 5.0, 20.0, 10.0, 5.0],
        "has_price_variation": True, "n_days": 300, "min_price_observed": 5.0, "max_price_observed": 20.0,
        "prior_elasticity": -2.5, "substitute_group": ["a"] * 3 + ["b"] * 3,
        "group_share": [20 / 35, 10 / 35, 5 / 35] * 2,
    })
    estimates = estimates.assign(elasticity_low=estimates["elasticity"] - 0.3, elasticity_high=estimates["elasticity"] + 0.3)
    products = pd.DataFrame({"product_id": np.arange(1, n + 1), "cost": 5.0, "current_price": 10.0})
    guardrails = PricingGuardrails(max_change=0.3, observed_range_slack=None)
    gamma = 1.0
    alone = recommend_prices(estimates, products, guardrails, horizon_days=7)
    joint = recommend_prices(estimates, products, guardrails, horizon_days=7, cross_elasticity=gamma)
    assert (joint["recommended_price"] >= alone["recommended_price"]).all()
    assert (joint["recommended_price"] > alone["recommended_price"]).any()
    assert joint["reason"].str.contains("priced jointly with its substitutes").all()

    def true_profit(prices: pd.Series) -> float:
        p = prices.to_numpy()
        units = (estimates["expected_daily_units"] * (p / 10.0) ** estimates["elasticity"]
                 * _substitution(p, np.full(n, 10.0), estimates["substitute_group"].to_numpy(),
                                 estimates["group_share"].to_numpy(), gamma))
        return float(((p - 5.0) * units).sum())

    assert true_profit(joint["recommended_price"]) > true_profit(alone["recommended_price"])
    # its expected units count the siblings' new prices
    siblings = _substitution(joint["recommended_price"].to_numpy(), np.full(n, 10.0),
                             estimates["substitute_group"].to_numpy(), estimates["group_share"].to_numpy(), gamma)
    own = 70.0 * (joint["recommended_price"] / 10.0) ** estimates["elasticity"] * estimates["expected_daily_units"] / 10.0
    np.testing.assert_allclose(joint["expected_units_recommended"], own * siblings)
    # no cross-price elasticity: exactly the single-product prices
    pd.testing.assert_frame_equal(recommend_prices(estimates, products, guardrails, horizon_days=7, cross_elasticity=0.0), alone)
