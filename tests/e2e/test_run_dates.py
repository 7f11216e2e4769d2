"""Any run date is accepted, and `revopt run` fails whenever a DAG run leaves tasks that never ran.

A store whose history is old (the 1990s) gets real task runs, not Airflow's empty "success" for a
logical date before the DAG's start date; a date Airflow will not schedule is reported as such."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from revopt import cli

pytestmark = pytest.mark.e2e


def test_a_run_date_in_the_1990s_runs_its_tasks(settings, capsys):
    # No store has data before 1997-10-01, so the extract is empty and validation stops the run:
    # what matters is that the tasks ran and the CLI says which failed and which never ran.
    assert cli.main(["run", "--dag", "nightly", "--date", "1997-10-01"]) == 1
    captured = capsys.readouterr()
    err = captured.err
    # the tables part's validation failed (dags/_gate.py: no orders), the gate after it upstream failed
    assert "task(s) failed: " in err and "validate_tables" in err and "never ran:" in err and "publish" in err
    assert "DataValidationError" in err and "1997-10-01" in err
    report = json.loads((settings.run_dir(dt.date(1997, 10, 1)) / "airflow-revopt_nightly.json").read_text())
    assert report["tasks"]["extract_tables"]["state"] == "success"
    assert report["tasks"]["validate_tables"]["state"] == "failed"
    assert report["tasks"]["validate"]["state"] == "upstream_failed"
    assert report["tasks"]["extract_tables"]["duration"] > 0
    # the progress lines come from the task states the runner polled out of Airflow's database (no TTY: plain)
    state = json.loads((settings.run_dir(dt.date(1997, 10, 1)) / "airflow-revopt_nightly.state.json").read_text())
    assert state["tasks"] == report["tasks"]
    assert "task extract_tables: success" in captured.out and "task validate_tables: failed" in captured.out


def test_a_date_airflow_schedules_nothing_for_is_a_failure_not_a_success(settings, capsys):
    assert cli.main(["run", "--dag", "training", "--date", "1969-12-31"]) == 1
    assert "no task ran" in capsys.readouterr().err
