"""Purchase propensity: the probability that a customer completes an order in the next N days
(``propensity_horizon_days``).

Training set as of a cutoff C (``features.customer.purchase_set``): features from data before C for
every customer signed up before C; label 1 if they complete an order in ``[C, C + N)``. Models are
fitted (and selected) on cutoff ``D - 2N`` and tested on cutoff ``D - N``, whose labels end exactly at
the run date D. The model is a calibrated binary classifier (:mod:`ml.families.binary`); the naive
baseline it must beat is recency (the more recent the last order, the likelier the next).
"""

from __future__ import annotations

from features.customer import purchase_set
from ml.families.binary import BinaryFamily

MODEL_NAME = "revopt_purchase_propensity"

FAMILY = BinaryFamily(
    name="purchase_propensity",
    model_name=MODEL_NAME,
    horizon=lambda params: params.propensity_horizon_days,
    labelled_set=lambda frames, cutoff, params: purchase_set(frames, cutoff, params.propensity_horizon_days,
                                                             params.lookback_days),
    baseline=lambda X: -X["recency_days"].to_numpy(dtype="float64"),
    baseline_name="recency",
    description=("The probability that a customer places a completed order in the next propensity_horizon_days "
                 "(default 30) days, from their customer features as of the run date: a calibrated classifier "
                 "(LightGBM, XGBoost or CatBoost, chosen per run) published as customer_scores.purchase_propensity."),
    label_names=("bought in the {horizon} days after", "did not"),
)
