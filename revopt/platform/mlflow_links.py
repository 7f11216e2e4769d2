"""Links into MLflow's web UI that open where a person expects: a revopt experiment on its runs, a model
version on its page (description, aliases, source run).

Why a link needs more than the experiment's id: MLflow 3's UI has a global switch, "GenAI" / "Model
training", kept in the browser (``localStorage["mlflow.workflowType"]``) and "GenAI" in a browser that
never touched it. Under "GenAI", ``#/experiments/<id>`` opens the GenAI Overview (traces, tokens, an
assistant) whatever the experiment is; the experiment tag ``mlflow.experimentKind`` that revopt sets
(revopt.platform.resources) does not change that page in MLflow 3.17 (checked in a headless browser:
tests/e2e/test_workbench_in_browser.py). The UI takes the switch from the link's ``workflowType``
parameter before the browser's own, so revopt's links carry ``workflowType=machine_learning``.
"""

from __future__ import annotations

from urllib.parse import quote

#: the query that opens MLflow's UI in its "Model training" mode
MODEL_TRAINING = "workflowType=machine_learning"


def experiment_url(base_url: str, experiment_id: str) -> str:
    """The experiment's page, opened on its runs table."""
    return f"{base_url.rstrip('/')}/#/experiments/{quote(str(experiment_id), safe='')}?{MODEL_TRAINING}"


def model_version_url(base_url: str, model_name: str, version: str | int) -> str:
    """A registered model version's page."""
    return (f"{base_url.rstrip('/')}/#/models/{quote(model_name, safe='')}/versions/{quote(str(version), safe='')}"
            f"?{MODEL_TRAINING}")
