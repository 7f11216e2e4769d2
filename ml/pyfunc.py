"""MLflow pyfunc wrappers: what gets logged, registered and loaded by ``models:/<name>@champion``.

The wrapped objects are plain fitted models (see :mod:`ml.classifier` and :mod:`ml.clv`);
``predict`` returns one number per row of a customer-features frame and ``contributions``
returns per-feature additive contributions for explanations (or None where the model has none).
Loading a model needs revopt installed (its classes are pickled by reference).
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd

from ml.classifier import CalibratedModel


class CalibratedClassifierModel(mlflow.pyfunc.PythonModel):
    """Calibrated probability of the positive class."""

    def __init__(self, model: CalibratedModel) -> None:
        self.model = model

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        return self.model.predict_proba(model_input)

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        return self.model.contributions(features)


class PricingModel(mlflow.pyfunc.PythonModel):
    """Per-product elasticities (with intervals) and the optimiser that turns them into prices.

    ``predict`` returns the recommended list price for each row of a products frame
    (product_id, cost, current_price) under the guardrails the model was logged with;
    :meth:`recommend` returns the full recommendation table under any guardrails.
    """

    def __init__(self, estimates: pd.DataFrame, guardrails: Any, horizon_days: int) -> None:
        self.estimates = estimates
        self.guardrails = guardrails
        self.horizon_days = horizon_days

    def recommend(self, products: pd.DataFrame, guardrails: Any = None, *, competitor_prices: pd.DataFrame | None = None,
                  inventory: pd.DataFrame | None = None, horizon_days: int | None = None) -> pd.DataFrame:
        from ml.pricing import recommend_prices

        return recommend_prices(
            self.estimates, products, guardrails or self.guardrails,
            competitor_prices=competitor_prices, inventory=inventory, horizon_days=horizon_days or self.horizon_days,
        )

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        return self.recommend(model_input)["recommended_price"].to_numpy(dtype="float64")

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        return None


class SendTimeModel(mlflow.pyfunc.PythonModel):
    """The tuned send-time configuration (:class:`ml.send_time.SendTimeConfig`) and, for reference,
    the segment priors it was trained with (a :func:`ml.send_time.priors_frame`).

    The model is the configuration: :meth:`recommend` recomputes every customer's posterior from the
    latest engagement, orders and customers with it (what the nightly run calls). ``predict`` needs
    no history: for each row of a customers frame (customer_id, timezone and the segment column,
    ``country`` by default) it returns the recommendation of the training priors alone
    (:func:`ml.send_time.prior_recommendations`: best and runner-up local hour per day type,
    signal 'prior'), e.g. for a customer who signed up today.
    """

    def __init__(self, config: Any, priors: pd.DataFrame) -> None:
        self.config = config
        self.priors = priors

    def recommend(self, engagement: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame, as_of: Any,
                  config: Any = None) -> pd.DataFrame:
        """``config`` replaces the stored one (e.g. the stored config with this run's quiet hours)."""
        from ml.send_time import fit_send_time, recommend_send_times

        return recommend_send_times(fit_send_time(engagement, orders, customers, as_of, config or self.config))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from ml.send_time import prior_recommendations

        return prior_recommendations(self.priors, model_input, self.config)

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        return None


class BudgetModel(mlflow.pyfunc.PythonModel):
    """Fitted media response curves (:class:`ml.budget.MediaFit`, with its bootstrap refits) and the
    optimiser that turns them into a daily budget split.

    ``predict`` takes a frame with one row per paid channel: channel, current_spend (daily) and
    returns the recommended daily spend for each row, in row order, under the constraints the
    model was logged with (channels the fit does not know are held at their current spend);
    :meth:`allocate` returns the full :class:`ml.budget.BudgetAllocation` from a media history
    under any constraints.
    """

    def __init__(self, media_fit: Any, constraints: Any = None) -> None:
        self.media_fit = media_fit
        self.constraints = constraints

    def allocate(self, history: pd.DataFrame, constraints: Any = None) -> Any:
        from ml.budget import allocate_budget

        return allocate_budget(self.media_fit, history, constraints or self.constraints)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        from ml.budget import allocate_spend

        missing = {"channel", "current_spend"} - set(model_input.columns)
        if missing:
            raise ValueError(f"model_input is missing columns {sorted(missing)}")
        if model_input["channel"].duplicated().any():
            raise ValueError("model_input must have one row per channel")
        current = pd.Series(model_input["current_spend"].to_numpy(dtype="float64"), index=model_input["channel"].astype(str))
        table = allocate_spend(self.media_fit, current, self.constraints).table.set_index("channel")
        return table["recommended_spend"].reindex(current.index).to_numpy(dtype="float64")

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        return None
