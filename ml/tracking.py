"""MLflow plumbing shared by every model family: experiment setup, nested trial runs, registry aliases."""

from __future__ import annotations

import logging
from collections.abc import Callable

import mlflow
import optuna
from mlflow import MlflowClient

from revopt.platform.config import Settings

logger = logging.getLogger(__name__)

EXPERIMENT_NAME = "revopt"
CHAMPION = "champion"


def configure_mlflow(settings: Settings, experiment: str = EXPERIMENT_NAME) -> str:
    """Point MLflow at the configured tracking server and return the experiment id.

    With the embedded default the experiment's artifacts go under the state folder, so the
    MLflow UI started by ``revopt ui mlflow`` finds them.
    """
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


def trial_logger(metric_name: str) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """An Optuna callback logging each finished trial as a nested MLflow run of the active run."""

    def _log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        with mlflow.start_run(run_name=f"trial-{trial.number:03d}", nested=True):
            mlflow.log_params(trial.params)
            mlflow.set_tag("optuna.state", trial.state.name)
            mlflow.set_tag("optuna.study", study.study_name)
            if trial.value is not None:
                mlflow.log_metric(metric_name, trial.value)
            for key, value in trial.user_attrs.items():
                if isinstance(value, (int, float)):
                    mlflow.log_metric(key, value)
            if trial.duration is not None:
                mlflow.log_metric("trial_seconds", trial.duration.total_seconds())

    return _log_trial


def set_alias(model_name: str, alias: str, version: str | int) -> None:
    MlflowClient().set_registered_model_alias(model_name, alias, str(version))
    logger.info("model %s version %s is now @%s", model_name, version, alias)


def current_version(model_name: str, alias: str) -> str | None:
    """The version an alias points at, or None if the model or the alias does not exist yet."""
    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def resolve_alias(model_name: str, alias: str = CHAMPION) -> str:
    """The version an alias points at right now, with a clear error if there is none."""
    version = current_version(model_name, alias)
    if version is None:
        raise LookupError(
            f"registered model {model_name!r} has no @{alias} version: run the training first "
            f"or set the alias in the MLflow UI"
        )
    return version
