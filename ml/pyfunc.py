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
