"""The registered send-time model: its ``predict`` is what the nightly run publishes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import mlflow
import pandas as pd

from features.engagement import split_engagement_input
from ml.families.send_time.config import SendTimeConfig, _as_of, quiet_hours
from ml.families.send_time.estimator import fit_send_time
from ml.families.send_time.recommender import PUBLISHED_COLUMNS, recommend_send_times

#: the ``params`` :meth:`SendTimeModel.predict` takes (MLflow pyfunc params: scalars only)
PREDICT_PARAMS: tuple[str, ...] = ("as_of", "send_quiet_start", "send_quiet_end", "default_send_hour")


class SendTimeModel(mlflow.pyfunc.PythonModel):
    """The tuned send-time configuration (:class:`SendTimeConfig`), the run date it was trained at
    (``as_of``, an ISO date) and, for reference, the segment priors of that training (a
    :func:`ml.families.send_time.estimator.priors_frame`, what
    :func:`ml.families.send_time.recommender.prior_recommendations` reads for customers without history).

    The model is the configuration: ``predict`` recomputes every customer's posterior curves from the
    history it is given and returns their recommendations (:func:`fit_send_time` then
    :func:`recommend_send_times`), the columns :data:`PUBLISHED_COLUMNS`, one row per customer and day type.

    ``model_input`` is one long frame (:func:`features.engagement.engagement_input`): the customers,
    the hourly engagement and the orders, a ``source`` column naming each row's dataset. ``params``
    (MLflow pyfunc params, all scalars; each one missing keeps the logged value):

    - ``as_of`` (str, an ISO date or instant, UTC): only history strictly before it is used; logged:
      the training run date;
    - ``send_quiet_start`` / ``send_quiet_end`` (int local hours, given together): no recommendation
      in ``start <= h < end`` (around midnight when start > end); equal start and end: no quiet
      hours; logged: the training run's;
    - ``default_send_hour`` (int local hour): the baseline of ``expected_rate_default``.
    """

    def __init__(self, config: SendTimeConfig, as_of: str, priors: pd.DataFrame) -> None:
        self.config = config
        self.as_of = as_of
        self.priors = priors

    def settings(self, params: Mapping[str, Any] | None = None) -> tuple[SendTimeConfig, pd.Timestamp]:
        """The configuration and ``as_of`` that ``params`` ask for (see the class docstring)."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(PREDICT_PARAMS))
        if unknown:
            raise ValueError(f"unknown send-time params {unknown}; known: {', '.join(PREDICT_PARAMS)}")
        changes: dict[str, Any] = {}
        given = [name in params for name in ("send_quiet_start", "send_quiet_end")]
        if any(given) and not all(given):
            raise ValueError("give send_quiet_start and send_quiet_end together (equal: no quiet hours)")
        if all(given):
            changes["quiet_hours"] = quiet_hours(params["send_quiet_start"], params["send_quiet_end"])
        if "default_send_hour" in params:
            changes["default_send_hour"] = int(params["default_send_hour"])
        return dataclasses.replace(self.config, **changes), _as_of(params.get("as_of", self.as_of))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.recommend(*split_engagement_input(model_input), params)

    def recommend(self, engagement: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame,
                  params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """What :meth:`predict` returns for the one-frame input of these three frames (the same fit and
        recommendations), from the frames themselves: the nightly run at a million customers cannot afford the long
        frame and MLflow's checked copy of it (several GB; docs/scale.md)."""
        config, as_of = self.settings(params)
        return recommend_send_times(fit_send_time(engagement, orders, customers, as_of, config))[list(PUBLISHED_COLUMNS)]
