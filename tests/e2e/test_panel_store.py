"""A store that keeps aggregated sales only (a scanner panel: no customers, no orders, no clickstream)
goes through the DAGs' steps: its empty order datasets are not held against it by the validation gate,
the customer, send-time and budget families skip with reasons, and pricing trains on the aggregates."""

from __future__ import annotations

import datetime as dt

import pytest

from ml import pipeline
from ml.families import pricing
from ml.params import RunParams
from ml.pipeline import DAG_DATASETS, FAMILIES, build_features, extract_datasets, validate_extracts
from revopt.platform.extract import TABLE_DATASETS, read_extract
from revopt.platform.resources import Resources
from revopt.platform.validation import DataValidationError
from revopt.sample_data.panel import generate_panel, load_panel

pytestmark = pytest.mark.e2e

START = dt.date(2037, 1, 5)  # a Monday, far from the other modules' run dates
PERIODS = 70
RUN_DATE = START + dt.timedelta(days=7 * PERIODS)
PARAMS = RunParams(lookback_days=7 * PERIODS - 7, n_trials=2, backtest_origins=1)


@pytest.fixture(scope="module")
def panel(settings):
    generated = generate_panel(n_stores=6, n_brands=4, periods=PERIODS, start=START, seed=9)
    load_panel(settings, generated)
    return generated


def test_the_gate_passes_and_only_pricing_trains(settings, panel, caplog):
    resources = Resources(settings)
    paths = extract_datasets(resources, RUN_DATE, PARAMS.extract_days("training"), DAG_DATASETS["training"],
                             params=PARAMS)
    with caplog.at_level("WARNING", logger="ml.pipeline"):
        validate_extracts(resources, RUN_DATE, paths, PARAMS.lookback_days)
    assert any("aggregated sales only" in r.getMessage() and "orders" in r.getMessage() for r in caplog.records
               if r.name == "ml.pipeline")
    # as the DAGs' gate runs (dags/_gate.py): each part as it ends, the events part knowing the tables' datasets
    tables = {name: path for name, path in paths.items() if name in TABLE_DATASETS}
    events = {name: path for name, path in paths.items() if name not in TABLE_DATASETS}
    assert "orders" in tables and "customer_event_features_at_cutoffs" in events
    validate_extracts(resources, RUN_DATE, tables, PARAMS.lookback_days)
    caplog.clear()  # the records of this call alone (a suite may have set the loggers to INFO already)
    with caplog.at_level("INFO", logger="revopt.platform.quality"):
        validate_extracts(resources, RUN_DATE, paths, PARAMS.lookback_days, only=events)
    validated = {r.args[0] for r in caplog.records if r.name == "revopt.platform.quality" and "validation of" in r.msg}
    assert validated and validated <= set(events), validated  # the tables' datasets not again
    with pytest.raises(DataValidationError, match="customer_event_features_at_cutoffs"):
        validate_extracts(resources, RUN_DATE, events, PARAMS.lookback_days)  # alone, it cannot tell the store's kind
    frames = read_extract(paths)
    assert len(frames["orders"]) == 0 and len(frames["product_sales"]) > 0
    for family in FAMILIES:
        reason = family.shortfall({name: frames[name] for name in family.training_datasets}, RUN_DATE, PARAMS)
        if family is pricing.FAMILY:
            assert reason is None
        else:
            assert isinstance(reason, str) and RUN_DATE.isoformat() in reason, (family.name, reason)
    data = pricing.FAMILY.training_data({name: frames[name] for name in pricing.FAMILY.training_datasets}, RUN_DATE, PARAMS)
    assert set(data.panel["period_days"]) == {7} and data.panel["brand"].notna().all()
    trained = pricing.FAMILY.train(data, PARAMS, [])
    assert trained.params["grain_days"] == 7 and "promo_display_effect" in trained.metrics
    assert trained.model.estimates["brand_elasticity"].notna().all()
    # the registered model's signature comes from the example: it must be what tonight's input looks like
    tonight = pricing.FAMILY.nightly_input(frames, RUN_DATE, PARAMS)
    assert list(trained.example.columns) == list(tonight.columns)
    prices = trained.model.predict(None, tonight)
    assert prices["brand_elasticity"].notna().all() and (prices["recommended_price"] > 0).all()


def test_the_nightly_steps_run_without_customers(settings, panel):
    resources = Resources(settings)
    paths = extract_datasets(resources, RUN_DATE, PARAMS.extract_days("nightly"), DAG_DATASETS["nightly"])
    validate_extracts(resources, RUN_DATE, paths, PARAMS.lookback_days)
    assert build_features(resources, RUN_DATE, paths)["rows"] == 0
    assert pipeline.aggregates_only(read_extract(paths))
