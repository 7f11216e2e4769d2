"""Which errors heal by themselves: what the DAGs' retry policy (``dags/_support.py``) retries.

Plain Python over exception chains, matched by class name, so nothing here imports the libraries
whose errors it names.
"""

from __future__ import annotations

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
