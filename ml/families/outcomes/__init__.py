"""Outcome monitoring: what a published night of scores or recommendations turned out to be worth
once its horizon had passed.

A night R published by a version with horizon h is about ``[R, R + h)``; from the run date
``D >= R + h`` on, what happened in that window is in the nightly extract, and the published figures
can be checked against it. One module per published table, all pure functions of frames:

- :mod:`.customers` - ``scores.customer_scores``: purchase propensity, churn and CLV against the
  completed orders, with training's labels and the families' own test metrics;
- :mod:`.pricing` - ``scores.price_recommendations``: realised units against the units expected at
  the price actually charged;
- :mod:`.send_time` - ``scores.send_time_recommendations``: open rates of the sends near the
  recommended hour (and the share of activity there);
- :mod:`.budget` - ``scores.budget_allocations``: realised revenue against the revenue expected at
  the spend actually made;
- :mod:`.common` - the rows of ``scores.model_performance``, the versions' comparable test values,
  the Evidently report and the retraining rule shared by all.

The retraining decision (:func:`performance_drops`) reads, per family, metrics chosen to be
comparable with what the version's training run logged for its test window (:data:`CHECKS`): ROC AUC
for propensity and churn; Spearman rank correlation for CLV (an RMSE in currency moves with the
season's spend level); for pricing the Poisson deviance skill over the no-price-response baseline
(the realised deviance itself is of a longer forecast than the test's one-day-ahead one); for send
time the open-rate lift near the recommended hour (the activity share there without email); for
budget the error of the horizon's revenue against the test window's weekly error. A drop of more
than ``performance_drop_threshold`` (in the metric's own points) below the test value (above, for
budget's error) requests retraining.

:func:`ml.pipeline.evaluate_outcomes` reads the published nights and the registry, writes
``scores.model_performance`` and logs to MLflow.
"""

from ml.families.outcomes.budget import ALLOCATION_COLUMNS, ATTRIBUTED, budget_outcome, model_target
from ml.families.outcomes.common import (
    CHECKS,
    PERFORMANCE_COLUMNS,
    Check,
    Outcome,
    Scored,
    comparable_test_values,
    horizon_days,
    is_due,
    outcome_report,
    performance_drops,
    performance_rows,
    primary_metric,
)
from ml.families.outcomes.customers import (
    CLASSIFIER_METRICS,
    CLV_METRICS,
    SCORE_COLUMNS,
    ScoreColumn,
    customer_outcomes,
    scored_versions,
)
from ml.families.outcomes.pricing import RECOMMENDATION_COLUMNS as PRICE_RECOMMENDATION_COLUMNS
from ml.families.outcomes.pricing import pricing_outcome
from ml.families.outcomes.send_time import RECOMMENDATION_COLUMNS as SEND_TIME_RECOMMENDATION_COLUMNS
from ml.families.outcomes.send_time import send_time_outcome

__all__ = [
    "ALLOCATION_COLUMNS", "ATTRIBUTED", "PRICE_RECOMMENDATION_COLUMNS", "SEND_TIME_RECOMMENDATION_COLUMNS", "CHECKS", "CLASSIFIER_METRICS", "CLV_METRICS", "PERFORMANCE_COLUMNS", "SCORE_COLUMNS", "Check", "Outcome",
    "ScoreColumn", "Scored", "budget_outcome", "comparable_test_values", "customer_outcomes", "horizon_days", "is_due",
    "model_target", "outcome_report", "performance_drops", "performance_rows", "pricing_outcome", "primary_metric",
    "scored_versions", "send_time_outcome",
]
