"""Deterministic stitching and the identity map (ml.identity.stitch.resolve), on hand-made accounts."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from ml.identity.stitch import MAP_COLUMNS, resolve

RUN = dt.date(2025, 1, 1)
T = pd.Timestamp("2024-12-01", tz="UTC")


def _accounts(signups: dict[int, str]) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": list(signups), "signup_date": pd.to_datetime(list(signups.values()))})


def _contacts(rows: list[tuple[int, str | None]]) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": [r[0] for r in rows], "email_hash": [r[1] for r in rows], "phone_hash": None,
                         "first_name": None, "last_name": None, "postcode": None, "birth_date": None})


def _logins(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame({"anonymous_id": [r[0] for r in rows], "customer_id": [r[1] for r in rows],
                         "first_seen": [T + pd.Timedelta(days=r[2]) for r in rows],
                         "last_seen": [T + pd.Timedelta(days=r[2] + 1) for r in rows], "sessions": 2})


def _matches(rows: list[tuple[int, int, float]]) -> pd.DataFrame:
    return pd.DataFrame({"customer_id_l": [r[0] for r in rows], "customer_id_r": [r[1] for r in rows],
                         "match_probability": [r[2] for r in rows], "agreed": "first_name, last_name, postcode",
                         "disagreed": "birth_date"})


NO_LOGINS = _logins([])
NO_MATCHES = _matches([])


def _row(frame: pd.DataFrame, kind: str, identifier: object) -> pd.Series:
    found = frame.loc[(frame["identifier_type"] == kind) & (frame["identifier"] == str(identifier))]
    assert len(found) == 1, (kind, identifier, frame)
    return found.iloc[0]


def test_a_shared_email_merges_onto_the_earliest_account() -> None:
    accounts = _accounts({1: "2024-05-01", 2: "2024-01-01", 3: "2024-02-01"})
    result = resolve(accounts, _contacts([(1, "h1"), (2, "h1"), (3, "h3")]), NO_LOGINS, NO_MATCHES, RUN, 0.95)
    frame = result.identity_map
    assert list(frame.columns) == list(MAP_COLUMNS)
    assert set(frame["identifier"]) == {"1", "2"}  # account 3 stands alone: no row
    assert _row(frame, "customer_id", 1)["customer_id"] == 2 and _row(frame, "customer_id", 1)["method"] == "email_hash"
    canonical = _row(frame, "customer_id", 2)
    assert canonical["method"] == "canonical" and canonical["customer_id"] == 2
    # the merge is known from the later account's signup on
    assert _row(frame, "customer_id", 1)["first_seen"] == pd.Timestamp("2024-05-01", tz="UTC")
    assert result.summary["accounts_merged"] == 1 and result.summary["people"] == 2


def test_probabilistic_matches_chain_into_one_person_with_the_fields_that_agreed() -> None:
    accounts = _accounts({10: "2024-01-01", 11: "2024-02-01", 12: "2024-03-01"})
    result = resolve(accounts, _contacts([(10, "a"), (11, "a"), (12, None)]), NO_LOGINS, _matches([(11, 12, 0.97)]),
                     RUN, 0.95)
    frame = result.identity_map
    assert set(frame["customer_id"]) == {10}
    twelve = _row(frame, "customer_id", 12)
    assert twelve["method"] == "probabilistic" and np.isclose(twelve["match_probability"], 0.97)
    assert "agreed: first_name, last_name, postcode" in twelve["evidence"] and "account 11" in twelve["evidence"]
    assert result.summary["merged_by_probabilistic"] == 1 and result.summary["merged_by_email_hash"] == 1


def test_a_device_is_linked_to_the_one_person_it_logged_in_as_and_a_shared_one_to_no_one() -> None:
    accounts = _accounts({1: "2024-01-01", 2: "2024-02-01", 3: "2024-01-15"})
    logins = _logins([("dA", 2, 3), ("dA", 1, 5), ("dB", 1, 1), ("dB", 3, 2), ("dC", 3, 0)])
    result = resolve(accounts, _contacts([(1, "h"), (2, "h")]), logins, NO_MATCHES, RUN, 0.95)
    frame = result.identity_map
    device = _row(frame, "anonymous_id", "dA")  # two accounts of one person: linked to the canonical
    assert device["customer_id"] == 1 and device["method"] == "login"
    assert device["first_seen"] == T + pd.Timedelta(days=3) and device["last_seen"] == T + pd.Timedelta(days=6)
    assert "account 1, 2" in device["evidence"] and "4 sessions" in device["evidence"]
    assert _row(frame, "anonymous_id", "dC")["customer_id"] == 3
    assert "dB" not in set(frame["identifier"])  # two people on one computer
    assert result.summary["devices_linked"] == 2 and result.summary["devices_shared_not_linked"] == 1


def test_erased_accounts_and_their_devices_are_left_out() -> None:
    accounts = _accounts({1: "2024-01-01", 2: "2024-02-01", 3: "2024-03-01"})
    logins = _logins([("dA", 2, 3), ("dA", 1, 4), ("dB", 3, 1)])
    result = resolve(accounts, _contacts([(1, "h"), (2, "h")]), logins, _matches([(1, 2, 0.99)]), RUN, 0.95,
                     erased=frozenset({2}))
    frame = result.identity_map
    assert "2" not in set(frame["identifier"]) and 2 not in set(frame["customer_id"])
    assert "dA" not in set(frame["identifier"])  # it logged in as the erased account
    assert set(frame["identifier"]) == {"dB"}
    assert result.summary["devices_of_erased_people"] == 1 and result.summary["erased_accounts_left_out"] == 1


def test_nothing_to_join_gives_an_empty_map_with_its_columns() -> None:
    result = resolve(_accounts({1: "2024-01-01"}), _contacts([]), NO_LOGINS, NO_MATCHES, RUN, 0.95)
    assert result.identity_map.empty and list(result.identity_map.columns) == list(MAP_COLUMNS)
    assert result.summary["people"] == 1
