"""Campaign recommendations (issue 18, item 5): scale a campaign's spend up or down, pause it, or move
its email send time, each with the number behind it: current and recommended value, the expected impact
over a horizon with an interval, and a reason that quotes the numbers. A rule that cannot put a number
(with an interval that excludes no change) behind a recommendation emits no row.

**Inputs.** ``campaign_daily`` (:func:`features.campaigns.campaign_daily_in_store`); only its last day
is read: each campaign's trailing 28-day ``cost_28d``, ``revenue_28d`` and ``conversions_28d``
(attributed by the run's model). A campaign's *current daily spend* is ``cost_28d / 28``.
``budget_allocations`` is the budget champion's output (``scores.budget_allocations`` columns),
``send_times`` the send-time champion's (``scores.send_time_recommendations``: one row per customer,
so pick one ``day_type``), ``email_send_hours`` the sends of the last ``send_window_days`` days
(:func:`features.campaigns.email_send_hours_in_store`: campaign, customer_id, send_hour local, sends;
optionally ``expected_rate_sent``, the send-time model's open rate at that hour, and ``channel``).
Any of the last three may be None: its rule is then off.

**Rules**, with ``alpha = 1 - interval``:

1. **pause**: a campaign that spent in the 28 days and whose 28-day attributed ROAS *upper bound* is
   below ``min_roas``. The bound is a Poisson-gamma one on its credited conversions ``k`` (fractional
   credits allowed): the rate's posterior under a flat prior is Gamma(k + 1), whose upper
   ``1 - alpha/2`` quantile is Garwood's exact Poisson limit for integer k (the lower one is Gamma(k)'s
   ``alpha/2`` quantile, 0 at k = 0). Revenue bounds are those conversion bounds times the campaign's
   revenue per conversion (its channel's, then the store's, when it has none; no store-wide conversion:
   no pause rows), which is taken as known: the count is what is uncertain for a small campaign, and
   ``k = 0`` still gets a finite bound (about 3 conversions at 90 %). Impact over ``horizon_days``:
   cost saved minus attributed revenue lost, ``(cost - revenue) x horizon / 28``, interval from the
   revenue bounds. Attributed revenue is not incremental revenue: a campaign the attribution model
   over-credits looks better than it is, so pausing is if anything conservative.
2. **scale_up / scale_down**: a budget-allocation row that ``moved`` with a finite interval of its
   change in revenue, ``[expected_revenue_recommended_low, _high] - expected_revenue_current`` (the
   allocation bands revenue at the recommended spend only; the current level is its point value), that
   excludes 0. Its daily move ``recommended_spend - current_spend`` is split over the channel's
   campaigns that spent in the 28 days (paused ones left out): an increase in proportion to their 28-day
   attributed revenue (to their spend if none earned any), a cut from the lowest 28-day ROAS up, each
   campaign down to 0 before the next is touched (so better campaigns keep their spend). A cut larger
   than the campaigns' current spend (the allocation averages another window) leaves the rest
   unassigned. Each campaign's impact and interval are the channel's scaled by its share of the move.
   Units: daily spend; horizon: the allocation's ``horizon_days``.
3. **change_send_time** (email): per campaign, the extra human opens had each recipient been sent at
   the send-time model's ``best_hour`` instead of the hour they were sent at:
   ``sum over sends (rate_best - rate_at_sent_hour)``. The rate at the sent hour is
   ``expected_rate_best`` when the send went at the customer's best hour (no gain, no spread), else
   ``expected_rate_sent`` when given, else ``expected_rate_default`` when it went at the default hour;
   other sends (no rate at their hour) and customers without a send-time row are left out and counted
   in the reason. Scaled to ``horizon_days`` at the window's volume. Interval: normal approximation of
   the binomial spread of the realised difference, variance
   ``sum p_best (1 - p_best) + p_sent (1 - p_sent)`` over the sends that would move (the model's own
   uncertainty in the rates is not published, so it is not included). Emitted when the lower bound is
   above 0. current_value is the campaign's modal local send hour, recommended_value the modal best
   hour of its recipients (a summary: the impact assumes each recipient gets their own best hour, as
   the send-time table serves them); unit ``local_hour``.

**Not emitted: change offer.** Choosing an offer needs per-campaign offer data (discount, creative,
price point) that the source contract does not have, so no rule could put a number behind it.

Written by hand: the rules are the product's decisions; scipy supplies the gamma and normal quantiles.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats

logger = logging.getLogger(__name__)

RECOMMENDATION_COLUMNS: tuple[str, ...] = (
    "campaign", "channel", "recommendation", "current_value", "recommended_value", "unit", "expected_impact",
    "impact_low", "impact_high", "reason",
)
#: the trailing window of the campaign_daily sums the rules read, in days
WINDOW_DAYS = 28
_ZERO = 0.005  # money below half a cent is none
_NUMBERS = ["current_value", "recommended_value", "expected_impact", "impact_low", "impact_high"]


def campaign_recommendations(campaign_daily: pd.DataFrame, budget_allocations: pd.DataFrame | None,
                             send_times: pd.DataFrame | None, email_send_hours: pd.DataFrame | None, *,
                             min_roas: float = 1.0, horizon_days: int = 28, interval: float = 0.9,
                             send_window_days: int = WINDOW_DAYS) -> pd.DataFrame:
    """Columns :data:`RECOMMENDATION_COLUMNS`, rows sorted by recommendation, channel, campaign (module
    docstring for the rules). ``min_roas`` is the pause threshold on the ROAS upper bound,
    ``horizon_days`` the horizon of the pause and send-time impacts, ``interval`` the two-sided level of
    every interval. Inputs are not modified."""
    if not 0 < interval < 1 or horizon_days < 1 or send_window_days < 1:
        raise ValueError("interval must be in (0, 1), horizon_days and send_window_days at least 1")
    latest = latest_campaign_totals(campaign_daily)
    paused = pause_recommendations(latest, min_roas=min_roas, horizon_days=horizon_days, interval=interval)
    parts = [paused]
    if budget_allocations is not None:
        gone = set(zip(paused["channel"], paused["campaign"]))
        keep = [pair not in gone for pair in zip(latest["channel"], latest["campaign"])]
        parts.append(scale_recommendations(latest[np.asarray(keep, dtype=bool)], budget_allocations))
    if send_times is not None and email_send_hours is not None:
        parts.append(send_time_recommendations(email_send_hours, send_times, horizon_days=horizon_days,
                                               interval=interval, send_window_days=send_window_days))
    out = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else _empty()
    finite = np.isfinite(out[_NUMBERS].to_numpy(dtype=float)).all(axis=1)
    if not finite.all():  # by construction every row has its numbers; never publish one that lost them
        logger.warning("dropped %d campaign recommendations without finite numbers", int((~finite).sum()))
    out = out[finite].sort_values(["recommendation", "channel", "campaign"], kind="stable")
    return out[list(RECOMMENDATION_COLUMNS)].reset_index(drop=True)


def latest_campaign_totals(campaign_daily: pd.DataFrame) -> pd.DataFrame:
    """Per (channel, campaign), the 28-day sums on ``campaign_daily``'s last day: channel, campaign,
    cost_28d, revenue_28d, conversions_28d, daily_spend (cost_28d / 28), roas_28d (NaN at zero cost)."""
    needed = {"day", "channel", "campaign", "cost_28d", "revenue_28d", "conversions_28d"}
    if missing := sorted(needed - set(campaign_daily.columns)):
        raise ValueError(f"campaign_daily is missing columns {missing}")
    last = campaign_daily[campaign_daily["day"] == campaign_daily["day"].max()]
    out = last[["channel", "campaign", "cost_28d", "revenue_28d", "conversions_28d"]].astype(
        {"channel": str, "campaign": str, "cost_28d": float, "revenue_28d": float, "conversions_28d": float})
    out["daily_spend"] = out["cost_28d"] / WINDOW_DAYS
    out["roas_28d"] = (out["revenue_28d"] / out["cost_28d"]).where(out["cost_28d"] > _ZERO)
    return out.reset_index(drop=True)


def pause_recommendations(latest: pd.DataFrame, *, min_roas: float, horizon_days: int,
                          interval: float) -> pd.DataFrame:
    """Rule 1 (module docstring) over :func:`latest_campaign_totals`."""
    alpha = 1.0 - interval
    value = _revenue_per_conversion(latest)
    spent = latest.assign(value=value)[(latest["cost_28d"] > _ZERO) & np.isfinite(value)]
    if spent.empty:
        return _empty()
    k, cost, revenue = (spent[c].to_numpy(dtype=float) for c in ("conversions_28d", "cost_28d", "revenue_28d"))
    k_high = stats.gamma.ppf(1 - alpha / 2, k + 1)
    k_low = np.where(k > 0, stats.gamma.ppf(alpha / 2, np.maximum(k, 1e-12)), 0.0)
    r_high, r_low = k_high * spent["value"].to_numpy(), k_low * spent["value"].to_numpy()
    roas_high = r_high / cost
    scale = horizon_days / WINDOW_DAYS
    rows = []
    for i in np.flatnonzero(roas_high < min_roas):
        row = spent.iloc[i]
        impact, low, high = scale * (cost[i] - revenue[i]), scale * (cost[i] - r_high[i]), scale * (cost[i] - r_low[i])
        rows.append({
            "campaign": row["campaign"], "channel": row["channel"], "recommendation": "pause",
            "current_value": row["daily_spend"], "recommended_value": 0.0, "unit": "daily_spend",
            "expected_impact": impact, "impact_low": low, "impact_high": high,
            "reason": (f"28-day attributed ROAS {revenue[i] / cost[i]:.2f} ({revenue[i]:.2f} revenue from {k[i]:.2f} "
                       f"credited conversions on {cost[i]:.2f} spend); its {interval:.0%} upper bound "
                       f"{roas_high[i]:.2f} is below the minimum {min_roas:.2f}. Pausing saves "
                       f"{row['daily_spend']:.2f} a day: cost saved minus attributed revenue lost {impact:+.2f} "
                       f"over {horizon_days} days ({low:+.2f} to {high:+.2f})."),
        })
    return pd.DataFrame(rows, columns=list(RECOMMENDATION_COLUMNS))


def scale_recommendations(latest: pd.DataFrame, budget_allocations: pd.DataFrame) -> pd.DataFrame:
    """Rule 2 (module docstring): the allocation's channel moves split over ``latest``'s campaigns."""
    rows = []
    for _, channel in budget_allocations.iterrows():
        move = _number(channel["recommended_spend"]) - _number(channel["current_spend"])
        current = _number(channel["expected_revenue_current"])
        change = _number(channel["expected_revenue_recommended"]) - current
        low = _number(channel["expected_revenue_recommended_low"]) - current
        high = _number(channel["expected_revenue_recommended_high"]) - current
        if not (bool(channel["moved"]) and abs(move) > _ZERO and np.isfinite(change)
                and (low > 0 or high < 0)):
            continue
        campaigns = latest[(latest["channel"] == str(channel["channel"])) & (latest["cost_28d"] > _ZERO)]
        shares = _split_move(campaigns, move)
        horizon = int(channel["horizon_days"])
        for (_, campaign), part in zip(campaigns.iterrows(), shares):
            if abs(part) <= 1e-9:
                continue
            share = part / move
            rule = "by 28-day attributed revenue" if move > 0 else "lowest 28-day ROAS cut first"
            roas = campaign["roas_28d"]
            rows.append({
                "campaign": campaign["campaign"], "channel": campaign["channel"],
                "recommendation": "scale_up" if part > 0 else "scale_down",
                "current_value": campaign["daily_spend"], "recommended_value": campaign["daily_spend"] + part,
                "unit": "daily_spend", "expected_impact": change * share, "impact_low": low * share,
                "impact_high": high * share,
                "reason": (f"The budget model moves {channel['channel']} from {channel['current_spend']:.2f} to "
                           f"{channel['recommended_spend']:.2f} a day, changing its revenue by {change:+.2f} over "
                           f"{horizon} days ({low:+.2f} to {high:+.2f}); this campaign takes {share:.0%} of the move "
                           f"({part:+.2f} a day, {rule}; its ROAS {roas:.2f}), so {change * share:+.2f} revenue "
                           f"({low * share:+.2f} to {high * share:+.2f})."),
            })
    return pd.DataFrame(rows, columns=list(RECOMMENDATION_COLUMNS))


def _split_move(campaigns: pd.DataFrame, move: float) -> np.ndarray:
    """Each campaign's part of the channel's daily ``move`` (rule 2), in ``campaigns``' row order."""
    spend = campaigns["daily_spend"].to_numpy(dtype=float)
    if move > 0:
        weight = campaigns["revenue_28d"].to_numpy(dtype=float).clip(min=0)
        weight = weight if weight.sum() > 0 else spend
        return move * weight / weight.sum() if weight.sum() > 0 else np.zeros(len(spend))
    order = np.lexsort((campaigns["campaign"].to_numpy(dtype=str), campaigns["roas_28d"].fillna(0).to_numpy()))
    cut = np.zeros(len(spend))
    remaining = -move
    for i in order:
        cut[i] = min(spend[i], remaining)
        remaining -= cut[i]
    return -cut


def send_time_recommendations(email_send_hours: pd.DataFrame, send_times: pd.DataFrame, *, horizon_days: int,
                              interval: float, send_window_days: int = WINDOW_DAYS) -> pd.DataFrame:
    """Rule 3 (module docstring), one row per email campaign whose extra opens' lower bound is above 0."""
    if send_times["customer_id"].duplicated().any():
        raise ValueError("send_times must have one row per customer (pick one day_type)")
    sends = email_send_hours.assign(
        sends=email_send_hours["sends"] if "sends" in email_send_hours.columns else 1,
        channel=email_send_hours["channel"].astype(str) if "channel" in email_send_hours.columns else "email",
        campaign=email_send_hours["campaign"].fillna("").astype(str))
    rated = sends.merge(send_times[["customer_id", "best_hour", "default_hour", "expected_rate_best",
                                    "expected_rate_default"]], on="customer_id", how="inner")
    best, hour = rated["expected_rate_best"].to_numpy(dtype=float), rated["send_hour"].to_numpy()
    moves = hour != rated["best_hour"].to_numpy()
    if "expected_rate_sent" in rated.columns:
        other = rated["expected_rate_sent"].to_numpy(dtype=float)
    else:
        other = np.where(hour == rated["default_hour"].to_numpy(), rated["expected_rate_default"], np.nan)
    sent = np.where(moves, other, best)  # a send at the best hour already gains nothing
    n = rated["sends"].to_numpy(dtype=float)
    rated = rated.assign(gain=n * (best - sent), var=np.where(moves, n * (best * (1 - best) + sent * (1 - sent)), 0.0),
                         known=np.isfinite(sent))
    z = stats.norm.ppf(0.5 + interval / 2)
    scale = horizon_days / send_window_days
    rows = []
    for (channel, campaign), group in sends.groupby(["channel", "campaign"], sort=True):
        mine = rated[(rated["channel"] == channel) & (rated["campaign"] == campaign) & rated["known"]]
        if mine.empty:
            continue
        extra, spread = scale * mine["gain"].sum(), np.sqrt(scale * mine["var"].sum())
        low, high = extra - z * spread, extra + z * spread
        if not low > 0:
            continue
        total = int(group["sends"].sum())
        sent_hour, sent_share = _mode(group["send_hour"], group["sends"])
        best_hour, best_share = _mode(mine["best_hour"], mine["sends"])
        left_out = total - int(mine["sends"].sum())
        rows.append({
            "campaign": campaign, "channel": channel, "recommendation": "change_send_time",
            "current_value": float(sent_hour), "recommended_value": float(best_hour), "unit": "local_hour",
            "expected_impact": extra, "impact_low": low, "impact_high": high,
            "reason": (f"Sent mostly at {sent_hour:02d}:00 local ({sent_share:.0%} of {total} sends in "
                       f"{send_window_days} days); sending each recipient at the send-time model's best hour "
                       f"(mostly {best_hour:02d}:00, {best_share:.0%} of rated sends) adds {extra:+.1f} expected "
                       f"opens over {horizon_days} days ({low:+.1f} to {high:+.1f}, {interval:.0%} binomial "
                       f"interval); {left_out} sends without a rate at their hour left out."),
        })
    return pd.DataFrame(rows, columns=list(RECOMMENDATION_COLUMNS))


def _number(value) -> float:
    """``value`` as a float, NaN for None / NULL."""
    return float("nan") if value is None or pd.isna(value) else float(value)


def _mode(values: pd.Series, weights: pd.Series) -> tuple[int, float]:
    """The weighted modal value (the smallest on ties) and its share of the weight."""
    counts = pd.Series(weights.to_numpy(dtype=float)).groupby(values.to_numpy()).sum().sort_index()
    return int(counts.idxmax()), float(counts.max() / counts.sum())


def _revenue_per_conversion(latest: pd.DataFrame) -> np.ndarray:
    """Each campaign's 28-day revenue per credited conversion: its own, else its channel's, else the
    store's; NaN when the store has no conversion."""
    conv, rev = latest["conversions_28d"], latest["revenue_28d"]
    by_channel = latest.groupby("channel")[["revenue_28d", "conversions_28d"]].transform("sum")
    own = (rev / conv).where(conv > 0)
    channel = (by_channel["revenue_28d"] / by_channel["conversions_28d"]).where(by_channel["conversions_28d"] > 0)
    store = rev.sum() / conv.sum() if conv.sum() > 0 else np.nan
    return own.fillna(channel).fillna(store).to_numpy(dtype=float)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float if c in _NUMBERS else object) for c in RECOMMENDATION_COLUMNS})
