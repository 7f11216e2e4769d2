"""The external systems a pipeline step uses, built once per task from the settings and passed in.

- **warehouse**: PostgreSQL. ``sources()`` reads the store's tables; ``scores()`` is the connection every
  writer of revopt's own tables opens (it checks the schema revision first, so nothing is written to a
  database ``revopt init-db`` has not migrated).
- **events**: ClickHouse (chDB embedded, or a server), or None when the clickstream is off.
- **tracking and registry**: MLflow, pointed at the configured server once, with a revopt experiment
  selected (MLflow's fluent API keeps that in process state; this is the one place that sets it). The
  experiments are named ``revopt/<what>`` so they sort together: one per model family
  (``revopt/purchase_propensity``, ...: its training runs, their trials and the outcome metrics later logged
  on them), ``revopt/nightly`` (drift, attribution, CAC forecast, segments, next best action) and
  ``revopt/ab_tests``. Each carries :data:`EXPERIMENT_KIND_TAG`, so MLflow's UI opens it on its runs.
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

#: Every revopt experiment's name starts with this (they sort together in the MLflow UI).
EXPERIMENT_PREFIX = "revopt/"
#: The experiment of the nightly runs, and the default of :class:`Resources`.
NIGHTLY_EXPERIMENT = EXPERIMENT_PREFIX + "nightly"
EXPERIMENT_NAME = NIGHTLY_EXPERIMENT
#: The experiment tag MLflow 3's UI reads to choose an experiment's first page: "custom_model_development"
#: marks a model-training experiment, opened on its runs (untagged, the UI may open the GenAI overview).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def experiment_name(what: str) -> str:
    """The MLflow experiment of ``what`` (a family's name, ``nightly``, ...): ``revopt/<what>``."""
    return EXPERIMENT_PREFIX + what


@dataclass
class Resources:
    settings: Settings
    experiment: str = EXPERIMENT_NAME
    _experiment_ids: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def use_tracking(self, experiment: str | None = None) -> str:
        """Point MLflow's tracking and registry at the settings and select ``experiment`` (default: this
        Resources' own; created and marked on first use, :func:`configure_mlflow`; with the embedded
        default its artifacts go under the state folder, where ``revopt ui`` finds them); returns its id.
        The selection is process state that another step may have moved, so every call selects again
        (a training run selects its family's experiment, the next step of the same process its own)."""
        import mlflow

        name = experiment or self.experiment
        if name not in self._experiment_ids:
            self._experiment_ids[name] = configure_mlflow(self.settings, name)
        else:
            mlflow.set_experiment(experiment_id=self._experiment_ids[name])
        return self._experiment_ids[name]

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
    """Point MLflow at the configured tracking server, select ``experiment`` and return its id. The
    experiment is created if missing, and marked as a model-training one (:data:`EXPERIMENT_KIND_TAG`)
    if it is not yet, so an experiment made before the tag existed is marked by the next run."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
        if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            mlflow.MlflowClient().set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    else:
        artifact_location = None
        if settings.mlflow_tracking_uri.startswith("sqlite:"):
            settings.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
            artifact_location = settings.mlflow_artifact_root.as_uri()
        try:
            experiment_id = mlflow.create_experiment(experiment, artifact_location=artifact_location,
                                                     tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except mlflow.exceptions.MlflowException:
            # another task of the same run created it first (the nightly DAG's steps run in parallel)
            found = mlflow.get_experiment_by_name(experiment)
            if found is None:
                raise
            experiment_id = found.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
