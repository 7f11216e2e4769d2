"""chDB and a ClickHouse server receive the same SQL text and parameters from revopt.

No ClickHouse server can run on the build machines (no Docker engine; Debian's clickhouse-server
is 18.16, older than the DateTime64 and ASOF JOIN the queries use), so this test records what
each event store hands to its transport: chDB's ``Session.query`` and clickhouse-connect's client
are replaced by recorders, everything above them (``open_event_store``, the extract code, the
source-contract check) is revopt's own. The end-to-end tier runs the same SQL on chDB for real.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest

from revopt.platform import extract
from revopt.platform.events import ChdbEventStore, EventStore, ServerEventStore, open_event_store
from revopt.platform.validation import DataValidationError

DATABASE = "revopt"
RUN_TS = pd.Timestamp("2025-01-01", tz="UTC")
SINCE_TS = RUN_TS - pd.Timedelta(days=365)
WINDOW = {"since": SINCE_TS.strftime("%Y-%m-%d %H:%M:%S"), "run_ts": RUN_TS.strftime("%Y-%m-%d %H:%M:%S")}


class _RecordingSession:
    """Stands in for ``chdb.session.Session``: records each query, returns no rows."""

    def __init__(self, path: str) -> None:
        self.calls: list[tuple[str, dict]] = []
        _recorders["chdb"] = self

    def query(self, sql: str, fmt: str = "CSV", params: dict | None = None) -> Any:
        self.calls.append((sql, dict(params or {})))
        return pd.DataFrame() if fmt == "DataFrame" else ""

    def close(self) -> None:
        pass


class _RecordingClient:
    """Stands in for the client of ``clickhouse_connect.get_client``: records each query, returns no rows."""

    def __init__(self, **kwargs: Any) -> None:
        self.calls: list[tuple[str, dict]] = []
        _recorders["server"] = self

    def command(self, sql: str, parameters: dict | None = None) -> None:
        self.calls.append((sql, dict(parameters or {})))

    def query_df(self, sql: str, parameters: dict | None = None) -> pd.DataFrame:
        self.calls.append((sql, dict(parameters or {})))
        return pd.DataFrame()

    def close(self) -> None:
        pass


_recorders: dict[str, Any] = {}


class _NoShopTables:
    """A PostgreSQL connection whose information_schema lists no shop tables."""

    def execute(self, *args: Any) -> _NoShopTables:
        return self

    def fetchall(self) -> list:
        return []


def _clickhouse_queries() -> dict[str, str]:
    """Every ClickHouse query of revopt.platform.extract (the module-level SQL that reads ``{events}``: the events
    table, or its identity-resolved view, revopt.platform.identity.events_source)."""
    return {name: value for name, value in vars(extract).items()
            if name.endswith("_SQL") and isinstance(value, str) and "{events}" in value}


def _run_every_event_query(store: EventStore) -> None:
    with pytest.raises(DataValidationError):
        extract.check_source_contract(_NoShopTables(), store, RUN_TS.date())
    for sql in _clickhouse_queries().values():
        store.query_df(sql.format(events=f"{store.database}.events"), WINDOW)
    extract.engagement_by_hour(store, SINCE_TS, RUN_TS)


@pytest.fixture()
def recorded(monkeypatch, tmp_path) -> dict[str, list[tuple[str, dict]]]:
    import chdb.session
    import clickhouse_connect

    monkeypatch.setattr(chdb.session, "Session", _RecordingSession)
    monkeypatch.setattr(clickhouse_connect, "get_client", _RecordingClient)
    _recorders.clear()
    stores = {
        "chdb": open_event_store(url=None, chdb_path=tmp_path / "chdb", database=DATABASE),
        "server": open_event_store(url="http://revopt:pw@clickhouse:8123", chdb_path=tmp_path / "unused", database=DATABASE),
    }
    assert isinstance(stores["chdb"], ChdbEventStore) and isinstance(stores["server"], ServerEventStore)
    for store in stores.values():
        _run_every_event_query(store)
    return {kind: _recorders[kind].calls for kind in stores}


def test_chdb_and_server_receive_byte_identical_sql_and_parameters(recorded):
    assert recorded["chdb"] == recorded["server"]


def test_every_extract_query_was_sent(recorded):
    sent = [sql for sql, _ in recorded["server"]]
    assert len(_clickhouse_queries()) >= 2  # daily events and engagement by hour, at least
    for name, sql in _clickhouse_queries().items():
        assert sql.format(events=f"{DATABASE}.events") in sent, name
    assert sent[0] == f"CREATE DATABASE IF NOT EXISTS {DATABASE}" and "CREATE TABLE IF NOT EXISTS" in sent[1]
    assert any("system.columns" in sql for sql in sent)
    # Values travel as bound parameters ({name:Type}), never inside the SQL text.
    for sql, params in recorded["server"]:
        for value in params.values():
            assert str(value) not in sql


def test_parameters_use_clickhouse_binding_only(recorded):
    for sql, params in recorded["chdb"]:
        for name in params:
            assert f"{{{name}:" in sql, f"parameter {name} is not bound with {{{name}:Type}} in {sql[:60]!r}"


def test_the_window_is_half_open_at_the_run_date():
    for name, sql in _clickhouse_queries().items():
        assert "event_time < {{run_ts:DateTime64(3, 'UTC')}}" in sql, name
        assert "now()" not in sql.lower() and "today()" not in sql.lower(), name
    assert dt.date.fromisoformat(WINDOW["run_ts"][:10]) == RUN_TS.date()
