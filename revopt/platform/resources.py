"""The external systems a pipeline step uses, built once per task from the settings and passed in.

- **warehouse**: PostgreSQL. ``sources()`` reads the store's tables; ``scores()`` is the connection every
  writer of revopt's own tables opens (it checks the schema revision first, so nothing is written to a
  database ``revopt init-db`` has not migrated).
- **events**: ClickHouse (chDB embedded, or a server), or None when the clickstream is off.
- **tracking and registry**: MLflow, pointed at the configured server once, with the ``revopt``
  experiment selected (MLflow's fluent API keeps that in process state; this is the one place that sets it).
- **run folder**: where a run date's extracts, features and outputs are written.

Tests build it from the embedded stack's settings, exactly as tasks do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psycopg

from revopt.platform.config import Settings
from revopt.platform.events import EventStore
from revopt.platform.schema import scores_connection
from revopt.platform.stack import connect_postgres, event_store

EXPERIMENT_NAME = "revopt"


@dataclass
class Resources:
    settings: Settings
    experiment: str = EXPERIMENT_NAME
    _experiment_id: str | None = field(default=None, init=False, repr=False)

    def use_tracking(self) -> str:
        """Point MLflow's tracking and registry at the settings and select the experiment (created on
        first use; with the embedded default its artifacts go under the state folder, where ``revopt
        ui`` finds them), once per Resources; returns the experiment id."""
        if self._experiment_id is None:
            self._experiment_id = configure_mlflow(self.settings, self.experiment)
        return self._experiment_id

    def run_folder(self, run_date: dt.date) -> Path:
        return self.settings.run_dir(run_date)

    def write_output(self, run_date: dt.date, name: str, table: pd.DataFrame) -> Path:
        """A step's output table as ``<run folder>/scores/<name>.parquet`` (what a publish task reads)."""
        path = self.run_folder(run_date) / "scores" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(path, index=False)
        return path

    @contextmanager
    def sources(self) -> Iterator[psycopg.Connection]:
        """A connection to the store's PostgreSQL, for reading its source tables."""
        with connect_postgres(self.settings) as conn:
            yield conn

    @contextmanager
    def scores(self) -> Iterator[psycopg.Connection]:
        """A connection for writing revopt's own tables, the schema revision checked first."""
        with scores_connection(self.settings) as conn:
            yield conn

    @property
    def events(self) -> EventStore | None:
        """The clickstream store (one per process for chDB), or None when the clickstream is off."""
        return event_store(self.settings) if self.settings.clickstream else None


def configure_mlflow(settings: Settings, experiment: str = EXPERIMENT_NAME) -> str:
    """Point MLflow at the configured tracking server and return the experiment id."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        artifact_location = None
        if settings.mlflow_tracking_uri.startswith("sqlite:"):
            settings.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
            artifact_location = settings.mlflow_artifact_root.as_uri()
        experiment_id = mlflow.create_experiment(experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
