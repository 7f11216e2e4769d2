"""The data-quality record against the real embedded PostgreSQL: every validation is summarised in
``scores.data_quality`` with its result and data docs, and row counts are checked against recent runs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from revopt.platform.postgres import read_frame
from revopt.platform.quality import raise_if_failed, validate_and_record
from revopt.platform.stack import connect_postgres
from revopt.platform.validation import DataValidationError

RUN_DATE = dt.date(2031, 3, 10)


def _day_totals(run_date: dt.date, n_days: int) -> pd.DataFrame:
    days = pd.date_range(end=pd.Timestamp(run_date) - pd.Timedelta(days=1), periods=n_days, freq="D")
    return pd.DataFrame({"day": days.astype("datetime64[ns]"), "lines": 5})


def _quality(settings) -> pd.DataFrame:
    with connect_postgres(settings) as conn:
        return read_frame(conn, "SELECT * FROM scores.data_quality WHERE dataset = 'day_totals' AND run_date > %s "
                                "ORDER BY run_date", (RUN_DATE - dt.timedelta(days=10),))


def test_a_row_count_far_below_recent_runs_fails_and_every_outcome_is_recorded(settings):
    for days_before in (3, 2, 1):
        earlier = RUN_DATE - dt.timedelta(days=days_before)
        raise_if_failed(validate_and_record(settings, earlier, {"day_totals": _day_totals(earlier, 100)}, lookback_days=100))

    # a comparable window, a quarter of the rows: nothing else about the frame is wrong
    with pytest.raises(DataValidationError) as failure:
        raise_if_failed(validate_and_record(settings, RUN_DATE, {"day_totals": _day_totals(RUN_DATE, 25)}, lookback_days=100))
    message = str(failure.value)
    assert "'day_totals'" in message and str(RUN_DATE) in message
    assert "expect_table_row_count_to_be_between" in message and "observed 25" in message

    quality = _quality(settings)
    assert quality["run_date"].tolist() == [RUN_DATE - dt.timedelta(days=d) for d in (3, 2, 1)] + [RUN_DATE]
    assert quality["success"].tolist() == [True, True, True, False]
    assert quality["row_count"].tolist() == [100, 100, 100, 25]
    latest = quality.iloc[-1]
    assert latest["failed"] == 1 and "expect_table_row_count_to_be_between" in latest["failures"]
    docs = Path(latest["docs_path"])
    assert docs.suffix == ".html" and "<html" in docs.read_text().lower()
    assert Path(latest["result_path"]).is_file()


def test_another_lookback_window_is_not_compared_and_a_revalidation_replaces_the_row(settings):
    # the same date re-validated with a shorter window: no recent runs with that window, so no rule
    raise_if_failed(validate_and_record(settings, RUN_DATE, {"day_totals": _day_totals(RUN_DATE, 25)}, lookback_days=25))
    latest = _quality(settings).iloc[-1]
    assert latest["run_date"] == RUN_DATE and bool(latest["success"]) and latest["lookback_days"] == 25
    assert (_quality(settings)["run_date"] == RUN_DATE).sum() == 1
