"""Unit tests for the optional source shop.experiment_exposures: its contract, the typing of its
extract (rows and the empty frame of a store without the table) and its suite (pandas + GX only; the
real extract runs in tests/e2e/test_experiment_exposures.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from revopt.platform.contract import OPTIONAL_SOURCE_COLUMNS, SHOP_DDL, SHOP_OPTIONAL_TABLES, ddl_column_types
from revopt.platform.extract import DATASETS, EXPOSURE_COLUMNS, typed_exposures
from revopt.platform.validation import validate_frame

RUN_DATE = dt.date(2024, 6, 1)


def _read_rows() -> pd.DataFrame:
    """Rows as the PostgreSQL driver returns them: Python objects, tz-aware datetimes."""
    utc = dt.timezone.utc
    return pd.DataFrame({
        "experiment_id": ["price_test", "price_test", "email_hour"],
        "unit_id": [11, 12, 11],
        "first_exposed_at": [dt.datetime(2024, 5, 2, 9, 30, tzinfo=utc), dt.datetime(2024, 5, 31, 23, 59, tzinfo=utc),
                             dt.datetime(2024, 5, 20, 6, 0, tzinfo=utc)],
    }, dtype=object)


def test_the_table_is_an_optional_source_with_its_contract_columns() -> None:
    assert "experiment_exposures" in SHOP_OPTIONAL_TABLES and "experiment_exposures" in DATASETS
    columns = ddl_column_types(SHOP_DDL)["experiment_exposures"]
    assert columns == [("experiment_id", "text"), ("unit_id", "bigint"), ("first_exposed_at", "timestamptz")]
    assert list(OPTIONAL_SOURCE_COLUMNS["experiment_exposures"]) == [name for name, _ in columns] == list(EXPOSURE_COLUMNS)


def test_rows_are_typed_for_the_analysis() -> None:
    rows = _read_rows()
    before = rows.copy()
    typed = typed_exposures(rows)
    pd.testing.assert_frame_equal(rows, before)  # the input is not changed
    assert typed.dtypes.astype(str).to_dict() == {"experiment_id": "object", "unit_id": "int64",
                                                  "first_exposed_at": "datetime64[ns, UTC]"}
    assert typed["first_exposed_at"].iloc[1] == pd.Timestamp("2024-05-31 23:59", tz="UTC")


def test_a_store_without_the_table_gets_a_typed_empty_frame_that_passes_its_suite(tmp_path: Path) -> None:
    empty = typed_exposures(pd.DataFrame(columns=list(EXPOSURE_COLUMNS)))
    assert len(empty) == 0 and list(empty.columns) == list(EXPOSURE_COLUMNS)
    path = tmp_path / "experiment_exposures.parquet"
    empty.to_parquet(path, index=False)  # the validation gate reads the extract back from Parquet
    summary = validate_frame("experiment_exposures", pd.read_parquet(path), RUN_DATE)
    assert summary.success, summary.failures


def test_good_rows_pass_the_suite() -> None:
    summary = validate_frame("experiment_exposures", typed_exposures(_read_rows()), RUN_DATE)
    assert summary.success and summary.evaluated == 9, summary.failures


@pytest.mark.parametrize(("change", "expectation", "column"), [
    (lambda f: pd.concat([f, f.iloc[[1]]], ignore_index=True), "expect_compound_columns_to_be_unique",
     "experiment_id"),
    (lambda f: f.assign(unit_id=np.array([11, 0, 11], dtype="int64")), "expect_column_values_to_be_between", "unit_id"),
    (lambda f: f.assign(first_exposed_at=f["first_exposed_at"].where(f.index != 1, pd.Timestamp(RUN_DATE, tz="UTC"))),
     "expect_column_values_to_be_between", "first_exposed_at"),
    (lambda f: f.assign(first_exposed_at=f["first_exposed_at"].dt.tz_localize(None)), "expect_column_type_to_be",
     "first_exposed_at"),
], ids=["duplicate unit", "unit 0", "exposed at the run date", "naive timestamps"])
def test_bad_rows_fail_the_suite_naming_the_column(change, expectation: str, column: str) -> None:
    summary = validate_frame("experiment_exposures", change(typed_exposures(_read_rows())), RUN_DATE)
    assert not summary.success
    assert len(summary.failures) == 1 and expectation in summary.failures[0] and column in summary.failures[0], summary.failures


def test_a_null_unit_id_is_kept_as_read_for_the_suite_to_name() -> None:
    rows = _read_rows()
    rows.loc[2, "unit_id"] = None
    summary = validate_frame("experiment_exposures", typed_exposures(rows), RUN_DATE)
    failed = " ".join(summary.failures)
    assert not summary.success and "expect_column_values_to_not_be_null(column='unit_id')" in failed
