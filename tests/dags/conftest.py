"""Airflow reads its configuration at import: point it at a throwaway home before any test imports it."""

from __future__ import annotations

import os
import sys
import tempfile

from revopt.platform.config import DAGS_FOLDER

# Airflow puts the DAGs folder on sys.path; the DAG files import their helpers as ``_support``.
sys.path.insert(0, str(DAGS_FOLDER))

_HOME = tempfile.mkdtemp(prefix="revopt-dagtest-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_FOLDER)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
