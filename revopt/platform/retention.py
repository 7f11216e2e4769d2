"""Retention: run folders (``<state>/runs/<YYYY-MM-DD>``) are deleted once they are older than a retention period.

A run folder holds the run's extracts, features, scored outputs, validation results and Airflow logs: personal
data kept only so a run can be re-published or debugged. Nothing reads an older run's folder (every step writes
and reads its own run date's), so the nightly run deletes the folders of run dates more than
``run_folder_retention_days`` before its own (``revopt gc`` does the same by hand; docs/privacy.md).
Only folders named as a date are touched: anything else a person put under ``runs/`` is left alone.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path

from revopt.platform.config import Settings

logger = logging.getLogger(__name__)

#: Days of run folders kept: the default of the run param ``run_folder_retention_days`` and of ``revopt gc``.
DEFAULT_KEEP_DAYS = 30


def run_folder_date(path: Path) -> dt.date | None:
    """The run date a folder is named after (``YYYY-MM-DD``), or None for any other name or a file."""
    if not path.is_dir() or len(path.name) != 10:
        return None
    try:
        return dt.date.fromisoformat(path.name)
    except ValueError:
        return None


def remove_old_run_folders(settings: Settings, run_date: dt.date, keep_days: int) -> dict[str, object]:
    """Delete the run folders of run dates before ``run_date - keep_days``. Returns how many were removed and
    kept (date-named folders only), and the oldest run date kept."""
    if keep_days < 0:
        raise ValueError(f"keep_days must be at least 0, got {keep_days}")
    cutoff = run_date - dt.timedelta(days=keep_days)
    removed, kept, oldest_kept = 0, 0, None
    if settings.runs_dir.is_dir():
        for path in sorted(settings.runs_dir.iterdir()):
            folder_date = run_folder_date(path)
            if folder_date is None:
                continue
            if folder_date < cutoff:
                shutil.rmtree(path)
                removed += 1
            else:
                kept += 1
                oldest_kept = folder_date if oldest_kept is None else min(oldest_kept, folder_date)
    logger.info("run folders before %s (%d days before %s): %d removed, %d kept", cutoff, keep_days, run_date,
                removed, kept)
    return {"removed": removed, "kept": kept, "cutoff": cutoff.isoformat(),
            "oldest_kept": oldest_kept.isoformat() if oldest_kept else None}


def drop_old_published_partitions(settings: Settings, run_date: dt.date, keep_days: int) -> dict[str, object]:
    """Remove the run dates before ``run_date - keep_days`` from every published table partitioned by run date
    (run param ``published_retention_days``; 0 keeps everything): old partitions are detached CONCURRENTLY and
    dropped, older rows of the legacy partition deleted (:func:`revopt.platform.partitions.drop_partitions_before`).
    Runs on its own autocommit connection, outside any publish transaction. Returns what was removed per table."""
    if keep_days < 0:
        raise ValueError(f"keep_days must be at least 0, got {keep_days}")
    if keep_days == 0:
        return {"kept": "every run date (published_retention_days = 0)"}
    from revopt.platform.partitions import drop_partitions_before, partitioned_tables
    from revopt.platform.stack import connect_postgres

    cutoff = run_date - dt.timedelta(days=keep_days)
    with connect_postgres(settings, autocommit=True) as conn:
        removed = {table: drop_partitions_before(conn, table, cutoff) for table in partitioned_tables(conn)}
    return {"cutoff": cutoff.isoformat(), "tables": removed}


def nightly_retention(settings: Settings, run_date: dt.date, run_folder_days: int,
                      published_days: int) -> dict[str, object]:
    """The nightly run's retention: run folders (:func:`remove_old_run_folders`), then the old run dates of the
    partitioned published tables (:func:`drop_old_published_partitions`)."""
    removed = remove_old_run_folders(settings, run_date, run_folder_days)
    removed["published"] = drop_old_published_partitions(settings, run_date, published_days)
    return removed
