"""The note a revopt DAG run leaves in Airflow (the run's **Details** tab): what was published, with which model
versions, which gates passed or failed, and where the nightly report is. Composed from the tasks' return values
and states, so it is a summary of Airflow's own record, not of log text.

How the note gets onto the run (docs/workbench.md, "Airflow"): in Airflow 3 neither a task nor a DAG callback
may write to the metadata database, and the Task SDK's execution API has no call to set a note
(apache/airflow#64890). So the last task, ``summarise_run``, composes the note (:func:`compose_run_note`) and
returns it; it sets it through Airflow's public REST API (:func:`set_note_via_api`, ``PATCH .../dagRuns/{run_id}``)
when the ``revopt_airflow_api`` connection says where the API server is and how to log in (scheduler and UI
runs), and ``revopt run``, which runs ``airflow dags test`` in its own process with the database at hand,
copies the returned note onto the run (``revopt.dag_runner``).

Airflow-free: the DAG wiring calls it with plain values.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

#: Airflow keeps at most this many characters of a note (``DagRunNote.content``, the REST API's ``note``).
NOTE_LIMIT = 1000
#: The task that composes the note; its return value is the note (``revopt.dag_runner`` reads it).
SUMMARY_TASK = "summarise_run"
#: The task whose success means the data-quality gate passed.
QUALITY_TASK = "validate"
#: The gate's per-part tasks (``validate_tables``, and ``validate_events_<index>`` for the events part's mapped shares
#: in the states): a failed one names the failed gate.
QUALITY_PART_TASKS = ("validate_tables", "validate_events")

_FAILED = {"failed", "upstream_failed"}


def compose_run_note(dag_id: str, run_date: str, results: Mapping[str, Any], states: Mapping[str, str | None]) -> str:
    """The run's note in Markdown (at most :data:`NOTE_LIMIT` characters).

    ``results`` are the tasks' return values by task id (missing or None for a task that returned nothing);
    ``states`` the tasks' states by task id (``success``, ``failed``, ``skipped``, ``upstream_failed``...).
    """
    failed = sorted(task for task, state in states.items() if state == "failed")
    headline = f"**{dag_id} {run_date}**: " + (f"{len(failed)} task(s) failed ({', '.join(failed)})" if failed
                                               else "every task succeeded or was skipped on purpose")
    lines = [headline, f"- Data quality: {_quality(states)}"]
    published = _published(results)
    if published:
        lines.append("- Published: " + ", ".join(f"{table} {rows:,}" for table, rows in published.items()))
    else:
        lines.append("- Published: nothing")
    trained = _trained(results, states)
    if trained:
        lines.append("- Promotion gate: " + "; ".join(trained))
    scored = _scored_with(results)
    if scored:
        lines.append("- Scored with: " + ", ".join(scored))
    skipped = sorted(task for task, state in states.items() if state == "skipped")
    if skipped:
        lines.append("- Skipped: " + ", ".join(skipped))
    alias_moves = results.get("record_alias_moves")
    if isinstance(alias_moves, int) and alias_moves:
        lines.append(f"- Manual @champion moves recorded: {alias_moves}")
    report = results.get("nightly_report")
    if isinstance(report, Mapping) and report.get("path"):
        lines.append(f"- Report: {report['path']}" + (f" (MLflow run {report['mlflow_run_id']})"
                                                      if report.get("mlflow_run_id") else ""))
    elif "nightly_report" in states:
        lines.append(f"- Report: not built ({states['nightly_report']})")
    return _fit(lines)


def _quality(states: Mapping[str, str | None]) -> str:
    state = states.get(QUALITY_TASK)
    if state == "success":
        return "passed"
    # a failed part's task first (the gate after it is then upstream failed), else the gate itself
    failed = [task for task in sorted(states) if task.startswith(QUALITY_PART_TASKS) and states[task] in _FAILED]
    if state in _FAILED:
        failed.append(QUALITY_TASK)
    if failed:
        return f"FAILED ({failed[0]} {states[failed[0]]}): nothing downstream ran, nothing was published from it"
    return f"not reached ({state or 'no state'})"


def _published(results: Mapping[str, Any]) -> dict[str, int]:
    """Rows per table from the publish tasks' return values (``{"scores.<table>": rows}``)."""
    published: dict[str, int] = {}
    for task in sorted(results):
        value = results[task]
        if task.startswith("publish") and isinstance(value, Mapping):
            published.update({table.removeprefix("scores."): int(rows) for table, rows in value.items()
                              if isinstance(rows, (int, float))})
    return published


def _trained(results: Mapping[str, Any], states: Mapping[str, str | None]) -> list[str]:
    """Per trained family: the version and the gate's decision (``champion``: promoted; else kept challenger)."""
    decisions = []
    for task in sorted(set(results) | set(states)):
        if not task.startswith("train_"):
            continue
        value = results.get(task)
        if isinstance(value, Mapping) and value.get("model_version"):
            verdict = "promoted to @champion" if value.get("alias") == "champion" else \
                f"kept as @{value.get('alias') or 'challenger'}"
            decisions.append(f"{value.get('model_name', task)} v{value['model_version']} {verdict}")
        elif states.get(task) in _FAILED or states.get(task) == "skipped":
            decisions.append(f"{task.removeprefix('train_')} {states[task]}")
    return decisions


def _scored_with(results: Mapping[str, Any]) -> list[str]:
    """The champion versions tonight's outputs were made with."""
    versions: dict[str, str] = {}
    for task in sorted(results):
        value = results[task]
        if not isinstance(value, Mapping) or task.startswith("train_"):
            continue
        if isinstance(value.get("versions"), Mapping):
            versions.update({str(name): str(version) for name, version in value["versions"].items()})
        elif value.get("model_version") is not None:  # the registered model's name where the task gave it
            versions[str(value.get("model_name") or task)] = str(value["model_version"])
    return [f"{name} v{version}" for name, version in versions.items()]


def _fit(lines: list[str]) -> str:
    """Join ``lines``, cutting the longest ones so the note fits :data:`NOTE_LIMIT`."""
    note = "\n".join(lines)
    while len(note) > NOTE_LIMIT:
        longest = max(range(len(lines)), key=lambda i: len(lines[i]))
        excess = len(note) - NOTE_LIMIT
        lines[longest] = lines[longest][: max(20, len(lines[longest]) - excess - 1)].rstrip() + "…"
        note = "\n".join(lines)
    return note


def set_note_via_api(base_url: str, username: str, password: str, dag_id: str, run_id: str, note: str,
                     timeout: float = 10.0) -> None:
    """Set ``note`` on the run through Airflow's public REST API at ``base_url`` (e.g.
    ``http://127.0.0.1:8080``): a token from ``POST /auth/token`` (the simple auth manager's login; other auth
    managers issue tokens the same way), then ``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}?update_mask=note``.

    Raises ``urllib.error.URLError`` (an ``OSError``) when the server cannot be reached or refuses."""
    root = base_url.rstrip("/")
    token = _request("POST", f"{root}/auth/token", {"username": username, "password": password}, None,
                     timeout)["access_token"]
    path = f"/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    _request("PATCH", f"{root}{path}?update_mask=note", {"note": note[:NOTE_LIMIT]}, token, timeout)


def _request(method: str, url: str, body: Mapping[str, Any], token: str | None, timeout: float) -> dict:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) from a connection)
        return json.loads(response.read() or b"{}")
