"""Minimisation in the training runner (:mod:`ml.registry`): the input example, the reference features and
the tables it logs carry no raw customer id (tests/e2e/test_minimisation.py searches a real run's artifacts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml import registry

FAR = 5_000_000_000


def test_the_example_renumbers_its_customers_the_same_in_every_row():
    # a long input (send time, recommendations): customer rows, history rows of the same customers, catalogue rows
    example = pd.DataFrame({
        "source": ["customers", "customers", "purchases", "purchases", "purchases", "catalogue"],
        "customer_id": np.array([FAR + 9, FAR + 3, FAR + 3, FAR + 9, FAR + 3, 0], dtype="int64"),
        "product_id": [0, 0, 4, 5, 6, 7],
    }, index=[10, 11, 12, 13, 14, 15])
    renumbered = registry.without_customer_ids(example)
    assert renumbered["customer_id"].tolist() == [1, 2, 2, 1, 2, 0]  # first appearance order, 0 (none) stays
    assert renumbered["customer_id"].dtype == np.int64  # the signature keeps its type
    pd.testing.assert_frame_equal(renumbered.drop(columns="customer_id"), example.drop(columns="customer_id"))
    assert example["customer_id"].iloc[0] == FAR + 9  # the family's frame is not changed


def test_missing_ids_stay_missing():
    example = pd.DataFrame({"customer_id": [FAR + 1.0, np.nan, FAR + 2.0, FAR + 1.0]})
    renumbered = registry.without_customer_ids(example)["customer_id"].to_numpy()
    np.testing.assert_array_equal(renumbered, [1.0, np.nan, 2.0, 1.0])


def test_an_index_of_customer_ids_is_dropped_and_an_example_without_ids_is_kept():
    features = pd.DataFrame({"recency_days": [3.0, 40.0]}, index=pd.Index([FAR + 1, FAR + 2], name="customer_id"))
    example = registry.without_customer_ids(features)
    assert example.index.tolist() == [0, 1] and list(example.columns) == ["recency_days"]
    spend = pd.DataFrame({"channel": ["display"], "spend": [10.0]})
    assert registry.without_customer_ids(spend) is spend


def test_reference_features_are_logged_without_customer_ids(monkeypatch):
    logged: list[pd.DataFrame] = []
    monkeypatch.setattr(registry.mlflow, "log_artifact",
                        lambda path, artifact_path=None: logged.append(pd.read_parquet(Path(path))))
    features = pd.DataFrame({"recency_days": [3.0, 40.0], "frequency": [2, 0]},
                            index=pd.Index([FAR + 1, FAR + 2], name="customer_id"))
    registry._log_reference_features(features)
    registry._log_reference_features(features.reset_index())  # a family handing them over as a column
    for frame in logged:
        assert list(frame.columns) == ["recency_days", "frequency"]
        assert frame.index.tolist() == [0, 1]


def test_a_table_holding_customer_ids_is_refused():
    with pytest.raises(ValueError, match="uplift: the table offers.json holds customer_id"):
        registry._require_no_customer_ids("uplift", "offers.json", pd.DataFrame({"customer_id": [FAR], "uplift": [0.1]}))
    registry._require_no_customer_ids("uplift", "deciles.json", pd.DataFrame({"decile": [1], "uplift": [0.1]}))
