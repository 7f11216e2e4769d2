"""Which test-window customers a customer family's logged feature importance is averaged over."""

from __future__ import annotations

from features.customer import LabelledSet, sampled

#: The most test-window customers a customer family's logged feature importance (mean |contribution|, TreeSHAP)
#: averages over (:func:`importance_sample`). At a million customers TreeSHAP on the 200k of the
#: ``training_sample_customers`` sample took 93 s of propensity's training (an ensemble of three estimators); a mean
#: over 50k has a standard error of ~0.5 % of each contribution's spread.
IMPORTANCE_CUSTOMERS = 50_000


def importance_sample(labelled: LabelledSet, training_sample_customers: int, seed: int) -> LabelledSet:
    """The test window's customers the logged importance is computed on: the ``training_sample_customers`` sample
    (:func:`sampled`), at most :data:`IMPORTANCE_CUSTOMERS` of them (the bottom of the same seeded hash)."""
    n = IMPORTANCE_CUSTOMERS if training_sample_customers == 0 else min(training_sample_customers, IMPORTANCE_CUSTOMERS)
    return sampled(labelled, n, seed)
