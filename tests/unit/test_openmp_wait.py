"""OpenMP threads sleep while they wait (ml/__init__.py): a task beside another on two cores does not spin
against it. Checked in fresh interpreters through libgomp's own report of its settings (``OMP_DISPLAY_ENV``):
``GOMP_SPINCOUNT`` 0 is the passive policy, 300,000 libgomp's default."""

from __future__ import annotations

import os
import re
import subprocess
import sys

#: the model libraries ml loads, and one numba kernel over threads (numba loads libgomp at its first parallel call)
LOADS_EVERY_LIBGOMP = """
import ml.families, ml.families.treeshap, xgboost
import numpy as np
from numba import njit, prange

@njit(parallel=True)
def total(x):
    s = 0.0
    for i in prange(len(x)):
        s += x[i]
    return s

total(np.ones(8))
"""


def _spin_counts(code: str, **environ: str) -> list[str]:
    """Every libgomp's ``GOMP_SPINCOUNT`` in a fresh interpreter running ``code`` (one per copy loaded)."""
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(OMP_DISPLAY_ENV="VERBOSE", **environ)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return re.findall(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr)


def test_openmp_threads_sleep_while_waiting_in_every_library_ml_loads():
    counts = _spin_counts(LOADS_EVERY_LIBGOMP)
    assert len(counts) >= 2  # the system's libgomp (LightGBM, implicit, numba) and the wheels' own copies
    assert set(counts) == {"0"}


def test_a_library_loaded_without_ml_spins_as_libgomp_defaults():
    # the check above can fail: without ml's policy, libgomp spins
    assert set(_spin_counts("import lightgbm")) == {"300000"}


def test_a_wait_policy_in_the_environment_wins():
    assert set(_spin_counts("import ml.families.classifier", OMP_WAIT_POLICY="ACTIVE")) - {"0"}
