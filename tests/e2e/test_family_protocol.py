"""Adding a model family, as docs/architecture.md describes it: a toy family (a logistic regression of
"buys in the next 30 days" on the customer features) written here, in one module, trains, registers,
gates and scores through the same runners as the real families, against the embedded stores. Nothing
outside this module changes for it; in the product it would also get its line in
``ml.families.FAMILIES`` (so the DAGs' extracts read its datasets) and a task in each DAG.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from features.customer import (EVENT_FEATURES_AT_CUTOFFS, FEATURE_COLUMNS, evaluation_cutoffs, purchase_set,
                               selection_split)
from ml import pipeline, registry
from ml.evaluation import ROC_AUC, Evaluation, Metric
from ml.family import Family, Trained, customer_window
from ml.params import RunParams
from ml.tuning import Budget, Scored, SearchSpace, search
from revopt.platform.resources import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, Resources
from revopt.platform.stack import close_event_stores
from revopt.sample_data.seed import seed_synthetic

pytestmark = pytest.mark.e2e

START = dt.date(2027, 1, 1)  # away from the other modules' run dates (the row-count rule looks 30 days back)
DAYS = 200
RUN_DATE = START + dt.timedelta(days=DAYS)
PARAMS = RunParams(n_trials=3, tuning_timeout_seconds=60, lookback_days=180)


# --- the toy family: everything it needs, in one module ---------------------------------------------------


#: A handful of the customer features: enough for a toy to beat recency alone.
TOY_FEATURES = ["recency_days", "frequency", "monetary", "orders_90d", "sessions_30d", "days_since_last_session"]


class ToyModel(mlflow.pyfunc.PythonModel):
    """P(buys in the next 30 days) for each row of a customer features frame."""

    def __init__(self, model: LogisticRegression) -> None:
        self.model = model

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        return self.model.predict_proba(np.log1p(model_input[TOY_FEATURES].clip(lower=0)))[:, 1]


@dataclass(frozen=True)
class ToyData:
    fit: Any  # selection (split by customer) and the test window's model
    test: Any  # the test window


@dataclass(frozen=True)
class ToyFamily:
    name: str = "toy_buyer"
    model_name: str = "revopt_toy_buyer"
    # the event features at each training cutoff, computed in ClickHouse (ml.training_cutoffs): at the cutoffs
    # training_cutoffs names, which the training extract computes for every family of ml.families.FAMILIES (the
    # toy's are propensity's: a family of its own would get its line there)
    training_datasets: tuple[str, ...] = ("customers", "orders", EVENT_FEATURES_AT_CUTOFFS)
    nightly_datasets: tuple[str, ...] = ("customers", "orders", "customer_event_features")
    metric: Metric = ROC_AUC
    description: str = "P(a customer buys in the next 30 days), a logistic regression on six customer features."

    def shortfall(self, frames, run_date, params):
        return None if len(frames["orders"]) else f"toy for {run_date}: no orders (shop.orders)"

    def training_cutoffs(self, frames, run_date, params):
        return list(evaluation_cutoffs(run_date, 30))

    def training_data(self, frames, run_date, params):
        fit_cutoff, test_cutoff = evaluation_cutoffs(run_date, 30)
        return ToyData(purchase_set(frames, fit_cutoff, 30, params.lookback_days),
                       purchase_set(frames, test_cutoff, 30, params.lookback_days))

    @staticmethod
    def _fit(labelled, C: float) -> LogisticRegression:
        return LogisticRegression(C=C, max_iter=1000).fit(np.log1p(labelled.X[TOY_FEATURES].clip(lower=0)), labelled.y)

    def train(self, data: ToyData, params: RunParams, callbacks: Sequence) -> Trained:
        train, valid = selection_split(data.fit, params.seed)  # selection never sees the test window

        def score(C: float) -> Scored:
            predicted = ToyModel(self._fit(train, C)).predict(None, valid.X)
            return Scored(C, {"roc_auc": float(roc_auc_score(valid.y, predicted))})

        space = SearchSpace(name="toy", suggest=lambda trial: trial.suggest_float("C", 1e-3, 10.0, log=True),
                            score=score, objective="roc_auc", direction="maximize", default=1.0)
        tuned = search(space, Budget(params.n_trials, params.tuning_timeout_seconds, params.seed), callbacks)
        test = self.evaluate(data, {"C": tuned.config}, params)
        baseline = Evaluation("recency baseline", data.test.y.to_numpy(), -data.test.X["recency_days"].to_numpy())
        windows = {"train": customer_window(train.X, train.y, train.cutoff, 30, params.lookback_days, "training"),
                   "validation": customer_window(valid.X, valid.y, valid.cutoff, 30, params.lookback_days, "validation"),
                   "test": customer_window(data.test.X, data.test.y, data.test.cutoff, 30, params.lookback_days, "test")}
        return Trained(model=ToyModel(self._fit(data.fit, tuned.config)), spec={"C": tuned.config}, test=test,
                       baseline=baseline, example=data.test.X.head(5), metrics={"valid_roc_auc": tuned.value},
                       windows=windows)

    def evaluate(self, data: ToyData, spec: Mapping[str, Any], params: RunParams) -> Evaluation | None:
        if "C" not in spec:
            return None
        predicted = ToyModel(self._fit(data.fit, float(spec["C"]))).predict(None, data.test.X)
        return Evaluation("toy", data.test.y.to_numpy(), predicted)

    def nightly_input(self, frames, run_date, params):
        return frames["customer_features"].set_index("customer_id")[list(FEATURE_COLUMNS)]

    def predict_params(self, run_date, params):
        return {}


TOY = ToyFamily()


# --- the check ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded(settings):
    seed_synthetic(settings, n_customers=400, days=DAYS, start=START, seed=5)
    close_event_stores()


def test_a_new_family_trains_gates_and_scores_through_the_runners_unchanged(settings, seeded):
    assert isinstance(TOY, Family)  # the protocol is all it implements
    resources = Resources(settings)

    paths = pipeline.extract(resources, RUN_DATE, "training", PARAMS)
    first = pipeline.train(TOY, resources, RUN_DATE, paths, PARAMS)
    assert first["alias"] == "champion" and first["model_name"] == TOY.model_name  # it beat recency
    second = pipeline.train(TOY, resources, RUN_DATE, paths, PARAMS)  # gated against the first, refitted from its spec
    client = MlflowClient()
    run = client.get_run(second["run_id"])
    assert run.data.tags["revopt.gate.champion_version"] == first["model_version"]
    assert run.data.tags["revopt.gate.champion_value"] not in ("", "nan")  # the champion was refitted and scored
    # the same spec refitted on the same data: no gain, so the second stays challenger
    assert second["alias"] == "challenger" and float(run.data.tags["revopt.gate.difference"]) == 0.0
    assert run.data.metrics["gate_p_value"] == 1.0
    assert run.data.tags["revopt.family"] == TOY.name and "revopt.model_spec" in run.data.tags
    trials = client.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{second['run_id']}'")
    assert len(trials) == PARAMS.n_trials

    # the workbench (docs/workbench.md, "MLflow"): the family's own experiment, opened on runs in the UI
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == f"revopt/{TOY.name}" and experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert client.get_run(first["run_id"]).info.experiment_id == experiment.experiment_id
    # its input datasets: train, validation and test, with their window, rows and digest, and no customer id
    inputs = {tag["mlflow.data.context"]: (i.dataset, tag) for i in run.inputs.dataset_inputs
              for tag in [{t.key: t.value for t in i.tags}]}
    assert sorted(inputs) == ["testing", "training", "validation"]
    data = TOY.training_data({name: pd.read_parquet(path) for name, path in paths.items()}, RUN_DATE, PARAMS)
    train, valid = selection_split(data.fit, PARAMS.seed)
    for context, split, rows in (("training", "train", len(train.y)), ("validation", "validation", len(valid.y)),
                                 ("testing", "test", len(data.test.y))):
        dataset, tags = inputs[context]
        assert dataset.name == f"{TOY.name}-{split}" and dataset.source_type == "revopt_extract" and dataset.digest
        assert tags["revopt.rows"] == str(rows) and '"num_rows": %d' % rows in dataset.profile
        assert "customer_id" not in dataset.schema
        assert tags["revopt.first_date"] < tags["revopt.last_date"] <= RUN_DATE.isoformat()
    # each version's description says what the gate decided and why; the model says what it predicts
    first_card = client.get_model_version(TOY.model_name, first["model_version"]).description
    second_card = client.get_model_version(TOY.model_name, second["model_version"]).description
    assert "**Promoted: @champion.**" in first_card and "no champion to compare with" in first_card
    assert "**Not promoted: @challenger.**" in second_card and "### Data windows" in second_card
    assert run.data.tags["revopt.gate.reason"][1:] in second_card  # the reason, first letter capitalised
    assert f"| test | {inputs['testing'][1]['revopt.first_date']} |" in second_card
    assert client.get_registered_model(TOY.model_name).description.startswith(TOY.description)

    nightly = pipeline.extract(resources, RUN_DATE, "nightly", PARAMS)
    features = pipeline.build_features(resources, RUN_DATE, nightly)
    frames = {"customers": pd.read_parquet(nightly["customers"]), "orders": pd.read_parquet(nightly["orders"]),
              "customer_features": pd.read_parquet(features["path"])}
    scored = registry.score_family(TOY, resources, RUN_DATE, frames, PARAMS)
    champion = str(client.get_model_version_by_alias(TOY.model_name, "champion").version)
    assert scored.champion.version == champion
    loaded = mlflow.pyfunc.load_model(f"models:/{TOY.model_name}@champion")
    np.testing.assert_array_equal(loaded.predict(TOY.nightly_input(frames, RUN_DATE, PARAMS)), scored.output)
    assert len(scored.output) == features["rows"] and np.all((scored.output >= 0) & (scored.output <= 1))
