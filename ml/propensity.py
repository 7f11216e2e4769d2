"""Purchase propensity: the probability that a customer completes an order in the next N days.

Training set as of a cutoff C: features from data before C for every customer signed up before
C; label 1 if they complete an order in ``[C, C + N)``. The time-based holdout fits on cutoff
``D - 2N`` and validates on cutoff ``D - N``, whose labels end exactly at the run date D.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from features.customer import FEATURE_COLUMNS, customer_features, purchase_label

MODEL_NAME = "revopt_purchase_propensity"


@dataclass(frozen=True)
class LabelledSet:
    cutoff: pd.Timestamp
    X: pd.DataFrame
    y: pd.Series

    @property
    def positive_rate(self) -> float:
        return float(self.y.mean()) if len(self.y) else float("nan")


def holdout_cutoffs(run_date: dt.date, horizon_days: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(train cutoff, validation cutoff): the validation labels end at the run date."""
    run_ts = pd.Timestamp(run_date, tz="UTC")
    return run_ts - pd.Timedelta(days=2 * horizon_days), run_ts - pd.Timedelta(days=horizon_days)


def features_at(frames: dict[str, pd.DataFrame], cutoff: pd.Timestamp, lookback_days: int | None = None) -> pd.DataFrame:
    """Customer features as of ``cutoff``, indexed by customer_id, from the ``lookback_days`` before it
    (the nightly run's window, so training and scoring features mean the same; None: all given)."""
    features = customer_features(frames["customers"], frames["orders"], frames["customer_daily_events"], cutoff,
                                 lookback_days=lookback_days)
    return features.set_index("customer_id")[list(FEATURE_COLUMNS)]


def training_set(frames: dict[str, pd.DataFrame], cutoff: pd.Timestamp, horizon_days: int,
                 lookback_days: int | None = None) -> LabelledSet:
    """Features as of ``cutoff`` (over ``lookback_days``) and the purchase label over the following ``horizon_days``."""
    X = features_at(frames, cutoff, lookback_days)
    y = purchase_label(X.index, frames["orders"], cutoff, horizon_days)
    return LabelledSet(cutoff=cutoff, X=X, y=y)
