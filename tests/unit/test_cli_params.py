"""``revopt run --help`` lists every DAG param with its default and description, generated from ml.params; a bad
``--param`` is refused, naming the param, before Airflow (or anything else) starts."""

from __future__ import annotations

import json

import pytest

from ml.params import param_specs
from revopt import cli
from revopt.cli_run import params_epilog, validate_params


def test_run_help_lists_every_param_of_every_dag_with_default_and_description(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    for dag in cli.DAGS:
        section = text.split(f"--dag {dag}:")[1].split("\n--dag ")[0]
        specs = param_specs(dag)
        assert specs, dag
        for spec in specs:
            assert f"  {spec.name} = {json.dumps(spec.default)}  (" in section, (dag, spec.name)
            assert spec.description.split()[0] in section


def test_the_epilog_shows_bounds_and_choices():
    text = params_epilog(["training"])
    assert "n_trials = 12  (integer, >= 1, <= 500)" in text
    assert "clv_selection_metric = \"rmse\"  (string, one of rmse, mae, spearman)" in text
    assert "price_ending = null  (null|number, >= 0, <= 0.99)" in text


@pytest.mark.parametrize("params, message", [
    ({"n_trials": 0}, "--param n_trials=0: 0 is less than the minimum of 1"),
    ({"n_trials": "many"}, "--param n_trials=\"many\": 'many' is not of type 'integer'"),
    ({"clv_selection_metric": "r2"}, "--param clv_selection_metric=\"r2\": 'r2' is not one of"),
    ({"n_trails": 3}, "--param n_trails: no such param for --dag training"),
    ({"segment_clusters": 5}, "--param segment_clusters: no such param for --dag training"),  # a nightly param
])
def test_a_bad_param_is_refused_naming_it(params, message):
    with pytest.raises(ValueError) as refused:
        validate_params(["training"], params)
    assert str(refused.value).startswith(message)


def test_good_params_pass():
    validate_params(["training"], {"n_trials": 2, "price_ending": None, "tuning_timeout_seconds": 60})
    validate_params(["training", "nightly", "affinity"], {"segment_clusters": 4, "affinity_view_weight": 0.2})


def test_run_refuses_a_bad_param_before_airflow_starts(monkeypatch, tmp_path, capsys):
    def _must_not_run(*args, **kwargs):
        raise AssertionError("Airflow must not start")

    monkeypatch.setenv("REVOPT_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(cli, "_run_dag", _must_not_run)
    assert cli.main(["run", "--dag", "nightly", "--date", "2025-01-01", "--param", "segment_clusters=1"]) == 1
    assert "--param segment_clusters=1: 1 is less than the minimum of 2" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()
