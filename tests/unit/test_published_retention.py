"""Retention of published run dates: 0 keeps everything without touching PostgreSQL; the range arithmetic
that decides which partition holds a date (the database part: tests/e2e/test_storage.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from revopt.platform import retention
from revopt.platform.config import load_settings
from revopt.platform.partitions import Partition, partition_name, staging_name

RUN_DATE = dt.date(2025, 3, 31)


def test_zero_keeps_every_run_date_without_connecting(tmp_path, monkeypatch):
    settings = load_settings({"REVOPT_HOME": str(tmp_path)})
    monkeypatch.setattr("revopt.platform.stack.connect_postgres", lambda *a, **k: pytest.fail("connected"))
    assert retention.drop_old_published_partitions(settings, RUN_DATE, 0) == {
        "kept": "every run date (published_retention_days = 0)"}
    nightly = retention.nightly_retention(settings, RUN_DATE, 30, 0)
    assert nightly["published"]["kept"] and nightly["removed"] == 0
    with pytest.raises(ValueError, match="at least 0"):
        retention.drop_old_published_partitions(settings, RUN_DATE, -1)


def test_a_partition_holds_the_run_dates_of_its_range_and_names_follow_the_scheme():
    day = Partition("scores_partitions.customer_scores__p20250331", RUN_DATE, RUN_DATE + dt.timedelta(days=1))
    legacy = Partition("scores_partitions.customer_scores__legacy", None, dt.date(2025, 3, 1))
    assert day.holds(RUN_DATE) and not day.holds(RUN_DATE + dt.timedelta(days=1))
    assert not day.holds(RUN_DATE - dt.timedelta(days=1))
    assert legacy.holds(dt.date(1990, 1, 1)) and not legacy.holds(dt.date(2025, 3, 1))
    assert partition_name("scores.customer_scores", RUN_DATE) == day.name
    assert staging_name("scores.send_time_recommendations", RUN_DATE) == \
        "scores_partitions.send_time_recommendations__stage20250331"
