"""What ``revopt run`` shows and checks around a DAG run: the DAG params in ``--help`` and their validation before
Airflow starts (both from the one definition, :func:`ml.params.param_specs`), and the run's live progress, read
from the task states :mod:`revopt.dag_runner` polls out of Airflow's metadata database into a JSON state file.

With a terminal the progress is a rich progress bar (tasks done / total, the running tasks, elapsed time) and a
summary table at the end; without one (CI, tests, a pipe) it is one plain line per task state change.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

#: Task states of a task that will not change any more.
FINISHED = frozenset({"success", "skipped", "failed", "upstream_failed", "removed"})


# --- params --------------------------------------------------------------------------------------------------------


def params_epilog(dags: Sequence[str]) -> str:
    """The ``revopt run --help`` text listing each DAG's params: name, default, type and bounds, description."""
    from ml.params import param_specs

    lines = ["DAG params (--param KEY=VALUE, VALUE read as JSON; a DAG's params are also in the Airflow UI's form):"]
    for dag in dags:
        lines.append(f"\n--dag {dag}:")
        for spec in param_specs(dag):
            lines.append(f"  {spec.name} = {json.dumps(spec.default)}  ({_schema_text(spec.schema)})")
            lines.extend(textwrap.wrap(spec.description, width=96, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


def _schema_text(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type", "any")
    parts = ["|".join(kind) if isinstance(kind, list) else str(kind)]
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in schema:
            parts.append(f"{sign} {schema[key]}")
    if "enum" in schema:
        parts.append("one of " + ", ".join(str(value) for value in schema["enum"]))
    return ", ".join(parts)


def validate_params(dags: Sequence[str], params: Mapping[str, object]) -> None:
    """ValueError naming the param when one is not offered by any of ``dags`` or breaks its JSON schema (the same
    schema Airflow's ``Param`` checks, so a run is refused here rather than after Airflow started)."""
    import jsonschema

    from ml.params import param_specs

    specs = {spec.name: spec for dag in dags for spec in param_specs(dag)}
    for name, value in params.items():
        if name not in specs:
            raise ValueError(f"--param {name}: no such param for --dag {'/'.join(dags)} (`revopt run --help` lists "
                             f"them: {', '.join(sorted(specs))})")
        try:
            jsonschema.validate(value, specs[name].schema)
        except jsonschema.ValidationError as exc:
            raise ValueError(f"--param {name}={json.dumps(value)}: {exc.message} (expected "
                             f"{_schema_text(specs[name].schema)}; default {json.dumps(specs[name].default)})") from None


# --- progress ------------------------------------------------------------------------------------------------------


def read_state(path: Path) -> dict | None:
    """The runner's latest task states (``revopt.dag_runner`` writes them atomically), or None before the first."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


class PlainProgress:
    """One line per task state change, for logs and pipes."""

    def __init__(self, out: TextIO, clock: Callable[[], float] = time.perf_counter) -> None:
        self.out, self.clock = out, clock
        self.started = clock()
        self.seen: dict[str, str | None] = {}

    def update(self, state: Mapping[str, Any]) -> None:
        for task, outcome in state.get("tasks", {}).items():
            current = outcome.get("state")
            if current is None or self.seen.get(task) == current:
                continue
            self.seen[task] = current
            reason = f": {outcome['reason']}" if outcome.get("reason") else ""
            print(f"    task {task}: {current}{reason} (+{self.clock() - self.started:.0f}s)", file=self.out, flush=True)

    def close(self, state: Mapping[str, Any] | None) -> None:
        if state:
            self.update(state)
            if state.get("state"):
                print(f"    DAG run {state.get('state')}", file=self.out, flush=True)


class RichProgress:
    """A progress bar (tasks finished / total, the running tasks, elapsed) while the run lasts, a summary table after."""

    def __init__(self, console, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[running]}"), console=console,
                                 transient=False)
        self.bar = self.progress.add_task(label, total=None, running="starting Airflow")
        self.progress.start()

    def update(self, state: Mapping[str, Any]) -> None:
        tasks = state.get("tasks", {})
        done = sum(1 for outcome in tasks.values() if outcome.get("state") in FINISHED)
        running = [task for task, outcome in tasks.items() if outcome.get("state") == "running"]
        self.progress.update(self.bar, total=len(tasks) or None, completed=done,
                             running=("running: " + ", ".join(running)) if running else "")

    def close(self, state: Mapping[str, Any] | None) -> None:
        if state:
            self.update(state)
        self.progress.update(self.bar, running="")
        self.progress.stop()
        if state and state.get("tasks"):
            self.console.print(summary_table(state))


def summary_table(state: Mapping[str, Any]):
    """A rich table of a run's tasks: state, duration and, for a skipped task, why."""
    from rich.table import Table

    colours = {"success": "green", "failed": "red", "upstream_failed": "red", "skipped": "yellow"}
    table = Table(title=f"{state.get('dag_id', 'DAG')} {state.get('run_date', '')}: {state.get('state')}")
    for column in ("task", "state", "duration", "skip reason"):
        table.add_column(column)
    for task, outcome in state.get("tasks", {}).items():
        value = str(outcome.get("state"))
        duration = outcome.get("duration")
        table.add_row(task, f"[{colours.get(value, 'white')}]{value}[/]",
                      "" if duration is None else f"{duration:.1f}s", outcome.get("reason") or "")
    return table


def follow(state_path: Path, running: Callable[[], bool], view, interval: float = 0.5) -> dict | None:
    """Render the state file while ``running()``; returns the last state read."""
    last = None
    while running():
        if (state := read_state(state_path)) is not None:
            last = state
            view.update(state)
        time.sleep(interval)
    return read_state(state_path) or last


def progress_view(label: str, out: TextIO):
    """The rich view on a terminal, the plain one otherwise."""
    if out.isatty():
        from rich.console import Console

        return RichProgress(Console(file=out), label)
    return PlainProgress(out)


def failure_log(log_text: str, failed_tasks: Sequence[str], lines: int = 40) -> str:
    """What to show a person when a run failed: the last ``lines`` of each failed task's own part of the
    ``airflow dags test`` log (between its ``[DAG TEST] starting`` and ``end task`` lines), else the log's
    last ``lines``. A mapped task has a part per instance: the parts where Airflow logged the task's failure
    (:data:`TASK_FAILED`), every part when none says so. For display only: the run's outcome is judged from
    Airflow's state, never from this."""
    all_lines = log_text.splitlines(keepends=True)
    parts = []
    for task_id in failed_tasks:
        start = f"[DAG TEST] starting task_id={task_id} "
        end = f"[DAG TEST] end task task_id={task_id} "
        sections = []
        for first in (i for i, line in enumerate(all_lines) if start in line):
            last = next((i for i in range(first + 1, len(all_lines)) if end in all_lines[i]), len(all_lines) - 1)
            sections.append((first, last))
        failing = [(first, last) for first, last in sections
                   if any(TASK_FAILED in line for line in all_lines[first:last + 1])]
        parts += ["".join(all_lines[max(first, last + 1 - lines): last + 1]) for first, last in failing or sections]
    return "".join(parts) if parts else "".join(all_lines[-lines:])


#: What Airflow's task runner logs when a task raised (a mapped task's failed instance, in :func:`failure_log`)
TASK_FAILED = "Task failed with exception"
