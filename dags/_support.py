"""Tasks and settings shared by the revopt DAGs: wiring only. With the DAG files (and
``revopt.dag_runner``) the only code that imports Airflow; business code never does. Listed in
``.airflowignore``: Airflow puts the DAGs folder on ``sys.path`` and the DAG files import it as
``_support``, but it holds no DAG to parse. Its neighbours, listed there too: ``_context`` (what a task reads
from its context), ``_notify`` (the failure notifier) and ``_run_end`` (alias moves, the nightly report, the
run's note and the tasks' docs).

Each task imports one function from ``ml.pipeline`` inside its body, calls it with the task's
resources, the run date and the run's params, and returns a small reference for XCom.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, Param, RetryDecision, RetryPolicy, task
from airflow.sdk.exceptions import AirflowSkipException

from _context import resources, run_date_of, run_params_of
from _notify import RevoptNotifier

class TransientErrorRetryPolicy(RetryPolicy):
    """Retry a failed task only when the error is transient
    (:func:`revopt.platform.errors.transient_cause`); fail it at once
    on anything else (bad data, bad settings, a non-finite model, a programming error such as a
    TypeError), where a retry would only repeat the same answer minutes later.

    Not an ``ExceptionRetryPolicy``: its rules import string-named classes when the DAG file is
    parsed and look at the raised exception only, not at the error it wraps."""

    def evaluate(self, exception: BaseException, try_number: int, max_tries: int, context: Any = None) -> RetryDecision:
        from revopt.platform.errors import transient_cause

        transient = transient_cause(exception)
        if transient is not None:
            return RetryDecision.retry(reason=f"transient {type(transient).__name__}: {str(transient)[:200]}")
        return RetryDecision.fail(reason=f"{type(exception).__name__} is not a transient error (connection, timeout, "
                                         "server busy): retrying cannot fix it")

    def serialize(self) -> dict[str, Any]:
        from revopt.platform.errors import TRANSIENT_ERRORS, TRANSIENT_MLFLOW_CODES

        return {"__type": type(self).__name__, "transient_errors": sorted(TRANSIENT_ERRORS),
                "transient_mlflow_codes": sorted(TRANSIENT_MLFLOW_CODES)}


RETRY_POLICY = TransientErrorRetryPolicy()

DEFAULT_ARGS = {
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "retry_policy": RETRY_POLICY,
    # one message per failed task, after its last try (dags/_notify.py)
    "on_failure_callback": [RevoptNotifier()],
}


def run_params(dag: str) -> dict[str, Param]:
    """The ``dag``'s Airflow params (``"training"`` or ``"nightly"``), generated from the one run-parameter
    definition, ``ml.params.RunParams`` (a dataclasses-only module: parsing imports nothing heavy). Each has a
    title (the trigger form's label) and its description; the form and ``--conf`` validate each value against its
    JSON schema, naming the param (``Invalid input for param n_trials: 0 is less than the minimum of 1``)."""
    from ml.params import param_specs

    return {spec.name: Param(spec.default, title=_title(spec.name), description=spec.description, **spec.schema)
            for spec in param_specs(dag)}


def _title(name: str) -> str:
    """The form label of param ``name``: ``n_trials`` -> ``N trials (n_trials)``, so the error's name is findable."""
    return f"{name.replace('_', ' ').capitalize()} ({name})"


#: Updated by the nightly DAG when the drift check requests retraining; the training DAG runs on it
#: (as well as weekly).
DRIFT_DETECTED = Asset(name="revopt_drift_detected", uri="revopt://drift/detected")
#: Updated by the nightly DAG when outcome monitoring finds a published score's realised performance
#: more than ``performance_drop_threshold`` below its test value; the training DAG runs on it too.
PERFORMANCE_DROPPED = Asset(name="revopt_performance_dropped", uri="revopt://outcomes/performance-dropped")


def retrain_signal(check_id: str, signal_id: str, asset: Asset):
    """Two tasks after a monitoring step: ``check_id`` short-circuits unless the step's result asks for
    retraining (``{"retrain": bool, "reason": str}``), then ``signal_id`` updates ``asset`` with the reason,
    which triggers ``revopt_training``."""

    # only ``signal_id`` is skipped: the tasks after it (the run's note) still follow their own trigger rules
    @task.short_circuit(task_id=check_id, ignore_downstream_trigger_rules=False)
    def above_threshold(result: dict) -> bool:
        return result["retrain"]

    @task(task_id=signal_id, outlets=[asset])
    def signal(result: dict) -> str:
        return result["reason"]

    def wire(result) -> None:
        above_threshold(result) >> signal(result)

    return wire


def skip_if_skipped(result, context=None):
    """A pipeline step's result, or the task ends as *skipped* (and so do the tasks after it) when the
    step skipped its family (``{"skipped": reason}``, e.g. budget for a store without spend).
    The reason is left in XCom (``revopt.dag_runner.SKIP_REASON_KEY``) for ``revopt run`` and the UI."""
    if isinstance(result, dict) and "skipped" in result:
        if context is not None:
            from revopt.dag_runner import SKIP_REASON_KEY

            context["ti"].xcom_push(key=SKIP_REASON_KEY, value=result["skipped"])
        raise AirflowSkipException(result["skipped"])
    return result


#: The extract's parts (``revopt.platform.extract.EXTRACT_PARTS``), each its own task (``extract_<part>``), side by
#: side: the PostgreSQL tables, and what is computed in the events store. Two tasks, not one mapped task: Airflow
#: starts a task after a mapped one only once every map index ended, and the tables part's validation (and a family
#: that reads only tables) runs while the events part is still extracting (``_gate.validate``).
EXTRACT_PARTS = ("tables", "events")


def _extract_task(part: str):
    @task(task_id=f"extract_{part}")
    def extract_part(purpose: str, **context) -> dict[str, str]:
        from ml.pipeline import extract

        return extract(resources(), run_date_of(context), purpose, run_params_of(context), part)

    return extract_part


def extract(purpose: str) -> dict[str, Any]:
    """The datasets the ``purpose`` DAG reads (``ml.pipeline.DAG_DATASETS``: training, nightly or experiments), one
    ``extract_<part>`` task per part of the extract: their outputs by part. The gate (``_gate.validate``) validates
    each part once it ends and merges their paths."""
    return {part: _extract_task(part)(purpose=purpose) for part in EXTRACT_PARTS}


def publish_outputs(task_id: str, *tables: str):
    """A task ``task_id`` that publishes a step's output tables: ``scores.<table>`` for each of ``tables``
    from the path the step returned under that name, replacing the run date's rows (``ml.publishing.publish``);
    returns the rows per table (the run's note lists them)."""

    @task(task_id=task_id)
    def publish_tables(outputs: dict[str, str], **context) -> dict[str, int]:
        from ml.publishing import publish

        run_date = run_date_of(context)
        return {f"scores.{table}": publish(resources(), run_date, f"scores.{table}", outputs[table]) for table in tables}

    return publish_tables


def publish_to(task_id: str, table: str):
    """A task ``task_id`` that publishes one step's output (its ``path``) to ``scores.<table>``, replacing the
    run date's rows (``ml.publishing.publish``); returns ``{"scores.<table>": rows}``."""

    @task(task_id=task_id)
    def publish_task(output: dict, **context) -> dict[str, int]:
        from ml.publishing import publish

        return {f"scores.{table}": publish(resources(), run_date_of(context), f"scores.{table}", output["path"])}

    return publish_task


def identity_resolution():
    """Resolve tonight's identities, publish ``scores.identity_map`` and copy it into ClickHouse; returns the
    last task, which every extract of the run must follow (docs/privacy.md)."""

    @task
    def resolve_identities(**context) -> dict:
        from ml.identity.stitch import resolve_identities

        return resolve_identities(resources(), run_date_of(context), run_params_of(context))

    @task
    def apply_identity_map(**context) -> dict:
        from ml.identity.stitch import apply_identity_map

        return apply_identity_map(resources(), run_date_of(context))

    resolved = resolve_identities()
    published = publish_outputs("publish_identity_map", "identity_map")(resolved)
    applied = apply_identity_map()
    published >> applied
    return applied


@task
def remove_old_run_folders(**context) -> dict:
    """Delete the run folders older than ``run_folder_retention_days`` (``revopt gc`` by hand) and the published
    run dates older than ``published_retention_days`` (0: none)."""
    from revopt.platform.retention import nightly_retention

    params = run_params_of(context)
    return nightly_retention(resources().settings, run_date_of(context), params.run_folder_retention_days,
                             params.published_retention_days)
