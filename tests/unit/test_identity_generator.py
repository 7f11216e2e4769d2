"""The synthetic store's identities (revopt.sample_data.identity): devices, anonymous sessions, duplicate
accounts and contact records, in the contract's shape and agreeing with their truth."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from revopt.platform.contract import EVENTS_DDL, SHOP_DDL, TRUTH_DDL, ddl_columns
from revopt.sample_data import seed as seed_module
from revopt.sample_data.identity import IdentityDesign, apply_identity, contact_records
from revopt.sample_data.synth import SyntheticStore, generate_store

START = dt.date(2024, 1, 1)
DAYS = 240
N = 3000
SEED = 17
DESIGN = IdentityDesign()


@pytest.fixture(scope="module")
def drawn() -> SyntheticStore:
    return generate_store(N, DAYS, START, seed=SEED)


@pytest.fixture(scope="module")
def store(drawn: SyntheticStore) -> SyntheticStore:
    return apply_identity(drawn, SEED, DESIGN)


@pytest.fixture(scope="module")
def sessions(drawn: SyntheticStore, store: SyntheticStore) -> pd.DataFrame:
    """One row per web event: its session, the customer it was drawn for and what the store records."""
    web = (drawn.events["session_id"] != 0).to_numpy()
    return pd.DataFrame({
        "session_id": drawn.events["session_id"].to_numpy()[web].astype(np.int64),
        "drawn_for": drawn.events["customer_id"].to_numpy()[web].astype(np.int64),
        "customer_id": store.events["customer_id"].to_numpy()[web].astype(np.int64),
        "anonymous_id": store.events["anonymous_id"].to_numpy()[web],
        "event_type": store.events["event_type"].to_numpy()[web],
    })


def _frames_equal(a: SyntheticStore, b: SyntheticStore) -> bool:
    if a.shop.keys() != b.shop.keys() or a.truth.keys() != b.truth.keys() or not a.events.equals(b.events):
        return False
    return all(a.shop[k].equals(b.shop[k]) for k in a.shop) and all(a.truth[k].equals(b.truth[k]) for k in a.truth)


def test_the_same_seed_draws_the_same_identities(drawn: SyntheticStore, store: SyntheticStore) -> None:
    assert _frames_equal(apply_identity(drawn, SEED, DESIGN), store)
    assert not apply_identity(drawn, SEED + 1, DESIGN).events["anonymous_id"].equals(store.events["anonymous_id"])
    first, first_truth = contact_records(500, 3)
    again, again_truth = contact_records(500, 3)
    assert first.equals(again) and first_truth.equals(again_truth)
    assert not contact_records(500, 4)[0].equals(first)


def test_off_leaves_the_seeded_store_unchanged(monkeypatch: pytest.MonkeyPatch, drawn: SyntheticStore) -> None:
    before = generate_store(N, DAYS, START, seed=SEED)
    apply_identity(drawn, SEED, DESIGN)
    assert _frames_equal(drawn, before)  # the drawn store is not modified

    loaded: list[SyntheticStore] = []
    monkeypatch.setattr(seed_module, "load_store", lambda settings, store: loaded.append(store) or {})
    for identity in (None, DESIGN):
        seed_module.seed_synthetic(None, n_customers=N, days=DAYS, start=START, seed=SEED, identity=identity)
    assert _frames_equal(loaded[0], before)
    assert loaded[0].events.get("anonymous_id", pd.Series([""])).eq("").all()
    assert "customer_contacts" not in loaded[0].shop
    assert _frames_equal(loaded[1], apply_identity(before, SEED, DESIGN))


def test_frames_follow_the_contract(drawn: SyntheticStore, store: SyntheticStore) -> None:
    assert list(store.events.columns) == ddl_columns(EVENTS_DDL)["events"]
    assert store.events["anonymous_id"].map(type).eq(str).all()
    assert store.events["customer_id"].dtype == np.uint64
    assert list(store.shop["customer_contacts"].columns) == ddl_columns(SHOP_DDL)["customer_contacts"]
    assert list(store.shop["customers"].columns) == ddl_columns(SHOP_DDL)["customers"]
    assert store.shop["customers"].dtypes.equals(drawn.shop["customers"].dtypes)
    for name in ("identities", "devices"):
        assert list(store.truth[name].columns) == ddl_columns(TRUTH_DDL)[name]
    contacts, identities = contact_records(200, 1)
    assert list(contacts.columns) == ddl_columns(SHOP_DDL)["customer_contacts"]
    assert contacts.dtypes.equals(store.shop["customer_contacts"].dtypes)
    assert str(contacts["birth_date"].dtype) == "datetime64[ns]"
    assert list(identities.columns) == ddl_columns(TRUTH_DDL)["identities"]
    run = store.truth["generator_run"].set_index("key")["value"]
    assert run["identity.duplicate_share"] == repr(DESIGN.duplicate_share) and run["seed"] == str(SEED)


def test_every_account_has_a_contact_record_and_an_identity(drawn: SyntheticStore, store: SyntheticStore) -> None:
    accounts = store.shop["customers"]["customer_id"]
    assert accounts.is_unique
    assert set(store.shop["customer_contacts"]["customer_id"]) == set(accounts)
    identities = store.truth["identities"]
    assert set(identities["customer_id"]) == set(accounts) and identities["customer_id"].is_unique
    first = identities[identities["customer_id"] <= N]
    assert (first["customer_id"] == first["person_id"]).all() and len(first) == N
    second = identities[identities["customer_id"] > N]
    assert second["person_id"].isin(first["customer_id"]).all() and second["person_id"].is_unique
    assert 0.6 * DESIGN.duplicate_share * N < len(second) < 1.4 * DESIGN.duplicate_share * N
    assert set(store.shop["orders"]["customer_id"]) <= set(accounts)
    assert set(store.events["customer_id"].astype(np.int64)) - {0} <= set(accounts)


def test_a_duplicate_account_takes_over_the_persons_later_orders(drawn: SyntheticStore, store: SyntheticStore) -> None:
    orders = store.shop["orders"]
    assert orders[["order_id", "order_ts"]].equals(drawn.shop["orders"][["order_id", "order_ts"]])
    person = store.truth["identities"].set_index("customer_id")["person_id"]
    assert (person.reindex(orders["customer_id"]).to_numpy() == drawn.shop["orders"]["customer_id"].to_numpy()).all()

    second = store.truth["identities"].query("customer_id != person_id")
    signup = store.shop["customers"].set_index("customer_id")["signup_date"]
    moved = orders[orders["customer_id"].isin(second["customer_id"])]
    assert moved["customer_id"].nunique() > 0.3 * len(second)
    assert (moved["order_ts"].dt.tz_convert(None) >= signup.reindex(moved["customer_id"]).to_numpy()).all()
    # the first account has no order after the duplicate's first event
    known = store.events[store.events["customer_id"] != 0]
    first_seen = known.groupby(known["customer_id"].astype(np.int64))["event_time"].min()
    split = first_seen.reindex(second["customer_id"]).set_axis(second["person_id"]).dropna()
    kept = orders[orders["customer_id"].isin(split.index)]
    assert (kept["order_ts"] < split.reindex(kept["customer_id"]).to_numpy()).all()
    last_kept = kept.groupby("customer_id")["order_ts"].max()
    first_moved = moved.assign(person=person.reindex(moved["customer_id"]).to_numpy()).groupby("person")["order_ts"].min()
    both = last_kept.index.intersection(first_moved.index)
    assert len(both) > 0 and (last_kept[both] < first_moved[both]).all()


def test_known_customers_browse_anonymously_until_a_checkout(sessions: pd.DataFrame) -> None:
    known = sessions[sessions["drawn_for"] != 0]
    starts_anonymous = known.groupby("session_id")["customer_id"].first().eq(0)
    assert abs(starts_anonymous.mean() - DESIGN.anonymous_session_share) < 0.02
    assert (known.loc[known["event_type"].isin(["checkout", "purchase"]), "customer_id"] != 0).all()
    mixed = known.groupby("session_id")["customer_id"].agg(lambda ids: ids.eq(0).any() and ids.ne(0).any())
    assert mixed.sum() > 0.2 * starts_anonymous.sum()  # logins mid-session
    # anonymous visitors stay anonymous, under ids of their own, a few returning
    visitors = sessions[sessions["drawn_for"] == 0]
    assert (visitors["customer_id"] == 0).all()
    per_visitor = visitors.groupby("anonymous_id")["session_id"].nunique()
    assert 0.05 < (per_visitor > 1).mean() < 0.4
    assert not set(per_visitor.index) & set(known["anonymous_id"])


def test_a_login_links_a_device_to_its_person(store: SyntheticStore, sessions: pd.DataFrame) -> None:
    assert (sessions["anonymous_id"].str.fullmatch(r"d[0-9a-f]{16}")).all()
    emails = store.events[store.events["session_id"] == 0]
    assert len(emails) > 0 and (emails["anonymous_id"] == "").all()
    person = store.truth["identities"].set_index("customer_id")["person_id"]
    logins = sessions.loc[sessions["customer_id"] != 0, ["anonymous_id", "customer_id"]].drop_duplicates()
    logins["person_id"] = person.reindex(logins["customer_id"]).to_numpy()
    devices = store.truth["devices"]
    linked = logins.merge(devices, on=["anonymous_id", "person_id"], how="left", indicator=True)
    assert (linked["_merge"] == "both").all()
    # and every device's sessions are its people's
    known = sessions[sessions["drawn_for"] != 0][["anonymous_id", "drawn_for"]].drop_duplicates()
    assert set(map(tuple, known.to_numpy())) == set(map(tuple, devices.to_numpy()))
    per_person = devices.groupby("person_id").size()
    assert per_person.max() <= len(DESIGN.devices_per_person) + 1 and (per_person >= 2).mean() > 0.15


def test_shared_devices_and_households_make_hard_negatives(store: SyntheticStore) -> None:
    contacts = store.shop["customer_contacts"].merge(store.truth["identities"], on="customer_id")
    first = contacts[contacts["customer_id"] == contacts["person_id"]]
    pairs = first.merge(first, on=["last_name", "postcode"])
    pairs = pairs[pairs["person_id_x"] < pairs["person_id_y"]]
    assert len(pairs) > 0.02 * N
    assert (pairs["phone_hash_x"].notna() & (pairs["phone_hash_x"] == pairs["phone_hash_y"])).sum() > 0
    assert (pairs["first_name_x"] != pairs["first_name_y"]).mean() > 0.9

    shared = store.truth["devices"].groupby("anonymous_id")["person_id"].agg(list)
    shared = shared[shared.map(len) > 1]
    assert len(shared) > 0
    household = first.set_index("person_id")[["last_name", "postcode"]]
    for people in shared:
        assert len(household.loc[people].drop_duplicates()) == 1


def test_duplicate_contact_records_carry_the_designed_noise() -> None:
    n = 30_000
    contacts, identities = contact_records(n, 8)
    assert list(identities["customer_id"]) == list(contacts["customer_id"]) == list(range(1, len(contacts) + 1))
    first = contacts[contacts["customer_id"] <= n]
    assert abs(first["phone_hash"].isna().mean() - DESIGN.phone_missing) < 0.02
    assert abs(first["birth_date"].isna().mean() - DESIGN.birth_date_missing) < 0.02
    assert first["email_hash"].is_unique and first["email_hash"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert first["last_name"].value_counts().iloc[0] > 0.01 * n  # common names collide
    assert 0.5 * n / DESIGN.people_per_postcode < first["postcode"].nunique() <= n / DESIGN.people_per_postcode + 1

    pairs = identities[identities["customer_id"] != identities["person_id"]] \
        .merge(contacts, on="customer_id").merge(first, left_on="person_id", right_on="customer_id", suffixes=("", "_first"))
    assert abs(len(pairs) / n - DESIGN.duplicate_share) < 0.005
    same = {column: (pairs[column] == pairs[f"{column}_first"]).mean()
            for column in ("email_hash", "first_name", "last_name", "postcode")}
    assert abs(same["email_hash"] - DESIGN.duplicate_same_email) < 0.05
    assert abs(same["postcode"] - (1 - DESIGN.duplicate_moved)) < 0.04
    assert abs(same["last_name"] - (1 - DESIGN.duplicate_last_name_typo)) < 0.03
    assert 0.7 < same["first_name"] < 0.88  # typos and nicknames
    with_phone = pairs[pairs["phone_hash_first"].notna()]
    assert abs((with_phone["phone_hash"] == with_phone["phone_hash_first"]).mean() - DESIGN.duplicate_same_phone) < 0.06
    both_dates = pairs[pairs["birth_date"].notna() & pairs["birth_date_first"].notna()]
    assert (both_dates["birth_date"] == both_dates["birth_date_first"]).all()
    assert abs(pairs["birth_date"].isna().mean() - DESIGN.duplicate_birth_date_missing) < 0.06
