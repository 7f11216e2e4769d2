"""``revopt run``'s DAG runner, forked from a process that has already imported the heavy libraries.

Every ``revopt run`` starts ``python -m revopt.dag_runner`` in a fresh interpreter (``revopt.cli._start_runner``),
which imports Great Expectations, Evidently, MLflow and the model libraries again before the first task runs: about
13 s of each of the suite's ~20 DAG runs on this machine (a 1,500-customer nightly run took 71-77 s cold and 58 s
forked). The end-to-end tests start the same command, with the same environment and arguments, in a child of a
``multiprocessing`` fork server that imported :data:`PRELOAD` once; the child runs ``revopt.dag_runner`` as its
``__main__`` exactly as the interpreter would, then its exit handlers, and exits with the runner's status. Only
third-party libraries are preloaded: revopt's own modules, Airflow (which reads its configuration from the
environment when imported) and chDB are imported by the child, as in a fresh interpreter.

``REVOPT_TEST_COLD_RUNNER=1`` runs the suite with fresh interpreters instead.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
from collections.abc import Callable
from typing import IO

#: What a DAG run's process imports that costs seconds, none of them reading revopt's or Airflow's settings when
#: imported (nor starting a thread: a fork copies only the forking thread). ``ml`` first: its OpenMP wait policy must be
#: in the environment before a model library loads libgomp (ml/__init__.py).
PRELOAD = ("ml", "pandas", "pyarrow.parquet", "scipy.optimize", "scipy.stats", "sklearn.ensemble", "sklearn.linear_model",
           "numba", "lightgbm", "xgboost", "catboost", "mlflow", "mlflow.pyfunc", "great_expectations", "evidently",
           "evidently.presets", "splink", "plotly.graph_objects")
RUNNER = ["-m", "revopt.dag_runner"]


def _run(arguments: list[str], env: dict[str, str], cwd: str, log_path: str) -> None:
    """In the forked child: ``python -m revopt.dag_runner *arguments`` with ``env`` in ``cwd``, its output appended
    to ``log_path``; exits with the runner's status after the exit handlers a fresh interpreter would run."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.argv = ["revopt.dag_runner", *arguments]
    status = 0
    try:
        runpy.run_module("revopt.dag_runner", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # as the interpreter would: the traceback in the log, status 1
        import traceback

        traceback.print_exc()
        status = 1
    atexit._run_exitfuncs()  # a multiprocessing child leaves with os._exit, which skips them
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class _Child:
    """The ``subprocess.Popen`` surface ``revopt.cli._run_dag`` uses, over a fork server's child."""

    def __init__(self, process: multiprocessing.Process) -> None:
        self._process = process

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self) -> int:
        self._process.join()
        return self._process.exitcode

    def terminate(self) -> None:
        self._process.terminate()


class WarmRunner:
    """``start`` replaces ``revopt.cli._start_runner`` (``cold``, which still starts any other command); the fork
    server starts (and imports :data:`PRELOAD`) on the first DAG run."""

    def __init__(self, cold: Callable[[list[str], dict[str, str], IO], subprocess.Popen]) -> None:
        self._cold = cold
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([__name__, *PRELOAD])

    def start(self, command: list[str], env: dict[str, str], log: IO) -> _Child | subprocess.Popen:
        if command[1:3] != RUNNER:
            return self._cold(command, env, log)
        log.flush()
        process = self._context.Process(target=_run, args=(command[3:], dict(env), os.getcwd(), log.name), daemon=False)
        process.start()
        return _Child(process)
