"""The budget optimiser and the response curves it reads (:mod:`ml.families.budget`, section "The
optimiser"): :func:`allocate_budget` / :func:`allocate_spend` return the daily spend per channel that
maximises the modelled steady-state revenue under :class:`BudgetConstraints`, with the reason it
moved (or not), as a :class:`BudgetAllocation`; :func:`response_curves` gives expected incremental
revenue against daily spend, with intervals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize

from features.media import current_spend
from ml.families.budget.estimator import MediaFit, _band

logger = logging.getLogger(__name__)

BINDING: tuple[str, ...] = ("min", "max", "max_change", "none", "excluded")

_MOVE_TOLERANCE = 0.005  # a split "equals" another when no channel differs by more than this share of the budget
_EQUAL_MARGINAL_TOLERANCE = 0.02  # marginal ROAS "equal" within 2 % of their mean
_NO_RESPONSE = 1e-3  # a channel whose full-saturation revenue is below this share of baseline revenue has none


@dataclass(frozen=True)
class BudgetConstraints:
    """What :func:`allocate_budget` must respect.

    - ``total_budget``: daily budget across all paid channels (None: the current total);
    - ``min_spend`` / ``max_spend``: daily bounds per channel (channels not named: 0 / none);
    - ``max_change``: each channel within current x (1 +/- max_change) (None: no such limit);
    - ``horizon_days``: the period the expected revenue figures cover;
    - ``current_window_days``: "current spend" = mean daily spend over the history's last days.
    """

    total_budget: float | None = None
    min_spend: dict[str, float] = field(default_factory=dict)
    max_spend: dict[str, float] = field(default_factory=dict)
    max_change: float | None = 0.3
    horizon_days: int = 28
    current_window_days: int = 28

    def __post_init__(self) -> None:
        checks = {
            "total_budget": self.total_budget is None or self.total_budget >= 0,
            "min_spend": all(v >= 0 for v in self.min_spend.values()),
            "max_spend": all(v >= 0 for v in self.max_spend.values()),
            "max_change": self.max_change is None or self.max_change >= 0,
            "horizon_days": self.horizon_days >= 1,
            "current_window_days": self.current_window_days >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"BudgetConstraints.{name} is out of range: {getattr(self, name)!r}")


@dataclass(frozen=True)
class BudgetAllocation:
    """Output of :func:`allocate_budget`.

    ``table``: one row per paid channel: channel, current_spend, recommended_spend (daily),
    expected_revenue_current, expected_revenue_recommended (+ ``_low`` / ``_high``): the channel's
    incremental revenue over ``horizon_days`` at steady state, baseline not included;
    marginal_roas (+ ``_low`` / ``_high``): d revenue / d spend at the recommended spend;
    binding_constraint (one of :data:`BINDING`) and reason (per channel).
    ``moved``: whether the recommendation differs from the current split; ``reason`` says why it
    moved or why not. Store totals over the horizon: ``expected_store_revenue_current`` /
    ``_recommended`` = baseline revenue (without paid media) + every channel's incremental revenue.
    """

    table: pd.DataFrame
    moved: bool
    reason: str
    total_budget: float
    horizon_days: int
    expected_store_revenue_current: float
    expected_store_revenue_recommended: float
    expected_store_revenue_recommended_low: float
    expected_store_revenue_recommended_high: float
    excluded: dict[str, str]
    solver: dict[str, Any]


# --- response curves ----------------------------------------------------------------------------


def _curve_parameters(fit: MediaFit, channels: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = fit.channels.set_index("channel").loc[list(channels)]
    return (table["max_revenue_per_day"].to_numpy(dtype=float), table["half_saturation_spend"].to_numpy(dtype=float),
            table["slope"].to_numpy(dtype=float))


def _response(spend: np.ndarray, scale: np.ndarray, k: np.ndarray, slope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steady-state revenue per day ``scale s^S / (s^S + k^S)`` and its derivative in ``s`` (broadcasting)."""
    s = np.maximum(spend, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(s > 0, (s / k) ** slope, 0.0)
        h = r / (1.0 + r)
        dh = np.where(s > 0, slope * r / (s * (1.0 + r) ** 2), np.where(slope < 1, np.inf, np.where(slope == 1, 1.0 / k, 0.0)))
    return scale * h, scale * dh


def _replicate_response(fit: MediaFit, channel: str, spend: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    reps = fit.replicates[fit.replicates["channel"] == channel]
    if not len(reps):
        return None
    return _response(spend[None, :], reps["max_revenue_per_day"].to_numpy(dtype=float)[:, None],
                     reps["half_saturation_spend"].to_numpy(dtype=float)[:, None], reps["slope"].to_numpy(dtype=float)[:, None])


def response_curves(fit: MediaFit, spend: Mapping[str, np.ndarray] | None = None, horizon_days: int = 1) -> pd.DataFrame:
    """Expected incremental revenue over ``horizon_days`` at constant daily spend, per fitted channel.

    ``spend``: daily spend values per channel (default: 61 points from 0 to 3x the channel's half
    saturation spend). Returns channel, spend, revenue, revenue_low, revenue_high, marginal_roas,
    marginal_roas_low, marginal_roas_high (bands: the bootstrap's ``config.interval`` quantiles).
    """
    alpha = (1.0 - fit.config.interval) / 2.0
    frames = []
    for _, row in fit.channels[fit.channels["fitted"].astype(bool)].iterrows():
        c = row["channel"]
        grid = np.asarray(spend[c] if spend is not None and c in spend else np.linspace(0.0, 3.0 * row["half_saturation_spend"], 61), dtype=float)
        revenue, marginal = _response(grid, row["max_revenue_per_day"], row["half_saturation_spend"], row["slope"])
        reps = _replicate_response(fit, c, grid)
        if reps is None:
            bands = (revenue, revenue, marginal, marginal)
        else:
            bands = (*_band(reps[0], revenue, alpha), *_band(reps[1], marginal, alpha))
        frames.append(pd.DataFrame({
            "channel": c, "spend": grid, "revenue": horizon_days * revenue, "revenue_low": horizon_days * bands[0],
            "revenue_high": horizon_days * bands[1], "marginal_roas": marginal, "marginal_roas_low": bands[2],
            "marginal_roas_high": bands[3],
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["channel", "spend", "revenue", "revenue_low", "revenue_high", "marginal_roas", "marginal_roas_low", "marginal_roas_high"])


# --- optimiser ----------------------------------------------------------------------------------


def allocate_budget(fit: MediaFit, history: pd.DataFrame, constraints: BudgetConstraints | None = None) -> BudgetAllocation:
    """The revenue-maximising daily split of the budget across the paid channels of ``history``.

    Current spend is the mean over the last ``current_window_days`` days of ``history``; the rest
    is :func:`allocate_spend`.
    """
    constraints = constraints or BudgetConstraints()
    return allocate_spend(fit, current_spend(history, constraints.current_window_days), constraints)


def allocate_spend(fit: MediaFit, current: pd.Series | Mapping[str, float], constraints: BudgetConstraints | None = None,
                   ) -> BudgetAllocation:
    """The revenue-maximising daily split given current daily spend per channel (see the module docstring).

    Channels the fit did not estimate (or does not know) are held at their current spend
    (``binding_constraint='excluded'``) and the rest of the budget is optimised. Raises
    ``ValueError`` when the constraints cannot be met together (bounds of a channel cross, or the
    bounds' sum cannot reach the budget) or name unknown channels.
    """
    constraints = constraints or BudgetConstraints()
    current = pd.Series(current, dtype=float)
    if (current < 0).any() or current.isna().any():
        raise ValueError(f"current spend must be non-negative numbers, got {current.to_dict()}")
    channels = list(current.index)
    known = set(channels)
    for name in ("min_spend", "max_spend"):
        unknown = set(getattr(constraints, name)) - known
        if unknown:
            raise ValueError(f"BudgetConstraints.{name} names unknown channels {sorted(unknown)} (channels: {channels})")
    fitted_table = fit.channels[fit.channels["fitted"].astype(bool)]
    excluded = {c: why for c, why in fit.excluded.items() if c in known}
    for c in channels:
        if c not in set(fit.channels["channel"]):
            excluded[c] = "channel not in the fitted model"
    free = [c for c in channels if c in set(fitted_table["channel"])]
    held = [c for c in channels if c not in free]
    total = float(current.sum()) if constraints.total_budget is None else float(constraints.total_budget)
    budget = total - float(current[held].sum())
    if budget < -1e-9:
        raise ValueError(f"infeasible: the total budget {total:.2f} is below the current spend {current[held].sum():.2f} of the "
                         f"channels held because they cannot be optimised ({sorted(held)})")
    lower, upper, lower_by, upper_by = _bounds(free, current, constraints, total)
    _check_feasible(free, lower, upper, budget)

    scale, k, slope = _curve_parameters(fit, free)
    cur = current[free].to_numpy(dtype=float)
    began = time.perf_counter()
    if free:
        spend, solver = _optimise(scale, k, slope, lower, upper, budget, cur)
    else:
        spend, solver = np.empty(0), {"method": "none", "message": "no channel to optimise", "success": True}
    solver["seconds"] = time.perf_counter() - began
    return _allocation(fit, current, free, held, spend, lower, upper, lower_by, upper_by, total, budget, excluded, constraints, solver)


def _bounds(free: Sequence[str], current: pd.Series, constraints: BudgetConstraints, total: float,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cur = current[list(free)].to_numpy(dtype=float)
    n = len(free)
    lower, upper = np.zeros(n), np.full(n, total)
    lower_by, upper_by = np.full(n, "min", dtype=object), np.full(n, "max", dtype=object)
    if constraints.max_change is not None:
        lower, upper = np.maximum(lower, cur * (1.0 - constraints.max_change)), np.minimum(upper, cur * (1.0 + constraints.max_change))
        lower_by = np.where(cur * (1.0 - constraints.max_change) > 0, "max_change", lower_by)
        upper_by = np.where(cur * (1.0 + constraints.max_change) < total, "max_change", upper_by)
    for i, c in enumerate(free):
        if c in constraints.min_spend and constraints.min_spend[c] >= lower[i]:
            lower[i], lower_by[i] = constraints.min_spend[c], "min"
        if c in constraints.max_spend and constraints.max_spend[c] <= upper[i]:
            upper[i], upper_by[i] = constraints.max_spend[c], "max"
    return lower, upper, lower_by, upper_by


def _check_feasible(free: Sequence[str], lower: np.ndarray, upper: np.ndarray, budget: float) -> None:
    crossed = [f"{c} (lower {lo:.2f} > upper {hi:.2f})" for c, lo, hi in zip(free, lower, upper) if lo > hi + 1e-9]
    if crossed:
        raise ValueError("infeasible constraints: bounds cross for " + ", ".join(crossed)
                         + " (min_spend/max_spend against max_change around current spend)")
    tolerance = 1e-9 * max(budget, 1.0)
    if lower.sum() > budget + tolerance:
        raise ValueError(f"infeasible constraints: the channels' lower bounds add up to {lower.sum():.2f} per day, "
                         f"above the budget {budget:.2f} available to them")
    if upper.sum() < budget - tolerance:
        raise ValueError(f"infeasible constraints: the channels' upper bounds add up to {upper.sum():.2f} per day, "
                         f"below the budget {budget:.2f} to spend (loosen max_change / max_spend or lower total_budget)")


def _best_response(scale: np.ndarray, k: np.ndarray, slope: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                   multiplier: float) -> np.ndarray:
    """Per channel, the spend in ``[lower, upper]`` maximising ``revenue(s) - multiplier s`` exactly.

    The maximiser is a bound or a root of ``revenue'(s) = multiplier`` where ``revenue'`` falls
    (its rising branch holds minima only); ``revenue'`` peaks at ``k ((S-1)/(S+1))^(1/S)`` for
    ``S > 1`` and falls everywhere for ``S <= 1``. The root is bisected on log spend, vectorised.
    """
    peak = np.where(slope > 1, k * np.clip((slope - 1) / (slope + 1), 0, None) ** (1 / slope), 0.0)
    lo = np.maximum(lower, peak)
    hi = upper
    _, d_lo = _response(np.maximum(lo, 1e-12 * np.maximum(k, 1.0)), scale, k, slope)
    _, d_hi = _response(hi, scale, k, slope)
    has_root = (lo < hi) & (d_lo >= multiplier) & (d_hi <= multiplier)
    a, b = np.log(np.maximum(lo, 1e-12 * np.maximum(k, 1.0))), np.log(np.maximum(hi, 1e-12 * np.maximum(k, 1.0)))
    for _ in range(100):
        mid = 0.5 * (a + b)
        _, d = _response(np.exp(mid), scale, k, slope)
        above = d > multiplier
        a, b = np.where(above, mid, a), np.where(above, b, mid)
    root = np.exp(0.5 * (a + b))
    candidates = np.stack([lower, upper, np.where(has_root, root, lower)])
    value = _response(candidates, scale, k, slope)[0] - multiplier * candidates
    return candidates[np.argmax(value, axis=0), np.arange(len(scale))]


def _project(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, budget: float) -> np.ndarray:
    """The point of ``{sum = budget, lower <= s <= upper}`` closest to ``x`` (bisection on a shift)."""
    a, b = float(np.min(lower - x)), float(np.max(upper - x))
    for _ in range(200):
        mid = 0.5 * (a + b)
        if np.clip(x + mid, lower, upper).sum() < budget:
            a = mid
        else:
            b = mid
    return np.clip(x + 0.5 * (a + b), lower, upper)


def _optimise(scale: np.ndarray, k: np.ndarray, slope: np.ndarray, lower: np.ndarray, upper: np.ndarray, budget: float,
              current: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Maximise ``sum_c revenue_c(s_c)`` on ``{sum = budget, lower <= s <= upper}``; see the module docstring."""
    def revenue(s: np.ndarray) -> float:
        return float(_response(s, scale, k, slope)[0].sum())

    # the multiplier: bisection on sum(best response) = budget (the sum falls as the multiplier rises)
    peak = np.where(slope > 1, k * np.clip((slope - 1) / (slope + 1), 0, None) ** (1 / slope), lower)
    points = np.concatenate([lower, upper, np.clip(peak, lower, upper)])
    top = float(np.max(_response(points, np.tile(scale, 3), np.tile(k, 3), np.tile(slope, 3))[1]))
    top = top if np.isfinite(top) else 1e12
    a, b = 0.0, max(top, 1e-12) * 2.0 + 1.0
    for _ in range(200):
        mid = 0.5 * (a + b)
        if _best_response(scale, k, slope, lower, upper, mid).sum() > budget:
            a = mid
        else:
            b = mid
    above, below = _best_response(scale, k, slope, lower, upper, b), _best_response(scale, k, slope, lower, upper, a)
    candidates = [_project(above, lower, upper, budget), _project(below, lower, upper, budget)]
    for j in np.flatnonzero(~np.isclose(above, below, rtol=1e-6, atol=1e-9 * max(budget, 1.0))):
        gap = above.copy()  # a channel that jumps at the multiplier closes the gap on its own
        gap[j] = np.clip(budget - (above.sum() - above[j]), lower[j], upper[j])
        candidates.append(_project(gap, lower, upper, budget))
    candidates.append(_project(current, lower, upper, budget))
    polished, messages = [], []
    unit = max(budget, 1e-9)
    revenue_unit = max(float(np.sum(scale)), 1e-12)
    for x0 in candidates:
        if budget <= 0 or np.all(upper - lower <= 1e-12 * unit):
            polished.append(x0)
            continue
        result = optimize.minimize(
            lambda z: -revenue(z * unit) / revenue_unit, x0 / unit,
            jac=lambda z: -_response(z * unit, scale, k, slope)[1] * unit / revenue_unit,
            bounds=list(zip(lower / unit, upper / unit)),
            constraints=[{"type": "eq", "fun": lambda z: z.sum() - 1.0 if budget > 0 else z.sum(), "jac": lambda z: np.ones_like(z)}],
            method="SLSQP", options={"ftol": 1e-14, "maxiter": 500},
        )
        messages.append(str(result.message))
        polished.append(_project(np.clip(result.x * unit, lower, upper), lower, upper, budget))
    everything = candidates + polished
    values = np.array([revenue(x) for x in everything])
    best = int(np.argmax(np.where(np.isnan(values), -np.inf, values)))  # np.argmax would pick a NaN revenue
    solver = {"method": "multiplier bisection + SLSQP polish", "multiplier": 0.5 * (a + b), "candidates": len(everything),
              "message": "; ".join(sorted(set(messages))) or "closed form", "success": True}
    return everything[best], solver


def _allocation(fit: MediaFit, current: pd.Series, free: list[str], held: list[str], spend: np.ndarray, lower: np.ndarray,
                upper: np.ndarray, lower_by: np.ndarray, upper_by: np.ndarray, total: float, budget: float,
                excluded: dict[str, str], constraints: BudgetConstraints, solver: dict[str, Any]) -> BudgetAllocation:
    horizon = constraints.horizon_days
    alpha = (1.0 - fit.config.interval) / 2.0
    scale, k, slope = _curve_parameters(fit, free)
    cur = current[free].to_numpy(dtype=float)
    tol = _MOVE_TOLERANCE * max(total, 1e-9)

    # never return a split worse than the current one (when allowed) or an equal one
    references = {}
    if np.all(cur >= lower - 1e-9) and np.all(cur <= upper + 1e-9) and abs(cur.sum() - budget) <= 1e-6 * max(budget, 1.0):
        references["current"] = cur
    if len(free):
        equal = np.full(len(free), budget / len(free))
        if np.all(equal >= lower - 1e-9) and np.all(equal <= upper + 1e-9):
            references["equal"] = equal
    value = float(_response(spend, scale, k, slope)[0].sum())
    for name, ref in references.items():
        if float(_response(ref, scale, k, slope)[0].sum()) > value * (1 + 1e-9) + 1e-12:
            solver["success"] = False
            solver["message"] = f"optimiser failed to converge: the {name} split earns more than its answer ({solver['message']})"
            spend, value = ref.copy(), float(_response(ref, scale, k, slope)[0].sum())

    revenue_now, _ = _response(cur, scale, k, slope)
    revenue_new, marginal = _response(spend, scale, k, slope)
    low, high, m_low, m_high = revenue_new.copy(), revenue_new.copy(), marginal.copy(), marginal.copy()
    draws = []
    for i, c in enumerate(free):
        reps = _replicate_response(fit, c, spend[i : i + 1])
        if reps is not None:
            low[i], high[i] = _band(reps[0][:, 0], revenue_new[i], alpha)
            m_low[i], m_high[i] = _band(reps[1][:, 0], marginal[i], alpha)
            draws.append(reps[0][:, 0])
    at_lower = spend <= lower + 1e-6 * max(total, 1.0)
    at_upper = spend >= upper - 1e-6 * max(total, 1.0)
    binding = np.where(at_lower & (upper - lower > 1e-9), lower_by, np.where(at_upper, upper_by, "none"))
    binding = np.where(at_lower & (upper - lower <= 1e-9), lower_by, binding)

    moved, reason = _reason(fit, free, held, cur, spend, lower, upper, binding, marginal, scale, k, slope, total, budget,
                            tol, excluded, solver)
    rows = []
    for i, c in enumerate(free):
        note = "" if binding[i] == "none" else f"at its {binding[i]} bound"
        if scale[i] <= _NO_RESPONSE * max(fit.baseline_revenue_per_day, 1e-9):
            note = "model found no response"
        if not np.isfinite([marginal[i], m_low[i], m_high[i]]).all():
            # a paused channel on a curve concave from zero: the marginal return at 0 is unbounded
            note = "; ".join(filter(None, [note, "paused: marginal ROAS at zero spend is unbounded (published as NULL)"]))
        rows.append({"channel": c, "current_spend": cur[i], "recommended_spend": float(spend[i]),
                     "expected_revenue_current": horizon * revenue_now[i], "expected_revenue_recommended": horizon * revenue_new[i],
                     "expected_revenue_recommended_low": horizon * low[i], "expected_revenue_recommended_high": horizon * high[i],
                     "marginal_roas": _finite(marginal[i]), "marginal_roas_low": _finite(m_low[i]),
                     "marginal_roas_high": _finite(m_high[i]), "binding_constraint": str(binding[i]), "reason": note})
    for c in held:
        rows.append({"channel": c, "current_spend": float(current[c]), "recommended_spend": float(current[c]),
                     "expected_revenue_current": np.nan, "expected_revenue_recommended": np.nan,
                     "expected_revenue_recommended_low": np.nan, "expected_revenue_recommended_high": np.nan,
                     "marginal_roas": np.nan, "marginal_roas_low": np.nan, "marginal_roas_high": np.nan,
                     "binding_constraint": "excluded", "reason": excluded.get(c, "not optimised")})
    order = {c: i for i, c in enumerate(current.index)}
    table = pd.DataFrame(rows).sort_values("channel", key=lambda s: s.map(order)).reset_index(drop=True)
    base = horizon * fit.baseline_revenue_per_day
    store_draws = np.sum(draws, axis=0) if draws and len({len(d) for d in draws}) == 1 else None
    store_low, store_high = ((float(q) for q in _band(store_draws, float(revenue_new.sum()), alpha)) if store_draws is not None
                             else (float(revenue_new.sum()), float(revenue_new.sum())))
    logger.info("budget allocation: moved=%s, %s", moved, reason)
    return BudgetAllocation(
        table=table, moved=moved, reason=reason, total_budget=total, horizon_days=horizon,
        expected_store_revenue_current=base + horizon * float(revenue_now.sum()),
        expected_store_revenue_recommended=base + horizon * float(revenue_new.sum()),
        expected_store_revenue_recommended_low=base + horizon * store_low,
        expected_store_revenue_recommended_high=base + horizon * store_high,
        excluded=excluded, solver=solver,
    )


def _reason(fit: MediaFit, free: list[str], held: list[str], cur: np.ndarray, spend: np.ndarray, lower: np.ndarray,
            upper: np.ndarray, binding: np.ndarray, marginal: np.ndarray, scale: np.ndarray, k: np.ndarray, slope: np.ndarray,
            total: float, budget: float, tol: float, excluded: dict[str, str], solver: dict[str, Any]) -> tuple[bool, str]:
    """Whether the split moved and why, in words: never a silent current or equal split."""
    parts = []
    moved = bool(len(free)) and bool(np.any(np.abs(spend - cur) > tol))
    no_response = [c for c, s in zip(free, scale) if s <= _NO_RESPONSE * max(fit.baseline_revenue_per_day, 1e-9)]
    _, marginal_now = _response(cur, scale, k, slope)
    if not free:
        parts.append("no channel can be optimised")
    elif not solver.get("success", True):
        parts.append(solver["message"])
    elif not moved:
        pinned = np.all(upper - lower <= tol)
        at_bound = binding != "none"
        interior = ~at_bound
        spread = _relative_spread(marginal_now[interior]) if interior.any() else 0.0
        if pinned:
            parts.append("every channel is pinned by its bounds (min/max/max_change leave no room)")
        elif at_bound.all():
            parts.append("every channel at a bound: " + ", ".join(f"{c} ({b})" for c, b in zip(free, binding)))
        elif spread <= _EQUAL_MARGINAL_TOLERANCE:
            text = "marginal ROAS already equal across channels at the current split"
            text += f" ({np.min(marginal_now[interior]):.3g}-{np.max(marginal_now[interior]):.3g} on unbound channels)"
            parts.append(text)
        else:
            parts.append(f"the current split is within {_MOVE_TOLERANCE:.1%} of the budget of the optimum")
    else:
        interior = binding == "none"
        shifted = spend - cur
        gainers = [f"{c} {d:+.0f}" for c, d in zip(free, shifted) if d > tol]
        losers = [f"{c} {d:+.0f}" for c, d in zip(free, shifted) if d < -tol]
        text = f"moved {np.abs(shifted).sum() / 2 / max(total, 1e-9):.1%} of the daily budget ({', '.join(losers + gainers)})"
        spread_now = f"marginal ROAS at the current split {np.min(marginal_now):.3g}-{np.max(marginal_now):.3g}"
        if interior.any():
            text += f"; {spread_now}, equalised at {np.median(marginal[interior]):.3g} on unbound channels"
        else:
            text += f"; {spread_now}"
        bound = [f"{c} ({b})" for c, b in zip(free, binding) if b != "none"]
        if bound:
            text += "; at a bound: " + ", ".join(bound)
        parts.append(text)
        if len(free) > 1 and np.all(np.abs(spend - budget / len(free)) <= tol):
            parts.append("the recommendation coincides with an equal split: the fitted curves and bounds put the optimum there "
                         f"(marginal ROAS {np.min(marginal):.3g}-{np.max(marginal):.3g})")
    if no_response:
        parts.append("model found no response for channels " + ", ".join(no_response))
    if held:
        parts.append("held at current spend: " + "; ".join(f"{c}: {excluded.get(c, 'not optimised')}" for c in held))
    if free and abs(budget - cur.sum()) > tol:
        parts.append(f"budget {budget:.2f} per day for the optimised channels vs {cur.sum():.2f} now")
    return moved, "; ".join(parts)


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else np.nan


def _relative_spread(values: np.ndarray) -> float:
    mean = float(np.mean(values))
    return float((np.max(values) - np.min(values)) / mean) if mean > 0 else 0.0
