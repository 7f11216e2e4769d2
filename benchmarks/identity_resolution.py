"""Benchmark: identity resolution (:mod:`ml.identity.stitch`) against the generator's truth, and what it does to
purchase propensity.

1. **truth** (no database): :func:`revopt.sample_data.synth.generate_store` (365 days from 2024-01-01) through
   :func:`revopt.sample_data.identity.apply_identity` (the default :class:`IdentityDesign`: ~4 % of people with a
   second account, 35 % of known customers' web sessions anonymous, multi-device people, a few shared devices).
   The inputs of :func:`~ml.identity.stitch.resolve` are built from the frames as ``resolve_identities`` reads
   them from the stores (the logins: per device and account, the first and last event and the sessions of the
   events carrying both), as of the day after the data. Measured against ``truth.identities`` and
   ``truth.devices``:

   - **merges**: pairwise precision and recall of "same person" over account pairs (a pair is predicted one
     person when both accounts map to one canonical customer; true when they share a ``person_id``), for
     e-mail hashes alone and with the probabilistic matches (:func:`ml.identity.matching.match_accounts`, run
     once per store at the lowest threshold and filtered for the others: the model's training does not depend
     on the threshold);
   - **devices**: precision = share of linked devices linked to their one true person (a linked device that
     is shared in truth counts as wrong); recall = share of single-person devices that logged in at least once
     and were linked to their person; shared devices (several people in ``truth.devices``) left unlinked;
   - **anonymous sessions**: of known customers' web sessions (the drawn store's owner, before
     ``apply_identity``), the share that carry no customer id at all, and of those the share the device links
     now count for the right person (and for a wrong one).

2. **auc** (embedded stack in a temp ``REVOPT_HOME``, one subprocess per seed: chDB opens one folder per
   process): ``seed_synthetic(..., identity=IdentityDesign())``, then the training extract and the propensity
   family (:data:`ml.families.propensity.FAMILY`, ``--n-trials`` Optuna trials) trained three times with the
   same params and seed, each from no champion: **A** without resolution (no ``scores.identity_map``, no
   ``identity_resolution`` rows); **B** after ``resolve_identities``, publishing ``scores.identity_map`` and
   ``apply_identity_map`` (what the product does); **B0** the same with only the links first seen before the
   fit cutoff. B0 exists because the training extract reads ``customer_daily_events`` once, as of the run
   date, so a device first linked after a training cutoff still adds its earlier anonymous sessions to the
   features at that cutoff (the customers who buy log in at checkout): B0 is free of that and a lower bound
   (it also misses the links of the month between the cutoffs). Test ROC AUC is the MLflow run's
   ``test_roc_auc`` (raw scores, the gate's), recomputed from the logged model as a check. The populations
   differ (A scores accounts, duplicates and their split histories included; B people), so every model is also
   scored on the *common* population: the customers in all three test sets (canonical ids, which are accounts
   in A too) with B's labels (the person bought in the window), each model on its own variant's features.

Prints markdown::

    .venv/bin/python benchmarks/identity_resolution.py --section truth --customers 5000 20000 --seeds 1 2 3
    .venv/bin/python benchmarks/identity_resolution.py --section truth --customers 100000 --seeds 1
    .venv/bin/python benchmarks/identity_resolution.py --section auc --customers 5000 --seeds 1 2 --n-trials 6
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger("benchmarks.identity_resolution")

ROOT = Path(__file__).resolve().parents[1]
#: the code measured, named by content hash in the output (it changes while the issue is in progress)
MEASURED = ("ml/identity/stitch.py", "ml/identity/matching.py", "revopt/sample_data/identity.py")
START = dt.date(2024, 1, 1)
DAYS = 365
#: values of the run param ``identity_match_threshold`` (0.5 .. 1) measured; its default is added
THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
#: the issue's targets for merges
TARGET_PRECISION, TARGET_RECALL = 0.95, 0.90


# --- 1. against the truth -------------------------------------------------------------------------------------


def identity_store(n_customers: int, seed: int, days: int = DAYS):
    """The synthetic store with identities, and each event's true owner (the drawn store's customer id: the
    person, 0 for anonymous visitors), row-aligned with the store's events."""
    from revopt.sample_data.identity import IdentityDesign, apply_identity
    from revopt.sample_data.synth import generate_store

    drawn = generate_store(n_customers, days, START, seed)
    owner = drawn.events["customer_id"].to_numpy(dtype=np.int64)
    return apply_identity(drawn, seed, IdentityDesign()), owner


def logins_of(events: pd.DataFrame) -> pd.DataFrame:
    """What ``resolve_identities`` reads from ClickHouse: per (device, account) of the events carrying both,
    the first and last event and the distinct sessions."""
    both = events.loc[(events["anonymous_id"] != "") & (events["customer_id"] != 0),
                      ["anonymous_id", "customer_id", "event_time", "session_id"]]
    grouped = both.groupby(["anonymous_id", "customer_id"], sort=False, observed=True)
    logins = grouped.agg(first_seen=("event_time", "min"), last_seen=("event_time", "max"),
                         sessions=("session_id", "nunique")).reset_index()
    return logins.astype({"customer_id": "int64", "sessions": "int64"})


def default_threshold() -> float:
    """The run param's default ``identity_match_threshold`` (the devices and sessions are measured at it)."""
    from ml.params import RunParams

    return RunParams().identity_match_threshold


def source_hashes() -> dict[str, str]:
    return {name: hashlib.sha256((ROOT / name).read_bytes()).hexdigest()[:12] for name in MEASURED}


def _pairs(sizes: pd.Series) -> int:
    k = sizes.to_numpy(dtype=np.int64)
    return int((k * (k - 1) // 2).sum())


def canonical_of(identity_map: pd.DataFrame, accounts: np.ndarray) -> np.ndarray:
    """Each account's canonical customer under the map (itself when the map does not move it)."""
    rows = identity_map.loc[identity_map["identifier_type"] == "customer_id"]
    moved = pd.Series(rows["customer_id"].to_numpy(dtype=np.int64), index=rows["identifier"].astype(np.int64))
    return pd.Series(accounts).map(moved).fillna(pd.Series(accounts)).to_numpy(dtype=np.int64)


def merge_scores(identity_map: pd.DataFrame, identities: pd.DataFrame) -> dict[str, float]:
    """Pairwise precision and recall of "same person" over all account pairs."""
    accounts = identities["customer_id"].to_numpy(dtype=np.int64)
    frame = pd.DataFrame({"canonical": canonical_of(identity_map, accounts),
                          "person": identities["person_id"].to_numpy(dtype=np.int64)})
    predicted = _pairs(frame.groupby("canonical").size())
    true = _pairs(frame.groupby("person").size())
    hits = _pairs(frame.groupby(["canonical", "person"]).size())
    return {"true_pairs": true, "predicted_pairs": predicted,
            "precision": hits / predicted if predicted else float("nan"),
            "recall": hits / true if true else float("nan")}


def device_scores(identity_map: pd.DataFrame, identities: pd.DataFrame, devices: pd.DataFrame,
                  logins: pd.DataFrame) -> dict[str, float]:
    """Linked devices against ``truth.devices`` (module docstring)."""
    person_of = pd.Series(identities["person_id"].to_numpy(dtype=np.int64),
                          index=identities["customer_id"].to_numpy(dtype=np.int64))
    linked = identity_map.loc[identity_map["identifier_type"] == "anonymous_id"]
    linked_person = pd.Series(person_of[linked["customer_id"].to_numpy(dtype=np.int64)].to_numpy(),
                              index=linked["identifier"].astype(str).to_numpy())
    people = devices.groupby("anonymous_id")["person_id"]
    n_people, only = people.nunique(), people.first()
    single = only[n_people == 1]
    shared = n_people.index[n_people > 1]
    right = linked_person.index.isin(single.index) & (
        linked_person.to_numpy() == single.reindex(linked_person.index).fillna(-1).to_numpy(dtype=np.int64))
    logged_in = pd.Index(logins["anonymous_id"].unique())
    single_logged_in = single.index.intersection(logged_in)
    found = linked_person.reindex(single_logged_in)
    shared_logged_in = shared.intersection(logged_in)
    return {
        "devices": int(len(n_people)), "linked": int(len(linked_person)),
        "precision": float(right.mean()) if len(linked_person) else float("nan"),
        "linked_shared": int(linked_person.index.isin(shared).sum()),
        "single_logged_in": int(len(single_logged_in)),
        "recall": float((found.to_numpy() == single[single_logged_in].to_numpy()).mean())
        if len(single_logged_in) else float("nan"),
        "single_never_logged_in": int(len(single) - len(single_logged_in)),
        "shared": int(len(shared)), "shared_logged_in": int(len(shared_logged_in)),
        "shared_unlinked": float((~shared.isin(linked_person.index)).mean()) if len(shared) else float("nan"),
    }


def session_scores(identity_map: pd.DataFrame, identities: pd.DataFrame, events: pd.DataFrame,
                   owner: np.ndarray) -> dict[str, float]:
    """Known customers' web sessions that carry no customer id, and how many the device links give back to the
    right person (every link applies: a read as of the run date)."""
    web = (events["session_id"].to_numpy() != 0)
    frame = pd.DataFrame({"session": events["session_id"].to_numpy()[web],
                          "recorded": events["customer_id"].to_numpy(dtype=np.int64)[web],
                          "device": events["anonymous_id"].to_numpy()[web], "owner": owner[web]})
    sessions = frame.groupby("session", sort=False).agg(recorded=("recorded", "max"), device=("device", "first"),
                                                         owner=("owner", "first"))
    known = sessions.loc[sessions["owner"] != 0]
    anonymous = known.loc[known["recorded"] == 0]
    person_of = pd.Series(identities["person_id"].to_numpy(dtype=np.int64),
                          index=identities["customer_id"].to_numpy(dtype=np.int64))
    linked = identity_map.loc[identity_map["identifier_type"] == "anonymous_id"]
    device_person = pd.Series(person_of[linked["customer_id"].to_numpy(dtype=np.int64)].to_numpy(),
                              index=linked["identifier"].astype(str).to_numpy())
    given = anonymous["device"].map(device_person)
    return {"known_sessions": int(len(known)), "anonymous_share": len(anonymous) / len(known) if len(known) else np.nan,
            "recovered": float((given == anonymous["owner"]).mean()) if len(anonymous) else float("nan"),
            "wrong": float((given.notna() & (given != anonymous["owner"])).mean()) if len(anonymous) else float("nan")}


def measure_truth(n_customers: int, seed: int, thresholds: tuple[float, ...]) -> dict[str, object]:
    """One store: merges per method and threshold, devices, anonymous sessions, timings."""
    from ml.identity.matching import empty_matches, match_accounts
    from ml.identity.stitch import resolve

    timings: dict[str, float] = {}
    hashes = source_hashes()
    started = time.perf_counter()
    store, owner = identity_store(n_customers, seed)
    timings["draw"] = time.perf_counter() - started
    shop, truth, events = store.shop, store.truth, store.events
    accounts = shop["customers"][["customer_id", "signup_date"]]
    contacts = shop["customer_contacts"]
    run_date = START + dt.timedelta(days=DAYS)

    started = time.perf_counter()
    logins = logins_of(events)
    timings["logins"] = time.perf_counter() - started
    started = time.perf_counter()
    matches = match_accounts(contacts, min(*thresholds, default_threshold()))
    timings["match"] = time.perf_counter() - started

    identities = truth["identities"]
    merges: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    email_only = resolve(accounts, contacts, logins, empty_matches(), run_date, 1.0)
    timings["resolve"] = time.perf_counter() - started
    merges["email only"] = merge_scores(email_only.identity_map, identities)
    resolutions = {}
    for threshold in sorted({*thresholds, default_threshold()}):
        kept = matches.loc[matches["match_probability"] >= threshold]
        resolutions[threshold] = resolve(accounts, contacts, logins, kept, run_date, threshold)
        merges[f"+ probabilistic >= {threshold:g}"] = {
            **merge_scores(resolutions[threshold].identity_map, identities), "matched_pairs": int(len(kept))}
    default = resolutions[default_threshold()]
    return {
        "customers": n_customers, "seed": seed, "accounts": int(len(accounts)), "events": int(len(events)),
        "duplicate_accounts": int((identities["customer_id"] != identities["person_id"]).sum()),
        "merges": merges,
        "devices": device_scores(default.identity_map, identities, truth["devices"], logins),
        "sessions": session_scores(default.identity_map, identities, events, owner),
        "summary": default.summary, "seconds": timings, "sources": hashes,
    }


def print_truth(rows: list[dict[str, object]]) -> None:
    print(f"\n## Merges vs truth.identities (pairwise; targets precision >= {TARGET_PRECISION}, "
          f"recall >= {TARGET_RECALL})\n")
    print("| customers | seed | accounts | duplicates | method | true pairs | predicted | precision | recall |")
    print("|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for row in rows:
        for method, m in row["merges"].items():
            print(f"| {row['customers']} | {row['seed']} | {row['accounts']} | {row['duplicate_accounts']} | {method} | "
                  f"{m['true_pairs']} | {m['predicted_pairs']} | {m['precision']:.4f} | {m['recall']:.4f} |")
    print(f"\n## Devices vs truth.devices, anonymous sessions (at the default threshold {default_threshold():g})\n")
    print("| customers | seed | devices | linked | precision | linked shared | single, logged in | recall | "
          "single, never logged in | shared | shared, logged in | shared unlinked | known sessions | anonymous | "
          "recovered | wrong person |")
    print("|" + "---:|" * 16)
    for row in rows:
        d, s = row["devices"], row["sessions"]
        print(f"| {row['customers']} | {row['seed']} | {d['devices']} | {d['linked']} | {d['precision']:.4f} | "
              f"{d['linked_shared']} | {d['single_logged_in']} | {d['recall']:.4f} | {d['single_never_logged_in']} | "
              f"{d['shared']} | {d['shared_logged_in']} | {d['shared_unlinked']:.3f} | {s['known_sessions']} | "
              f"{s['anonymous_share']:.3f} | {s['recovered']:.4f} | {s['wrong']:.4f} |")
    print("\nSources measured (sha256, 12 hex digits): "
          + "; ".join(sorted({json.dumps(row["sources"]) for row in rows})))
    print("\n## Seconds\n")
    print("| customers | seed | events | draw + apply_identity | logins | match_accounts | resolve |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        t = row["seconds"]
        print(f"| {row['customers']} | {row['seed']} | {row['events']} | {t['draw']:.1f} | {t['logins']:.1f} | "
              f"{t['match']:.1f} | {t['resolve']:.2f} |")


# --- 2. propensity with and without resolution ---------------------------------------------------------------


def measure_auc(n_customers: int, seed: int, n_trials: int) -> dict[str, object]:
    """Variants A and B on one seeded embedded stack (module docstring); runs in its own process."""
    with tempfile.TemporaryDirectory(prefix="revopt-identity-") as home:
        os.environ["REVOPT_HOME"] = home
        for key in ("MLFLOW_TRACKING_URI", "AIRFLOW_HOME"):
            os.environ.pop(key, None)
        from revopt.platform.config import load_settings
        from revopt.platform.schema import init_stores
        from revopt.platform.stack import close_event_stores, stop_stack

        settings = load_settings()
        init_stores(settings)
        close_event_stores()
        try:
            return _variants(settings, n_customers, seed, n_trials)
        finally:
            close_event_stores()
            stop_stack(settings)


def _variants(settings, n_customers: int, seed: int, n_trials: int) -> dict[str, object]:
    import mlflow
    from mlflow import MlflowClient

    from features.customer import evaluation_cutoffs
    from ml import pipeline, publishing
    from ml.families.propensity import FAMILY
    from ml.identity.stitch import apply_identity_map, resolve_identities
    from ml.params import TRAINING, RunParams
    from revopt.platform.extract import read_extract
    from revopt.platform.resources import Resources
    from revopt.platform.stack import close_event_stores
    from revopt.sample_data.identity import IdentityDesign
    from revopt.sample_data.seed import seed_synthetic

    params = RunParams(n_trials=n_trials)
    hashes = source_hashes()
    run_date = START + dt.timedelta(days=DAYS)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    seed_synthetic(settings, n_customers=n_customers, days=DAYS, start=START, seed=seed, identity=IdentityDesign())
    close_event_stores()
    seconds["seed"] = time.perf_counter() - started
    logger.info("seeded %d customers (seed %d) in %.0f s", n_customers, seed, seconds["seed"])
    resources = Resources(settings)
    resources.use_tracking()
    client = MlflowClient()
    test_cutoff = evaluation_cutoffs(run_date, FAMILY.horizon(params))[1]
    variants: dict[str, dict[str, object]] = {}

    def variant(name: str) -> dict[str, object]:
        started = time.perf_counter()
        paths = pipeline.extract(resources, run_date, TRAINING, params)
        frames = read_extract({dataset: paths[dataset] for dataset in FAMILY.training_datasets})
        seconds[f"extract {name}"] = time.perf_counter() - started
        started = time.perf_counter()
        trained = pipeline.train(FAMILY, resources, run_date, paths, params)
        seconds[f"train {name}"] = time.perf_counter() - started
        logger.info("variant %s trained: %s (%s)", name, trained, seconds)
        run = client.get_run(trained["run_id"])
        model = mlflow.pyfunc.load_model(f"runs:/{trained['run_id']}/model").unwrap_python_model()
        # the next variant starts without a champion, as this one did (no gate refit of this one's spec)
        client.delete_registered_model(FAMILY.model_name)
        return {"run_id": trained["run_id"], "metrics": run.data.metrics, "params": run.data.params,
                "test": FAMILY.labelled_set(frames, test_cutoff, params), "model": model,
                "customers": int(len(frames["customers"]))}

    a = variant("A")
    started = time.perf_counter()
    resolved = resolve_identities(resources, run_date, params)
    seconds["resolve"] = time.perf_counter() - started
    full = pd.read_parquet(resolved["identity_map"])
    # B0: only the links first seen before the fit cutoff, so no feature at either cutoff uses a later link
    # (a lower bound: it also misses the links of the 30 days between the cutoffs)
    fit_cutoff = evaluation_cutoffs(run_date, FAMILY.horizon(params))[0]
    early = full.loc[pd.to_datetime(full["first_seen"], utc=True) < fit_cutoff]
    published, applied = {}, {}
    for name, frame in (("B0", early), ("B", full)):
        started = time.perf_counter()
        path = resources.write_output(run_date, f"identity_map_{name}", frame)
        published[name] = publishing.publish(resources, run_date, "scores.identity_map", str(path))
        applied[name] = apply_identity_map(resources)["links_in_clickhouse"]
        seconds[f"publish + apply {name}"] = time.perf_counter() - started
        variants[name] = variant(name)
    variants["A"] = a

    b = variants["B"]
    common = b["test"].X.index
    for v in variants.values():
        common = common.intersection(v["test"].X.index)
    labels = b["test"].y.loc[common].to_numpy()
    # exposure to the leak: B's test customers whose device was first linked after the test cutoff
    late = full.loc[(full["identifier_type"] == "anonymous_id")
                    & (pd.to_datetime(full["first_seen"], utc=True) >= test_cutoff), "customer_id"].unique()
    exposed = b["test"].y.index.isin(late)
    result: dict[str, object] = {
        "customers": n_customers, "seed": seed, "n_trials": n_trials, "seconds": seconds, "sources": hashes,
        "threshold": params.identity_match_threshold,
        "resolution": {k: v for k, v in resolved.items() if k != "identity_map"}, "published_rows": published,
        "links_in_clickhouse": applied, "common": int(len(common)), "common_positive_rate": float(labels.mean()),
        "fit_cutoff": str(fit_cutoff.date()), "test_cutoff": str(test_cutoff.date()),
        "late_linked_test_customers": int(exposed.sum()),
        "late_linked_positive_rate": float(b["test"].y[exposed].mean()) if exposed.any() else float("nan"),
    }
    for name, v in variants.items():
        test = v["test"]
        result[name] = {
            "customers": v["customers"], "n_test": int(len(test.y)), "positive_rate": float(test.y.mean()),
            "test_roc_auc": v["metrics"]["test_roc_auc"], "baseline_roc_auc": v["metrics"].get("baseline_roc_auc"),
            "valid_roc_auc": v["metrics"].get("valid_roc_auc"), "best_family": v["params"].get("best_family"),
            "recomputed_roc_auc": _roc_auc(test.y.to_numpy(), _raw_scores(v["model"], test.X)),
            "common_roc_auc": _roc_auc(labels, _raw_scores(v["model"], test.X.loc[common])),
        }
    return result


def _raw_scores(model, X: pd.DataFrame) -> np.ndarray:
    """The classifier's scores before calibration (what ``test_roc_auc`` ranks) of a published pyfunc's model."""
    from ml.families.binary import with_btyd

    return np.asarray(model.model.model.predict_proba(with_btyd(X, model.btyd)), dtype=np.float64)


def _roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores))


def run_auc_worker(n_customers: int, seed: int, n_trials: int) -> dict[str, object]:
    """:func:`measure_auc` in a child process (chDB opens one folder per process)."""
    with tempfile.TemporaryDirectory(prefix="revopt-identity-auc-") as folder:
        out = Path(folder) / "result.json"
        subprocess.run([sys.executable, __file__, "--section", "auc", "--customers", str(n_customers), "--seeds",
                        str(seed), "--n-trials", str(n_trials), "--auc-worker", str(out)], check=True)
        return json.loads(out.read_text())


def print_auc(rows: list[dict[str, object]], n_trials: int) -> None:
    print(f"\n## Propensity test ROC AUC without (A) and with (B) identity resolution ({n_trials} Optuna trials)\n")
    print("B0: only the links first seen before the fit cutoff (no later link enriches earlier features; a lower "
          "bound). Common population: the test customers of all three variants, B's labels, each model on its own "
          "variant's features.\n")
    print("| customers | seed | variant | customers in extract | test customers | positive rate | test AUC (run) | "
          "recomputed | recency baseline | best family | common pop. AUC |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for row in rows:
        for name in ("A", "B0", "B"):
            v = row[name]
            print(f"| {row['customers']} | {row['seed']} | {name} | {v['customers']} | {v['n_test']} | "
                  f"{v['positive_rate']:.4f} | {v['test_roc_auc']:.4f} | {v['recomputed_roc_auc']:.4f} | "
                  f"{v['baseline_roc_auc']:.4f} | {v['best_family']} | {v['common_roc_auc']:.4f} |")
        for name in ("B0", "B"):
            print(f"| | | {name} - A | | | | {row[name]['test_roc_auc'] - row['A']['test_roc_auc']:+.4f} | | "
                  f"{row[name]['baseline_roc_auc'] - row['A']['baseline_roc_auc']:+.4f} | | "
                  f"{row[name]['common_roc_auc'] - row['A']['common_roc_auc']:+.4f} |")
    print()
    for row in rows:
        print(f"- {row['customers']} customers, seed {row['seed']}: threshold {row['threshold']:g}, cutoffs {row['fit_cutoff']} / {row['test_cutoff']}; "
              f"common {row['common']} customers (positive rate {row['common_positive_rate']:.4f}); "
              f"{row['late_linked_test_customers']} of B's test customers have a device first linked after the test "
              f"cutoff (positive rate {row['late_linked_positive_rate']:.3f}); resolution {row['resolution']}; "
              f"links in ClickHouse {row['links_in_clickhouse']}; seconds "
              + ", ".join(f"{k} {v:.0f}" for k, v in row["seconds"].items()) + f"; sources {row['sources']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=("truth", "auc"), default="truth")
    parser.add_argument("--customers", type=int, nargs="+", default=[5000, 20_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS),
                        help="identity_match_threshold values (truth section)")
    parser.add_argument("--n-trials", type=int, default=6, help="Optuna trials of the propensity family (auc section)")
    parser.add_argument("--auc-worker", type=Path, help=argparse.SUPPRESS)  # one seed's run, its JSON to this path
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logger.setLevel(logging.INFO)
    if args.auc_worker is not None:
        args.auc_worker.write_text(json.dumps(measure_auc(args.customers[0], args.seeds[0], args.n_trials), default=float))
        return

    began = time.perf_counter()
    print(f"# Identity resolution ({dt.date.today()})\n")
    print("`" + shlex.join([".venv/bin/python", "benchmarks/identity_resolution.py",
                            *(argv if argv is not None else sys.argv[1:])]) + "`")
    if args.section == "truth":
        rows = []
        for n in args.customers:
            for seed in args.seeds:
                rows.append(measure_truth(n, seed, tuple(sorted(args.thresholds))))
                logger.info("truth %d customers, seed %d: %s", n, seed, rows[-1]["seconds"])
        print_truth(rows)
    else:
        print_auc([run_auc_worker(n, seed, args.n_trials) for n in args.customers for seed in args.seeds],
                  args.n_trials)
    print(f"\n{time.perf_counter() - began:.0f} s in all; load average at the end "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
