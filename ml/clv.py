"""Customer lifetime value over a horizon: completed spend in the next H days.

Two candidates compete on the same time-based holdout, with the verbs every family shares:

- **training set as of a cutoff**: features from data before cutoff C (:func:`features.customer.
  customer_features`), label = completed spend in ``[C, C + H)`` (:func:`clv_label`);
- **BTYD baseline** (:func:`fit_btyd`): BG/NBD for the number of purchases and Gamma-Gamma for
  their value, from pymc-marketing, fitted by MAP. It is unsupervised: it needs only the features
  at a cutoff, never labels;
- **GBM** (:func:`tune_gbm`, :func:`fit_gbm`): LightGBM on :data:`FEATURE_COLUMNS` predicting the
  horizon spend, tuned with Optuna on cutoff ``D - 2H`` and validated on cutoff ``D - H`` whose
  labels end exactly at the run date D;
- **select** (:func:`select_clv_model`): both are scored on the validation labels
  (:func:`evaluate_clv`); the lower holdout RMSE (``ClvConfig.selection_metric``) wins, ties go to
  BTYD as the simpler model;
- **fit** the winner for scoring (:func:`fit_final_clv_model`) as a :class:`ClvModel`, an MLflow
  pyfunc that predicts expected spend over H from a features frame.

BTYD conventions (pymc-marketing, time unit = days, see :func:`btyd_inputs`): ``frequency`` is the
number of *repeat* purchases, ``recency`` the age of the customer at the last purchase, ``T`` the
age at the cutoff, both measured from the first purchase. Customers who never bought have no first
purchase; they are scored as if signup were it (frequency 0, recency 0, T = tenure). The BG/NBD
then gives them a purchase rate that shrinks with every day they stay silent (with no purchase a
BG/NBD customer cannot have dropped out, only be slow), and the Gamma-Gamma population mean for
spend. They are left out of the *fit*, because the BG/NBD likelihood would read their signup as a
purchase.

Why the closed-form BG/NBD and Gamma-Gamma expectations are written out here
(:func:`btyd_expected_spend`) instead of calling pymc-marketing at scoring time: the scoring model
must unpickle and predict in an environment with only numpy / scipy / pandas / lightgbm (the
project's pyfunc requirements), without importing pymc (seconds) or rebuilding a PyMC graph for
every batch, and pymc-marketing's ``expected_purchases`` needs a ``customer_id`` column and a built
model. The formulas are the ones pymc-marketing itself uses (Fader, Hardie & Lee 2005, eq. 10;
Fader & Hardie 2013, eq. 5); the unit tests check them against ``BetaGeoModel.expected_purchases``
and ``GammaGammaModel.expected_customer_spend`` to 1e-6 relative. Fitting uses pymc-marketing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import optuna
import pandas as pd
from scipy.special import hyp2f1
from scipy.stats import spearmanr

from features.customer import FEATURE_COLUMNS, completed_orders_in_window, population
from ml.classifier import lightgbm_contributions
from ml.gate import beats, finite_or_nan
# The same time-based holdout as every family: train cutoff D - 2H, validation cutoff D - H.
from ml.propensity import LabelledSet, features_at, holdout_cutoffs  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

MODEL_NAME = "revopt_customer_clv"
BTYD = "btyd"
GBM = "gbm"
CANDIDATES: tuple[str, ...] = (BTYD, GBM)
SELECTION_METRICS: tuple[str, ...] = ("mae", "rmse")  # lower is better for both
_MAX_ROUNDS = 2000
_EARLY_STOPPING = 50
_TOP_SHARE = 0.10
#: BTYD is fitted on at least this many buyers and this many repeat buyers with positive spend
MIN_BTYD_CUSTOMERS = 10


@dataclass(frozen=True)
class ClvConfig:
    horizon_days: int = 90
    n_trials: int = 10
    timeout_seconds: float = 120.0
    seed: int = 42
    # Holdout metric that picks the winner (one of SELECTION_METRICS). RMSE, because the forecast
    # is an expected spend: MAE is minimised by the median, which is 0 for most customers.
    selection_metric: str = "rmse"


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


@dataclass(frozen=True)
class ClvSelection:
    """Both candidates scored on the validation cutoff, and the winner.

    ``specs`` holds each candidate's JSON-serialisable specification (see :func:`candidate_spec`),
    ``validation_predictions`` each candidate's expected spend, indexed like the validation label.
    """

    metrics: dict[str, dict[str, float]]
    winner: str
    specs: dict[str, dict[str, Any]]
    validation_predictions: dict[str, pd.Series]
    fit_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def spec(self) -> dict[str, Any]:
        """The winner's specification."""
        return self.specs[self.winner]


# --- labels and BTYD inputs -----------------------------------------------------------------------


def clv_label(customer_ids: pd.Index, orders: pd.DataFrame, cutoff: pd.Timestamp, horizon_days: int) -> pd.Series:
    """Completed spend in ``[cutoff, cutoff + horizon_days)`` per customer, 0 if none."""
    window = completed_orders_in_window(orders, cutoff, horizon_days)
    spend = window.groupby("customer_id")["order_value"].sum()
    label = spend.reindex(customer_ids, fill_value=0.0).astype("float64")
    return pd.Series(label.to_numpy(), index=customer_ids, name="label")


def training_set(frames: dict[str, pd.DataFrame], cutoff: pd.Timestamp, horizon_days: int,
                 lookback_days: int | None = None) -> LabelledSet:
    """Features as of ``cutoff`` (indexed by customer id, over ``lookback_days``) and the spend label
    over the following ``horizon_days``."""
    X = features_at(frames, cutoff, lookback_days)
    return LabelledSet(cutoff=cutoff, X=X, y=clv_label(X.index, frames["orders"], cutoff, horizon_days))


def training_data_shortfall(customers: pd.DataFrame, orders: pd.DataFrame, run_date: Any, horizon_days: int,
                            lookback_days: int | None = None) -> str | None:
    """Why the store cannot train the CLV candidates as of ``run_date`` (None when it can): BTYD is
    fitted on the customers of the validation cutoff ``D - H`` and needs :data:`MIN_BTYD_CUSTOMERS`
    buyers and as many repeat buyers with positive spend in the ``lookback_days`` before it; the GBM
    needs some spend in the ``horizon_days`` after each cutoff. Counts come from the customers and
    completed orders alone, so the nightly run can ask the same question. The reason names the
    cutoff, run date and tables."""
    train_cutoff, valid_cutoff = holdout_cutoffs(run_date, horizon_days)
    since = valid_cutoff - pd.Timedelta(days=lookback_days) if lookback_days is not None else orders["order_ts"].min()
    past = orders[(orders["status"] == "completed") & (orders["order_ts"] < valid_cutoff) & (orders["order_ts"] >= since)
                  & orders["customer_id"].isin(population(customers, valid_cutoff))]
    per_customer = past.groupby("customer_id")["order_value"].agg(["size", "sum"])
    buyers, repeaters = len(per_customer), int(((per_customer["size"] > 1) & (per_customer["sum"] > 0)).sum())
    if min(buyers, repeaters) < MIN_BTYD_CUSTOMERS:
        return (f"{buyers} buyers and {repeaters} repeat buyers before the CLV validation cutoff {valid_cutoff.date()} "
                f"(run date {pd.Timestamp(run_date).date()}): too few for the BTYD model (needs >= {MIN_BTYD_CUSTOMERS} "
                "of each; shop.customers / shop.orders)")
    for role, cutoff in (("training", train_cutoff), ("validation", valid_cutoff)):
        if not (clv_label(population(customers, cutoff), orders, cutoff, horizon_days) > 0).any():
            return (f"no customer of the CLV {role} cutoff {cutoff.date()} spent in the {horizon_days} days after it "
                    f"(run date {pd.Timestamp(run_date).date()}): nothing to learn (shop.orders)")
    return None


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


# --- BTYD ---------------------------------------------------------------------------------------


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
    # np.where, not a product with (x > 0): a / (b - 1) is infinite when b == 1 and x == 0.
    repeat_term = np.where(x > 0, a / np.maximum(b + x - 1, np.finfo(float).tiny) * ((alpha + T) / (alpha + t_x)) ** (r + x), 0.0)
    return numerator / (1 + repeat_term)


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


# --- GBM ----------------------------------------------------------------------------------------


def _base_params(seed: int) -> dict[str, object]:
    # Tweedie (log link): the horizon spend is zero for most customers and right-skewed for the
    # rest, a compound Poisson-gamma shape; predictions are exp(score), never negative, and
    # estimate the conditional mean. Plain L2 fits the mean too but chases the few largest
    # spenders and can predict below zero. Rounds are early-stopped on L2, a proper score for the
    # mean: stopping on L1 pulls predictions towards the median, which is 0 for most customers.
    return {
        "objective": "tweedie",
        "metric": "l2",
        "verbosity": -1,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 2,
        "bagging_freq": 1,
    }


def _suggest(trial: optuna.Trial) -> dict[str, object]:
    return {
        "tweedie_variance_power": trial.suggest_float("tweedie_variance_power", 1.1, 1.9),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 8, 64, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 200, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.6, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.6, 1.0),
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
    }


def tune_gbm(
    train_features: pd.DataFrame,
    train_label: pd.Series,
    valid_features: pd.DataFrame,
    valid_label: pd.Series,
    config: ClvConfig,
    callbacks: list | None = None,
) -> optuna.Study:
    """Optuna search (TPE, seeded) minimising validation RMSE, bounded by trials and seconds.

    Each trial early-stops on validation L2 and records ``best_iteration``, ``valid_mae`` and
    ``valid_rmse`` as user attributes. RMSE rather than MAE, the selection metric, because the
    model is meant to estimate *expected* spend: tuned on MAE it drifts towards predicting the
    median, 0, and under-forecasts total spend (by a third on the synthetic store).
    """
    X_train, y_train = _design(train_features, train_label, "training")
    X_valid, y_valid = _design(valid_features, valid_label, "validation")
    # Without feature_pre_filter=False LightGBM rebuilds the dataset, with a [Fatal] log line,
    # whenever a trial lowers min_child_samples below an earlier trial's.
    dataset_params = {"feature_pre_filter": False, "verbosity": -1}
    train_data = lgb.Dataset(X_train, label=y_train, params=dataset_params, free_raw_data=False)
    valid_data = lgb.Dataset(X_valid, label=y_valid, reference=train_data, params=dataset_params, free_raw_data=False)

    def objective(trial: optuna.Trial) -> float:
        params = {**_base_params(config.seed), **_suggest(trial)}
        booster = lgb.train(
            params,
            train_data,
            num_boost_round=_MAX_ROUNDS,
            valid_sets=[valid_data],
            callbacks=[lgb.early_stopping(_EARLY_STOPPING, verbose=False)],
        )
        best_iteration = int(booster.best_iteration or _MAX_ROUNDS)
        predicted = booster.predict(X_valid, num_iteration=best_iteration)
        rmse = float(np.sqrt(np.mean((y_valid.to_numpy() - predicted) ** 2)))
        trial.set_user_attr("best_iteration", best_iteration)
        trial.set_user_attr("valid_mae", float(np.mean(np.abs(y_valid.to_numpy() - predicted))))
        trial.set_user_attr("valid_rmse", rmse)
        return finite_or_nan(rmse)  # NaN: a failed trial, never the best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        study_name="clv-gbm",
    )
    study.optimize(objective, n_trials=config.n_trials, timeout=config.timeout_seconds, callbacks=callbacks or [])
    finished = [t for t in study.trials if t.value is not None]
    logger.info("CLV GBM tuning done: %d trials (%d with a finite validation RMSE), best %.4f", len(study.trials),
                len(finished), study.best_value if finished else float("nan"))
    return study


def fit_gbm(features: pd.DataFrame, label: pd.Series, params: dict[str, object], num_rounds: int, seed: int) -> lgb.Booster:
    """Fit a booster on ``features`` / ``label`` with fixed params and number of rounds."""
    X, y = _design(features, label, "final training")
    return lgb.train({**_base_params(seed), **params}, lgb.Dataset(X, label=y), num_boost_round=num_rounds)


def _design(features: pd.DataFrame, label: pd.Series, role: str) -> tuple[pd.DataFrame, pd.Series]:
    """The feature matrix and the label aligned to it by customer id."""
    X = _feature_matrix(features)
    if "customer_id" in features.columns:
        X.index = pd.Index(features["customer_id"].to_numpy(), name="customer_id")
    missing = X.index.difference(label.index)
    if len(missing):
        raise ValueError(f"{role} label is missing {len(missing)} customers, e.g. {list(missing[:5])}")
    y = label.reindex(X.index).astype("float64")
    if len(y) == 0 or not (y > 0).any():
        raise ValueError(f"{role} set has {len(y)} customers and no spend in the horizon: nothing to learn")
    if (y < 0).any():
        raise ValueError(f"{role} label has negative spend; the Tweedie objective needs spend >= 0")
    return X, y


def _feature_matrix(features: pd.DataFrame) -> pd.DataFrame:
    return features[list(FEATURE_COLUMNS)].astype("float64")


# --- metrics and tiers --------------------------------------------------------------------------


def evaluate_clv(actual: pd.Series, predicted: np.ndarray) -> dict[str, float]:
    """Holdout metrics for a spend forecast.

    - ``mae``, ``rmse``: per customer, in currency;
    - ``spearman``: rank correlation of predicted and actual spend (NaN if either is constant);
    - ``top_decile_capture``: share of the total actual spend that sits in the predicted top 10 %
      (:func:`value_tier` ordering); a perfect ranking reaches the share of the actual top 10 %,
      a random one about 0.10 (NaN if nobody spent);
    - ``high_value_precision``: share of the predicted top 10 % who are actually top 10 %, i.e.
      whose actual spend is positive and at least the k-th largest actual spend, k = the size of
      the predicted top 10 % (customers tied at that threshold all count as top);
    - ``mean_actual``, ``mean_predicted``: calibration in the large.
    """
    y = np.asarray(actual, dtype="float64")
    y_hat = np.asarray(predicted, dtype="float64")
    if y.shape != y_hat.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"actual and predicted must be non-empty 1-d of the same length, got {y.shape} and {y_hat.shape}")
    predicted_top = _top_mask(y_hat, _TOP_SHARE)
    k = int(predicted_top.sum())
    threshold = np.sort(y)[::-1][k - 1]
    actual_top = (y >= threshold) & (y > 0)
    total = y.sum()
    constant = np.ptp(y) == 0 or np.ptp(y_hat) == 0
    return {
        "mae": float(np.mean(np.abs(y - y_hat))),
        "rmse": float(np.sqrt(np.mean((y - y_hat) ** 2))),
        "spearman": float("nan") if constant else float(spearmanr(y, y_hat).statistic),
        "top_decile_capture": float(y[predicted_top].sum() / total) if total > 0 else float("nan"),
        "high_value_precision": float((predicted_top & actual_top).sum() / k),
        "mean_actual": float(y.mean()),
        "mean_predicted": float(y_hat.mean()),
    }


def value_tier(predicted: np.ndarray, top_share: float = 0.10, mid_share: float = 0.40) -> np.ndarray:
    """'high' for the top ``top_share`` of predicted CLV, 'medium' for the next ``mid_share``, 'low'
    for the rest. Counts are ``round(share x n)``; ties are broken by position (earlier rows rank
    higher), so the same input always gives the same tiers."""
    values = np.asarray(predicted, dtype="float64")
    if values.ndim != 1 or np.isnan(values).any():
        raise ValueError("value_tier needs a 1-d array without NaN")
    if not (0 <= top_share and 0 <= mid_share and top_share + mid_share <= 1):
        raise ValueError(f"need 0 <= top_share, mid_share and top_share + mid_share <= 1, got {top_share}, {mid_share}")
    n = len(values)
    rank = np.empty(n, dtype="int64")
    rank[np.argsort(-values, kind="stable")] = np.arange(n)
    n_high = int(round(top_share * n))
    n_high_or_mid = int(round((top_share + mid_share) * n))
    return np.where(rank < n_high, "high", np.where(rank < n_high_or_mid, "medium", "low"))


def _top_mask(values: np.ndarray, share: float) -> np.ndarray:
    """The top ``round(share x n)`` (at least one) rows by value, ties broken by position."""
    n = len(values)
    k = max(1, int(round(share * n)))
    mask = np.zeros(n, dtype=bool)
    mask[np.argsort(-values, kind="stable")[:k]] = True
    return mask


# --- selection ----------------------------------------------------------------------------------


def select_clv_model(
    train_features: pd.DataFrame,
    train_label: pd.Series,
    valid_features: pd.DataFrame,
    valid_label: pd.Series,
    config: ClvConfig,
    callbacks: list | None = None,
) -> ClvSelection:
    """Fit both candidates and pick the one with the lower validation ``config.selection_metric``
    (RMSE by default); the GBM must be strictly lower, so ties go to BTYD, the simpler model. A
    non-finite metric (a candidate predicting NaN or inf) loses to a finite one.

    BTYD is fitted on ``valid_features`` alone (it needs no labels and must see the most recent
    history); the GBM is tuned on ``train_features`` / ``train_label`` with early stopping on the
    validation set. Both are then scored on ``valid_label``. The GBM's validation metrics are
    slightly optimistic, since the same labels chose its hyperparameters and round count.
    ``callbacks`` go to Optuna's ``study.optimize`` (e.g. one logging nested MLflow runs).

    Features are indexed by customer id (:func:`training_set`) or carry a ``customer_id`` column
    (:func:`features.customer.customer_features`); labels are indexed by customer id.
    """
    if config.selection_metric not in SELECTION_METRICS:
        raise ValueError(f"selection_metric must be one of {SELECTION_METRICS}, got {config.selection_metric!r}")
    X_valid, y_valid = _design(valid_features, valid_label, "validation")  # fail before any fitting
    predictions, specs, seconds = {}, {}, {}

    started = time.perf_counter()
    btyd_params = fit_btyd(valid_features)
    predictions[BTYD] = btyd_expected_spend(btyd_params, valid_features, config.horizon_days)
    specs[BTYD] = candidate_spec(BTYD, config, btyd_params=btyd_params)
    seconds[BTYD] = time.perf_counter() - started

    started = time.perf_counter()
    study = tune_gbm(train_features, train_label, valid_features, valid_label, config, callbacks)
    if any(t.value is not None for t in study.trials):
        params, num_rounds = dict(study.best_params), int(study.best_trial.user_attrs["best_iteration"])
        booster = fit_gbm(train_features, train_label, params, num_rounds, config.seed)
        predictions[GBM] = booster.predict(X_valid)
    else:  # every trial's validation RMSE was non-finite: the GBM has no score and cannot win
        params, num_rounds = dict(study.trials[0].params) if study.trials else {}, 1
        predictions[GBM] = np.full(len(y_valid), np.nan)
    specs[GBM] = candidate_spec(GBM, config, gbm_params=params, num_rounds=num_rounds)
    seconds[GBM] = time.perf_counter() - started

    metrics = {name: evaluate_clv(y_valid, predicted) for name, predicted in predictions.items()}
    metric = config.selection_metric
    # a non-finite holdout metric loses (a NaN compares False, so plain "<" would hand BTYD the win)
    winner = GBM if beats(metrics[GBM][metric], metrics[BTYD][metric], higher_is_better=False) else BTYD
    logger.info(
        "CLV selection on %d validation customers by %s: BTYD %.3f, GBM %.3f -> %s",
        len(y_valid), metric, metrics[BTYD][metric], metrics[GBM][metric], winner,
    )
    return ClvSelection(
        metrics=metrics,
        winner=winner,
        specs=specs,
        validation_predictions={
            name: pd.Series(predicted, index=X_valid.index, name=name) for name, predicted in predictions.items()
        },
        fit_seconds=seconds,
    )


def candidate_spec(
    name: str,
    config: ClvConfig,
    *,
    btyd_params: BtydParams | None = None,
    gbm_params: dict[str, object] | None = None,
    num_rounds: int | None = None,
) -> dict[str, Any]:
    """JSON-serialisable description of a candidate: enough to refit it (GBM: params and rounds;
    BTYD: its fitted parameters, informative only, since refitting BTYD needs no spec)."""
    spec: dict[str, Any] = {"model": name, "horizon_days": config.horizon_days, "features": list(FEATURE_COLUMNS)}
    if name == BTYD:
        spec["params"] = {key: float(value) for key, value in asdict(btyd_params).items()}
    elif name == GBM:
        spec["params"] = {**_base_params(config.seed), **gbm_params}
        spec["num_rounds"] = int(num_rounds)
    else:
        raise ValueError(f"unknown CLV candidate {name!r}; expected one of {CANDIDATES}")
    return spec


def holdout_predictions(
    spec: dict[str, Any],
    train_features: pd.DataFrame,
    train_label: pd.Series,
    valid_features: pd.DataFrame,
    config: ClvConfig,
) -> np.ndarray:
    """Refit a specification as :func:`select_clv_model` would and predict the validation cutoff:
    for a champion / challenger gate on the same holdout."""
    if spec["model"] == BTYD:
        return btyd_expected_spend(fit_btyd(valid_features), valid_features, config.horizon_days)
    if spec["model"] == GBM:
        booster = fit_gbm(train_features, train_label, spec["params"], int(spec["num_rounds"]), config.seed)
        return booster.predict(_feature_matrix(valid_features))
    raise ValueError(f"unknown CLV candidate {spec['model']!r}; expected one of {CANDIDATES}")


# --- scoring model ------------------------------------------------------------------------------


class ClvModel(mlflow.pyfunc.PythonModel):
    """Expected spend over ``horizon_days`` for each row of a customer features frame.

    Holds either a LightGBM booster (``kind == "gbm"``) or fitted :class:`BtydParams`
    (``kind == "btyd"``, scored with the closed-form expectations of this module), nothing from
    pymc / pytensor, so it pickles with cloudpickle and scores without importing pymc.
    """

    def __init__(self, kind: str, horizon_days: int, booster: lgb.Booster | None = None, btyd_params: BtydParams | None = None):
        self.kind = kind
        self.horizon_days = horizon_days
        self.booster = booster
        self.btyd_params = btyd_params

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        """Expected spend over the horizon, one float per row of ``model_input`` (needs
        :data:`FEATURE_COLUMNS`; other columns are ignored)."""
        if self.kind == GBM:
            return np.asarray(self.booster.predict(_feature_matrix(model_input)), dtype="float64")
        if self.kind == BTYD:
            return btyd_expected_spend(self.btyd_params, model_input, self.horizon_days)
        raise ValueError(f"unknown CLV model kind {self.kind!r}")

    def contributions(self, features: pd.DataFrame) -> pd.DataFrame | None:
        """Per-feature TreeSHAP contributions from LightGBM (``pred_contrib=True``, computed once per
        distinct split pattern of each tree: :func:`ml.classifier.lightgbm_contributions`) for the
        GBM, None for BTYD. They are in the Tweedie log-link space: each row's contributions plus
        the ``bias`` column sum to ``log(predicted spend)``."""
        if self.kind != GBM:
            return None
        values = lightgbm_contributions(self.booster, _feature_matrix(features).to_numpy(dtype=np.float64))
        return pd.DataFrame(values, index=features.index, columns=[*FEATURE_COLUMNS, "bias"])


def fit_final_clv_model(
    selection: ClvSelection,
    features_at_latest_cutoff: pd.DataFrame,
    label: pd.Series,
    config: ClvConfig,
    btyd_fit_features: pd.DataFrame | None = None,
) -> ClvModel:
    """Refit the winner for scoring.

    GBM: the winning params and round count on the latest labelled cutoff (``D - H`` features and
    their labels). BTYD: refitted on ``btyd_fit_features``, the features as of the run date (it is
    unsupervised, so it can use all history up to D); required when BTYD won.
    """
    spec = selection.spec
    if selection.winner == GBM:
        booster = fit_gbm(features_at_latest_cutoff, label, spec["params"], int(spec["num_rounds"]), config.seed)
        return ClvModel(GBM, config.horizon_days, booster=booster)
    if btyd_fit_features is None:
        raise ValueError("BTYD won the selection: pass btyd_fit_features (the features as of the run date)")
    return ClvModel(BTYD, config.horizon_days, btyd_params=fit_btyd(btyd_fit_features))
