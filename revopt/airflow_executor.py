"""Airflow's LocalExecutor, its worker processes importing the task code once: :class:`PreloadingLocalExecutor`.

A LocalExecutor worker forks one process per task instance (``supervise_task``), and each task imported
``ml.pipeline`` (pandas, the boosters, MLflow, numba, the families) itself: 5-13 s of every task at a million
customers (py-spy of session 29's 1M training run, docs/scale.md), 49 times a night. Here each worker imports
:data:`PRELOADED` once when it starts, before its first task, and every task process it forks shares those modules
(copy-on-write) instead of importing them again. Nothing else changes: the same workers, the same task processes,
the same queues. Importing them runs no OpenMP region (a process forked after one may hang in its own), and the
three threads it starts (numpy's and scipy's OpenBLAS pools, pyarrow's jemalloc) are quiesced at a fork by their
libraries' fork handlers: ``tests/unit/test_airflow_executor.py`` forks task-like processes from a preloaded one.

Only what nearly every task imports anyway: a task process's memory counts the modules it inherits, so a module few
tasks use (Great Expectations, pymc-marketing) would weigh on every task's peak. Opt-in:
``AIRFLOW__CORE__EXECUTOR=revopt.airflow_executor.PreloadingLocalExecutor`` (compose: ``AIRFLOW_EXECUTOR`` in
``.env``; the scale harness: ``REVOPT_BENCH_EXECUTOR``). Measured (docs/scale.md, "Session 30"): a 10k-customer
store's nightly DAG took half the task-seconds; at a million customers the heavy tasks' own work ran slower in
processes forked from a preloaded worker (recommendations for one partition 14 % slower, alternating A/B), which
the imports saved do not make up, so the LocalExecutor stays the default. Like :mod:`revopt.dag_runner`, this module
imports Airflow; business code never imports it.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import time

from airflow.executors.local_executor import LocalExecutor, _run_worker

logger = logging.getLogger(__name__)

#: What every worker imports before its first task.
PRELOADED = ("ml.pipeline",)


def preload(modules: tuple[str, ...] = PRELOADED) -> float:
    """Import ``modules``; the seconds it took."""
    began = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    return time.perf_counter() - began


def _preloading_worker(**kwargs) -> None:
    seconds = preload()
    logger.info("worker imported %s in %.1f s: its task processes share them", ", ".join(PRELOADED), seconds)
    _run_worker(**kwargs)


class PreloadingLocalExecutor(LocalExecutor):
    """The LocalExecutor whose workers import :data:`PRELOADED` before their first task (module docstring)."""

    def _spawn_worker(self) -> None:
        # LocalExecutor._spawn_worker (Airflow 3.3) with the worker's target wrapped; the rest as it is
        process = multiprocessing.Process(
            target=_preloading_worker,
            kwargs={
                "logger_name": self.log.name,
                "input": self.activity_queue,
                "output": self.result_queue,
                "unread_messages": self._unread_messages,
                "team_conf": self.conf,
            },
        )
        process.start()
        self.workers[process.pid] = process
