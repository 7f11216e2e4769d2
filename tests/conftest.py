"""Fixtures every tier shares (the unit tier imports no Airflow)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

import ml  # noqa: F401  (its OpenMP wait policy before a test module imports a model library: ml/__init__.py)

#: a module that looks at what another module left on the session's state runs on that module's worker
SHARES_STATE_WITH = {"tests/e2e/test_workbench_in_browser.py": "tests/e2e/test_nightly_dag.py"}


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to under pytest-xdist: its module, or the module whose state it reads."""
    module = nodeid.split("::", 1)[0]
    return SHARES_STATE_WITH.get(module, module)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook
def pytest_xdist_make_scheduler(config, log):
    """scripts/test runs the suite on every core (``-n auto``). A module is one unit of work: its tests run on one
    worker, in order, and its module fixtures (a seeded store, a trained model) are built once. Each worker has
    its own session (its own embedded stack under its own temp folder); the browser tests join test_nightly_dag's
    worker, whose session holds the runs they look at. (pytest-xdist's own ``--dist loadgroup`` marks have no
    effect under pytest 9.2, which no longer reads the node id it rewrites.)"""
    from xdist.scheduler import LoadFileScheduling

    class ModuleScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ModuleScheduling(config, log)


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A local HTTP receiver standing in for a notification webhook: its URL and the JSON bodies it received
    (it answers 204). Stopped (its port closed) after the test."""
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()
        server.server_close()
