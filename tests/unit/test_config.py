from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from revopt.platform.config import load_settings, redact_url
from revopt.platform.events import validate_identifier


def test_embedded_defaults_live_under_one_state_folder(tmp_path):
    settings = load_settings({"REVOPT_HOME": str(tmp_path)})
    assert settings.embedded_postgres and settings.embedded_clickhouse
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    for path in (settings.pgdata, settings.chdb_path, settings.airflow_home, settings.runs_dir):
        assert Path(path).is_relative_to(tmp_path)
    assert settings.run_dir(dt.date(2025, 1, 2)) == tmp_path / "runs" / "2025-01-02"


def test_servers_are_chosen_from_the_environment(tmp_path):
    settings = load_settings(
        {
            "REVOPT_HOME": str(tmp_path),
            "AIRFLOW_CONN_REVOPT_POSTGRES": "postgres://shop:s3cret@db:5432/shop",
            "REVOPT_CLICKHOUSE_URL": "http://default:pw@clickhouse:8123",
            "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        }
    )
    assert settings.postgres_url == "postgresql://shop:s3cret@db:5432/shop"
    assert not settings.embedded_postgres and not settings.embedded_clickhouse
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"


def test_explicit_postgres_url_wins_over_the_airflow_connection(tmp_path):
    settings = load_settings(
        {"REVOPT_POSTGRES_URL": "postgresql+psycopg://a@x/db", "AIRFLOW_CONN_REVOPT_POSTGRES": "postgres://b@y/db"}
    )
    assert settings.postgres_url == "postgresql://a@x/db"


def test_airflow_connections_in_json_form_are_understood():
    settings = load_settings(
        {
            "AIRFLOW_CONN_REVOPT_POSTGRES": '{"conn_type": "postgres", "host": "db", "port": 5432, '
            '"login": "shop", "password": "p@ss/word", "schema": "store"}',
            "AIRFLOW_CONN_REVOPT_CLICKHOUSE": '{"conn_type": "http", "host": "ch", "port": 8123, "login": "default"}',
        }
    )
    assert settings.postgres_url == "postgresql://shop:p%40ss%2Fword@db:5432/store"
    assert settings.clickhouse_url == "http://default@ch:8123/"


def test_non_postgres_url_is_refused():
    with pytest.raises(ValueError, match="postgresql://"):
        load_settings({"REVOPT_POSTGRES_URL": "mysql://a@b/c"})


def test_passwords_are_redacted():
    assert redact_url("postgresql://shop:s3cret@db:5432/shop") == "postgresql://shop:***@db:5432/shop"
    assert "s3cret" not in redact_url("http://default:s3cret@clickhouse:8123")
    assert redact_url("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"


@pytest.mark.parametrize("name", ["events; DROP TABLE x", "a.b", "1abc", "", "näme"])
def test_identifiers_from_configuration_are_validated(name):
    with pytest.raises(ValueError):
        validate_identifier(name)


def test_settings_never_show_a_password_in_repr_or_connection_errors(tmp_path):
    import socket

    import pytest

    from revopt.platform.stack import connect_postgres

    with socket.socket() as probe:  # a local port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = load_settings({
        "REVOPT_HOME": str(tmp_path),
        "REVOPT_POSTGRES_URL": f"postgresql://shop:t0p-s3cret@127.0.0.1:{port}/shop?connect_timeout=2",
        "REVOPT_CLICKHOUSE_URL": "http://default:ch-s3cret@clickhouse:8123",
        "MLFLOW_TRACKING_URI": "postgresql://mlflow:ml-s3cret@db/mlflow",
    })
    shown = repr(settings)
    assert "t0p-s3cret" not in shown and "ch-s3cret" not in shown and "ml-s3cret" not in shown
    assert "shop:***@127.0.0.1" in shown
    with pytest.raises(ConnectionError) as failure:
        with connect_postgres(settings):
            pass
    assert "t0p-s3cret" not in str(failure.value) and "shop:***@" in str(failure.value)
    assert failure.value.__cause__ is None and failure.value.__suppress_context__  # psycopg's own error is not chained


def test_json_connections_keep_their_extra_and_tls():
    settings = load_settings({
        "AIRFLOW_CONN_REVOPT_POSTGRES": '{"conn_type": "postgres", "host": "db", "login": "shop", "password": "pw", '
                                        '"schema": "store", "extra": {"sslmode": "require", "connect_timeout": 5}}',
        "AIRFLOW_CONN_REVOPT_CLICKHOUSE": '{"conn_type": "clickhouse", "host": "ch", "port": 8443, "login": "default", '
                                          '"extra": "{\\"secure\\": true}"}',
    })
    assert settings.postgres_url == "postgresql://shop:pw@db/store?sslmode=require&connect_timeout=5"
    assert settings.clickhouse_url == "https://default@ch:8443/?secure=true"
    for tls in ('{"conn_type": "https", "host": "ch"}', '{"conn_type": "http", "host": "ch", "extra": {"protocol": "https"}}'):
        assert load_settings({"AIRFLOW_CONN_REVOPT_CLICKHOUSE": tls}).clickhouse_url.startswith("https://ch")
    plain = load_settings({"AIRFLOW_CONN_REVOPT_CLICKHOUSE": '{"conn_type": "http", "host": "ch", "extra": {"secure": false}}'})
    assert plain.clickhouse_url.startswith("http://ch")


@pytest.mark.parametrize("url, secret", [
    ("postgresql://shop@db/shop?sslmode=require&password=s3cret", "s3cret"),
    ("http://ch:8123/?user=default&password=s3cret", "s3cret"),
    ("postgresql://shop:p1@db/shop?sslpassword=s3cret", "s3cret"),
    ("https://mlflow.example/?access_token=s3cret", "s3cret"),
])
def test_secrets_in_query_strings_are_redacted(url, secret):
    shown = redact_url(url)
    assert secret not in shown and "***" in shown
    assert "sslmode=require" in redact_url("postgresql://shop@db/shop?sslmode=require&password=x")


def test_the_reader_role_settings(tmp_path):
    settings = load_settings({"REVOPT_HOME": str(tmp_path), "REVOPT_READER_PASSWORD": "r3ader",
                              "REVOPT_READER_URL": "postgres://ro:r3ader@db/shop"})
    assert settings.reader_role == "revopt_reader" and settings.reader_url == "postgresql://ro:r3ader@db/shop"
    assert "r3ader" not in repr(settings)
    with pytest.raises(ValueError, match="REVOPT_READER_ROLE"):
        load_settings({"REVOPT_READER_ROLE": 'x"; DROP ROLE postgres; --'})


def test_the_airflow_ui_listens_on_loopback_unless_asked(tmp_path):
    from revopt.airflow_env import standalone_environ

    settings = load_settings({"REVOPT_HOME": str(tmp_path)})
    env = standalone_environ(settings)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1" and env["AIRFLOW__API__PORT"] == "8080"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    exposed = standalone_environ(settings, "0.0.0.0", 9090)
    assert exposed["AIRFLOW__API__HOST"] == "0.0.0.0"
    assert exposed["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:9090/execution/"


def test_the_airflow_ui_gives_revopts_tasks_a_login_to_set_run_notes_with_the_uis_own_password(tmp_path, monkeypatch):
    import json
    import stat

    from revopt.airflow_env import standalone_environ

    settings = load_settings({"REVOPT_HOME": str(tmp_path)})
    connection = json.loads(standalone_environ(settings)["AIRFLOW_CONN_REVOPT_AIRFLOW_API"])
    passwords = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    # the password Airflow's simple auth manager reads for admin, kept private; the same on the next start
    assert json.loads(passwords.read_text()) == {"admin": connection["password"]}
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    assert connection["host"] == "http://127.0.0.1:8080" and connection["login"] == "admin"
    assert json.loads(standalone_environ(settings)["AIRFLOW_CONN_REVOPT_AIRFLOW_API"]) == connection
    # a connection the person configured wins
    monkeypatch.setenv("AIRFLOW_CONN_REVOPT_AIRFLOW_API", "http://ops:pw@airflow:8080")
    assert standalone_environ(settings)["AIRFLOW_CONN_REVOPT_AIRFLOW_API"] == "http://ops:pw@airflow:8080"
