"""End-to-end tier: a real embedded PostgreSQL, chDB, MLflow (SQLite) and Airflow under a temp state folder."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from revopt.platform.config import Settings, load_settings
from revopt.platform.events import open_event_store
from revopt.platform.stack import close_event_stores, connect_postgres
from revopt.sample_data.identity import IdentityDesign
from revopt.sample_data.offers import OfferDesign
from revopt.sample_data.seed import seed_synthetic

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:
    home = tmp_path_factory.mktemp("revopt-home")
    previous = {key: os.environ.get(key) for key in ("REVOPT_HOME", "MLFLOW_TRACKING_URI", "AIRFLOW_HOME")}
    os.environ["REVOPT_HOME"] = str(home)
    for key in ("MLFLOW_TRACKING_URI", "AIRFLOW_HOME"):
        os.environ.pop(key, None)
    resolved = load_settings()
    from revopt.platform.schema import init_stores

    from revopt.platform.stack import close_event_stores

    init_stores(resolved)
    close_event_stores()  # Airflow's task processes open the chDB folder (one process per data path)
    _forbid_ddl_on_published_tables(resolved)
    yield resolved

    from revopt.platform.stack import close_event_stores, stop_stack

    close_event_stores()
    stop_stack(resolved)
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session", autouse=True)
def _warm_dag_runner():
    """Every ``revopt run`` of the end-to-end tests starts its DAG runner forked from a process that has imported
    the heavy libraries once (tests/e2e/warm_runner.py: ~13 s less per DAG run); ``REVOPT_TEST_COLD_RUNNER=1``
    starts fresh interpreters, as ``revopt run`` does."""
    if os.environ.get("REVOPT_TEST_COLD_RUNNER") == "1":
        yield
        return
    from warm_runner import WarmRunner

    from revopt import cli

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "_start_runner", WarmRunner(cli._start_runner).start)
        yield


# Every e2e test runs with these event triggers: any DDL on schema ``scores`` that does not come
# from a migration (application_name 'revopt init-db') fails the statement, so a publish, quality,
# drift or gate record that ran DDL (and so took an ACCESS EXCLUSIVE lock readers wait for) fails
# whichever test exercises it (tests/e2e/test_publish_concurrency.py shows the trigger can fail).
# One exception, the partitioned publish (migration 0012, revopt.platform.partitions): a statement that is
# exactly ATTACH of a run-date partition ``scores_partitions.<table>__p<yyyymmdd>``, or DETACH (CONCURRENTLY
# or FINALIZE) of one or of ``<table>__legacy`` (SHARE UPDATE EXCLUSIVE on the parent; a plain DETACH would
# take ACCESS EXCLUSIVE, and the publish and retention code never issue one). The partitions live in schema
# ``scores_partitions``, which this trigger does not watch.
_PARTITION_DDL = (r'^ALTER TABLE "scores"\."[a-z_]+" (ATTACH PARTITION "scores_partitions"\."[a-z_]+__p[0-9]{8}" '
                  r'FOR VALUES FROM \([^();]*\) TO \([^();]*\)|DETACH PARTITION "scores_partitions"\."[a-z_]+__'
                  r'(p[0-9]{8}|legacy)" (CONCURRENTLY|FINALIZE))$')
_NO_DDL_OUTSIDE_MIGRATIONS = """
CREATE OR REPLACE FUNCTION public.revopt_test_no_scores_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE
    command record;
BEGIN
    IF current_setting('application_name') = 'revopt init-db' THEN
        RETURN;
    END IF;
    IF TG_EVENT = 'ddl_command_end' AND current_query() ~ '%(partition_ddl)s' THEN
        RETURN;
    END IF;
    IF TG_EVENT = 'sql_drop' THEN
        FOR command IN SELECT * FROM pg_event_trigger_dropped_objects() WHERE schema_name = 'scores' LOOP
            RAISE EXCEPTION 'DDL outside a migration: % of % (application %)', TG_TAG, command.object_identity,
                current_setting('application_name');
        END LOOP;
    ELSE
        FOR command IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE schema_name = 'scores' LOOP
            RAISE EXCEPTION 'DDL outside a migration: % on % (application %)', command.command_tag,
                command.object_identity, current_setting('application_name');
        END LOOP;
    END IF;
END $$;
DROP EVENT TRIGGER IF EXISTS revopt_test_no_scores_ddl;
DROP EVENT TRIGGER IF EXISTS revopt_test_no_scores_drop;
CREATE EVENT TRIGGER revopt_test_no_scores_ddl ON ddl_command_end EXECUTE FUNCTION public.revopt_test_no_scores_ddl();
CREATE EVENT TRIGGER revopt_test_no_scores_drop ON sql_drop EXECUTE FUNCTION public.revopt_test_no_scores_ddl();
""".replace("%(partition_ddl)s", _PARTITION_DDL)


def _forbid_ddl_on_published_tables(settings: Settings) -> None:
    from revopt.platform.stack import connect_postgres

    with connect_postgres(settings) as conn:
        conn.execute(_NO_DDL_OUTSIDE_MIGRATIONS)


@pytest.fixture(scope="session")
def forget_models(settings: Settings):
    """A function deleting registered models from the session's MLflow registry, so a module's store
    starts without champions: an earlier module's champion, refitted on this store, can be as good as
    the first candidate, which the gate then rightly keeps challenger."""
    import contextlib

    import mlflow
    from mlflow import MlflowClient

    from revopt.platform.resources import configure_mlflow

    def forget(model_names) -> None:
        configure_mlflow(settings)
        client = MlflowClient()
        for name in model_names:
            with contextlib.suppress(mlflow.exceptions.MlflowException):
                client.delete_registered_model(name)

    return forget


@pytest.fixture(scope="module")
def open_events(tmp_path_factory):
    """A function that opens a temporary chDB holding the given events (a frame in the contract's shape)
    and returns its event store; every store it opened is closed when the module ends."""
    stores = []

    def open_with(events: pd.DataFrame):
        store = open_event_store(url=None, chdb_path=Path(tmp_path_factory.mktemp("chdb")), database="revopt")
        store.insert_arrow("events", pa.Table.from_pandas(events, preserve_index=False))
        stores.append(store)
        return store

    yield open_with
    for store in stores:
        store.close()


#: tests/e2e/test_nightly_dag.py's store: its first day, its length and who objects to profiling
SEEDED_START = dt.date(2024, 1, 1)
SEEDED_DAYS = 300
#: customers who object to profiling (shop.customers.do_not_profile): every 37th account
NOT_PROFILED = "customer_id % 37 = 0"


@pytest.fixture(scope="session")
def seeded(settings, forget_models):
    """The store tests/e2e/test_nightly_dag.py trains every family on and runs the nightly DAG for (its
    tests do that); session-wide, so tests/e2e/test_workbench_in_browser.py looks at the same runs
    instead of training again."""
    from ml.families import budget, churn, clv, pricing, propensity, recommend, send_time, uplift

    # with devices, anonymous sessions, duplicate accounts and contact details (revopt.sample_data.identity); seed 13:
    # on this small store a family's gate is not always significant (seed 12 with identities: churn, p = 0.36; 14: CLV)
    report = seed_synthetic(settings, n_customers=1500, days=SEEDED_DAYS, start=SEEDED_START, seed=13,
                            offers=OfferDesign(), identity=IdentityDesign())
    with connect_postgres(settings) as conn:
        conn.execute(f"UPDATE shop.customers SET do_not_profile = true WHERE {NOT_PROFILED}")
    close_event_stores()  # Airflow's task process opens the chDB folder next
    # this store's first training starts without champions
    forget_models([family.MODEL_NAME for family in (propensity, churn, clv, pricing, send_time, budget, recommend,
                                                    uplift)])
    return report


# --- the UIs in a real browser (tests/e2e/test_workbench_in_browser.py) ---------------------------------------

#: Debian's chromium: scripts/test installs it (playwright's own browser download needs hosts we do not reach)
CHROMIUM = Path("/usr/bin/chromium")
#: without the background-networking flags chromium keeps calling Google's services on a closed network
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: every page a browser test visits is saved here, one PNG per test and step
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
#: how long the MLflow UI may take to answer (its start imports MLflow's whole server: ~15 s on an idle machine)
UI_START_SECONDS = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def mlflow_ui_log(tmp_path_factory) -> Path:
    """What ``revopt ui mlflow`` printed (its experiment links among it) and its server's log."""
    return tmp_path_factory.mktemp("mlflow-ui") / "ui.log"


@pytest.fixture(scope="session")
def mlflow_ui(settings, mlflow_ui_log):
    """The MLflow UI on the session's state, served by the product's own command (``revopt ui mlflow``) on
    127.0.0.1 and a free port; its base URL. Started when first asked for, stopped when the session ends."""
    port = _free_port()
    log = mlflow_ui_log
    with log.open("wb") as out:
        # own session: the teardown's TERM reaches revopt, which stops the MLflow server's process group itself
        process = subprocess.Popen([str(Path(sys.executable).parent / "revopt"), "ui", "mlflow", "--host", "127.0.0.1",
                                    "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + UI_START_SECONDS
    while not _answers(f"{base}/health"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"`revopt ui mlflow` did not answer on {base} within {UI_START_SECONDS} s "
                        f"(exit code {process.poll()}):\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    yield base
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def chromium():
    """A headless chromium driven by playwright (a fresh profile: playwright makes a temporary one)."""
    if not CHROMIUM.exists():
        pytest.fail(f"no browser: Debian's chromium is not at {CHROMIUM}. `scripts/test` installs it when it runs as "
                    "root on a machine with apt-get (`apt-get install chromium`); install it and run again.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("no playwright: it is a test dependency (requirements-test.lock); run scripts/setup")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Visit:
    """A browser tab for one test that screenshots every page it shows: ``test-artifacts/screenshots/<test>-<n>-<step>.png``."""

    def __init__(self, page, test_name: str) -> None:
        self.page = page
        self._prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self._steps = 0
        self.screenshots: list[Path] = []

    def open(self, url: str):
        self.page.goto(url)
        return self.page

    def screenshot(self, step: str) -> Path:
        self._steps += 1
        path = SCREENSHOTS / f"{self._prefix}-{self._steps}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', step)}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.screenshots.append(path)
        return path


@pytest.fixture
def visit(chromium, request):
    """A :class:`Visit` in a new browser context; the page is screenshotted at each step the test names, and when
    the test ends if it named none, so a red run shows what the browser saw."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob(f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', request.node.name)}-*.png"):
        old.unlink()
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    tab = Visit(context.new_page(), request.node.name)
    yield tab
    try:
        if not tab.screenshots and tab.page.url != "about:blank":
            tab.screenshot("end")
    finally:
        context.close()
