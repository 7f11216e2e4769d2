"""Identity resolution: which accounts are one person, and which anonymous devices are whose.

Three kinds of evidence, strongest first (docs/privacy.md):

- **a shared e-mail hash** (``shop.customer_contacts.email_hash``): two accounts with the same address are one
  person (merged deterministically);
- **a probabilistic match** of the accounts' contact details (:func:`ml.identity.matching.match_accounts`, a
  Fellegi-Sunter model): merged when the match probability reaches ``identity_match_threshold``, with the fields
  that agreed recorded;
- **a login**: a session whose events carry both an ``anonymous_id`` and a ``customer_id`` ties that device to
  the customer, so its anonymous sessions (before the login, or on other days) count towards the customer.
  A device that logged in as two different people (a shared family computer) is tied to no one.

Accounts and their merges form a graph; its connected components (``scipy.sparse.csgraph``) are people, and a
person's canonical customer is their earliest account (ties: the smallest id). A phone number alone never
merges (households share one); it is one field of the probabilistic model. Erased people (``scores.erasure_log``)
are left out of everything. The contact details are read into memory only: nothing but the map itself (ids,
method, the names of the fields that agreed) is written anywhere.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ml.identity.matching import match_accounts
from ml.params import RunParams
from revopt.platform.catalog import has_table
from revopt.platform.events import clickhouse_time
from revopt.platform.identity import erased_accounts, has_anonymous_ids, sync_resolution
from revopt.platform.postgres import read_frame
from revopt.platform.privacy import id_secret
from revopt.platform.resources import Resources

logger = logging.getLogger(__name__)

MODEL_NAME = "identity_resolution"
MAP_COLUMNS = ("run_date", "identifier_type", "identifier", "customer_id", "method", "match_probability", "evidence",
               "first_seen", "last_seen", "model_name", "model_version")
CONTACT_COLUMNS = ("customer_id", "email_hash", "phone_hash", "first_name", "last_name", "postcode", "birth_date")

# Every login ever seen before the run: (device, account) with its first and last sighting and sessions.
_LOGINS_SQL = """
SELECT anonymous_id, toInt64(customer_id) AS customer_id, min(event_time) AS first_seen, max(event_time) AS last_seen,
       toInt64(uniqExact(session_id)) AS sessions
FROM {database}.events
WHERE anonymous_id != '' AND customer_id != 0 AND event_time < {{run_ts:DateTime64(3, 'UTC')}}
GROUP BY anonymous_id, customer_id
"""
_ACCOUNTS_SQL = ("SELECT customer_id::bigint AS customer_id, signup_date FROM shop.customers WHERE signup_date < %(run_date)s "
                 "ORDER BY customer_id")
_CONTACTS_SQL = """
SELECT c.customer_id::bigint AS customer_id, c.email_hash::text AS email_hash, c.phone_hash::text AS phone_hash,
       c.first_name::text AS first_name, c.last_name::text AS last_name, c.postcode::text AS postcode, c.birth_date
FROM shop.customer_contacts AS c JOIN shop.customers AS s ON s.customer_id = c.customer_id
WHERE s.signup_date < %(run_date)s
ORDER BY c.customer_id
"""
_STRENGTH = {"email_hash": 2.0}  # a shared address outranks any probability when picking an account's evidence


@dataclass(frozen=True)
class Resolution:
    identity_map: pd.DataFrame
    summary: dict[str, int]


def resolve(accounts: pd.DataFrame, contacts: pd.DataFrame, logins: pd.DataFrame, matches: pd.DataFrame,
            run_date: dt.date, threshold: float, erased: frozenset[int] = frozenset()) -> Resolution:
    """The identity map (:data:`MAP_COLUMNS`) from the accounts (customer_id, signup_date), their contacts
    (:data:`CONTACT_COLUMNS`, any subset of rows), the logins (anonymous_id, customer_id, first_seen, last_seen,
    sessions) and the probabilistic ``matches`` at or above ``threshold`` (customer_id_l, customer_id_r,
    match_probability, agreed, disagreed). Erased accounts and everything touching them are left out."""
    accounts = accounts.loc[~accounts["customer_id"].isin(erased)].sort_values("customer_id").reset_index(drop=True)
    ids = accounts["customer_id"].to_numpy(dtype="int64")
    position = pd.Series(np.arange(len(ids)), index=ids)
    edges = _edges(contacts.loc[contacts["customer_id"].isin(ids)], matches, set(ids))

    n_components, label = connected_components(
        coo_matrix((np.ones(len(edges)), (position[edges["left"]].to_numpy(), position[edges["right"]].to_numpy())),
                   shape=(len(ids), len(ids))), directed=False) if len(ids) else (0, np.zeros(0, dtype=int))
    signup = pd.to_datetime(accounts["signup_date"]).to_numpy()
    order = np.lexsort((ids, signup, label))  # by component, then earliest signup, then smallest id
    _, first_index = np.unique(label[order], return_index=True)
    first_of = order[first_index]  # each component's earliest account (components are numbered 0..n-1)
    canonical = pd.Series(ids[first_of[label]], index=ids) if len(ids) else pd.Series(dtype="int64")
    sizes = np.bincount(label, minlength=n_components) if len(ids) else np.zeros(0, dtype=int)

    version = f"threshold {threshold:g}"
    rows = [_account_rows(ids, canonical, sizes[label] if len(ids) else sizes, signup, edges)]
    devices, ambiguous, dropped = _device_rows(logins, canonical, erased)
    rows.append(devices)
    frame = pd.concat([r for r in rows if len(r)], ignore_index=True) if any(len(r) for r in rows) else _empty_map()
    frame.insert(0, "run_date", run_date)
    frame["model_name"] = MODEL_NAME
    frame["model_version"] = version
    frame = frame[list(MAP_COLUMNS)].sort_values(["identifier_type", "customer_id", "identifier"], kind="stable")
    merged = frame.loc[(frame["identifier_type"] == "customer_id") & (frame["method"] != "canonical")]
    summary = {
        "accounts": int(len(ids)), "people": int(n_components), "accounts_merged": int(len(merged)),
        "merged_by_email_hash": int((merged["method"] == "email_hash").sum()),
        "merged_by_probabilistic": int((merged["method"] == "probabilistic").sum()),
        "devices_linked": int(len(devices)), "devices_shared_not_linked": ambiguous,
        "devices_of_erased_people": dropped, "erased_accounts_left_out": int(len(erased)),
    }
    return Resolution(frame.reset_index(drop=True), summary)


def _edges(contacts: pd.DataFrame, matches: pd.DataFrame, known: set[int]) -> pd.DataFrame:
    """Account pairs to merge: (left, right, method, probability, evidence), left < right."""
    parts = []
    emails = contacts.dropna(subset=["email_hash"])
    emails = emails.loc[emails["email_hash"].astype(str) != ""]
    if len(emails):
        first = emails.groupby("email_hash")["customer_id"].transform("min")
        shared = emails.loc[emails["customer_id"] != first]
        parts.append(pd.DataFrame({"left": first[shared.index].to_numpy(dtype="int64"),
                                   "right": shared["customer_id"].to_numpy(dtype="int64"), "method": "email_hash",
                                   "probability": np.nan, "evidence": "the same e-mail hash"}))
    if len(matches):
        kept = matches.loc[matches["customer_id_l"].isin(known) & matches["customer_id_r"].isin(known)]
        parts.append(pd.DataFrame({
            "left": kept["customer_id_l"].to_numpy(dtype="int64"), "right": kept["customer_id_r"].to_numpy(dtype="int64"),
            "method": "probabilistic", "probability": kept["match_probability"].to_numpy(dtype="float64"),
            "evidence": ("agreed: " + kept["agreed"].astype(str) + "; disagreed: "
                         + kept["disagreed"].astype(str).replace("", "none")).to_numpy(dtype=object)}))
    if not parts:
        return pd.DataFrame({"left": pd.Series(dtype="int64"), "right": pd.Series(dtype="int64"),
                             "method": pd.Series(dtype=object), "probability": pd.Series(dtype="float64"),
                             "evidence": pd.Series(dtype=object)})
    return pd.concat(parts, ignore_index=True)


def _account_rows(ids: np.ndarray, canonical: pd.Series, size: np.ndarray, signup: np.ndarray,
                  edges: pd.DataFrame) -> pd.DataFrame:
    """One row per account of a person with several: the canonical one, and each other with its strongest edge
    (every account of such a person has at least one). A link is first seen when the later of its two accounts
    signed up."""
    several = size > 1
    if not several.any():
        return _empty_map()
    signup_of = pd.Series(pd.to_datetime(signup).to_numpy(dtype="datetime64[ns]"), index=ids)
    both = pd.concat([edges.rename(columns={"left": "account", "right": "other"}),
                      edges.rename(columns={"right": "account", "left": "other"})], ignore_index=True)
    both["strength"] = both["method"].map(_STRENGTH).fillna(both["probability"])
    best = both.sort_values(["account", "strength"], ascending=[True, False], kind="stable").drop_duplicates("account")
    best = best.set_index("account").reindex(ids[several])
    accounts = ids[several]
    is_canonical = canonical[accounts].to_numpy() == accounts
    other = best["other"].to_numpy(dtype="int64")
    evidence = [f"the earliest of {n} accounts of one person" if own else f"{text} (account {o})"
                for own, n, text, o in zip(is_canonical, size[several], best["evidence"], other)]
    mine, theirs = signup_of[accounts].to_numpy(), signup_of[other].to_numpy()
    return pd.DataFrame({
        "identifier_type": "customer_id", "identifier": accounts.astype(str), "customer_id": canonical[accounts].to_numpy(),
        "method": np.where(is_canonical, "canonical", best["method"].to_numpy(dtype=object)),
        "match_probability": np.where(is_canonical, np.nan, best["probability"].to_numpy(dtype="float64")),
        "evidence": evidence,
        "first_seen": pd.to_datetime(np.where(is_canonical, mine, np.maximum(mine, theirs))).tz_localize("UTC"),
        "last_seen": pd.Series(pd.NaT, index=range(len(accounts)), dtype="datetime64[ns, UTC]"),
    })


def _device_rows(logins: pd.DataFrame, canonical: pd.Series, erased: frozenset[int]) -> tuple[pd.DataFrame, int, int]:
    """Devices that logged in as exactly one person; how many were shared (left unlinked) or an erased person's."""
    if logins.empty:
        return _empty_map(), 0, 0
    touched_erased = set(logins.loc[logins["customer_id"].isin(erased), "anonymous_id"])
    logins = logins.loc[~logins["anonymous_id"].isin(touched_erased)].copy()
    logins["person"] = logins["customer_id"].map(canonical).fillna(logins["customer_id"]).astype("int64")
    people = logins.groupby("anonymous_id")["person"].nunique()
    single = logins.loc[logins["anonymous_id"].isin(people.index[people == 1])]
    grouped = single.groupby("anonymous_id")
    devices = grouped.agg(customer_id=("person", "first"), first_seen=("first_seen", "min"),
                          last_seen=("last_seen", "max"), sessions=("sessions", "sum"))
    accounts = grouped["customer_id"].agg(lambda a: ", ".join(str(int(x)) for x in sorted(set(a))))
    frame = pd.DataFrame({
        "identifier_type": "anonymous_id", "identifier": devices.index.astype(str),
        "customer_id": devices["customer_id"].to_numpy(dtype="int64"), "method": "login", "match_probability": np.nan,
        "evidence": [f"logged in as account {a} in {int(n)} session{'s' if n != 1 else ''}"
                     for a, n in zip(accounts[devices.index], devices["sessions"])],
        "first_seen": pd.to_datetime(devices["first_seen"], utc=True).to_numpy(),
        "last_seen": pd.to_datetime(devices["last_seen"], utc=True).to_numpy(),
    }).astype({"first_seen": "datetime64[ns, UTC]", "last_seen": "datetime64[ns, UTC]"})
    return frame, int((people > 1).sum()), len(touched_erased)


def _empty_map() -> pd.DataFrame:
    return pd.DataFrame({
        "identifier_type": pd.Series(dtype=object), "identifier": pd.Series(dtype=object),
        "customer_id": pd.Series(dtype="int64"), "method": pd.Series(dtype=object),
        "match_probability": pd.Series(dtype="float64"), "evidence": pd.Series(dtype=object),
        "first_seen": pd.Series(dtype="datetime64[ns, UTC]"), "last_seen": pd.Series(dtype="datetime64[ns, UTC]"),
    })


def resolve_identities(resources: Resources, run_date: dt.date, params: RunParams) -> dict[str, object]:
    """Tonight's identity map from the sources as of ``run_date``, written to the run folder for publishing."""
    run_ts = pd.Timestamp(run_date, tz="UTC")
    window = {"run_date": run_date}
    with resources.sources() as conn:
        accounts = read_frame(conn, _ACCOUNTS_SQL, window)
        has_contacts = has_table(conn, "shop.customer_contacts")
        contacts = read_frame(conn, _CONTACTS_SQL, window) if has_contacts else pd.DataFrame(columns=list(CONTACT_COLUMNS))
        erased = erased_accounts(conn, lambda: id_secret(resources.settings))
    accounts = accounts.astype({"customer_id": "int64"})
    contacts = contacts.astype({"customer_id": "int64"}).loc[~contacts["customer_id"].isin(erased)]
    store = resources.events
    if store is not None and has_anonymous_ids(store):
        logins = store.query_df(_LOGINS_SQL.format(database=store.database), {"run_ts": clickhouse_time(run_ts)})
        logins = logins.astype({"customer_id": "int64", "sessions": "int64"})
    else:
        logins = pd.DataFrame({"anonymous_id": pd.Series(dtype=object), "customer_id": pd.Series(dtype="int64"),
                               "first_seen": pd.Series(dtype="datetime64[ns, UTC]"),
                               "last_seen": pd.Series(dtype="datetime64[ns, UTC]"), "sessions": pd.Series(dtype="int64")})
    threshold = params.identity_match_threshold
    matches = match_accounts(contacts, threshold) if threshold < 1 and len(contacts) > 1 else pd.DataFrame()
    result = resolve(accounts, contacts, logins, matches, run_date, threshold, erased)
    logger.info("identity resolution for %s: %s", run_date,
                ", ".join(f"{name.replace('_', ' ')} {count:,}" for name, count in result.summary.items()))
    path = resources.write_output(run_date, "identity_map", result.identity_map)
    return {"identity_map": str(path), **result.summary}


def apply_identity_map(resources: Resources, run_date: dt.date) -> dict[str, int]:
    """Copy the map published for ``run_date`` (and the erased accounts) into ClickHouse, where every events query
    reads it."""
    store = resources.events
    if store is None:
        return {"links_in_clickhouse": 0}
    with resources.sources() as conn:
        written = sync_resolution(conn, store, lambda: id_secret(resources.settings), run_date)
    return {"links_in_clickhouse": written}
