"""Matching duplicate accounts (ml.identity.matching): planted duplicates found and explained, the threshold,
empty / tiny / field-less inputs, determinism, and the result's contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.identity import matching
from ml.identity.matching import MATCH_COLUMNS, match_accounts
from revopt.sample_data.identity import contact_records

THRESHOLD = 0.7
PEOPLE = 2000


def planted(contacts: pd.DataFrame) -> tuple[pd.DataFrame, dict[int, tuple[int, str, str]]]:
    """``contacts`` plus second accounts of three single-account people, re-typed in known ways; returns the
    frame and {new id: (original id, fields that agree, fields that disagree)}."""
    ids = contacts["customer_id"]
    complete = contacts.dropna().loc[lambda f: ~f["phone_hash"].duplicated(keep=False)]  # no shared landline
    originals = complete["customer_id"].head(3).tolist()
    rows, expected, next_id = [], {}, int(ids.max()) + 1
    for kind, original in zip(("new e-mail", "moved", "typo"), originals):
        row = contacts.loc[ids == original].iloc[0].copy()
        row["customer_id"] = next_id
        row["email_hash"] = f"{next_id:064x}"  # another address
        agreed = ["phone_hash", "first_name", "last_name", "postcode", "birth_date"]
        if kind == "moved":
            row["postcode"] = "ZZ99 9ZZ"
            agreed.remove("postcode")
        if kind == "typo":
            row["last_name"] = row["last_name"] + "x"  # Jaro-Winkler still >= 0.92 for a name of 4+ letters
        disagreed = ["email_hash"] + (["postcode"] if kind == "moved" else [])
        expected[next_id] = (original, ", ".join(agreed), ", ".join(disagreed))
        rows.append(row)
        next_id += 1
    return pd.concat([contacts, pd.DataFrame(rows)], ignore_index=True), expected


@pytest.fixture(scope="module")
def drawn() -> tuple[pd.DataFrame, pd.DataFrame]:
    return contact_records(PEOPLE, seed=3)


@pytest.fixture(scope="module")
def with_planted(drawn) -> tuple[pd.DataFrame, dict]:
    return planted(drawn[0])


@pytest.fixture(scope="module")
def matches(with_planted) -> pd.DataFrame:
    return match_accounts(with_planted[0], THRESHOLD, seed=0)


def _pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["customer_id_l"].tolist(), frame["customer_id_r"].tolist()))


def test_planted_duplicates_are_found_and_explained(with_planted, matches) -> None:
    _, expected = with_planted
    found = matches.set_index(["customer_id_l", "customer_id_r"])
    for new_id, (original, agreed, disagreed) in expected.items():
        assert (original, new_id) in found.index, f"planted duplicate {original} / {new_id} not matched"
        row = found.loc[(original, new_id)]
        assert row["agreed"] == agreed
        assert row["disagreed"] == disagreed


def test_the_generators_duplicates_are_found_with_few_false_merges(drawn, matches) -> None:
    _, identities = drawn
    person = identities.set_index("customer_id")["person_id"]
    truth = {(min(a, b), max(a, b)) for ids in identities.groupby("person_id")["customer_id"].agg(list)
             for i, a in enumerate(ids) for b in ids[i + 1:]}
    generated = matches.loc[matches["customer_id_r"].isin(person.index) & matches["customer_id_l"].isin(person.index)]
    hits = len(_pairs(generated) & truth)
    assert hits / len(generated) >= 0.9, "precision"
    assert hits / len(truth) >= 0.85, "recall"


def test_the_result_follows_its_contract(matches) -> None:
    assert tuple(matches.columns) == MATCH_COLUMNS
    assert matches.dtypes.to_dict() == {"customer_id_l": np.dtype("int64"), "customer_id_r": np.dtype("int64"),
                                        "match_probability": np.dtype("float64"), "agreed": np.dtype(object),
                                        "disagreed": np.dtype(object)}
    assert (matches["customer_id_l"] < matches["customer_id_r"]).all()
    assert not matches.duplicated(["customer_id_l", "customer_id_r"]).any()
    assert matches.equals(matches.sort_values(["customer_id_l", "customer_id_r"]).reset_index(drop=True))
    assert (matches["agreed"] != "").all(), "every merge names the fields that agreed"


def test_the_threshold_is_respected(with_planted, matches) -> None:
    assert (matches["match_probability"] >= THRESHOLD).all()
    stricter = match_accounts(with_planted[0], 0.95, seed=0)
    assert (stricter["match_probability"] >= 0.95).all()
    assert 0 < len(stricter) < len(matches)
    assert _pairs(stricter) <= _pairs(matches)
    small = with_planted[0].head(600)
    assert len(match_accounts(small, 0.0)) > len(match_accounts(small, 0.5)), "0 keeps every candidate pair"
    assert (match_accounts(small, 1.0)["match_probability"] >= 1.0).all()
    with pytest.raises(ValueError):
        match_accounts(with_planted[0], 1.5)


def test_the_same_seed_gives_the_same_pairs(with_planted, monkeypatch) -> None:
    # A sample smaller than this store's 2 million pairs (the default sample takes them all).
    monkeypatch.setattr(matching, "U_SAMPLE_PAIRS", 100_000)
    first = match_accounts(with_planted[0], THRESHOLD, seed=0)
    pd.testing.assert_frame_equal(match_accounts(with_planted[0], THRESHOLD, seed=0), first, check_exact=True)
    other = match_accounts(with_planted[0], THRESHOLD, seed=1)
    assert len(other) != len(first) or not np.array_equal(other["match_probability"], first["match_probability"]), \
        "another seed draws another sample"


def test_the_input_is_not_modified(drawn) -> None:
    contacts = drawn[0].head(300).copy()
    before = contacts.copy()
    match_accounts(contacts, THRESHOLD)
    pd.testing.assert_frame_equal(contacts, before)


@pytest.mark.parametrize("rows", [0, 1, 2])
def test_tiny_inputs_give_no_pairs(drawn, rows) -> None:
    result = match_accounts(drawn[0].head(rows), THRESHOLD)
    assert result.empty
    assert tuple(result.columns) == MATCH_COLUMNS
    assert result["customer_id_l"].dtype == np.int64 and result["match_probability"].dtype == np.float64


def test_a_few_identical_accounts_are_matched_without_training_data() -> None:
    record = {"email_hash": "a" * 64, "phone_hash": None, "first_name": "Ada", "last_name": "Lovelace",
              "postcode": "NW1 2BE", "birth_date": pd.Timestamp("1815-12-10")}
    contacts = pd.DataFrame([{"customer_id": i, **record} for i in (5, 6, 7)])
    result = match_accounts(contacts, THRESHOLD)
    assert _pairs(result) == {(5, 6), (5, 7), (6, 7)}
    assert set(result["agreed"]) == {"email_hash, first_name, last_name, postcode, birth_date"}


@pytest.mark.parametrize("variant", ["no phone column", "phones all missing", "only names", "every field missing"])
def test_stores_without_some_fields(with_planted, variant) -> None:
    contacts = with_planted[0].head(1500).copy()
    if variant == "no phone column":
        contacts = contacts.drop(columns="phone_hash")
    elif variant == "phones all missing":
        contacts["phone_hash"] = None
    elif variant == "only names":
        contacts = contacts[["customer_id", "first_name", "last_name"]]
    else:
        contacts[[c for c in contacts.columns if c != "customer_id"]] = None
    result = match_accounts(contacts, THRESHOLD)
    assert tuple(result.columns) == MATCH_COLUMNS
    assert (result["match_probability"] >= THRESHOLD).all()
    assert not result["agreed"].str.contains("phone_hash").any()
    if variant == "every field missing":
        assert result.empty
