"""Failure notifications: what the message says (never secrets), and the webhook post to a local receiver."""

from __future__ import annotations

import json
import socket

import pytest

from revopt.platform.notify import failure_message, post_json, redact, webhook_url
from revopt.platform.validation import DataValidationError

QUALITY = ("Dataset 'orders' failed validation for run date 2024-10-27: 1 of 14 expectations failed.\n"
           "  - expect_column_values_to_be_between(column='order_value', max_value=5000): 1 unexpected of 900 rows")


def test_credentials_in_urls_and_settings_are_masked():
    text = ("could not connect to postgresql://revopt:hunter2@db:5432/shop (password=hunter2 token: abc.def) "
            "https://user@hooks.example.com/x and s3cretvalue")
    masked = redact(text, secrets=["s3cretvalue", ""])
    assert "hunter2" not in masked and "abc.def" not in masked and "s3cretvalue" not in masked and "user@" not in masked
    assert "postgresql://***@db:5432/shop" in masked and "https://***@hooks.example.com/x" in masked


def test_a_data_quality_stop_names_the_dataset_column_and_expectation():
    try:
        try:
            raise DataValidationError(QUALITY)
        except DataValidationError as error:
            raise RuntimeError("validate failed") from error
    except RuntimeError as wrapped:
        error = wrapped
    message = failure_message(dag_id="revopt_nightly", run_id="manual__x", run_date="2024-10-27", task_id="validate",
                              try_number=1, error=error, log_url="http://127.0.0.1:8080/dags/revopt_nightly/runs/x")
    assert message["kind"] == "data_quality" and message["error_type"] == "RuntimeError"
    assert message["data_quality"][0].startswith("Dataset 'orders' failed validation")  # the cause's account
    direct = failure_message(dag_id="revopt_nightly", run_id="r", run_date="2024-10-27", task_id="validate",
                             try_number=1, error=DataValidationError(QUALITY), log_url=None)
    assert "expect_column_values_to_be_between(column='order_value', max_value=5000): 1 unexpected of 900 rows" in \
        direct["data_quality"]
    assert direct["text"].startswith("revopt: data-quality gate stopped revopt_nightly for run date 2024-10-27: "
                                     "task validate (DataValidationError: Dataset 'orders' failed")


def test_any_other_failure_keeps_its_first_lines_only_and_no_secret():
    error = ValueError("\n".join(f"line {i} postgresql://u:pw@h/db" for i in range(40)))
    message = failure_message(dag_id="revopt_training", run_id="r", run_date="2024-10-27", task_id="train_clv",
                              try_number=3, error=error, log_url=None, secrets=["pw"])
    assert message["kind"] == "task_failure" and "data_quality" not in message
    assert len(message["error"].splitlines()) == 12 and ":pw@" not in json.dumps(message)
    assert "task failed in revopt_training for run date 2024-10-27: task train_clv (ValueError: line 0" in message["text"]


@pytest.mark.parametrize("conn, url", [
    (("http", "127.0.0.1", 9000, "hook", {}), "http://127.0.0.1:9000/hook"),
    (("https", "hooks.example.com", None, "services/T/B", {}), "https://hooks.example.com/services/T/B"),
    (("http", "https://hooks.example.com/x", None, None, {}), "https://hooks.example.com/x"),
    (("generic", None, None, None, {"url": "https://h/y"}), "https://h/y"),
    (("generic", None, None, None, {}), None),
])
def test_the_webhook_url_comes_from_the_connection(conn, url):
    assert webhook_url(*conn) == url


def test_the_message_is_posted_as_json(webhook):
    url, received = webhook  # tests/conftest.py
    assert post_json(url, {"text": "hi"}) == 204
    assert received == [{"text": "hi"}]
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(OSError):
        post_json(f"http://127.0.0.1:{port}/hook", {"text": "nobody listens"}, timeout=2)
