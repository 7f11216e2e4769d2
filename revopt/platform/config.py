"""Settings: where state lives and which implementation serves each store.

This is the one place that reads the environment. Everything defaults to the embedded stack
under one state folder (``REVOPT_HOME``, default ``./.revopt``); each store can instead point at
a server:

==========================  ==============================================  =======================
what                        environment variable                            embedded default
==========================  ==============================================  =======================
state folder                ``REVOPT_HOME``                                 ``./.revopt``
PostgreSQL (shop + scores)  ``REVOPT_POSTGRES_URL`` or the Airflow           pgdata under ``pg/``
                            connection ``AIRFLOW_CONN_REVOPT_POSTGRES``
ClickHouse (events)         ``REVOPT_CLICKHOUSE_URL`` or                     chDB under ``chdb/``
                            ``AIRFLOW_CONN_REVOPT_CLICKHOUSE``
ClickHouse database         ``REVOPT_CLICKHOUSE_DATABASE``                  ``revopt``
clickstream tracked?        ``REVOPT_CLICKSTREAM`` (``on`` / ``off``)         ``on``
read-only role              ``REVOPT_READER_ROLE``, its password in         ``revopt_reader``, no
                            ``REVOPT_READER_PASSWORD``                      password
read-only URL (optional)    ``REVOPT_READER_URL``                           the PostgreSQL URL as that role
pseudonymisation key        ``REVOPT_ID_SECRET``                            a random key in
                                                                            ``secrets/id_secret``
                                                                            (made by ``init-db``)
MLflow                      ``MLFLOW_TRACKING_URI``                         sqlite under ``mlflow/``
Airflow                     ``AIRFLOW_HOME`` (+ the usual ``AIRFLOW__*``)   SQLite under ``airflow/``
==========================  ==============================================  =======================

A store without clickstream (an order history only, such as UCI Online Retail) sets
``REVOPT_CLICKSTREAM=off``: ClickHouse is then never queried, the event datasets are empty and
not validated, and every family that can runs from orders (README, "Stores without clickstream").
With the default ``on`` an empty events table fails validation, as a broken events view should.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "dags"


@dataclass(frozen=True)
class Settings:
    """Resolved locations of every store. Build it with :func:`load_settings`."""

    home: Path
    postgres_url: str | None  # None: the embedded server under ``home / "pg"``
    clickhouse_url: str | None  # None: chDB under ``home / "chdb"``
    clickhouse_database: str
    mlflow_tracking_uri: str
    airflow_home: Path
    clickstream: bool = True  # False: the store has no ClickHouse events; event features are zero
    reader_role: str = "revopt_reader"  # the read-only role `revopt init-db` creates for downstream apps and `revopt sql`
    reader_password: str | None = field(default=None, repr=False)
    reader_url: str | None = None  # None: the PostgreSQL URL with the reader role's name and password
    id_secret: str | None = field(default=None, repr=False)  # None: the embedded key file (revopt.platform.privacy)

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks: never show a password.
        urls = {"postgres_url": self.postgres_url, "clickhouse_url": self.clickhouse_url,
                "mlflow_tracking_uri": self.mlflow_tracking_uri, "reader_url": self.reader_url}
        shown = {name: redact_url(url) if url else url for name, url in urls.items()}
        return (f"Settings(home={str(self.home)!r}, postgres_url={shown['postgres_url']!r}, "
                f"clickhouse_url={shown['clickhouse_url']!r}, clickhouse_database={self.clickhouse_database!r}, "
                f"mlflow_tracking_uri={shown['mlflow_tracking_uri']!r}, airflow_home={str(self.airflow_home)!r}, "
                f"clickstream={self.clickstream!r}, reader_role={self.reader_role!r}, "
                f"reader_url={shown['reader_url']!r})")

    @property
    def pgdata(self) -> Path:
        return self.home / "pg" / "data"

    @property
    def chdb_path(self) -> Path:
        return self.home / "chdb"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def runs_dir(self) -> Path:
        """Intermediate Parquet files, one folder per run date."""
        return self.home / "runs"

    def run_dir(self, run_date: dt.date) -> Path:
        """Folder of one run's intermediate files; everything in it is keyed by the run date."""
        return self.runs_dir / run_date.isoformat()

    @property
    def embedded_postgres(self) -> bool:
        return self.postgres_url is None

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_url is None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the environment (``os.environ`` unless given)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("REVOPT_HOME", ".revopt")).expanduser().resolve()
    postgres_url = env.get("REVOPT_POSTGRES_URL") or _connection_url(env.get("AIRFLOW_CONN_REVOPT_POSTGRES"), "postgresql")
    clickhouse_url = env.get("REVOPT_CLICKHOUSE_URL") or _connection_url(env.get("AIRFLOW_CONN_REVOPT_CLICKHOUSE"), "http")
    tracking_uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    return Settings(
        home=home,
        postgres_url=_normalise_postgres_url(postgres_url) if postgres_url else None,
        clickhouse_url=clickhouse_url or None,
        clickhouse_database=env.get("REVOPT_CLICKHOUSE_DATABASE", "revopt"),
        mlflow_tracking_uri=tracking_uri,
        airflow_home=Path(env.get("AIRFLOW_HOME", str(home / "airflow"))).expanduser().resolve(),
        clickstream=_switch(env, "REVOPT_CLICKSTREAM", default=True),
        reader_role=validate_role(env.get("REVOPT_READER_ROLE") or "revopt_reader"),
        reader_password=env.get("REVOPT_READER_PASSWORD") or None,
        reader_url=_normalise_postgres_url(env["REVOPT_READER_URL"]) if env.get("REVOPT_READER_URL") else None,
        id_secret=env.get("REVOPT_ID_SECRET") or None,
    )


def validate_role(name: str) -> str:
    """A PostgreSQL role name revopt may create: lower-case letters, digits and underscores."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"REVOPT_READER_ROLE must be a plain lower-case role name (letters, digits, _), got {name!r}")
    return name


_SWITCH_VALUES = {"on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False, "no": False}


def _switch(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value not in _SWITCH_VALUES:
        raise ValueError(f"{name} must be on or off, got {env[name]!r}")
    return _SWITCH_VALUES[value]


def _connection_url(value: str | None, scheme: str) -> str | None:
    """An Airflow connection from the environment, in its URI or its JSON form, as a URL.

    The JSON form's ``extra`` becomes the query string (``sslmode=require`` for PostgreSQL), and a
    ClickHouse connection whose type or extra asks for TLS (``conn_type`` https, ``secure`` true,
    ``protocol`` https) gets ``https``; ``scheme`` is the default otherwise.
    """
    if not value or not value.lstrip().startswith("{"):
        return value or None
    conn = json.loads(value)
    extra = conn.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra) if extra.strip() else {}
    if scheme == "http" and (
        str(conn.get("conn_type", "")).lower() == "https" or str(extra.get("protocol", "")).lower() == "https"
        or _truthy(extra.get("secure"))
    ):
        scheme = "https"
    extra = {key: value for key, value in extra.items() if not (scheme.startswith("http") and key == "protocol")}
    login = quote(str(conn.get("login") or ""), safe="")
    password = conn.get("password")
    auth = f"{login}:{quote(str(password), safe='')}@" if password else (f"{login}@" if login else "")
    port = f":{conn['port']}" if conn.get("port") else ""
    database = quote(str(conn.get("schema") or conn.get("database") or ""), safe="")
    query = urlencode({key: _query_value(value) for key, value in extra.items()})
    return f"{scheme}://{auth}{conn.get('host') or ''}{port}/{database}" + (f"?{query}" if query else "")


def _truthy(value: object) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true", "yes", "on")


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def _normalise_postgres_url(url: str) -> str:
    """Accept Airflow-style ``postgres://`` and SQLAlchemy-style ``postgresql+psycopg://`` URLs."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "postgres":
        scheme = "postgresql"
    if scheme != "postgresql":
        raise ValueError(f"REVOPT_POSTGRES_URL must be a postgresql:// URL, got scheme {parts.scheme!r}")
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


#: Query-string keys whose values are secrets (libpq's ``password``, ClickHouse's ``password``, tokens).
_SECRET_QUERY_KEYS = re.compile(r"pass|secret|token|key|credential|auth", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any password replaced, in its user part and in its query string (``?password=``,
    ``?sslpassword=``, ``?access_token=``, ...), safe for logs and error messages."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    secret_query = any(_SECRET_QUERY_KEYS.search(key) for key, _ in pairs)
    if not parts.password and not secret_query:
        return url  # unchanged, byte for byte (urlunsplit would turn sqlite:/// into sqlite:/)
    netloc = parts.netloc
    if parts.password:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = parts.query
    if secret_query:
        query = urlencode([(key, "***" if _SECRET_QUERY_KEYS.search(key) else value) for key, value in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
