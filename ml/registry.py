"""The two runners every family goes through: :func:`train_family` and :func:`score_family`.

Training is one MLflow parent run per family and run date: params, the Optuna trials as nested runs
(:func:`ml.tuning.trial_logger`), test-window metrics, plots and tables, the model logged with its
signature, input example and pip requirements and registered; then the promotion gate
(:mod:`ml.gate`) compares it on the test window with the family's naive baseline and with the
``@champion`` refitted from its spec on the same data (:meth:`ml.family.Family.evaluate`), moves the
alias and records the decision (with both paired comparisons) as tags, metrics and in
``scores.model_promotions``. Scoring loads a family's ``@champion`` (the version it resolves to
now, recorded on every published row) and calls its pyfunc ``predict`` on the nightly input.

Each family trains in its own MLflow experiment, ``revopt/<family>`` (:func:`family_experiment`), so
"compare runs" lines up one family's runs and metrics. A run logs the data it saw as input datasets
(``mlflow.log_input``: the train, validation and test windows of ``Trained.windows``, with their
run-date window, rows and digest, the source naming the extract's datasets), and once the gate has
decided, the registered version's description is written from the run (:mod:`ml.model_card`); the
registered model's own description (what the family predicts) is set when it has none.

Minimisation (docs/privacy.md): nothing the runner logs carries a raw customer id. The reference
features and the input datasets are logged without their ``customer_id`` (the drift check compares
distributions; a dataset's digest and schema are of the other columns), the
input example has its customers renumbered 1..n (:func:`without_customer_ids`: the signature and
the rows' shape are kept, no real customer is named), and a table holding ``customer_id`` is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.dataset_source import DatasetSource
from mlflow.models import infer_signature
from mlflow.types.schema import ColSpec, Schema

from ml import plots
from ml.evaluation import Evaluation
from ml import model_card
from ml.family import SPLITS, DataWindow, Family, Frames, NonFiniteModelError, Trained, require_finite
from ml.gate import GateDecision, decide, is_finite
from ml.params import RunParams
from ml.reuse import reuse_scope
from ml.tuning import trial_logger
from revopt.platform.postgres import upsert_rows
from revopt.platform.resources import Resources, experiment_name

logger = logging.getLogger(__name__)

CHAMPION = "champion"
SPEC_TAG = "revopt.model_spec"
REFERENCE_FEATURES = "reference/features.parquet"
CUSTOMER_ID = "customer_id"
#: what a registered model's predict imports (numba: the TreeSHAP factors and the recommender's fold-in)
PIP_REQUIREMENTS = [
    f"{name}=={version(name)}"
    for name in ("lightgbm", "xgboost-cpu", "catboost", "scikit-learn", "numpy", "pandas", "scipy", "numba",
                 "cloudpickle")
]


def skipped(family: str, run_date: dt.date, reason: str) -> dict[str, str]:
    """The result of a family that cannot learn from (or score) this store: the DAG task ends as
    skipped with ``reason``, which names the run date and what is missing."""
    logger.warning("%s skipped for %s: %s", family, run_date, reason)
    return {"skipped": reason}


def train_family(family: Family, resources: Resources, run_date: dt.date, frames: Frames,
                 params: RunParams) -> dict[str, str]:
    """Train, log, register and gate ``family`` for ``run_date`` from the training extract's ``frames``;
    returns the run's reference for XCom (or ``{"skipped": reason}``)."""
    with reuse_scope():  # what the shortfall and the training data both compute, once (ml.reuse)
        if reason := family.shortfall(frames, run_date, params):
            return skipped(family.name, run_date, reason)
        data = family.training_data(frames, run_date, params)
    resources.use_tracking(family_experiment(family))  # the trials, nested runs, land in it too
    champion_version = current_version(family.model_name, CHAMPION)
    with mlflow.start_run(run_name=f"{family.name}-{run_date}") as run:
        mlflow.set_tags({"revopt.family": family.name, "revopt.run_date": run_date.isoformat()})
        mlflow.log_params({"run_date": run_date.isoformat(), "n_trials": params.n_trials,
                           "timeout_seconds": params.tuning_timeout_seconds, "seed": params.seed,
                           "promotion_margin": params.promotion_margin, "promotion_alpha": params.promotion_alpha})
        trained = family.train(data, params, [trial_logger("valid_objective")])
        log_windows(family, trained.windows)
        example = without_customer_ids(trained.example)
        mlflow.log_params(trained.params)
        mlflow.log_metrics(trained.metrics)
        mlflow.set_tags({**trained.tags, SPEC_TAG: json.dumps(trained.spec)})
        for name, table in trained.tables.items():
            _require_no_customer_ids(family.name, name, table)
            mlflow.log_table(table, name)
        for name, figure in trained.figures.items():
            mlflow.log_figure(figure, f"plots/{name}")
            plots.close(figure)
        if trained.reference_features is not None:
            _log_reference_features(trained.reference_features)

        metric = trained.metric or family.metric
        test_value = trained.test.value(metric)
        if not is_finite(test_value):
            raise NonFiniteModelError(f"{family.name} ({family.model_name}) for {run_date}: its test-window {metric.name} "
                                      f"is {test_value}, not a finite number (it cannot be judged); the model is not "
                                      "registered")
        predicted = trained.model.predict(None, example, trained.predict_params or None)
        checks = trained.checks if isinstance(predicted, pd.DataFrame) else {
            **trained.checks, "predictions on the input example": predicted}
        for what, values in checks.items():
            require_finite(family.name, family.model_name, run_date, what, values)
        # the champion is judged before anything is registered: a registry it cannot be read from fails
        # the family with nothing registered
        champion = _champion_evaluation(family, champion_version, data, params)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=trained.model,
            signature=infer_signature(example, predicted, params=trained.predict_params or None),
            input_example=example, pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=family.model_name,
        )
        model_version = str(info.registered_model_version)
        decision = decide(
            model_name=family.model_name, candidate_version=model_version, metric=metric, candidate=trained.test,
            baseline=trained.baseline, champion_version=champion_version,
            champion=None if champion is None else replace(champion, name=f"champion v{champion_version}"),
            margin=params.promotion_margin, alpha=params.promotion_alpha, seed=params.seed,
        )
        mlflow.log_metrics(decision.as_metrics())
        apply_decision(resources, run_date, decision, run.info.run_id)
        describe_version(family, run_date, run.info.run_id, trained, decision)
        return {"run_id": run.info.run_id, "model_name": family.model_name, "model_version": model_version,
                "alias": decision.alias}


def family_experiment(family: Family) -> str:
    """The MLflow experiment of ``family``'s training runs: ``revopt/<family.name>``."""
    return experiment_name(family.name)


class ExtractSource(DatasetSource):
    """Where an input dataset comes from: revopt's extract of the store (``datasets``, the extract's
    dataset names) over the run-date window ``first``..``last``. Logged with the dataset (MLflow shows
    its type and fields); it is a description, not a location to load from."""

    def __init__(self, datasets: tuple[str, ...], first: dt.date, last: dt.date, description: str = "") -> None:
        self.datasets, self.first, self.last, self.description = tuple(datasets), first, last, description

    @staticmethod
    def _get_source_type() -> str:
        return "revopt_extract"

    def load(self) -> Any:
        raise NotImplementedError("an extract source describes revopt's extract; it cannot be loaded from MLflow")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> ExtractSource:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"uri": f"revopt-extract:{','.join(self.datasets)}@{self.first.isoformat()}..{self.last.isoformat()}",
                "datasets": list(self.datasets), "first_date": self.first.isoformat(),
                "last_date": self.last.isoformat(), "description": self.description}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> ExtractSource:
        return cls(tuple(source_dict.get("datasets", ())), dt.date.fromisoformat(source_dict["first_date"]),
                   dt.date.fromisoformat(source_dict["last_date"]), source_dict.get("description", ""))


def log_windows(family: Family, windows: dict[str, DataWindow]) -> None:
    """Each split of ``windows`` as an input dataset of the active run (``mlflow.log_input``), named
    ``<family>-<split>`` under its context (:data:`ml.family.SPLITS`), without customer ids, with tags
    for its first and last date and rows. A split of another name is refused (a typo would be logged
    under no context)."""
    unknown = set(windows) - set(SPLITS)
    if unknown:
        raise ValueError(f"{family.name}: data windows {sorted(unknown)} are not splits of {list(SPLITS)}")
    for split in (split for split in SPLITS if split in windows):
        window = windows[split]
        frame = _without_customer_id_column(window.frame)
        source = ExtractSource(family.training_datasets, window.start, window.end, window.description)
        dataset = mlflow.data.from_pandas(frame, source=source, name=f"{family.name}-{split}", digest=digest(frame),
                                          targets=window.target if window.target in frame.columns else None)
        dataset.schema = window_schema(frame)  # a cached property: MLflow does not infer it again
        mlflow.log_input(dataset, context=SPLITS[split], tags={
            "revopt.first_date": window.start.isoformat(), "revopt.last_date": window.end.isoformat(),
            "revopt.rows": str(window.rows), "revopt.description": window.description[:500]})


#: The rows the logged windows' column types are inferred from (:func:`window_schema`).
SCHEMA_ROWS = 10_000


def window_schema(frame: pd.DataFrame) -> Schema:
    """The schema MLflow infers for a logged window (``mlflow.data.from_pandas``), without its loop over every
    value: each column's type inferred by MLflow on the first :data:`SCHEMA_ROWS` rows, and the column required
    when none of its values is missing (pandas' ``isna``: None, NaN, NA and NaT, as MLflow's own check). MLflow
    checked every value in Python: at a million customers 50 s of send time's 404 s of training (tested equal)."""
    head = infer_signature(frame.head(SCHEMA_ROWS)).inputs
    missing = frame.isna().any()
    return Schema([ColSpec(spec.type, spec.name, required=not bool(missing[spec.name])) for spec in head.inputs])


def digest(frame: pd.DataFrame) -> str:
    """A short digest of ``frame``'s columns and values (MLflow's own reads every cell in Python, slow
    on a long extract)."""
    hashed = hashlib.md5(",".join(map(str, frame.columns)).encode())
    hashed.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return hashed.hexdigest()[:8]


def _without_customer_id_column(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.index.name == CUSTOMER_ID or CUSTOMER_ID in (frame.index.names or ()):
        frame = frame.reset_index(drop=True)
    return frame.drop(columns=CUSTOMER_ID, errors="ignore").reset_index(drop=True)


def describe_version(family: Family, run_date: dt.date, run_id: str, trained: Trained, decision: GateDecision) -> None:
    """Write the registered version's description from its run (:func:`ml.model_card.version_description`),
    and the registered model's (what the family predicts) when it has none. A registry that refuses
    is logged, not raised: the version is registered and gated already."""
    metric = decision.metric
    rows: dict[str, dict[str, float | None]] = {metric: {
        "candidate": decision.candidate_value, "champion": decision.champion_value, "baseline": decision.baseline_value}}
    for key, value in trained.metrics.items():
        name = key.removeprefix("test_")
        if key.startswith("test_") and name != metric and len(rows) < model_card.TOP_FEATURES + 4:
            rows[name] = {"candidate": value, "baseline": trained.metrics.get(f"baseline_{name}")}
    importance = trained.feature_importance
    top = [] if importance is None else [
        (str(name), float(value)) for name, value in importance.sort_values(ascending=False).head(model_card.TOP_FEATURES).items()]
    text = model_card.version_description(
        family=family.name, decision=decision, run_date=run_date, run_id=run_id, windows=trained.windows,
        test_metrics=rows, top_features=top, importance="" if importance is None else str(importance.name or ""))
    client = MlflowClient()
    try:
        client.update_model_version(decision.model_name, decision.candidate_version, description=text)
        if not client.get_registered_model(decision.model_name).description:
            client.update_registered_model(decision.model_name,
                                           description=model_card.model_description(family.name, what_it_predicts(family)))
    except mlflow.exceptions.MlflowException as error:
        logger.warning("%s v%s: its description could not be written (%s)", decision.model_name,
                       decision.candidate_version, error)


def what_it_predicts(family: Family) -> str:
    """The family's ``description`` (a paragraph: what it predicts), else its class docstring's first
    paragraph."""
    described = getattr(family, "description", "")
    if described:
        return described
    doc = inspect.getdoc(type(family)) or f"The {family.name} family."
    return doc.split("\n\n")[0].replace("\n", " ")


@dataclass(frozen=True)
class Champion:
    """A family's ``@champion`` as loaded for tonight: the version the alias resolved to and its pyfunc."""

    name: str
    version: str
    model: mlflow.pyfunc.PyFuncModel

    @property
    def python_model(self) -> Any:
        """The unwrapped model (for what pyfunc does not expose, e.g. ``contributions``)."""
        return self.model.unwrap_python_model()


@dataclass(frozen=True)
class Scored:
    champion: Champion
    inputs: pd.DataFrame | None  # None when the family predicted from the frames (Family.nightly_predict)
    output: Any  # what the champion's predict returned


def score_family(family: Family, resources: Resources, run_date: dt.date, frames: Frames,
                 params: RunParams) -> Scored | dict[str, str]:
    """``family``'s ``@champion`` predicting tonight's input, or ``{"skipped": reason}`` when the store
    cannot train the family (the same question training asks, on tonight's extract)."""
    if reason := family.shortfall(frames, run_date, params):
        return skipped(family.name, run_date, reason)
    resources.use_tracking()
    version = current_version(family.model_name, CHAMPION)
    if version is None:
        return skipped(family.name, run_date, no_champion_reason(family.model_name))
    champion = load_champion(resources, family.model_name, version)
    nightly_predict = getattr(family, "nightly_predict", None)
    if nightly_predict is not None:  # the family's own path to what predict returns (ml.family.Family)
        return Scored(champion, None, nightly_predict(champion.python_model, frames, run_date, params))
    inputs = family.nightly_input(frames, run_date, params)
    output = champion.model.predict(inputs, params=family.predict_params(run_date, params) or None)
    return Scored(champion, inputs, output)


def no_champion_reason(model_name: str) -> str:
    """Why ``model_name`` has no ``@champion``, from its latest version's gate decision: nothing is
    published for the family until a version clears the gate."""
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except mlflow.exceptions.MlflowException:
        versions = []
    if not versions:
        return f"{model_name} has no registered version yet: run the training DAG first; nothing is published for it"
    latest = max(versions, key=lambda v: int(v.version))
    gate = client.get_run(latest.run_id).data.tags.get("revopt.gate.reason", "no gate decision recorded") \
        if latest.run_id else "no gate decision recorded"
    return (f"{model_name} has no @champion: no version has passed the promotion gate, so nothing is published for "
            f"it (latest, v{latest.version}: {gate})")


def load_champion(resources: Resources, model_name: str, version: str | None = None) -> Champion:
    """The ``@champion``'s pyfunc: ``version`` when the caller has resolved the alias already, else the
    version the alias points at now."""
    resources.use_tracking()
    version = version or resolve_alias(model_name, CHAMPION)
    # Load the resolved version, not the alias, so the recorded version is the one that scored.
    return Champion(model_name, version, mlflow.pyfunc.load_model(f"models:/{model_name}/{version}"))


def apply_decision(resources: Resources, run_date: dt.date, decision: GateDecision, run_id: str) -> None:
    """Move the alias, tag the run with the decision and record it in ``scores.model_promotions``."""
    # action_seq 0: the gate's row of its run date (revision 0011; hand moves of the alias are 1, 2, ...)
    # recorded_at: when the alias moved (an audit time, not data: a re-run's move is a new move)
    row = {**asdict(decision), "run_date": run_date, "mlflow_run_id": run_id, "action_seq": 0,
           "previous_version": decision.champion_version, "recorded_at": dt.datetime.now(dt.timezone.utc)}
    with resources.scores() as conn:  # the schema is checked before the alias moves
        set_alias(decision.model_name, decision.alias, decision.candidate_version)
        mlflow.set_tags(decision.as_tags())
        logger.info("promotion gate for %s v%s -> @%s: %s", decision.model_name, decision.candidate_version,
                    decision.alias, decision.reason)
        upsert_rows(conn, "scores.model_promotions", [row],
                    key=("run_date", "model_name", "candidate_version", "action_seq"))


def _champion_evaluation(family: Family, champion_version: str | None, data: Any, params: RunParams) -> Evaluation | None:
    """The champion's spec refitted on the candidate's data and scored on the same test rows; None when
    there is no champion or this version cannot rebuild its spec."""
    spec = champion_spec(family.model_name, champion_version)
    if spec is None:
        return None
    evaluation = family.evaluate(data, spec, params)
    if evaluation is None:
        logger.warning("%s v%s cannot be rebuilt by this version (other features or kind); it cannot be compared "
                       "on this test window", family.model_name, champion_version)
    return evaluation


def champion_spec(model_name: str, champion_version: str | None) -> dict | None:
    """The specification the champion was trained with (its run's spec tag), if there is one."""
    if champion_version is None:
        return None
    client = MlflowClient()
    run_id = client.get_model_version(model_name, champion_version).run_id
    raw_spec = client.get_run(run_id).data.tags.get(SPEC_TAG) if run_id else None
    if raw_spec is None:
        logger.warning("%s v%s has no %s tag; it cannot be refitted for the gate", model_name, champion_version, SPEC_TAG)
        return None
    return json.loads(raw_spec)


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
    found = current_version(model_name, alias)
    if found is None:
        raise LookupError(
            f"registered model {model_name!r} has no @{alias} version: run the training first "
            f"or set the alias in the MLflow UI"
        )
    return found


def without_customer_ids(example: pd.DataFrame) -> pd.DataFrame:
    """``example`` (a family's input example) with its customers renumbered 1..n in order of first
    appearance, the same customer the same number in every row (a long input joins its parts on it);
    0 (no customer: a catalogue row) and missing stay. An index of customer ids is dropped."""
    if example.index.name == CUSTOMER_ID:
        example = example.reset_index(drop=True)
    if CUSTOMER_ID not in example.columns:
        return example
    ids = example[CUSTOMER_ID]
    real = ids.notna() & (ids != 0)
    codes, _ = pd.factorize(ids[real])  # in order of first appearance
    numbered = ids.copy()
    numbered[real] = codes + 1
    return example.assign(**{CUSTOMER_ID: numbered})


def _require_no_customer_ids(family: str, name: str, table: pd.DataFrame) -> None:
    if CUSTOMER_ID in table.columns or table.index.name == CUSTOMER_ID:
        raise ValueError(f"{family}: the table {name} holds {CUSTOMER_ID}; MLflow artifacts carry no customer "
                         "identifier (aggregate it, or leave it to the published tables)")


def _log_reference_features(X: pd.DataFrame) -> None:
    """The features the final model is fitted on, without the customers' ids: the nightly drift check's
    reference (it compares the columns' distributions)."""
    with tempfile.TemporaryDirectory(prefix="revopt-reference-") as tmp:
        path = Path(tmp) / Path(REFERENCE_FEATURES).name
        X.drop(columns=CUSTOMER_ID, errors="ignore").to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_FEATURES).parent))
