from __future__ import annotations

import datetime as dt

import pytest

from revopt.platform.config import load_settings
from revopt.platform.retention import remove_old_run_folders, run_folder_date

RUN_DATE = dt.date(2025, 3, 31)


def _folders(settings, *names: str) -> None:
    for name in names:
        folder = settings.runs_dir / name
        (folder / "extract").mkdir(parents=True)
        (folder / "extract" / "orders.parquet").write_bytes(b"rows")


def test_only_date_named_folders_older_than_the_retention_period_are_removed(tmp_path):
    settings = load_settings({"REVOPT_HOME": str(tmp_path)})
    _folders(settings, "2025-02-28", "2025-03-01", "2025-03-02", "2025-03-31", "2025-04-01", "notes", "2025-3-01")
    (settings.runs_dir / "2020-01-01.txt").write_text("a file named like a date is not a run folder")

    result = remove_old_run_folders(settings, RUN_DATE, keep_days=30)

    left = sorted(path.name for path in settings.runs_dir.iterdir())
    # 2025-03-01 is exactly 30 days before the run date: kept; the day before it is not
    assert left == ["2020-01-01.txt", "2025-03-01", "2025-03-02", "2025-03-31", "2025-04-01", "2025-3-01", "notes"]
    assert result == {"removed": 1, "kept": 4, "cutoff": "2025-03-01", "oldest_kept": "2025-03-01"}


def test_a_second_run_removes_nothing_and_a_missing_runs_folder_is_fine(tmp_path):
    settings = load_settings({"REVOPT_HOME": str(tmp_path)})
    assert remove_old_run_folders(settings, RUN_DATE, keep_days=7)["removed"] == 0  # no runs/ yet
    _folders(settings, "2025-01-01", "2025-03-30")
    assert remove_old_run_folders(settings, RUN_DATE, keep_days=7)["removed"] == 1
    assert remove_old_run_folders(settings, RUN_DATE, keep_days=7) == {
        "removed": 0, "kept": 1, "cutoff": "2025-03-24", "oldest_kept": "2025-03-30"}


def test_keep_days_zero_keeps_only_the_run_date_and_later_and_negative_is_refused(tmp_path):
    settings = load_settings({"REVOPT_HOME": str(tmp_path)})
    _folders(settings, "2025-03-30", "2025-03-31")
    assert remove_old_run_folders(settings, RUN_DATE, keep_days=0)["removed"] == 1
    assert [path.name for path in settings.runs_dir.iterdir()] == ["2025-03-31"]
    with pytest.raises(ValueError):
        remove_old_run_folders(settings, RUN_DATE, keep_days=-1)


def test_run_folder_date_reads_only_iso_dates_of_folders(tmp_path):
    (tmp_path / "2025-01-02").mkdir()
    (tmp_path / "2025-13-02").mkdir()
    (tmp_path / "2025-01-03").write_text("")
    assert run_folder_date(tmp_path / "2025-01-02") == dt.date(2025, 1, 2)
    assert run_folder_date(tmp_path / "2025-13-02") is None
    assert run_folder_date(tmp_path / "2025-01-03") is None


def test_the_gc_default_is_the_run_params_default():
    from ml.params import RunParams
    from revopt.platform.retention import DEFAULT_KEEP_DAYS

    assert RunParams().run_folder_retention_days == DEFAULT_KEEP_DAYS
