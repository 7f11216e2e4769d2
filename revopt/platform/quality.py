"""The data-quality record: every validation's outcome in ``scores.data_quality``, its result
(JSON) and data docs (HTML) in the run folder, and the row-count history that sanity-checks
tonight's extracts against recent runs.

A dataset whose row count leaves ``[ROW_COUNT_LOW, ROW_COUNT_HIGH]`` x the median of its recent
successful runs (up to :data:`RECENT_RUNS` run dates in the :data:`RECENT_DAYS` days before the
run date, same lookback window) fails validation like any other expectation: a half-empty
extract is as wrong as a NULL key. With no recent history the rule is skipped, and so it is for the
datasets of :data:`ROW_COUNT_EXEMPT`.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import gc
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from revopt.platform.config import Settings
from revopt.platform.postgres import upsert_rows
from revopt.platform.schema import scores_connection
from revopt.platform.validation import DataValidationError, ValidationSummary, validate_frame

logger = logging.getLogger(__name__)

ROW_COUNT_LOW = 0.5
ROW_COUNT_HIGH = 2.0
#: datasets whose size legitimately jumps from one run to the next: an experiment's launch multiplies
#: the exposures overnight, an offer campaign adds all its offers on one day (their suites still check
#: every row)
ROW_COUNT_EXEMPT = frozenset({"experiment_exposures", "offers"})
RECENT_RUNS = 7
RECENT_DAYS = 30

_RECENT_COUNTS_SQL = """
SELECT dataset, percentile_cont(0.5) WITHIN GROUP (ORDER BY row_count) AS median_rows, count(*) AS runs
FROM (
    SELECT dataset, row_count,
           row_number() OVER (PARTITION BY dataset ORDER BY run_date DESC) AS recency
    FROM scores.data_quality
    WHERE success AND run_date < %(run_date)s AND run_date >= %(since)s
      AND lookback_days IS NOT DISTINCT FROM %(lookback_days)s AND dataset = ANY(%(datasets)s)
) AS recent
WHERE recency <= %(runs)s
GROUP BY dataset
"""


def recent_row_counts(settings: Settings, run_date: dt.date, datasets: Iterable[str], lookback_days: int | None) -> dict[str, float]:
    """Median row count per dataset over its recent successful validations (see the module doc)."""
    params = {"run_date": run_date, "since": run_date - dt.timedelta(days=RECENT_DAYS), "lookback_days": lookback_days,
              "datasets": list(datasets), "runs": RECENT_RUNS}
    with scores_connection(settings) as conn:
        rows = conn.execute(_RECENT_COUNTS_SQL, params).fetchall()
    return {dataset: float(median) for dataset, median, _ in rows}


def row_count_expectation(median_rows: float | None) -> list[dict[str, Any]]:
    """The row-count sanity rule for a dataset with this recent median (none without history)."""
    if not median_rows:
        return []
    low, high = int(median_rows * ROW_COUNT_LOW), int(median_rows * ROW_COUNT_HIGH) + 1
    return [{
        "type": "expect_table_row_count_to_be_between",
        "kwargs": {"min_value": low, "max_value": high},
        "meta": {"notes": f"Within {ROW_COUNT_LOW}x-{ROW_COUNT_HIGH}x the median of recent runs ({median_rows:,.0f} rows)."},
    }]


def validate_and_record(settings: Settings, run_date: dt.date, frames: Mapping[str, pd.DataFrame],
                        lookback_days: int | None) -> list[ValidationSummary]:
    """Validate every frame against its suite plus the row-count rule, store each result (JSON)
    and data docs page (HTML) under the run folder and record one row per dataset in
    ``scores.data_quality`` — failures included, before anyone raises."""
    recent = recent_row_counts(settings, run_date, frames, lookback_days)
    out_dir = settings.run_dir(run_date) / "validation"
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries, rows = [], []
    for dataset in frames:
        median = None if dataset in ROW_COUNT_EXEMPT else recent.get(dataset)
        # frames may read each dataset on access (revopt.platform.extract.ExtractFiles): one in memory at a time
        summary = validate_frame(dataset, frames[dataset], run_date, row_count_expectation(median))
        result_path, docs_path = out_dir / f"{dataset}.json", out_dir / f"{dataset}.html"
        result_path.write_text(json.dumps(summary.result_json, indent=1, default=str))
        docs_path.write_text(summary.html)
        logger.info("validation of %s for %s: %d/%d expectations passed (%d rows) -> %s", dataset, run_date,
                    summary.evaluated - summary.failed, summary.evaluated, summary.rows, docs_path)
        summaries.append(summary)
        rows.append(_quality_row(summary, lookback_days, result_path, docs_path))
        if summary.rows >= RELEASE_AFTER_ROWS:  # the next dataset starts from what was held before this one
            release_memory()
    _record(settings, rows)
    return summaries


#: after validating a dataset of this many rows, :func:`release_memory` (a full collection costs ~0.2-0.5 s in a task
#: process; small datasets leave nothing worth it)
RELEASE_AFTER_ROWS = 1_000_000


def release_memory() -> None:
    """Give what the last dataset used back to the system: collect its objects, then return the freed heap (glibc's
    ``malloc_trim``; nothing elsewhere) and Arrow's cached buffers (the Parquet reads). Without it a task validating
    a million customers' datasets one after the other kept each one's memory as the floor of the next: 8.6 GB at
    its peak where the largest dataset alone takes 6.5 GB (docs/scale.md)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    pa.default_memory_pool().release_unused()


def raise_if_failed(summaries: Iterable[ValidationSummary]) -> None:
    """The gate: one :class:`DataValidationError` naming every failed dataset, expectation and column."""
    failed = [summary for summary in summaries if not summary.success]
    if failed:
        raise DataValidationError("\n".join(summary.describe() for summary in failed))


def _quality_row(summary: ValidationSummary, lookback_days: int | None, result_path: Path, docs_path: Path) -> dict[str, Any]:
    return {
        "run_date": summary.run_date, "dataset": summary.dataset, "success": summary.success,
        "row_count": summary.rows, "lookback_days": lookback_days, "evaluated": summary.evaluated,
        "failed": summary.failed, "failures": "\n".join(summary.failures),
        "result_path": str(result_path), "docs_path": str(docs_path),
    }


def _record(settings: Settings, rows: list[dict[str, Any]]) -> None:
    validated_at = dt.datetime.now(dt.timezone.utc)
    with scores_connection(settings) as conn:
        upsert_rows(conn, "scores.data_quality", [{**row, "validated_at": validated_at} for row in rows],
                    key=("run_date", "dataset"))
