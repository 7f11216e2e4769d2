"""The Family protocol: what every model family supplies, and nothing more.

A family knows its data and its model; it knows nothing of MLflow runs, the registry, the promotion
gate, PostgreSQL or Airflow. Two runners drive every family the same way (:mod:`ml.registry`):

- training, :func:`ml.registry.train_family`: ``shortfall`` (can this store train it?) ->
  ``training_data`` at the run date's cutoffs -> ``train`` (select with :func:`ml.tuning.search` on
  data before the test window, score the chosen spec and the naive baseline on the test window, fit
  the production model) -> log params, metrics, plots, tables and the model (signature, input
  example, pip requirements) in one MLflow run -> register -> gate (:mod:`ml.gate`: the floor over
  the baseline, then the ``@champion`` refitted from its spec by ``evaluate`` on the same data and
  scored on the same test rows) -> alias and decision record;
- scoring, :func:`ml.registry.score_family`: ``shortfall`` on tonight's extract -> ``nightly_input``
  -> the ``@champion``'s pyfunc ``predict(nightly_input, params=predict_params(run params))``. That
  output *is* what the nightly run publishes (plus the run date and the model's name and version),
  so ``mlflow models serve`` of a champion answers what revopt publishes.

A new family is one module in ``ml/families/`` implementing this protocol and one line in
:data:`ml.families.FAMILIES` (docs/architecture.md walks through one).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import mlflow
import numpy as np
import pandas as pd

from ml.evaluation import Evaluation, Metric
from ml.params import RunParams
from ml.tuning import Callback

logger = logging.getLogger(__name__)

Frames = Mapping[str, pd.DataFrame]


class NonFiniteModelError(ValueError):
    """A trained model whose holdout or scoring predictions are not all finite numbers: it is never
    registered. A ValueError, so the task fails at once: retrying would train the same model."""


def require_finite(family: str, model_name: str, run_date: dt.date, what: str, predictions: Any) -> None:
    """Raise :class:`NonFiniteModelError` when any row of ``predictions`` (an array, or a frame of
    numeric columns) holds NaN or +/-inf, naming the family, model, run date and row count."""
    if isinstance(predictions, (pd.DataFrame, pd.Series)):
        values = predictions.to_numpy(dtype="float64", na_value=np.nan)
    else:
        values = np.asarray(predictions, dtype="float64")
    bad = ~np.isfinite(values).reshape(len(values), -1).all(axis=1) if values.size else np.zeros(0, dtype=bool)
    if bad.any():
        raise NonFiniteModelError(
            f"{family} ({model_name}) for {run_date}: {int(bad.sum())} of {len(values)} {what} are NaN or infinite; "
            "the model is not registered"
        )


def config_spec(family: str, config: Any) -> dict[str, Any]:
    """The spec of a family whose model is a configuration dataclass (pricing, send time, budget):
    ``{"family": ..., "config": {...}}`` with numpy scalars as plain JSON numbers."""
    values = dataclasses.asdict(config)
    return {"family": family, "config": {
        key: float(v) if isinstance(v, np.floating) else int(v) if isinstance(v, np.integer) else v
        for key, v in values.items()}}


def config_from_spec(family: str, spec: Mapping[str, Any], config_type: type) -> Any | None:
    """The configuration a :func:`config_spec` holds, or None when the spec is another family's or this
    version cannot rebuild it (a field renamed or removed, a value its checks refuse)."""
    if not spec or spec.get("family") != family:
        return None
    try:
        return config_type(**spec["config"])
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("%s: a champion spec this version cannot rebuild (%s)", family, exc)
        return None


#: The splits a training run logs as its input datasets (``Trained.windows``), in order, with the MLflow
#: context each is logged under.
SPLITS = {"train": "training", "validation": "validation", "test": "testing"}


@dataclass(frozen=True)
class DataWindow:
    """One split of a training run's data as the model saw it (logged with ``mlflow.log_input``): its
    rows (``frame``; the runner drops customer ids before logging), the first and last date of the
    data they draw on (history and labels), and in words what the rows are and how the split was cut
    (``description``: e.g. "4,012 customers as of 2024-03-02: features of the 730 days before,
    purchases to 2024-04-01; 75 % of the fit cutoff's customers, the other 25 % validate"). ``target``
    names the outcome column of ``frame``, if it has one."""

    frame: pd.DataFrame
    start: dt.date
    end: dt.date
    description: str = ""
    target: str | None = None

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"a data window ends ({self.end}) before it starts ({self.start})")

    @property
    def rows(self) -> int:
        return len(self.frame)


def _date(value: Any) -> dt.date:
    return pd.Timestamp(value).date()


def dated_window(frame: pd.DataFrame, column: str, description: str, *, start: Any = None, end: Any = None,
                 target: str | None = None) -> DataWindow:
    """The rows of ``frame`` as a :class:`DataWindow` dated by their ``column`` (a day or timestamp):
    ``start`` / ``end`` (inclusive) where the split's bounds are known, else its first and last value."""
    values = pd.to_datetime(frame[column]) if len(frame) else pd.Series(dtype="datetime64[ns]")
    first = start if start is not None else (values.min() if len(values) else end)
    last = end if end is not None else (values.max() if len(values) else first)
    return DataWindow(frame, _date(first), _date(last), description, target)


def customer_window(X: pd.DataFrame, y: Any, cutoff: pd.Timestamp, horizon_days: int, lookback_days: int | None,
                    role: str, label: str = "label") -> DataWindow:
    """A customer family's split: the customers' features as of ``cutoff`` (from the ``lookback_days``
    before it) with their label over the ``horizon_days`` after it, as one frame (the label column
    ``label``). ``role`` says which customers these are (e.g. "the fit cutoff's training customers")."""
    cutoff = pd.Timestamp(cutoff)
    first = cutoff - pd.Timedelta(days=lookback_days) if lookback_days else cutoff
    last = cutoff + pd.Timedelta(days=horizon_days - 1)
    frame = X.assign(**{label: np.asarray(y)})
    description = (f"{len(frame):,} customers as of {cutoff.date()} ({role}): features of the history from "
                   f"{first.date()}, label over {cutoff.date()}..{last.date()}")
    return DataWindow(frame, _date(first), _date(last), description, label)


@dataclass
class Trained:
    """What :meth:`Family.train` returns: the production model and everything worth logging with it.

    ``model``'s ``predict(context, nightly_input, params)`` is the family's nightly output; ``spec``
    (JSON) is enough for :meth:`Family.evaluate` to refit the same kind of model on other data (it is
    stored as the run's ``revopt.model_spec`` tag, so a future candidate can be gated against it).
    ``test`` is the chosen specification fitted on the data before the test window and scored on the
    test rows, which no selection step has seen; ``baseline`` the family's naive baseline on the same
    rows (the gate's quality floor, :mod:`ml.gate`). ``example`` is a few rows of nightly input (the logged
    input example and signature) and ``predict_params`` the settings it was logged with (the
    signature's params and their defaults). ``checks`` are outputs that must be finite numbers or
    nothing is registered (description -> values). ``windows`` are the data the run saw, by split
    (:data:`SPLITS`: ``train``, ``validation`` and ``test``; a family tuned without a validation window
    of its own leaves ``validation`` out and says so in ``train``'s description): each is logged as an
    input dataset of the run and described on the registered version.
    """

    model: mlflow.pyfunc.PythonModel
    spec: dict[str, Any]
    test: Evaluation
    baseline: Evaluation
    example: pd.DataFrame
    predict_params: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # file name -> matplotlib figure
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # file name -> table (mlflow.log_table)
    tags: dict[str, str] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    reference_features: pd.DataFrame | None = None  # the nightly drift check's reference (customer families)
    # the metric the gate compares, where a run param chose it (CLV: clv_selection_metric); None: family.metric
    metric: Metric | None = None
    windows: dict[str, DataWindow] = field(default_factory=dict)  # split (SPLITS) -> the data it saw
    # feature -> importance (e.g. mean |contribution| on the test window), its name saying what the number is;
    # the version's description lists the top features
    feature_importance: pd.Series | None = None


@runtime_checkable
class Family(Protocol):
    """One model family (see the module docstring for who calls what, and when)."""

    name: str  # "pricing": run names, tags, task ids, logs
    model_name: str  # the registered model: "revopt_pricing"
    training_datasets: tuple[str, ...]  # the extract datasets training reads
    nightly_datasets: tuple[str, ...]  # the extract datasets the nightly step reads
    metric: Metric

    def shortfall(self, frames: Frames, run_date: dt.date, params: RunParams) -> str | None:
        """Why this store cannot train (and so cannot score) the family at ``run_date``, naming the
        run date and the tables, or None. Training and the nightly step both ask, on their own
        extract, so a family that cannot train is skipped at night with the same reason."""
        ...

    def training_data(self, frames: Frames, run_date: dt.date, params: RunParams) -> Any:
        """Everything ``train`` and ``evaluate`` need, built once (labelled sets at the cutoffs, a
        panel, a history) from the training extract."""
        ...

    def train(self, data: Any, params: RunParams, callbacks: Sequence[Callback]) -> Trained:
        """Tune (:func:`ml.tuning.search`, passing ``callbacks`` to it) on data before the test window,
        evaluate the chosen configuration and the naive baseline on the test window, and fit the
        production model."""
        ...

    def evaluate(self, data: Any, spec: Mapping[str, Any], params: RunParams) -> Evaluation | None:
        """A model refitted from ``spec`` (a champion's) on ``data`` exactly as ``train`` fits the
        candidate it is compared with, scored on the same test rows (``Trained.test``); None when this
        version cannot rebuild the spec (other features, another kind). Non-finite predictions are
        kept: the gate counts them as a loss."""
        ...

    def nightly_input(self, frames: Frames, run_date: dt.date, params: RunParams) -> pd.DataFrame:
        """The frame the champion's ``predict`` takes tonight."""
        ...

    def predict_params(self, run_date: dt.date, params: RunParams) -> dict[str, Any]:
        """The run's settings ``predict`` takes (MLflow pyfunc ``params``; ``{}`` for none)."""
        ...

    # Optional: ``nightly_predict(python_model, frames, run_date, params)``, what the champion's ``predict``
    # returns on ``nightly_input`` computed from the frames directly by the unwrapped model, for a family whose
    # one-frame input is too big to build and copy at scale (send time; ml.registry.score_family). A test must
    # hold it equal to ``predict``.
