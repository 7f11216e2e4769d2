"""The uplift model: EconML's X-learner over LightGBM, its Qini metric and the published pyfunc.

**Model.** An X-learner (Kuenzel et al. 2019, :class:`econml.metalearners.XLearner`) with LightGBM
outcome and effect models, one treatment per (offer type, discount) the store has sent and the
randomised control as the baseline: it estimates P(an order in the horizon) without an offer (the
control's outcome model) and the effect of each offer on it, per customer. The propensity is the
campaigns' treated share (``DummyClassifier(strategy="prior")``): the offers were randomised. A second
X-learner estimates the effect on the horizon's revenue; its 80 % interval is the spread of the same
effect over :data:`BOOTSTRAP_MODELS` - 1 more revenue learners refitted on seeded bootstrap resamples.

Measured before choosing (issue 19; ``benchmarks/uplift.py``, 20,000 customers, the held-out campaign,
30 % of it offered): causalml would install a second xgboost beside the pinned ``xgboost-cpu`` (with
black, shap and an NVIDIA library); scikit-uplift is unmaintained since 2022; EconML 0.17 installs
without changing a pinned version (it adds econml, shap, slicer and sparse). On the same LightGBM base
models a hand-written two-model learner and EconML's T-learner, X-learner and causal forest
(``CausalForestDML``) found the same incremental revenue (62.5k, 59.9k, 62.9k, 63.6k against 4.3k for
churn-risk targeting) and Qini (0.050-0.054), but the two-model learners offered 65 and 52 of the 645
sleeping dogs, the X-learner 30 and the causal forest 28: the X-learner, which borrows the other arm's
model to impute each customer's effect, is the choice (the causal forest is a slower fit for the same
ranking, and takes one binary treatment per model).

**Metric.** The Qini coefficient (Radcliffe 2007), normalised: the area between the model's Qini
curve and the random-targeting line over the same area for the perfect ranking (treated buyers first,
control buyers last), computed from the test offers' (treated, ordered) pairs. Written here: it is a
few lines, and the libraries that have it (scikit-uplift, causalml) are the ones not taken above.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from econml.metalearners import XLearner
from sklearn.dummy import DummyClassifier

from features.customer import FEATURE_COLUMNS
from ml.evaluation import Metric

#: Revenue X-learners (the first on every offer, the others on bootstrap resamples) for the revenue interval.
BOOTSTRAP_MODELS = 8
#: The revenue uplift's interval (two-sided).
INTERVAL = 0.8
#: The published columns, in order (docs: p19 design, "Uplift champion's nightly output").
OUTPUT_COLUMNS = ("customer_id", "offer_type", "discount", "p_order_control", "p_order_treated", "uplift",
                  "revenue_uplift", "revenue_uplift_low", "revenue_uplift_high", "expected_discount_cost",
                  "horizon_days")


def qini_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Qini curve of ranking the rows by ``score`` (highest first): the share of rows targeted (0..1)
    and the incremental outcome gained there, treated outcomes minus control outcomes scaled to the treated
    count. ``y`` has one row per offer: (treated 0/1, outcome)."""
    y = np.asarray(y, dtype="float64")
    if y.ndim != 2 or y.shape[1] != 2:
        raise ValueError(f"the Qini curve needs (treated, outcome) pairs, got shape {y.shape}")
    treated, outcome = y[:, 0] > 0.5, y[:, 1]
    order = np.argsort(-np.asarray(score, dtype="float64"), kind="stable")
    t, o = treated[order], outcome[order]
    n_t, n_c = np.cumsum(t), np.cumsum(~t)
    gain = np.cumsum(o * t) - np.cumsum(o * ~t) * np.divide(n_t, n_c, out=np.zeros(len(t)), where=n_c > 0)
    return np.arange(len(t) + 1) / max(len(t), 1), np.r_[0.0, gain]


def qini_coefficient(y: np.ndarray, predicted: np.ndarray) -> float:
    """The normalised Qini coefficient of ranking the rows by ``predicted`` (highest first); ``y`` has
    one row per offer: (treated 0/1, outcome). 1: the perfect ranking, 0: random, below 0: worse."""
    y = np.asarray(y, dtype="float64")
    if y.ndim != 2 or y.shape[1] != 2:
        raise ValueError(f"the Qini coefficient needs (treated, outcome) pairs, got shape {y.shape}")
    treated, outcome = y[:, 0] > 0.5, y[:, 1]
    if treated.all() or not treated.any():
        raise ValueError("the Qini coefficient needs treated and control rows")

    def area(score: np.ndarray) -> tuple[float, float]:
        _, curve = qini_curve(y, score)
        return float(np.sum((curve[1:] + curve[:-1]) / 2.0)), float(curve[-1])

    model, total = area(predicted)
    perfect, _ = area(outcome * treated - outcome * ~treated)
    random = total * len(outcome) / 2.0
    if not perfect - random > 0:
        raise ValueError("the Qini coefficient is undefined: no treated buyer above the random line")
    return (model - random) / (perfect - random)


QINI = Metric("qini", higher_is_better=True, relative_margin=False, score=qini_coefficient)


@dataclass(frozen=True)
class UpliftConfig:
    """The LightGBM settings of the four models (one configuration for all, tuned on earlier campaigns)."""

    num_leaves: int = 15
    min_child_samples: int = 40
    learning_rate: float = 0.05
    n_estimators: int = 150
    reg_lambda: float = 1.0
    subsample: float = 0.8

    def lgb_params(self, seed: int) -> dict[str, Any]:
        return {"num_leaves": self.num_leaves, "min_child_samples": self.min_child_samples,
                "learning_rate": self.learning_rate, "n_estimators": self.n_estimators, "reg_lambda": self.reg_lambda,
                "subsample": self.subsample, "subsample_freq": 1, "random_state": seed, "verbose": -1, "n_jobs": 1}


def treatment_codes(offer_type: np.ndarray, discount: np.ndarray,
                    treatments: Sequence[tuple[str, float]]) -> np.ndarray:
    """Each offer's treatment for the learner: 0 for the control, ``k`` for the ``k``-th of
    ``treatments`` (offer type, discount); -1 for an offer that is none of them."""
    index = {offer: k + 1 for k, offer in enumerate(treatments)}
    return np.array([index.get((str(kind), round(float(d), 4)), -1) for kind, d in zip(offer_type, discount)],
                    dtype=np.int64)


def _x_learner(config: UpliftConfig, seed: int) -> XLearner:
    # the propensity of a randomised campaign is its treated share: the prior, not a model of X
    return XLearner(models=lgb.LGBMRegressor(**config.lgb_params(seed)),
                    cate_models=lgb.LGBMRegressor(**config.lgb_params(seed)),
                    propensity_model=DummyClassifier(strategy="prior"))


@dataclass
class OfferUplift:
    """The fitted X-learners (module docstring): ``orders`` of P(an order in the horizon) and
    ``revenue`` of the horizon's revenue, the first on every offer and the others on bootstrap
    resamples; treatment ``k`` is ``treatments[k - 1]``."""

    treatments: tuple[tuple[str, float], ...]
    orders: XLearner
    revenue: list[XLearner]

    def p_orders(self, X: pd.DataFrame, discount: np.ndarray, offer_type: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(order) without the offer, P(order) with each row's offer)."""
        features = _features(X)
        control = np.clip(self.orders.models[0].predict(features), 0.0, 1.0)
        effect = _effects(self.orders, features, treatment_codes(offer_type, discount, self.treatments))
        return control, np.clip(control + effect, 0.0, 1.0)

    def uplift(self, X: pd.DataFrame, discount: np.ndarray, offer_type: np.ndarray) -> np.ndarray:
        control, treated = self.p_orders(X, discount, offer_type)
        return treated - control

    def revenue_uplifts(self, X: pd.DataFrame, discount: np.ndarray, offer_type: np.ndarray) -> np.ndarray:
        """Each row's revenue uplift of its offer, one column per revenue learner (the first: the learner
        fitted on every offer, the others: the bootstrap refits of the interval)."""
        features = _features(X)
        codes = treatment_codes(offer_type, discount, self.treatments)
        return np.column_stack([_effects(learner, features, codes) for learner in self.revenue])


def _features(X: pd.DataFrame) -> np.ndarray:
    return X[list(FEATURE_COLUMNS)].to_numpy(dtype="float64")


def _effects(learner: XLearner, features: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Each row's effect of its treatment ``codes`` (NaN for an unknown one) over the control."""
    out = np.full(len(features), np.nan)
    for code in np.unique(codes[codes > 0]):
        rows = codes == code
        out[rows] = learner.effect(features[rows], T0=0, T1=int(code))
    return out


def fit_uplift(config: UpliftConfig, X: pd.DataFrame, treated: np.ndarray, ordered: np.ndarray,
               revenue: np.ndarray | None, discount: np.ndarray, offer_type: np.ndarray, seed: int,
               bootstrap: int = 0) -> OfferUplift:
    """Fit the X-learner of orders on the offers (rows of ``X``), and, when ``revenue`` is given, the
    X-learner of revenue plus ``bootstrap`` more on seeded resamples of the offers (the interval)."""
    treated = np.asarray(treated, dtype=bool)
    treatments = tuple(sorted({(str(k), round(float(d), 4)) for k, d, t in zip(offer_type, discount, treated) if t}))
    codes = np.where(treated, treatment_codes(offer_type, discount, treatments), 0)
    features = _features(X)
    orders = _x_learner(config, seed).fit(np.asarray(ordered, dtype="float64"), codes, X=features)
    learners = []
    if revenue is not None:
        rng = np.random.default_rng(seed)
        for b in range(1 + bootstrap):
            rows = np.arange(len(features)) if b == 0 else rng.integers(0, len(features), len(features))
            learners.append(_x_learner(config, seed + b).fit(np.asarray(revenue, dtype="float64")[rows], codes[rows],
                                                             X=features[rows]))
    return OfferUplift(treatments, orders, learners)


@dataclass(frozen=True)
class Candidates:
    """The offers the model may propose: the (offer type, discount) pairs sent in the history, each type
    only for customers whose recency is within the range of its historical recipients (the learner has
    seen no other)."""

    offers: tuple[tuple[str, float], ...]
    recency_range: dict[str, tuple[float, float]]

    @classmethod
    def from_history(cls, X: pd.DataFrame, offer_type: np.ndarray, discount: np.ndarray) -> Candidates:
        pairs = sorted({(str(k), round(float(d), 4)) for k, d in zip(offer_type, discount)})
        recency = X["recency_days"].to_numpy(dtype="float64")
        ranges = {kind: (float(recency[offer_type == kind].min()), float(recency[offer_type == kind].max()))
                  for kind in sorted({k for k, _ in pairs})}
        return cls(tuple(pairs), ranges)


def candidate_discounts(seen: Sequence[float], requested: Sequence[float] | None) -> list[float]:
    """The requested discount levels the history has sent (the learner knows the effect of those
    offers only); the seen levels when none is requested or none of the requested was ever sent."""
    if requested:
        sent = sorted({round(float(d), 4) for d in requested if any(abs(d - s) < 1e-6 for s in seen)})
        if sent:
            return sent
    return sorted(set(seen))


def expected_discount_cost(discount: float, p_order_treated: np.ndarray, next_order_value: Any) -> np.ndarray:
    """What an offer's coupon is expected to give away: ``discount`` off the customer's *next* order only
    (``shop.offers``: the fraction off the next order), so discount x P(an order in the horizon | offer) x
    the expected value of that order, taken as the customer's average order value so far
    (``avg_order_value``). Not discount x the horizon's expected revenue with the offer: that counts every
    order in the horizon (a regular buyer's three orders, of which only the first carries the coupon)."""
    value = np.clip(np.nan_to_num(np.asarray(next_order_value, dtype="float64")), 0.0, None)
    return float(discount) * np.clip(np.asarray(p_order_treated, dtype="float64"), 0.0, 1.0) * value


class UpliftModel(mlflow.pyfunc.PythonModel):
    """The pyfunc: ``predict(customer_features)`` returns one row per customer and candidate offer
    (:data:`OUTPUT_COLUMNS`). The input is tonight's customer features with a ``customer_id`` column;
    customers who never ordered get no row (the model learnt from customers who had). ``params``:
    ``discount_levels`` (a JSON list; empty: the levels sent in the history) restricts the discounts
    offered to those of them the history has sent; ``horizon_days`` is reported on every row (the horizon the model was trained for)."""

    def __init__(self, learner: OfferUplift, candidates: Candidates, horizon_days: int) -> None:
        self.learner = learner
        self.candidates = candidates
        self.horizon_days = horizon_days

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        requested = json.loads(params.get("discount_levels") or "[]")
        frame = model_input.reset_index() if "customer_id" not in model_input.columns else model_input
        frame = frame[frame["frequency"] > 0].reset_index(drop=True)
        rows = []
        for kind, (low, high) in self.candidates.recency_range.items():
            seen = [d for k, d in self.candidates.offers if k == kind]
            eligible = frame[(frame["recency_days"] >= low) & (frame["recency_days"] <= high)]
            for discount in candidate_discounts(seen, requested):
                rows.append(self._score(eligible, kind, discount))
        if not rows:
            return pd.DataFrame({column: pd.Series(dtype="float64") for column in OUTPUT_COLUMNS})
        out = pd.concat(rows, ignore_index=True).sort_values(["customer_id", "offer_type", "discount"], kind="stable")
        return out.reset_index(drop=True)

    def _score(self, customers: pd.DataFrame, kind: str, discount: float) -> pd.DataFrame:
        n = len(customers)
        discounts, kinds = np.full(n, discount), np.full(n, kind, dtype=object)
        control, treated = self.learner.p_orders(customers, discounts, kinds)
        uplifts = self.learner.revenue_uplifts(customers, discounts, kinds)
        tail = (1.0 - INTERVAL) / 2.0
        low, high = (np.quantile(uplifts, [tail, 1.0 - tail], axis=1) if uplifts.shape[1] > 1
                     else (uplifts[:, 0], uplifts[:, 0]))
        return pd.DataFrame({
            "customer_id": customers["customer_id"].to_numpy(dtype="int64"), "offer_type": kinds,
            "discount": discounts, "p_order_control": control, "p_order_treated": treated, "uplift": treated - control,
            "revenue_uplift": uplifts[:, 0], "revenue_uplift_low": np.minimum(low, uplifts[:, 0]),
            "revenue_uplift_high": np.maximum(high, uplifts[:, 0]),
            "expected_discount_cost": expected_discount_cost(discount, treated, customers["avg_order_value"]),
            "horizon_days": np.full(n, self.horizon_days, dtype="int64"),
        })


def config_dict(config: UpliftConfig) -> dict[str, Any]:
    return {key: float(v) if isinstance(v, float) else int(v) for key, v in asdict(config).items()}


def config_from(values: Mapping[str, Any]) -> UpliftConfig:
    return UpliftConfig(**values)
