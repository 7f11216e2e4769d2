"""The tasks around a revopt run's work: recording hand-made alias moves first, the nightly report and the run's
note last, and the docs every task shows in the UI. Listed in ``.airflowignore`` (helpers, no DAG).

``nightly_report`` and ``summarise_run`` run whatever happened upstream (``all_done``) and are *teardown* tasks:
Airflow judges a run by its other leaves, so a failed family or publish still fails the run although a task
after it succeeded.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from _context import resources, run_date_of, run_params_of


@task
def record_alias_moves(**context) -> int:
    """``@champion`` moves made by hand (MLflow UI) since the last run, recorded as promotions."""
    from ml.promotion import record_manual_alias_moves

    return len(record_manual_alias_moves(resources(), run_date_of(context)))


@task(task_id="nightly_report")
def _nightly_report(**context) -> dict:
    from ml.report import build_nightly_report

    return build_nightly_report(resources(), run_date_of(context), run_params_of(context))


def nightly_report(*published):
    """``nightly_report`` after every publish task of ``published``, as a teardown; returns it."""
    report = _nightly_report()
    for step in published:
        step >> report
    report.as_teardown()
    return report


@task
def summarise_run(**context) -> str:
    """The run's note (revopt.platform.run_notes), set through the REST API when ``revopt_airflow_api`` is a
    connection; returned either way (``revopt run`` copies it onto the run)."""
    import logging

    from revopt.platform.run_notes import SUMMARY_TASK, compose_run_note, set_note_via_api

    ti, dag = context["ti"], context["dag"]
    task_ids = [t for t in dag.task_ids if t != SUMMARY_TASK]
    states = ti.get_task_states(dag_id=dag.dag_id, task_ids=task_ids, run_ids=[ti.run_id]).get(ti.run_id, {})
    # only tasks that succeeded left a result (asking for the others logs an error per task)
    results = {t: ti.xcom_pull(task_ids=t, map_indexes=-1, default=None) for t in task_ids
               if states.get(t) == "success"}
    note = compose_run_note(dag.dag_id, run_date_of(context).isoformat(), results, states)
    api = _connection("revopt_airflow_api")
    log = logging.getLogger(__name__)
    if api is None:
        log.info("no revopt_airflow_api connection: the note is returned, not set through the REST API")
        return note
    try:
        base = api.host if "://" in (api.host or "") else f"http://{api.host}:{api.port or 8080}"
        set_note_via_api(base, api.login or "", api.password or "", dag.dag_id, ti.run_id, note)
        log.info("run note set through the REST API")
    except (OSError, KeyError, ValueError) as error:
        log.warning("could not set the run note through the REST API: %s", type(error).__name__)
    return note


def _connection(conn_id: str) -> Any:
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def finish(dag) -> Any:
    """``dag`` with ``summarise_run`` after every task that had nothing after it (so it runs last and reads every
    task's result), as a teardown, and documented (:func:`document`)."""
    leaves = [operator for operator in dag.tasks if not operator.downstream_list]
    with dag:
        summary = summarise_run()
    for operator in leaves:
        operator >> summary
    summary.as_teardown()
    return document(dag)


def document(dag) -> Any:
    """``dag`` with its Docs and every task's filled from revopt.platform.task_docs."""
    from revopt.platform.task_docs import dag_doc, task_doc

    dag.doc_md = dag_doc(dag.dag_id, dag.doc_md or "")
    for operator in dag.tasks:
        if operator.is_mapped:  # a mapped task (dags/_partitioned.py) keeps it in its partial kwargs
            operator.partial_kwargs["doc_md"] = task_doc(dag.dag_id, operator.task_id)
        else:
            operator.doc_md = task_doc(dag.dag_id, operator.task_id)
    return dag
