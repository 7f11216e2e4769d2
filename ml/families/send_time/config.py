"""The send-time model's configuration (:class:`SendTimeConfig`), its constants and the helpers every
part of the model shares (quiet hours, the 24-hour circle, the ``as_of`` instant)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.engagement import DAY_TYPES

HOURS = 24
ANY_DAY = "any"
SIGNALS: tuple[str, ...] = ("email", "activity", "prior")
#: segment label of the global prior (customers of small or unknown segments use it)
GLOBAL_SEGMENT = "(all)"
#: a runner-up hour is at least this far from the best hour (circular)
RUNNER_UP_MIN_DISTANCE = 2
#: values of ``SendTimeConfig.objective``
OBJECTIVES: tuple[str, ...] = ("auto", "policy", "log_loss")
#: ``objective='auto'`` uses the policy value when at least this many allowed local hours ...
POLICY_MIN_HOURS = 3
#: ... each hold at least this share of the store's sends
POLICY_MIN_HOUR_SHARE = 0.05

_PRIOR_BANDWIDTH_HOURS = 1.0  # the pooled curves have plenty of data: a light smoothing only
_MIN_RATE = 1e-6
_MAX_RATE = 1.0 - 1e-6
#: an hour with less than this share of the store's sends has no send history: never recommended
_MIN_SUPPORT_SHARE = 0.001
_CHUNK_CUSTOMERS = 200_000  # posterior curves are computed in chunks to bound temporary memory
_ANY = 2  # day-type index of the all-days curves in the priors (after weekday 0, weekend 1)


@dataclass(frozen=True)
class SendTimeConfig:
    """How the send-time model works; the first seven fields are searched by :func:`tune_send_time`."""

    #: pseudo-sends per hour pulling a customer's curve towards their prior curve
    prior_strength: float = 5.0
    #: pseudo expected opens pulling a customer's overall open level towards their segment's
    level_strength: float = 5.0
    #: sd (hours) of the circular Gaussian kernel smoothing a customer's sends / opens / activity; 0 = none
    bandwidth_hours: float = 2.5
    #: exponent of the activity tilt of the prior curve (0: activity is ignored for email curves)
    activity_weight: float = 0.0
    #: pseudo events pulling a customer's activity profile towards their segment's
    activity_strength: float = 3.0
    #: separate weekday / weekend curves
    by_day_type: bool = False
    #: with by_day_type, how much a customer's evidence from the other day type counts towards a day
    #: type's curve (1: as much as its own, i.e. one curve reshaped by the segment's day-type ratio; 0: none)
    day_type_pooling: float = 0.5
    #: local hours ``start <= h < end`` (around midnight when start > end) when nothing is sent; None: none
    quiet_hours: tuple[int, int] | None = (23, 6)
    #: the store's default send hour (local), for the lift
    default_send_hour: int = 10
    #: customers column whose values are the prior's segments (None: one global prior)
    segment_column: str | None = "country"
    min_segment_customers: int = 200
    #: pseudo-sends (or activity events) per hour pulling a segment's curve towards the global one
    segment_strength: float = 200.0
    holdout_days: int = 28
    random_state: int = 0
    #: what :func:`tune_send_time` minimises (the backtest's ``objective``): ``'policy'`` (held-out open
    #: rate at the recommended hour, inverted), ``'log_loss'``, or ``'auto'``: policy when the store's
    #: sends cover at least :data:`POLICY_MIN_HOURS` allowed local hours with :data:`POLICY_MIN_HOUR_SHARE`
    #: of its sends each, else log loss (always log loss without email data)
    objective: str = "auto"
    #: folds of the sends (random, seeded) over which the policy value is cross-fitted
    policy_folds: int = 4

    def __post_init__(self) -> None:
        if self.quiet_hours is not None:
            # JSON round trips (the champion's spec tag) turn the tuple into a list
            object.__setattr__(self, "quiet_hours", tuple(int(h) for h in self.quiet_hours))
            if len(self.quiet_hours) != 2 or not all(0 <= h < HOURS for h in self.quiet_hours):
                raise ValueError(f"quiet_hours must be None or (start, end) local hours in 0..23, got {self.quiet_hours!r}")
            if self.quiet_hours[0] == self.quiet_hours[1]:
                raise ValueError(f"quiet_hours {self.quiet_hours!r} is ambiguous (empty or all day): use None for no quiet hours")
        checks = {
            "prior_strength": self.prior_strength > 0,
            "level_strength": self.level_strength > 0,
            "bandwidth_hours": 0 <= self.bandwidth_hours <= 12,
            "activity_weight": self.activity_weight >= 0,
            "activity_strength": self.activity_strength > 0,
            "day_type_pooling": 0 <= self.day_type_pooling <= 1,
            "default_send_hour": 0 <= self.default_send_hour < HOURS and int(self.default_send_hour) == self.default_send_hour,
            "min_segment_customers": self.min_segment_customers >= 1,
            "segment_strength": self.segment_strength > 0,
            "holdout_days": self.holdout_days >= 1,
            "objective": self.objective in OBJECTIVES,
            "policy_folds": 2 <= self.policy_folds <= 20 and int(self.policy_folds) == self.policy_folds,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"SendTimeConfig.{name} is out of range: {getattr(self, name)!r}")

    @property
    def day_types(self) -> tuple[str, ...]:
        return DAY_TYPES if self.by_day_type else (ANY_DAY,)

    def allowed_hours(self) -> np.ndarray:
        """Boolean mask over local hours 0..23: True where sending is allowed."""
        return ~quiet_mask(self.quiet_hours)


def quiet_mask(quiet_hours: tuple[int, int] | None) -> np.ndarray:
    """Boolean mask over local hours 0..23 of ``start <= h < end``, read around midnight when start > end."""
    hours = np.arange(HOURS)
    if quiet_hours is None:
        return np.zeros(HOURS, dtype=bool)
    start, end = quiet_hours
    return (hours >= start) & (hours < end) if start < end else (hours >= start) | (hours < end)


def quiet_hours(start: int, end: int) -> tuple[int, int] | None:
    """The quiet hours of the run parameters ``send_quiet_start`` / ``send_quiet_end``: equal start and
    end mean none."""
    return None if int(start) == int(end) else (int(start), int(end))


def _circular_distance(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    difference = np.abs(np.asarray(a) - np.asarray(b)) % HOURS
    return np.minimum(difference, HOURS - difference)


def _as_of(as_of: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(as_of)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")

