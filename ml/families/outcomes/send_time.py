"""Outcome check of the send-time recommendations: how the emails sent near each customer's
recommended hour did in the horizon after a published night of ``scores.send_time_recommendations``.

A night R's recommendations are checked on ``[R, R + h)``, h the version's test window
(``holdout_days`` of its training run, 28 by default): its test metrics are measured on a window of
that length, so the realised ones are comparable. Each send, session and order of the window (the
``engagement_by_local_hour`` and ``orders`` extracts of the nightly run; any frame of the hourly
``engagement_by_hour``'s columns does too) is read on the customer's local clock, in the
published ``timezone`` (:func:`features.engagement.local_time`), and matched with the customer's
published row of its day type (``'any'``, or ``'weekday'`` / ``'weekend'``). "Near" an hour is within
+/-1 h of it on the 24-hour circle, as the family's ``lift_near_best`` is.

Metrics (``n`` = customers with a send, or with activity for the activity metrics, in the window):

- every customer's sends: ``sends``, ``open_rate``, ``open_rate_near_best`` (sends near the
  published ``best_hour``), ``open_rate_elsewhere`` (all other sends), ``open_rate_near_default``
  (sends near the store's ``default_hour``), ``lift_near_best`` (= ``open_rate_near_best /
  open_rate``, the family's ``test_lift_near_best``), ``lift_vs_default`` (near best / near the
  default), ``share_sends_near_best``, and ``expected_open_rate_near_best`` (the published
  ``expected_rate_best`` of those sends, weighted by sends; customers whose curve came from email);
- customers whose recommendation came from their activity (``signal = 'activity'``): the share of
  their sessions and orders near ``best_hour`` (``share_near_best``, the family's
  ``test_share_near_best`` in a store without email) and near ``default_hour``
  (``share_near_default``), and ``activity``.

Where the store happened to send at random hours (an A/B test of send hours), the open rates near
each hour are unbiased estimates of sending there; where it sent at the recommended hour, only
``open_rate_near_best`` and ``expected_open_rate_near_best`` can be compared. Retraining reads
``lift_near_best`` (or ``share_near_best`` in a store without email), against its test value.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from features.engagement import local_time
from ml.families.outcomes.common import Outcome, Scored, finite

logger = logging.getLogger(__name__)

#: Columns of ``labelled``: one row per customer evaluated.
LABELLED_COLUMNS = ("customer_id", "sends", "opens", "sends_near_best", "opens_near_best", "activity",
                    "activity_near_best")
#: Columns of ``scores.send_time_recommendations`` the check reads.
RECOMMENDATION_COLUMNS = ("customer_id", "day_type", "timezone", "best_hour", "default_hour", "expected_rate_best",
                          "signal")
ANY_DAY = "any"
ACTIVITY = "activity"
#: hours on either side of an hour that count as near it
NEAR_HOURS = 1


def send_time_outcome(scored: Scored, horizon_days: int, recommendations: pd.DataFrame, engagement: pd.DataFrame,
                      orders: pd.DataFrame) -> Outcome:
    """``scored``'s published ``recommendations`` (:data:`RECOMMENDATION_COLUMNS`, one row per customer
    and day type) against the ``engagement`` (customer_id, hour_utc, sends, opens, sessions) and
    ``orders`` (customer_id, order_ts) of ``[R, R + horizon_days)``. ``labelled`` has one row per
    customer evaluated: customer_id, sends, opens, sends_near_best, opens_near_best, activity,
    activity_near_best."""
    start = pd.Timestamp(scored.run_date, tz="UTC")
    end = start + pd.Timedelta(days=int(horizon_days))
    if _summed_before(engagement, start):
        logger.warning("send-time outcome of %s: its window [%s, %s) reaches into the engagement the extract kept "
                       "only summed per local hour (utc_day missing), not per day; not evaluated", scored.run_date,
                       start.date(), end.date())
        return Outcome(scored, int(horizon_days), pd.DataFrame(columns=list(LABELLED_COLUMNS)), {})
    customers = recommendations.drop_duplicates("customer_id").set_index("customer_id")
    activity_customers = customers.index[customers["signal"] == ACTIVITY]

    inside = engagement["customer_id"].isin(customers.index) & (engagement["hour_utc"] >= start) & (engagement["hour_utc"] < end)
    hours = engagement.loc[inside & ((engagement["sends"] > 0) | (engagement["sessions"] > 0))]
    bought = orders[orders["customer_id"].isin(activity_customers) & (orders["order_ts"] >= start) & (orders["order_ts"] < end)]
    events = pd.concat([
        pd.DataFrame({"customer_id": hours["customer_id"].astype("int64"), "at": _utc(hours["hour_utc"]),
                      "sends": hours["sends"].astype(float), "opens": hours["opens"].astype(float),
                      "activity": hours["sessions"].where(hours["customer_id"].isin(activity_customers), 0).astype(float)}),
        pd.DataFrame({"customer_id": bought["customer_id"].astype("int64"), "at": _utc(bought["order_ts"]),
                      "sends": 0.0, "opens": 0.0, "activity": 1.0}),
    ], ignore_index=True)
    events = events[(events["sends"] > 0) | (events["activity"] > 0)].reset_index(drop=True)
    clock = local_time(events["at"], customers["timezone"].reindex(events["customer_id"]).to_numpy())
    events = events.assign(local_hour=clock["local_hour"].to_numpy(), local_day_type=clock["day_type"].to_numpy())
    rows = recommendations[list(RECOMMENDATION_COLUMNS)].rename(columns={"day_type": "row_day_type"})
    matched = events.merge(rows.drop(columns="timezone"), on="customer_id")
    matched = matched[(matched["row_day_type"] == ANY_DAY) | (matched["row_day_type"] == matched["local_day_type"])]

    near_best = _circular_distance(matched["local_hour"], matched["best_hour"]) <= NEAR_HOURS
    near_default = _circular_distance(matched["local_hour"], matched["default_hour"]) <= NEAR_HOURS
    sends, opens, activity = (matched[c].to_numpy(float) for c in ("sends", "opens", "activity"))
    email_curve = (matched["signal"] != ACTIVITY).to_numpy()
    labelled = (matched.assign(sends_near_best=sends * near_best, opens_near_best=opens * near_best,
                               activity_near_best=activity * near_best)
                .groupby("customer_id")[["sends", "opens", "sends_near_best", "opens_near_best", "activity",
                                         "activity_near_best"]].sum().reset_index())

    metrics: dict[str, float] = {}
    if sends.sum() > 0:
        rate = opens.sum() / sends.sum()
        near_rate = _rate(opens[near_best], sends[near_best])
        metrics.update({
            "sends": float(sends.sum()), "open_rate": float(rate), "open_rate_near_best": near_rate,
            "open_rate_elsewhere": _rate(opens[~near_best], sends[~near_best]),
            "open_rate_near_default": _rate(opens[near_default], sends[near_default]),
            "lift_near_best": _ratio(near_rate, rate),
            "lift_vs_default": _ratio(near_rate, _rate(opens[near_default], sends[near_default])),
            "share_sends_near_best": float(sends[near_best].sum() / sends.sum()),
            "expected_open_rate_near_best": _rate(
                (sends * matched["expected_rate_best"].to_numpy(float))[near_best & email_curve],
                sends[near_best & email_curve]),
        })
    if activity.sum() > 0:
        metrics.update({"activity": float(activity.sum()),
                        "share_near_best": float(activity[near_best].sum() / activity.sum()),
                        "share_near_default": float(activity[near_default].sum() / activity.sum())})
    return Outcome(scored, int(horizon_days), labelled, finite(metrics))


def _summed_before(engagement: pd.DataFrame, start: pd.Timestamp) -> bool:
    """Whether ``engagement`` is the nightly cells (``revopt.platform.engagement_extract.engagement_by_local_hour``,
    ``utc_day`` present) and some cell summed over the history before its daily detail has its latest hour
    at or after ``start``: then hours of ``[start, ...)`` are mixed with earlier ones. Otherwise every
    row in the window holds hours of one UTC day only, and windows starting at midnight UTC read it
    exactly as the hourly rows."""
    if "utc_day" not in engagement.columns:
        return False
    return bool((engagement["utc_day"].isna() & (engagement["hour_utc"] >= start)).any())


def _rate(numerator: np.ndarray, denominator: np.ndarray) -> float:
    total = float(np.sum(denominator))
    return float(np.sum(numerator)) / total if total > 0 else np.nan


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else np.nan


def _utc(stamps: pd.Series) -> pd.Series:
    """Timestamps as UTC-aware datetime64[ns, UTC] (naive ones read as UTC)."""
    stamps = pd.to_datetime(stamps)
    if not isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_localize("UTC")
    return stamps.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")


def _circular_distance(hour: pd.Series, other: pd.Series) -> np.ndarray:
    """Hours between two local hours on the 24-hour clock (0..12)."""
    difference = np.abs(hour.to_numpy("int64") - other.to_numpy("int64")) % 24
    return np.minimum(difference, 24 - difference)
