"""Profit-maximising list prices under guardrails, from per-product elasticities.

The optimiser
-------------
Demand at price p is ``q0 * (p / p0) ** e`` with ``p0`` the current list price and ``q0`` the
expected daily units at ``p0`` (the latent level at the end of the history). Profit
``q(p) * (p - cost)`` then peaks at ``cost * e / (1 + e)`` when ``e < -1`` and increases with
price when ``-1 <= e < 0`` (the upper bound binds). The optimum is clipped to the intersection of
the guardrail intervals; when guardrails conflict, the lower-priority ones are relaxed (see
:data:`GUARDRAIL_PRIORITY`) and the reason says so. Prices are rounded *inward* (to cents, or to
the configured ending) so the rounded price still satisfies every bound that was enforced.
"""

from __future__ import annotations

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
    - ``price_ending``: e.g. 0.99 for prices like 12.99 (None: whole cents);
    - confidence: hold the current price when the elasticity interval is wider than
      ``max_interval_width``, the product had no price variation, or fewer than ``min_days`` days.
    """

    min_margin: float = 0.10
    max_change: float = 0.10
    competitor_band: float | None = 0.15
    observed_range_slack: float | None = 0.05
    inventory_cover: bool = True
    price_ending: float | None = None
    max_interval_width: float = 1.2
    act_when_direction_certain: bool = True
    min_days: int = 56

    def __post_init__(self) -> None:
        checks = {
            "min_margin": self.min_margin >= 0,
            "max_change": 0 <= self.max_change < 1,
            "competitor_band": self.competitor_band is None or 0 <= self.competitor_band < 1,
            "observed_range_slack": self.observed_range_slack is None or 0 <= self.observed_range_slack < 1,
            "price_ending": self.price_ending is None or 0 <= self.price_ending < 1,
            "max_interval_width": self.max_interval_width > 0,
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


def _intersect(bounds: dict[str, tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, ...]:
    """Intersect the guardrail intervals in priority order (one loop over guardrails, vectorised
    over products). A guardrail that would empty the interval is *relaxed minimally*: the interval
    shrinks to its end nearest to that guardrail (e.g. a margin floor above the max-change band
    gives exactly the floor), so the price still gets as close to it as the higher-priority ones
    allow. Returns lower, upper, the guardrail setting each, and a relaxed mask per guardrail."""
    lower, upper = np.full(n, _MIN_PRICE), np.full(n, np.inf)
    lower_by, upper_by = np.full(n, "none", dtype=object), np.full(n, "none", dtype=object)
    relaxed = {}
    for name in GUARDRAIL_PRIORITY:
        lo, hi = bounds[name]
        applies = ~np.isnan(lo) | ~np.isnan(hi)
        lo = np.where(np.isnan(lo), -np.inf, lo)
        hi = np.where(np.isnan(hi), np.inf, hi)
        new_lower, new_upper = np.maximum(lower, lo), np.minimum(upper, hi)
        feasible = (new_lower <= new_upper) & np.isfinite(new_lower)
        relaxed[name] = applies & ~feasible
        take = applies & feasible
        lower_by = np.where(take & (lo > lower), name, lower_by)
        upper_by = np.where(take & (hi < upper), name, upper_by)
        # relaxed: pin to the end of the current interval nearest to the guardrail (when finite)
        towards_upper = relaxed[name] & (lo > upper) & np.isfinite(upper)
        towards_lower = relaxed[name] & (hi < lower)
        lower_by = np.where(towards_upper, name, lower_by)
        upper_by = np.where(towards_lower, name, upper_by)
        lower = np.where(take, new_lower, np.where(towards_upper, upper, lower))
        upper = np.where(take, new_upper, np.where(towards_lower, lower, upper))
    return lower, upper, lower_by, upper_by, relaxed


def _within(price: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    return (price >= lower - _TOLERANCE) & (price <= upper + _TOLERANCE)


def _profit(price: np.ndarray, current: np.ndarray, daily_units: np.ndarray, e: np.ndarray, cost: np.ndarray) -> np.ndarray:
    return daily_units * (price / current) ** e * (price - cost)


def _round_inward(
    price: np.ndarray, lower: np.ndarray, upper: np.ndarray, ending: float | None,
    current: np.ndarray, daily_units: np.ndarray, e: np.ndarray, cost: np.ndarray, prefer_nearest: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Round to the price ending (the more profitable of the two neighbouring endings, or the
    nearer one where ``prefer_nearest``) or else to whole cents, never leaving [lower, upper].
    Returns the price and whether the ending could be applied."""
    cent_lower = np.ceil(lower * 100.0 - 1e-6) / 100.0
    cent_upper = np.floor(np.minimum(upper, 1e12) * 100.0 + 1e-6) / 100.0
    has_cent = cent_lower <= cent_upper
    cents = np.where(has_cent, np.clip(np.round(price * 100.0) / 100.0, cent_lower, cent_upper), price)
    if ending is None:
        return cents, np.ones(len(price), dtype=bool)
    down = np.round(np.floor(price - ending) + ending, 2)
    up = np.round(down + 1.0, 2)
    ok_down, ok_up = (_within(p, lower, upper) & (p > 0) for p in (down, up))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        up_better = _profit(up, current, daily_units, e, cost) > _profit(down, current, daily_units, e, cost)
    up_better = np.where(prefer_nearest, (up - price) < (price - down), up_better)
    chosen = np.where(ok_down & ok_up, np.where(up_better, up, down), np.where(ok_up, up, down))
    applied = ok_down | ok_up
    return np.where(applied, chosen, cents), applied


def recommend_prices(
    estimates: pd.DataFrame,
    products: pd.DataFrame,
    guardrails: PricingGuardrails | None = None,
    *,
    horizon_days: int = 7,
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
    ``e >= -1``; it is clipped to the guardrail interval and rounded inward. Products with low
    confidence keep their current price, or the nearest price the guardrails allow. Expected
    units, revenue and profit are over ``horizon_days``; for products without an elasticity they
    use the category prior (or -1 when there is none either).

    Returns product_id, current_price, recommended_price, elasticity, elasticity_low,
    elasticity_high, expected_{units,revenue,profit}_{current,recommended}, binding_guardrail (the
    guardrail whose bound set the price, or 'none'), confidence ('high' | 'low') and reason, one
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
    varied = est["has_price_variation"].fillna(False).to_numpy(dtype=bool) if "has_price_variation" in est.columns else has_history

    bounds = _guardrail_bounds(
        guardrails, cost, current, e_curve, daily_units,
        _known(products, "competitor_price"), _known(products, "on_hand"),
        column("min_price_observed"), column("max_price_observed"), horizon_days,
    )
    lower, upper, lower_by, upper_by, relaxed = _intersect(bounds, len(ids))

    def best_price(elasticity: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            optimum = np.where(elasticity < -1.0, cost * elasticity / (1.0 + elasticity), np.inf)
        clipped = np.clip(optimum, lower, upper)
        # no upper bound survived (max_change relaxed for the margin floor): the smallest allowed move
        return np.where(np.isinf(clipped), lower, clipped)

    width = high - low
    # the optimal price is increasing in e, so the interval's ends bound every price it allows
    direction_certain = ((best_price(low) > current) & (best_price(high) > current)) | (
        (best_price(low) < current) & (best_price(high) < current))
    too_wide = ~(width <= guardrails.max_interval_width) & ~(guardrails.act_when_direction_certain & direction_certain)
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
        [f"hold: elasticity interval too wide ({w:.2f} > {guardrails.max_interval_width:.2f}) and its ends disagree on the direction" for w in width],
        hold_reason,
    )

    with np.errstate(divide="ignore", invalid="ignore"):
        optimum = np.where(e < -1.0, cost * e / (1.0 + e), np.inf)
    target = np.where(confident, optimum, current)
    continuous = np.where(confident, best_price(e), np.clip(current, lower, upper))
    binding = np.where(target < lower, lower_by, np.where(target > upper, upper_by, "none"))
    binding = np.where(confident & np.isinf(np.clip(target, lower, upper)), lower_by, binding)
    keep = ~confident & (continuous == current)
    rounded, ending_applied = _round_inward(
        continuous, lower, upper, guardrails.price_ending, current, daily_units, e_curve, cost, prefer_nearest=~confident
    )
    price = np.where(keep, current, rounded)
    # rounding to an ending can land below the current price's profit; then do not move at all
    current_allowed = _within(current, lower, upper)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        worse = (confident & current_allowed & (price != current)
                 & (_profit(price, current, daily_units, e_curve, cost) < _profit(current, current, daily_units, e_curve, cost)))
    price = np.where(worse, current, price)
    binding = np.where(worse, "none", binding)

    units_now = daily_units * horizon_days
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        units_new = units_now * (price / current) ** e_curve

    wide_but_sure = confident & ~(width <= guardrails.max_interval_width)
    reason = np.where(
        e < -1.0,
        [f"profit-maximising price cost x e/(1+e) = {p:.2f} (e = {v:.2f})" for p, v in zip(optimum, e)],
        [f"inelastic demand (e = {v:.2f}): profit rises with price up to the upper bound" for v in e],
    )
    reason = np.where(wide_but_sure, reason + "; interval wide but all of it moves the price the same way", reason)
    reason = np.where(confident, reason, hold_reason)
    reason = np.where(binding != "none", reason + "; limited by " + binding, reason)
    reason = np.where(~confident & (price != current), reason + "; moved to the nearest price the guardrails allow", reason)
    for name, mask in relaxed.items():
        reason = np.where(mask, reason + f"; relaxed {name} (conflicts with higher-priority guardrails; as close as they allow)", reason)
    reason = np.where(worse, reason + "; kept the current price: no rounded price within bounds earns more", reason)
    if guardrails.price_ending is not None:
        reason = np.where(~keep & ~worse & ~ending_applied,
                          reason + f"; no price ending .{round(guardrails.price_ending * 100):02d} within bounds, rounded to cents", reason)

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
