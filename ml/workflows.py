"""Task-level workflows: each reads a run's files, does one step and returns a small reference.

These are what the DAG tasks call. They take the run date and plain parameters, know nothing
of Airflow, and return JSON-serialisable values (paths, run ids, versions, counts) for XCom.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from features.customer import FEATURE_COLUMNS, customer_features, population, purchase_label
from ml import budget, churn, clv, drift, pricing, propensity, send_time
from ml.classifier import TuningConfig, label_shortfall, top_factors
from ml.tracking import CHAMPION, configure_mlflow, resolve_alias
from ml.training import REFERENCE_FEATURES, BinaryTask, train_binary
from ml.training import train_clv as _train_clv
from ml.training import train_budget as _train_budget
from ml.training import train_pricing as _train_pricing
from ml.training import train_send_time as _train_send_time
from revopt.platform.config import Settings
from revopt.platform.extract import EVENT_DATASETS, read_extract
from revopt.platform.postgres import publish_partition
from revopt.platform.schema import scores_connection
from revopt.platform.quality import raise_if_failed, validate_and_record

logger = logging.getLogger(__name__)


PRICE_RECOMMENDATION_COLUMNS = (
    "run_date", "product_id", "current_price", "recommended_price", "elasticity", "elasticity_low", "elasticity_high",
    "expected_units_current", "expected_units_recommended", "expected_revenue_current", "expected_revenue_recommended",
    "expected_profit_current", "expected_profit_recommended", "binding_guardrail", "confidence", "reason",
    "model_name", "model_version",
)
SEND_TIME_COLUMNS = (
    "run_date", "customer_id", "day_type", "timezone", "best_hour", "runner_up_hour", "default_hour",
    "expected_rate_best", "expected_rate_default", "n_events", "signal", "model_name", "model_version",
)
BUDGET_COLUMNS = (
    "run_date", "channel", "current_spend", "recommended_spend", "expected_revenue_current",
    "expected_revenue_recommended", "expected_revenue_recommended_low", "expected_revenue_recommended_high",
    "marginal_roas", "marginal_roas_low", "marginal_roas_high", "binding_constraint", "horizon_days", "moved",
    "reason", "model_name", "model_version",
)


@dataclass(frozen=True)
class RunParams:
    """Run-level settings, one field per DAG param (defaults here are the DAG's defaults)."""

    propensity_horizon_days: int = 30
    churn_horizon_days: int = 60
    churn_active_days: int = 365
    clv_horizon_days: int = 90
    lookback_days: int = 730
    n_trials: int = 12
    tuning_timeout_seconds: float = 300.0
    seed: int = 42
    promotion_margin: float = 0.005
    price_min_margin: float = 0.10
    price_max_change: float = 0.10
    price_ending: float | None = None
    price_horizon_days: int = 7
    # Products in these categories (services, fees, vouchers: not goods with a demand curve) are never priced.
    price_exclude_categories: list[str] = field(default_factory=lambda: ["postage", "fee", "adjustment", "gift_voucher"])
    send_quiet_start: int = 23
    send_quiet_end: int = 6
    default_send_hour: int = 10
    budget_total: float | None = None
    budget_max_change: float = 0.3
    budget_min_spend: dict[str, float] = field(default_factory=dict)
    budget_max_spend: dict[str, float] = field(default_factory=dict)
    budget_horizon_days: int = 28
    drift_share_threshold: float = 0.3

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> RunParams:
        """Build from DAG params, ignoring keys this object does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in params.items() if key in known})

    @property
    def training_extract_days(self) -> int:
        """History the training extract reads: the nightly ``lookback_days`` plus the furthest training
        cutoff back (the customer models fit at D - 2h for their horizon h), so features at every
        training cutoff come from the same length of history as tonight's."""
        longest = max(self.propensity_horizon_days, self.churn_horizon_days, self.clv_horizon_days)
        return self.lookback_days + 2 * longest

    @property
    def guardrails(self) -> pricing.PricingGuardrails:
        return pricing.PricingGuardrails(
            min_margin=self.price_min_margin, max_change=self.price_max_change, price_ending=self.price_ending
        )

    @property
    def send_time_config(self) -> send_time.SendTimeConfig:
        quiet = None if self.send_quiet_start == self.send_quiet_end else (self.send_quiet_start, self.send_quiet_end)
        return send_time.SendTimeConfig(quiet_hours=quiet, default_send_hour=self.default_send_hour, random_state=self.seed)

    @property
    def budget_constraints(self) -> budget.BudgetConstraints:
        return budget.BudgetConstraints(
            total_budget=self.budget_total, min_spend=dict(self.budget_min_spend), max_spend=dict(self.budget_max_spend),
            max_change=self.budget_max_change, horizon_days=self.budget_horizon_days,
        )

    @property
    def tuning(self) -> TuningConfig:
        return TuningConfig(n_trials=self.n_trials, timeout_seconds=self.tuning_timeout_seconds, seed=self.seed)


def validate_extracts(settings: Settings, run_date: dt.date, extract_paths: dict[str, str],
                      lookback_days: int | None = None) -> dict[str, str]:
    """Gate: validate every extract against its suite in ``expectations/`` and its row count
    against recent runs; any failure raises after every dataset was validated and recorded.

    Each result is stored as JSON and as a data-docs HTML page in the run folder and summarised
    in ``scores.data_quality`` (:mod:`revopt.platform.quality`). A store without clickstream has nothing
    to validate in the event datasets (they were not read). Returns the paths unchanged so
    downstream tasks depend on the gate having passed.
    """
    frames = read_extract(extract_paths)
    if not settings.clickstream:
        logger.warning("clickstream off (REVOPT_CLICKSTREAM): %s not validated for %s", ", ".join(EVENT_DATASETS), run_date)
        frames = {name: frame for name, frame in frames.items() if name not in EVENT_DATASETS}
    raise_if_failed(validate_and_record(settings, run_date, frames, lookback_days))
    return extract_paths


def build_features(settings: Settings, run_date: dt.date, extract_paths: dict[str, str]) -> dict[str, str | int]:
    """Customer features as of the run date, written to the run folder.

    The engagement columns come from ``customer_event_features`` (one row per customer, computed
    inside ClickHouse) when the extract has it, else from ``customer_daily_events``; both give
    identical features (tests/e2e/test_event_features.py). Only the datasets used are read.
    """
    events_dataset = "customer_event_features" if "customer_event_features" in extract_paths else "customer_daily_events"
    frames = read_extract({name: extract_paths[name] for name in ("customers", "orders", events_dataset)})
    events = frames[events_dataset]
    unknown = ~events["customer_id"].isin(frames["customers"]["customer_id"])
    if unknown.any():
        logger.warning("%d %s rows of %d customers unknown to shop.customers are left out of the features for %s",
                       int(unknown.sum()), events_dataset, events.loc[unknown, "customer_id"].nunique(), run_date)
    features = customer_features(
        frames["customers"], frames["orders"], frames.get("customer_daily_events"), pd.Timestamp(run_date, tz="UTC"),
        event_features=frames.get("customer_event_features"),
    )
    raise_if_failed(validate_and_record(settings, run_date, {"customer_features": features}, lookback_days=None))
    path = settings.run_dir(run_date) / "features" / "customer_features.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    features.to_parquet(path, index=False)
    logger.info("built %d customer feature rows for %s -> %s", len(features), run_date, path)
    return {"path": str(path), "rows": len(features)}


def train_propensity(settings: Settings, run_date: dt.date, extract_paths: dict[str, str], params: RunParams) -> dict[str, str]:
    """Train, register and gate the purchase-propensity model; skipped (with the reason) when the
    store has too few buyers or non-buyers to learn from."""
    frames = read_extract(extract_paths)
    if reason := _propensity_shortfall(frames, run_date, params):
        return _skipped("purchase_propensity", run_date, reason)
    task = BinaryTask(
        family="purchase_propensity",
        model_name=propensity.MODEL_NAME,
        horizon_days=params.propensity_horizon_days,
        build_set=partial(propensity.training_set, horizon_days=params.propensity_horizon_days,
                          lookback_days=params.lookback_days),
        tuning=params.tuning,
        promotion_margin=params.promotion_margin,
    )
    return train_binary(settings, run_date, frames, task)


def train_churn(settings: Settings, run_date: dt.date, extract_paths: dict[str, str], params: RunParams) -> dict[str, str]:
    """Train, register and gate the churn-risk model (active customers only); skipped (with the
    reason) when too few active customers churned or stayed to learn from."""
    frames = read_extract(extract_paths)
    if reason := _churn_shortfall(frames, run_date, params):
        return _skipped("churn", run_date, reason)
    task = BinaryTask(
        family="churn",
        model_name=churn.MODEL_NAME,
        horizon_days=params.churn_horizon_days,
        build_set=partial(churn.training_set, horizon_days=params.churn_horizon_days, active_days=params.churn_active_days,
                          lookback_days=params.lookback_days),
        tuning=params.tuning,
        promotion_margin=params.promotion_margin,
    )
    return train_binary(settings, run_date, frames, task)


def train_clv(settings: Settings, run_date: dt.date, extract_paths: dict[str, str], params: RunParams) -> dict[str, str]:
    """Select BTYD or GBM for CLV on the holdout, register the winner and gate it; skipped (with the
    reason) when the store has too few (repeat) buyers or no spend to learn from."""
    frames = read_extract(extract_paths)
    if reason := _clv_shortfall(frames, run_date, params):
        return _skipped("clv", run_date, reason)
    config = clv.ClvConfig(
        horizon_days=params.clv_horizon_days,
        n_trials=params.n_trials,
        timeout_seconds=params.tuning_timeout_seconds,
        seed=params.seed,
    )
    return _train_clv(settings, run_date, frames, config, params.promotion_margin,
                      lookback_days=params.lookback_days)


def train_pricing(settings: Settings, run_date: dt.date, extract_paths: dict[str, str], params: RunParams) -> dict[str, str]:
    """Estimate elasticities (tuned on a backtest) of the priced products, register the pricing
    model and gate it."""
    frames = read_extract(extract_paths)
    priced = _priced(frames["products"], params, run_date)
    frames = {**frames, "products": priced,
              "product_daily_sales": frames["product_daily_sales"].loc[lambda f: f["product_id"].isin(priced["product_id"])]}
    if reason := _pricing_shortfall(frames, run_date, params):
        return _skipped("pricing", run_date, reason)
    return _train_pricing(
        settings, run_date, frames, lookback_days=params.lookback_days,
        guardrails=params.guardrails, horizon_days=params.price_horizon_days, n_trials=params.n_trials,
        timeout_seconds=params.tuning_timeout_seconds, seed=params.seed, promotion_margin=params.promotion_margin,
    )


def train_send_time(settings: Settings, run_date: dt.date, extract_paths: dict[str, str], params: RunParams) -> dict[str, str]:
    """Tune the send-time shrinkage on held-out sends, register the configuration and gate it."""
    frames = _within_lookback(read_extract(extract_paths), run_date, params.lookback_days)
    if reason := _send_time_shortfall(frames, run_date, params):
        return _skipped("send_time", run_date, reason)
    return _train_send_time(
        settings, run_date, frames, params.send_time_config, n_trials=params.n_trials,
        timeout_seconds=params.tuning_timeout_seconds, promotion_margin=params.promotion_margin,
    )


def train_budget(settings: Settings, run_date: dt.date, extract_paths: dict[str, str], params: RunParams) -> dict[str, str]:
    """Fit the media mix model (tuned on held-out weeks), register it and gate it; a store without
    marketing spend (nothing to allocate) or with too little of it skips the family and says so."""
    frames = read_extract(extract_paths)
    if reason := _budget_shortfall(frames, run_date, params):
        return _skipped("budget", run_date, reason)
    config = _media_config(frames, params)
    return _train_budget(
        settings, run_date, frames, lookback_days=params.lookback_days,
        config=config, constraints=params.budget_constraints,
        n_trials=params.n_trials, timeout_seconds=params.tuning_timeout_seconds, promotion_margin=params.promotion_margin,
    )


def _within_lookback(frames: dict[str, pd.DataFrame], run_date: dt.date, lookback_days: int) -> dict[str, pd.DataFrame]:
    """The engagement and orders of the nightly run's window ``[D - lookback_days, D)``: the training
    extract reaches further back (:attr:`RunParams.training_extract_days`) for the customer models'
    past cutoffs, and send time must learn from the history it recommends from."""
    since = pd.Timestamp(run_date, tz="UTC") - pd.Timedelta(days=lookback_days)
    return {**frames, "engagement_by_hour": frames["engagement_by_hour"].loc[lambda f: f["hour_utc"] >= since],
            "orders": frames["orders"].loc[lambda f: f["order_ts"] >= since]}


def _priced(products: pd.DataFrame, params: RunParams, run_date: dt.date) -> pd.DataFrame:
    """The products pricing covers: all but those in ``price_exclude_categories``."""
    excluded = products["category"].isin(params.price_exclude_categories)
    if excluded.any():
        logger.info("pricing for %s leaves out %d products in categories %s (price_exclude_categories)", run_date,
                    int(excluded.sum()), sorted(products.loc[excluded, "category"].unique()))
    return products[~excluded]


def _skipped(family: str, run_date: dt.date, reason: str) -> dict[str, str]:
    """The result of a family that cannot learn from (or score) this store: the DAG task ends as
    skipped with ``reason``, which names the run date and what is missing."""
    logger.warning("%s skipped for %s: %s", family, run_date, reason)
    return {"skipped": reason}


# What each family needs from the store. One predicate per family, asked by its training and by its
# nightly step on that night's extract, so a family that cannot train is skipped at night too, with
# the same reason, instead of failing on a missing @champion. Each returns the reason or None.


def _propensity_shortfall(frames: dict[str, pd.DataFrame], run_date: dt.date, params: RunParams) -> str | None:
    horizon = params.propensity_horizon_days
    reason = label_shortfall(_label_sets(frames, run_date, horizon, params.lookback_days),
                             label_names=(f"bought in the {horizon} days after", "did not"))
    return None if reason is None else f"purchase propensity for {run_date}: {reason} (shop.customers, shop.orders)"


def _churn_shortfall(frames: dict[str, pd.DataFrame], run_date: dt.date, params: RunParams) -> str | None:
    horizon = params.churn_horizon_days
    label_sets = _label_sets(frames, run_date, horizon, params.lookback_days, params.churn_active_days)
    reason = label_shortfall(label_sets, label_names=(f"no order in the {horizon} days after", "ordered again"))
    return None if reason is None else (f"churn for {run_date}: {reason}, among customers active in the "
                                        f"{params.churn_active_days} days before each cutoff (shop.customers, shop.orders)")


def _label_sets(frames: dict[str, pd.DataFrame], run_date: dt.date, horizon_days: int, lookback_days: int,
                active_days: int | None = None) -> dict[str, pd.Series]:
    """The training and validation sets' 0/1 labels (``ml.propensity`` / ``ml.churn``), from the
    customers and orders alone: the nightly extract has no daily events to build features from.
    With ``active_days``, churn's: active customers only, 1 for no completed order in the horizon."""
    customers, orders = frames["customers"], frames["orders"]
    completed = orders[orders["status"] == "completed"]
    label_sets = {}
    for role, cutoff in zip(("training set", "validation set"), propensity.holdout_cutoffs(run_date, horizon_days)):
        ids = population(customers, cutoff)
        if active_days is not None:
            since = cutoff - pd.Timedelta(days=min(active_days, lookback_days))
            recent = completed[(completed["order_ts"] >= since) & (completed["order_ts"] < cutoff)]
            ids = ids[ids.isin(recent["customer_id"])]
        bought = purchase_label(ids, orders, cutoff, horizon_days)
        label_sets[f"{role} at {cutoff.date()}"] = bought if active_days is None else 1 - bought
    return label_sets


def _clv_shortfall(frames: dict[str, pd.DataFrame], run_date: dt.date, params: RunParams) -> str | None:
    return clv.training_data_shortfall(frames["customers"], frames["orders"], run_date, params.clv_horizon_days,
                                       params.lookback_days)


def _pricing_shortfall(frames: dict[str, pd.DataFrame], run_date: dt.date, params: RunParams) -> str | None:
    """``frames["products"]`` must be the priced products (:func:`_priced`)."""
    return pricing.training_data_shortfall(frames["product_daily_sales"], frames["products"], run_date,
                                           params.lookback_days)


def _send_time_shortfall(frames: dict[str, pd.DataFrame], run_date: dt.date, params: RunParams) -> str | None:
    return send_time.training_data_shortfall(frames["engagement_by_hour"], frames["orders"], frames["customers"],
                                             pd.Timestamp(run_date, tz="UTC"), params.send_time_config)


def _budget_shortfall(frames: dict[str, pd.DataFrame], run_date: dt.date, params: RunParams) -> str | None:
    return budget.training_data_shortfall(frames["marketing_spend"], frames["orders"], run_date, params.lookback_days,
                                          _media_config(frames, params))


def _media_config(frames: dict[str, pd.DataFrame], params: RunParams) -> budget.MediaConfig:
    # The rule: attributed revenue when the source attributes orders to the paid channels,
    # else total revenue with the model separating baseline from channels (docs/budget.md).
    attributed = set(frames["orders"]["channel"]) & set(frames["marketing_spend"]["channel"])
    return budget.MediaConfig(target="attributed" if attributed else "total", random_state=params.seed)


def recommend_prices(settings: Settings, run_date: dt.date, extract_paths: dict[str, str], params: RunParams) -> dict[str, str | int]:
    """Price recommendations for every product with the pricing ``@champion`` under this run's
    guardrails; skipped, as training is, when the sales history cannot train pricing."""
    products = _priced(pd.read_parquet(extract_paths["products"]), params, run_date)
    sales = pd.read_parquet(extract_paths["product_daily_sales"])
    if reason := _pricing_shortfall({"products": products, "product_daily_sales": sales}, run_date, params):
        return _skipped("pricing", run_date, reason)
    configure_mlflow(settings)
    champion = _load_champion(pricing.MODEL_NAME)
    optional = {name: _optional_frame(extract_paths, name) for name in ("competitor_prices", "inventory")}
    recommended = champion.model.recommend(
        products, params.guardrails, horizon_days=params.price_horizon_days, **optional
    )
    table = recommended.assign(run_date=run_date, model_name=champion.name, model_version=champion.version)[
        list(PRICE_RECOMMENDATION_COLUMNS)
    ]
    path = _write_scores(settings, run_date, "price_recommendations", table)
    changed = int((table["recommended_price"] != table["current_price"]).sum())
    logger.info("price recommendations for %s: %d products, %d changed, model v%s", run_date, len(table), changed, champion.version)
    return {"path": str(path), "rows": len(table), "changed": changed, "model_version": champion.version}


def recommend_send_times(settings: Settings, run_date: dt.date, extract_paths: dict[str, str], params: RunParams) -> dict[str, str | int]:
    """Every customer's best send hours from the latest engagement with the send-time ``@champion``'s
    configuration, under this run's quiet hours and default send hour; skipped, as training is,
    when the engagement cannot train the send-time model."""
    frames = read_extract({name: extract_paths[name] for name in ("engagement_by_hour", "orders", "customers")})
    if reason := _send_time_shortfall(frames, run_date, params):
        return _skipped("send_time", run_date, reason)
    configure_mlflow(settings)
    champion = _load_champion(send_time.MODEL_NAME)
    run_settings = params.send_time_config
    config = replace(champion.model.config, quiet_hours=run_settings.quiet_hours, default_send_hour=run_settings.default_send_hour)
    recommended = champion.model.recommend(frames["engagement_by_hour"], frames["orders"], frames["customers"],
                                           pd.Timestamp(run_date, tz="UTC"), config=config)
    table = recommended.assign(run_date=run_date, model_name=champion.name, model_version=champion.version)[
        list(SEND_TIME_COLUMNS)
    ]
    path = _write_scores(settings, run_date, "send_time_recommendations", table)
    counts = table["signal"].value_counts().to_dict()
    logger.info("send times for %s: %d rows (%s), model v%s", run_date, len(table), counts, champion.version)
    return {"path": str(path), "rows": len(table), "model_version": champion.version}


def allocate_budget(settings: Settings, run_date: dt.date, extract_paths: dict[str, str], params: RunParams) -> dict[str, str | int]:
    """The marketing budget split with the budget ``@champion``'s response curves, from the latest
    spend, under this run's constraints; skipped (nothing published), as training is, for a store
    without (enough) marketing spend."""
    frames = read_extract({name: extract_paths[name] for name in ("marketing_spend", "orders")})
    if reason := _budget_shortfall(frames, run_date, params):
        return _skipped("budget", run_date, reason)
    configure_mlflow(settings)
    champion = _load_champion(budget.MODEL_NAME)
    history = budget.media_history(frames["marketing_spend"], frames["orders"], run_date, params.lookback_days)
    allocation = champion.model.allocate(history, params.budget_constraints)
    table = allocation.table.assign(
        run_date=run_date, horizon_days=allocation.horizon_days, moved=allocation.moved,
        reason=allocation.table["reason"].where(allocation.table["reason"].astype(bool), allocation.reason),
        model_name=champion.name, model_version=champion.version,
    )[list(BUDGET_COLUMNS)]
    path = _write_scores(settings, run_date, "budget_allocations", table)
    logger.info("budget for %s: %s (moved: %s; %s), model v%s", run_date,
                dict(zip(table["channel"], table["recommended_spend"].round(2))), allocation.moved, allocation.reason,
                champion.version)
    return {"path": str(path), "rows": len(table), "moved": allocation.moved, "model_version": champion.version}


def _write_scores(settings: Settings, run_date: dt.date, name: str, table: pd.DataFrame) -> Path:
    path = settings.run_dir(run_date) / "scores" / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    return path


def _optional_frame(extract_paths: dict[str, str], name: str) -> pd.DataFrame | None:
    """An optional source's extract, or None when the store has no rows (its guardrail is off)."""
    if name not in extract_paths:
        return None
    frame = pd.read_parquet(extract_paths[name])
    return frame if len(frame) else None


@dataclass(frozen=True)
class _Champion:
    name: str
    version: str
    model: Any  # the unwrapped python model: predict(context, frame) and contributions(frame)


def _load_champion(model_name: str) -> _Champion:
    version = resolve_alias(model_name, CHAMPION)
    # Load the resolved version, not the alias, so the recorded version is the one that scored.
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    return _Champion(model_name, version, loaded.unwrap_python_model())


def score_customers(settings: Settings, run_date: dt.date, features_path: str, params: RunParams) -> dict[str, str | int]:
    """Score every customer with each family's current ``@champion``: propensity, churn risk
    (active customers only, else NULL), CLV with value tier, and the top 3 factors of each.
    Skipped, with the reasons, when any of the three families cannot train on this store (the
    same predicates as training, on this run's customers and orders)."""
    # this step is handed the features only; the customers and orders are in the run's extract folder
    extract_dir = settings.run_dir(run_date) / "extract"
    frames = read_extract({name: str(extract_dir / f"{name}.parquet") for name in ("customers", "orders")})
    shortfalls = [_propensity_shortfall(frames, run_date, params), _churn_shortfall(frames, run_date, params),
                  _clv_shortfall(frames, run_date, params)]
    if any(shortfalls):
        return _skipped("customer scores", run_date, "; ".join(reason for reason in shortfalls if reason))
    configure_mlflow(settings)
    features = pd.read_parquet(features_path)
    X = features.set_index("customer_id")[list(FEATURE_COLUMNS)]
    models = {
        "purchase_propensity": _load_champion(propensity.MODEL_NAME),
        "churn_risk": _load_champion(churn.MODEL_NAME),
        "clv": _load_champion(clv.MODEL_NAME),
    }
    active = churn.active_mask(X, params.churn_active_days).to_numpy()
    propensity_score = models["purchase_propensity"].model.predict(None, X)
    churn_score = np.where(active, models["churn_risk"].model.predict(None, X), np.nan)
    clv_score = np.asarray(models["clv"].model.predict(None, X), dtype="float64")
    factors = {name: _active_factors(champion.model, X, active) if name == "churn_risk" else _factors_json(champion.model, X)
               for name, champion in models.items()}
    scores = pd.DataFrame(
        {
            "run_date": run_date,
            "customer_id": X.index.to_numpy(dtype="int64"),
            "purchase_propensity": np.asarray(propensity_score, dtype="float64"),
            "churn_risk": churn_score,
            "clv": clv_score,
            "value_tier": clv.value_tier(clv_score),
            "top_factors": _combine_json(factors),
            "propensity_model": models["purchase_propensity"].name,
            "propensity_version": models["purchase_propensity"].version,
            "churn_model": models["churn_risk"].name,
            "churn_version": models["churn_risk"].version,
            "clv_model": models["clv"].name,
            "clv_version": models["clv"].version,
        }
    )
    path = _write_scores(settings, run_date, "customer_scores", scores)
    logger.info("scored %d customers with %s", len(scores), {n: f"v{c.version}" for n, c in models.items()})
    return {"path": str(path), "features_path": features_path, "rows": len(scores),
            "versions": {n: c.version for n, c in models.items()}}


DRIFT_SCORES = {"purchase_propensity": propensity.MODEL_NAME, "clv": clv.MODEL_NAME}


def check_drift(settings: Settings, run_date: dt.date, scored: dict[str, Any], params: RunParams) -> dict[str, Any]:
    """Tonight's features and scores against the propensity ``@champion``'s training features
    (scored by tonight's champions): an Evidently report logged to MLflow, one row per column in
    ``scores.feature_drift`` and the decision in ``scores.drift_checks``. ``retrain`` is True when
    the share of drifted features exceeds ``drift_share_threshold``."""
    configure_mlflow(settings)
    reference_model = _load_champion(propensity.MODEL_NAME)
    reference_run = mlflow.MlflowClient().get_model_version(reference_model.name, reference_model.version).run_id
    with tempfile.TemporaryDirectory(prefix="revopt-drift-") as tmp:
        reference = pd.read_parquet(mlflow.artifacts.download_artifacts(
            run_id=reference_run, artifact_path=REFERENCE_FEATURES, dst_path=tmp))
    current = pd.read_parquet(scored["features_path"])[list(FEATURE_COLUMNS)]
    reference = reference[list(FEATURE_COLUMNS)]
    tonight = pd.read_parquet(scored["path"])
    for column, model_name in DRIFT_SCORES.items():
        current[column] = tonight[column].to_numpy()
        reference[column] = np.asarray(_load_champion(model_name).model.predict(None, reference[list(FEATURE_COLUMNS)]), dtype="float64")
    config = drift.DriftConfig(drift_share_threshold=params.drift_share_threshold, random_state=params.seed)
    result = drift.check_drift(reference, current, FEATURE_COLUMNS, config, score_columns=list(DRIFT_SCORES))

    with mlflow.start_run(run_name=f"drift-{run_date}") as run:
        mlflow.set_tags({"revopt.family": "drift", "revopt.run_date": run_date.isoformat(),
                         "revopt.drift.retrain": str(result.retrain), "revopt.drift.reason": result.reason[:5000],
                         "revopt.drift.reference": f"{reference_model.name}/{reference_model.version}"})
        mlflow.log_params({"run_date": run_date.isoformat(), "drift_share_threshold": params.drift_share_threshold,
                           "n_reference": result.n_reference, "n_current": result.n_current})
        mlflow.log_metrics({"drift_share": result.drift_share, "drifted_columns": int(result.table["drifted"].sum()),
                            **{f"drift_score.{row.column}": float(row.drift_score) for row in result.table.itertuples()
                               if pd.notna(row.drift_score)}})
        mlflow.log_text(result.html, "drift/report.html")
        run_id = run.info.run_id
    reference_columns = {"reference_model": reference_model.name, "reference_version": reference_model.version}
    columns = result.table.rename(columns={"column": "column_name"}).assign(run_date=run_date, **reference_columns)
    decision = pd.DataFrame([{
        "run_date": run_date, "drift_share": result.drift_share, "threshold": params.drift_share_threshold,
        "retrain_requested": result.retrain, "reason": result.reason, "n_reference": result.n_reference,
        "n_current": result.n_current, **reference_columns, "mlflow_run_id": run_id,
    }])
    with scores_connection(settings) as conn:
        publish_partition(conn, "scores.feature_drift", run_date, columns[[
            "run_date", "column_name", "kind", "stattest", "drift_score", "threshold", "drifted",
            "reference_model", "reference_version"]])
        publish_partition(conn, "scores.drift_checks", run_date, decision)
    log = logger.warning if result.retrain else logger.info
    log("drift check for %s: %s (MLflow run %s)", run_date, result.reason, run_id)
    return {"retrain": bool(result.retrain), "drift_share": float(result.drift_share), "reason": result.reason,
            "mlflow_run_id": run_id}


def _factors_json(model: Any, X: pd.DataFrame) -> pd.Series:
    contributions = model.contributions(X)
    if contributions is None:
        return pd.Series("null", index=X.index)
    return top_factors(contributions.drop(columns="bias", errors="ignore"), k=3)


def _active_factors(model: Any, X: pd.DataFrame, active: np.ndarray) -> pd.Series:
    """Churn factors for the active customers only: the others get no churn score, so null (and
    explaining a million rows costs real time, see docs/scale.md)."""
    explained = _factors_json(model, X[active]) if active.any() else pd.Series(dtype=object)
    return explained.reindex(X.index, fill_value="null")


def _combine_json(factors: dict[str, pd.Series]) -> np.ndarray:
    """One JSON object per customer: {"purchase_propensity": [...], "churn_risk": [...], "clv": [...]}."""
    combined = np.full(len(next(iter(factors.values()))), "{", dtype=object)
    for i, (name, series) in enumerate(factors.items()):
        combined = combined + ("," if i else "") + f'"{name}":' + series.to_numpy(dtype=object)
    return combined + "}"


def publish_customer_scores(settings: Settings, run_date: dt.date, scores_path: str) -> int:
    """Replace ``scores.customer_scores`` rows for the run date with this run's scores."""
    return _publish(settings, run_date, "scores.customer_scores", scores_path)


def publish_price_recommendations(settings: Settings, run_date: dt.date, path: str) -> int:
    """Replace ``scores.price_recommendations`` rows for the run date with this run's recommendations."""
    return _publish(settings, run_date, "scores.price_recommendations", path)


def publish_send_time_recommendations(settings: Settings, run_date: dt.date, path: str) -> int:
    """Replace ``scores.send_time_recommendations`` rows for the run date with this run's."""
    return _publish(settings, run_date, "scores.send_time_recommendations", path)


def publish_budget_allocations(settings: Settings, run_date: dt.date, path: str) -> int:
    """Replace ``scores.budget_allocations`` rows for the run date with this run's allocation."""
    return _publish(settings, run_date, "scores.budget_allocations", path)


def _publish(settings: Settings, run_date: dt.date, table: str, path: str) -> int:
    rows = pd.read_parquet(path)
    rows["run_date"] = run_date
    with scores_connection(settings) as conn:
        return publish_partition(conn, table, run_date, rows)
