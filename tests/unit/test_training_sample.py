"""Training at scale (issue 22): the customer families build their training sets from the event features
computed at the training run's cutoffs (one row per customer and cutoff, as the extract computes them in
ClickHouse) exactly as from the daily event rows, at no cutoff the extract did not compute, and fit on a
stable, seeded sample of ``training_sample_customers`` customers while testing on every customer."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features.customer import (
    EVENT_FEATURES_AT_CUTOFFS, customer_event_features, history_since, sample_customers,
)
from ml.families import FAMILIES, churn, clv, propensity, uplift
from ml.params import RunParams, param_specs
from ml.training_cutoffs import training_cutoffs
from revopt.sample_data.offers import OfferDesign, uplift_extract
from revopt.sample_data.synth import generate_store

START = dt.date(2024, 1, 1)
DAYS = 420
RUN_DATE = START + dt.timedelta(days=DAYS)
PARAMS = RunParams(n_trials=1, seed=3, lookback_days=200, training_sample_customers=0)
CUSTOMER_FAMILIES = (propensity.FAMILY, churn.FAMILY, clv.FAMILY, uplift.FAMILY)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    store = generate_store(1500, DAYS, START, seed=7, offers=OfferDesign())
    return uplift_extract(store.shop, store.events, pd.Timestamp(RUN_DATE), PARAMS.training_extract_days)


def _at_cutoffs(daily: pd.DataFrame, cutoffs: list[pd.Timestamp], lookback_days: int) -> pd.DataFrame:
    """The event features at ``cutoffs`` as the training extract writes them (computed here in pandas from the
    daily rows; tests/e2e/test_event_features.py shows ClickHouse's equal these)."""
    no_orders = pd.DataFrame({"order_ts": pd.Series(dtype="datetime64[ns, UTC]")})
    parts = [customer_event_features(history_since(no_orders, daily, cutoff - pd.Timedelta(days=lookback_days))[1],
                                     cutoff).assign(cutoff=cutoff.tz_localize(None)) for cutoff in cutoffs]
    frame = pd.concat(parts, ignore_index=True)
    frame.attrs.update(cutoffs=[c.date().isoformat() for c in cutoffs], lookback_days=lookback_days)
    return frame


def _training_frames(frames: dict[str, pd.DataFrame], cutoffs: list[pd.Timestamp]) -> dict[str, pd.DataFrame]:
    without_daily = {name: frame for name, frame in frames.items() if name != "customer_daily_events"}
    return {**without_daily,
            EVENT_FEATURES_AT_CUTOFFS: _at_cutoffs(frames["customer_daily_events"], cutoffs, PARAMS.lookback_days)}


def _labelled_sets(data) -> list:
    if isinstance(data, uplift.UpliftData):
        return [data.fit, data.test]
    sets = [data.fit, data.test, *(s for origin in data.earlier for s in origin[:2])]
    return sets + ([data.features_now] if isinstance(data, clv.ClvData) else [])


def test_every_customer_family_trains_on_the_extracts_cutoffs_as_on_the_daily_rows(frames) -> None:
    cutoffs = training_cutoffs(FAMILIES, frames, RUN_DATE, PARAMS)
    assert {family.name for family in FAMILIES if EVENT_FEATURES_AT_CUTOFFS in family.training_datasets} == {
        family.name for family in CUSTOMER_FAMILIES}
    assert "customer_daily_events" not in {name for family in FAMILIES for name in family.training_datasets}
    assert len(cutoffs) >= 8 and cutoffs[-1] == pd.Timestamp(RUN_DATE, tz="UTC")  # CLV's features as of the run date
    training = _training_frames(frames, cutoffs)
    for family in CUSTOMER_FAMILIES:
        from_cutoffs = family.training_data({name: training[name] for name in family.training_datasets}, RUN_DATE, PARAMS)
        from_daily = family.training_data(frames, RUN_DATE, PARAMS)
        sets = list(zip(_labelled_sets(from_cutoffs), _labelled_sets(from_daily), strict=True))
        assert len(sets) >= 2, family.name
        for ours, theirs in sets:
            X, expected = (ours, theirs) if isinstance(ours, pd.DataFrame) else (ours.X, theirs.X)
            assert len(X) > 100 and (X["sessions_30d"] > 0).any(), family.name
            pd.testing.assert_frame_equal(X, expected, obj=family.name)
    # the backtest reaches its earlier origins here, so every family's cutoffs are in the union
    assert len(propensity.FAMILY.training_data(training, RUN_DATE, PARAMS).earlier) == PARAMS.backtest_origins - 1


@pytest.mark.parametrize("family", CUSTOMER_FAMILIES, ids=lambda family: family.name)
def test_a_cutoff_the_extract_did_not_compute_raises(frames, family) -> None:
    cutoffs = training_cutoffs(FAMILIES, frames, RUN_DATE, PARAMS)
    own = family.training_cutoffs(frames, RUN_DATE, PARAMS)
    training = _training_frames(frames, [cutoff for cutoff in cutoffs if cutoff != own[-1]])
    with pytest.raises(KeyError, match=own[-1].date().isoformat()):
        family.training_data(training, RUN_DATE, PARAMS)


def test_the_sample_is_the_smallest_hashes_stable_across_cutoffs_and_runs() -> None:
    everyone = pd.Index(np.arange(1, 50_001, dtype="int64") * 7, name="customer_id")
    sample = sample_customers(everyone, 5_000, seed=11)
    assert len(sample) == 5_000 and sample.is_monotonic_increasing and sample.isin(everyone).all()
    assert sample.equals(sample_customers(everyone, 5_000, seed=11))  # a re-run draws the same customers
    assert len(sample.intersection(sample_customers(everyone, 5_000, seed=12))) < 1_000  # another seed, others
    # an earlier cutoff's population is a subset: whoever is sampled later and was there then was sampled then
    earlier = everyone[everyone % 3 != 0]
    assert set(sample.intersection(earlier)) <= set(sample_customers(earlier, 5_000, seed=11))
    assert sample_customers(everyone, 0, seed=11).equals(everyone)
    assert sample_customers(everyone[:100], 5_000, seed=11).equals(everyone[:100])
    # not biased by id: the sample's ids spread like everyone's
    assert abs(sample.to_series().median() / everyone.to_series().median() - 1) < 0.05


def test_the_importance_is_averaged_over_at_most_its_own_share_of_the_sample(monkeypatch) -> None:
    """The logged importance reads the ``training_sample_customers`` sample of the test window, at most
    IMPORTANCE_CUSTOMERS of it: the bottom of the same seeded hash, so a subset of the sample."""
    import ml.families.importance
    from features.customer import LabelledSet, sampled
    from ml.families.importance import importance_sample

    ids = pd.Index(np.arange(1, 5_001, dtype="int64") * 7, name="customer_id")
    window = LabelledSet(pd.Timestamp("2024-01-01", tz="UTC"), pd.DataFrame({"x": np.arange(len(ids))}, index=ids),
                         pd.Series(1, index=ids))
    monkeypatch.setattr(ml.families.importance, "IMPORTANCE_CUSTOMERS", 1_000)
    assert len(importance_sample(window, 300, 5).y) == 300
    for n in (0, 2_000, 10_000):
        chosen = importance_sample(window, n, 5)
        assert len(chosen.y) == 1_000 and chosen.X.index.isin(sampled(window, n, 5).X.index).all()


@pytest.mark.parametrize("family", (propensity.FAMILY, churn.FAMILY, clv.FAMILY), ids=lambda family: family.name)
def test_fit_sets_are_the_sample_and_test_sets_every_customer(frames, family) -> None:
    full = family.training_data(frames, RUN_DATE, PARAMS)
    n = len(full.fit.y) // 3
    data = family.training_data(frames, RUN_DATE, dataclasses.replace(PARAMS, training_sample_customers=n))
    assert len(data.fit.y) == n and data.fit.X.index.equals(sample_customers(full.fit.X.index, n, PARAMS.seed))
    pd.testing.assert_frame_equal(data.fit.X, full.fit.X.loc[data.fit.X.index])
    pd.testing.assert_series_equal(data.fit.y, full.fit.y.loc[data.fit.y.index])
    assert data.test.X.index.equals(full.test.X.index)  # the gate's test window holds every customer
    for (fit, test, *_), (full_fit, full_test, *_) in zip(data.earlier, full.earlier, strict=True):
        assert len(fit.y) == min(n, len(full_fit.y)) and test.X.index.equals(full_test.X.index)


def test_the_param_is_offered_by_the_training_dag_only() -> None:
    assert "training_sample_customers" in {spec.name for spec in param_specs("training")}
    assert "training_sample_customers" not in {spec.name for spec in param_specs("nightly")}
    assert RunParams().training_sample_customers > 0


@pytest.mark.parametrize("family", (propensity.FAMILY, churn.FAMILY, clv.FAMILY), ids=lambda family: family.name)
def test_each_cutoffs_features_are_built_once(frames, family, monkeypatch) -> None:
    """Origin k's fit cutoff is origin k + 1's test cutoff: its customers' features are built once (at a million
    customers each cutoff's took ~15 s, twice over per family)."""
    import collections

    import features.customer
    import ml.families.clv

    built: collections.Counter = collections.Counter()
    original = features.customer.features_at

    def counted(frames, cutoff, lookback_days=None):
        built[cutoff] += 1
        return original(frames, cutoff, lookback_days)

    monkeypatch.setattr(features.customer, "features_at", counted)
    monkeypatch.setattr(ml.families.clv, "features_at", counted)
    data = family.training_data(frames, RUN_DATE, PARAMS)
    assert data.earlier  # an earlier origin shares a cutoff with the next
    assert set(built) <= set(family.training_cutoffs(frames, RUN_DATE, PARAMS))
    # the origins' fit and test cutoffs, one shared between neighbours, and CLV's run date
    assert len(built) == len(data.earlier) + 2 + isinstance(data, clv.ClvData)
    assert set(built.values()) == {1}, built
