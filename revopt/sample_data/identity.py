"""Identities for the synthetic store: devices, anonymous sessions, duplicate accounts and contact records.

A store drawn by :mod:`revopt.sample_data.synth` knows every web session's customer: one person, one
account, always logged in.  :func:`apply_identity` turns it into what a real store's platform records,
and keeps the truth of who is who, so identity resolution (stitching by logins, matching duplicate
accounts) can be measured against it.  It is a post-processing of the drawn store, with its own random
stream: orders, sessions and events keep their times, products and channels; only who they are
recorded under changes.

People and contacts.  Every customer of the drawn store is a *person*, whose first account keeps the
customer id (``truth.identities.person_id`` is that id; every truth table keyed by ``customer_id``
stays keyed by it).  A person has a first and a last name drawn from lists with Zipf-like frequencies
(weight ``1 / (rank + 10)`` over about 150 first and 1000 last names, so different people often share
a common name), a postcode from a pool of about one per ``people_per_postcode`` people, a
birth date (age at the store's start ~ N(42, 15) years truncated to 18..90), a unique e-mail address
(a pattern of the names, a unique number and a common domain) and a unique mobile number.
``household_share`` of the people live in a household of two or three (0.7 / 0.3): its members share
the last name and the postcode and, with probability ``household_phone_share``, the phone number
(a landline); their first names differ.  They are different people who look alike: the hard negatives
of matching (chance gives more: two Smiths in one postcode).  An account's contact record
(``shop.customer_contacts``) shows the address's and the number's SHA-256 hex hashes (lower-cased
address; number in E.164 form), the names, the postcode and the birth date; the phone is missing with
probability ``phone_missing``, the birth date with ``birth_date_missing``.

Duplicate accounts.  ``duplicate_share`` of the people (drawn among those with web sessions on two days
or more, at the rate that keeps the share over everyone) open a second account at a *split day* inside
their history, uniform over the days after the day of their first web session up to the day of their
last.  From the start of their first web session on or after the split day on, everything is recorded
under the new account (customer id after the store's largest): the sessions still running or starting
then and the orders placed then (an order's purchase session ends at the order, so the two move
together); order ids stay.  Newsletters keep going to the first account.  The new account's
``shop.customers`` row signs up on the day of its first session, in the person's country and time
zone, through that session's channel (email: direct), with marketing consent drawn at the consent
rate of the person's segment.  Its contact record is the person's, re-typed: the same e-mail with probability ``duplicate_same_email`` (else another
address on another domain), the same phone with ``duplicate_same_phone`` when the first account shows
one (else drawn like a first account's: missing or a number of its own), the first name with a typo
(``duplicate_first_name_typo``: one letter substituted, dropped, doubled or swapped with the next, the
first letter kept) or replaced by a nickname (``duplicate_nickname``, for names that have one), the last
name with a typo (``duplicate_last_name_typo``), another postcode of the pool (``duplicate_moved``), and
the person's birth date, missing with probability ``duplicate_birth_date_missing``.

Devices and anonymous ids.  A person has 1, 2 or 3 devices (``devices_per_person`` shares), each with a
stable anonymous id ``'d' + 16 hex digits`` (the cookie).  Their types are the person's most frequent
session device types in order (a person with fewer distinct types than devices has extra devices of
the most frequent type); a session goes through one of the person's devices of its type, uniformly, or
through any of their devices when none has its type (the event's ``device`` column is left as drawn).
``shared_device_share`` of all devices (drawn among those of people in a household) are shared with
another member of the owner's household, who uses it for half of their sessions of its type.  Each web session of a known customer stays anonymous
with probability ``anonymous_session_share`` (``customer_id = 0``, only the device's id), except that a
checkout needs a login: an anonymous session with a checkout is logged in from its first checkout
event on (its earlier events anonymous: a login mid-session, which links the device to the account).
Anonymous visitors' sessions (customer 0 in the drawn store) get ids of their own, a new visitor with
probability ``1 - anonymous_return_share``, else a returning earlier one.  Email events carry no
anonymous id ('').  ``truth.devices`` lists every anonymous id a person's sessions went through, with
that person (a shared device: both); visitors who never had an account are not listed.

:func:`contact_records` draws the contact records alone (people and their duplicate accounts, no
store), for benchmarks of matching at sizes whose stores would be slow to draw.

Why hand-written: the point is the known truth of who stands behind each account and device; fake-data
libraries draw names and addresses but no duplicates with controlled noise, households or devices.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from revopt.platform.contract import EVENTS_DDL, SHOP_DDL, ddl_columns
from revopt.sample_data.names import (
    CONTACTS_REFERENCE_DATE, FIRST_NAME_OFFSET, FIRST_NAMES, LAST_NAME_OFFSET, email_addresses, last_names, postcode_pool,
    sha256_hex, unique_numbers, with_typos, zipf,
)
from revopt.sample_data.synth import SyntheticStore

logger = logging.getLogger(__name__)

CONTACT_COLUMNS = tuple(ddl_columns(SHOP_DDL)["customer_contacts"])
_EVENT_COLUMNS = ddl_columns(EVENTS_DDL)["events"]

_MS_PER_DAY = 86_400_000
#: ages at the reference date, years: N(mean, sd) truncated to the bounds
_AGE_MEAN, _AGE_SD, _AGE_BOUNDS = 42.0, 15.0, (18.0, 90.0)
#: household sizes 2 and 3 and their shares
_HOUSEHOLD_SIZES, _HOUSEHOLD_SIZE_SHARE = (2, 3), (0.7, 0.3)
#: a shared device's second user goes through it for this share of their sessions of its type
_SHARED_DEVICE_USE = 0.5
@dataclass(frozen=True)
class IdentityDesign:
    """Who stands behind the store's accounts and devices, and how their contact records differ (module docstring).

    ``devices_per_person``: shares of people with 1, 2, 3, ... devices; ``anonymous_session_share``: share of a
    known customer's web sessions that never log in (a checkout logs in); ``anonymous_return_share``: share of
    anonymous visitors' sessions from a returning visitor; ``duplicate_share``: share of people with a second
    account; ``shared_device_share``: share of the devices of people in a household that another member uses
    too; ``household_share``: share of people living in a household of 2-3 (same last name and postcode);
    ``household_phone_share``: share of household members with the household's phone; ``people_per_postcode``:
    people per postcode of the pool; ``phone_missing`` / ``birth_date_missing``: missing rates of a first
    account's contact record; ``duplicate_*``: how a second account's record differs from the person's.
    """

    devices_per_person: tuple[float, ...] = (0.55, 0.33, 0.12)
    anonymous_session_share: float = 0.35
    anonymous_return_share: float = 0.15
    duplicate_share: float = 0.04
    shared_device_share: float = 0.01
    household_share: float = 0.15
    household_phone_share: float = 0.3
    people_per_postcode: float = 20.0
    phone_missing: float = 0.4
    birth_date_missing: float = 0.3
    duplicate_same_email: float = 0.35
    duplicate_same_phone: float = 0.5
    duplicate_first_name_typo: float = 0.1
    duplicate_nickname: float = 0.1
    duplicate_last_name_typo: float = 0.05
    duplicate_moved: float = 0.15
    duplicate_birth_date_missing: float = 0.4

    def __post_init__(self) -> None:
        shares = {name: value for name, value in asdict(self).items()
                  if name not in ("devices_per_person", "people_per_postcode")}
        if not all(0.0 <= value <= 1.0 for value in shares.values()):
            raise ValueError(f"IdentityDesign shares must lie in [0, 1], got {shares}")
        if self.duplicate_first_name_typo + self.duplicate_nickname > 1.0:
            raise ValueError("duplicate_first_name_typo + duplicate_nickname must not exceed 1")
        if not self.devices_per_person or min(self.devices_per_person) < 0 or sum(self.devices_per_person) <= 0:
            raise ValueError(f"devices_per_person needs non-negative shares, got {self.devices_per_person}")
        if self.people_per_postcode < 1:
            raise ValueError(f"people_per_postcode must be >= 1, got {self.people_per_postcode}")

    def run_parameters(self) -> dict[str, str]:
        """The design as ``truth.generator_run`` rows (key -> value)."""
        return {f"identity.{name}": (",".join(repr(float(v)) for v in value) if isinstance(value, tuple)
                                     else repr(float(value)))
                for name, value in asdict(self).items()}


@dataclass(frozen=True)
class _People:
    """Every person's true contact attributes (index = person index)."""

    first_name: np.ndarray  # index into FIRST_NAMES
    last_name: np.ndarray  # object, the name
    postcode: np.ndarray  # index into the postcode pool
    postcodes: np.ndarray  # object, the pool
    birth_date: np.ndarray  # datetime64[D]
    email: np.ndarray  # object, the address
    phone: np.ndarray  # object, E.164
    household: np.ndarray  # household number, -1: alone


def contact_records(n_people: int, seed: int, design: IdentityDesign = IdentityDesign()
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Contact records of ``n_people`` people and their duplicate accounts, without a store.

    Returns ``(contacts, identities)``: ``contacts`` in the columns and dtypes of ``shop.customer_contacts``
    (first accounts ``1..n_people``, duplicate accounts after them, sorted by ``customer_id``) and
    ``identities`` (``customer_id``, ``person_id``) as ``truth.identities``.  A person has a duplicate
    account with probability ``design.duplicate_share``; records are drawn as in :func:`apply_identity`
    (module docstring), birth dates as of 2024-01-01.  Deterministic for a seed.
    """
    if n_people < 1:
        raise ValueError(f"need n_people >= 1, got {n_people}")
    rng = np.random.default_rng([seed, 21])
    people = _draw_people(rng, n_people, design, CONTACTS_REFERENCE_DATE)
    person_ids = np.arange(1, n_people + 1, dtype=np.int64)
    duplicated = np.flatnonzero(rng.random(n_people) < design.duplicate_share)
    duplicate_ids = np.arange(n_people + 1, n_people + 1 + len(duplicated), dtype=np.int64)
    first = _first_contacts(rng, people, person_ids, design)
    second = _duplicate_contacts(rng, people, duplicated, duplicate_ids, design,
                                 first["phone_hash"].notna().to_numpy()[duplicated])
    contacts = pd.concat([first, second], ignore_index=True)
    identities = pd.DataFrame({"customer_id": np.concatenate([person_ids, duplicate_ids]),
                               "person_id": np.concatenate([person_ids, person_ids[duplicated]])})
    return contacts, identities


def _draw_people(rng: np.random.Generator, n: int, design: IdentityDesign, reference: dt.date) -> _People:
    first_names = np.asarray([name for name, _ in FIRST_NAMES], dtype=object)
    surnames = last_names()
    first = zipf(rng, len(first_names), FIRST_NAME_OFFSET, n)
    last = surnames[zipf(rng, len(surnames), LAST_NAME_OFFSET, n)]
    postcodes = postcode_pool(rng, max(1, int(round(n / design.people_per_postcode))))
    postcode = rng.integers(0, len(postcodes), n)
    age = rng.normal(_AGE_MEAN, _AGE_SD, n)
    while (outside := (age < _AGE_BOUNDS[0]) | (age > _AGE_BOUNDS[1])).any():
        age[outside] = rng.normal(_AGE_MEAN, _AGE_SD, int(outside.sum()))
    age_days = age * 365.25
    birth = np.datetime64(reference, "D") - age_days.astype(np.int64).astype("timedelta64[D]")
    phone = unique_numbers(rng, n, 10 ** 9)
    phone = np.asarray([f"+447{number:09d}" for number in phone.tolist()], dtype=object)

    # Households: members share the head's last name and postcode, sometimes the phone; first names differ.
    household = np.full(n, -1, dtype=np.int64)
    members = rng.permutation(n)[: int(round(design.household_share * n))]
    sizes = np.asarray(_HOUSEHOLD_SIZES)[rng.choice(len(_HOUSEHOLD_SIZES), size=len(members) // 2 + 1,
                                                    p=_HOUSEHOLD_SIZE_SHARE)]
    number = np.repeat(np.arange(len(sizes)), sizes)[: len(members)]
    if len(number) and np.sum(number == number[-1]) == 1:  # a household of one is no household
        number = number[:-1]
        members = members[:-1]
    household[members] = number
    head = np.full(len(sizes), -1, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, number[1:] != number[:-1]]) if len(number) else np.zeros(0, dtype=np.int64)
    head[number[starts]] = members[starts]  # each household's first member
    follower = members[members != head[number]]
    their_head = head[household[follower]]
    last[follower] = last[their_head]
    postcode[follower] = postcode[their_head]
    landline = rng.random(len(follower)) < design.household_phone_share
    phone[follower[landline]] = phone[their_head[landline]]
    for _ in range(100):  # redraw a member's first name until it differs from the others' in the household
        clash = _first_name_clashes(first, household)
        if not clash.any():
            break
        first[clash] = zipf(rng, len(first_names), FIRST_NAME_OFFSET, int(clash.sum()))

    email = email_addresses(rng, first_names[first], last, np.arange(1, n + 1))
    return _People(first_name=first, last_name=last, postcode=postcode, postcodes=postcodes, birth_date=birth,
                   email=email, phone=phone, household=household)


def _first_name_clashes(first: np.ndarray, household: np.ndarray) -> np.ndarray:
    """People in a household whose first name an earlier member of it has too."""
    inside = household >= 0
    frame = pd.DataFrame({"household": household[inside], "first": first[inside]})
    clash = np.zeros(len(first), dtype=bool)
    clash[np.flatnonzero(inside)[frame.duplicated().to_numpy()]] = True
    return clash


def _first_contacts(rng: np.random.Generator, people: _People, customer_ids: np.ndarray,
                    design: IdentityDesign) -> pd.DataFrame:
    """Every person's first account's contact record (``customer_ids[i]`` is person ``i``'s account)."""
    n = len(customer_ids)
    phone = np.where(rng.random(n) < design.phone_missing, None, people.phone)
    birth = np.where(rng.random(n) < design.birth_date_missing, np.datetime64("NaT"), people.birth_date)
    first_names = np.asarray([name for name, _ in FIRST_NAMES], dtype=object)
    return _contact_frame(customer_ids, people.email, phone, first_names[people.first_name], people.last_name,
                          people.postcodes[people.postcode], birth)


def _duplicate_contacts(rng: np.random.Generator, people: _People, person: np.ndarray, customer_ids: np.ndarray,
                        design: IdentityDesign, first_phone: np.ndarray) -> pd.DataFrame:
    """The contact records of the second accounts ``customer_ids`` of people ``person`` (indices): the person's,
    re-typed (module docstring, Duplicate accounts). ``first_phone``: whether each one's first account shows
    its phone."""
    n = len(person)
    same_email = rng.random(n) < design.duplicate_same_email
    other_email = email_addresses(rng, np.asarray([FIRST_NAMES[i][0] for i in people.first_name[person]], dtype=object),
                                   people.last_name[person], person + 1, avoid=people.email[person])
    email = np.where(same_email, people.email[person], other_email)

    same_phone = first_phone & (rng.random(n) < design.duplicate_same_phone)
    own_phone = unique_numbers(rng, n, 10 ** 9)
    own_phone = np.asarray([f"+446{number:09d}" for number in own_phone.tolist()], dtype=object)  # never a first number
    phone = np.where(same_phone, people.phone[person],
                     np.where(rng.random(n) < design.phone_missing, None, own_phone))

    first = np.asarray([FIRST_NAMES[i][0] for i in people.first_name[person]], dtype=object)
    change = rng.random(n)
    typo = change < design.duplicate_first_name_typo
    nickname = (change >= design.duplicate_first_name_typo) & (
        change < design.duplicate_first_name_typo + design.duplicate_nickname)
    first = with_typos(rng, first, typo)
    pick = rng.random(n)
    for k in np.flatnonzero(nickname):
        names = FIRST_NAMES[people.first_name[person[k]]][1]
        if names:
            first[k] = names[int(pick[k] * len(names))]
    last = with_typos(rng, people.last_name[person].copy(), rng.random(n) < design.duplicate_last_name_typo)

    postcode = people.postcode[person].copy()
    moved = rng.random(n) < design.duplicate_moved
    if len(people.postcodes) > 1:  # another postcode of the pool
        postcode[moved] = (postcode[moved] + rng.integers(1, len(people.postcodes), int(moved.sum()))) % len(people.postcodes)
    birth = np.where(rng.random(n) < design.duplicate_birth_date_missing, np.datetime64("NaT"),
                     people.birth_date[person])
    return _contact_frame(customer_ids, email, phone, first, last, people.postcodes[postcode], birth)


def _contact_frame(customer_id: np.ndarray, email: np.ndarray, phone: np.ndarray, first_name: np.ndarray,
                   last_name: np.ndarray, postcode: np.ndarray, birth_date: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({
        "customer_id": np.asarray(customer_id, dtype=np.int64),
        "email_hash": sha256_hex(email),
        "phone_hash": sha256_hex(phone),
        "first_name": np.asarray(first_name, dtype=object),
        "last_name": np.asarray(last_name, dtype=object),
        "postcode": np.asarray(postcode, dtype=object),
        "birth_date": pd.to_datetime(np.asarray(birth_date, dtype="datetime64[D]")).astype("datetime64[ns]"),
    })
    return frame[list(CONTACT_COLUMNS)]


def apply_identity(store: SyntheticStore, seed: int, design: IdentityDesign = IdentityDesign()) -> SyntheticStore:
    """``store`` as a real platform records it: devices and anonymous ids on the events, anonymous sessions,
    duplicate accounts with their orders and sessions, contact records for every account, and the truth
    (``truth.identities``, ``truth.devices``) — module docstring. ``store`` is not changed; the result is
    deterministic for ``seed`` (its own random stream)."""
    began = time.perf_counter()
    rng = np.random.default_rng([seed, 20])
    customers = store.shop["customers"]
    person_ids = customers["customer_id"].to_numpy(dtype=np.int64)
    n = len(person_ids)
    person_of_id = np.full(int(person_ids.max(initial=0)) + 1, -1, dtype=np.int64)
    person_of_id[person_ids] = np.arange(n)
    people = _draw_people(rng, n, design, _reference_date(store))

    events = store.events
    sessions = _sessions(events)
    known = sessions.owner > 0
    person = np.where(known, person_of_id[np.minimum(sessions.owner, len(person_of_id) - 1)], -1)
    if (known & (person < 0)).any():
        raise ValueError("events of customers missing from shop.customers")

    devices = _draw_devices(rng, design, person, sessions, n, people.household)
    account, duplicate = _split_accounts(rng, design, person, sessions, n, int(person_ids.max(initial=0)))
    anonymous = rng.random(len(person)) < design.anonymous_session_share
    visitor = _visitors(rng, design, ~known)

    numbers = np.where(known, devices.session_device, devices.count + visitor)
    ids = _anonymous_ids(rng, devices.count + int(visitor.max(initial=-1)) + 1)
    frame = _identified_events(events, sessions, np.where(known, account, 0), known & anonymous, ids[numbers])

    first = _first_contacts(rng, people, person_ids, design)
    second = _duplicate_contacts(rng, people, duplicate.person, duplicate.customer_id, design,
                                 first["phone_hash"].notna().to_numpy()[duplicate.person])
    contacts = pd.concat([first, second], ignore_index=True)
    orders = store.shop["orders"].copy()
    orders["customer_id"] = _order_accounts(orders, person_of_id, duplicate, n)

    used = np.unique(np.stack([numbers[known], person[known]]), axis=1)
    truth_devices = pd.DataFrame({"anonymous_id": ids[used[0]], "person_id": person_ids[used[1]]}) \
        .sort_values(["anonymous_id", "person_id"], ignore_index=True)
    identities = pd.DataFrame({"customer_id": np.concatenate([person_ids, duplicate.customer_id]),
                               "person_id": np.concatenate([person_ids, person_ids[duplicate.person]])})
    parameters = design.run_parameters()
    generator_run = pd.concat([store.truth.get("generator_run", pd.DataFrame({"key": [], "value": []}, dtype=object)),
                               pd.DataFrame({"key": list(parameters), "value": list(parameters.values())})],
                              ignore_index=True)
    shop = {**store.shop,
            "customers": pd.concat([customers, _duplicate_customers(rng, store, duplicate, account, sessions)],
                                 ignore_index=True),
            "orders": orders,
            "customer_contacts": contacts.sort_values("customer_id", ignore_index=True)}
    truth = {**store.truth, "generator_run": generator_run, "identities": identities, "devices": truth_devices}
    logger.info("identities: %d people, %d devices (%d shared), %d duplicate accounts, %d anonymous visitors, "
                "%.1f%% of known sessions anonymous (%.1fs)", n, devices.count, devices.shared, len(duplicate.person),
                int(visitor.max(initial=-1)) + 1, 100.0 * float(anonymous[known].mean()) if known.any() else 0.0,
                time.perf_counter() - began)
    return SyntheticStore(shop=shop, truth=truth, events=frame)


@dataclass(frozen=True)
class _Sessions:
    """The web sessions of an events frame (in session id order, which is start order) and where their events are."""

    event: np.ndarray  # positions of the web events in the frame
    event_session: np.ndarray  # per web event, its session (index)
    owner: np.ndarray  # per session: the customer id it was drawn for (0: anonymous visitor)
    start_ms: np.ndarray
    end_ms: np.ndarray
    device_type: np.ndarray  # per session, code of its device type
    channel: np.ndarray  # per session, its channel (str)
    login_event: np.ndarray  # per session, the frame position of its first checkout (max int: none)


@dataclass(frozen=True)
class _Devices:
    count: int  # devices of known people, numbered 0..count-1
    session_device: np.ndarray  # per session, the device it went through (known people's sessions)
    shared: int


@dataclass(frozen=True)
class _Duplicates:
    person: np.ndarray  # person index of each duplicate account, ascending
    customer_id: np.ndarray  # its customer id
    split_ms: np.ndarray  # the first moment recorded under it: events and orders from then on


def _reference_date(store: SyntheticStore) -> dt.date:
    run = store.truth.get("generator_run")
    if run is not None and (run["key"] == "start").any():
        return dt.date.fromisoformat(run.loc[run["key"] == "start", "value"].iloc[0])
    return CONTACTS_REFERENCE_DATE


def _sessions(events: pd.DataFrame) -> _Sessions:
    session = events["session_id"].to_numpy().astype(np.int64)
    web = np.flatnonzero(session != 0)
    position = np.arange(len(web))
    size = int(session.max(initial=0)) + 1
    first = np.full(size, len(web), dtype=np.int64)
    np.minimum.at(first, session[web], position)  # events are in time order: a session's first is its start
    last = np.full(size, -1, dtype=np.int64)
    np.maximum.at(last, session[web], position)
    ids = np.flatnonzero(last >= 0)
    first, last = first[ids], last[ids]
    compact = np.full(size, -1, dtype=np.int64)
    compact[ids] = np.arange(len(ids))
    event_session = compact[session[web]]
    time_ms = _epoch_ms(events["event_time"])[web]
    checkout = np.flatnonzero((events["event_type"] == "checkout").to_numpy()[web])
    login_event = np.full(len(ids), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(login_event, event_session[checkout], web[checkout])
    return _Sessions(
        event=web, event_session=event_session,
        owner=events["customer_id"].to_numpy().astype(np.int64)[web[first]],
        start_ms=time_ms[first], end_ms=time_ms[last],
        device_type=np.asarray(events["device"].cat.codes)[web[first]].astype(np.int64),
        channel=events["channel"].to_numpy()[web[first]].astype(object),
        login_event=login_event,
    )


def _draw_devices(rng: np.random.Generator, design: IdentityDesign, person: np.ndarray, sessions: _Sessions, n: int,
                  household: np.ndarray) -> _Devices:
    """Each person's devices (their types the person's most frequent session types) and the one each session
    of a known person went through; a few devices shared with another member of the owner's household."""
    max_devices = len(design.devices_per_person)
    share = np.asarray(design.devices_per_person, dtype=np.float64)
    n_devices = rng.choice(max_devices, size=n, p=share / share.sum()) + 1
    known = person >= 0
    n_types = int(sessions.device_type.max(initial=0)) + 1
    counts = np.bincount(person[known] * n_types + sessions.device_type[known], minlength=n * n_types).reshape(n, n_types)
    by_frequency = np.argsort(-counts, axis=1, kind="stable")
    slot = np.arange(max_devices)
    ranked = by_frequency[:, np.minimum(slot, n_types - 1)]
    seen = np.take_along_axis(counts, ranked, axis=1) > 0
    device_type = np.where(seen & (slot < n_types), ranked, by_frequency[:, :1])
    device_type = np.where(slot < n_devices[:, None], device_type, -1)
    number = np.where(device_type >= 0, np.cumsum(device_type >= 0).reshape(n, max_devices) - 1, -1)
    count = int((device_type >= 0).sum())

    # a session goes through one of the person's devices of its type, or any of theirs when none has it
    who, kind = person[known], sessions.device_type[known]
    candidate = device_type[who] == kind[:, None]
    candidate[~candidate.any(axis=1)] = (device_type[who] >= 0)[~candidate.any(axis=1)]
    pick = np.floor(rng.random(len(who)) * candidate.sum(axis=1))
    chosen = np.argmax(np.cumsum(candidate, axis=1) > pick[:, None], axis=1)
    session_device = np.full(len(person), -1, dtype=np.int64)
    session_device[known] = number[who, chosen]

    # shared devices: another member of the owner's household uses it for half of their sessions of its type
    owner, owner_slot = np.nonzero((device_type >= 0) & (household[:, None] >= 0))
    p_shared = min(1.0, design.shared_device_share * count / len(owner)) if len(owner) else 0.0
    shared = rng.random(len(owner)) < p_shared
    owner, owner_slot = owner[shared], owner_slot[shared]
    members = np.argsort(household, kind="stable")[int(np.sum(household < 0)):]
    position = np.empty(n, dtype=np.int64)
    position[members] = np.arange(len(members))
    start = np.searchsorted(household[members], household[owner])
    size = np.searchsorted(household[members], household[owner], side="right") - start
    at = start + np.floor(rng.random(len(owner)) * (size - 1)).astype(np.int64)
    other = members[at + (at >= position[owner])]  # a uniform member other than the owner
    shared_device = np.full((n, n_types), -1, dtype=np.int64)
    key = other * n_types + device_type[owner, owner_slot]
    _, once = np.unique(key, return_index=True)  # a member borrows one device of a type at most
    shared_device.ravel()[key[once]] = number[owner, owner_slot][once]
    borrowed = shared_device[who, kind]
    use = (borrowed >= 0) & (rng.random(len(who)) < _SHARED_DEVICE_USE)
    session_device[np.flatnonzero(known)[use]] = borrowed[use]
    return _Devices(count=count, session_device=session_device, shared=int(shared.sum()))


def _split_accounts(rng: np.random.Generator, design: IdentityDesign, person: np.ndarray, sessions: _Sessions, n: int,
                    max_customer_id: int) -> tuple[np.ndarray, _Duplicates]:
    """The account each session is recorded under (known people's sessions; else 0) and the duplicate accounts."""
    known = np.flatnonzero(person >= 0)
    who, day = person[known], sessions.start_ms[known] // _MS_PER_DAY
    first_day = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    last_day = np.full(n, -1, dtype=np.int64)
    np.minimum.at(first_day, who, day)
    np.maximum.at(last_day, who, day)
    eligible = last_day > first_day
    rate = min(1.0, design.duplicate_share * n / int(eligible.sum())) if eligible.any() else 0.0
    duplicated = np.flatnonzero(eligible & (rng.random(n) < rate))
    split_day = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    split_day[duplicated] = rng.integers(first_day[duplicated] + 1, last_day[duplicated] + 1)

    # from the first session on or after the split day on, everything is recorded under the new account
    split_ms = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    after = day >= split_day[who]
    np.minimum.at(split_ms, who[after], sessions.start_ms[known][after])
    new_id = np.zeros(n, dtype=np.int64)
    new_id[duplicated] = max_customer_id + 1 + np.arange(len(duplicated))
    account = np.where(person >= 0, sessions.owner, 0)
    moved = known[sessions.end_ms[known] >= split_ms[who]]
    account[moved] = new_id[person[moved]]
    return account, _Duplicates(person=duplicated, customer_id=new_id[duplicated], split_ms=split_ms[duplicated])


def _visitors(rng: np.random.Generator, design: IdentityDesign, anonymous: np.ndarray) -> np.ndarray:
    """Per session, the anonymous visitor (0, 1, ...) of each visitor session (``anonymous``), else -1: a new
    visitor, or with probability ``anonymous_return_share`` one seen before, uniformly."""
    m = int(anonymous.sum())
    new = rng.random(m) >= design.anonymous_return_share
    new[:1] = True
    before = np.cumsum(new) - new
    visitor = np.full(len(anonymous), -1, dtype=np.int64)
    visitor[anonymous] = np.where(new, before, np.floor(rng.random(m) * before).astype(np.int64))
    return visitor


def _anonymous_ids(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` distinct ids 'd' + 16 hex digits (an odd-multiplier affine permutation of 64-bit numbers)."""
    a = np.uint64(int(rng.integers(0, 2 ** 62)) * 2 + 1)
    b = np.uint64(int(rng.integers(0, 2 ** 62)))
    numbers = np.arange(count, dtype=np.uint64) * a + b  # wraps modulo 2**64
    return np.asarray([f"d{x:016x}" for x in numbers.tolist()], dtype=object)


def _identified_events(events: pd.DataFrame, sessions: _Sessions, account: np.ndarray, anonymous: np.ndarray,
                       anonymous_id: np.ndarray) -> pd.DataFrame:
    """The events with each web event's account (0 before the login of an anonymous session) and anonymous id,
    columns in contract order."""
    session = sessions.event_session
    customer = events["customer_id"].to_numpy().copy()
    logged_out = anonymous[session] & (sessions.event < sessions.login_event[session])
    customer[sessions.event] = np.where(logged_out, 0, account[session]).astype(customer.dtype)
    ids = np.full(len(events), "", dtype=object)
    ids[sessions.event] = anonymous_id[session]
    frame = events.drop(columns="anonymous_id", errors="ignore")  # a copy
    frame["customer_id"] = customer
    frame.insert(frame.columns.get_loc("customer_id") + 1, "anonymous_id", ids)
    return frame[_EVENT_COLUMNS] if list(frame.columns) != _EVENT_COLUMNS else frame


def _epoch_ms(moments: pd.Series) -> np.ndarray:
    """Milliseconds since 1970 of UTC timestamps."""
    return pd.DatetimeIndex(moments).as_unit("ms").asi8


def _order_accounts(orders: pd.DataFrame, person_of_id: np.ndarray, duplicate: _Duplicates, n: int) -> np.ndarray:
    """Each order's account: the duplicate's from its person's split on, else the order's own."""
    customer = orders["customer_id"].to_numpy(dtype=np.int64)
    person = person_of_id[customer]
    split_ms = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    split_ms[duplicate.person] = duplicate.split_ms
    new_id = np.zeros(n, dtype=np.int64)
    new_id[duplicate.person] = duplicate.customer_id
    moved = _epoch_ms(orders["order_ts"]) >= split_ms[person]
    return np.where(moved, new_id[person], customer)


def _duplicate_customers(rng: np.random.Generator, store: SyntheticStore, duplicate: _Duplicates,
                         account: np.ndarray, sessions: _Sessions) -> pd.DataFrame:
    """``shop.customers`` rows of the duplicate accounts: signed up on the day of their first session, through
    its channel (email: direct), in the person's country and time zone, consent at their segment's rate."""
    customers = store.shop["customers"]
    rows = customers.iloc[duplicate.person].copy()
    ids, first = np.unique(account, return_index=True)  # sessions are in start order
    first = first[np.searchsorted(ids, duplicate.customer_id)]
    rows["customer_id"] = duplicate.customer_id
    rows["signup_date"] = pd.to_datetime(sessions.start_ms[first] // _MS_PER_DAY, unit="D").astype("datetime64[ns]")
    channel = sessions.channel[first]
    rows["acquisition_channel"] = np.where(channel == "email", "direct", channel).astype(object)
    opt_in = customers["email_opt_in"].to_numpy(dtype=np.float64)
    rate = np.full(len(rows), opt_in.mean() if len(opt_in) else 0.0)
    segments = store.truth.get("customers")
    if segments is not None and "segment" in segments:
        segment = customers[["customer_id"]].merge(segments[["customer_id", "segment"]], on="customer_id", how="left")
        by_segment = pd.Series(opt_in).groupby(segment["segment"].to_numpy()).mean()
        rate = by_segment.reindex(segment["segment"].to_numpy()[duplicate.person]).fillna(opt_in.mean()).to_numpy()
    rows["email_opt_in"] = rng.random(len(rows)) < rate
    if "do_not_profile" in rows:
        rows["do_not_profile"] = False
    return rows.reset_index(drop=True)
