"""The estimator: segment priors and every customer's posterior open-rate (or activity-share) curve
by local hour (see the package docstring for the method)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.engagement import DAY_TYPES
from ml.families.send_time.config import (
    _ANY,
    _CHUNK_CUSTOMERS,
    _MAX_RATE,
    _MIN_RATE,
    _MIN_SUPPORT_SHARE,
    _PRIOR_BANDWIDTH_HOURS,
    ANY_DAY,
    HOURS,
    SIGNALS,
    SendTimeConfig,
    _as_of,
    _circular_distance,
)
from ml.families.send_time.evidence import _Cube, _cube, _Prepared, _prepare, _row_slices

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendTimeFit:
    """Output of :func:`fit_send_time`.

    ``curves[i, d, h]``: customer i's posterior open probability (or activity share, when the store
    has no email data: ``uses_email`` False) at local hour h of day type ``day_types[d]``.
    ``allowed_hours``: (24,) hours a recommendation may use (not quiet, with send history).
    ``priors``: the segment priors as a long frame (see :func:`priors_frame`). ``params``: scalars
    worth logging (counts of customers per signal, unknown time zones, ...).
    """

    config: SendTimeConfig
    as_of: pd.Timestamp
    customer_id: np.ndarray
    timezone: np.ndarray
    segment: np.ndarray
    day_types: tuple[str, ...]
    curves: np.ndarray
    signal: np.ndarray
    n_events: np.ndarray
    uses_email: bool
    allowed_hours: np.ndarray
    priors: pd.DataFrame
    params: dict[str, Any]


# --- smoothing and priors ---------------------------------------------------------------------------


def _kernel(bandwidth_hours: float) -> np.ndarray:
    """Circular Gaussian smoothing matrix (24 x 24, symmetric, rows sum to 1): ``counts @ W``
    spreads each hour's counts over its neighbours and preserves their total."""
    if bandwidth_hours <= 0:
        return np.eye(HOURS)
    hours = np.arange(HOURS)
    distance = _circular_distance(hours[:, None], hours[None, :])
    weights = np.exp(-0.5 * (distance / bandwidth_hours) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class _Priors:
    """Pooled evidence and prior curves per segment (the last one global) and day type
    (weekday, weekend, any): arrays (S + 1, 3, 24)."""

    names: tuple[str, ...]
    customers: np.ndarray
    sends: np.ndarray
    opens: np.ndarray
    activity: np.ndarray
    open_rate: np.ndarray
    activity_share: np.ndarray
    mean_open_rate: float
    supported: np.ndarray  # (24,) hours the store has sent at (all hours when it has no email data)


def _pool(cube: np.ndarray, segment: np.ndarray, n_segments: int) -> np.ndarray:
    """(C, 2, 24) counts -> (n_segments, 3, 24) sums per segment (the last = all customers) and day
    type (weekday, weekend, any)."""
    flat = pd.DataFrame(cube.reshape(len(cube), -1).astype(np.float64))
    by_segment = flat.groupby(segment).sum().reindex(range(n_segments - 1), fill_value=0.0).to_numpy()
    pooled = np.concatenate([by_segment, flat.sum(axis=0).to_numpy()[None, :]]).reshape(n_segments, 2, HOURS)
    return np.concatenate([pooled, pooled.sum(axis=1, keepdims=True)], axis=1)


def _priors(cube: _Cube, segment: np.ndarray, names: tuple[str, ...], config: SendTimeConfig) -> _Priors:
    """Global all-days curve <- the store's mean rate; global day-type curves and segment all-days
    curves <- the global all-days curve; segment day-type curves <- their all-days curve x the global
    day-type ratio. Each arrow: ``segment_strength`` pseudo-sends (or activity events) per hour."""
    n_segments = len(names)
    sends, opens, activity = (_pool(x, segment, n_segments) for x in (cube.sends, cube.opens, cube.activity))
    kernel = _kernel(_PRIOR_BANDWIDTH_HOURS)
    m = config.segment_strength
    total_sends = float(sends[-1, _ANY].sum())
    mean_rate = float(opens[-1, _ANY].sum() / total_sends) if total_sends > 0 else float("nan")
    k, n = opens @ kernel, sends @ kernel
    global_any = (k[-1, _ANY] + m * (mean_rate if total_sends > 0 else 0.0)) / (n[-1, _ANY] + m)
    global_day = (k[-1, :2] + m * global_any) / (n[-1, :2] + m)
    rate_any = (k[:, _ANY] + m * global_any) / (n[:, _ANY] + m)
    rate_any[-1] = global_any
    day_ratio = np.divide(global_day, global_any, out=np.ones_like(global_day), where=global_any > 0)
    rate_day = (k[:, :2] + m * rate_any[:, None] * day_ratio[None]) / (n[:, :2] + m)
    rate_day[-1] = global_day
    open_rate = np.concatenate([rate_day, rate_any[:, None]], axis=1)

    a = activity @ kernel
    share_any_global = (a[-1, _ANY] + 1.0) / (a[-1, _ANY].sum() + HOURS)
    share_day_global = (a[-1, :2] + m * share_any_global) / (a[-1, :2].sum(axis=-1, keepdims=True) + m)
    share_any = (a[:, _ANY] + m * share_any_global) / (a[:, _ANY].sum(axis=-1, keepdims=True) + m)
    share_any[-1] = share_any_global
    day_prior = share_any[:, None] * (share_day_global / share_any_global)[None]
    day_prior /= day_prior.sum(axis=-1, keepdims=True)
    share_day = (a[:, :2] + m * day_prior) / (a[:, :2].sum(axis=-1, keepdims=True) + m)
    share_day[-1] = share_day_global
    share = np.concatenate([share_day, share_any[:, None]], axis=1)

    customers = np.bincount(segment, minlength=n_segments).astype(np.int64)
    customers[-1] = len(segment)
    supported = sends[-1, _ANY] >= max(_MIN_SUPPORT_SHARE * total_sends, 1.0) if total_sends > 0 else np.ones(HOURS, bool)
    return _Priors(names, customers, sends, opens, activity, np.clip(open_rate, _MIN_RATE, _MAX_RATE),
                   share / share.sum(axis=-1, keepdims=True), mean_rate, supported)


def priors_frame(priors: _Priors) -> pd.DataFrame:
    """The priors as a long frame: segment, day_type (weekday / weekend / any), hour, customers,
    pooled sends / opens / activity, prior open_rate and activity_share, and whether the store has a
    send history at that hour (``supported``, see :func:`recommend_send_times`)."""
    n_segments = len(priors.names)
    shape = (n_segments, 3, HOURS)
    index = np.indices(shape).reshape(3, -1)
    return pd.DataFrame({
        "segment": np.asarray(priors.names, dtype=object)[index[0]],
        "day_type": np.asarray((*DAY_TYPES, ANY_DAY), dtype=object)[index[1]],
        "hour": index[2].astype(np.int64),
        "customers": priors.customers[index[0]],
        "sends": priors.sends.reshape(-1), "opens": priors.opens.reshape(-1), "activity": priors.activity.reshape(-1),
        "open_rate": priors.open_rate.reshape(-1), "activity_share": priors.activity_share.reshape(-1),
        "supported": priors.supported[index[2]],
    })


# --- posterior curves -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Curves:
    curves: np.ndarray  # float32 (C, D, 24)
    level: np.ndarray  # (C,) open level relative to the segment (1 when the store has no email)
    signal: np.ndarray  # object (C,)


def _posterior(cube: _Cube, segment: np.ndarray, priors: _Priors, config: SendTimeConfig, uses_email: bool) -> _Curves:
    n_customers = len(segment)
    n_day_types = len(config.day_types)
    curves = np.empty((n_customers, n_day_types, HOURS), dtype=np.float32)
    level = np.ones(n_customers)
    kernel = _kernel(config.bandwidth_hours)
    for start in range(0, n_customers, _CHUNK_CUSTOMERS):
        part = slice(start, min(start + _CHUNK_CUSTOMERS, n_customers))
        sends, opens, activity = (x[part].astype(np.float64) for x in (cube.sends, cube.opens, cube.activity))
        if uses_email:
            curves[part], level[part] = _email_chunk(sends, opens, activity, segment[part], priors, config, kernel)
        else:
            curves[part] = _activity_chunk(activity, segment[part], priors, config, kernel)
    has_sends = cube.sends.sum(axis=(1, 2)) > 0
    has_activity = cube.activity.sum(axis=(1, 2)) > 0
    activity_used = has_activity & (config.activity_weight > 0 or not uses_email)
    signal = np.where(has_sends & uses_email, "email", np.where(activity_used, "activity", "prior")).astype(object)
    return _Curves(curves, level, signal)


def _activity_profile(activity_any: np.ndarray, segment_share: np.ndarray, strength: float, kernel: np.ndarray) -> np.ndarray:
    return (activity_any @ kernel + strength * segment_share) / (activity_any.sum(axis=1, keepdims=True) + strength)


def _email_chunk(sends: np.ndarray, opens: np.ndarray, activity: np.ndarray, segment: np.ndarray, priors: _Priors,
                 config: SendTimeConfig, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rate_any = priors.open_rate[segment, _ANY]  # (c, 24)
    sends_any, opens_any = sends.sum(axis=1), opens.sum(axis=1)
    expected_opens = (sends_any * rate_any).sum(axis=1)
    level = (opens_any.sum(axis=1) + config.level_strength) / (expected_opens + config.level_strength)
    prior = level[:, None] * rate_any
    if config.activity_weight > 0:
        share_any = priors.activity_share[segment, _ANY]
        profile = _activity_profile(activity.sum(axis=1), share_any, config.activity_strength, kernel)
        tilt = (profile / share_any) ** config.activity_weight
        tilt *= (rate_any.mean(axis=1) / (rate_any * tilt).mean(axis=1))[:, None]  # keeps the day's mean rate
        prior = prior * tilt
    prior = np.clip(prior, _MIN_RATE, _MAX_RATE)
    strength = config.prior_strength
    if not config.by_day_type:
        posterior = (opens_any @ kernel + strength * prior) / (sends_any @ kernel + strength)
        return np.clip(posterior, _MIN_RATE, _MAX_RATE)[:, None, :], level
    day_prior = np.clip(prior[:, None, :] * priors.open_rate[segment, :2] / rate_any[:, None, :], _MIN_RATE, _MAX_RATE)
    # the other day type's evidence counts with weight rho (as it is: a per-segment day-type ratio of
    # opens would carry the noise of the segment's thin weekend data into every customer)
    rho = config.day_type_pooling
    numerator = opens @ kernel + rho * (opens[:, ::-1] @ kernel) + strength * day_prior
    denominator = sends @ kernel + rho * (sends[:, ::-1] @ kernel) + strength
    return np.clip(numerator / denominator, _MIN_RATE, _MAX_RATE), level


def _activity_chunk(activity: np.ndarray, segment: np.ndarray, priors: _Priors, config: SendTimeConfig,
                    kernel: np.ndarray) -> np.ndarray:
    if not config.by_day_type:
        profile = _activity_profile(activity.sum(axis=1), priors.activity_share[segment, _ANY], config.activity_strength, kernel)
        return profile[:, None, :]
    share_day = priors.activity_share[segment, :2]
    mass = activity @ kernel + config.day_type_pooling * (activity[:, ::-1] @ kernel) + config.activity_strength * share_day
    return mass / mass.sum(axis=-1, keepdims=True)


# --- fit -------------------------------------------------------------------------------------------


def _fit_prepared(prepared: _Prepared, cube: _Cube, config: SendTimeConfig) -> tuple[_Priors, _Curves, bool]:
    uses_email = bool(cube.sends.sum() > 0)
    priors = _priors(cube, prepared.segment, prepared.names, config)
    curves = _posterior(cube, prepared.segment, priors, config, uses_email)
    return priors, curves, uses_email


def fit_send_time(engagement: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame, as_of: Any,
                  config: SendTimeConfig | None = None) -> SendTimeFit:
    """Segment priors and every customer's posterior curve from the data before ``as_of`` (see the
    package docstring). One curve set per customer of ``customers``, cold starts included."""
    config = config or SendTimeConfig()
    began = time.perf_counter()
    as_of = _as_of(as_of)
    prepared = _prepare(engagement, orders, customers, as_of, config, rows=False)
    # summed over slices of rows: at a million customers every row located at once would be ~1.5 GB more
    cube = _cube(_row_slices(engagement, orders, prepared.people, as_of), len(prepared.people.customer_id))
    priors, curves, uses_email = _fit_prepared(prepared, cube, config)
    people = prepared.people
    signal_counts = {f"customers_{s}": int((curves.signal == s).sum()) for s in SIGNALS}
    params = {
        "customers": len(people.customer_id), "uses_email": uses_email,
        "sends": float(cube.sends.sum()), "opens": float(cube.opens.sum()), "activity": float(cube.activity.sum()),
        "unknown_timezones": int((~people.timezone_known).sum()), "segments": len(prepared.names) - 1,
        "mean_open_rate": priors.mean_open_rate, "hours_with_send_history": int(priors.supported.sum()), **signal_counts,
    }
    logger.info("send time fit as of %s: %d customers (%s), %s evidence, %.1fs", as_of.date(), len(people.customer_id),
                ", ".join(f"{k.split('_')[1]} {v}" for k, v in signal_counts.items()),
                "email" if uses_email else "activity-only", time.perf_counter() - began)
    return SendTimeFit(
        config=config, as_of=as_of, customer_id=people.customer_id, timezone=people.timezone,
        segment=np.asarray(prepared.names, dtype=object)[prepared.segment], day_types=config.day_types,
        curves=curves.curves, signal=curves.signal, n_events=cube.n_events, uses_email=uses_email,
        allowed_hours=_allowed_hours(config, priors.supported), priors=priors_frame(priors), params=params,
    )


def _allowed_hours(config: SendTimeConfig, supported: np.ndarray) -> np.ndarray:
    """Hours that are neither quiet nor without send history; only the quiet hours are excluded when
    every supported hour is quiet."""
    allowed = config.allowed_hours() & supported
    if not allowed.any():
        logger.warning("send time: every hour with send history is quiet %s; recommending outside it anyway",
                       config.quiet_hours)
        allowed = config.allowed_hours()
    return allowed

