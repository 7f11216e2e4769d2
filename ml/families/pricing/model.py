"""The pricing family's MLflow pyfunc: what is logged, registered and loaded by
``models:/revopt_price_elasticity@champion``; its ``predict`` is the nightly price recommendations."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from ml.families.pricing.estimator import BRAND_COLUMNS
from ml.families.pricing.optimiser import PricingGuardrails, recommend_prices


class PricingModel(mlflow.pyfunc.PythonModel):
    """Per-product elasticities (with intervals) and the optimiser that turns them into prices.

    ``predict(context, model_input, params)`` takes one row per product to price
    (:func:`features.demand.pricing_input`: product_id, cost, current_price, competitor_price and
    on_hand, NaN when unknown; other columns are ignored) and returns
    :func:`ml.families.pricing.optimiser.recommend_prices`' table for it (product_id, current_price,
    recommended_price, elasticity, elasticity_low, elasticity_high, expected units / revenue / profit
    at the current and the recommended price, binding_guardrail, confidence, reason) and the brand's
    elasticity with its interval (:data:`~ml.families.pricing.estimator.BRAND_COLUMNS`), one row per
    input row in input order.

    ``params`` (MLflow pyfunc params, scalars only; each one not given keeps the value the model was
    logged with, see :func:`pyfunc_params`): ``min_margin`` (float), ``max_change`` (float),
    ``price_ending`` (a JSON string: ``"0.99"`` for prices like 12.99, ``"null"`` for whole cents;
    MLflow has no nullable float param) and ``horizon_days`` (int, the days the expected figures
    cover), ``joint_substitutes`` (bool: price substitutes jointly with the model's
    ``cross_elasticity``, :func:`recommend_prices`). The other guardrails (competitor band, observed
    range, inventory cover, confidence rules) are the logged ones.
    """

    #: the shared cross-price elasticity substitutes are priced jointly with (0: each product alone);
    #: a class default, so a model pickled before it existed loads with none
    cross_elasticity: float = 0.0

    def __init__(self, estimates: pd.DataFrame, guardrails: PricingGuardrails, horizon_days: int,
                 cross_elasticity: float = 0.0) -> None:
        self.estimates = estimates
        self.guardrails = guardrails
        self.horizon_days = horizon_days
        self.cross_elasticity = float(cross_elasticity)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        guardrails, horizon_days = self.settings(params)
        joint = bool((params or {}).get("joint_substitutes", True))
        prices = recommend_prices(self.estimates, model_input, guardrails, horizon_days=horizon_days,
                                  cross_elasticity=self.cross_elasticity if joint else 0.0)
        # the brand's elasticity beside the product's (NaN without brands, or from a model logged before them)
        known = self.estimates.drop_duplicates("product_id").set_index("product_id").reindex(prices["product_id"])
        return prices.assign(**{column: known[column].to_numpy(dtype=float) if column in known.columns
                                else np.full(len(prices), np.nan) for column in BRAND_COLUMNS})

    def settings(self, params: Mapping[str, Any] | None = None) -> tuple[PricingGuardrails, int]:
        """The guardrails and horizon ``params`` ask for, the logged ones where they say nothing."""
        given = {key: value for key, value in (params or {}).items() if value is not None}
        guardrails = dataclasses.replace(
            self.guardrails,
            min_margin=float(given.get("min_margin", self.guardrails.min_margin)),
            max_change=float(given.get("max_change", self.guardrails.max_change)),
            price_ending=_price_ending(given["price_ending"]) if "price_ending" in given else self.guardrails.price_ending,
        )
        return guardrails, int(given.get("horizon_days", self.horizon_days))


def pyfunc_params(guardrails: PricingGuardrails, horizon_days: int, joint_substitutes: bool = True) -> dict[str, Any]:
    """:class:`PricingModel`'s ``params`` for these guardrails and horizon (MLflow scalars)."""
    return {
        "min_margin": float(guardrails.min_margin),
        "max_change": float(guardrails.max_change),
        "price_ending": json.dumps(None if guardrails.price_ending is None else float(guardrails.price_ending)),
        "horizon_days": int(horizon_days),
        "joint_substitutes": bool(joint_substitutes),
    }


def _price_ending(value: Any) -> float | None:
    """A ``price_ending`` param: a JSON string (``"0.99"``, ``"null"``; empty for none) or a number."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else None
    return None if value is None else float(value)
