"""Reading an Airflow task context without importing Airflow (keeps business code Airflow-free)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def run_date_of(context: Mapping[str, Any]) -> dt.date:
    """The run date D of a DAG run: its logical date in UTC, else when it was asked to run.

    Airflow 3 lets manual runs have no logical date; those run as of their ``run_after``.
    """
    moment = context.get("logical_date")
    if moment is None:
        moment = context["dag_run"].run_after
    return moment.astimezone(dt.timezone.utc).date()
