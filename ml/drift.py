"""Nightly data-drift check: current customer features and scores against the training reference.

The statistics come from Evidently (the metrics of ``DataDriftPreset``, per column group) rather than being
written here: its per-column test choice, thresholds and HTML report are what the team reads, and
re-implementing them would only give a second, slightly different answer. This module adds what
Evidently does not decide for us: which columns count towards the retraining decision, seeded
sampling, explicit column types, and columns Evidently cannot test.

What Evidently 0.7.x picks per column when ``DriftConfig.stattest`` is None (decided on the
*reference* sample size after NaN/inf are dropped, and on the number of distinct values in both
frames together):

===========================  =====================================  =================================
column type                  reference <= 1000 rows                 reference > 1000 rows
===========================  =====================================  =================================
numeric, > 5 distinct        Kolmogorov-Smirnov p-value, 0.05       Wasserstein distance / ref std, 0.1
numeric, 3-5 distinct        chi-square p-value, 0.05               Jensen-Shannon distance, 0.1
numeric, <= 2 distinct       two-proportion z-test p-value, 0.05    Jensen-Shannon distance, 0.1
categorical, > 2 distinct    chi-square p-value, 0.05               Jensen-Shannon distance, 0.1
categorical, <= 2 distinct   two-proportion z-test p-value, 0.05    Jensen-Shannon distance, 0.1
===========================  =====================================  =================================

A p-value drifts when it is *below* its threshold, a distance when it is *at or above* it; the
``drifted`` flag is Evidently's own decision, so callers never need to know the direction. A
nightly reference has far more than 1000 customers, so the check uses distances, which (unlike
p-values) do not flag negligible shifts just because the sample is large; ``max_rows`` should stay
well above 1000 (see docs/drift.md for the sampling noise).

Column types are passed to Evidently explicitly (numeric non-bool dtype -> numerical, anything else
-> categorical) because its inference types an integer column with <= 10 distinct values as
categorical, and does so separately for each frame, so a count feature such as ``orders_30d``
could be typed differently in reference and current.

Edge cases:

- NaN and +/-inf are dropped per column before testing (Evidently's behaviour); a change in the
  *share* of missing values is not detected here - that is the validation suite's job.
- A column that is entirely missing in a frame cannot be tested (Evidently raises). It is
  reported with ``stattest = "all_missing"``, ``drift_score`` and ``threshold`` NaN, and counted
  as drifted iff it is entirely missing in exactly one of the two frames; it is absent from the
  HTML report.
- A column constant in both frames is tested normally: Jensen-Shannon distance 0 (or z-test
  p-value 1 on small samples) when the constant is the same, so it is not drifted; a different
  constant is drifted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from evidently import Run

logger = logging.getLogger(__name__)

FEATURE = "feature"
SCORE = "score"
ALL_MISSING = "all_missing"
TABLE_COLUMNS: tuple[str, ...] = ("column", "kind", "stattest", "drift_score", "threshold", "drifted")


@dataclass(frozen=True)
class DriftConfig:
    """How the nightly drift check decides.

    ``drift_share_threshold``: retraining is requested when the share of drifted *feature* columns
    is strictly above this. ``stattest`` / ``column_threshold``: None keeps Evidently's per-column
    choice and its default threshold (see the module docstring); a value is applied to every
    checked column, so a ``column_threshold`` is only meaningful together with a ``stattest``
    (0.05 means a p-value for ``"ks"`` but a distance for ``"wasserstein"``). ``max_rows``: each
    frame is sampled without replacement to at most this many rows (None: no sampling), seeded by
    ``random_state``.
    """

    drift_share_threshold: float = 0.3
    stattest: str | None = None
    column_threshold: float | None = None
    max_rows: int | None = 100_000
    random_state: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.drift_share_threshold <= 1.0:
            raise ValueError(f"drift_share_threshold must be in [0, 1], got {self.drift_share_threshold}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be >= 1 or None, got {self.max_rows}")
        if self.column_threshold is not None and self.column_threshold < 0:
            raise ValueError(f"column_threshold must be >= 0, got {self.column_threshold}")


@dataclass(frozen=True)
class DriftResult:
    """Outcome of :func:`check_drift`.

    ``table`` has one row per checked column (features first, then scores, each in the order
    requested) with the columns of :data:`TABLE_COLUMNS`; ``drift_share`` covers feature columns
    only; ``html`` is Evidently's standalone report; ``n_reference`` / ``n_current`` are the row
    counts after sampling.
    """

    table: pd.DataFrame
    drift_share: float
    retrain: bool
    reason: str
    html: str
    n_reference: int
    n_current: int


def check_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    config: DriftConfig,
    *,
    score_columns: Sequence[str] = (),
) -> DriftResult:
    """Compare ``current`` with ``reference`` column by column and decide whether to retrain.

    ``columns`` are model features and decide ``drift_share`` and ``retrain``; ``score_columns``
    (model outputs present in both frames) are tested the same way but only reported. Inputs are
    not mutated. Raises ``ValueError`` for an empty frame, a column missing from either frame, a
    column requested twice, or a column numeric in one frame and not in the other.
    """
    started = time.perf_counter()
    features, scores = list(columns), list(score_columns)
    checked = features + scores
    _validate(reference, current, features, checked)

    rng = np.random.default_rng(config.random_state)
    reference_sample = _sample(reference, checked, config.max_rows, rng)
    current_sample = _sample(current, checked, config.max_rows, rng)
    logger.info(
        "drift check: %d feature and %d score columns, %d of %d reference rows, %d of %d current rows",
        len(features), len(scores), len(reference_sample), len(reference), len(current_sample), len(current),
    )

    missing = {column: _all_missing(reference_sample[column], current_sample[column]) for column in checked}
    testable = [column for column in checked if missing[column] is None]
    _check_types(reference_sample, current_sample, testable)
    run = _run_report(
        reference_sample,
        current_sample,
        [column for column in features if column in testable],
        [column for column in scores if column in testable],
        config,
    )
    rows = _tested_rows(run) | {column: _all_missing_row(where) for column, where in missing.items() if where}
    unreported = [column for column in checked if column not in rows]
    if unreported:
        raise RuntimeError(f"Evidently returned no drift test for column(s) {unreported}")
    rendered = time.perf_counter()
    html = run.get_html_str(as_iframe=False)
    logger.info("drift check: HTML rendered in %.1f s (%d characters)", time.perf_counter() - rendered, len(html))

    table = pd.DataFrame(
        [(column, FEATURE, *rows[column]) for column in features]
        + [(column, SCORE, *rows[column]) for column in scores],
        columns=list(TABLE_COLUMNS),
    ).astype({"drift_score": "float64", "threshold": "float64", "drifted": "bool"})
    drift_share = float(table.loc[table["kind"] == FEATURE, "drifted"].mean())
    retrain = drift_share > config.drift_share_threshold
    reason = _reason(table, drift_share, config.drift_share_threshold, retrain, missing)
    logger.info("drift check finished in %.1f s: %s", time.perf_counter() - started, reason)
    return DriftResult(
        table=table,
        drift_share=drift_share,
        retrain=retrain,
        reason=reason,
        html=html,
        n_reference=len(reference_sample),
        n_current=len(current_sample),
    )


def _validate(reference: pd.DataFrame, current: pd.DataFrame, features: list[str], checked: list[str]) -> None:
    if not features:
        raise ValueError("no feature columns to check")
    duplicated = sorted({column for column in checked if checked.count(column) > 1})
    if duplicated:
        raise ValueError(f"columns requested more than once (as feature and/or score): {duplicated}")
    frames = {"reference": reference, "current": current}
    absent = {
        column: names
        for column in checked
        if (names := [name for name, frame in frames.items() if column not in frame.columns])
    }
    if absent:
        listed = "; ".join(
            f"{column!r} missing from the {' and '.join(names)} frame" for column, names in absent.items()
        )
        raise ValueError(f"requested column(s) not found: {listed}")
    for name, frame in frames.items():
        if len(frame) == 0:
            raise ValueError(f"the {name} frame is empty")


def _sample(frame: pd.DataFrame, columns: list[str], max_rows: int | None, rng: np.random.Generator) -> pd.DataFrame:
    """At most ``max_rows`` rows of ``columns``, drawn without replacement and kept in frame order."""
    if max_rows is None or len(frame) <= max_rows:
        positions = np.arange(len(frame))
    else:
        positions = np.sort(rng.choice(len(frame), size=max_rows, replace=False))
    return frame.iloc[positions][columns].reset_index(drop=True)


def _all_missing(reference: pd.Series, current: pd.Series) -> str | None:
    """Which frames (``"both"``, ``"reference"``, ``"current"``) have no finite value, or None."""
    empty = [name for name, series in (("reference", reference), ("current", current)) if _has_no_values(series)]
    if not empty:
        return None
    return "both" if len(empty) == 2 else empty[0]


def _has_no_values(series: pd.Series) -> bool:
    if _is_numeric(series):
        return not np.isfinite(series.to_numpy(dtype="float64", na_value=np.nan)).any()
    return bool(series.isna().all())


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _check_types(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> None:
    mismatched = [column for column in columns if _is_numeric(reference[column]) != _is_numeric(current[column])]
    if mismatched:
        raise ValueError(
            f"column(s) {mismatched} are numeric in one frame but not in the other "
            f"(reference dtypes {[str(reference[c].dtype) for c in mismatched]}, "
            f"current dtypes {[str(current[c].dtype) for c in mismatched]})"
        )


def _run_report(
    reference: pd.DataFrame, current: pd.DataFrame, features: list[str], scores: list[str], config: DriftConfig
) -> Run:
    """Per column group (features, then scores, so the HTML shows the feature share on its own) the metrics
    ``DataDriftPreset`` is made of: the drifted-column count and one ``ValueDrift`` per column, each drawn with its
    distributions. Not the preset itself: its HTML table recomputes every column's drift twice more and draws every
    column's plots again (legacy ``DatasetDriftMetric`` and ``DataDriftTable``): 40 columns of 100k rows took 20.0 s
    as the preset and 14.5 s as its metrics (``benchmarks/drift_report.py``, docs/drift.md)."""
    # Evidently is heavy to import (seconds); keep it out of DAG parsing and module import.
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    testable = features + scores
    definition = DataDefinition(
        numerical_columns=[column for column in testable if _is_numeric(reference[column])],
        categorical_columns=[column for column in testable if not _is_numeric(reference[column])],
    )
    metrics: list[Any] = []
    for group in (features, scores):
        if group:
            metrics.append(DriftedColumnsCount(columns=group, drift_share=config.drift_share_threshold,
                                               method=config.stattest, threshold=config.column_threshold))
            metrics += [ValueDrift(column=column, method=config.stattest, threshold=config.column_threshold)
                        for column in group]
    started = time.perf_counter()
    # np.corrcoef inside Evidently divides by a zero std for constant columns; the NaN it
    # produces only feeds a correlation widget.
    with np.errstate(divide="ignore", invalid="ignore"):
        run = Report(metrics, include_tests=True).run(
            Dataset.from_pandas(current[testable], data_definition=definition),
            Dataset.from_pandas(reference[testable], data_definition=definition),
        )
    logger.info("drift check: Evidently tested %d columns in %.1f s", len(testable), time.perf_counter() - started)
    return run


def _tested_rows(run: Run) -> dict[str, tuple[str, float, float, bool]]:
    """(stattest, drift_score, threshold, drifted) per column from the ``ValueDrift`` tests.

    ``ValueDrift``'s result holds only the score; Evidently's drift decision is the status of the
    test it attaches when the report runs with ``include_tests=True``.
    """
    from evidently.legacy.tests.base_test import TestStatus

    names = _stattest_names()
    rows = {}
    for test in run.tests_results:
        params = test.metric_config.params
        if params.get("type") != "evidently:metric_v2:ValueDrift":
            continue
        method = str(params["method"])
        rows[params["column"]] = (
            names.get(method, method),
            float(run.metric_results[test.metric_config.metric_id].value),
            float(params["threshold"]),
            test.status == TestStatus.FAIL,
        )
    return rows


def _stattest_names() -> dict[str, str]:
    """Evidently's registered test name by display name (the metric config holds the latter)."""
    from evidently.legacy.calculations import stattests

    registered = [value for value in vars(stattests).values() if isinstance(value, stattests.StatTest)]
    return {test.display_name: test.name for test in registered} | {test.name: test.name for test in registered}


def _all_missing_row(where: str) -> tuple[str, float, float, bool]:
    return ALL_MISSING, float("nan"), float("nan"), where != "both"


def _reason(
    table: pd.DataFrame, drift_share: float, threshold: float, retrain: bool, missing: dict[str, str | None]
) -> str:
    features = table[table["kind"] == FEATURE]
    drifted = features.loc[features["drifted"], "column"].tolist()
    verdict = "above" if retrain else "not above"
    action = "retraining requested" if retrain else "no retraining"
    sentence = (
        f"Feature drift share {drift_share:.3f} ({len(drifted)} of {len(features)} columns) is {verdict} "
        f"the threshold {threshold:g}: {action}; drifted features: {', '.join(drifted) if drifted else 'none'}"
    )
    drifted_scores = table.loc[(table["kind"] == SCORE) & table["drifted"], "column"].tolist()
    if drifted_scores:
        sentence += f"; drifted scores (not counted): {', '.join(drifted_scores)}"
    entirely_missing = [f"{column} (in {where})" for column, where in missing.items() if where is not None]
    if entirely_missing:
        sentence += f"; entirely missing: {', '.join(entirely_missing)}"
    return sentence + "."
