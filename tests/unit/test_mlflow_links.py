"""revopt's links into the MLflow UI (tests/e2e/test_workbench_in_browser.py opens them in a browser)."""

from revopt.platform.mlflow_links import MODEL_TRAINING, experiment_url, model_version_url


def test_an_experiment_link_opens_the_ui_in_model_training_mode():
    assert experiment_url("http://127.0.0.1:5000/", "12") == \
        "http://127.0.0.1:5000/#/experiments/12?workflowType=machine_learning"


def test_a_version_link_quotes_the_model_name():
    url = model_version_url("http://h:5000", "revopt purchase/propensity", 3)
    assert url == f"http://h:5000/#/models/revopt%20purchase%2Fpropensity/versions/3?{MODEL_TRAINING}"
