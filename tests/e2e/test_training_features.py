"""Training features at a past cutoff mean what tonight's features mean: the same length of history.

The training extract of run date D reads ``RunParams.training_extract_days`` (the nightly lookback
plus the furthest training cutoff); at a cutoff C the customer models use only the lookback before
C. A customer's features at C from the training extract of D equal its features from a nightly
extract as of C (the nightly DAG's own build_features, event features computed in ClickHouse).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import pytest

from features.customer import EVENT_FEATURES_AT_CUTOFFS, FEATURE_COLUMNS, features_at, evaluation_cutoffs, sample_customers
from ml.families import send_time
from ml.params import RunParams
from ml.pipeline import DAG_DATASETS, build_features, extract_datasets
from revopt.platform.extract import empty_daily_events, read_extract
from revopt.platform.resources import Resources
from revopt.sample_data.seed import seed_synthetic

pytestmark = pytest.mark.e2e

START = dt.date(2016, 1, 1)  # far from the other modules' run dates (the row-count rule looks 30 days back)
DAYS = 240
# one backtest origin: the fit cutoff D - 2h is then the furthest back, where the extract starts
PARAMS = RunParams(lookback_days=90, propensity_horizon_days=30, churn_horizon_days=20, clv_horizon_days=25,
                   backtest_origins=1)


@pytest.fixture(scope="module")
def training_frames(settings):
    report = seed_synthetic(settings, n_customers=800, days=DAYS, start=START, seed=5)
    assert PARAMS.training_extract_days == 90 + 2 * 30
    paths = extract_datasets(Resources(settings), report.end, PARAMS.training_extract_days, DAG_DATASETS["training"],
                             params=PARAMS)
    return report.end, read_extract(paths)


def _without_events(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The training frames without engagement (its event features exist at the training cutoffs and
    lookback only): for features of the orders at other cutoffs or windows."""
    return {**{k: v for k, v in frames.items() if k != EVENT_FEATURES_AT_CUTOFFS}, "customer_daily_events": empty_daily_events()}


def _nightly_features(settings, cutoff: dt.date) -> pd.DataFrame:
    paths = extract_datasets(Resources(settings), cutoff, PARAMS.lookback_days, DAG_DATASETS["nightly"])
    built = build_features(Resources(settings), cutoff, paths)
    return pd.read_parquet(built["path"]).set_index("customer_id")[list(FEATURE_COLUMNS)]


@pytest.mark.parametrize("which", ["fit", "test"])
def test_features_at_a_training_cutoff_equal_a_nightly_extract_as_of_that_cutoff(settings, training_frames, which):
    run_date, frames = training_frames
    fit_cutoff, test_cutoff = evaluation_cutoffs(run_date, PARAMS.propensity_horizon_days)
    cutoff = fit_cutoff if which == "fit" else test_cutoff
    from_training = features_at(frames, cutoff, PARAMS.lookback_days)
    tonight = _nightly_features(settings, cutoff.date())
    assert len(tonight) > 500 and (tonight["frequency"] > 0).mean() > 0.3
    pd.testing.assert_frame_equal(from_training.sort_index(), tonight.sort_index(), check_dtype=False)

    # At the later cutoff the training extract holds history older than the window: without the
    # window it would count it, so the check above can fail. (The earliest cutoff is where the
    # extract starts: there the window and the extract coincide.)
    unbounded = features_at(_without_events(frames), cutoff)
    reaches_further = frames["orders"]["order_ts"].min() < cutoff - pd.Timedelta(days=PARAMS.lookback_days)
    assert reaches_further == (which == "test")
    assert (unbounded["frequency"] > from_training["frequency"]).any() == reaches_further


def test_order_categories_split_each_order_value_by_category(training_frames):
    _, frames = training_frames
    orders = frames["orders"].set_index("order_id")
    by_category = frames["order_categories"]
    assert not by_category.duplicated(["order_id", "category"]).any()
    assert by_category["category"].nunique() > 3
    spend = by_category.groupby("order_id")["value"].sum()
    whole = orders.loc[orders["lines_without_product_id"] == 0, "order_value"]
    assert set(spend.index) == set(orders.index[orders["n_lines"] > 0])
    pd.testing.assert_series_equal(spend.reindex(whole.index), whole, check_names=False, atol=1e-6)
    mix = features_at(_without_events(frames), frames["orders"]["order_ts"].max() + pd.Timedelta(seconds=1))
    assert (mix["categories_bought"] > 1).mean() > 0.2 and (mix["category_repeat_rate"] > 0).any()


def test_the_send_time_evidence_is_extracted_for_the_training_sample_alone(settings, training_frames):
    """With fewer ``training_sample_customers`` than customers the training extract reads the hourly engagement of
    the sample alone (in ClickHouse), the same rows the whole extract has for them; the family trains on them."""
    run_date, frames = training_frames
    params = dataclasses.replace(PARAMS, training_sample_customers=300)
    paths = extract_datasets(Resources(settings), run_date, params.training_extract_days, ("customers", "engagement_by_hour"),
                             params=params)
    sampled = read_extract(paths)["engagement_by_hour"]
    chosen = sample_customers(pd.Index(frames["customers"]["customer_id"]), 300, params.seed)
    whole = frames["engagement_by_hour"]
    assert whole["customer_id"].nunique() > 500  # the whole extract has everyone's (800 customers)
    expected = whole.loc[whole["customer_id"].isin(chosen)].reset_index(drop=True)
    assert 250 < expected["customer_id"].nunique() <= 300
    pd.testing.assert_frame_equal(sampled.reset_index(drop=True), expected)

    data = send_time.FAMILY.training_data(frames, run_date, params)
    assert set(data.customers["customer_id"]) == set(chosen)
    assert set(data.engagement["customer_id"]) <= set(chosen) and set(data.orders["customer_id"]) <= set(chosen)
    run_ts = pd.Timestamp(run_date, tz="UTC")
    window = (expected["hour_utc"] >= run_ts - pd.Timedelta(days=params.lookback_days)) & (expected["hour_utc"] < run_ts)
    pd.testing.assert_frame_equal(data.engagement.reset_index(drop=True), expected.loc[window].reset_index(drop=True))
