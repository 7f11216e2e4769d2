"""The one Optuna loop every model family tunes with, and the one callback that logs its trials.

A family describes its search as a :class:`SearchSpace`: how a trial becomes a configuration
(``suggest``), how a configuration is scored on the validation data (``score``, a metrics dict of
which ``objective`` is optimised), optionally a default configuration that is kept unless a trial
beats it, trials to enqueue first, and a rule for choosing among the scored candidates when "the
best trial" is not the whole story (a significance test, a preference for simpler models). The loop
(:func:`search`) is the same for all: a seeded TPE study bounded by trials and seconds, every
trial's metrics as user attributes, a metric that is not a finite number recorded as a failed trial
(it never becomes the best), and the result as one :class:`Tuned`.

Optuna 5 has no MLflow callback (optuna-integration's is deprecated): :func:`trial_logger` logs each
finished trial as a nested MLflow run of the active run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import mlflow
import optuna

from ml.gate import beats, finite_or_nan

logger = logging.getLogger(__name__)

C = TypeVar("C")
Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


@dataclass(frozen=True)
class Budget:
    """How long a search may run, and its seed: ``n_trials`` trials or ``timeout_seconds`` of wall clock,
    whichever comes first (deterministic when bounded by trials). The seconds count from the search's start:
    scoring the space's default is part of them."""

    n_trials: int
    timeout_seconds: float
    random_state: int


@dataclass(frozen=True)
class Scored(Generic[C]):
    """A configuration and its validation metrics. ``config`` may be more than the trial suggested
    (e.g. the boosting rounds early stopping chose)."""

    config: C
    metrics: Mapping[str, float]
    trial: int | None = None  # the trial number; None for the default configuration


@dataclass(frozen=True)
class SearchSpace(Generic[C]):
    """What a family supplies to :func:`search`."""

    name: str  # the study's name (logs, the trials' MLflow tag)
    suggest: Callable[[optuna.Trial], C]  # a trial -> a configuration (the search space)
    score: Callable[[C], Scored[C]]  # a configuration -> its validation metrics
    objective: str  # the key of the metrics that is optimised
    direction: Literal["minimize", "maximize"]
    default: C | None = None  # scored before the study and kept unless a trial beats it
    enqueue: Sequence[Mapping[str, Any]] = ()  # trials to run first (e.g. one per model family)
    n_startup_trials: int | None = None  # random trials before TPE takes over (Optuna's default: 10)
    # How to pick the result among the default (None when there is none) and the finished trials;
    # by default the best trial, unless it does not beat the default.
    choose: Callable[[Scored[C] | None, list[Scored[C]]], Scored[C]] | None = None


@dataclass(frozen=True)
class Tuned(Generic[C]):
    """The chosen configuration, its metrics and objective value, the default's value (NaN when there
    was no default), the number of trials that finished, and the study."""

    config: C
    metrics: Mapping[str, float]
    value: float
    default_value: float
    n_trials: int
    study: optuna.Study = field(repr=False)


def search(space: SearchSpace[C], budget: Budget, callbacks: Sequence[Callback] = ()) -> Tuned[C]:
    """Run ``space``'s study under ``budget`` and return the chosen configuration.

    Raises ``RuntimeError`` when neither the default nor any trial has a finite objective and the
    space has no default to fall back on.
    """
    higher = space.direction == "maximize"
    started = time.monotonic()
    default = space.score(space.default) if space.default is not None else None
    # the budget is the whole search's: what scoring the default took is not there for trials (a default ALS of a
    # million customers' history takes minutes, docs/scale.md); without a default the study has it all
    timeout = budget.timeout_seconds if default is None else max(0.0, budget.timeout_seconds
                                                                  - (time.monotonic() - started))
    if timeout == 0:
        logger.info("%s: scoring the default configuration took %.0f s, the whole tuning budget (%.0f s): no trial "
                    "runs", space.name, time.monotonic() - started, budget.timeout_seconds)
    scored: dict[int, Scored[C]] = {}

    def objective(trial: optuna.Trial) -> float:
        result = space.score(space.suggest(trial))
        scored[trial.number] = Scored(result.config, result.metrics, trial.number)
        for name, value in result.metrics.items():
            trial.set_user_attr(name, value)
        return finite_or_nan(result.metrics[space.objective])  # NaN: a failed trial, never the best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler_options = {} if space.n_startup_trials is None else {"n_startup_trials": space.n_startup_trials}
    study = optuna.create_study(direction=space.direction, study_name=space.name,
                                sampler=optuna.samplers.TPESampler(seed=budget.random_state, **sampler_options))
    for params in space.enqueue:
        study.enqueue_trial(dict(params))
    study.optimize(objective, n_trials=budget.n_trials, timeout=timeout, callbacks=list(callbacks))
    finished = [scored[t.number] for t in study.trials if t.value is not None and t.number in scored]
    default_value = float(default.metrics[space.objective]) if default is not None else float("nan")
    if space.choose is not None:
        chosen = space.choose(default, finished)
    elif finished and (default is None or beats(study.best_value, default_value, higher_is_better=higher)):
        chosen = scored[study.best_trial.number]
    elif default is not None:
        chosen = default
    else:
        raise RuntimeError(f"tuning {space.name}: no trial finished with a finite {space.objective} within "
                           f"{budget.timeout_seconds}s ({len(study.trials)} started)")
    value = float(chosen.metrics[space.objective])
    logger.info("%s: %d trials, %s %.5f (%s; default config %.5f)", space.name, len(finished), space.objective, value,
                "default kept" if chosen is default else f"trial {chosen.trial}", default_value)
    return Tuned(config=chosen.config, metrics=dict(chosen.metrics), value=value, default_value=default_value,
                 n_trials=len(finished), study=study)


def trial_logger(metric_name: str) -> Callback:
    """An Optuna callback logging each finished trial as a nested MLflow run of the active run:
    its parameters, its objective as ``metric_name``, its numeric user attributes and its duration."""

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
