"""Profit-maximising list prices under guardrails, from per-product elasticities.

The optimiser
-------------
Demand at price p is ``q0 * (p / p0) ** e`` with ``p0`` the current list price and ``q0`` the
expected daily units at ``p0`` (the latent level at the end of the history). Profit
``q(p) * (p - cost)`` then peaks at ``cost * e / (1 + e)`` when ``e < -1`` and increases with
price when ``-1 <= e < 0`` (the upper bound binds). The optimum is clipped to the interval the
guardrails allow and placed on the store's price grid.

Prices are on the grid
----------------------
The *price grid* is whole cents or, with ``price_ending`` (e.g. 0.99), the prices ``k + ending`` for
whole ``k`` (0.99, 1.99, ...; an ending of .00 gives 1.00, 2.00, ...). A product's *allowed* prices
are the grid and its current price: keeping a price is always possible when every guardrail allows
it, even when a store's current price is off the grid (5.00 under .99 endings), so the current
price is kept as it is when the product is held and every guardrail allows it, or when no grid
price within bounds earns more; every price that *changes* is on the grid.

The guardrails are intersected in priority order (:data:`GUARDRAIL_PRIORITY`). A guardrail is kept
when the interval so far, cut by its bounds, still holds an allowed price; otherwise it is *relaxed
minimally*: the interval shrinks to the allowed price of the interval so far nearest to the
guardrail's bounds (both, when two are equally near). So of two conflicting guardrails the
lower-priority one is relaxed; a guardrail is relaxed only when it conflicts with higher-priority
ones or its band is too narrow to hold a grid price; and ``min_margin``, first, is never relaxed: no
price is ever below cost x (1 + min_margin) (when that floor is off the grid, the price is the next
grid price above it; a held product whose current price is below the floor moves up to it). The
price is then the allowed price next to the optimum clipped to the interval that earns more (held
products: the one nearest to their current price), so it never leaves the interval. The reason
names every relaxed guardrail.

The binding guardrail
---------------------
``binding_guardrail`` is the guardrail whose own bound the final price sits at (less than one grid
step away: 0.01, or 1.00 with a price ending) *and* without which the price would be different (the
same product priced with that guardrail switched off and everything else unchanged, the decision to
act or hold included); of several, the highest-priority one. When none qualifies alone although the
guardrails did move the price (two of them each hold it at the same grid price), it is the
highest-priority guardrail whose bound the price sits at. Otherwise 'none': the price is the optimum
placed on the grid (at least 0.01), or the current price kept. A relaxed guardrail's bounds are
usually far from the price and then it does not bind: when the margin floor overrides the change
limit the price sits at the floor, ``min_margin`` binds and the reason says ``max_change`` was
relaxed.

Written by hand: a closed form and a few vectorised interval operations per guardrail; a solver
would add a dependency and a loop over products and would still need the rounding rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Guardrails in priority order: when two conflict, the later one is relaxed.
GUARDRAIL_PRIORITY: tuple[str, ...] = ("min_margin", "max_change", "inventory", "competitor_band", "observed_range")

_TOLERANCE = 1e-9
_MIN_PRICE = 0.01  # every price is at least a cent, whatever the guardrails say


@dataclass(frozen=True)
class PricingGuardrails:
    """Bounds every recommended price must respect (see :data:`GUARDRAIL_PRIORITY` for conflicts).

    - ``min_margin``: price >= cost x (1 + min_margin);
    - ``max_change``: price within current x (1 +/- max_change) per run;
    - ``competitor_band``: price within competitor x (1 +/- band) when a competitor price is known
      (None: off);
    - ``observed_range_slack``: price within [min observed x (1 - slack), max observed x (1 + slack)]
      so the demand curve is not extrapolated (None: off);
    - inventory cover (when ``on_hand`` is known and ``inventory_cover``): expected units over the
      horizon at the new price <= on_hand, a lower bound on the price;
    - ``price_ending``: e.g. 0.99 for prices like 12.99, a whole number of cents (None: any whole
      cents), see the module docstring for the price grid;
    - confidence: hold the current price when the elasticity interval is wider than
      ``max_interval_width`` (unless both its ends point the same way, or the move raises profit with
      posterior probability ``min_gain_probability``: :func:`gain_probability`), the product had no
      price variation, or fewer than ``min_days`` days.
    """

    min_margin: float = 0.10
    max_change: float = 0.10
    competitor_band: float | None = 0.15
    observed_range_slack: float | None = 0.05
    inventory_cover: bool = True
    price_ending: float | None = None
    max_interval_width: float = 1.2
    act_when_direction_certain: bool = True
    #: a product whose interval is too wide still moves when the move raises its profit with at least
    #: this posterior probability (None: off); see the confidence rule in the module docstring
    min_gain_probability: float | None = 0.8
    min_days: int = 56

    def __post_init__(self) -> None:
        checks = {
            "min_margin": self.min_margin >= 0,
            "max_change": 0 <= self.max_change < 1,
            "competitor_band": self.competitor_band is None or 0 <= self.competitor_band < 1,
            "observed_range_slack": self.observed_range_slack is None or 0 <= self.observed_range_slack < 1,
            "price_ending": self.price_ending is None or (
                0 <= self.price_ending < 1 and abs(self.price_ending * 100 - round(self.price_ending * 100)) < 1e-6),
            "max_interval_width": self.max_interval_width > 0,
            "min_gain_probability": self.min_gain_probability is None or 0.5 <= self.min_gain_probability < 1,
            "min_days": self.min_days >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"PricingGuardrails.{name} is out of range: {getattr(self, name)!r}")


def _known(products: pd.DataFrame, column: str) -> np.ndarray:
    """``products[column]`` as floats, NaN (unknown) for every product when there is no such column."""
    if column not in products.columns:
        return np.full(len(products), np.nan)
    return products[column].to_numpy(dtype=float, na_value=np.nan)


def _guardrail_bounds(
    guardrails: PricingGuardrails, cost: np.ndarray, current: np.ndarray, e_curve: np.ndarray, daily_units: np.ndarray,
    competitor: np.ndarray, on_hand: np.ndarray, observed_min: np.ndarray, observed_max: np.ndarray, horizon_days: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(lower, upper) per guardrail of :data:`GUARDRAIL_PRIORITY`; NaN where it does not apply."""
    n = len(cost)
    nan = np.full(n, np.nan)
    inf = np.full(n, np.inf)
    bounds = {
        "min_margin": (np.where(np.isfinite(cost), cost * (1.0 + guardrails.min_margin), np.nan), np.where(np.isfinite(cost), inf, np.nan)),
        "max_change": (current * (1.0 - guardrails.max_change), current * (1.0 + guardrails.max_change)),
    }
    stocked = np.isfinite(on_hand) & guardrails.inventory_cover & (e_curve < 0) & (daily_units > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # units(p) * horizon <= on_hand  <=>  p >= p0 * (on_hand / (q0 * horizon)) ** (1 / e) for e < 0
        floor = np.where(on_hand > 0, current * (on_hand / (daily_units * horizon_days)) ** (1.0 / e_curve), np.inf)
    bounds["inventory"] = (np.where(stocked, floor, np.nan), np.where(stocked, inf, np.nan))
    if guardrails.competitor_band is None:
        bounds["competitor_band"] = (nan, nan)
    else:
        known = np.isfinite(competitor) & (competitor > 0)
        band = guardrails.competitor_band
        bounds["competitor_band"] = (np.where(known, competitor * (1.0 - band), np.nan), np.where(known, competitor * (1.0 + band), np.nan))
    if guardrails.observed_range_slack is None:
        bounds["observed_range"] = (nan, nan)
    else:
        known = np.isfinite(observed_min) & np.isfinite(observed_max)
        slack = guardrails.observed_range_slack
        bounds["observed_range"] = (np.where(known, observed_min * (1.0 - slack), np.nan), np.where(known, observed_max * (1.0 + slack), np.nan))
    return bounds


@dataclass(frozen=True)
class _PriceGrid:
    """The prices a store charges: whole cents, or ``k + ending`` for whole ``k >= 0`` (``k >= 1`` for an
    ending of .00). Computes in whole cents, so every price it returns is the float nearest to a whole
    number of cents. Both roundings forgive :data:`_TOLERANCE` (a bound of 1.8300000000000003 is 1.83)."""

    ending: float | None

    @property
    def step(self) -> float:
        return 0.01 if self.ending is None else 1.0

    def _layout(self) -> tuple[float, float, float]:
        """(cents per step, cents of the ending, index of the first price)."""
        if self.ending is None:
            return 1.0, 0.0, 1.0
        ending_cents = float(round(self.ending * 100))
        return 100.0, ending_cents, 0.0 if ending_cents > 0 else 1.0

    def ceil(self, x: np.ndarray) -> np.ndarray:
        """The smallest grid price >= x; +inf for +inf, NaN for NaN."""
        per, offset, first = self._layout()
        with np.errstate(invalid="ignore", over="ignore"):
            k = np.maximum(np.ceil((x * 100.0 - offset - _TOLERANCE * 100.0) / per), first)
        return (k * per + offset) / 100.0

    def floor(self, x: np.ndarray) -> np.ndarray:
        """The largest grid price <= x; -inf below the first grid price, NaN for NaN."""
        per, offset, first = self._layout()
        with np.errstate(invalid="ignore", over="ignore"):
            k = np.floor((x * 100.0 - offset + _TOLERANCE * 100.0) / per)
            return np.where(k >= first, (k * per + offset) / 100.0, np.where(np.isnan(k), np.nan, -np.inf))


def _allowed_ceil(grid: _PriceGrid, x: np.ndarray, keepable: np.ndarray) -> np.ndarray:
    """The smallest allowed price >= x: the grid's, or the current price (``keepable``, NaN when it
    cannot be kept) when it lies in between or is that grid price to within the tolerance."""
    above = grid.ceil(x)
    with np.errstate(invalid="ignore"):
        return np.where((keepable >= x - _TOLERANCE) & (keepable <= above + _TOLERANCE), keepable, above)


def _allowed_floor(grid: _PriceGrid, x: np.ndarray, keepable: np.ndarray) -> np.ndarray:
    """The largest allowed price <= x (see :func:`_allowed_ceil`)."""
    below = grid.floor(x)
    with np.errstate(invalid="ignore"):
        return np.where((keepable <= x + _TOLERANCE) & (keepable >= below - _TOLERANCE), keepable, below)


def _allowed_interval(
    bounds: dict[str, tuple[np.ndarray, np.ndarray]], grid: _PriceGrid, keepable: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Intersect the guardrail intervals in priority order (one loop over guardrails, vectorised
    over products), keeping at every step an allowed price (grid or current) inside. A guardrail
    whose bounds would leave none is *relaxed minimally*: the interval shrinks to the allowed
    price(s) of the interval so far nearest to its bounds (e.g. a margin floor above the max-change
    band gives the first grid price at or above the floor). Returns lower, upper, and per guardrail
    a mask of the products where it was relaxed and one of those where it was relaxed although its
    band overlaps the interval so far (no allowed price in the overlap)."""
    n = len(keepable)
    lower, upper = np.full(n, _MIN_PRICE), np.full(n, np.inf)
    relaxed, gridless = {}, {}
    with np.errstate(invalid="ignore"):
        for name in GUARDRAIL_PRIORITY:
            lo, hi = bounds[name]
            applies = ~np.isnan(lo) | ~np.isnan(hi)
            lo, hi = np.where(np.isnan(lo), -np.inf, lo), np.where(np.isnan(hi), np.inf, hi)
            cut_lower, cut_upper = np.maximum(lower, lo), np.minimum(upper, hi)
            up = _allowed_ceil(grid, cut_lower, keepable)
            relaxed[name] = applies & ~(np.isfinite(up) & (up <= cut_upper + _TOLERANCE))
            gridless[name] = relaxed[name] & (cut_lower <= cut_upper + _TOLERANCE)
            # the allowed prices of [lower, upper] just above and just below the guardrail's band
            down = _allowed_floor(grid, cut_upper, keepable)
            up_ok = np.isfinite(up) & (up <= upper + _TOLERANCE)
            down_ok = np.isfinite(down) & (down >= lower - _TOLERANCE)
            gap_up, gap_down = np.where(up_ok, up - hi, np.inf), np.where(down_ok, lo - down, np.inf)
            to_down, to_up = down_ok & (gap_down <= gap_up + _TOLERANCE), up_ok & (gap_up <= gap_down + _TOLERANCE)
            # (neither: an unbounded interval and a bound at infinity, nothing finite to move towards)
            lower = np.where(relaxed[name], np.where(to_down, down, np.where(to_up, up, lower)), cut_lower)
            upper = np.where(relaxed[name], np.where(to_up, up, np.where(to_down, down, upper)), cut_upper)
    return lower, upper, relaxed, gridless


def _profit(price: np.ndarray, current: np.ndarray, daily_units: np.ndarray, e: np.ndarray, cost: np.ndarray) -> np.ndarray:
    return daily_units * (price / current) ** e * (price - cost)


def _place(
    continuous: np.ndarray, lower: np.ndarray, upper: np.ndarray, grid: _PriceGrid, keepable: np.ndarray,
    profit: Callable[[np.ndarray], np.ndarray], by_profit: np.ndarray,
) -> np.ndarray:
    """The allowed price of [lower, upper] next to ``continuous`` (a price inside it): of the two
    neighbours, the one earning more where ``by_profit`` (ties: the nearer), else the nearer (ties:
    the lower). The interval holds an allowed price, so one of the two is inside it."""
    down = _allowed_floor(grid, continuous, keepable)
    up = _allowed_ceil(grid, continuous, keepable)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        down_ok = np.isfinite(down) & (down >= lower - _TOLERANCE)
        up_ok = np.isfinite(up) & (up <= upper + _TOLERANCE)
        gain = profit(up) - profit(down)
        pick_up = np.where(by_profit & np.isfinite(gain) & (gain != 0), gain > 0, (up - continuous) < (continuous - down))
    return np.where(down_ok & up_ok, np.where(pick_up, up, down), np.where(up_ok, up, down))


def _binding_guardrail(
    price: np.ndarray, bounds: dict[str, tuple[np.ndarray, np.ndarray]], step: float,
    price_without: Callable[[tuple[str, ...]], np.ndarray],
) -> np.ndarray:
    """The guardrail that bound each price, or 'none' (definition in the module docstring);
    ``price_without(names)`` prices every product again with those guardrails switched off."""
    def differs(other: np.ndarray) -> np.ndarray:
        return ~(np.abs(other - price) <= _TOLERANCE)

    with np.errstate(invalid="ignore"):
        at_bound = {name: (np.abs(price - lo) < step - _TOLERANCE) | (np.abs(price - hi) < step - _TOLERANCE)
                    for name, (lo, hi) in bounds.items()}
    binding = np.full(len(price), "none", dtype=object)
    nearest = np.full(len(price), "none", dtype=object)
    for name in reversed(GUARDRAIL_PRIORITY):  # the highest priority is written last and wins
        binding = np.where(at_bound[name] & differs(price_without((name,))), name, binding)
        nearest = np.where(at_bound[name], name, nearest)
    # none binds alone, yet together they moved the price: two hold it at the same grid price
    return np.where((binding == "none") & differs(price_without(GUARDRAIL_PRIORITY)), nearest, binding)


def recommend_prices(
    estimates: pd.DataFrame,
    products: pd.DataFrame,
    guardrails: PricingGuardrails | None = None,
    *,
    horizon_days: int = 7,
    cross_elasticity: float = 0.0,
) -> pd.DataFrame:
    """Profit-maximising list price per product of ``products`` under ``guardrails``.

    ``estimates`` is :attr:`ElasticityEstimates.products` (or any frame with product_id,
    elasticity, elasticity_low, elasticity_high, expected_daily_units, has_price_variation, n_days,
    min_price_observed, max_price_observed, prior_elasticity); ``products`` has product_id, cost,
    current_price and optionally competitor_price and on_hand (:func:`features.demand.pricing_input`
    adds them): a known competitor price switches on the competitor band, a known stock on hand
    the inventory cover (NaN or no column: off).

    Demand at price p is ``q0 (p / p0) ** e`` (p0 = current price, q0 = expected daily units at
    p0), so the unconstrained optimum is ``cost e / (1 + e)`` for ``e < -1`` and the upper bound for
    ``e >= -1``; it is clipped to the guardrail interval and placed on the price grid (whole cents
    or ``price_ending``; see the module docstring). Products with low confidence keep their current
    price, or move to the nearest price the guardrails allow. Expected
    units, revenue and profit are over ``horizon_days``; for products without an elasticity they
    use the category prior (or -1 when there is none either).

    With a ``cross_elasticity`` ``gamma > 0`` (the estimator's shared cross-price elasticity) and the
    estimates' ``substitute_group`` / ``group_share``, the products of a group are priced **jointly**
    (:func:`joint_targets`): product j's demand also follows its substitutes' prices,
    ``prod_k (p_k / p0_k) ** (gamma s_k / (1 - s_j))``, and each confident product's target is its
    best response to the others' prices in the group's profit (raising one product's price sends part
    of its buyers to its siblings, so the joint prices are higher than independent ones); expected
    units include the siblings' new prices.

    Returns product_id, current_price, recommended_price, elasticity, elasticity_low,
    elasticity_high, expected_{units,revenue,profit}_{current,recommended}, binding_guardrail (the
    guardrail whose bound the price sits at and without which it would differ, or 'none': defined
    in the module docstring), confidence ('high' | 'low') and reason (naming every relaxed guardrail), one
    row per product in ``products`` order. Deterministic; no loop over products.
    """
    guardrails = guardrails or PricingGuardrails()
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be >= 1, got {horizon_days}")
    missing = {"product_id", "cost", "current_price"} - set(products.columns)
    if missing:
        raise ValueError(f"products is missing columns {sorted(missing)}")
    ids = products["product_id"].to_numpy()
    est = estimates.drop_duplicates("product_id").set_index("product_id").reindex(ids)

    def column(name: str) -> np.ndarray:
        return est[name].to_numpy(dtype=float) if name in est.columns else np.full(len(ids), np.nan)

    cost = products["cost"].to_numpy(dtype=float)
    current = products["current_price"].to_numpy(dtype=float)
    e, low, high = column("elasticity"), column("elasticity_low"), column("elasticity_high")
    prior = column("prior_elasticity")
    e_curve = np.where(np.isfinite(e), e, np.where(np.isfinite(prior), prior, -1.0))
    daily_units = np.nan_to_num(column("expected_daily_units"), nan=0.0)
    anchored_at = column("current_list_price")  # the price expected_daily_units refers to
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        moved = np.isfinite(anchored_at) & (anchored_at > 0) & (anchored_at != current)
        daily_units = np.where(moved, daily_units * (current / anchored_at) ** e_curve, daily_units)
    n_days = np.nan_to_num(column("n_days"), nan=0.0)
    has_history = np.isfinite(column("n_days"))
    varied = est["has_price_variation"].eq(True).to_numpy() if "has_price_variation" in est.columns else has_history  # NaN: no

    bounds = _guardrail_bounds(
        guardrails, cost, current, e_curve, daily_units,
        _known(products, "competitor_price"), _known(products, "on_hand"),
        column("min_price_observed"), column("max_price_observed"), horizon_days,
    )
    grid = _PriceGrid(guardrails.price_ending)
    keepable = np.where(np.isfinite(current) & (current >= _MIN_PRICE), current, np.nan)
    lower, upper, relaxed, gridless = _allowed_interval(bounds, grid, keepable)

    def best_price(elasticity: np.ndarray, lower: np.ndarray = lower, upper: np.ndarray = upper,
                   target: np.ndarray | None = None) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            optimum = np.where(elasticity < -1.0, cost * elasticity / (1.0 + elasticity), np.inf)
        optimum = optimum if target is None else np.where(np.isfinite(target), target, optimum)
        clipped = np.clip(optimum, lower, upper)
        # no upper bound (no current price, or max_change switched off to find the binding one): the smallest move
        return np.where(np.isinf(clipped), lower, clipped)

    width = high - low
    # the optimal price is increasing in e, so the interval's ends bound every price it allows
    direction_certain = ((best_price(low) > current) & (best_price(high) > current)) | (
        (best_price(low) < current) & (best_price(high) < current))
    gain = gain_probability(best_price(e), current, cost, e, width)
    likely_gain = gain >= guardrails.min_gain_probability if guardrails.min_gain_probability is not None \
        else np.zeros(len(ids), dtype=bool)
    too_wide = (~(width <= guardrails.max_interval_width) & ~(guardrails.act_when_direction_certain & direction_certain)
                & ~likely_gain)
    checks = [  # the first failing check gives the reason
        (~has_history, "hold: no sales in the history"),
        (has_history & ~varied, "hold: no price variation in the history"),
        (n_days < guardrails.min_days, "hold: too little usable history"),
        (~np.isfinite(e), "hold: elasticity not estimated"),
        (too_wide, "hold: elasticity interval too wide"),
    ]
    hold_reason = np.full(len(ids), "", dtype=object)
    for failed, text in reversed(checks):
        hold_reason = np.where(failed, text, hold_reason)
    confident = hold_reason == ""
    hold_reason = np.where(
        hold_reason == "hold: elasticity interval too wide",
        [f"hold: elasticity interval too wide ({w:.2f} > {guardrails.max_interval_width:.2f}), its ends disagree on "
         f"the direction and the move raises profit with probability {g:.2f} only" for w, g in zip(width, gain)],
        hold_reason,
    )

    with np.errstate(divide="ignore", invalid="ignore"):
        optimum = np.where(e < -1.0, cost * e / (1.0 + e), np.inf)
    group = est["substitute_group"].to_numpy(dtype=object) if "substitute_group" in est.columns else None
    share = column("group_share")
    joint = cross_elasticity > 0 and group is not None and np.isfinite(share).any()
    target = None
    if joint:
        target = joint_targets(cost, current, daily_units, e_curve, confident & np.isfinite(e), lower, upper,
                               group, np.nan_to_num(share), cross_elasticity)
        optimum = np.where(np.isfinite(target), target, optimum)

    def profit(price: np.ndarray) -> np.ndarray:
        return _profit(price, current, daily_units, e_curve, cost)

    def price_within(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        continuous = np.where(confident, best_price(e, lower, upper, target), np.clip(current, lower, upper))
        return _place(continuous, lower, upper, grid, keepable, profit, by_profit=confident)

    def price_without(names: tuple[str, ...]) -> np.ndarray:
        off = {name: (np.full(len(ids), np.nan),) * 2 for name in names}
        return price_within(*_allowed_interval({**bounds, **off}, grid, keepable)[:2])

    price = price_within(lower, upper)
    binding = _binding_guardrail(price, bounds, grid.step, price_without)
    kept_off_grid = confident & (price == current) & ~(np.abs(grid.ceil(current) - current) <= _TOLERANCE)

    units_now = daily_units * horizon_days
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        units_new = units_now * (price / current) ** e_curve
        if joint:
            units_new = units_new * _substitution(price, current, group, np.nan_to_num(share), cross_elasticity)

    wide_but_sure = confident & ~(width <= guardrails.max_interval_width)
    reason = np.where(
        e < -1.0,
        [f"profit-maximising price cost x e/(1+e) = {p:.2f} (e = {v:.2f})" for p, v in zip(optimum, e)],
        [f"inelastic demand (e = {v:.2f}): profit rises with price up to the upper bound" for v in e],
    )
    if joint:
        reason = np.where(confident & (e < -1.0) & np.isfinite(target),
                          [f"priced jointly with its substitutes: best response {t:.2f} (cost x e/(1+e) alone = {o:.2f}, "
                           f"e = {v:.2f}, cross-price elasticity {cross_elasticity:.2f})"
                           for t, o, v in zip(target, cost * e / (1.0 + e), e)], reason)
    reason = np.where(wide_but_sure, reason + "; interval wide but all of it moves the price the same way", reason)
    reason = np.where(confident, reason, hold_reason)
    reason = np.where(binding != "none", reason + "; limited by " + binding, reason)
    reason = np.where(~confident & (price != current), reason + "; moved to the nearest price the guardrails allow", reason)
    for name, mask in relaxed.items():
        reason = np.where(mask & gridless[name], reason + f"; relaxed {name} (no price on the grid within it and the "
                          "higher-priority guardrails; the nearest one)", reason)
        reason = np.where(mask & ~gridless[name], reason + f"; relaxed {name} (conflicts with higher-priority "
                          "guardrails; as close as they allow)", reason)
    reason = np.where(kept_off_grid, reason + "; kept the current price (off the price grid): no grid price within "
                      "bounds earns more", reason)

    return pd.DataFrame(
        {
            "product_id": ids,
            "current_price": current,
            "recommended_price": price,
            "elasticity": e,
            "elasticity_low": low,
            "elasticity_high": high,
            "expected_units_current": units_now,
            "expected_units_recommended": units_new,
            "expected_revenue_current": units_now * current,
            "expected_revenue_recommended": units_new * price,
            "expected_profit_current": units_now * (current - cost),
            "expected_profit_recommended": units_new * (price - cost),
            "binding_guardrail": binding.astype(object),
            "confidence": np.where(confident, "high", "low").astype(object),
            "reason": reason.astype(object),
        }
    )


def _substitution(price: np.ndarray, current: np.ndarray, group: np.ndarray, share: np.ndarray,
                  gamma: float) -> np.ndarray:
    """Each product's demand factor from its substitutes' price moves: ``prod_k (p_k / p0_k) ** (gamma
    s_k / (1 - s_j))`` over the other products of its group."""
    moved = share * np.log(price / current)
    total = pd.Series(moved).groupby(group).transform("sum").to_numpy()
    return np.exp(np.where(share < 1.0, gamma * (total - moved) / np.maximum(1.0 - share, 1e-9), 0.0))


_JOINT_ROUNDS = 200
_JOINT_DAMPING = 0.5


def gain_probability(price: np.ndarray, current: np.ndarray, cost: np.ndarray, elasticity: np.ndarray,
                     interval_width: np.ndarray, interval: float = 0.90) -> np.ndarray:
    """The posterior probability that moving from ``current`` to ``price`` raises the product's profit,
    with the elasticity ``N(elasticity, sd)`` and ``sd`` read off the width of its ``interval`` (so a
    specification allowance counts). Profit rises iff ``(p / p0) ** e (p - c) > p0 - c``, i.e. iff
    ``e x > log((p0 - c) / (p - c))`` with ``x = log(p / p0)``: a half-line in ``e``. 0 without a move,
    a finite elasticity or a margin at both prices."""
    from scipy.stats import norm

    z = norm.ppf(0.5 + interval / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log(price / current)
        threshold = np.log((current - cost) / (price - cost)) / x
        sd = interval_width / (2 * z)
        above = 1.0 - norm.cdf((threshold - elasticity) / sd)  # P(e > threshold)
        probability = np.where(x > 0, above, 1.0 - above)
    usable = (np.isfinite(x) & (x != 0) & np.isfinite(elasticity) & (sd > 0) & (current > cost) & (price > cost)
              & np.isfinite(threshold))
    return np.where(usable, probability, 0.0)


def joint_targets(cost: np.ndarray, current: np.ndarray, daily_units: np.ndarray, e: np.ndarray, free: np.ndarray,
                  lower: np.ndarray, upper: np.ndarray, group: np.ndarray, share: np.ndarray,
                  gamma: float) -> np.ndarray:
    """Joint profit-maximising targets of the ``free`` products (confident, elastic) of each substitute
    group; NaN for the others (they stay where the single-product rules put them, and enter their
    siblings' demand at their current price).

    Group profit ``sum_j (p_j - c_j) q_j`` with ``q_j = q0_j (p_j / p0_j)^e_j prod_k (p_k /
    p0_k)^(gamma s_k / (1 - s_j))``. Its first-order condition in ``p_j`` gives the best response
    ``p_j = (c_j e_j - A_j / q_j) / (1 + e_j)`` with ``A_j = gamma s_j sum_{i != j} (p_i - c_i) q_i / (1 -
    s_i)`` (what the siblings gain when j's price rises). Damped Jacobi iterations over all groups at
    once (vectorised), each price clipped to its guardrail interval; the returned target is the best
    response at the converged prices (so the caller clips and places it as it would the single-product
    optimum). Inelastic products (``e >= -1``) keep NaN: profit rises with their price alone already."""
    elastic = free & (e < -1.0) & (daily_units > 0) & np.isfinite(lower)
    if not elastic.any():
        return np.full(len(cost), np.nan)
    price = np.where(elastic, np.clip(cost * e / (1.0 + e), lower, upper), current)
    price = np.where(np.isfinite(price) & (price > 0), price, current)
    weight = np.where(share < 1.0, 1.0 / np.maximum(1.0 - share, 1e-9), 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(_JOINT_ROUNDS):
            units = daily_units * (price / current) ** e * _substitution(price, current, group, share, gamma)
            margin = (price - cost) * units * weight
            siblings = pd.Series(margin).groupby(group).transform("sum").to_numpy() - margin
            response = (cost * e - gamma * share * siblings / np.where(units > 0, units, np.nan)) / (1.0 + e)
            response = np.where(elastic & np.isfinite(response) & (response > 0), response, price)
            updated = np.where(elastic, np.exp((1 - _JOINT_DAMPING) * np.log(price) + _JOINT_DAMPING
                                               * np.log(np.clip(response, lower, upper))), price)
            if np.max(np.abs(np.log(updated) - np.log(price))) < 1e-9:
                price = updated
                break
            price = updated
    return np.where(elastic, response, np.nan)
