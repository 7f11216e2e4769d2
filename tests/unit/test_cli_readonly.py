"""Commands that only read (``where``, ``status``, ``sql``, ``model history``) never start a new, empty stack: without revopt state
they exit non-zero naming the folder they looked in, and leave it exactly as it was."""

from __future__ import annotations

import pytest

from revopt import cli


def _tree(root):
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.mark.parametrize("command", [["where"], ["status"], ["sql", "SELECT 1"],
                                     ["sql", "SELECT 1", "--output", "out.csv"],
                                     ["model", "history", "revopt_churn_risk"]])
def test_a_reading_command_on_an_empty_folder_creates_nothing(tmp_path, monkeypatch, capsys, command):
    (tmp_path / "notes.txt").write_text("the user's own file")
    before = _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REVOPT_HOME", raising=False)
    for variable in ("REVOPT_POSTGRES_URL", "AIRFLOW_CONN_REVOPT_POSTGRES", "REVOPT_READER_URL", "MLFLOW_TRACKING_URI",
                     "AIRFLOW_HOME"):
        monkeypatch.delenv(variable, raising=False)
    assert cli.main(command) == 1
    err = capsys.readouterr().err
    assert f"no revopt state in {tmp_path / '.revopt'}: set REVOPT_HOME or run `revopt demo`" in err
    assert _tree(tmp_path) == before


def test_an_empty_revopt_home_is_left_as_it_was(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("REVOPT_HOME", str(home))
    monkeypatch.delenv("REVOPT_POSTGRES_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_REVOPT_POSTGRES", raising=False)
    assert cli.main(["status"]) == 1
    assert str(home) in capsys.readouterr().err
    assert list(home.iterdir()) == []
