"""Validate pandas DataFrames against the Great Expectations suites in ``expectations/``.

Each dataset the nightly pipeline produces has a suite ``expectations/<dataset>.json`` in Great
Expectations 1.x's own ExpectationSuite JSON format (``name``, ``expectations: [{"type",
"kwargs", "meta"}]``). :func:`validate_frame` runs it against a frame in a throw-away, in-memory
GX context and returns a :class:`ValidationSummary`; the pipeline's gate,
:func:`revopt.platform.quality.raise_if_failed`, raises :class:`DataValidationError` naming every
failed dataset, expectation and column.

Run-date templating
-------------------
Freshness rules need the run date, which a static suite cannot know. Any kwarg whose value is
exactly the string ``"$run_date"`` is a placeholder for it::

    {"type": "expect_column_max_to_be_between",
     "kwargs": {"column": "order_ts", "max_value": "$run_date", "strict_max": true}}

:func:`load_suite` turns the placeholder into GX's own suite parameter
``{"$PARAMETER": "run_date"}`` (so the loaded suite is a valid GX suite; a suite may also use
that form directly). :func:`validate_frame` then binds it, per expectation, to midnight at the
start of the run date as a :class:`pandas.Timestamp`: time-zone aware (midnight UTC, shown in
the column's zone) when the expectation's ``column`` has a tz-aware dtype in the frame, naive
otherwise, so the comparison works for both ``datetime64[ns]`` and ``datetime64[ns, UTC]``
columns. ``"max_value": "$run_date", "strict_max": true`` therefore means "nothing on or after
the run date": an extract for run date 2024-06-01 holds data up to 2024-05-31 23:59:59.999.

``"$run_date-<N>d"`` is the run date minus N days, for freshness rules: ``"min_value":
"$run_date-3d"`` on a column's max means "the newest row is at most three days old".

Great Expectations is imported lazily: it takes seconds to import, and modules that only need
:class:`DataValidationError` (DAG files, the CLI) should not pay for it.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from revopt.platform.config import REPO_ROOT

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )

logger = logging.getLogger(__name__)

EXPECTATIONS_DIR_ENV = "REVOPT_EXPECTATIONS_DIR"
RUN_DATE_PLACEHOLDER = "$run_date"
RUN_DATE_PARAMETER = "run_date"

_RUN_DATE_SUITE_PARAMETER = {"$PARAMETER": RUN_DATE_PARAMETER}
_RUN_DATE_TEMPLATE = re.compile(r"^\$run_date(?:-(\d+)d)?$")
_RUN_DATE_PARAMETER_NAME = re.compile(r"^run_date(?:_minus_(\d+)d)?$")
# BASIC gives unexpected counts and up to 20 unexpected values without the per-value tallies
# of SUMMARY or the full index lists of COMPLETE, which cost real time on a million rows.
_RESULT_FORMAT = "BASIC"
_EXAMPLE_VALUES = 5
_KWARGS_NOT_SHOWN = frozenset({"column", "column_list", "column_set", "exact_match", "batch_id"})


class DataValidationError(Exception):
    """A frame failed its expectation suite; the message lists every failed expectation."""


@dataclass(frozen=True)
class ValidationSummary:
    """The outcome of validating one dataset for one run date."""

    dataset: str
    run_date: datetime.date
    success: bool
    evaluated: int
    failed: int
    failures: tuple[str, ...]
    #: The GX validation result as JSON-serialisable data, for callers that store it.
    result_json: dict
    #: Rows in the validated frame.
    rows: int = 0
    #: The validation result rendered as a Great Expectations data-docs HTML page.
    html: str = ""

    def describe(self) -> str:
        """A human-readable account naming the dataset, the run date and every failure."""
        if self.success:
            return (
                f"Dataset {self.dataset!r} passed validation for run date "
                f"{self.run_date.isoformat()} ({self.evaluated} expectations)."
            )
        lines = [
            f"Dataset {self.dataset!r} failed validation for run date "
            f"{self.run_date.isoformat()}: {self.failed} of {self.evaluated} expectations failed."
        ]
        lines.extend(f"  - {failure}" for failure in self.failures)
        return "\n".join(lines)


def suite_path(dataset: str) -> Path:
    """The suite file for ``dataset``: ``<expectations dir>/<dataset>.json``.

    The directory is ``expectations/`` at the repository root, or ``$REVOPT_EXPECTATIONS_DIR``.
    """
    override = os.environ.get(EXPECTATIONS_DIR_ENV)
    directory = Path(override) if override else REPO_ROOT / "expectations"
    return directory / f"{dataset}.json"


def load_suite(dataset: str, extra_expectations: Sequence[dict[str, Any]] = ()) -> gx.ExpectationSuite:
    """Load the suite for ``dataset`` (plus ``extra_expectations``), with ``"$run_date"`` turned
    into a GX suite parameter.

    Raises:
        FileNotFoundError: there is no suite file for the dataset.
        ValueError: the file names another suite, or GX dropped one of its expectations.
    """
    import great_expectations as gx

    path = suite_path(dataset)
    if not path.is_file():
        raise FileNotFoundError(
            f"No expectation suite for dataset {dataset!r}: {path} does not exist"
        )
    suite_json = json.loads(path.read_text(encoding="utf-8"))
    if suite_json.get("name") != dataset:
        raise ValueError(f"Suite {path} is named {suite_json.get('name')!r}, expected {dataset!r}")
    expectations = [
        {**expectation, "kwargs": _parameterise_run_date(expectation.get("kwargs", {}))}
        for expectation in [*suite_json.get("expectations", []), *extra_expectations]
    ]
    suite = gx.ExpectationSuite(**{**suite_json, "expectations": expectations})
    # GX logs and skips an expectation it judges invalid instead of raising; a gate must not
    # silently lose a rule.
    if len(suite.expectations) != len(expectations):
        raise ValueError(
            f"Suite {path} has {len(expectations)} expectations but only "
            f"{len(suite.expectations)} are valid; see the Great Expectations log"
        )
    return suite


def validate_frame(dataset: str, frame: pd.DataFrame, run_date: datetime.date,
                   extra_expectations: Sequence[dict[str, Any]] = ()) -> ValidationSummary:
    """Validate ``frame`` against the suite for ``dataset`` as of ``run_date``.

    ``extra_expectations`` (``{"type", "kwargs", "meta"}`` dicts) are appended to the suite for
    this call: rules that depend on history, such as the row count of recent runs.
    Never raises because an expectation failed (the summary says ``success=False``); raises
    only when the suite cannot be loaded or the arguments are of the wrong type. The frame is
    not modified.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, not {type(frame).__name__}")
    if isinstance(run_date, datetime.datetime) or not isinstance(run_date, datetime.date):
        raise TypeError(f"run_date must be a datetime.date, not {type(run_date).__name__}")

    suite = _bind_run_date(load_suite(dataset, extra_expectations), frame, run_date)
    result = _run_suite(dataset, suite, frame)
    failed_results = sorted(
        (r for r in result.results if not r.success), key=_position_in(suite)
    )
    failures = tuple(_describe_failure(r) for r in failed_results)
    statistics = result.statistics
    summary = ValidationSummary(
        dataset=dataset,
        run_date=run_date,
        success=bool(result.success),
        evaluated=int(statistics["evaluated_expectations"]),
        failed=int(statistics["unsuccessful_expectations"]),
        failures=failures,
        result_json=result.to_json_dict(),
        rows=len(frame),
        html=_render_html(result),
    )
    if summary.success:
        logger.info(
            "Dataset %s passed %d expectations for run date %s",
            dataset, summary.evaluated, run_date.isoformat(),
        )
    else:
        logger.warning("%s", summary.describe())
    return summary


def _parameterise_run_date(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``"$run_date"`` -> ``{"$PARAMETER": "run_date"}``, ``"$run_date-3d"`` -> ``run_date_minus_3d``."""
    parameterised = {}
    for name, value in kwargs.items():
        match = _RUN_DATE_TEMPLATE.match(value) if isinstance(value, str) else None
        if match:
            value = {"$PARAMETER": RUN_DATE_PARAMETER + (f"_minus_{match.group(1)}d" if match.group(1) else "")}
        parameterised[name] = value
    return parameterised


def _render_html(result: ExpectationSuiteValidationResult) -> str:
    """The result as a stand-alone Great Expectations data-docs page."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer

    return _page_view().render(ValidationResultsPageRenderer().render(result))


@functools.cache
def _page_view() -> Any:
    """One data-docs page view per process: its Jinja environment caches the compiled templates. A new view per
    page compiled the same ~17 templates again for every dataset (3.3 s of a 15-dataset validation's 8.4)."""
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView()


def _bind_run_date(
    suite: gx.ExpectationSuite, frame: pd.DataFrame, run_date: datetime.date
) -> gx.ExpectationSuite:
    """A copy of ``suite`` with every run-date parameter replaced by a concrete Timestamp.

    GX can substitute suite parameters itself, but only with one value per name, and a naive
    Timestamp cannot be compared with a tz-aware column (nor the reverse), so the value is
    chosen per expectation from the dtype of its column.
    """
    import great_expectations as gx

    suite_json = suite.to_json_dict()
    for expectation in suite_json["expectations"]:
        kwargs = expectation["kwargs"]
        for name, value in kwargs.items():
            parameter = value.get("$PARAMETER") if isinstance(value, dict) and len(value) == 1 else None
            match = _RUN_DATE_PARAMETER_NAME.match(parameter) if isinstance(parameter, str) else None
            if match:
                days_before = int(match.group(1) or 0)
                kwargs[name] = _run_date_timestamp(frame, kwargs.get("column"), run_date - datetime.timedelta(days=days_before))
    return gx.ExpectationSuite(**suite_json)


def _run_date_timestamp(
    frame: pd.DataFrame, column: str | None, run_date: datetime.date
) -> pd.Timestamp:
    midnight = pd.Timestamp(run_date)
    if column is None or column not in frame.columns:
        return midnight
    dtype = frame[column].dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return midnight.tz_localize("UTC").tz_convert(dtype.tz)
    return midnight


def _run_suite(
    dataset: str, suite: gx.ExpectationSuite, frame: pd.DataFrame
) -> ExpectationSuiteValidationResult:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    _skip_batch_fingerprints()

    # A fresh in-memory context per call: nothing is written to disk, nothing is shared
    # between calls or threads, and analytics and progress bars are off (no network here,
    # and task logs should not fill with tqdm output).
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        ),
    )
    batch_definition = (
        context.data_sources.add_pandas(name="revopt")
        .add_dataframe_asset(name=dataset)
        .add_batch_definition_whole_dataframe(name="whole_frame")
    )
    # A shallow copy shares the data but keeps the caller's frame object out of GX's hands.
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame.copy(deep=False)})
    try:
        return batch.validate(suite, result_format=_RESULT_FORMAT)
    finally:
        # GX keeps the last context as its project, and the context the batch and its frame: let go of them now,
        # or the next (maybe larger) dataset is read while this one is still held
        context.data_sources.delete(name="revopt")


def _skip_batch_fingerprints() -> None:
    """Stop GX fingerprinting each pandas batch. It hashes every row of a batch under ``HASH_THRESHOLD`` bytes (1 GB),
    twice per validation, for a batch marker (``pandas_data_fingerprint``) that nothing in revopt reads: at a million
    customers 9.8 of the 25.7 s that validating ``product_views`` took (docs/scale.md, "Session 21"). GX has no
    setting for it; the threshold is a module constant of the pinned version, which
    tests/unit/test_validation.py checks is still there and still what decides."""
    from great_expectations.execution_engine import pandas_execution_engine

    pandas_execution_engine.HASH_THRESHOLD = 0


def _position_in(suite: gx.ExpectationSuite) -> Callable[[ExpectationValidationResult], int]:
    """A sort key putting results in the suite's order (GX returns them in its own order)."""
    positions = {
        _expectation_key(config.type, config.kwargs): position
        for position, config in enumerate(suite.expectation_configurations)
    }

    def position(result: ExpectationValidationResult) -> int:
        config = result.expectation_config
        return positions.get(_expectation_key(config.type, config.kwargs), len(positions))

    return position


def _expectation_key(kind: str, kwargs: dict[str, Any]) -> str:
    shown = {name: value for name, value in kwargs.items() if name != "batch_id"}
    return kind + json.dumps(shown, sort_keys=True, default=str)


def _describe_failure(result: ExpectationValidationResult) -> str:
    """One line naming the expectation, its column(s), what was expected and what was seen."""
    config = result.expectation_config
    kwargs = dict(config.kwargs)
    subject = config.type
    if "column" in kwargs:
        subject += f"(column={kwargs['column']!r})"
    elif "column_list" in kwargs:
        subject += f"(column_list={list(kwargs['column_list'])!r})"

    expected = ", ".join(
        f"{name}={_short(value)}" for name, value in kwargs.items() if name not in _KWARGS_NOT_SHOWN
    )
    details = _exception_message(result) or _observed(result.result or {})
    parts = [subject]
    if expected:
        parts.append(f"expected {expected}")
    if details:
        parts.append(details)
    return ": ".join(parts)


def _observed(outcome: dict[str, Any]) -> str:
    mismatched = (outcome.get("details") or {}).get("mismatched")
    if mismatched:
        return "; ".join(f"{kind} columns {sorted(cols)!r}" for kind, cols in mismatched.items())
    if "unexpected_count" in outcome:
        text = f"{outcome['unexpected_count']} unexpected of {outcome.get('element_count')} rows"
        if outcome.get("unexpected_percent") is not None:
            text += f" ({outcome['unexpected_percent']:.3g}%)"
        examples = _distinct(outcome.get("partial_unexpected_list") or [])[:_EXAMPLE_VALUES]
        return f"{text}, e.g. {_short(examples)}" if examples else text
    if "observed_value" in outcome:
        return f"observed {_short(outcome['observed_value'])}"
    return ""


def _exception_message(result: ExpectationValidationResult) -> str:
    """The error GX caught while evaluating the expectation, if any (e.g. a missing column)."""
    info = result.exception_info or {}
    # GX reports either one {"raised_exception", "exception_message", ...} dict or one such
    # dict per metric that failed to compute, keyed by the metric's id.
    reports = [info] if "raised_exception" in info else list(info.values())
    messages = [
        str(report["exception_message"]).strip().splitlines()[0]
        for report in reports
        if isinstance(report, dict) and str(report.get("exception_message") or "").strip()
    ]
    return f"raised {'; '.join(dict.fromkeys(messages))}" if messages else ""


def _distinct(values: list[Any]) -> list[Any]:
    """Values in first-seen order without repeats (compared by repr: some are dicts)."""
    distinct: dict[str, Any] = {}
    for value in values:
        distinct.setdefault(repr(value), value)
    return list(distinct.values())


def _short(value: Any, limit: int = 160) -> str:
    text = str(value) if isinstance(value, pd.Timestamp) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
