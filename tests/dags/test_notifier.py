"""The notifier every task fails through (dags/_notify.py), called as Airflow calls an ``on_failure_callback``,
with the connection from the environment as a deployment sets it and a local receiver as the webhook."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading

import pytest

QUALITY = ("Dataset 'orders' failed validation for run date 2024-10-27: 1 of 14 expectations failed.\n"
           "  - expect_column_values_to_be_between(column='order_value', max_value=5000): 1 unexpected of 900 rows")


@pytest.fixture
def receiver(webhook):
    return webhook  # tests/conftest.py


class _TaskInstance:  # what a failure callback reads of airflow.sdk's RuntimeTaskInstance
    dag_id, task_id, try_number = "revopt_nightly", "validate", 3
    run_id = "scheduled__2024-10-27T00:00:00+00:00"
    log_url = "http://127.0.0.1:8080/dags/revopt_nightly/runs/scheduled__2024-10-27T00%3A00%3A00%2B00%3A00/tasks/validate"


def _context(error: BaseException) -> dict:
    return {"ti": _TaskInstance(), "logical_date": dt.datetime(2024, 10, 27, tzinfo=dt.timezone.utc),
            "run_id": _TaskInstance.run_id, "exception": error}


def test_a_failed_task_posts_its_dag_run_date_task_error_and_log_url(receiver, monkeypatch):
    from _notify import RevoptNotifier

    from revopt.platform.validation import DataValidationError

    url, received = receiver
    monkeypatch.setenv("AIRFLOW_CONN_REVOPT_NOTIFY", url.replace("http://", "http://ops:hookpass7@"))
    error = DataValidationError(QUALITY + "\n  while reading postgresql://revopt:hunter2@db/shop with hookpass7")
    RevoptNotifier()(_context(error))  # as Airflow calls a callback
    [message] = received
    assert message["dag_id"] == "revopt_nightly" and message["run_date"] == "2024-10-27"
    assert message["task_id"] == "validate" and message["try_number"] == 3
    assert message["kind"] == "data_quality" and message["log_url"] == _TaskInstance.log_url
    assert any("column='order_value'" in line for line in message["data_quality"])
    assert "hunter2" not in json.dumps(message) and "hookpass7" not in json.dumps(message)  # nor the connection's


def test_without_a_connection_nothing_is_sent_and_one_line_says_so(receiver, monkeypatch, caplog):
    from _notify import RevoptNotifier

    _, received = receiver
    monkeypatch.delenv("AIRFLOW_CONN_REVOPT_NOTIFY", raising=False)
    with caplog.at_level(logging.INFO):
        RevoptNotifier()(_context(ValueError("boom")))
    assert received == []
    assert [r.message for r in caplog.records if "not notified" in r.message] == [
        "no revopt_notify or revopt_notify_smtp connection: failure not notified"]


def test_an_unreachable_webhook_is_logged_and_never_raises(monkeypatch, caplog):
    from _notify import RevoptNotifier

    monkeypatch.setenv("AIRFLOW_CONN_REVOPT_NOTIFY", "http://127.0.0.1:9/hook")  # discard port: nobody listens
    with caplog.at_level(logging.WARNING):
        RevoptNotifier()(_context(ValueError("boom")))
    assert any("could not notify the revopt_notify webhook" in r.message for r in caplog.records)


def test_with_an_smtp_connection_the_message_is_emailed(monkeypatch):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asyncore
        import smtpd  # Python 3.11's own SMTP server: a local receiver for the test

    from _notify import RevoptNotifier

    mails = []

    class Receiver(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            mails.append((mailfrom, rcpttos, data.decode() if isinstance(data, bytes) else data))

    server = Receiver(("127.0.0.1", 0), None)
    port = server.socket.getsockname()[1]
    loop = threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.1}, daemon=True)
    loop.start()
    monkeypatch.delenv("AIRFLOW_CONN_REVOPT_NOTIFY", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_REVOPT_NOTIFY_SMTP", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port, "login": "", "password": "",
        "extra": {"disable_tls": True, "disable_ssl": True, "to": ["ops@example.com"],
                  "from_email": "revopt@example.com"}}))
    try:
        RevoptNotifier()(_context(ValueError("boom")))
    finally:
        server.close()
    [(sender, recipients, data)] = mails
    assert sender == "revopt@example.com" and recipients == ["ops@example.com"]
    assert "revopt: task failed in revopt_nightly for run date 2024-10-27: task validate" in data
