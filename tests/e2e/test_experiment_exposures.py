"""The optional source shop.experiment_exposures through the real extract: only the exposures a run for
the date may know are read and pass their suite, a store without the table gets a typed empty frame,
duplicates and an anonymous unit are named, a drifted table is one clear error, and the mapping view
of docs/source_mapping.md (the ``sql exposures`` blocks), run as written over an app's event log, keeps
each unit's first serving."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re

import pandas as pd
import pytest

from revopt.platform.config import REPO_ROOT
from revopt.platform.extract import EXPOSURE_COLUMNS, extract_sources, read_extract
from revopt.platform.quality import validate_and_record
from revopt.platform.stack import connect_postgres
from revopt.platform.validation import DataValidationError
from revopt.sample_data.seed import load_sources

pytestmark = pytest.mark.e2e

RUN_DATE = dt.date(2039, 6, 1)  # far from the other modules' run dates (row-count history)
LOOKBACK_DAYS = 28
RUN_TS = pd.Timestamp(RUN_DATE, tz="UTC")
SINCE_TS = RUN_TS - pd.Timedelta(days=LOOKBACK_DAYS)


def _at(offset: str) -> pd.Timestamp:
    return RUN_TS + pd.Timedelta(offset)


# (experiment, unit, first exposed): the first before the window, the last two at and after midnight of
# the run date: none of the three is read
EXPOSURES = [("price_test", 7, SINCE_TS - pd.Timedelta("1s")), ("price_test", 8, SINCE_TS),
             ("price_test", 9, _at("-3d")), ("price_test", 10, _at("-1s")), ("email_hour", 7, _at("-10d")),
             ("email_hour", 8, RUN_TS), ("email_hour", 9, _at("2d"))]
KNOWN = [("email_hour", 7), ("price_test", 8), ("price_test", 9), ("price_test", 10)]


@pytest.fixture(scope="module")
def store(settings):
    exposures = pd.DataFrame(EXPOSURES, columns=list(EXPOSURE_COLUMNS))
    load_sources(settings, {"experiment_exposures": exposures})
    return exposures


def _run(settings, statements: str) -> None:
    with connect_postgres(settings) as conn:
        conn.execute(statements)


@contextlib.contextmanager
def _altered(settings, change: str, undo: str):
    """The sources with ``change`` applied, ``undo`` run afterwards whatever happens."""
    _run(settings, change)
    try:
        yield
    finally:
        _run(settings, undo)


def _extract(settings) -> pd.DataFrame:
    paths = extract_sources(settings, RUN_DATE, LOOKBACK_DAYS, datasets=("experiment_exposures",))
    return read_extract(paths)["experiment_exposures"]


def _failures(settings, frame: pd.DataFrame) -> list[str]:
    (summary,) = validate_and_record(settings, RUN_DATE, {"experiment_exposures": frame}, LOOKBACK_DAYS)
    return list(summary.failures)


def test_the_exposures_are_read_as_of_the_run_date_and_pass_their_suite(settings, store):
    frame = _extract(settings)
    assert list(zip(frame["experiment_id"], frame["unit_id"])) == KNOWN
    assert frame.dtypes.astype(str).tolist() == ["object", "int64", "datetime64[ns, UTC]"]
    assert frame["first_exposed_at"].min() == SINCE_TS and frame["first_exposed_at"].max() == _at("-1s")
    assert _failures(settings, frame) == []


def test_a_store_without_the_table_gets_a_typed_empty_frame(settings, store):
    with _altered(settings, "ALTER TABLE shop.experiment_exposures RENAME TO exposures_elsewhere",
                  "ALTER TABLE shop.exposures_elsewhere RENAME TO experiment_exposures"):
        frame = _extract(settings)
    assert len(frame) == 0 and list(frame.columns) == list(EXPOSURE_COLUMNS)
    assert frame.dtypes.astype(str).tolist() == ["object", "int64", "datetime64[ns, UTC]"]
    assert _failures(settings, frame) == []


def test_an_anonymous_unit_is_named(settings, store):
    with _altered(settings, "UPDATE shop.experiment_exposures SET unit_id = 0 WHERE unit_id = 10",
                  "UPDATE shop.experiment_exposures SET unit_id = 10 WHERE unit_id = 0"):
        failures = _failures(settings, _extract(settings))
    assert len(failures) == 1 and "expect_column_values_to_be_between(column='unit_id')" in failures[0], failures


def test_a_drifted_table_is_one_clear_error(settings, store):
    with _altered(settings, "ALTER TABLE shop.experiment_exposures RENAME COLUMN first_exposed_at TO exposed_at",
                  "ALTER TABLE shop.experiment_exposures RENAME COLUMN exposed_at TO first_exposed_at"):
        with pytest.raises(DataValidationError, match=r"'experiment_exposures' \(shop.experiment_exposures\)"
                                                      r".*column 'first_exposed_at' is missing"):
            _extract(settings)


def _doc_blocks() -> list[str]:
    """The two ``sql exposures`` blocks of docs/source_mapping.md: the app's event log, then the view."""
    text = (REPO_ROOT / "docs" / "source_mapping.md").read_text()
    blocks = re.findall(r"```sql exposures\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2 and blocks[1].startswith("-- revopt:exposures")
    return blocks


def _servings() -> list[tuple[pd.Timestamp, str, dict]]:
    """Every time the app served a unit its variant: unit 21 three times, unit 22 twice (once after
    the run date), unit 23 only after it, plus an event that is not an exposure."""
    served = [(_at("-5d"), "price_test", 21), (_at("-7d"), "price_test", 21), (_at("-2d"), "price_test", 21),
              (_at("-1d"), "price_test", 22), (_at("1h"), "price_test", 22), (_at("3h"), "price_test", 23),
              (_at("-6d"), "email_hour", 21)]
    events = [(ts, "experiment_viewed", {"experiment": experiment, "unit": unit, "variant": "treatment"})
              for ts, experiment, unit in served]
    return [*events, (_at("-4d"), "page_view", {"experiment": "price_test", "unit": 24})]


def test_the_documented_view_keeps_each_units_first_serving(settings, store):
    log, view = _doc_blocks()
    rows = ", ".join(f"('{ts.isoformat()}', '{name}', '{json.dumps(props)}')" for ts, name, props in _servings())
    with _altered(settings, f"ALTER TABLE shop.experiment_exposures RENAME TO exposures_table; {log}; "
                            f"INSERT INTO applog.events VALUES {rows}; {view}",
                  "DROP VIEW IF EXISTS shop.experiment_exposures; DROP SCHEMA IF EXISTS applog CASCADE; "
                  "ALTER TABLE shop.exposures_table RENAME TO experiment_exposures"):
        frame = _extract(settings)
        assert list(zip(frame["experiment_id"], frame["unit_id"], frame["first_exposed_at"])) == [
            ("email_hour", 21, _at("-6d")), ("price_test", 21, _at("-7d")), ("price_test", 22, _at("-1d"))]
        assert _failures(settings, frame) == []

        # the same view without min(ts) ... GROUP BY: a unit once per serving, and the suite names it
        _run(settings, "CREATE OR REPLACE VIEW shop.experiment_exposures AS SELECT props ->> 'experiment' AS "
                       "experiment_id, (props ->> 'unit')::bigint AS unit_id, ts AS first_exposed_at "
                       "FROM applog.events WHERE name = 'experiment_viewed'")
        failures = _failures(settings, _extract(settings))
    assert len(failures) == 1 and "expect_compound_columns_to_be_unique" in failures[0], failures
