"""What every family's outcome check shares: the published night it checks (:class:`Scored`), when it
is due (:func:`is_due`), the result (:class:`Outcome`), the rows of ``scores.model_performance``
(:func:`performance_rows`), the version's comparable test values (:func:`comparable_test_values`), the
retraining rule (:func:`performance_drops`) and the Evidently report (:func:`outcome_report`).

Each family's checks are one module of this package (``customers``, ``pricing``, ``send_time``,
``budget``); :data:`CHECKS` says, per family, what it checks (its published table, what ``n`` counts,
where the horizon comes from) and which metrics decide retraining.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.families import budget, churn, clv, pricing, propensity, send_time
from ml.params import RunParams

#: Published columns of a row of ``scores.model_performance``, in table order.
PERFORMANCE_COLUMNS = ("run_date_scored", "run_date_evaluated", "family", "model_name", "model_version", "metric",
                       "value", "n", "horizon_days", "test_value")

#: Where a family's horizon h (its published night R is about ``[R, R + h)``) comes from:
#: the scoring version's training run param ``horizon_days`` (the customer families) or
#: ``holdout_days`` (send time: the window its test metrics are measured on), tonight's run param
#: ``price_horizon_days`` (pricing: the recommendations cover it but do not record it, and the nightly
#: run sets it, not training), or the published rows' own ``horizon_days`` column (budget).
TRAINING_HORIZON, TRAINING_HOLDOUT, NIGHTLY_PRICE_HORIZON, PUBLISHED_HORIZON = (
    "training horizon_days", "training holdout_days", "nightly price_horizon_days", "published horizon_days")


@dataclass(frozen=True)
class Check:
    """One family's outcome check: the ``table`` it reads published nights from, what ``n`` counts
    (``unit``), where its horizon comes from (``horizon``, one of the constants above), the metrics
    that decide retraining (``primary``: every one with a test value is compared) and those of them
    where lower is better."""

    family: str
    table: str
    unit: str
    horizon: str
    primary: tuple[str, ...]
    lower_is_better: frozenset[str] = frozenset()


CHECKS = {check.family: check for check in (
    Check(propensity.FAMILY.name, "scores.customer_scores", "customers", TRAINING_HORIZON, ("roc_auc",)),
    Check(churn.FAMILY.name, "scores.customer_scores", "customers", TRAINING_HORIZON, ("roc_auc",)),
    Check(clv.FAMILY.name, "scores.customer_scores", "customers", TRAINING_HORIZON, ("spearman",)),
    Check(pricing.FAMILY.name, "scores.price_recommendations", "products", NIGHTLY_PRICE_HORIZON, ("deviance_skill",)),
    # email stores have lift_near_best, activity-only stores share_near_best: whichever has a test value
    Check(send_time.FAMILY.name, "scores.send_time_recommendations", "customers", TRAINING_HOLDOUT,
          ("lift_near_best", "share_near_best")),
    Check(budget.FAMILY.name, "scores.budget_allocations", "channels", PUBLISHED_HORIZON, ("ape",),
          frozenset({"ape"})),
)}


@dataclass(frozen=True)
class Scored:
    """One family's scores (or recommendations) of one published night, by one model version."""

    run_date: dt.date
    family: str
    model_name: str
    model_version: str


def is_due(run_date_scored: dt.date, horizon_days: int, run_date: dt.date) -> bool:
    """Whether the outcomes of a score published on ``run_date_scored`` are all known on ``run_date``:
    its window ``[run_date_scored, run_date_scored + horizon_days)`` has ended (``R + h <= D``)."""
    return run_date_scored + dt.timedelta(days=int(horizon_days)) <= run_date


def horizon_days(family: str, training_params: Mapping[str, str] | None, published: int | None,
                 params: RunParams) -> int | None:
    """The horizon of ``family``'s night scored by a version whose training run logged
    ``training_params`` (None: not in the registry), whose published rows say ``published`` (budget
    only), evaluated by a run with ``params`` (see :class:`Check`); None when unknown."""
    source = CHECKS[family].horizon
    if source == NIGHTLY_PRICE_HORIZON:
        return int(params.price_horizon_days)
    if source == PUBLISHED_HORIZON:
        return None if published is None or pd.isna(published) else int(published)
    value = (training_params or {}).get("horizon_days" if source == TRAINING_HORIZON else "holdout_days")
    return None if value is None else int(value)


@dataclass(frozen=True)
class Outcome:
    """One family's published night next to what happened: ``labelled`` has one row per customer,
    product or channel evaluated (its id, ``target``: what happened, ``prediction``: what was
    published, and whatever else the family keeps), ``metrics`` the realised metrics computed from it,
    ``report`` the Evidently report that fits it (``"classification"``, ``"regression"`` or None)."""

    scored: Scored
    horizon_days: int
    labelled: pd.DataFrame
    metrics: dict[str, float]
    report: str | None = None


def finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` without the ones that could not be computed (NaN, infinite)."""
    return {name: float(value) for name, value in metrics.items() if np.isfinite(value)}


def comparable_test_values(family: str, run_metrics: Mapping[str, float]) -> dict[str, float]:
    """The version's test-window value of each realised metric it has one for, from the metrics its
    training run logged: ``test_<metric>`` by default; for pricing also the no-price-response
    baseline's deviance (``baseline_poisson_deviance``) and the model's skill over it,
    ``1 - test_poisson_deviance / baseline_poisson_deviance``; for send time the open rate
    ``test_opens / test_sends``; for budget ``ape`` (the error of the horizon's revenue) is compared
    with ``test_weekly_mape`` (the test window's error of 7-day revenue; budget logs no error of a
    longer sum)."""
    values = {name.removeprefix("test_"): float(value) for name, value in run_metrics.items()
              if name.startswith("test_") and value is not None}
    if family == pricing.FAMILY.name:
        test, baseline = run_metrics.get("test_poisson_deviance"), run_metrics.get("baseline_poisson_deviance")
        if baseline is not None:
            values["baseline_poisson_deviance"] = float(baseline)
            if test is not None and baseline > 0:
                values["deviance_skill"] = 1.0 - float(test) / float(baseline)
    elif family == send_time.FAMILY.name:
        opens, sends = run_metrics.get("test_opens"), run_metrics.get("test_sends")
        if opens is not None and sends:
            values["open_rate"] = float(opens) / float(sends)
    elif family == budget.FAMILY.name and "weekly_mape" in values:
        values["ape"] = values["weekly_mape"]
    return values


def performance_rows(outcomes: list[Outcome], run_date: dt.date,
                     test_values: Mapping[tuple[str, str, str], float] | None = None) -> pd.DataFrame:
    """Rows of ``scores.model_performance`` (:data:`PERFORMANCE_COLUMNS`) for ``outcomes`` evaluated on
    ``run_date``; ``test_values[(family, model_version, metric)]`` is the version's test-window value
    of the metric (NaN where unknown)."""
    test_values = test_values or {}
    rows = [{"run_date_scored": o.scored.run_date, "run_date_evaluated": run_date, "family": o.scored.family,
             "model_name": o.scored.model_name, "model_version": o.scored.model_version, "metric": name,
             "value": float(value), "n": len(o.labelled), "horizon_days": o.horizon_days,
             "test_value": float(test_values.get((o.scored.family, o.scored.model_version, name), np.nan))}
            for o in outcomes for name, value in o.metrics.items()]
    return pd.DataFrame(rows, columns=list(PERFORMANCE_COLUMNS))


def primary_metric(family: str) -> str:
    """The (first) metric the retraining decision reads for ``family``."""
    return CHECKS[family].primary[0]


def performance_drops(rows: pd.DataFrame, threshold: float) -> list[str]:
    """One sentence per (run date scored, family, version) and primary metric (:class:`Check`) that
    realised more than ``threshold`` worse than its test value: below it, or above it for a metric
    where lower is better. Rows without a test value cannot drop."""
    drops = []
    for row in rows.itertuples(index=False):
        check = CHECKS[row.family]
        if row.metric not in check.primary or not np.isfinite(row.test_value):
            continue
        lower_is_better = row.metric in check.lower_is_better
        worse = row.value - row.test_value if lower_is_better else row.test_value - row.value
        if worse > threshold:
            drops.append(f"{row.family} ({row.model_name} v{row.model_version}) scored on {row.run_date_scored}: "
                         f"realised {row.metric} {row.value:.3f} over {row.horizon_days} days on {row.n} {check.unit}, "
                         f"{worse:.3f} {'above' if lower_is_better else 'below'} its test value {row.test_value:.3f}")
    return drops


def outcome_report(outcome: Outcome, max_rows: int = 100_000, random_state: int = 0) -> str | None:
    """Evidently's classification (``ClassificationPreset`` on the published probability) or
    regression (``RegressionPreset``) report of ``outcome``'s ``target`` and ``prediction`` as
    standalone HTML, on at most ``max_rows`` rows sampled with ``random_state``; None for an outcome
    without a report."""
    if outcome.report is None or outcome.labelled.empty:
        return None
    # Evidently is heavy to import (seconds): only when a report is built.
    from evidently import BinaryClassification, DataDefinition, Dataset, Regression, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    frame = outcome.labelled[["target", "prediction"]]
    if len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=random_state).sort_index()
    if outcome.report == "regression":
        definition = DataDefinition(regression=[Regression(target="target", prediction="prediction")],
                                    numerical_columns=["target", "prediction"])
        preset = RegressionPreset()
    else:
        frame = frame.assign(target=frame["target"].astype("int64"))
        definition = DataDefinition(
            classification=[BinaryClassification(target="target", prediction_probas="prediction", pos_label=1)],
            numerical_columns=["prediction"], categorical_columns=["target"])
        preset = ClassificationPreset()
    with np.errstate(divide="ignore", invalid="ignore"):
        run = Report([preset]).run(Dataset.from_pandas(frame.reset_index(drop=True), data_definition=definition), None)
    return run.get_html_str(as_iframe=False)


def as_date(value) -> dt.date:
    """A date from a date, datetime, Timestamp or ISO string."""
    return value if isinstance(value, dt.date) and not isinstance(value, dt.datetime) else pd.Timestamp(value).date()


def closer_to_recommended(realised: np.ndarray, current: np.ndarray, recommended: np.ndarray) -> np.ndarray:
    """Whether each realised value (a price, a daily spend) is strictly closer to the recommended
    value than to the current one: the recommendation was followed. Ties, and recommendations equal
    to the current value, count as not followed (the current figures then apply, and are the same)."""
    return np.abs(realised - recommended) < np.abs(realised - current)
