"""Model families, tuning, evaluation, registry and publishing. No Airflow imports."""

import os

#: OpenMP threads (LightGBM, XGBoost, implicit's ALS, numba's parallel kernels, scikit-learn) sleep while they wait
#: for work instead of spinning: libgomp's default spins 300,000 rounds at every barrier (``GOMP_SPINCOUNT``), which
#: is harmless alone and ruinous when two task processes share two cores (Airflow runs tasks side by side): each
#: spinning thread holds the core the other process's thread needs. A LightGBM fit of 200k rows took 177 s beside
#: another instead of 22 (``benchmarks/openmp_wait.py``). libgomp reads this once, when a library loads it, so it is
#: set here, before any ``ml`` module imports one; a value already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
