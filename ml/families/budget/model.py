"""The budget family's registered model: fitted response curves and the optimiser, whose ``predict``
is the nightly budget split (what ``scores.budget_allocations`` publishes)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import mlflow
import pandas as pd

from features.media import spend_history
from ml.families.budget.estimator import MediaFit
from ml.families.budget.optimiser import BudgetAllocation, BudgetConstraints, allocate_budget

#: ``predict``'s columns: ``scores.budget_allocations`` without run_date, model_name and model_version
ALLOCATION_COLUMNS: tuple[str, ...] = (
    "channel", "current_spend", "recommended_spend", "expected_revenue_current",
    "expected_revenue_recommended", "expected_revenue_recommended_low", "expected_revenue_recommended_high",
    "marginal_roas", "marginal_roas_low", "marginal_roas_high", "binding_constraint", "horizon_days", "moved",
    "reason",
)
_JSON_PARAMS = ("total_budget", "min_spend", "max_spend")  # nullable or dicts: JSON strings (MLflow params are scalars)


def constraint_params(constraints: BudgetConstraints) -> dict[str, Any]:
    """``constraints`` as :class:`BudgetModel` ``predict`` params (see its docstring). A ``max_change``
    of None (no limit) has no param value: it is left out, and the model's own applies."""
    params: dict[str, Any] = {
        "total_budget": json.dumps(constraints.total_budget),
        "min_spend": json.dumps(dict(constraints.min_spend), sort_keys=True),
        "max_spend": json.dumps(dict(constraints.max_spend), sort_keys=True),
        "horizon_days": int(constraints.horizon_days),
    }
    if constraints.max_change is not None:
        params["max_change"] = float(constraints.max_change)
    return params


def constraints_from_params(params: Mapping[str, Any] | None, base: BudgetConstraints) -> BudgetConstraints:
    """``base`` with the settings ``params`` name replaced (JSON strings decoded; decoded values are
    accepted as they are). Raises ``ValueError`` for unknown params or values out of range."""
    if not params:
        return base
    unknown = set(params) - {*_JSON_PARAMS, "max_change", "horizon_days"}
    if unknown:
        raise ValueError(f"unknown budget params {sorted(unknown)}")
    values = {name: json.loads(value) if name in _JSON_PARAMS and isinstance(value, str) else value
              for name, value in params.items()}
    for name in ("min_spend", "max_spend"):
        if name in values:
            if not isinstance(values[name], Mapping):
                raise ValueError(f"the {name} param must be a JSON object of channel -> daily spend, got {params[name]!r}")
            values[name] = dict(values[name])
    if "horizon_days" in values:
        values["horizon_days"] = int(values["horizon_days"])
    return replace(base, **values)


def allocation_rows(allocation: BudgetAllocation) -> pd.DataFrame:
    """The published rows of an allocation (:data:`ALLOCATION_COLUMNS`): its table with the horizon,
    whether the split moved, and the allocation's reason where a channel has none of its own."""
    table = allocation.table
    return table.assign(
        horizon_days=allocation.horizon_days, moved=allocation.moved,
        reason=table["reason"].where(table["reason"].astype(bool), allocation.reason),
    )[list(ALLOCATION_COLUMNS)]


class BudgetModel(mlflow.pyfunc.PythonModel):
    """Fitted media response curves (:class:`~ml.families.budget.estimator.MediaFit`, with its
    bootstrap refits) and the optimiser that turns them into a daily budget split.

    ``predict(context, model_input, params)``:

    - ``model_input``: the daily spend per paid channel, long (``day``, ``channel``, ``spend``: one
      row per day and channel, as :func:`features.media.daily_spend` builds it; a missing row is a
      day without spend), covering at least the ``current_window_days`` (28) days whose mean is
      each channel's current spend. Long, so the input schema does not name the store's channels: a
      channel the fit does not know is held at its current spend, as it always was.
    - ``params`` (MLflow params are scalars, so the nullable and dict settings are JSON strings):
      ``total_budget`` (JSON: a number, daily across all channels, or ``null`` for the current
      total), ``max_change`` (float: each channel within current x (1 +/- max_change)),
      ``min_spend`` / ``max_spend`` (JSON objects: channel -> daily spend), ``horizon_days`` (int:
      the days the expected revenue figures cover). A setting not given is the one the model was
      logged with (:attr:`constraints`).
    - returns :data:`ALLOCATION_COLUMNS`, one row per paid channel of the input, in channel order:
      the published ``scores.budget_allocations`` rows without run_date, model_name and
      model_version.
    """

    def __init__(self, media_fit: MediaFit, constraints: BudgetConstraints | None = None) -> None:
        self.media_fit = media_fit
        self.constraints = constraints or BudgetConstraints()

    def allocate(self, model_input: pd.DataFrame, params: Mapping[str, Any] | None = None) -> BudgetAllocation:
        """The whole :class:`~ml.families.budget.optimiser.BudgetAllocation` (store totals, solver)
        behind :meth:`predict`."""
        constraints = constraints_from_params(params, self.constraints)
        history = spend_history(model_input)
        if len(history) < constraints.current_window_days:
            raise ValueError(f"model_input covers {len(history)} days; current spend is the mean daily spend over the last "
                             f"{constraints.current_window_days}")
        return allocate_budget(self.media_fit, history, constraints)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return allocation_rows(self.allocate(model_input, params))
