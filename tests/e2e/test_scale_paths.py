"""The nightly customer-scores extract (ml.pipeline.CUSTOMER_SCORE_DATASETS) gives the same
features as the full extract, the extract's parts written apart are the whole extract, and the chunked seeding
loads one consistent store."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from features.customer import EVENT_FEATURES_AT_CUTOFFS
from ml.extracting import ALL_DATASETS
from ml.params import NIGHTLY, TRAINING, RunParams
from ml.pipeline import CUSTOMER_SCORE_DATASETS, build_features, extract, extract_datasets, validate_extracts
from revopt.platform.extract import EXTRACT_PARTS, merged_extract
from revopt.platform.resources import Resources
from revopt.platform.stack import close_event_stores
from revopt.sample_data.seed import load_store_chunks
from revopt.sample_data.synth import generate_store_chunks

START = dt.date(2024, 1, 1)
DAYS = 150
RUN_DATE = START + dt.timedelta(days=DAYS)
LOOKBACK_DAYS = 120


@pytest.fixture(scope="module")
def seeded(settings):
    yield load_store_chunks(settings, generate_store_chunks(1_500, DAYS, START, seed=31, chunk_customers=600))
    close_event_stores()  # this process opened the session's chDB; a later module may open another folder


def test_chunked_seeding_loads_every_chunk(seeded) -> None:
    assert seeded["shop.customers"] == 1_500 and seeded["truth.customers"] == 1_500
    assert seeded["clickhouse.events"] > 50_000 and seeded["shop.orders"] > 0


def test_customer_score_extract_gives_the_features_of_the_full_extract(settings, seeded) -> None:
    full = extract_datasets(Resources(settings), RUN_DATE, LOOKBACK_DAYS)
    assert set(full) == set(ALL_DATASETS)
    validate_extracts(Resources(settings), RUN_DATE, full, LOOKBACK_DAYS)
    from_daily = build_features(Resources(settings), RUN_DATE, {k: v for k, v in full.items() if k != "customer_event_features"})
    from_daily_frame = pd.read_parquet(from_daily["path"])

    scores_only = extract_datasets(Resources(settings), RUN_DATE, LOOKBACK_DAYS, CUSTOMER_SCORE_DATASETS)
    assert set(scores_only) == set(CUSTOMER_SCORE_DATASETS)
    validate_extracts(Resources(settings), RUN_DATE, scores_only, LOOKBACK_DAYS)
    from_clickhouse = build_features(Resources(settings), RUN_DATE, scores_only)

    assert from_clickhouse["rows"] == from_daily["rows"] == 1_500
    pd.testing.assert_frame_equal(pd.read_parquet(from_clickhouse["path"]), from_daily_frame)


def test_unknown_datasets_are_refused(settings, seeded) -> None:
    with pytest.raises(ValueError, match="unknown datasets"):
        extract_datasets(Resources(settings), RUN_DATE, LOOKBACK_DAYS, ("customers", "clickstream"))


@pytest.mark.parametrize("purpose", [TRAINING, NIGHTLY])
def test_the_extract_parts_written_apart_are_the_whole_extract(settings, seeded, purpose) -> None:
    """The DAGs run the extract's parts in two tasks side by side (``tables``, ``events``); the events part reads the
    customers, orders and offers it joins to the events itself. Together they write the whole extract, row for row."""
    # 90 days of the store's 150 at night: the events part must read the orders of the tables part's window
    resources, params = Resources(settings), RunParams(training_sample_customers=1_000, lookback_days=90)
    whole = extract(resources, RUN_DATE, purpose, params)
    frames = {name: pd.read_parquet(path) for name, path in whole.items()}
    parts = [extract(resources, RUN_DATE, purpose, params, part) for part in EXTRACT_PARTS]
    tables, events = parts
    assert "customers" in tables and "orders" in tables and "conversion_paths" not in tables
    features = EVENT_FEATURES_AT_CUTOFFS if purpose == TRAINING else "customer_event_features"
    assert {features, "conversion_paths"} <= set(events) and not {"customers", "orders", "offers"} & set(events)
    merged = merged_extract(parts)
    assert list(merged) == [*tables, *events] and set(merged) == set(whole)
    for name, path in merged.items():
        pd.testing.assert_frame_equal(pd.read_parquet(path), frames[name], obj=name)
    with pytest.raises(ValueError, match="two parts"):
        merged_extract([tables, tables])
    with pytest.raises(ValueError, match="unknown extract part 'everything'"):
        extract(resources, RUN_DATE, purpose, params, "everything")
