"""Churn risk: the probability that an *active* customer makes no purchase in the next M days.

Active as of a cutoff C means at least one completed order in the ``active_days`` before C.
The label is behavioural and defined at the cutoff: 1 if the active customer completes no order
in ``[C, C + M)``. Customers who are not active get no churn score (they already lapsed).
"""

from __future__ import annotations

import pandas as pd

from features.customer import purchase_label
from ml.propensity import LabelledSet, features_at

MODEL_NAME = "revopt_churn_risk"


def active_mask(features: pd.DataFrame, active_days: int) -> pd.Series:
    """Customers with a completed order within ``active_days`` of the cutoff."""
    return (features["frequency"] > 0) & (features["recency_days"] <= active_days)


def training_set(frames: dict[str, pd.DataFrame], cutoff: pd.Timestamp, horizon_days: int, active_days: int,
                 lookback_days: int | None = None) -> LabelledSet:
    features = features_at(frames, cutoff, lookback_days)
    X = features[active_mask(features, active_days)]
    bought = purchase_label(X.index, frames["orders"], cutoff, horizon_days)
    return LabelledSet(cutoff=cutoff, X=X, y=(1 - bought).astype("int8").rename("label"))
