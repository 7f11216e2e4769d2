"""``revopt status``: the last runs of each DAG, the champion models, and what changed in the published tables
since the previous run date, as tables (docs/workbench.md). Reads only, like ``where`` and ``sql``: without revopt
state it says where it looked and starts nothing (:func:`require_state`).

The runs come from the run folders (each ``revopt run`` leaves ``airflow-<dag>.json``, the runner's report read
from Airflow's metadata database); the champions from ``scores.model_promotions`` (the latest promoted version per
model); the changes from :func:`revopt.platform.changes.published_changes`. Every query goes through the
read-only role's connection (:func:`revopt.platform.query.read_only_connection`).
"""

from __future__ import annotations

import sys

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from revopt.platform.config import Settings

#: Runs shown per DAG.
RUNS_PER_DAG = 3

# the version of each model's latest move of @champion (gate, promote, rollback or manual: in the order they were
# recorded, not by run date), with that version's latest gate test metric (a version promoted by hand may have none)
_CHAMPIONS_SQL = """
SELECT DISTINCT ON (m.model_name) m.model_name, m.candidate_version AS version, m.run_date AS since,
       g.metric, g.candidate_value
FROM scores.model_promotions AS m
LEFT JOIN LATERAL (
    SELECT metric, candidate_value FROM scores.model_promotions
    WHERE model_name = m.model_name AND candidate_version = m.candidate_version AND action = 'gate'
    ORDER BY recorded_at DESC LIMIT 1
) AS g ON true
WHERE m.promoted
ORDER BY m.model_name, m.recorded_at DESC, m.action_seq DESC
"""


class NoState(LookupError):
    """The state folder holds no revopt database: nothing to read, and nothing was created."""


def require_state(settings: Settings) -> None:
    """NoState when the embedded PostgreSQL of the state folder was never created (a server URL is always state):
    commands that only read must not start a new, empty stack there."""
    if settings.embedded_postgres and not (settings.pgdata / "PG_VERSION").is_file():
        raise NoState(f"no revopt state in {settings.home}: set REVOPT_HOME or run `revopt demo`")


def add_parser(commands: Any) -> None:
    status = commands.add_parser(
        "status", help="the last runs per DAG, the champion models and what changed since the previous run date")
    status.add_argument("--date", type=dt.date.fromisoformat, default=None,
                        help="compare this run date with the one before it (default: the latest nightly run)")
    status.set_defaults(handler=_status)


def _status(settings: Settings, args: argparse.Namespace) -> int:
    from rich.console import Console

    from revopt.platform.query import read_only_connection

    require_state(settings)
    # a terminal's own width; piped or redirected, wide enough that names and dates are not cut
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(f"state folder: {settings.home}")
    runs = last_runs(settings.runs_dir)
    console.print(runs_table(runs))
    with read_only_connection(settings) as conn:
        champions = _champions(conn)
        run_date = args.date or _latest_run_date(runs, conn)
        changes = _changes(conn, run_date) if run_date else None
    console.print(champions_table(champions))
    if changes is not None:
        console.print(changes_table(changes, run_date))
    else:
        console.print("nothing published yet")
    return 0


def last_runs(runs_dir: Path, per_dag: int = RUNS_PER_DAG) -> list[dict[str, Any]]:
    """The latest ``per_dag`` runs of each DAG from the run folders' reports, newest first per DAG."""
    found: dict[str, list[dict[str, Any]]] = {}
    for report in sorted(runs_dir.glob("*/airflow-*.json"), reverse=True):
        if report.name.endswith(".state.json"):
            continue
        try:
            content = json.loads(report.read_text())
        except ValueError:
            continue
        dag = content.get("dag_id") or report.stem.removeprefix("airflow-")
        tasks = content.get("tasks", {})
        durations = [outcome.get("duration") for outcome in tasks.values() if outcome.get("duration") is not None]
        found.setdefault(dag, []).append({
            "dag": dag, "run_date": content.get("run_date") or report.parent.name, "state": content.get("state"),
            "tasks": len(tasks), "failed": sum(1 for o in tasks.values() if o.get("state") == "failed"),
            "skipped": sum(1 for o in tasks.values() if o.get("state") == "skipped"),
            "duration": _run_seconds(content) or (sum(durations) if durations else None),
            "finished": dt.datetime.fromtimestamp(report.stat().st_mtime, dt.timezone.utc),
        })
    return [run for dag in sorted(found) for run in found[dag][:per_dag]]


def _run_seconds(report: dict[str, Any]) -> float | None:
    if report.get("started") and report.get("ended"):
        return (dt.datetime.fromisoformat(report["ended"]) - dt.datetime.fromisoformat(report["started"])).total_seconds()
    return None


def runs_table(runs: list[dict[str, Any]]):
    from rich.table import Table

    table = Table(title="last runs (run folders)")
    for column in ("DAG", "run date", "state", "tasks", "failed", "skipped", "duration", "finished (UTC)"):
        table.add_column(column)
    for run in runs:
        colour = "green" if run["state"] == "success" else "red"
        table.add_row(run["dag"], str(run["run_date"]), f"[{colour}]{run['state']}[/]", str(run["tasks"]),
                      str(run["failed"]), str(run["skipped"]),
                      "" if run["duration"] is None else f"{run['duration']:.0f}s", f"{run['finished']:%Y-%m-%d %H:%M}")
    if not runs:
        table.add_row("(no runs yet)", "", "", "", "", "", "", "")
    return table


def _champions(conn) -> list[tuple]:
    from revopt.platform.catalog import has_table

    if not has_table(conn, "scores.model_promotions"):
        return []
    return conn.execute(_CHAMPIONS_SQL).fetchall()


def champions_table(champions: list[tuple]):
    from rich.table import Table

    table = Table(title="champions (latest move of @champion per model, scores.model_promotions)")
    for column in ("model", "version", "since run date", "test metric"):
        table.add_column(column)
    for model, version, since, metric, value in champions:
        table.add_row(model, str(version), str(since),
                      "(none recorded)" if metric is None or value is None else f"{metric} {value:.4g}")
    if not champions:
        table.add_row("(no model promoted yet)", "", "", "")
    return table


def _latest_run_date(runs: list[dict[str, Any]], conn) -> dt.date | None:
    nightly = [run["run_date"] for run in runs if run["dag"] == "revopt_nightly"]
    if nightly:
        return dt.date.fromisoformat(str(max(nightly)))
    from revopt.platform.catalog import has_table

    if has_table(conn, "scores.customer_scores"):
        return conn.execute("SELECT max(run_date) FROM scores.customer_scores").fetchone()[0]
    return None


def _changes(conn, run_date: dt.date):
    from revopt.platform.changes import published_changes

    changes = published_changes(conn, run_date)
    return changes[(changes["today"].fillna(0) != 0) | changes["previous"].notna()]


def changes_table(changes, run_date: dt.date):
    from rich.table import Table

    table = Table(title=f"what changed: run date {run_date} against each table's previous run date")
    for column in ("table", "measure", "previous run date", "previous", "today", "change"):
        table.add_column(column, justify="right" if column in ("previous", "today", "change") else "left")
    for row in changes.itertuples(index=False):
        measure = "rows" if row.kind == "rows" else (f"mean {row.measure}" if row.kind == "mean" else row.measure)
        table.add_row(row.table, measure, str(row.previous_run_date or "-"), _number(row.previous), _number(row.today),
                      _number(row.change, signed=True))
    if not len(changes):
        table.add_row(f"(nothing published on {run_date})", "", "", "", "", "")
    return table


def _number(value, signed: bool = False) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):+,}" if signed else f"{int(value):,}"
    return f"{value:+.4g}" if signed else f"{value:.4g}"
