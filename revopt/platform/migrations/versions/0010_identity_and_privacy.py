"""Identity resolution and privacy (docs/privacy.md).

- ``scores.identity_map``: per run date, every identifier revopt joined to another: each account of a person
  with several (``identifier_type = 'customer_id'``, the canonical one included with method ``canonical``) and
  each anonymous / device id seen logged in as one person (``'anonymous_id'``), with the canonical customer
  all of revopt's features, labels and scores use, how the link was made and when it was first and last seen.
  An account without a row is its own canonical customer. Contact values (hashed e-mails, names) are never
  stored: ``evidence`` names the fields that agreed.
- ``scores.erasure_log``: one row per erasure (``revopt erase``), the person recorded only as a keyed hash, with
  what was removed where. Extracts use it to keep erased people out until the source deletes them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from revopt.platform.migrations import create_table, latest_view

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

IDENTITY_MAP = (
    ("run_date", "date NOT NULL", "the nightly run that resolved identities"),
    ("identifier_type", "text NOT NULL", "customer_id (an account) or anonymous_id (a cookie / device id)"),
    ("identifier", "text NOT NULL", "the account id or the anonymous id"),
    ("customer_id", "bigint NOT NULL", "the canonical customer every score uses"),
    ("method", "text NOT NULL", "canonical, login, email_hash, phone_hash or probabilistic"),
    ("match_probability", "double precision", "probabilistic: the Fellegi-Sunter match probability (else NULL)"),
    ("evidence", "text NOT NULL", "why, in words: the login sessions, or which contact fields agreed"),
    ("first_seen", "timestamptz", "when the link was first seen (a login, or the later account's signup)"),
    ("last_seen", "timestamptz", "when it was last seen"),
    ("model_name", "text NOT NULL", "identity_resolution"),
    ("model_version", "text NOT NULL", "the resolution's settings (threshold) as a version string"),
)

ERASURE_LOG = (
    ("erasure_id", "bigint GENERATED ALWAYS AS IDENTITY", "one erasure"),
    ("erased_at", "timestamptz NOT NULL", "when revopt erased the person"),
    ("subject_hash", "text NOT NULL", "HMAC of the requested identifier (never the identifier itself)"),
    ("requested_by", "text NOT NULL", "identifier type the request named: customer_id or anonymous_id"),
    ("accounts", "integer NOT NULL", "accounts of the person erased"),
    ("anonymous_ids", "integer NOT NULL", "anonymous / device ids of the person erased"),
    ("account_hashes", "text[] NOT NULL", "HMACs of every account id erased: what extracts exclude"),
    ("removed", "jsonb NOT NULL", "where -> rows or files removed"),
    ("reason", "text", "the request's reference (e.g. a ticket), never personal data"),
)


def upgrade() -> None:
    create_table(op, "identity_map", IDENTITY_MAP, ",\n    PRIMARY KEY (run_date, identifier_type, identifier)",
                 "identifiers joined into one canonical customer per run date")
    latest_view(op, "identity_map")
    create_table(op, "erasure_log", ERASURE_LOG, ",\n    PRIMARY KEY (erasure_id)",
                 "erasures (revopt erase): hashed subject and what was removed")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS scores.identity_map_latest")
    op.execute("DROP TABLE IF EXISTS scores.identity_map")
    op.execute("DROP TABLE IF EXISTS scores.erasure_log")
