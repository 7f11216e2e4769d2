"""The BTYD baseline: BG/NBD for the number of purchases and Gamma-Gamma for their value, fitted by MAP
with pymc-marketing (:func:`fit_btyd`), and their closed-form expectations written out for scoring
(:func:`btyd_expected_spend`; why by hand: see :mod:`ml.families.clv`)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import hyp2f1

logger = logging.getLogger(__name__)

#: BTYD is fitted on at least this many buyers and this many repeat buyers with positive spend
MIN_BTYD_CUSTOMERS = 10


@dataclass(frozen=True)
class BtydParams:
    """Fitted BG/NBD (r, alpha, a, b; time unit days) and Gamma-Gamma (p, q, v) parameters."""

    r: float
    alpha: float
    a: float
    b: float
    p: float
    q: float
    v: float

    @property
    def population_mean_spend(self) -> float:
        """Gamma-Gamma expected order value of a customer we know nothing about: ``p v / (q - 1)``."""
        return self.p * self.v / (self.q - 1.0)


def btyd_inputs(features: pd.DataFrame) -> pd.DataFrame:
    """pymc-marketing's summary columns from customer features (time unit: days).

    - ``customer_id``: the ``customer_id`` column, or the index if there is none;
    - ``frequency``: repeat purchases, ``max(frequency - 1, 0)``;
    - ``recency``: age at the last purchase, ``days_since_first_order - recency_days`` for repeat
      customers, else 0;
    - ``T``: age at the cutoff, ``days_since_first_order`` (for customers who never bought the
      features set it to their tenure, so signup stands in for the first purchase);
    - ``monetary_value``: ``avg_order_value``, the mean of *all* completed orders (the features do
      not separate the first order, which pymc-marketing's ``rfm_summary`` leaves out); 0 for
      customers who never bought;
    - ``n_orders``: completed orders behind ``monetary_value`` (the Gamma-Gamma weight uses it).
    """
    orders = features["frequency"].to_numpy(dtype="int64")
    age = features["days_since_first_order"].to_numpy(dtype="float64")
    last_purchase_age = age - features["recency_days"].to_numpy(dtype="float64")
    customer_id = features["customer_id"].to_numpy() if "customer_id" in features.columns else features.index.to_numpy()
    return pd.DataFrame(
        {
            "customer_id": customer_id,
            "frequency": np.maximum(orders - 1, 0),
            "recency": np.where(orders > 1, np.clip(last_purchase_age, 0.0, age), 0.0),
            "T": age,
            "monetary_value": np.where(orders > 0, features["avg_order_value"].to_numpy(dtype="float64"), 0.0),
            "n_orders": orders,
        }
    )


def fit_btyd(features: pd.DataFrame) -> BtydParams:
    """MAP fit of BG/NBD on customers with at least one order and of Gamma-Gamma on repeat customers
    with positive spend.

    All priors are flat on the positive reals (``HalfFlat``) and pymc's ``find_MAP`` optimises
    without the Jacobian term, so MAP is the maximum-likelihood estimate: pymc-marketing's default
    BG/NBD priors (e.g. ``alpha ~ Weibull(2, 10)``) assume a time unit much coarser than days.
    The optimiser starts from the model's fixed initial point, so the fit is deterministic.
    """
    # pymc-marketing imports pymc and pytensor (seconds); scoring never needs them.
    from pymc_extras.prior import Prior
    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel

    summary = btyd_inputs(features)
    buyers = summary[summary["n_orders"] > 0]
    repeaters = buyers[(buyers["frequency"] > 0) & (buyers["monetary_value"] > 0)]
    if len(buyers) < MIN_BTYD_CUSTOMERS or len(repeaters) < MIN_BTYD_CUSTOMERS:
        raise ValueError(
            f"BTYD needs at least {MIN_BTYD_CUSTOMERS} buyers and {MIN_BTYD_CUSTOMERS} repeat customers with positive "
            f"spend, got {len(buyers)} and {len(repeaters)}"
        )
    flat = {name: Prior("HalfFlat") for name in ("r", "alpha", "a", "b")}
    started = time.perf_counter()
    purchases = BetaGeoModel(model_config=flat)
    purchases.fit(buyers[["customer_id", "frequency", "recency", "T"]], method="map", progressbar=False)
    # The Gamma-Gamma frequency is the number of orders averaged into monetary_value.
    spend = GammaGammaModel()
    spend.fit(
        repeaters[["customer_id", "monetary_value"]].assign(frequency=repeaters["n_orders"]),
        method="map",
        progressbar=False,
    )
    values = {name: _map_value(purchases, name) for name in ("r", "alpha", "a", "b")}
    values.update({name: _map_value(spend, name) for name in ("p", "q", "v")})
    params = BtydParams(**values)
    logger.info(
        "BTYD fit on %d buyers (%d repeat) in %.1fs: %s",
        len(buyers), len(repeaters), time.perf_counter() - started,
        ", ".join(f"{k}={v:.4g}" for k, v in asdict(params).items()),
    )
    if not params.q > 1.0:
        raise ValueError(f"Gamma-Gamma fit has q={params.q:.3g} <= 1: the expected order value is infinite")
    return params


def btyd_expected_purchases(params: BtydParams, summary: pd.DataFrame, horizon_days: float) -> np.ndarray:
    """BG/NBD conditional expected number of purchases in the next ``horizon_days`` (eq. 10 of
    Fader, Hardie & Lee 2005, as in pymc-marketing's ``BetaGeoModel.expected_purchases``)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x = summary["frequency"].to_numpy(dtype="float64")
    t_x = summary["recency"].to_numpy(dtype="float64")
    T = summary["T"].to_numpy(dtype="float64")
    t = float(horizon_days)
    numerator = (a + b + x - 1) / (a - 1) * (
        1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
    )
    return numerator / (1 + _dropout_odds(params, x, t_x, T))


def btyd_p_alive(params: BtydParams, summary: pd.DataFrame) -> np.ndarray:
    """BG/NBD probability that the customer has not dropped out by the cutoff (eq. 12 of Fader, Hardie
    & Lee 2005): 1 for a customer with no repeat purchase, lower the longer a repeat buyer has been
    silent relative to their rate."""
    x = summary["frequency"].to_numpy(dtype="float64")
    return 1.0 / (1.0 + _dropout_odds(params, x, summary["recency"].to_numpy(dtype="float64"),
                                      summary["T"].to_numpy(dtype="float64")))


def _dropout_odds(params: BtydParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """The odds of having dropped out against being alive, given (x, t_x, T); infinite (overflow) for a
    frequent buyer silent far longer than their rate allows, whose probability of being alive is 0."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    # np.where, not a product with (x > 0): a / (b - 1) is infinite when b == 1 and x == 0.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return np.where(x > 0, a / np.maximum(b + x - 1, np.finfo(float).tiny)
                        * ((alpha + T) / (alpha + t_x)) ** (r + x), 0.0)


def btyd_expected_order_value(params: BtydParams, summary: pd.DataFrame) -> np.ndarray:
    """Gamma-Gamma expected order value (eq. 5 of Fader & Hardie 2013, as in pymc-marketing's
    ``expected_customer_spend``): the population mean shrunk towards the customer's own mean by
    ``n_orders``; customers who never bought get the population mean."""
    n = summary["n_orders"].to_numpy(dtype="float64")
    weight = params.p * n / (params.p * n + params.q - 1)
    return (1 - weight) * params.population_mean_spend + weight * summary["monetary_value"].to_numpy(dtype="float64")


def btyd_expected_spend(params: BtydParams, features: pd.DataFrame, horizon_days: float) -> np.ndarray:
    """Expected spend over the horizon = expected purchases x expected order value."""
    summary = btyd_inputs(features)
    spend = btyd_expected_purchases(params, summary, horizon_days) * btyd_expected_order_value(params, summary)
    return np.clip(spend, 0.0, None)


def _map_value(model: Any, name: str) -> float:
    return float(model.fit_result[name].to_numpy().reshape(-1)[0])
