"""Minimisation (issue 20): what revopt keeps in MLflow carries no raw customer identifier.

Every family is trained on a small synthetic store whose customer ids are moved to 5,000,000,000 + i
(whole numbers nothing else in an artifact can be by chance), the nightly customer scores and the drift
check run on it, and then every file of the MLflow artifact store (models, input examples, reference
features, tables, drift report) and every param and tag of the runs is searched for the ids: decoded
(Parquet values, the text of JSON / YAML / HTML, zip members) and as raw bytes (pickles: the id as a
little-endian integer or double, or as decimal text).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import io
import re
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from ml import pipeline, registry
from ml.families import FAMILIES, budget, recommend, send_time, uplift
from ml.params import RunParams
from revopt.platform.resources import EXPERIMENT_NAME, Resources, configure_mlflow
from revopt.platform.stack import close_event_stores
from revopt.sample_data.offers import OfferDesign
from revopt.sample_data.seed import load_sources
from revopt.sample_data.synth import generate_store

pytestmark = pytest.mark.e2e

START = dt.date(2021, 2, 1)  # away from the other modules' run dates (the row-count rule looks 30 days back)
DAYS = 300
RUN_DATE = START + dt.timedelta(days=DAYS)
PARAMS = RunParams(n_trials=1, tuning_timeout_seconds=30, lookback_days=365, backtest_origins=1)
#: the store's customer ids are moved here: ten-digit whole numbers no count, price or date in an artifact is
FAR = 5_000_000_000
ID_COLUMNS = ("customer_id", "person_id")


def _far_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every customer id (0, an anonymous visitor, stays 0) moved by :data:`FAR`."""
    moved = {column: np.where(frame[column] != 0, frame[column] + FAR, 0).astype(frame[column].dtype)
             for column in ID_COLUMNS if column in frame.columns}
    return frame.assign(**moved)


@pytest.fixture(scope="module")
def own_mlflow(settings, tmp_path_factory):
    """The session's stack with an MLflow tracking DB and artifact folder of this module's own."""
    folder = tmp_path_factory.mktemp("minimisation-mlflow")
    isolated = dataclasses.replace(settings, mlflow_tracking_uri=f"sqlite:///{folder}/mlflow.db")
    mlflow.set_tracking_uri(isolated.mlflow_tracking_uri)
    for name in (EXPERIMENT_NAME, *(registry.family_experiment(family) for family in FAMILIES)):
        mlflow.create_experiment(name, artifact_location=(folder / "artifacts").as_uri())
    yield isolated, folder / "artifacts"
    configure_mlflow(settings)
    close_event_stores()  # Airflow's task processes in later modules open the chDB folder


@pytest.fixture(scope="module")
def trained(own_mlflow):
    """Every family trained on the far-id store, then tonight's customer scores and drift check."""
    settings, artifacts = own_mlflow
    store = generate_store(n_customers=1500, days=DAYS, start=START, seed=12, offers=OfferDesign())
    shop = {name: _far_ids(frame) for name, frame in store.shop.items()}
    load_sources(settings, shop, {name: _far_ids(frame) for name, frame in store.truth.items()}, _far_ids(store.events))
    resources = Resources(settings)
    configure_mlflow(settings)
    quick_media = functools.partial(budget.MediaConfig, n_bootstrap=0, n_starts=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(budget, "MediaConfig", quick_media)  # the bootstrap only draws the curves' bands
        paths = pipeline.extract(resources, RUN_DATE, "training", PARAMS)
        results = {family.name: pipeline.train(family, resources, RUN_DATE, paths, PARAMS) for family in FAMILIES}
    # tonight's scoring needs champions, whatever the gate decided on a store this small
    for family in FAMILIES:
        if "model_version" in results[family.name]:
            registry.set_alias(family.model_name, registry.CHAMPION, results[family.name]["model_version"])
    nightly = pipeline.extract(resources, RUN_DATE, "nightly", PARAMS)
    features = pipeline.build_features(resources, RUN_DATE, nightly)
    scored = pipeline.score_customers(resources, RUN_DATE, features["path"], nightly, PARAMS)
    drift = pipeline.check_drift(resources, RUN_DATE, scored, PARAMS)
    keyed = {family.name: pipeline.recommend(family, resources, RUN_DATE, nightly, PARAMS, f"minimisation_{family.name}",
                                             features_path=features["path"])
             for family in (send_time.FAMILY, recommend.FAMILY, uplift.FAMILY)}
    return {"ids": shop["customers"]["customer_id"].to_numpy(dtype="int64"), "results": results, "scored": scored,
            "drift": drift, "keyed": keyed, "artifacts": artifacts}


# --- the search ----------------------------------------------------------------------------------


_WHOLE_NUMBER = re.compile(rb"(?<![\d.])\d{10}(?![\d])")


def _in_text(data: bytes, ids: set[int]) -> set[int]:
    return {int(match) for match in _WHOLE_NUMBER.findall(data)} & ids


def _in_bytes(data: bytes, ids: np.ndarray, chunk: int = 1 << 22) -> set[int]:
    """Ids stored at any offset as a little-endian integer of 5 to 8 bytes (numpy, pickle's LONG1) or as
    a double, read in overlapping chunks."""
    padded = np.frombuffer(data + bytes(8), dtype=np.uint8)
    integers, doubles = ids.astype("uint64"), ids.astype("float64").view("uint64")
    found: set[int] = set()
    for start in range(0, len(data), chunk):
        raw = padded[start:start + chunk + 7].astype(np.uint64)
        five = sum(raw[k:len(raw) - 7 + k] << np.uint64(8 * k) for k in range(5))
        eight = sum(raw[k:len(raw) - 7 + k] << np.uint64(8 * k) for k in range(8))
        found |= {int(value) for value in five[np.isin(five, integers)]}
        found |= {int(value) for value in ids[np.isin(doubles, eight)]}
    return found


def _in_parquet(data: bytes, ids: np.ndarray) -> set[int]:
    frame = pq.read_table(io.BytesIO(data)).to_pandas()
    found: set[int] = set()
    for values in [frame.index.to_numpy(), *(frame[column].to_numpy() for column in frame.columns)]:
        if values.dtype.kind in "iuf":
            found |= {int(value) for value in values[np.isin(values, ids)]}
        else:
            found |= _in_text(" ".join(map(str, values)).encode(), set(ids.tolist()))
    return found


def _held_ids(name: str, data: bytes, ids: np.ndarray) -> set[int]:
    """The ids a file holds, decoded where it is a Parquet file or a zip, and as raw bytes and text always."""
    found = _in_text(data, set(ids.tolist())) | _in_bytes(data, ids)
    if name.endswith(".parquet"):
        found |= _in_parquet(data, ids)
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                found |= _held_ids(member, archive.read(member), ids)
    return found


def _holders(artifacts: Path, ids: np.ndarray) -> dict[str, list[int]]:
    held = {}
    for path in sorted(p for p in artifacts.rglob("*") if p.is_file()):
        found = _held_ids(path.name, path.read_bytes(), ids)
        if found:
            held[str(path.relative_to(artifacts))] = sorted(found)[:3]
    return held


# --- the checks ----------------------------------------------------------------------------------


def test_the_search_finds_an_id_however_it_is_stored():
    ids = np.array([FAR + 7, FAR + 11], dtype="int64")
    assert _held_ids("a.json", b'{"customer_id": [5000000007]}', ids) == {FAR + 7}
    assert _held_ids("a.json", b'{"p": 0.5000000007, "n": 15000000007}', ids) == set()  # not whole numbers
    assert _held_ids("model.pkl", b"\x80\x05" + ids.tobytes() + b".", ids) == {FAR + 7, FAR + 11}
    assert _held_ids("model.pkl", b"\x8a\x05" + int(FAR + 11).to_bytes(5, "little"), ids) == {FAR + 11}
    assert _held_ids("model.pkl", b"xx" + ids.astype("float64").tobytes(), ids) == {FAR + 7, FAR + 11}
    buffer = io.BytesIO()
    pd.DataFrame({"customer_id": ids.astype("float64"), "f": [1.0, 2.0]}).to_parquet(buffer, compression="gzip")
    assert FAR + 7 in _held_ids("x.parquet", buffer.getvalue(), ids)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("example.json", '{"data": [[5000000011, 1.0]]}')
    assert _held_ids("x.zip", zipped.getvalue(), ids) == {FAR + 11}


def test_mlflow_artifacts_params_and_tags_hold_no_customer_id(trained):
    skipped = {name: result["skipped"] for name, result in trained["results"].items() if "skipped" in result}
    assert not skipped, f"every family must train for the search to cover it: {skipped}"
    assert trained["drift"]["mlflow_run_id"] and trained["scored"]["rows"] > 0
    artifacts, ids = trained["artifacts"], trained["ids"]
    files = {p.name for p in artifacts.rglob("*") if p.is_file()}
    # what is searched: every family's model and input example, the drift reference and report
    assert len(list(artifacts.rglob("python_model.pkl"))) == len(FAMILIES)
    assert {"input_example.json", "serving_input_example.json", "features.parquet", "report.html"} <= files

    held = _holders(artifacts, ids)
    assert not held, f"MLflow artifacts holding raw customer ids (file: first ids): {held}"

    client = MlflowClient()
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    for run in client.search_runs(experiments, max_results=1000):
        inputs = [text for i in run.inputs.dataset_inputs for text in (
            i.dataset.schema, i.dataset.profile, i.dataset.source, *(tag.value for tag in i.tags))]
        text = " ".join([*run.data.params.values(), *run.data.tags.values(), *inputs]).encode()
        assert not _in_text(text, set(ids.tolist())), f"run {run.info.run_name}'s params, tags or inputs hold a customer id"
        assert "customer_id" not in " ".join(i.dataset.schema for i in run.inputs.dataset_inputs), run.info.run_name
    # every family's run logged its windows: train and test, and validation but for the budget (docs/workbench.md)
    for family in FAMILIES:
        run = client.get_run(trained["results"][family.name]["run_id"])
        contexts = sorted(tag.value for i in run.inputs.dataset_inputs for tag in i.tags
                          if tag.key == "mlflow.data.context")
        expected = ["testing", "training"] if family is budget.FAMILY else ["testing", "training", "validation"]
        assert contexts == expected, family.name
        assert all(int({t.key: t.value for t in i.tags}["revopt.rows"]) > 0 for i in run.inputs.dataset_inputs), \
            family.name
        assert client.get_model_version(family.model_name, trained["results"][family.name]["model_version"]) \
            .description.count("### Data windows") == 1, family.name


def test_the_models_logged_with_renumbered_examples_still_take_and_give_raw_customer_ids(trained):
    """The pyfuncs whose input and output are keyed by customer score tonight's raw ids, as published."""
    ids = set(trained["ids"].tolist())
    for family, result in trained["keyed"].items():
        assert "skipped" not in result, f"{family}: {result}"
        published = pd.read_parquet(result["path"])["customer_id"]
        assert len(published) and set(published) <= ids, family
