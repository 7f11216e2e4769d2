"""Erasure (issue 20): after ``revopt erase`` a byte-level search of everything revopt wrote finds nothing of the
person, and the next nightly run publishes nothing for them.

A small synthetic store with identities (devices, anonymous sessions, duplicate accounts, contacts) is drawn;
one person with two accounts, orders on both and devices of their own gets ten-digit account ids nothing else
can equal by chance, and their second account the first one's e-mail hash (so stitching merges the two). Three
families are trained (models, input examples, the propensity reference features), a run with MLflow artifacts
as revopt logged them before minimisation is added (raw ids, pseudonyms), the nightly runs through Airflow and
the affinity refresh directly, so every kind of state exists. The person is erased by their first account;
then the scores schema (``COPY ... TO STDOUT``), the run folders, the MLflow artifact folder and tracking
database, and Airflow's logs and database are searched: raw bytes (the ids as whole decimal numbers and as
little-endian int64 / float64), Parquet decoded to text, zip and gzip members, SQLite ``.dump``; for the ids,
the person's device ids, e-mail / phone hashes and pseudonyms. The next nightly run publishes nothing for them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import re
import sqlite3
import tempfile
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ml import pipeline, registry
from ml.families import FAMILIES, propensity, recommend, send_time
from ml.params import RunParams
from revopt import cli
from revopt.platform.erasure import erase
from revopt.platform.postgres import read_frame
from revopt.platform.privacy import id_secret, pseudonymise, subject_hash
from revopt.platform.resources import Resources
from revopt.platform.stack import close_event_stores, connect_postgres, event_store
from revopt.sample_data.identity import IdentityDesign, apply_identity
from revopt.sample_data.seed import load_store
from revopt.sample_data.synth import generate_store

pytestmark = pytest.mark.e2e

START = dt.date(2008, 1, 7)  # a Monday, far from the other modules' run dates and before them (the `_latest` views)
DAYS = 200
RUN_DATE = START + dt.timedelta(days=DAYS)
SEED = 2020
#: the person's accounts get these ids: ten-digit whole numbers no count, price or date can be by chance
FIRST, SECOND = 7340958221, 7340958229
TRAINED = (propensity.FAMILY, send_time.FAMILY, recommend.FAMILY)
PARAMS = RunParams(n_trials=1, tuning_timeout_seconds=30, lookback_days=365, backtest_origins=1)
#: probabilistic matching off: the person's accounts merge by their shared e-mail hash, deterministically
DAG_PARAMS = ["--param", "identity_match_threshold=1"]


def _choose_person(store) -> tuple[int, int, list[str]]:
    """A person with two accounts that both ordered, and two or more devices nobody else uses."""
    identities, devices, orders = store.truth["identities"], store.truth["devices"], store.shop["orders"]
    accounts = identities.groupby("person_id")["customer_id"].agg(sorted)
    shared = set(devices.loc[devices.duplicated("anonymous_id", keep=False), "anonymous_id"])
    buyers = set(orders["customer_id"])
    for person, ids in accounts.items():
        own = devices.loc[devices["person_id"] == person, "anonymous_id"]
        if len(ids) == 2 and set(ids) <= buyers and len(own) >= 2 and not set(own) & shared:
            return ids[0], ids[1], sorted(own)
    raise AssertionError("the drawn store has no person with two accounts with orders and devices of their own")


def _same_email(contacts: pd.DataFrame, first: int, second: int) -> pd.DataFrame:
    """The contacts with the second account showing the first one's e-mail hash (stitching then merges them)."""
    email = contacts.loc[contacts["customer_id"] == first, "email_hash"].iloc[0]
    return contacts.assign(email_hash=contacts["email_hash"].where(contacts["customer_id"] != second, email))


def _renumber(frame: pd.DataFrame, moved: dict[int, int]) -> pd.DataFrame:
    columns = {c: frame[c].replace(moved).astype(frame[c].dtype) for c in ("customer_id", "person_id")
               if c in frame.columns}
    return frame.assign(**columns)


@pytest.fixture(scope="module")
def state(settings, forget_models):
    """The store loaded, three families trained, the nightly and the affinity refresh run; the person's
    identifiers (accounts, devices, contact hashes, pseudonyms)."""
    store = apply_identity(generate_store(n_customers=500, days=DAYS, start=START, seed=SEED), SEED, IdentityDesign())
    first, second, devices = _choose_person(store)
    moved = {first: FIRST, second: SECOND}
    store.shop["customer_contacts"] = _same_email(store.shop["customer_contacts"], first, second)
    store = type(store)(shop={name: _renumber(f, moved) for name, f in store.shop.items()},
                        truth={name: _renumber(f, moved) for name, f in store.truth.items()},
                        events=_renumber(store.events, moved))
    load_store(settings, store)
    contacts = store.shop["customer_contacts"].set_index("customer_id").loc[[FIRST, SECOND]]
    hashes = sorted({h for h in contacts[["email_hash", "phone_hash"]].to_numpy().ravel() if isinstance(h, str) and h})
    forget_models([family.model_name for family in FAMILIES])  # only this store's champions serve tonight

    resources = Resources(settings)
    paths = pipeline.extract(resources, RUN_DATE, "training", PARAMS)
    for family in TRAINED:
        trained = pipeline.train(family, resources, RUN_DATE, paths, PARAMS)
        assert "model_version" in trained, f"{family.name} did not train: {trained}"
        registry.set_alias(family.model_name, registry.CHAMPION, trained["model_version"])
    secret = id_secret(settings)
    _log_artifacts_from_before_minimisation(resources, paths["customers"], secret)
    close_event_stores()  # Airflow's task processes open the chDB folder next
    assert cli.main(["run", "--dag", "nightly", "--date", RUN_DATE.isoformat(), *DAG_PARAMS]) == 0
    refreshed = pipeline.refresh_affinity(resources, dt.datetime.combine(RUN_DATE, dt.time(), dt.timezone.utc), PARAMS)
    assert pipeline.publish_affinity(resources, RUN_DATE, refreshed) > 0
    close_event_stores()
    _leave_a_staged_slice(settings)
    return {"ids": [FIRST, SECOND], "devices": devices, "hashes": hashes,
            "pseudonyms": sorted(pseudonymise([FIRST, SECOND, *devices], secret, purpose="id")), "secret": secret}


def _leave_a_staged_slice(settings) -> None:
    """A partitioned publish of the next night that stopped before ``publish_staged``: the person's scores
    sit in a staging table readers never see (revopt.platform.postgres.stage_slice)."""
    import json

    from revopt.platform.postgres import discard_staged, stage_slice

    staged_date = RUN_DATE + dt.timedelta(days=1)
    with connect_postgres(settings) as conn:
        rows = read_frame(conn, "SELECT * FROM scores.customer_scores WHERE run_date = %s AND customer_id = ANY(%s)",
                          (RUN_DATE, [FIRST, SECOND]))
        assert len(rows), "the person should have tonight's scores"
        rows = rows.assign(run_date=staged_date, top_factors=rows["top_factors"].map(json.dumps))
        discard_staged(conn, "scores.customer_scores", staged_date)
        stage_slice(conn, "scores.customer_scores", staged_date, rows)


def _log_artifacts_from_before_minimisation(resources: Resources, customers_path: str, secret: bytes) -> None:
    """A run with the artifacts revopt logged before minimisation (issue 20): reference features and an input
    example keyed by raw customer ids, a table keyed by pseudonyms. A store that upgrades still has them."""
    customers = pd.read_parquet(customers_path)[["customer_id", "email_opt_in"]]
    assert {FIRST, SECOND} <= set(customers["customer_id"])
    resources.use_tracking()
    with mlflow.start_run(run_name="before minimisation"):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "features.parquet"
            customers.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), artifact_path="reference")
        mlflow.log_dict({"columns": list(customers.columns), "data": customers.head(50).values.tolist()
                         + customers.loc[customers["customer_id"] >= FIRST].values.tolist()}, "input_example.json")
        keyed = customers.assign(customer_id=pseudonymise(customers["customer_id"], secret, purpose="id"))
        mlflow.log_table(keyed, "customers.json")


# --- the search ----------------------------------------------------------------------------------


def _patterns(state) -> dict[str, re.Pattern[bytes]]:
    whole = {str(i): re.compile(rb"(?<![\d.])%d(?![\d])" % i) for i in state["ids"]}
    texts = {t: re.compile(re.escape(t.encode())) for t in [*state["devices"], *state["hashes"], *state["pseudonyms"]]}
    binary = {f"{i} as int64": re.compile(re.escape(np.int64(i).tobytes())) for i in state["ids"]}
    binary |= {f"{i} as float64": re.compile(re.escape(np.float64(i).tobytes())) for i in state["ids"]}
    return whole | texts | binary


def _found(data: bytes, patterns: dict[str, re.Pattern[bytes]]) -> list[str]:
    return [name for name, pattern in patterns.items() if pattern.search(data)]


def _decoded(path: Path, data: bytes) -> list[tuple[str, bytes]]:
    """The readable forms of a file besides its bytes: Parquet as text, zip and gzip members, SQLite dumps."""
    forms = []
    if path.suffix == ".parquet":
        forms.append(("decoded", pq.read_table(io.BytesIO(data)).to_pandas().to_csv(index=False).encode()))
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            forms += [(f"member {m}", archive.read(m)) for m in archive.namelist()]
    if data[:2] == b"\x1f\x8b":
        forms.append(("gunzipped", gzip.decompress(data)))
    if data[:16] == b"SQLite format 3\x00":
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            forms.append((".dump", "\n".join(conn.iterdump()).encode()))
    return forms


def _search(settings, state) -> dict[str, list[str]]:
    """Where anything of the person is found: location -> what."""
    patterns = _patterns(state)
    found: dict[str, list[str]] = {}
    roots = [settings.runs_dir, settings.mlflow_dir, settings.airflow_home]
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            for form, content in [("bytes", data), *_decoded(path, data)]:
                if hits := _found(content, patterns):
                    found[f"{path.relative_to(settings.home)} ({form})"] = hits
    with connect_postgres(settings) as conn:
        # scores_partitions: the partitions of the tables partitioned by run date, and any staged run date
        tables = [t for (t,) in conn.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables "
                                             "WHERE table_schema IN ('scores', 'scores_partitions') "
                                             "AND table_type = 'BASE TABLE' ORDER BY 1").fetchall()]
        for table in tables:
            dump = io.BytesIO()
            with conn.cursor().copy(f"COPY (SELECT * FROM {table}) TO STDOUT") as copy:  # a partitioned one too
                for chunk in copy:
                    dump.write(chunk)
            if hits := _found(dump.getvalue(), patterns):
                found[table] = hits
    return found


def test_the_search_finds_the_person_however_they_are_stored(tmp_path):
    state = {"ids": [FIRST], "devices": ["d0123456789abcdef"], "hashes": [], "pseudonyms": []}
    patterns = _patterns(state)
    assert _found(b"customer 7340958221 scored", patterns) == ["7340958221"]
    assert _found(b"0.7340958221, 17340958221, 73409582210", patterns) == []
    assert _found(b"\x80" + np.int64(FIRST).tobytes(), patterns) == ["7340958221 as int64"]
    path = tmp_path / "x.parquet"
    pd.DataFrame({"customer_id": [FIRST, 2]}).to_parquet(path, compression="gzip")
    assert any(_found(content, patterns) for _, content in _decoded(path, path.read_bytes()))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("example.json", '{"device": "d0123456789abcdef"}')
    assert any(_found(c, patterns) for _, c in _decoded(tmp_path / "x.zip", zipped.getvalue()))


def test_every_kind_of_state_holds_the_person_before_the_erasure(settings, state):
    found = _search(settings, state)
    where = " ".join(found)
    for kind in ("extract/orders.parquet", "features/customer_features.parquet", "scores/customer_scores.part-",
                 "scores/identity_map.parquet", "reference/features.parquet", "input_example.json",
                 "customers.json", "scores.customer_scores", "scores_partitions.customer_scores__stage",
                 "scores.identity_map", "scores.customer_affinity", "scores.recommendations"):
        assert kind in where, f"the person should be in {kind} before the erasure; found in {sorted(found)}"
    assert (settings.run_dir(RUN_DATE) / "airflow-revopt_nightly.log").stat().st_size > 0  # searched too
    devices = [d for d in state["devices"] if any(d in hits for hits in found.values())]
    assert devices, "the identity map should link the person's devices"


def test_after_erasure_nothing_of_the_person_is_left(settings, state):
    report = erase(settings, customer_id=FIRST, reason="e2e ticket 1")
    close_event_stores()
    found = _search(settings, state)
    assert not found, "found after the erasure (where: what):\n" + "\n".join(f"{k}: {v}" for k, v in found.items())
    assert report.accounts == [FIRST, SECOND]
    assert set(report.anonymous_ids) <= set(state["devices"]) and report.anonymous_ids
    assert not report.left
    assert report.removed["scores.customer_scores"] >= 1 and report.removed["run folders: Parquet rows"] > 0
    assert report.removed["mlflow artifacts: Parquet rows"] == 2 and report.removed["mlflow artifacts: JSON items"] == 4
    with connect_postgres(settings) as conn:
        log = conn.execute("SELECT subject_hash, requested_by, accounts, anonymous_ids, account_hashes, reason, "
                           "removed::text FROM scores.erasure_log").fetchall()
    assert len(log) == 1
    subject, requested_by, accounts, devices, hashes, reason, removed = log[0]
    assert subject == subject_hash("customer_id", FIRST, state["secret"]) and requested_by == "customer_id"
    assert (accounts, devices, reason) == (2, len(report.anonymous_ids), "e2e ticket 1")
    assert sorted(hashes) == sorted(pseudonymise([FIRST, SECOND], state["secret"], purpose="erasure:customer_id"))
    assert str(FIRST) not in " ".join(map(str, log[0])) and str(SECOND) not in removed


def test_the_next_nightly_publishes_nothing_for_the_erased_person(settings, state):
    assert cli.main(["run", "--dag", "nightly", "--date", RUN_DATE.isoformat(), *DAG_PARAMS]) == 0
    ids = state["ids"]
    with connect_postgres(settings) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.columns WHERE table_schema = 'scores' "
                              "AND column_name = 'customer_id' ORDER BY 1").fetchall()
        published = {table: conn.execute(f"SELECT count(*) FROM scores.{table} WHERE run_date = %s",
                                         (RUN_DATE,)).fetchone()[0] for (table,) in tables}
        rows = {table: conn.execute(f"SELECT count(*) FROM scores.{table} WHERE customer_id = ANY(%s)",
                                    (ids,)).fetchone()[0] for (table,) in tables}
        linked = conn.execute("SELECT count(*) FROM scores.identity_map WHERE identifier = ANY(%s)",
                              ([str(i) for i in ids] + state["devices"],)).fetchone()[0]
    assert published["customer_scores"] > 0 and published["identity_map"] > 0, published
    assert not any(rows.values()) and linked == 0, rows
    found = _search(settings, state)
    assert not found, "found after the next runs (where: what):\n" + "\n".join(f"{k}: {v}" for k, v in found.items())
    store = event_store(settings)
    try:
        resolution = store.query_df(f"SELECT identifier, customer_id FROM {store.database}.identity_resolution "
                                    "WHERE kind = 'customer_id' AND has({ids:Array(UInt64)}, toUInt64OrZero(identifier))",
                                    {"ids": ids})
        tiers = store.query_df(f"SELECT count() AS n FROM {store.database}.campaign_tiers "
                               "WHERE has({ids:Array(UInt64)}, customer_id)", {"ids": ids})
    finally:
        close_event_stores()
    assert set(resolution["customer_id"]) == {0} and len(resolution) == 2  # their events read as anonymous
    assert int(tiers["n"].iloc[0]) == 0
