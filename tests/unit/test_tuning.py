"""The one search loop (ml.tuning.search): its budget is the whole search's, the default's scoring included."""

from __future__ import annotations

import time

import pytest

from ml.tuning import Budget, Scored, SearchSpace, search


def _space(default_seconds: float, scored: list[float]) -> SearchSpace[float]:
    """A one-parameter space whose default (x = 0) takes ``default_seconds`` to score; trials are instant."""

    def score(x: float) -> Scored[float]:
        if x == 0.0:
            time.sleep(default_seconds)
        scored.append(x)
        return Scored(x, {"loss": (x - 0.3) ** 2})

    return SearchSpace("toy", lambda trial: trial.suggest_float("x", 0.1, 1.0), score, objective="loss",
                       direction="minimize", default=0.0)


def test_scoring_the_default_counts_against_the_tuning_budget():
    scored: list[float] = []
    tuned = search(_space(0.6, scored), Budget(n_trials=5, timeout_seconds=0.5, random_state=0))
    assert scored == [0.0], "the default used the whole budget: no trial may start"
    assert tuned.n_trials == 0 and tuned.config == 0.0 and tuned.default_value == pytest.approx(0.09)


def test_trials_run_in_what_the_default_left_of_the_budget():
    scored: list[float] = []
    tuned = search(_space(0.0, scored), Budget(n_trials=5, timeout_seconds=60, random_state=0))
    assert len(scored) == 6 and tuned.n_trials == 5, "a quick default leaves the trials their budget"
    assert tuned.value < tuned.default_value
