"""Benchmark: matching duplicate accounts (:mod:`ml.identity.matching`) against the generator's truth, and the
record-linkage libraries it was chosen from.

Contacts come from :func:`revopt.sample_data.identity.contact_records` (people with Zipf-distributed names,
households sharing a last name, a postcode and sometimes a landline, ~4 % of people with a second account whose
record is re-typed: other e-mail, nickname, typos, a move).  A *true pair* is two accounts of one person
(``truth.identities``); precision and recall are of pairs, the unit :func:`~ml.identity.matching.match_accounts`
returns (the issue's targets: precision >= 0.95, recall >= 0.90 of merges).  Every library gets the same
normalised fields (:func:`~ml.identity.matching.normalised_contacts`) and the same candidate pairs
(:data:`~ml.identity.matching.BLOCKING_RULES`), and none sees a label unless said:

- **splink**: :func:`ml.identity.matching.match_accounts` (Splink 4, DuckDB; unsupervised);
- **recordlinkage**: its textbook unsupervised set-up: binary agreement features (exact e-mail, phone, postcode,
  birth date; Jaro-Winkler first name >= 0.88, last name >= 0.92, missing = disagree) and the ECM classifier
  (Fellegi-Sunter by expectation-conditional maximisation), ``prob`` >= threshold;
- **dedupe**: needs labelled pairs (active learning); here an oracle answers from the truth the first
  ``--dedupe-labels`` pairs dedupe asks about (a person's work in production), then dedupe blocks with its own
  learned predicates and scores; its scores >= threshold.  Not reproducible run to run even with the seeds set.

A library that is not installed is reported as such (only Splink is a dependency; the others were measured in a
scratch virtualenv with ``uv pip install recordlinkage==0.16 dedupe==3.0.3``).  For Splink the precision and
recall at thresholds 0.5 .. 0.99 follow.  Prints markdown with the command::

    .venv/bin/python benchmarks/identity_matching.py --people 5000 100000 --seed 1 2 3
    .venv/bin/python benchmarks/identity_matching.py --libraries splink --people 100000 --threshold 0.8
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import logging
import shlex
import sys
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from ml.identity.matching import BLOCKING_RULES, match_accounts, normalised_contacts
from revopt.sample_data.identity import contact_records

LIBRARIES = ("splink", "recordlinkage", "dedupe")
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
#: recordlinkage's agreement thresholds, the same as the Splink model's (ml.identity.matching)
_FIRST_NAME_NEAR, _LAST_NAME_CLOSE = 0.88, 0.92


def true_pairs(identities: pd.DataFrame) -> set[tuple[int, int]]:
    """Every (lower id, higher id) pair of accounts of one person."""
    pairs: set[tuple[int, int]] = set()
    for ids in identities.groupby("person_id")["customer_id"].agg(sorted):
        pairs.update((int(a), int(b)) for i, a in enumerate(ids) for b in ids[i + 1:])
    return pairs


def pair_scores(found: pd.DataFrame, truth: set[tuple[int, int]], threshold: float) -> dict[str, float]:
    """Precision, recall and F1 of the pairs of ``found`` (customer_id_l, customer_id_r, match_probability) at or
    above ``threshold``."""
    kept = found.loc[found["match_probability"] >= threshold]
    pairs = set(zip(np.minimum(kept["customer_id_l"], kept["customer_id_r"]).astype(int).tolist(),
                    np.maximum(kept["customer_id_l"], kept["customer_id_r"]).astype(int).tolist()))
    hits = len(pairs & truth)
    precision = hits / len(pairs) if pairs else float("nan")
    recall = hits / len(truth) if truth else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"pairs": len(pairs), "precision": precision, "recall": recall, "f1": f1}


def splink_pairs(contacts: pd.DataFrame, threshold: float, seed: int, truth: set) -> pd.DataFrame:
    return match_accounts(contacts, threshold, seed=seed)


def recordlinkage_pairs(contacts: pd.DataFrame, threshold: float, seed: int, truth: set) -> pd.DataFrame:
    import recordlinkage as rl

    records = normalised_contacts(contacts).set_index("customer_id")
    frame = records.astype(object).where(records.notna(), None)
    indexer = rl.Index()
    for rule in BLOCKING_RULES:
        indexer.add(rl.index.Block(list(rule)))
    candidates = indexer.index(frame)
    compare = rl.Compare()
    for field in ("email_hash", "phone_hash", "postcode", "birth_date"):
        compare.exact(field, field, label=field, missing_value=0)
    compare.string("first_name", "first_name", method="jarowinkler", threshold=_FIRST_NAME_NEAR,
                   label="first_name", missing_value=0)
    compare.string("last_name", "last_name", method="jarowinkler", threshold=_LAST_NAME_CLOSE,
                   label="last_name", missing_value=0)
    features = compare.compute(candidates, frame)
    classifier = rl.ECMClassifier(binarize=None)
    classifier.fit(features)
    probability = classifier.prob(features)
    ids = probability.index
    return pd.DataFrame({"customer_id_l": ids.get_level_values(0).astype("int64"),
                         "customer_id_r": ids.get_level_values(1).astype("int64"),
                         "match_probability": probability.to_numpy(dtype="float64")})


def dedupe_pairs(contacts: pd.DataFrame, threshold: float, seed: int, truth: set, labels: int = 50) -> pd.DataFrame:
    import random

    import dedupe

    random.seed(seed)
    np.random.seed(seed)
    records = normalised_contacts(contacts)
    data = {int(row["customer_id"]): {k: (None if pd.isna(v) else (int(v) if k == "customer_id" else str(v)))
                                      for k, v in row.items()}
            for row in records.to_dict("records")}
    fields = [dedupe.variables.Exact("email_hash", has_missing=True),
              dedupe.variables.Exact("phone_hash", has_missing=True),
              dedupe.variables.String("first_name", has_missing=True),
              dedupe.variables.String("last_name", has_missing=True),
              dedupe.variables.Exact("postcode", has_missing=True),
              dedupe.variables.Exact("birth_date", has_missing=True)]
    deduper = dedupe.Dedupe(fields, num_cores=1)
    deduper.prepare_training(data, sample_size=min(15_000, 3 * len(data)))
    for _ in range(labels):  # the oracle answers dedupe's questions from the truth
        (left, right), = deduper.uncertain_pairs()
        pair = (min(left["customer_id"], right["customer_id"]), max(left["customer_id"], right["customer_id"]))
        answer = "match" if pair in truth else "distinct"
        deduper.mark_pairs({"match": [(left, right)] if answer == "match" else [],
                            "distinct": [(left, right)] if answer == "distinct" else []})
    deduper.train(recall=0.99)
    scored = deduper.score(deduper.pairs(data))
    ids = np.asarray(scored["pairs"], dtype=np.int64).reshape(-1, 2)
    return pd.DataFrame({"customer_id_l": ids[:, 0], "customer_id_r": ids[:, 1],
                         "match_probability": np.asarray(scored["score"], dtype="float64")})


RUNNERS: dict[str, Callable[..., pd.DataFrame]] = {
    "splink": splink_pairs, "recordlinkage": recordlinkage_pairs, "dedupe": dedupe_pairs,
}


def measure(library: str, people: int, seed: int, threshold: float, dedupe_labels: int) -> dict:
    """One library on one draw: time, precision / recall / F1 at ``threshold`` (Splink: the run at the lowest
    threshold of :data:`THRESHOLDS` too)."""
    contacts, identities = contact_records(people, seed)
    truth = true_pairs(identities)
    row = {"library": library, "people": people, "accounts": len(contacts), "seed": seed, "true_pairs": len(truth)}
    if importlib.util.find_spec(library) is None:
        return row | {"note": "not installed"}
    low = min((threshold, *THRESHOLDS)) if library == "splink" else threshold
    kwargs = {"labels": dedupe_labels} if library == "dedupe" else {}
    start = time.perf_counter()
    found = RUNNERS[library](contacts, low, seed, truth, **kwargs)
    row["seconds"] = time.perf_counter() - start
    row |= pair_scores(found, truth, threshold)
    if library == "splink":
        row["by_threshold"] = {t: pair_scores(found, truth, t) for t in THRESHOLDS}
    return row


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "-" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, nargs="+", default=[5000, 100_000])
    parser.add_argument("--seed", type=int, nargs="+", default=[1])
    parser.add_argument("--threshold", type=float, default=0.5, help="match probability threshold")
    parser.add_argument("--libraries", default=",".join(LIBRARIES), help="comma-separated, of " + ", ".join(LIBRARIES))
    parser.add_argument("--dedupe-labels", type=int, default=50, help="pairs the oracle labels for dedupe")
    args = parser.parse_args(argv)
    libraries = [name.strip() for name in args.libraries.split(",") if name.strip()]
    unknown = set(libraries) - set(LIBRARIES)
    if unknown:
        parser.error(f"unknown libraries {sorted(unknown)}; choose from {', '.join(LIBRARIES)}")
    logging.basicConfig(level=logging.WARNING)

    print(f"# Matching duplicate accounts ({dt.date.today()})\n")
    print("`" + shlex.join([".venv/bin/python", "benchmarks/identity_matching.py", *sys.argv[1:]]) + "`\n")
    print(f"Pairs at match probability >= {args.threshold}.\n")
    print("| library | people | accounts | seed | true pairs | found | precision | recall | F1 | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    splink_rows = []
    for people in args.people:
        for seed in args.seed:
            for library in libraries:
                row = measure(library, people, seed, args.threshold, args.dedupe_labels)
                if "note" in row:
                    print(f"| {library} | {people} | {row['accounts']} | {seed} | {row['true_pairs']} | "
                          f"{row['note']} | | | | |", flush=True)
                    continue
                print("| " + " | ".join(_fmt(row[k]) for k in (
                    "library", "people", "accounts", "seed", "true_pairs", "pairs", "precision", "recall", "f1",
                    "seconds")) + " |", flush=True)
                if library == "splink":
                    splink_rows.append(row)
    if splink_rows:
        print("\nSplink (ml.identity.matching) by threshold: precision / recall\n")
        print("| people | seed | " + " | ".join(f"{t}" for t in THRESHOLDS) + " |")
        print("|---:|---:|" + "---|" * len(THRESHOLDS))
        for row in splink_rows:
            cells = [f"{s['precision']:.3f} / {s['recall']:.3f}" for s in row["by_threshold"].values()]
            print(f"| {row['people']} | {row['seed']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
