"""Airflow reads its configuration at import: point it at a throwaway home before any test imports it."""

from __future__ import annotations

import os
import tempfile

from revopt.config import DAGS_FOLDER

_HOME = tempfile.mkdtemp(prefix="revopt-dagtest-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
