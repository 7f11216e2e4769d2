"""Erasure (``revopt erase``): remove one person from everything revopt wrote, and remember them only as a hash.

**Who.** The person is the requested account (or anonymous id) plus everything identity resolution ever joined to
it: every account and device in any run date of ``scores.identity_map`` (closure: an account of the person brings
its own links in), every device seen logged in only as the person's accounts in the events, and the accounts of an
earlier erasure of the same subject (so a re-run after a partial failure is complete). An anonymous id that was
never linked to anyone is erased on its own.

**Where** (what was found holding customer ids in a demo state; docs/privacy.md):

- PostgreSQL ``scores``: every table with a customer id column (found through ``information_schema``, so a new
  table is covered without editing this), ``identity_map`` also by identifier, ``experiment_assignments`` by
  ``unit_id`` for customer experiments, ``order_attribution`` (and any table with an ``order_id``) by the
  person's orders; the validation examples in ``data_quality.failures`` are redacted. One transaction, which also
  writes the ``erasure_log`` row; the tables it touched are vacuumed afterwards.
- Run folders (``runs/<date>``): Parquet extracts, features and outputs lose the person's rows (customer,
  identifier, anonymous id, order and journey columns); Great Expectations results lose the person's
  example values (their data docs pages, which show the same examples, are deleted); Airflow logs lose every
  line naming the person.
- MLflow: the artifact store's Parquet, CSV and JSON (input examples, logged tables) lose the person's rows, by raw
  id and by their pseudonym (:func:`revopt.platform.privacy.pseudonymise`, purpose ``id``); any other file that
  holds a pseudonym or device id is deleted — except a registered model's own files, which are left and reported
  (a model that keys customers must be retrained to forget one). Run params and tags naming the person are
  removed where MLflow allows (tags), reported otherwise (params).
- ClickHouse: revopt's own tables in the events database (every table but the store's ``events``: campaign tiers
  and credits) lose the person's rows; ``identity_resolution`` is rebuilt from the identity map and the erasure
  log, so the erased accounts' events read as anonymous from now on (it keeps their ids, mapped to customer 0,
  while the store's events still hold them).

The source (``shop``, ``truth``, the ``events`` table) is the store's: revopt never deletes from it. Until the
store deletes the person, every extract drops erased accounts (:func:`revopt.platform.identity.erased_accounts`).

Files are rewritten first and the database last: until the erasure is logged, a failed run can simply be
repeated. Why written here: which columns and files of revopt's own state hold a person is revopt's knowledge.

**Limits.** A numeric id is matched in free text (logs, example lists) as a whole number, so a log line that
mentions an equal number for another reason goes too; plain ``VACUUM`` makes the deleted rows' space reusable
but PostgreSQL's write-ahead log and not-yet-reused pages keep their bytes until overwritten; a server-backed
MLflow store is reached only where its artifact location is a local path (elsewhere it is reported, not
rewritten); chDB / ClickHouse keep old parts until their merges. Erasure should not run while a DAG run is writing
the run folders.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any


from revopt.platform.catalog import has_table
from revopt.platform.config import Settings
from revopt.platform.erasure_files import CUSTOMER_COLUMN, ErasureReport, Person, erase_files, redact_text

logger = logging.getLogger(__name__)

_SKIPPED_TABLES = ("erasure_log", "schema_version")
_SEPARATOR = "\x1e"

# --- the person ------------------------------------------------------------------------------------


def linked_identifiers(conn: Any, accounts: Iterable[int], anonymous_ids: Iterable[str]) -> tuple[set[int], set[str]]:
    """The closure of ``accounts`` and ``anonymous_ids`` over every run date of ``scores.identity_map``."""
    accounts, anonymous = set(int(a) for a in accounts), set(anonymous_ids)
    if not has_table(conn, "scores.identity_map"):
        return accounts, anonymous
    while True:
        rows = conn.execute(
            "SELECT DISTINCT identifier_type, identifier, customer_id FROM scores.identity_map "
            "WHERE customer_id = ANY(%(accounts)s) OR (identifier_type = 'customer_id' AND identifier = ANY(%(texts)s)) "
            "OR (identifier_type = 'anonymous_id' AND identifier = ANY(%(anonymous)s))",
            {"accounts": sorted(accounts), "texts": sorted(str(a) for a in accounts), "anonymous": sorted(anonymous)},
        ).fetchall()
        grown_accounts = accounts | {int(c) for _, _, c in rows} | {int(i) for t, i, _ in rows if t == "customer_id"}
        grown_anonymous = anonymous | {i for t, i, _ in rows if t == "anonymous_id"}
        if grown_accounts == accounts and grown_anonymous == anonymous:
            return accounts, anonymous
        accounts, anonymous = grown_accounts, grown_anonymous


def _devices_logged_in_only_as(store: Any, accounts: set[int]) -> set[str]:
    """Anonymous ids seen logged in as the person's accounts and nobody else (a shared device is not theirs)."""
    from revopt.platform.identity import has_anonymous_ids

    if store is None or not accounts or not has_anonymous_ids(store):
        return set()
    found = store.query_df(
        f"SELECT anonymous_id FROM {store.database}.events WHERE anonymous_id != '' AND customer_id != 0 "
        f"AND anonymous_id IN (SELECT anonymous_id FROM {store.database}.events "
        f"WHERE anonymous_id != '' AND has({{ids:Array(UInt64)}}, customer_id)) "
        f"GROUP BY anonymous_id HAVING countIf(NOT has({{ids:Array(UInt64)}}, customer_id)) = 0",
        {"ids": sorted(accounts)})
    return {str(a) for a in found["anonymous_id"]}


def _orders_and_contacts(conn: Any, accounts: set[int]) -> tuple[set[int], set[str]]:
    orders: set[int] = set()
    hashes: set[str] = set()
    if not accounts:
        return orders, hashes
    if has_table(conn, "shop.orders"):
        orders = {int(o) for (o,) in conn.execute("SELECT order_id FROM shop.orders WHERE customer_id = ANY(%s)",
                                                   (sorted(accounts),)).fetchall()}
    if has_table(conn, "shop.customer_contacts"):
        rows = conn.execute("SELECT email_hash::text, phone_hash::text FROM shop.customer_contacts "
                            "WHERE customer_id = ANY(%s)", (sorted(accounts),)).fetchall()
        hashes = {value for row in rows for value in row if value}
    return orders, hashes


# --- PostgreSQL ------------------------------------------------------------------------------------


def _scores_columns(conn: Any) -> dict[str, dict[str, str]]:
    """Base tables of schema ``scores`` -> column -> data type."""
    rows = conn.execute(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns AS c "
        "JOIN information_schema.tables AS t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
        "WHERE c.table_schema = 'scores' AND t.table_type = 'BASE TABLE' ORDER BY c.table_name, c.ordinal_position"
    ).fetchall()
    tables: dict[str, dict[str, str]] = {}
    for table, column, kind in rows:
        if table not in _SKIPPED_TABLES:
            tables.setdefault(table, {})[column] = kind
    return tables


_INTEGER = ("bigint", "integer", "smallint", "numeric")
_TEXT = ("text", "character varying", "character")


def _row_conditions(table: str, columns: dict[str, str]) -> list[str]:
    """SQL conditions (named parameters of :func:`_erase_postgres`) that pick the person's rows of one table."""
    conditions = []
    for column, kind in columns.items():
        name = f'"{column}"'
        if CUSTOMER_COLUMN.search(column) and kind in _INTEGER:
            conditions.append(f"{name} = ANY(%(accounts)s)")
        elif CUSTOMER_COLUMN.search(column) and kind in _TEXT:
            conditions.append(f"{name} = ANY(%(account_values)s)")
        elif column == "identifier" and kind in _TEXT:
            conditions.append(f"{name} = ANY(%(identifiers)s)")
        elif column == "anonymous_id" and kind in _TEXT:
            conditions.append(f"{name} = ANY(%(anonymous)s)")
        elif column == "unit_id" and kind in _INTEGER:
            conditions.append(f"({name} = ANY(%(accounts)s) AND experiment_id = ANY(%(customer_experiments)s))"
                              if "experiment_id" in columns else f"{name} = ANY(%(accounts)s)")
        elif column == "order_id" and kind in _INTEGER:
            conditions.append(f"{name} = ANY(%(orders)s)")
    return conditions


def _erase_postgres(conn: Any, person: Person, report: ErasureReport) -> list[str]:
    """Delete the person's rows from every ``scores`` table; returns the tables touched (to vacuum)."""
    tables = _scores_columns(conn)
    customer_experiments = []
    if "experiments" in tables:
        customer_experiments = [e for (e,) in conn.execute(
            "SELECT experiment_id FROM scores.experiments WHERE unit = 'customer'").fetchall()]
    params = {
        "accounts": sorted(person.accounts), "orders": sorted(person.order_ids),
        "account_values": sorted(person.account_texts | person.pseudonyms),
        "identifiers": sorted(person.account_texts | person.anonymous_ids),
        "anonymous": sorted(person.anonymous_ids), "customer_experiments": customer_experiments,
    }
    _erase_staged(conn, person, report)
    touched = []
    for table, columns in tables.items():
        conditions = _row_conditions(table, columns)
        if conditions:
            deleted = conn.execute(f'DELETE FROM scores."{table}" WHERE ' + " OR ".join(conditions), params).rowcount
            if deleted:
                report.add(f"scores.{table}", deleted)
                touched.append(table)
        elif _redact_text_columns(conn, table, columns, person, report):
            touched.append(table)
    return touched


def _erase_staged(conn: Any, person: Person, report: ErasureReport) -> None:
    """The person's rows in staged slices not published yet (``scores_partitions.<table>__stage<date>``, left by a
    partitioned publish that failed or is still running, revopt.platform.postgres.stage_slice): readers never see
    them, but they are personal data all the same. Published partitions are reached through their parent tables."""
    staged = conn.execute(
        "SELECT c.table_name FROM information_schema.columns AS c WHERE c.table_schema = 'scores_partitions' "
        "AND c.table_name LIKE '%%\\_\\_stage%%' AND c.column_name = 'customer_id' ORDER BY 1").fetchall()
    for (table,) in staged:
        deleted = conn.execute(f'DELETE FROM scores_partitions."{table}" WHERE customer_id = ANY(%(accounts)s)',
                               {"accounts": sorted(person.accounts)}).rowcount
        if deleted:
            report.add(f"scores_partitions.{table}", deleted)


def _redact_text_columns(conn: Any, table: str, columns: dict[str, str], person: Person,
                         report: ErasureReport) -> bool:
    """In tables that are not per customer (validation records, reasons): the person's ids in example lists and
    their tokens anywhere in text, replaced. Returns whether any row changed."""
    pattern = person.number_pattern()
    changed = 0
    for column, kind in columns.items():
        if kind not in _TEXT:
            continue
        name = f'"{column}"'
        tokens = sorted(person.tokens)
        rows = conn.execute(
            f"SELECT ctid::text, {name} FROM scores.\"{table}\" WHERE {name} LIKE '%%e.g. [%%' "
            f"OR {name} LIKE ANY(%(likes)s)", {"likes": [f"%{t}%" for t in tokens]}).fetchall()
        for ctid, text in rows:
            redacted = redact_text(text, person, pattern)
            if redacted != text:
                conn.execute(f'UPDATE scores."{table}" SET {name} = %s WHERE ctid = %s::tid', (redacted, ctid))
                changed += 1
    report.add(f"scores.{table} (redacted)", changed)
    return changed > 0


# --- MLflow ----------------------------------------------------------------------------------------


def _artifact_roots(settings: Settings) -> tuple[list[Path], list[str]]:
    """Local folders holding MLflow artifacts, and the artifact locations that are not local (reported)."""
    if settings.mlflow_tracking_uri.startswith("sqlite:") or settings.mlflow_tracking_uri.startswith("file:"):
        return [settings.mlflow_artifact_root], []
    from mlflow import MlflowClient

    local, remote = [], []
    uri = settings.mlflow_tracking_uri
    for experiment in MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments():
        location = experiment.artifact_location or ""
        if location.startswith("file:"):
            local.append(Path(location.removeprefix("file://")))
        elif location.startswith("/"):
            local.append(Path(location))
        else:
            remote.append(location)
    return local, remote


def _erase_tracking(settings: Settings, person: Person, report: ErasureReport) -> None:
    """Run params and tags that name the person: tags deleted, params (MLflow cannot delete them) reported."""
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:") and not Path(uri.removeprefix("sqlite:///")).exists():
        return  # no tracking database yet: nothing was ever logged
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    pattern = person.number_pattern()

    def names(key: str, value: str) -> bool:
        if any(token in value for token in person.tokens):
            return True
        about_customers = bool(re.search(r"customer|account", key))
        return about_customers and pattern is not None and bool(pattern.search(value))

    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return
    for run in client.search_runs(experiments, max_results=50_000):
        for key, value in run.data.tags.items():
            if names(key, str(value)):
                client.delete_tag(run.info.run_id, key)
                report.add("mlflow: run tags", 1)
        for key, value in run.data.params.items():
            if names(key, str(value)):
                report.left[f"mlflow: param {key} of run {run.info.run_id}"] = 1
                logger.warning("MLflow run %s has a param %s naming the erased person; MLflow cannot delete params: "
                               "delete the run", run.info.run_id, key)


# --- ClickHouse ------------------------------------------------------------------------------------


def _erase_clickhouse(store: Any, person: Person, report: ErasureReport) -> None:
    """Delete the person from revopt's own tables of the events database (every MergeTree table but ``events``;
    ``identity_resolution`` is rebuilt from the identity map and the erasure log right after)."""
    from revopt.platform.contract import EVENTS_TABLE
    from revopt.platform.identity import RESOLUTION_TABLE

    columns = store.query_df(
        "SELECT c.table AS table, c.name AS name FROM system.columns AS c JOIN system.tables AS t "
        "ON t.database = c.database AND t.name = c.table WHERE c.database = {database:String} "
        "AND t.engine LIKE '%MergeTree' AND c.table != {events:String} "
        "AND c.name IN ('customer_id', 'identifier', 'anonymous_id')",
        {"database": store.database, "events": EVENTS_TABLE})
    # string lists travel as one String split on a control character: both chDB and the HTTP client pass it as is
    conditions = {
        "customer_id": "has({accounts:Array(UInt64)}, customer_id)",
        "identifier": "has(splitByChar('\\x1E', {identifiers:String}), identifier)",
        "anonymous_id": "has(splitByChar('\\x1E', {anonymous:String}), anonymous_id)",
    }
    params = {"accounts": sorted(a for a in person.accounts if a >= 0),
              "identifiers": _SEPARATOR.join(sorted(person.account_texts | person.anonymous_ids)),
              "anonymous": _SEPARATOR.join(sorted(person.anonymous_ids))}
    present = {"customer_id": params["accounts"], "identifier": params["identifiers"],
               "anonymous_id": params["anonymous"]}
    for table, rows in columns.groupby("table"):
        names = [name for name in rows["name"] if present[name]]  # an empty list must match nothing, not ''
        if not names or table == RESOLUTION_TABLE:
            continue
        where = " OR ".join(conditions[name] for name in names)
        found = int(store.query_df(f"SELECT count() AS n FROM {store.database}.{table} WHERE {where}",
                                   params)["n"].iloc[0])
        if found:
            store.command(f"ALTER TABLE {store.database}.{table} DELETE WHERE {where} SETTINGS mutations_sync = 2",
                          params)
            report.add(f"clickhouse.{table}", found)


# --- the whole erasure -----------------------------------------------------------------------------


def erase(settings: Settings, *, customer_id: int | None = None, anonymous_id: str | None = None,
          reason: str | None = None) -> ErasureReport:
    """Erase one person (by account or by anonymous id) from everything revopt wrote (module docstring)."""
    from revopt.platform.identity import erased_accounts, sync_resolution
    from revopt.platform.privacy import account_hashes, id_secret, pseudonymise, subject_hash
    from revopt.platform.schema import scores_connection
    from revopt.platform.stack import connect_postgres, event_store

    if (customer_id is None) == (anonymous_id is None):
        raise ValueError("erase one person: give exactly one of customer_id or anonymous_id")
    if anonymous_id is not None and not anonymous_id.strip():
        raise ValueError("anonymous_id is empty")
    secret = id_secret(settings)
    requested_by, value = ("customer_id", int(customer_id)) if customer_id is not None else ("anonymous_id",
                                                                                             anonymous_id)
    subject = subject_hash(requested_by, value, secret)
    store = event_store(settings) if settings.clickstream else None

    with scores_connection(settings) as conn:
        start_accounts = {int(customer_id)} if customer_id is not None else set()
        start_accounts |= erased_accounts(conn, lambda: secret, subject)  # an earlier, partial erasure of them
        accounts, anonymous = linked_identifiers(conn, start_accounts, {anonymous_id} if anonymous_id else set())
        anonymous |= _devices_logged_in_only_as(store, accounts)
        accounts, anonymous = linked_identifiers(conn, accounts, anonymous)
        orders, hashes = _orders_and_contacts(conn, accounts)
        customer_experiments = frozenset(e for (e,) in conn.execute(
            "SELECT experiment_id FROM scores.experiments WHERE unit = 'customer'").fetchall()) \
            if has_table(conn, "scores.experiments") else frozenset()
    pseudonyms = set(pseudonymise(sorted(accounts), secret, purpose="id")) | set(
        pseudonymise(sorted(anonymous), secret, purpose="id"))
    person = Person(accounts=frozenset(accounts), anonymous_ids=frozenset(anonymous),
                    pseudonyms=frozenset(pseudonyms), contact_hashes=frozenset(hashes), order_ids=frozenset(orders))
    report = ErasureReport(accounts=sorted(accounts), anonymous_ids=sorted(anonymous))
    logger.info("erasing %s %s: %d accounts, %d anonymous ids", requested_by,
                value if requested_by == "customer_id" else "(as requested)", len(accounts), len(anonymous))

    # Files first and the database last: until the erasure is logged, a failed run can simply be repeated.
    erase_files(settings.runs_dir, person, report, "run folders", customer_experiments=customer_experiments)
    erase_files(settings.airflow_home / "logs", person, report, "airflow logs")
    roots, remote = _artifact_roots(settings)
    for root in roots:
        erase_files(root, person, report, "mlflow artifacts", customer_experiments=customer_experiments,
                    keep_models=True)
    for location in remote:
        report.left[f"mlflow artifacts at {location} (not a local path: not searched)"] = 1
        logger.warning("MLflow artifacts at %s are not a local path: not searched for the erased person", location)
    _erase_tracking(settings, person, report)
    if store is not None:
        _erase_clickhouse(store, person, report)

    with scores_connection(settings) as conn:
        with conn.transaction():
            touched = _erase_postgres(conn, person, report)
            conn.execute(
                "INSERT INTO scores.erasure_log (erased_at, subject_hash, requested_by, accounts, anonymous_ids, "
                "account_hashes, removed, reason) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
                (dt.datetime.now(dt.timezone.utc), subject, requested_by, len(accounts), len(anonymous),
                 list(account_hashes(sorted(accounts), secret)),
                 json.dumps(report.removed, sort_keys=True), reason))
        if store is not None:
            sync_resolution(conn, store, lambda: secret)
    with connect_postgres(settings, autocommit=True) as conn:
        for table in sorted(set(touched)):
            conn.execute(f'VACUUM scores."{table}"')
    logger.info("erased: %s", ", ".join(f"{where} {count}" for where, count in sorted(report.removed.items())))
    return report
