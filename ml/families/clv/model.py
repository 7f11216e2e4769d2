"""The CLV pyfunc (:class:`ClvModel`): expected spend over the horizon from a customer features frame."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from ml.families.classifier import lightgbm_contributions
from ml.families.clv.btyd import BtydParams, btyd_expected_spend
from ml.families.clv.gbm import feature_matrix

BTYD = "btyd"
GBM = "gbm"


class ClvModel(mlflow.pyfunc.PythonModel):
    """Expected spend over ``horizon_days`` for each row of a customer features frame.

    Holds either a LightGBM booster (``kind == "gbm"``) or fitted :class:`BtydParams`
    (``kind == "btyd"``, scored with the closed-form expectations of this module), nothing from
    pymc / pytensor, so it pickles with cloudpickle and scores without importing pymc.
    """

    def __init__(self, kind: str, horizon_days: int, booster: lgb.Booster | None = None, btyd_params: BtydParams | None = None,
                 scale: float = 1.0):
        self.kind = kind
        self.horizon_days = horizon_days
        self.booster = booster
        self.btyd_params = btyd_params
        self.scale = scale  # the GBM's spend over its label window -> over horizon_days

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        """Expected spend over the horizon, one float per row of ``model_input`` (needs
        :data:`FEATURE_COLUMNS`; other columns are ignored)."""
        if self.kind == GBM:
            spend = np.asarray(self.booster.predict(feature_matrix(model_input, self.booster.feature_name())),
                               dtype="float64")
            scale = getattr(self, "scale", 1.0)  # versions pickled before label windows had none
            return spend * scale if scale != 1.0 else spend
        if self.kind == BTYD:
            return btyd_expected_spend(self.btyd_params, model_input, self.horizon_days)
        raise ValueError(f"unknown CLV model kind {self.kind!r}")

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        """Per-feature TreeSHAP contributions, LightGBM's ``pred_contrib`` values (computed by
        :func:`ml.families.classifier.lightgbm_contributions`) for the GBM, None for BTYD. They are in
        the Tweedie log-link space: each row's contributions plus
        the ``bias`` column sum to ``log(predicted spend)`` (before the horizon scaling, a constant
        factor that moves no customer's ranking)."""
        if self.kind != GBM:
            return None
        names = self.booster.feature_name()
        values = lightgbm_contributions(self.booster, feature_matrix(features, names).to_numpy(dtype=np.float64))
        return pd.DataFrame(values, index=features.index, columns=[*names, "bias"])
