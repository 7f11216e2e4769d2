"""The LocalExecutor whose workers import the task code once (``revopt.airflow_executor``): a worker has the modules
before its first task, and a task process forked from a preloaded worker runs the libraries' threads to the end."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_each_worker_imports_the_task_code_before_its_first_task():
    # in a fresh interpreter: a test process that imported the boosters already would hand them to any fork
    code = textwrap.dedent("""
        import time
        from pathlib import Path
        from airflow.executors.local_executor import LocalExecutor
        from revopt.airflow_executor import PreloadingLocalExecutor

        def lightgbm_mapped(pid):
            return "lib_lightgbm" in Path(f"/proc/{pid}/maps").read_text()

        executor = PreloadingLocalExecutor(parallelism=2)
        assert isinstance(executor, LocalExecutor)
        executor.start()
        try:
            deadline, loaded = time.monotonic() + 120, set()
            while time.monotonic() < deadline and len(loaded) < 2:
                loaded = {pid for pid in executor.workers if lightgbm_mapped(pid)}
                time.sleep(0.5)
            print("RESULT", len(executor.workers), len(loaded), lightgbm_mapped("self"), flush=True)
        finally:
            executor.end()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # both workers imported ml.pipeline (the boosters' libraries mapped); the executor's own process did not
    [result] = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert result == ["2", "2", "False"], out.stdout + out.stderr[-2000:]


def test_a_task_forked_from_a_preloaded_worker_runs_the_libraries_threads():
    """The import starts three threads (numpy's and scipy's OpenBLAS pools, pyarrow's jemalloc background thread:
    each library quiesces them at a fork with its own fork handlers) and no OpenMP pool (a process forked after an
    OpenMP region may hang in its first one). So: preload as a worker does, then fork task-like children one after
    the other, each running what tasks run (BLAS, a LightGBM, XGBoost and CatBoost fit on two OpenMP threads, a Parquet
    round trip); every one must finish, and the worker itself must start no thread meanwhile."""
    code = textwrap.dedent("""
        import os, sys
        from revopt.airflow_executor import preload
        preload()
        threads = len(os.listdir("/proc/self/task"))

        def task():
            import numpy as np, pandas as pd, lightgbm as lgb, xgboost as xgb, catboost
            rng = np.random.default_rng(0)
            X = rng.normal(size=(2000, 8)); y = (X[:, 0] + rng.normal(size=2000) > 0).astype(int)
            assert np.isfinite(X.T @ X @ rng.normal(size=(8, 512))).all()
            lgb.train({"objective": "binary", "num_threads": 2, "verbosity": -1}, lgb.Dataset(X, y), 20)
            xgb.train({"objective": "binary:logistic", "nthread": 2}, xgb.DMatrix(X, y), 20)
            catboost.CatBoostClassifier(iterations=20, thread_count=2, verbose=False,
                                        allow_writing_files=False).fit(X, y)
            path = f"/tmp/revopt-fork-{os.getpid()}.parquet"
            pd.DataFrame(X).rename(columns=str).to_parquet(path); pd.read_parquet(path); os.remove(path)

        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                try:
                    task()
                except BaseException:
                    os._exit(1)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            print("RESULT exit", os.waitstatus_to_exitcode(status), flush=True)
        print("RESULT worker-threads-added", len(os.listdir("/proc/self/task")) - threads, flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # Airflow may log to stdout too (its unit-test configuration): read the marked lines alone
    results = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert results[:3] == [["exit", "0"]] * 3, out.stdout + out.stderr[-2000:]
    assert results[3][0] == "worker-threads-added", out.stdout
    assert int(results[3][1]) <= 0, out.stdout  # OpenBLAS stops its pool at a fork, and starts it again when used
