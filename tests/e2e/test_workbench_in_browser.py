"""The MLflow UI and the nightly report, looked at as a person does: in a real headless browser (Debian's
chromium driven by playwright). Every page is screenshotted to test-artifacts/screenshots/.

It looks at what tests/e2e/test_nightly_dag.py left on the session's state (every family trained, the
nightly DAG run on the session's ``seeded`` store): no training of its own. Run on its own (that module
not run first in the session), it trains and runs the nightly DAG for that store first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ml.families import propensity
from ml.report import REPORT_FILE
from revopt import cli
from revopt.platform.mlflow_links import experiment_url, model_version_url
from revopt.platform.resources import configure_mlflow, experiment_name

FAST = ["--param", "n_trials=4", "--param", "tuning_timeout_seconds=60", "--param", "backtest_origins=1"]
#: how long a page of the MLflow UI may take to show what is asserted (its JS is large; the machine is shared)
SHOWN_MS = 30_000
#: the report's sections (ml/report.py), in page order
REPORT_SECTIONS = ("Published tables", "Score distributions", "Price moves", "Send hours", "Budget per channel",
                   "Data quality", "Drift", "Models")


@dataclass(frozen=True)
class Workbench:
    experiment_id: str
    run_name: str
    model_name: str
    version: str
    report: Path


def _workbench(settings, run_date) -> Workbench | None:
    """What a person opens: the propensity family's experiment and its latest registered version (with the
    run that trained it), and the nightly report of the run date; None if the run date has no report yet."""
    report = settings.run_dir(run_date) / REPORT_FILE
    if not report.exists():
        return None
    configure_mlflow(settings)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name(propensity.FAMILY.name))
    latest = max(client.search_model_versions(f"name = '{propensity.MODEL_NAME}'"), key=lambda v: int(v.version))
    run = client.get_run(latest.run_id)
    assert run.info.experiment_id == experiment.experiment_id, "the version's run is in its family's experiment"
    return Workbench(experiment.experiment_id, run.info.run_name, propensity.MODEL_NAME, latest.version, report)


@pytest.fixture(scope="module")
def workbench(settings, request) -> Workbench:
    run_date = request.getfixturevalue("seeded").end
    found = _workbench(settings, run_date)
    if found is None:  # this module alone: nothing ran on the store yet
        assert cli.main(["run", "--dag", "training", "--date", run_date.isoformat(), *FAST]) == 0
        assert cli.main(["run", "--dag", "nightly", "--date", run_date.isoformat()]) == 0
        found = _workbench(settings, run_date)
    return found


def test_the_nightly_report_renders_its_sections_and_plots_in_a_browser(workbench, visit):
    page = visit.open(workbench.report.as_uri())
    page.wait_for_load_state("load")
    visit.screenshot("report")
    assert page.get_by_role("heading", level=1).inner_text().startswith("revopt nightly report")
    headings = [h.inner_text() for h in page.get_by_role("heading", level=2).all()]
    assert headings == list(REPORT_SECTIONS)
    for heading in page.get_by_role("heading", level=2).all():
        assert heading.is_visible()
    images = page.locator("img")
    assert images.count() >= 3, "score distributions, send hours, budget at least"
    widths = images.evaluate_all("images => images.map(image => image.complete ? image.naturalWidth : 0)")
    assert all(width > 0 for width in widths), f"images that did not load: {widths}"
    assert page.locator("#scores img").count() >= 1, "tonight's score distributions are plotted"


def test_a_family_experiment_opens_on_its_runs_with_the_training_run(workbench, mlflow_ui, mlflow_ui_log, visit):
    # the link `revopt ui mlflow` prints for the family's experiment
    name = experiment_name(propensity.FAMILY.name)
    printed = [line.split() for line in mlflow_ui_log.read_text(errors="replace").splitlines()]
    links = [words[1] for words in printed if len(words) == 2 and words[0] == name]
    assert links == [experiment_url(mlflow_ui, workbench.experiment_id)], "revopt ui mlflow prints each experiment's link"
    page = visit.open(links[0])
    run = page.get_by_text(workbench.run_name, exact=True).first
    try:
        run.wait_for(timeout=SHOWN_MS)
    finally:
        visit.screenshot("experiment")
    assert page.get_by_role("heading", name="Runs", exact=True).is_visible()
    assert page.get_by_role("heading", name="Overview", exact=True).count() == 0, "not the GenAI overview"
    assert page.get_by_text(experiment_name(propensity.FAMILY.name), exact=True).first.is_visible()


def test_a_model_version_page_shows_the_gate_decision_beside_the_champion(workbench, mlflow_ui, visit):
    page = visit.open(model_version_url(mlflow_ui, workbench.model_name, workbench.version))
    heading = page.get_by_role("heading", name="Promotion gate")
    try:
        heading.wait_for(timeout=SHOWN_MS)
    finally:
        visit.screenshot("model-version")
    assert heading.is_visible()
    text = page.inner_text("body")
    assert re.search(r"Promoted: @champion|Not promoted: @challenger", text), "the decision in words"
    assert "vs the champion:" in text and "Test metrics" in text
    assert _header(page, "first date") == ["split", "first date", "last date", "rows", "what"]  # the data windows
    assert _header(page, "baseline") == ["metric", "candidate", "champion", "baseline"]  # the test metrics
    source_run = page.get_by_text(workbench.run_name, exact=True).first  # Source Run: fetched after the page
    source_run.wait_for(timeout=SHOWN_MS)
    assert source_run.is_visible()


def _header(page, column: str) -> list[str]:
    """The header cells of the page's (first) table with a ``column`` header, as shown."""
    table = page.locator("table", has=page.locator("th", has_text=column)).first
    return [cell.inner_text().strip() for cell in table.locator("th").all()]
