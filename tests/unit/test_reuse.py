"""A family's shortfall and training data share their work within one training run (ml.reuse): the same
arguments give the first result inside a scope, anything else computes again, and nothing outlives the scope."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pandas as pd
import pytest

from ml.params import RunParams
from ml.reuse import kept, reuse_scope

RUN_DATE = dt.date(2025, 2, 14)


@pytest.fixture
def counted():
    calls: list[tuple] = []

    @kept
    def split(frames, run_date, params):
        calls.append((run_date, params.seed))
        return pd.DataFrame({"rows": [len(frames["orders"])]})

    return split, calls


def test_the_same_arguments_in_a_scope_compute_once(counted) -> None:
    split, calls = counted
    frames, params = {"orders": pd.DataFrame({"x": [1, 2]})}, RunParams()
    with reuse_scope():
        first = split(frames, RUN_DATE, params)
        # equal run params and run date, another object each: the same arguments
        assert split(frames, dt.date(2025, 2, 14), dataclasses.replace(params)) is first
    assert len(calls) == 1


def test_other_arguments_or_changed_frames_compute_again(counted) -> None:
    split, calls = counted
    frames, params = {"orders": pd.DataFrame({"x": [1, 2]})}, RunParams()
    with reuse_scope():
        split(frames, RUN_DATE, params)
        split(frames, RUN_DATE + dt.timedelta(days=1), params)
        split(frames, RUN_DATE, dataclasses.replace(params, seed=params.seed + 1))
        split(dict(frames), RUN_DATE, params)  # an equal mapping, another object
        frames["orders"] = pd.DataFrame({"x": [1, 2, 3]})  # the same mapping, a frame replaced in it
        assert split(frames, RUN_DATE, params).loc[0, "rows"] == 3
        frames["customers"] = pd.DataFrame()  # a frame added
        split(frames, RUN_DATE, params)
        split(frames, RUN_DATE, params=params)  # keyword arguments: not matched, the function runs
    assert len(calls) == 7


def test_nothing_is_kept_outside_or_after_a_scope(counted) -> None:
    split, calls = counted
    frames, params = {"orders": pd.DataFrame({"x": [1]})}, RunParams()
    split(frames, RUN_DATE, params)
    split(frames, RUN_DATE, params)
    with reuse_scope():
        split(frames, RUN_DATE, params)
    with reuse_scope():
        split(frames, RUN_DATE, params)
    assert len(calls) == 4


class _Stop(Exception):
    pass


def test_training_a_family_asks_its_shortfall_and_training_data_in_one_scope(counted) -> None:
    """ml.registry.train_family: the shortfall's work is there for the training data."""
    from ml.registry import train_family

    split, calls = counted

    class Family:
        name = model_name = "reused"

        def shortfall(self, frames, run_date, params):
            split(frames, run_date, params)
            return None

        def training_data(self, frames, run_date, params):
            split(frames, run_date, params)
            raise _Stop  # before MLflow: what is measured has happened

    with pytest.raises(_Stop):
        train_family(Family(), None, RUN_DATE, {"orders": pd.DataFrame({"x": [1]})}, RunParams())
    assert len(calls) == 1


def test_recommendations_build_their_training_data_once_for_the_shortfall_and_training(monkeypatch) -> None:
    import ml.families.recommend as recommend
    from tests.unit.test_recommend import PARAMS, RUN_DATE as RECS_RUN_DATE, planted_store

    store, built = planted_store(), []
    original = recommend.interactions_from_extract
    monkeypatch.setattr(recommend, "interactions_from_extract", lambda *args: built.append(1) or original(*args))
    with reuse_scope():
        assert recommend.FAMILY.shortfall(store, RECS_RUN_DATE, PARAMS) is None
        recommend.FAMILY.training_data(store, RECS_RUN_DATE, PARAMS)
    assert len(built) == 1
    recommend.FAMILY.training_data(store, RECS_RUN_DATE, PARAMS)  # outside a scope: built again
    assert len(built) == 2


def test_the_budget_splits_its_orders_over_the_channels_once_in_a_scope(monkeypatch) -> None:
    import ml.attribution.nightly as nightly
    from ml.families import budget
    from tests.unit.test_attribution_nightly import RUN, _orders, _paths

    splits = []
    original = nightly.history_credits
    monkeypatch.setattr(nightly, "history_credits", lambda *args: splits.append(1) or original(*args))
    frames, params = {"orders": _orders(), "conversion_paths": _paths()}, RunParams()
    with reuse_scope():
        first = budget.target_orders(frames, RUN, params)
        assert budget.target_orders(frames, RUN, params) is first
    assert len(splits) == 1
    pd.testing.assert_frame_equal(budget.target_orders(frames, RUN, params), first)  # outside a scope: split again
    assert len(splits) == 2
