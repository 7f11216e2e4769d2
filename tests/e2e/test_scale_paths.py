"""The nightly customer-scores extract (ml.pipeline.CUSTOMER_SCORE_DATASETS) gives the same
features as the full extract, and the chunked seeding loads one consistent store."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from ml.pipeline import ALL_DATASETS, CUSTOMER_SCORE_DATASETS, build_features, extract_datasets, validate_extracts
from revopt.platform.resources import Resources
from revopt.sample_data.seed import load_store_chunks
from revopt.sample_data.synth import generate_store_chunks

START = dt.date(2024, 1, 1)
DAYS = 150
RUN_DATE = START + dt.timedelta(days=DAYS)
LOOKBACK_DAYS = 120


@pytest.fixture(scope="module")
def seeded(settings):
    return load_store_chunks(settings, generate_store_chunks(1_500, DAYS, START, seed=31, chunk_customers=600))


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
