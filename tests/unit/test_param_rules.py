"""Rules across run params: each broken one is named with the params, their values and the rule."""

from __future__ import annotations

import pytest

from ml.param_rules import RunParamsError, check_run_params, run_param_problems
from ml.params import RunParams


def test_the_defaults_are_consistent():
    assert run_param_problems(RunParams()) == []
    assert check_run_params(RunParams()) == RunParams()


@pytest.mark.parametrize("changes, says", [
    ({"segment_active_days": 400}, "segment_active_days=400 < segment_lost_days=365 must hold"),
    ({"segment_new_days": 120}, "segment_new_days=120 <= segment_active_days=90"),
    ({"attribution_window_days": 200, "lookback_days": 100},
     "attribution_window_days=200 must not exceed lookback_days=100"),
    ({"budget_min_spend": {"display": 500}, "budget_max_spend": {"display": 100}},
     "budget_min_spend['display']=500 must not exceed budget_max_spend['display']=100"),
    ({"budget_min_spend": {"display": "lots"}}, "budget_min_spend['display']='lots' must be a number >= 0"),
    ({"budget_min_spend": {"display": 80, "search": 50}, "budget_total": 100.0},
     "the sum of budget_min_spend (130) must not exceed budget_total=100.0"),
])
def test_a_broken_rule_is_named_with_the_values(changes, says):
    with pytest.raises(RunParamsError, match="invalid run params: ") as raised:
        check_run_params(RunParams(**changes))
    assert says in str(raised.value)
    assert isinstance(raised.value, ValueError)  # a permanent error: the retry policy fails it at once


def test_every_broken_rule_is_listed_at_once():
    problems = run_param_problems(RunParams(segment_active_days=400, attribution_window_days=200, lookback_days=100))
    assert len(problems) == 2
