"""Recommendations: each customer's best and runner-up local hour (per day type) from their
posterior curves, never in the quiet hours or at hours without send history."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from features.engagement import resolve_timezones
from ml.families.send_time.config import (
    _MIN_RATE,
    ANY_DAY,
    GLOBAL_SEGMENT,
    HOURS,
    RUNNER_UP_MIN_DISTANCE,
    SendTimeConfig,
    _circular_distance,
)
from ml.families.send_time.estimator import SendTimeFit, _allowed_hours

logger = logging.getLogger(__name__)

RECOMMENDATION_COLUMNS: tuple[str, ...] = (
    "customer_id", "day_type", "timezone", "best_hour", "runner_up_hour", "default_hour", "expected_rate_best",
    "expected_rate_default", "lift_vs_default", "n_events", "signal",
)
#: what the nightly run publishes per customer and day type (with its run date and the model's name and
#: version): the recommendations without ``lift_vs_default`` (the table has both rates)
PUBLISHED_COLUMNS: tuple[str, ...] = tuple(c for c in RECOMMENDATION_COLUMNS if c != "lift_vs_default")


def _best_hours(curves: np.ndarray, config: SendTimeConfig, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best allowed hour and runner-up (-1 when none) along the last axis of ``curves``."""
    # ties (flat curves) go to the hour nearest the default send hour
    nearness = -_circular_distance(np.arange(HOURS), config.default_send_hour) * 1e-9
    score = np.where(allowed, curves.astype(np.float64) + nearness, -np.inf)
    best = score.argmax(axis=-1)
    near_best = _circular_distance(np.arange(HOURS), best[..., None]) < RUNNER_UP_MIN_DISTANCE
    second = np.where(near_best, -np.inf, score)
    runner_up = np.where(np.isfinite(second.max(axis=-1)), second.argmax(axis=-1), -1)
    return best, runner_up


def _recommendation_frame(customer_id: np.ndarray, timezone: np.ndarray, curves: np.ndarray, signal: np.ndarray,
                          n_events: np.ndarray, day_types: tuple[str, ...], config: SendTimeConfig,
                          allowed: np.ndarray) -> pd.DataFrame:
    n_customers, n_day_types, _ = curves.shape
    best, runner_up = _best_hours(curves, config, allowed)
    rate_best = np.take_along_axis(curves, best[..., None], axis=-1)[..., 0].astype(np.float64)
    rate_default = curves[..., config.default_send_hour].astype(np.float64)
    frame = pd.DataFrame({
        "customer_id": np.repeat(customer_id, n_day_types),
        "day_type": np.tile(np.asarray(day_types, dtype=object), n_customers),
        "timezone": np.repeat(timezone, n_day_types),
        "best_hour": best.reshape(-1).astype(np.int64),
        "runner_up_hour": pd.arrays.IntegerArray(runner_up.reshape(-1).astype(np.int64), runner_up.reshape(-1) < 0),
        "default_hour": np.int64(config.default_send_hour),
        "expected_rate_best": rate_best.reshape(-1),
        "expected_rate_default": rate_default.reshape(-1),
        "lift_vs_default": (rate_best / np.maximum(rate_default, _MIN_RATE) - 1.0).reshape(-1),
        "n_events": np.repeat(n_events, n_day_types).astype(np.int64),
        "signal": np.repeat(signal, n_day_types),
    })
    return frame[list(RECOMMENDATION_COLUMNS)]


def recommend_send_times(fit: SendTimeFit) -> pd.DataFrame:
    """One row per customer and day type (``'any'``, or ``'weekday'`` and ``'weekend'`` when the
    config has ``by_day_type``): columns :data:`RECOMMENDATION_COLUMNS`.

    ``best_hour`` is the allowed local hour with the highest posterior: never quiet, and never an
    hour with less than 0.1 % of the store's sends (``fit.allowed_hours``; an email curve there is
    the prior's guess, not evidence);
    ``runner_up_hour`` the best allowed hour at least :data:`RUNNER_UP_MIN_DISTANCE` hours from it
    on the circle (``<NA>`` when there is none); ``expected_rate_*`` the posterior open
    probability there and at ``default_hour`` (reported even when that is quiet) - the activity
    share instead when the store has no email data (``fit.uses_email`` False); ``lift_vs_default``
    = best / default - 1; ``n_events`` the customer's sends + opens + clicks + sessions + orders
    before ``as_of`` (all day types: every day type's curve borrows from all of them).
    """
    frame = _recommendation_frame(fit.customer_id, fit.timezone, fit.curves, fit.signal, fit.n_events,
                                  fit.day_types, fit.config, fit.allowed_hours)
    logger.info("send time recommendations: %d rows, best hours %s", len(frame),
                frame["best_hour"].value_counts().sort_index().to_dict())
    return frame


def prior_recommendations(priors: pd.DataFrame, customers: pd.DataFrame, config: SendTimeConfig) -> pd.DataFrame:
    """Recommendations from segment priors alone (a :func:`priors_frame`, e.g. the one stored with
    the model) for a customers frame with customer_id, timezone and the segment column: the open-rate
    curves when the priors came from email data, else the activity shares; ``signal`` 'prior' and
    ``n_events`` 0. Unknown segments use :data:`GLOBAL_SEGMENT`."""
    for column in ("customer_id", "timezone", *([config.segment_column] if config.segment_column else [])):
        if column not in customers.columns:
            raise ValueError(f"customers is missing column {column!r}; it has {list(customers.columns)}")
    value = "open_rate" if priors["sends"].sum() > 0 else "activity_share"
    day_types = config.day_types
    table = priors[priors["day_type"].isin(day_types)].pivot_table(
        index="segment", columns=["day_type", "hour"], values=value, aggfunc="first")
    table = table.reindex(columns=pd.MultiIndex.from_product([list(day_types), range(HOURS)]))
    if config.segment_column is None:
        segment = pd.Series(GLOBAL_SEGMENT, index=customers.index)
    else:
        raw = customers[config.segment_column]
        segment = raw.where(raw.notna(), "").astype(str)
        segment = segment.where(segment.isin(table.index) & (segment != GLOBAL_SEGMENT), GLOBAL_SEGMENT)
    curves = table.reindex(segment.to_numpy()).to_numpy(dtype=np.float64).reshape(len(customers), len(day_types), HOURS)
    zones, _ = resolve_timezones(customers["timezone"])
    supported = priors[(priors["segment"] == GLOBAL_SEGMENT) & (priors["day_type"] == ANY_DAY)].sort_values("hour")
    return _recommendation_frame(
        customers["customer_id"].to_numpy(dtype=np.int64), zones, curves,
        np.full(len(customers), "prior", dtype=object), np.zeros(len(customers), dtype=np.int64), day_types, config,
        _allowed_hours(config, supported["supported"].to_numpy(dtype=bool)),
    )

