"""Media history: daily spend per paid channel and the revenue it may explain, as of a run date.

Every function takes the extracted source frames (or a frame built here) and returns a new frame;
inputs are never mutated, and only days strictly before the run date are used.

Input frames (the extract, see :mod:`revopt.platform.extract`):

- ``marketing_spend``: day (datetime64), channel, spend (rows for the same day and channel are
  summed; a day without a row for a channel is a day without spend), ...
- ``orders``: order_ts (UTC), channel, status, order_value, ... (only ``completed`` orders count;
  the day is the UTC date of ``order_ts``)

Two shapes of the same window:

- :func:`media_history`, wide, one row per day: what the media model fits;
- :func:`daily_spend`, long, one row per day and paid channel (day, channel, spend): the budget
  model's nightly input. Its columns do not depend on the store's channels, so a registered model
  answers a store whose channels changed since training (a new channel is held at its spend)
  instead of failing its input schema; :func:`spend_history` turns it back into the wide spend
  columns, exactly.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

SPEND_PREFIX = "spend_"
REVENUE_PREFIX = "revenue_"
ORDERS_PREFIX = "orders_"
#: the columns of :func:`daily_spend`
DAILY_SPEND_COLUMNS: tuple[str, ...] = ("day", "channel", "spend")

_SPEND_COLUMNS = ("day", "channel", "spend")
_ORDER_COLUMNS = ("order_ts", "channel", "status", "order_value")


def media_history(
    spend: pd.DataFrame,
    orders: pd.DataFrame,
    run_date: Any,
    lookback_days: int,
    *,
    min_days: int = 56,
) -> pd.DataFrame:
    """Dense daily window ``[max(run_date - lookback_days, first spend day), run_date)``.

    ``spend``: day, channel, spend (rows for the same day and channel are summed, e.g. its campaigns; a
    day without a row for a channel is a day without spend); ``orders``: order_ts (UTC), channel, status,
    order_value (only ``completed`` orders count; the day is the UTC date of ``order_ts``) and optionally
    ``credit``: an order split over channels by an attribution model is one row per channel with its
    share (:func:`ml.attribution.nightly.attributed_orders`), counted and valued by that share.

    Columns: day, ``spend_<channel>`` per paid channel (the channels of ``spend``, sorted),
    revenue (completed, all channels), orders (completed count), then ``revenue_<channel>`` and
    ``orders_<channel>`` (completed revenue and count attributed to the channel) for each paid
    channel (zeros when no order names it) and each other order channel.

    A paid channel without any spend in the window is kept (all zeros): the media model excludes
    it with a reason, since nothing can be learnt about it. Raises ``ValueError`` when a required
    column is missing, spend is negative, the window has fewer than ``min_days`` days, no channel
    spent anything, or no completed order falls in the window.
    """
    run = pd.Timestamp(run_date).normalize()
    if lookback_days < 1:
        raise ValueError(f"lookback_days must be >= 1, got {lookback_days}")
    for table, frame, columns in (("spend", spend, _SPEND_COLUMNS), ("orders", orders, _ORDER_COLUMNS)):
        missing = sorted(set(columns) - set(frame.columns))
        if missing:
            raise ValueError(f"{table} is missing columns {missing}")
    since = run - pd.Timedelta(days=lookback_days)
    window = spend[(spend["day"] >= since) & (spend["day"] < run)]
    if len(window) == 0:
        raise ValueError(f"spend: no marketing_spend rows in the {lookback_days} days before {run.date()}")
    if (window["spend"] < 0).any() or window["spend"].isna().any():
        bad = window.loc[~(window["spend"] >= 0), ["day", "channel"]].head(3).to_dict("records")
        raise ValueError(f"spend.spend must be a non-negative number before {run.date()}; e.g. {bad}")
    first = max(since, pd.Timestamp(window["day"].min()).normalize())
    days = pd.date_range(first, run - pd.Timedelta(days=1), freq="D")
    if len(days) < min_days:
        raise ValueError(
            f"spend: only {len(days)} days of marketing_spend between {first.date()} and {run.date()} "
            f"(need at least {min_days} for a media model)"
        )
    channels = sorted(str(c) for c in spend["channel"].dropna().unique())
    wide = (
        window.assign(day=window["day"].dt.normalize())
        .pivot_table(index="day", columns="channel", values="spend", aggfunc="sum")
        .reindex(index=days, columns=channels)
        .fillna(0.0)
    )
    if not (wide.to_numpy() > 0).any():
        raise ValueError(f"spend: every channel has zero spend in the {len(days)} days before {run.date()}")

    done = orders[orders["status"] == "completed"]
    stamps = done["order_ts"] if done["order_ts"].dt.tz is not None else done["order_ts"].dt.tz_localize("UTC")
    order_day = stamps.dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("D").astype("datetime64[ns]")
    inside = (order_day >= first) & (order_day < run)
    done, order_day = done[inside], order_day[inside]
    if len(done) == 0:
        raise ValueError(f"orders: no completed orders between {first.date()} and {run.date()}")
    credited = "credit" in done.columns
    credit = done["credit"].to_numpy(dtype=float) if credited else np.ones(len(done))
    value = done["order_value"].to_numpy(dtype=float) * credit
    labelled = pd.DataFrame({"day": order_day.to_numpy(), "channel": done["channel"].astype(str).to_numpy(),
                             "value": value, "n": credit})
    by_channel = labelled.pivot_table(index="day", columns="channel", values=["value", "n"], aggfunc="sum")
    other = sorted(c for c in by_channel["value"].columns if c not in channels)
    revenue_by = by_channel["value"].reindex(index=days, columns=channels + other).fillna(0.0)
    orders_by = by_channel["n"].reindex(index=days, columns=channels + other).fillna(0.0)
    totals = labelled.groupby("day")[["value", "n"]].sum().rename(columns={"value": "sum", "n": "size"})
    totals = totals.reindex(days).fillna(0.0)

    history = pd.DataFrame({"day": days})
    for c in channels:
        history[SPEND_PREFIX + c] = wide[c].to_numpy()
    history["revenue"] = totals["sum"].to_numpy()
    history["orders"] = np.round(totals["size"].to_numpy()).astype("int64")  # each order's credits sum to 1
    for c in channels + other:
        history[REVENUE_PREFIX + c] = revenue_by[c].to_numpy()
    for c in channels + other:  # fractional when orders are split over channels (``credit``)
        history[ORDERS_PREFIX + c] = orders_by[c].to_numpy() if credited else orders_by[c].to_numpy().astype("int64")
    logger.info("media history: %d days from %s, %d paid channels, %.0f revenue per day", len(days), first.date(),
                len(channels), history["revenue"].mean())
    return history


def paid_channels(history: pd.DataFrame) -> list[str]:
    """The paid channels of a :func:`media_history` frame (those with a spend column), in column order."""
    return [c[len(SPEND_PREFIX):] for c in history.columns if c.startswith(SPEND_PREFIX)]


def current_spend(history: pd.DataFrame, window_days: int = 28) -> pd.Series:
    """Mean daily spend per paid channel over the history's last ``window_days`` days."""
    recent = history.iloc[-window_days:]
    return pd.Series({c: float(recent[SPEND_PREFIX + c].mean()) for c in paid_channels(history)}, name="current_spend")


def daily_spend(history: pd.DataFrame) -> pd.DataFrame:
    """The spend of a :func:`media_history` frame, long: day, channel, spend, one row per day and paid
    channel (zeros included), by day then channel in the history's order."""
    channels = paid_channels(history)
    spend = history[[SPEND_PREFIX + c for c in channels]].to_numpy(dtype=float)
    return pd.DataFrame({
        "day": history["day"].to_numpy().repeat(len(channels)),
        "channel": channels * len(history),
        "spend": spend.reshape(-1),
    })


def spend_history(daily: pd.DataFrame) -> pd.DataFrame:
    """The wide spend columns of :func:`media_history` from :func:`daily_spend` rows: day and
    ``spend_<channel>`` per channel (sorted), one row per day from the first to the last day (a day
    without a row for a channel is a day without spend). Exact: ``spend_history(daily_spend(h))``
    equals ``h``'s day and spend columns. Raises ``ValueError`` for missing columns, a repeated
    day and channel, or spend that is not a non-negative number."""
    missing = sorted(set(DAILY_SPEND_COLUMNS) - set(daily.columns))
    if missing:
        raise ValueError(f"daily spend is missing columns {missing}")
    if daily.empty:
        raise ValueError("daily spend has no rows")
    rows = daily.assign(day=pd.to_datetime(daily["day"]).dt.normalize(), channel=daily["channel"].astype(str))
    if rows.duplicated(["day", "channel"]).any():
        raise ValueError("daily spend must have one row per day and channel; e.g. "
                         f"{rows.loc[rows.duplicated(['day', 'channel']), ['day', 'channel']].head(3).to_dict('records')}")
    if not (rows["spend"] >= 0).all():
        raise ValueError("daily spend must be non-negative numbers")
    days = pd.date_range(rows["day"].min(), rows["day"].max(), freq="D")
    channels = sorted(rows["channel"].unique())
    wide = rows.pivot(index="day", columns="channel", values="spend").reindex(index=days, columns=channels).fillna(0.0)
    history = pd.DataFrame({"day": days})
    for c in channels:
        history[SPEND_PREFIX + c] = wide[c].to_numpy(dtype=float)
    return history
