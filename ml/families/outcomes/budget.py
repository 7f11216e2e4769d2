"""Outcome check of the budget allocations: each paid channel's revenue in the horizon after a
published night of ``scores.budget_allocations``, against the revenue expected at the spend it
actually got.

A night R's allocation is about ``[R, R + h)``, h its published ``horizon_days``. The realised side
is the ``marketing_spend`` and ``orders`` extracts of that window:

- **the spend actually made**: each channel's mean daily spend over the window's days (a day without
  a row is a day without spend, as :func:`features.media.media_history` reads it);
- **expected revenue at that spend**: a channel whose realised spend is strictly closer to the
  recommended daily spend than to the current one followed the recommendation and is compared with
  ``expected_revenue_recommended``; every other one with ``expected_revenue_current``;
- **realised revenue, as the model defines the revenue it predicts**: with the ``attributed`` target
  (orders name the paid channel, :func:`ml.families.budget.media_config`) the published figures are
  each channel's attributed revenue, so the realised figure is the value of the channel's completed
  orders in the window (UTC days). With the ``total`` target they are each channel's *incremental*
  revenue, which no order records: nothing is compared for such a version but the spend (its rows
  say so by having no revenue metric). Channels the fit left out (``excluded``, no expected revenue)
  are left out.

Metrics (``n`` = channels): ``revenue_ratio`` (total realised / total expected revenue), ``ape``
(absolute percentage error of the horizon's total revenue, ``|realised - expected| / realised``),
``channel_mape`` (mean absolute percentage error over channels with revenue), ``realised_revenue``,
``expected_revenue``, and ``share_spend_followed`` (of the channels whose recommendation moved their
spend, the share whose realised spend was closer to it).

Retraining reads ``ape`` against the version's ``test_weekly_mape`` (the test window's error of
7-day sums of the same revenue; training logs no error of a longer sum): it is requested when the
realised error exceeds the test one by more than the threshold (in points of percentage error).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.families.outcomes.common import Outcome, Scored, closer_to_recommended, finite

#: Columns of ``scores.budget_allocations`` the check reads.
ALLOCATION_COLUMNS = ("channel", "current_spend", "recommended_spend", "expected_revenue_current",
                      "expected_revenue_recommended", "binding_constraint")
ATTRIBUTED, TOTAL = "attributed", "total"
#: a spend move smaller than this (currency per day) is no move
_SPEND_TOLERANCE = 0.005


def model_target(training_params: dict[str, str] | None, spend: pd.DataFrame, orders: pd.DataFrame) -> str:
    """The revenue a budget version predicts: its training run's ``target`` param, else what
    :func:`ml.families.budget.media_config` would choose for this store (attributed when orders name
    a paid channel)."""
    target = (training_params or {}).get("target")
    if target:
        return target
    return ATTRIBUTED if set(orders["channel"].astype(str)) & set(spend["channel"].astype(str)) else TOTAL


def budget_outcome(scored: Scored, horizon_days: int, allocations: pd.DataFrame, spend: pd.DataFrame,
                   orders: pd.DataFrame, target: str) -> Outcome:
    """``scored``'s published ``allocations`` (:data:`ALLOCATION_COLUMNS`, one row per channel) against
    the ``spend`` (day, channel, spend) and ``orders`` (order_ts, channel, status, order_value) of
    ``[R, R + horizon_days)``; ``target`` is the version's (:func:`model_target`). ``labelled`` has one
    row per channel evaluated: channel, target (realised revenue; NaN for the total target),
    prediction (expected revenue at the realised spend), realised_spend, followed."""
    start = pd.Timestamp(scored.run_date)
    end = start + pd.Timedelta(days=int(horizon_days))
    channels = allocations[allocations["binding_constraint"] != "excluded"].drop_duplicates("channel")
    channels = channels.set_index(channels["channel"].astype(str))
    days = pd.to_datetime(spend["day"])
    window = spend[(days >= start) & (days < end)]
    realised_spend = (window.groupby(window["channel"].astype(str))["spend"].sum()
                      .reindex(channels.index, fill_value=0.0) / int(horizon_days))
    current = channels["current_spend"].to_numpy(float)
    recommended = channels["recommended_spend"].to_numpy(float)
    followed = closer_to_recommended(realised_spend.to_numpy(float), current, recommended)
    expected = np.where(followed, channels["expected_revenue_recommended"], channels["expected_revenue_current"])
    labelled = pd.DataFrame({"channel": channels.index.to_numpy(), "target": np.nan, "prediction": expected.astype(float),
                             "realised_spend": realised_spend.to_numpy(float), "followed": followed})

    moved = np.abs(recommended - current) > _SPEND_TOLERANCE
    metrics: dict[str, float] = {}
    if len(labelled) and moved.any():
        metrics["share_spend_followed"] = float(followed[moved].mean())
    if target == ATTRIBUTED and len(labelled):
        stamps = pd.to_datetime(orders["order_ts"], utc=True)
        done = orders[(orders["status"] == "completed") & (stamps >= start.tz_localize("UTC"))
                      & (stamps < end.tz_localize("UTC"))]
        value = done["order_value"] * done["credit"] if "credit" in done else done["order_value"]  # split orders
        revenue = value.groupby(done["channel"].astype(str)).sum().reindex(channels.index, fill_value=0.0)
        labelled["target"] = revenue.to_numpy(float)
        realised, total_expected = float(revenue.sum()), float(np.nansum(expected))
        with_revenue = labelled["target"] > 0
        metrics.update({
            "realised_revenue": realised, "expected_revenue": total_expected,
            "revenue_ratio": realised / total_expected if total_expected > 0 else np.nan,
            "ape": abs(realised - total_expected) / realised if realised > 0 else np.nan,
            "channel_mape": float((np.abs(labelled["target"] - labelled["prediction"]) / labelled["target"])[with_revenue].mean())
            if with_revenue.any() else np.nan,
        })
    return Outcome(scored, int(horizon_days), labelled, finite(metrics),
                   report="regression" if target == ATTRIBUTED else None)
