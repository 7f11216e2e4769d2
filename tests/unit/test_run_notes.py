"""The DAG run note: composed from the tasks' results and states, at most Airflow's 1000 characters, and set
through Airflow's REST API (a local receiver stands in for the API server)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from revopt.platform.run_notes import NOTE_LIMIT, compose_run_note, set_note_via_api

NIGHTLY_RESULTS = {
    "validate": {"customers": "/run/customers.parquet"},
    "score": {"path": "/run/scores.parquet", "rows": 1480, "versions": {"revopt_purchase_propensity": "3",
                                                                           "revopt_churn": "2"}},
    "recommend_prices": {"path": "/run/p.parquet", "rows": 120, "model_name": "revopt_price_elasticity",
                         "model_version": "4"},
    "recommend_send_times": {"path": "/run/s.parquet", "rows": 80, "model_version": "2"},  # no name: the task's
    "publish": {"scores.customer_scores": 1480},
    "publish_prices": {"scores.price_recommendations": 120},
    "publish_attribution": {"scores.attribution": 90, "scores.order_attribution": 2400},
    "record_alias_moves": 1,
    "nightly_report": {"path": "/state/runs/2024-10-27/report.html", "mlflow_run_id": "abc123", "artifact_uri": "x"},
}


def test_a_nightly_note_lists_rows_per_table_versions_gates_and_the_report():
    states = {task: "success" for task in NIGHTLY_RESULTS} | {"allocate_budget": "skipped", "publish_budget": "skipped"}
    note = compose_run_note("revopt_nightly", "2024-10-27", NIGHTLY_RESULTS, states)
    assert note.startswith("**revopt_nightly 2024-10-27**: every task succeeded")
    assert "- Data quality: passed" in note
    assert "- Published: customer_scores 1,480, attribution 90, order_attribution 2,400, price_recommendations 120" in note
    assert "revopt_purchase_propensity v3" in note and "revopt_churn v2" in note and "revopt_price_elasticity v4" in note
    assert "recommend_send_times v2" in note
    assert "- Skipped: allocate_budget, publish_budget" in note
    assert "Manual @champion moves recorded: 1" in note
    assert "- Report: /state/runs/2024-10-27/report.html (MLflow run abc123)" in note


def test_a_data_quality_stop_says_so_and_that_nothing_was_published():
    states = {"extract": "success", "validate": "failed", "score": "upstream_failed", "publish": "upstream_failed",
              "nightly_report": "failed"}
    note = compose_run_note("revopt_nightly", "2024-10-27", {"extract": {"orders": "/x"}}, states)
    assert "1 task(s) failed (nightly_report, validate)" not in note  # two failed
    assert "2 task(s) failed (nightly_report, validate)" in note
    assert "- Data quality: FAILED (validate failed)" in note and "- Published: nothing" in note
    assert "- Report: not built (failed)" in note

    # the gate per part (dags/_gate.py): the failed part's task or share is named, the gate after it upstream failed
    shares = {"extract_tables": "success", "extract_events": "success", "validate_tables": "success",
              "validate_events_0": "success", "validate_events_1": "failed", "validate": "upstream_failed",
              "score": "upstream_failed"}
    note = compose_run_note("revopt_nightly", "2024-10-27", {}, shares)
    assert "- Data quality: FAILED (validate_events_1 failed)" in note
    assert "1 task(s) failed (validate_events_1)" in note
    tables = {**shares, "validate_tables": "failed", "validate_events_1": "success"}
    note = compose_run_note("revopt_nightly", "2024-10-27", {}, tables)
    assert "- Data quality: FAILED (validate_tables failed)" in note and "1 task(s) failed (validate_tables)" in note


def test_a_training_note_gives_each_familys_version_and_gate_decision():
    results = {"train_propensity": {"run_id": "r1", "model_name": "revopt_purchase_propensity", "model_version": "5",
                                    "alias": "champion"},
               "train_churn": {"run_id": "r2", "model_name": "revopt_churn", "model_version": "4",
                               "alias": "challenger"},
               "publish_identity_map": {"scores.identity_map": 1700}, "validate": {"orders": "/x"}}
    states = {"validate": "success", "train_propensity": "success", "train_churn": "success", "train_clv": "failed",
              "train_budget": "skipped", "publish_identity_map": "success"}
    note = compose_run_note("revopt_training", "2024-10-27", results, states)
    assert "- Promotion gate: train_budget skipped" not in note
    assert ("- Promotion gate: budget skipped; revopt_churn v4 kept as @challenger; clv failed; "
            "revopt_purchase_propensity v5 promoted to @champion") in note
    assert "Scored with" not in note  # a trained version is no scoring
    assert "identity_map 1,700" in note and "1 task(s) failed (train_clv)" in note


def test_the_note_fits_airflows_limit():
    results = {f"publish_{i}": {f"scores.table_with_a_long_name_{i}": 10 ** 9} for i in range(60)}
    note = compose_run_note("revopt_nightly", "2024-10-27", results, {"validate": "success"})
    assert len(note) <= NOTE_LIMIT
    assert note.splitlines()[0].startswith("**revopt_nightly") and "- Data quality: passed" in note


class _FakeAirflowApi(BaseHTTPRequestHandler):
    received: list = []

    def _answer(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/auth/token" and body == {"username": "revopt", "password": "s3cret"}:
            self._answer(201, {"access_token": "tok"})
        else:
            self._answer(401, {"detail": "bad credentials"})

    def do_PATCH(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, self.headers["Authorization"], body))
        self._answer(200, {"note": body["note"]})

    def log_message(self, *args):
        pass


@pytest.fixture
def airflow_api():
    server = HTTPServer(("127.0.0.1", 0), _FakeAirflowApi)
    _FakeAirflowApi.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", _FakeAirflowApi.received
    server.shutdown()
    server.server_close()


def test_the_note_is_set_through_the_rest_api_with_a_token(airflow_api):
    url, received = airflow_api
    set_note_via_api(url + "/", "revopt", "s3cret", "revopt_nightly", "scheduled__2024-10-27T00:00:00+00:00", "hi")
    assert received == [("/api/v2/dags/revopt_nightly/dagRuns/scheduled__2024-10-27T00%3A00%3A00%2B00%3A00"
                         "?update_mask=note", "Bearer tok", {"note": "hi"})]
    with pytest.raises(OSError):  # wrong password: the caller logs it, the note is not set
        set_note_via_api(url, "revopt", "wrong", "revopt_nightly", "r", "hi")
    assert len(received) == 1
