"""Degenerate but real stores: one product and no price variation, five customers, one day of
history, no email sends and no marketing spend. On each, every model family either trains and
registers or is skipped with a reason naming the run date and what is missing, the nightly step of
each family does the same (one predicate per family decides both), and a model predicting NaN is
never registered.

The six properties come in four stores (each one more full training of every family would cost
some 15 s): the reviewer's store with one product never sold at another price, five customers, one
day, and a store without email sends or marketing spend. One product *with* price changes is
estimated in tests/unit/test_pricing.py. Each store is one small synthetic store
(``revopt.sample_data.synth``) cut down the way a real store would look, loaded into the embedded stack's
sources (``revopt.sample_data.seed.load_sources``), extracted as the DAGs do, validated, and handed to every
family's ``train_*`` workflow directly (not through Airflow), with one Optuna trial. Validation
applies to all of them and passes: a small store is still a store, and no rule in
``expectations/`` fails it for its size (the five customers are ones who ordered in the last week
and browsed on the last day, so the freshness rules hold, as they would for a live store of five).
The models go to this module's own MLflow registry, so champions of these stores never meet the
other modules' stores at the gate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

import ml.families.binary
from ml import pipeline, registry
from ml.families import budget, churn, clv, pricing, propensity, send_time
from ml.family import NonFiniteModelError
from ml.params import RunParams
from ml.pipeline import DAG_DATASETS, extract_datasets
from revopt.platform.config import Settings
from revopt.platform.resources import Resources, configure_mlflow
from revopt.sample_data.seed import load_sources
from revopt.platform.stack import close_event_stores
from revopt.sample_data.synth import generate_store

pytestmark = pytest.mark.e2e

START = dt.date(2019, 1, 1)  # far from the other modules' run dates (the row-count rule looks 30 days back)
DAYS = 120
RUN_DATE = START + dt.timedelta(days=DAYS)
PARAMS = RunParams(n_trials=1, tuning_timeout_seconds=20, propensity_horizon_days=30, churn_horizon_days=30,
                   clv_horizon_days=30, lookback_days=365)
FAMILIES = {"propensity": propensity.FAMILY, "churn": churn.FAMILY, "clv": clv.FAMILY, "pricing": pricing.FAMILY,
            "send_time": send_time.FAMILY, "budget": budget.FAMILY}
TRAINS = None
D = RUN_DATE.isoformat()
FIT_CUTOFF, TEST_CUTOFF = (RUN_DATE - dt.timedelta(days=days) for days in (60, 30))  # the customer models' (horizon 30)
# send time tests on the last 28 days and tunes on a backtest whose held-out part is the 28 days before
LAST_DAY, BACKTEST_START = (RUN_DATE - dt.timedelta(days=days) for days in (1, 56))
# Per store and family: None (it trains and registers a version) or how its skip reason starts (or
# pieces of it, where the counts depend on the draw).
EXPECTED: dict[str, dict[str, str | tuple[str, ...] | None]] = {
    # every order line sells the best seller, always at its one list price
    "one_product_one_price": {**dict.fromkeys(FAMILIES, TRAINS),
                              "pricing": f"no product with price variation before {D}: every product that sold in "
                                         "the 365 days before it (1) sold at one price and kept its list price"},
    # five (loyal) customers: too few of either label, too few for BTYD; the catalogue, prices, emails
    # and spend are the store's, so pricing, send time and budget learn
    "five_customers": {
        **dict.fromkeys(FAMILIES, TRAINS),
        "propensity": (f"purchase propensity for {D}: ", f"customers in the fitting set at {FIT_CUTOFF} ("),
        "churn": (f"churn for {D}: ", f"customers in the fitting set at {FIT_CUTOFF} ("),
        "clv": ("buyers and ", f"repeat buyers before the CLV fit cutoff {FIT_CUTOFF} (run date {D}, horizon 30 days): "
                "too few for the BTYD model (needs >= 10 of each"),
    },
    # the store opened yesterday: nothing before any training cutoff or backtest window
    "one_day": {
        "propensity": f"purchase propensity for {D}: 0 customers in the fitting set at {FIT_CUTOFF}",
        "churn": f"churn for {D}: 0 customers in the fitting set at {FIT_CUTOFF}",
        "clv": f"0 buyers and 0 repeat buyers before the CLV fit cutoff {FIT_CUTOFF} (run date {D}",
        "pricing": f"too little sales history before {D}: the first sale is on {LAST_DAY}, inside the last 56 days",
        "send_time": f"0 email sends / sessions / orders of known customers before {BACKTEST_START}, ",
        "budget": f"only 1 days of marketing spend before {D} (from {LAST_DAY}): the media model needs 112",
    },
    # no email events and no paid channels: send time learns from the hours customers browse and
    # order in; there is no budget to allocate
    "no_email_no_spend": {**dict.fromkeys(FAMILIES, TRAINS),
                          "budget": f"the store has no marketing spend in the 365 days before {D} (shop.marketing_spend)"},
}


# --- the stores ---------------------------------------------------------------------------------


Store = tuple[dict[str, pd.DataFrame], pd.DataFrame]  # the shop frames and the events


@pytest.fixture(scope="module")
def base() -> Store:
    store = generate_store(n_customers=300, days=DAYS, start=START, seed=3)
    return dict(store.shop), store.events


def _one_product_one_price(shop: dict[str, pd.DataFrame], events: pd.DataFrame) -> Store:
    """Every order line sells the best seller, at its current list price, which never changed."""
    lines, products = shop["order_lines"], shop["products"]
    top = products[products["product_id"] == lines.groupby("product_id")["quantity"].sum().idxmax()]
    price = float(top["current_price"].iloc[0])
    prices = pd.DataFrame({"product_id": top["product_id"], "valid_from": pd.Timestamp(START), "list_price": price})
    lines = lines.assign(product_id=int(top["product_id"].iloc[0]), unit_price=price, discount=0.0)
    return {**shop, "products": top, "product_prices": prices.astype(shop["product_prices"].dtypes.to_dict()),
            "order_lines": lines}, events


def _five_customers(shop: dict[str, pd.DataFrame], events: pd.DataFrame) -> Store:
    """The five customers with the most orders among those who ordered in the last week and were
    on the site on the last day."""
    run = pd.Timestamp(RUN_DATE, tz="UTC")
    orders = shop["orders"]
    recent = set(orders.loc[orders["order_ts"] >= run - pd.Timedelta(days=7), "customer_id"])
    browsing = set(events.loc[events["event_time"] >= run - pd.Timedelta(days=1), "customer_id"])
    keep = orders[orders["customer_id"].isin(recent & browsing)].groupby("customer_id").size().nlargest(5).index
    kept_orders = orders[orders["customer_id"].isin(keep)]
    return {**shop, "customers": shop["customers"][shop["customers"]["customer_id"].isin(keep)], "orders": kept_orders,
            "order_lines": shop["order_lines"][shop["order_lines"]["order_id"].isin(kept_orders["order_id"])]}, \
        events[events["customer_id"].isin(keep)]


def _one_day(shop: dict[str, pd.DataFrame], events: pd.DataFrame) -> Store:
    """The store as it was had it opened the day before the run date: that day's customers (signed
    up that day), orders, events, list prices and spend."""
    day = pd.Timestamp(RUN_DATE) - pd.Timedelta(days=1)
    orders = shop["orders"][shop["orders"]["order_ts"] >= day.tz_localize("UTC")]
    events = events[events["event_time"] >= day.tz_localize("UTC")]
    seen = set(orders["customer_id"]) | set(events["customer_id"])
    customers = shop["customers"][shop["customers"]["customer_id"].isin(seen)].assign(signup_date=day)
    prices = shop["product_prices"].sort_values("valid_from")
    prices = prices[prices["valid_from"] <= day].groupby("product_id").tail(1).assign(valid_from=day)
    return {**shop, "customers": customers.astype(shop["customers"].dtypes.to_dict()), "orders": orders,
            "order_lines": shop["order_lines"][shop["order_lines"]["order_id"].isin(orders["order_id"])],
            "product_prices": prices, "marketing_spend": shop["marketing_spend"][shop["marketing_spend"]["day"] >= day]}, \
        events


def _no_email_no_spend(shop: dict[str, pd.DataFrame], events: pd.DataFrame) -> Store:
    no_email = events[~events["event_type"].str.startswith("email_")]
    return {**shop, "marketing_spend": shop["marketing_spend"].iloc[:0]}, no_email


STORES = {"one_product_one_price": _one_product_one_price, "five_customers": _five_customers, "one_day": _one_day,
          "no_email_no_spend": _no_email_no_spend}


@pytest.fixture(scope="module")
def own_registry(settings: Settings, tmp_path_factory) -> Settings:
    """The session's stack with an MLflow registry of this module's own."""
    isolated = dataclasses.replace(settings, mlflow_tracking_uri=f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
    yield isolated
    configure_mlflow(settings)
    close_event_stores()  # Airflow's task processes in later modules open the chDB folder


@pytest.fixture(autouse=True)
def _quick_media_model(monkeypatch):
    """The media model without bootstrap refits (they only draw the response curves' bands) and
    with one start of its nonlinear fit: forty refits per training would be half this file's time."""
    monkeypatch.setattr(budget, "MediaConfig", functools.partial(budget.MediaConfig, n_bootstrap=0, n_starts=1))


def _load(settings: Settings, base, store: str, *, validate: bool = True) -> dict[str, str]:
    """Load ``store`` into the sources and return the training extract's paths, validated."""
    shop, events = STORES[store](*base)
    load_sources(settings, shop, None, events)
    paths = extract_datasets(Resources(settings), RUN_DATE, PARAMS.training_extract_days, DAG_DATASETS["training"],
                             params=PARAMS)
    if validate:
        pipeline.validate_extracts(Resources(settings), RUN_DATE, paths, PARAMS.training_extract_days)
    return paths


def _versions(model_name: str) -> int:
    return len(MlflowClient().search_model_versions(f"name = '{model_name}'"))


# --- every family, every store ------------------------------------------------------------------


@pytest.mark.parametrize("store", list(STORES))
def test_every_family_trains_or_skips_with_its_reason_and_the_nightly_run_agrees(own_registry, base, store):
    settings = own_registry
    paths = _load(settings, base, store)
    configure_mlflow(settings)
    resources = Resources(settings)
    outcomes = {}
    for family, definition in FAMILIES.items():
        model_name = definition.model_name
        versions = _versions(model_name)
        outcomes[family] = result = pipeline.train(definition, resources, RUN_DATE, paths, PARAMS)
        expected = EXPECTED[store][family]
        if expected is TRAINS:
            assert "skipped" not in result, f"{store}: {family} skipped: {result.get('skipped')}"
            assert result["model_name"] == model_name and result["alias"] in ("champion", "challenger")
            assert MlflowClient().get_model_version(model_name, result["model_version"]).run_id == result["run_id"]
        else:
            if isinstance(expected, str):
                assert result["skipped"].startswith(expected), f"{store}: {family}: {result}"
            else:
                assert all(piece in result["skipped"] for piece in expected), f"{store}: {family}: {result}"
            if family in ("propensity", "churn"):
                assert "too few to fit a classifier (needs >= 20 of each label)" in result["skipped"]
            assert _versions(model_name) == versions, f"{store}: {family} skipped but registered a version"

    # The nightly steps ask the same questions of the nightly extract: skipped with the same reason
    # where training skipped; where it trained, they score with the @champion, or, when no version has
    # passed the promotion gate (this module's registry is its own), skip saying so.
    nightly = extract_datasets(resources, RUN_DATE, PARAMS.lookback_days, DAG_DATASETS["nightly"])
    features = pipeline.build_features(resources, RUN_DATE, nightly)

    def nightly_reason(family: str) -> str | None:
        if "skipped" in outcomes[family]:
            return outcomes[family]["skipped"]
        model_name = FAMILIES[family].model_name
        return None if registry.current_version(model_name, "champion") else registry.no_champion_reason(model_name)

    for family in ("pricing", "send_time", "budget"):
        result = pipeline.recommend(FAMILIES[family], resources, RUN_DATE, nightly, PARAMS, output=f"{family}_test")
        assert result.get("skipped") == nightly_reason(family), f"{store}: nightly {family}: {result}"
        assert "skipped" in result or result["rows"] > 0
    scored = pipeline.score_customers(resources, RUN_DATE, features["path"], nightly, PARAMS)
    customer_reasons = [reason for family in ("propensity", "churn", "clv") if (reason := nightly_reason(family))]
    if nightly_reason("propensity"):  # every published row needs a purchase propensity
        assert scored["skipped"] == "; ".join(customer_reasons)
    else:  # churn or CLV without a model: published without them (NULL), saying why
        assert scored["rows"] == features["rows"] > 0
        assert list(scored["without"].values()) == customer_reasons


# --- a model predicting NaN ---------------------------------------------------------------------


def _nan_every_third(values):
    values = pd.Series(values, dtype="float64").to_numpy().copy()
    values[::3] = float("nan")
    return values


@pytest.mark.parametrize("case", ["propensity", "pricing", "pricing backtest"])
def test_a_model_predicting_nan_is_never_registered(own_registry, base, case, monkeypatch):
    settings = own_registry
    paths = _load(settings, base, "no_email_no_spend", validate=False)  # validation is not what this is about
    family = case.split()[0]
    if case == "propensity":  # the refitted classifier's holdout predictions
        real_refit = ml.families.binary.refit

        def refit(*args, **kwargs):
            model = real_refit(*args, **kwargs)
            proper = model.predict_proba
            model.predict_proba = lambda X: _nan_every_third(proper(X))
            return model

        monkeypatch.setattr(ml.families.binary, "refit", refit)
        message = r"predictions of the chosen spec \(fit cutoff .*\) are NaN or infinite"
    elif case == "pricing":  # the recommended prices, what the nightly run publishes
        real_recommend = pricing.model.recommend_prices
        monkeypatch.setattr(pricing.model, "recommend_prices", lambda *args, **kwargs: real_recommend(*args, **kwargs).assign(
            recommended_price=lambda table: _nan_every_third(table["recommended_price"])))
        message = "recommended prices of the priced products are NaN or infinite"
    else:  # every prediction of units (tuning's and the test window's) is NaN
        real_predict = pricing.backtest.predict_units
        monkeypatch.setattr(pricing.backtest, "predict_units",
                            lambda *args, **kwargs: tuple(np.full_like(m, np.nan) for m in real_predict(*args, **kwargs)))
        message = "its test-window poisson_deviance is nan, not a finite number"
    definition = FAMILIES[family]
    model_name = definition.model_name
    configure_mlflow(settings)
    versions = _versions(model_name)
    with pytest.raises(NonFiniteModelError, match=message) as raised:
        pipeline.train(definition, Resources(settings), RUN_DATE, paths, PARAMS)
    assert isinstance(raised.value, ValueError)  # not a transient error: the retry policy fails the task at once
    assert f"({model_name}) for {RUN_DATE}: " in str(raised.value) and "the model is not registered" in str(raised.value)
    assert _versions(model_name) == versions
