"""Read-only queries for people (``revopt sql``): one statement, as the read-only role, bounded in time.

Each of these alone has been beaten before (``conn.read_only`` by ``COMMIT; DELETE ...`` sent as one
multi-statement string), so every layer holds on its own:

1. **the read-only role** (:func:`revopt.platform.schema.ensure_reader_role`): SELECT on ``scores`` and
   ``shop`` only, no superuser, so there is nothing to write with and no ``COPY ... TO PROGRAM``;
   a connection that turns out to be a superuser or able to write is refused before the query runs;
2. **exactly one statement**: the query is sent with the extended query protocol, whose Parse step
   refuses more than one command (the server's own parser decides, not a regex of ours);
3. **a read-only transaction** that is always rolled back, with ``statement_timeout``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import pandas as pd
import psycopg

from revopt.platform.config import Settings, redact_url

DEFAULT_TIMEOUT_SECONDS = 30.0


class QueryRefused(ValueError):
    """The query was not run (or was stopped): the message says why."""


def reader_url(settings: Settings) -> str:
    """The URL ``revopt sql`` connects with: ``REVOPT_READER_URL``, else revopt's PostgreSQL URL
    with the read-only role's name (and ``REVOPT_READER_PASSWORD``) in place of the admin's."""
    if settings.reader_url:
        return settings.reader_url
    from revopt.platform.stack import postgres_url

    parts = urlsplit(postgres_url(settings))
    host = parts.netloc.rpartition("@")[2]
    password = f":{quote(settings.reader_password, safe='')}" if settings.reader_password else ""
    return urlunsplit((parts.scheme, f"{quote(settings.reader_role, safe='')}{password}@{host}", parts.path,
                       parts.query, parts.fragment))


@contextmanager
def read_only_connection(settings: Settings, *,
                         timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Iterator[psycopg.Connection]:
    """A connection as the read-only role (refused if it could write), inside a read-only transaction that is
    always rolled back, each statement bounded by ``timeout_seconds``. ``ConnectionError`` when the role cannot
    connect."""
    url = reader_url(settings)
    try:
        conn = psycopg.connect(url, options=f"-c TimeZone=UTC -c statement_timeout={int(timeout_seconds * 1000)}")
    except psycopg.OperationalError as exc:
        raise ConnectionError(
            f"cannot connect as the read-only role to {redact_url(url)}: {exc}".rstrip()
            + "\n(run `revopt init-db` to create the role; on a server set REVOPT_READER_PASSWORD or REVOPT_READER_URL)"
        ) from None
    try:
        _refuse_writers(conn)
        conn.read_only = True
        with conn.transaction(force_rollback=True):
            yield conn
    finally:
        conn.close()


def run_read_only(settings: Settings, query: str, *, max_rows: int,
                  timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> tuple[pd.DataFrame, bool]:
    """Run one read-only statement and return (at most ``max_rows`` rows, whether there were more).

    Raises :class:`QueryRefused` for several statements, a role that could write, a timeout, or
    any error the server reports; ``ConnectionError`` when the read-only role cannot connect.
    """
    with read_only_connection(settings, timeout_seconds=timeout_seconds) as conn:
        cursor = psycopg.RawCursor(conn)
        with _refusals(timeout_seconds):
            # prepare=True: the extended protocol, whose Parse refuses a second statement.
            cursor.execute(query, [], prepare=True)
        columns = _columns(cursor)
        rows = cursor.fetchmany(max_rows + 1)
    return pd.DataFrame(rows[:max_rows], columns=columns), len(rows) > max_rows


def stream_read_only(settings: Settings, query: str, *, chunk_rows: int = 50_000,
                     timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Iterator[pd.DataFrame]:
    """Every row of one read-only statement, in frames of at most ``chunk_rows`` (the first frame may be empty:
    it carries the columns). Same connection, role and refusals as :func:`run_read_only`; the rows are streamed
    from the server in chunks (libpq's chunked mode, also the extended protocol), so an export of any size
    holds one chunk in memory."""
    with read_only_connection(settings, timeout_seconds=timeout_seconds) as conn:
        cursor = psycopg.RawCursor(conn)
        batch: list[tuple] = []
        columns: list[str] | None = None
        with _refusals(timeout_seconds):
            for row in cursor.stream(query, [], size=min(chunk_rows, 10_000)):
                if columns is None:
                    columns = _columns(cursor)
                batch.append(row)
                if len(batch) >= chunk_rows:
                    yield pd.DataFrame(batch, columns=columns)
                    batch = []
        if columns is None:
            columns = _columns(cursor)
        if batch or columns is not None:
            yield pd.DataFrame(batch, columns=columns)


def _columns(cursor: psycopg.Cursor) -> list[str]:
    if cursor.description is None:
        raise QueryRefused(f"'{cursor.statusmessage}' returns no rows; revopt sql only reads (nothing was changed)")
    return [column.name for column in cursor.description]


@contextmanager
def _refusals(timeout_seconds: float) -> Iterator[None]:
    """The server's errors as :class:`QueryRefused`, with the two a person meets most said plainly."""
    try:
        yield
    except psycopg.errors.SyntaxError as exc:
        if "multiple commands" in str(exc):
            raise QueryRefused(
                "exactly one statement is run at a time; this input has several (run each on its own)") from None
        raise QueryRefused(str(exc).strip()) from None
    except psycopg.errors.QueryCanceled:
        raise QueryRefused(f"the query ran longer than {timeout_seconds:g} s and was cancelled") from None
    except psycopg.Error as exc:
        raise QueryRefused(str(exc).strip()) from None


def _refuse_writers(conn: psycopg.Connection) -> None:
    """A role that is a superuser or may change any table in the database is not a read-only role."""
    user, superuser, writable = conn.execute(
        """
        SELECT current_user, r.rolsuper,
               (SELECT count(*) FROM information_schema.table_privileges AS p
                WHERE p.grantee = current_user AND p.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE'))
        FROM pg_roles AS r WHERE r.rolname = current_user
        """
    ).fetchone()
    conn.rollback()
    if superuser or writable:
        what = "a superuser" if superuser else f"allowed to change {writable} table(s)"
        raise QueryRefused(f"role {user!r} is {what}: revopt sql connects only as a read-only role "
                           "(REVOPT_READER_ROLE / REVOPT_READER_URL; `revopt init-db` creates one)")
