"""Churn risk: the probability that an *active* customer makes no purchase in the next M days
(``churn_horizon_days``).

Active as of a cutoff C means at least one completed order in the ``churn_active_days`` before C
(``features.customer.active_mask``). The label is behavioural and defined at the cutoff: 1 if the
active customer completes no order in ``[C, C + M)`` (``features.customer.churn_set``). Customers who
are not active get no churn score (they already lapsed): the nightly input holds the active ones only.
The model is a calibrated binary classifier (:mod:`ml.families.binary`); the naive baseline it must beat
is recency (the longer since the last order, the likelier the lapse).
"""

from __future__ import annotations

from features.customer import churn_set
from ml.families.binary import BinaryFamily

MODEL_NAME = "revopt_churn_risk"

FAMILY = BinaryFamily(
    name="churn",
    model_name=MODEL_NAME,
    horizon=lambda params: params.churn_horizon_days,
    labelled_set=lambda frames, cutoff, params: churn_set(frames, cutoff, params.churn_horizon_days,
                                                          params.churn_active_days, params.lookback_days),
    baseline=lambda X: X["recency_days"].to_numpy(dtype="float64"),
    baseline_name="recency",
    description=("The probability that an active customer (a completed order in the last churn_active_days) places "
                 "no completed order in the next churn_horizon_days: a calibrated classifier on their customer "
                 "features as of the run date, published as customer_scores.churn_risk."),
    label_names=("no order in the {horizon} days after", "ordered again"),
    active_days=lambda params: params.churn_active_days,
)
