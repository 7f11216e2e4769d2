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
