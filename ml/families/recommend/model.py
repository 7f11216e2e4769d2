"""The registered recommendations model: its ``predict`` is what the nightly run publishes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from features.interactions import RecommendationInput, split_recommendation_input, typed_recommendation_input
from ml.families.recommend.config import Rules, settings_from_params
from ml.families.recommend.estimator import ItemFactors
from ml.families.recommend.recommender import PUBLISHED_COLUMNS, recommend


class RecommendationsModel(mlflow.pyfunc.PythonModel):
    """The ALS item factors of the products it knows (:class:`ItemFactors`, with the configuration they
    were fitted with), the rules and the run date it was trained with.

    ``predict(context, model_input, params)`` takes the long frame of
    :func:`features.interactions.recommendation_input` (the customers to recommend to with their
    segment columns, their purchases and product views per day, the catalogue with category, name and
    stock) and returns the published rows (:data:`PUBLISHED_COLUMNS`): up to ``recs_k`` per customer.
    A customer's factors are solved from their history before ``as_of`` on the stored item factors, so
    purchases since training count tonight; customers with no history on a known product get segment
    popularity (:mod:`ml.families.recommend.recommender`). Scoring needs numpy only.

    ``params`` (MLflow pyfunc params, scalars; each missing keeps the logged value): ``as_of`` (ISO
    date: history strictly before it), ``recs_k``, ``recs_exclude_bought_days``,
    ``recs_exclude_categories`` (a JSON list of category names), ``recs_max_per_category`` and
    ``recs_exclude_out_of_stock`` (the run params of the same names, :class:`Rules`).
    """

    def __init__(self, factors: ItemFactors, rules: Rules, as_of: str) -> None:
        self.factors = factors
        self.rules = rules
        self.as_of = as_of

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self._recommend(split_recommendation_input(model_input), params)

    def recommend(self, data: RecommendationInput, params: Mapping[str, Any] | None = None,
                  customers_in: Callable[[np.ndarray], np.ndarray] | None = None) -> pd.DataFrame:
        """What :meth:`predict` returns for the long frame of ``data`` (the same frames, typed the same way), from
        the frames themselves: at a million customers the long frame and MLflow's checked copy of it are several GB
        (docs/scale.md). ``customers_in`` (customer ids -> mask): only those customers' lists, each the same as in
        the whole (a customer-hash partition; ``data`` still has every buyer, whom the cold start ranks by)."""
        return self._recommend(typed_recommendation_input(data), params, customers_in)

    def _recommend(self, data: RecommendationInput, params: Mapping[str, Any] | None,
                   customers_in: Callable[[np.ndarray], np.ndarray] | None = None) -> pd.DataFrame:
        rules, as_of = settings_from_params(params, self.rules, self.as_of)
        ids = None
        if customers_in is not None:
            ids = data.customers["customer_id"].drop_duplicates().to_numpy(dtype=np.int64)
            ids = ids[customers_in(ids)]
        ranked, catalogue = recommend(self.factors, data, as_of, rules, customer_ids=ids)
        return ranked.frame(catalogue)[list(PUBLISHED_COLUMNS)]
