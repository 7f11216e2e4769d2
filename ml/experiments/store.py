"""Experiment definitions and assignments in PostgreSQL (``scores.experiments``,
``scores.experiment_assignments``; migration 0006 says why revopt owns them).

Definitions change only through :func:`create_experiment` and :func:`stop_experiment` (the CLI);
nightly steps read them with :func:`load_experiments`. Assignments are published per run date like
every output (:func:`revopt.platform.postgres.publish_partition`: a unit's row is keyed by the run
date that first assigned it), and read back with :func:`assignments_before` / :func:`assignments_as_of`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from ml.experiments.definitions import ROW_COLUMNS, STOPPED, Experiment
from revopt.platform.postgres import read_frame

#: the columns of scores.experiment_assignments, as published
ASSIGNMENT_TABLE_COLUMNS = ("run_date", "experiment_id", "unit_id", "variant")


class ExperimentNotFound(LookupError):
    """No experiment with that id."""


def load_experiments(conn: psycopg.Connection) -> list[Experiment]:
    """Every experiment, stopped and ended ones included (assignment allocates layers from history)."""
    rows = read_frame(conn, f"SELECT {', '.join(ROW_COLUMNS)} FROM scores.experiments ORDER BY start_date, experiment_id")
    return [Experiment.from_row(row) for row in rows.to_dict("records")]


def get_experiment(conn: psycopg.Connection, experiment_id: str) -> Experiment:
    experiments = load_experiments(conn)
    found = [e for e in experiments if e.experiment_id == experiment_id]
    if not found:
        known = ", ".join(e.experiment_id for e in experiments) or "none"
        raise ExperimentNotFound(f"no experiment {experiment_id!r} in scores.experiments (known: {known})")
    return found[0]


def create_experiment(conn: psycopg.Connection, experiment: Experiment) -> None:
    """Insert a new experiment; an existing id is an error (a definition is not edited in place: stop
    it and create another, so every published assignment keeps the definition that made it)."""
    from ml.experiments.assignment import layer_allocations

    existing = load_experiments(conn)
    if any(e.experiment_id == experiment.experiment_id for e in existing):
        raise ValueError(f"experiment {experiment.experiment_id!r} exists already in scores.experiments")
    layer_allocations([*existing, experiment])  # raises when the layer has no room left
    row = _db_row(experiment)
    columns = ", ".join(row)
    values = ", ".join(f"%({c})s" for c in row)
    with conn.transaction():
        conn.execute(f"INSERT INTO scores.experiments ({columns}) VALUES ({values})", row)


def stop_experiment(conn: psycopg.Connection, experiment_id: str, on: dt.date) -> Experiment:
    """Mark the experiment stopped from run date ``on`` (it assigns no unit from then on; units already
    in it keep their variant and are still analysed)."""
    experiment = get_experiment(conn, experiment_id)
    if experiment.status == STOPPED:
        raise ValueError(f"experiment {experiment_id!r} was stopped already on {experiment.stopped_on}")
    stopped = experiment.stop(on)
    with conn.transaction():
        conn.execute("UPDATE scores.experiments SET status = %(status)s, stopped_on = %(stopped_on)s "
                     "WHERE experiment_id = %(experiment_id)s", _db_row(stopped))
    return stopped


def served_as_of(conn: psycopg.Connection, run_date: dt.date) -> tuple[list[Experiment], pd.DataFrame | None]:
    """Every experiment and the assignments serving reads on ``run_date`` (None when there is no experiment)."""
    experiments = load_experiments(conn)
    return experiments, (assignments_as_of(conn, run_date) if experiments else None)


def assignments_before(conn: psycopg.Connection, run_date: dt.date) -> pd.DataFrame:
    """Assignments first made before ``run_date`` (what a run of ``run_date`` keeps), in the shape
    :func:`ml.experiments.assignment.assign` reads (``first_assigned`` for ``run_date``)."""
    return _assignments(conn, "run_date < %(day)s", run_date)


def assignments_as_of(conn: psycopg.Connection, run_date: dt.date) -> pd.DataFrame:
    """Assignments first made on or before ``run_date`` (what serving and the analysis of ``run_date`` see)."""
    return _assignments(conn, "run_date <= %(day)s", run_date)


def _assignments(conn: psycopg.Connection, where: str, run_date: dt.date) -> pd.DataFrame:
    frame = read_frame(conn, "SELECT experiment_id, unit_id, variant, run_date AS first_assigned "
                             f"FROM scores.experiment_assignments WHERE {where} ORDER BY experiment_id, unit_id",
                       {"day": run_date})
    if frame.empty:
        return pd.DataFrame({"experiment_id": pd.Series(dtype=object), "unit_id": pd.Series(dtype="int64"),
                             "variant": pd.Series(dtype=object), "first_assigned": pd.Series(dtype=object)})
    return frame.astype({"unit_id": "int64"})


def _db_row(experiment: Experiment) -> dict[str, Any]:
    row = experiment.to_row()
    return {**row, "variants": Jsonb(row["variants"]), "guardrails": Jsonb(row["guardrails"])}
