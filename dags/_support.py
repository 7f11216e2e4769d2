"""Tasks and settings shared by the revopt DAGs: wiring only. With the DAG files (and
``revopt.dag_runner``) the only code that imports Airflow; business code never does. Listed in
``.airflowignore``: Airflow puts the DAGs folder on ``sys.path`` and the DAG files import it as
``_support``, but it holds no DAG to parse.

Each task imports one function from ``ml`` / ``revopt`` inside its body, calls it with the run
date and the run's params, and returns a small reference for XCom.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, Param, RetryDecision, RetryPolicy, task
from airflow.sdk.exceptions import AirflowSkipException

#: Errors that heal by themselves, by the qualified name of a class they derive from: refused, reset
#: or dropped connections and timeouts; PostgreSQL's OperationalError (a server restarting or shutting
#: down, a lost connection, too many connections, a deadlock or serialization failure); a ClickHouse
#: server out of reach; HTTP calls (MLflow's) that could not connect, timed out or used up MLflow's own
#: retries of 429 / 5xx answers. Names, not classes, so parsing a DAG imports none of these libraries.
#: chDB runs inside the task's process: none of its errors heals by waiting.
TRANSIENT_ERRORS = frozenset({
    "builtins.ConnectionError", "builtins.TimeoutError",
    "psycopg.OperationalError",
    "clickhouse_connect.driver.exceptions.OperationalError",
    "requests.exceptions.ConnectionError", "requests.exceptions.Timeout", "requests.exceptions.RetryError",
})
#: MLflow's error codes for HTTP 429, 503 and 504 (MLflow also gives TEMPORARILY_UNAVAILABLE to its own
#: store's database errors, e.g. a busy SQLite file); a REST answer with any 5xx status counts too.
TRANSIENT_MLFLOW_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED", "TEMPORARILY_UNAVAILABLE",
                                    "DEADLINE_EXCEEDED"})


def transient_cause(exception: BaseException) -> BaseException | None:
    """The first transient error in ``exception``'s chain (itself, then what it was raised from or
    while handling), or None: libraries wrap a dropped connection in their own errors (MLflow raises
    an ``MlflowException`` while handling the ``requests`` one)."""
    seen: set[int] = set()
    current: BaseException | None = exception
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        names = {f"{cls.__module__}.{cls.__qualname__}" for cls in type(current).__mro__}
        if names & TRANSIENT_ERRORS or ("mlflow.exceptions.MlflowException" in names and _mlflow_transient(current, names)):
            return current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


def _mlflow_transient(error: BaseException, names: set[str]) -> bool:
    if getattr(error, "error_code", None) in TRANSIENT_MLFLOW_CODES:
        return True
    return "mlflow.exceptions.RestException" in names and error.get_http_status_code() >= 500


class TransientErrorRetryPolicy(RetryPolicy):
    """Retry a failed task only when the error is transient (:func:`transient_cause`); fail it at once
    on anything else (bad data, bad settings, a non-finite model, a programming error such as a
    TypeError), where a retry would only repeat the same answer minutes later.

    Not an ``ExceptionRetryPolicy``: its rules import string-named classes when the DAG file is
    parsed and look at the raised exception only, not at the error it wraps."""

    def evaluate(self, exception: BaseException, try_number: int, max_tries: int, context: Any = None) -> RetryDecision:
        transient = transient_cause(exception)
        if transient is not None:
            return RetryDecision.retry(reason=f"transient {type(transient).__name__}: {str(transient)[:200]}")
        return RetryDecision.fail(reason=f"{type(exception).__name__} is not a transient error (connection, timeout, "
                                         "server busy): retrying cannot fix it")

    def serialize(self) -> dict[str, Any]:
        return {"__type": type(self).__name__, "transient_errors": sorted(TRANSIENT_ERRORS),
                "transient_mlflow_codes": sorted(TRANSIENT_MLFLOW_CODES)}


RETRY_POLICY = TransientErrorRetryPolicy()

DEFAULT_ARGS = {
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "retry_policy": RETRY_POLICY,
}

LOOKBACK_PARAM = Param(730, type="integer", minimum=30, description="History read before the run date (days).")
PRICE_PARAMS = {
    "price_min_margin": Param(0.10, type="number", minimum=0, description="Recommended price >= cost x (1 + this)."),
    "price_max_change": Param(0.10, type="number", minimum=0, maximum=0.99, description="Largest price move per run, as a share of the current price."),
    "price_ending": Param(None, type=["null", "number"], minimum=0, maximum=0.99, description="Price ending, e.g. 0.99; empty for whole cents."),
    "price_horizon_days": Param(7, type="integer", minimum=1, description="Days the expected units / revenue / profit cover."),
    "price_exclude_categories": Param(["postage", "fee", "adjustment", "gift_voucher"], type="array", items={"type": "string"},
                                      description="Product categories never priced (services, fees, vouchers)."),
}
SEND_TIME_PARAMS = {
    "send_quiet_start": Param(23, type="integer", minimum=0, maximum=23, description="Quiet hours start (local hour): nothing is recommended from here ..."),
    "send_quiet_end": Param(6, type="integer", minimum=0, maximum=23, description="... up to (not including) this local hour. Equal start and end: no quiet hours."),
    "default_send_hour": Param(10, type="integer", minimum=0, maximum=23, description="The store's default send hour (local), the baseline the lift is measured against."),
}
BUDGET_PARAMS = {
    "budget_total": Param(None, type=["null", "number"], minimum=0, description="Total daily marketing budget to allocate; empty for the current total."),
    "budget_max_change": Param(0.3, type="number", minimum=0, description="Largest change per channel vs its current daily spend, as a share."),
    "budget_min_spend": Param({}, type="object", description='Minimum daily spend per channel, e.g. {"display": 100}.'),
    "budget_max_spend": Param({}, type="object", description='Maximum daily spend per channel, e.g. {"paid_search": 5000}.'),
    "budget_horizon_days": Param(28, type="integer", minimum=1, description="Days the expected revenue figures cover."),
}
DRIFT_SHARE_PARAM = Param(0.3, type="number", minimum=0, maximum=1, description="Request retraining when more than this share of the features drifted from the training reference.")
#: Updated by the nightly DAG when the drift check requests retraining; the training DAG runs on it
#: (as well as weekly).
DRIFT_DETECTED = Asset(name="revopt_drift_detected", uri="revopt://drift/detected")
ACTIVE_DAYS_PARAM = Param(365, type="integer", minimum=1, description="A customer is active (gets a churn score) with an order this recently (days).")


def skip_if_skipped(result, context=None):
    """A workflow's result, or the task ends as *skipped* (and so do the tasks after it) when the
    workflow skipped its family (``{"skipped": reason}``, e.g. budget for a store without spend).
    The reason is left in XCom (``revopt.dag_runner.SKIP_REASON_KEY``) for ``revopt run`` and the UI."""
    if isinstance(result, dict) and "skipped" in result:
        if context is not None:
            from revopt.dag_runner import SKIP_REASON_KEY

            context["ti"].xcom_push(key=SKIP_REASON_KEY, value=result["skipped"])
        raise AirflowSkipException(result["skipped"])
    return result


def _extract_days(purpose: str, params) -> int:
    """Days of history the ``purpose`` DAG's extract reads: ``lookback_days`` at night; training reads
    further back so features at its past cutoffs see as much history as tonight's
    (``RunParams.training_extract_days``)."""
    from ml.workflows import RunParams

    return RunParams.from_mapping(params).training_extract_days if purpose == "training" else params["lookback_days"]


@task
def extract(purpose: str, **context) -> dict[str, str]:
    """The datasets the ``purpose`` DAG reads (``revopt.platform.extract.DAG_DATASETS``: training or nightly)."""
    from revopt.platform.config import load_settings
    from revopt.platform.extract import DAG_DATASETS, extract_sources

    return extract_sources(load_settings(), run_date_of(context), _extract_days(purpose, context["params"]),
                           datasets=DAG_DATASETS[purpose])


@task
def validate(extract_paths: dict[str, str], purpose: str, **context) -> dict[str, str]:
    from ml.workflows import validate_extracts
    from revopt.platform.config import load_settings

    return validate_extracts(load_settings(), run_date_of(context), extract_paths, _extract_days(purpose, context["params"]))


def run_date_of(context: Mapping[str, Any]) -> dt.date:
    """The run date D of a DAG run: its logical date in UTC, else when it was asked to run.

    Airflow 3 lets manual runs have no logical date; those run as of their ``run_after``.
    """
    moment = context.get("logical_date")
    if moment is None:
        moment = context["dag_run"].run_after
    return moment.astimezone(dt.timezone.utc).date()
