"""What a revopt task reads from its Airflow context: its resources, the run's params and run date. Listed in
``.airflowignore`` (helpers, no DAG); re-exported by ``_support``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def resources():
    """The task's :class:`revopt.platform.resources.Resources`, built once from the settings."""
    from revopt.platform.config import load_settings
    from revopt.platform.resources import Resources

    return Resources(load_settings())


def run_params_of(context: Mapping[str, Any]):
    """The run's :class:`ml.params.RunParams` from the DAG run's params, checked against the rules that span
    several params (``ml.param_rules``): the first task to read them fails with the param, its value and the rule.
    (The trigger form and ``airflow dags test --conf`` already checked each value's type and bounds.)"""
    from ml.param_rules import check_run_params
    from ml.params import RunParams

    return check_run_params(RunParams.from_mapping(context["params"]))


def as_of_of(context: Mapping[str, Any]) -> dt.datetime:
    """The data cutoff of a run that refreshes within the day (``revopt_affinity``): its logical date (the
    scheduled moment), else when it was asked to run; UTC."""
    moment = context.get("logical_date")
    if moment is None:
        moment = context["dag_run"].run_after
    return moment.astimezone(dt.timezone.utc)


def run_date_of(context: Mapping[str, Any]) -> dt.date:
    """The run date D of a DAG run: its logical date in UTC, else when it was asked to run.

    Airflow 3 lets manual runs have no logical date; those run as of their ``run_after``.
    """
    return as_of_of(context).date()
