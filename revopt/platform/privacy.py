"""Privacy: the pseudonymisation key, consent and profiling rules, and who is kept out of what revopt publishes.

- **Pseudonyms.** Wherever revopt keeps a customer identifier it does not need in clear (MLflow artifacts,
  input examples, the erasure log) it keeps ``HMAC-SHA256(key, purpose:value)`` instead. The key comes from
  ``REVOPT_ID_SECRET`` (production: a secret from the environment) or, on the embedded stack, from a random
  key ``revopt init-db`` writes once to ``<state>/secrets/id_secret`` (mode 0600). Each purpose derives its
  own pseudonym, so the erasure log's entry for a person does not equal their pseudonym in an artifact.
- **Consent and profiling** (docs/privacy.md). ``shop.customers.email_opt_in = false`` means no marketing:
  no send time, no marketing action, no campaign audience. ``do_not_profile = true`` (optional in a store's
  view) means no score of any kind. Both are read per *person*: a canonical customer (identity resolution,
  ``scores.identity_map``) is withheld from profiling when any of their accounts asks not to be profiled, and
  from marketing unless every account has consented.
- **The publish guard.** Every per-customer table revopt publishes has a purpose in :data:`CUSTOMER_TABLES`;
  :func:`withheld_rows` drops the rows the purpose forbids just before a partition is written, so no step can
  leak a withheld customer, and a new table without a purpose fails its publish (and the test that lists
  every ``scores`` table with a ``customer_id``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

from revopt.platform.catalog import has_column, has_table
from revopt.platform.config import Settings

logger = logging.getLogger(__name__)

ID_SECRET_ENV = "REVOPT_ID_SECRET"

PROFILING = "profiling"  # a score, segment, affinity, recommendation or identity fact about the customer
MARKETING = "marketing"  # a contact decision: needs consent (and profiling allowed)
RECORD = "record"        # what happened to a unit, not a judgement of the customer: kept (e.g. a random assignment)

#: The purpose of each published table (schema ``scores``) that holds a ``customer_id`` column.
CUSTOMER_TABLES: dict[str, str] = {
    "customer_scores": PROFILING,
    "customer_affinity": PROFILING,
    "affinity_state": PROFILING,
    "recommendations": PROFILING,
    "customer_segments": PROFILING,
    # kept for everyone: it is how an objection or a missing consent on one account reaches the person's others
    # (and how erasure finds all of them); withholding it would let a flag on one account unmerge the person
    "identity_map": RECORD,
    "send_time_recommendations": MARKETING,
    "next_best_action": MARKETING,
}
#: ``scores.experiment_assignments`` keys customers as ``unit_id`` (for experiments whose unit is the customer):
#: a random assignment is a record, not a judgement, so it is kept for customers who may not be profiled; an
#: erasure removes it like every other row of the person.
#: Rows of a marketing table that are not a contact (kept for customers without consent, still withheld
#: from customers who may not be profiled): the row says "do nothing" and why.
_NOT_A_CONTACT = {"next_best_action": ("action", "do_nothing")}


#: The identity map a run of date ``%(run_date)s`` reads: the one published for that date, else the latest before it
#: (a refresh during the day, before tonight's map). Never a later one: re-running an old date (a backfill) must not
#: see merges learnt since.
MAP_AS_OF = ("(SELECT * FROM scores.identity_map WHERE run_date = "
             "(SELECT max(run_date) FROM scores.identity_map WHERE run_date <= %(run_date)s))")


def id_secret_path(settings: Settings) -> Path:
    return settings.home / "secrets" / "id_secret"


def ensure_id_secret(settings: Settings) -> str:
    """Make the embedded key file if the environment gives no key and the file does not exist yet (``init-db``);
    returns where the key comes from, for the CLI."""
    if settings.id_secret:
        return f"from {ID_SECRET_ENV}"
    path = id_secret_path(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return f"key file {path}"


def id_secret(settings: Settings) -> bytes:
    """The pseudonymisation key: ``REVOPT_ID_SECRET``, else the embedded key file."""
    if settings.id_secret:
        return settings.id_secret.encode()
    path = id_secret_path(settings)
    if not path.exists():
        raise RuntimeError(f"no pseudonymisation key: set {ID_SECRET_ENV} or run `revopt init-db` "
                           f"(which writes {path} for the embedded stack)")
    return path.read_text().strip().encode()


def pseudonymise(values: Iterable[object], secret: bytes, purpose: str = "id") -> np.ndarray:
    """``HMAC-SHA256(secret, "<purpose>:<value>")`` as 32 hex characters per value (object array)."""
    prefix = f"{purpose}:".encode()
    return np.asarray([hmac.new(secret, prefix + str(value).encode(), hashlib.sha256).hexdigest()[:32]
                       for value in values], dtype=object)


def subject_hash(identifier_type: str, value: object, secret: bytes) -> str:
    """The erasure log's entry for one identifier (``customer_id`` or ``anonymous_id``)."""
    return str(pseudonymise([value], secret, purpose=f"erasure:{identifier_type}")[0])


def account_hashes(accounts: Iterable[object], secret: bytes) -> np.ndarray:
    """The erasure log's entries for erased accounts (``account_hashes``), the hashes extracts match
    ``shop.customers`` against."""
    return pseudonymise(accounts, secret, purpose="erasure:customer_id")


def withheld_customers(conn: psycopg.Connection, run_date: dt.date) -> dict[str, set[int]]:
    """Canonical customer ids (identity map as of ``run_date``) withheld per purpose: ``profiling`` (any account with
    ``do_not_profile``) and ``marketing`` (those, plus anyone with an account without consent)."""
    if not has_table(conn, "shop.customers"):
        return {PROFILING: set(), MARKETING: set()}
    no_profile = "c.do_not_profile" if has_column(conn, "shop", "customers", "do_not_profile") else "false"
    mapped = has_table(conn, "scores.identity_map")
    canonical = "coalesce(m.customer_id, c.customer_id)" if mapped else "c.customer_id"
    join = (f"LEFT JOIN {MAP_AS_OF} AS m ON m.identifier_type = 'customer_id' "
            "AND m.identifier = c.customer_id::text") if mapped else ""
    rows = conn.execute(f"""
        SELECT {canonical} AS customer_id, bool_or(coalesce({no_profile}, false)) AS no_profile,
               bool_or(NOT coalesce(c.email_opt_in, false)) AS no_consent
        FROM shop.customers AS c {join}
        GROUP BY 1
        HAVING bool_or(coalesce({no_profile}, false)) OR bool_or(NOT coalesce(c.email_opt_in, false))
    """, {"run_date": run_date}).fetchall()
    profiling = {int(customer) for customer, no_profile, _ in rows if no_profile}
    return {PROFILING: profiling, MARKETING: {int(customer) for customer, _, _ in rows}}


def withheld_rows(conn: psycopg.Connection, table: str, frame: pd.DataFrame, run_date: dt.date) -> pd.DataFrame:
    """``frame`` (rows about to be published to ``scores.<table>`` for ``run_date``) without the rows its purpose
    forbids. Frames without a ``customer_id`` column pass unchanged; a customer table without a purpose raises."""
    if "customer_id" not in frame.columns or frame.empty:
        return frame
    name = table.split(".")[-1]
    purpose = CUSTOMER_TABLES.get(name)
    if purpose is None:
        raise ValueError(f"scores.{name} holds customer_id but has no privacy purpose: add it to "
                         "revopt.platform.privacy.CUSTOMER_TABLES (profiling, marketing or record)")
    if purpose == RECORD:
        return frame
    withheld = withheld_customers(conn, run_date)
    ids = frame["customer_id"].to_numpy()
    drop = np.isin(ids, list(withheld[PROFILING]))
    if purpose == MARKETING:
        no_consent = np.isin(ids, list(withheld[MARKETING]))
        column, quiet = _NOT_A_CONTACT.get(name, (None, None))
        if column is not None:
            no_consent &= frame[column].to_numpy() != quiet
        drop |= no_consent
    if drop.any():
        logger.info("withheld %d of %d rows of scores.%s (%s: no consent or do_not_profile)",
                    int(drop.sum()), len(frame), name, purpose)
    return frame.loc[~drop]
