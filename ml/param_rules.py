"""Rules that span several run parameters, which a JSON schema per param (the Airflow trigger form) cannot check.

:func:`check_run_params` is called by the first task that reads a run's params (``dags/_context.py``), so a run
triggered with contradictory values fails at once with each broken rule named: the params, their values and
the rule. Dataclasses only, like ``ml.params``.
"""

from __future__ import annotations

from ml.params import RunParams


class RunParamsError(ValueError):
    """The run's params break a rule that spans several of them; the message names each."""


def run_param_problems(params: RunParams) -> list[str]:
    """Every broken rule, as ``"param=value must ... other=value (why)"``; empty when the params are consistent."""
    problems = []
    if not params.segment_new_days <= params.segment_active_days < params.segment_lost_days:
        problems.append(
            f"segment_new_days={params.segment_new_days} <= segment_active_days={params.segment_active_days} < "
            f"segment_lost_days={params.segment_lost_days} must hold (a 'new' customer is active; 'lost' comes "
            "after 'active')")
    if params.attribution_window_days > params.lookback_days:
        problems.append(f"attribution_window_days={params.attribution_window_days} must not exceed "
                        f"lookback_days={params.lookback_days} (the window's orders must be in the extract)")
    for name in ("budget_min_spend", "budget_max_spend"):
        for channel, value in getattr(params, name).items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                problems.append(f"{name}[{channel!r}]={value!r} must be a number >= 0 (daily spend)")
    for channel, low in params.budget_min_spend.items():
        high = params.budget_max_spend.get(channel)
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
            problems.append(f"budget_min_spend[{channel!r}]={low} must not exceed budget_max_spend[{channel!r}]={high}")
    floor = sum(v for v in params.budget_min_spend.values() if isinstance(v, (int, float)))
    if params.budget_total is not None and floor > params.budget_total:
        problems.append(f"the sum of budget_min_spend ({floor}) must not exceed budget_total={params.budget_total}")
    return problems


def check_run_params(params: RunParams) -> RunParams:
    """``params`` when they are consistent; raises :class:`RunParamsError` naming every broken rule."""
    problems = run_param_problems(params)
    if problems:
        raise RunParamsError("invalid run params: " + "; ".join(problems))
    return params
