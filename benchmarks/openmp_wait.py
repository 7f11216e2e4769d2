"""Benchmark: OpenMP's wait policy when two task processes share the machine's cores.

Airflow runs revopt's tasks side by side (two task processes on the 2-core machine of docs/scale.md). LightGBM and
XGBoost fit with OpenMP threads (2 each, ``ml.families.classifier``), and libgomp's default makes a thread that waits
at a barrier spin for 300,000 rounds before it sleeps: beside another process, it spins on the core the other
process's thread needs. ``ml/__init__.py`` sets ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once). Each fit runs in
a fresh interpreter with the policy in its environment (libgomp reads it when it loads), on the same synthetic rows
(``--rows`` x 40 features, a seeded linear label, ``--rounds`` boosting rounds). Prints a markdown table of seconds
per fit (the slower of a pair), alone and two at once, under each policy, and one thread per fit two at once::

    .venv/bin/python benchmarks/openmp_wait.py
    .venv/bin/python benchmarks/openmp_wait.py --libraries lightgbm --rows 50000
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

FIT = """
import sys, time
import numpy as np
library, threads, rows, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
X = rng.normal(size=(rows, 40))
y = (X @ rng.normal(size=40) + 3 * rng.normal(size=rows) > 0).astype(int)
start = time.perf_counter()
if library == "lightgbm":
    import lightgbm
    lightgbm.train({"objective": "binary", "num_threads": threads, "verbose": -1, "force_row_wise": True,
                    "num_leaves": 63, "learning_rate": 0.05}, lightgbm.Dataset(X, y), num_boost_round=rounds)
else:
    import xgboost
    xgboost.train({"objective": "binary:logistic", "nthread": threads, "tree_method": "hist", "max_depth": 6},
                  xgboost.DMatrix(X, y, nthread=threads), rounds)
print(time.perf_counter() - start)
"""

#: (label, OMP_WAIT_POLICY or None for libgomp's default, processes at once, threads per fit)
CASES = (
    ("alone, default policy", None, 1, 2),
    ("alone, passive", "PASSIVE", 1, 2),
    ("two at once, default policy", None, 2, 2),
    ("two at once, passive", "PASSIVE", 2, 2),
    ("two at once, one thread each", None, 2, 1),
)


def fits(library: str, policy: str | None, processes: int, threads: int, rows: int, rounds: int) -> float:
    """Seconds of the slowest of ``processes`` fits started together, each in a fresh interpreter."""
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    started = [subprocess.Popen([sys.executable, "-c", FIT, library, str(threads), str(rows), str(rounds)], env=env,
                                stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    seconds = []
    for process in started:
        out, _ = process.communicate()
        if process.returncode:
            raise SystemExit(f"a {library} fit failed (exit {process.returncode})")
        seconds.append(float(out.strip()))
    return max(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libraries", default="lightgbm,xgboost")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    libraries = args.libraries.split(",")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}; {os.cpu_count()} cores, {args.rows:,} rows x 40, "
          f"{args.rounds} rounds", flush=True)
    started = time.perf_counter()
    table = {library: {label: fits(library, policy, processes, threads, args.rows, args.rounds)
                       for label, policy, processes, threads in CASES} for library in libraries}
    print(f"\n| case | {' | '.join(f'{library} s' for library in libraries)} |")
    print(f"|---|{'---|' * len(libraries)}")
    for label, *_ in CASES:
        print(f"| {label} | {' | '.join(f'{table[library][label]:.1f}' for library in libraries)} |")
    ratio = " | ".join(f"{table[library]['two at once, default policy'] / table[library]['two at once, passive']:.2f}x"
                       for library in libraries)
    print(f"| two at once: default / passive | {ratio} |")
    print(f"\n({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
