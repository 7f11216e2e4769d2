"""Benchmark: the promotion gate's paired bootstrap of a ratio-of-sums metric at a million test rows.

``ml.evaluation.compare`` with CLV's RMSE (:data:`ml.families.clv.GATE_METRICS`, per-row squared errors as its terms)
on synthetic spend and two models' predictions, against the same bootstrap summed the way it was before session 23:
each resample gathers each model's numerator and denominator terms at the drawn rows and sums them. Both draw the same
rows (one seeded generator each); the interval and p-value must agree up to the order of the sums. Prints a markdown
table: seconds per method (best of ``--repeats``), their ratio, and the largest relative difference of the intervals::

    .venv/bin/python benchmarks/bootstrap_sums.py
    .venv/bin/python benchmarks/bootstrap_sums.py --rows 200000 --resamples 200 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time

import numpy as np

from ml.evaluation import Evaluation, _interval, compare, squared_errors
from ml.families.clv import GATE_METRICS


def gathered_bootstrap(candidate: Evaluation, reference: Evaluation, resamples: int, seed: int) -> tuple[float, ...]:
    """RMSE's bootstrap as summed before: gather each model's terms at every resample's rows (no groups)."""
    rng = np.random.default_rng(seed)
    terms = [[np.asarray(part, dtype=np.float64) for part in squared_errors(e.y, e.predicted)]
             for e in (candidate, reference)]
    n = candidate.n
    gains = np.empty(resamples)
    for b in range(resamples):
        picked = rng.integers(0, n, n)
        values = [math.sqrt(numerator[picked].sum() / denominator[picked].sum()) for numerator, denominator in terms]
        gains[b] = -(values[0] - values[1])  # lower RMSE is better
    return _interval(gains)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--resamples", type=int, default=1_000, help="the gate's default is 1,000")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(7)
    spend = np.where(rng.random(args.rows) < 0.3, rng.gamma(2.0, 40.0, args.rows), 0.0)
    candidate = Evaluation("candidate", spend, spend + rng.normal(0, 20, args.rows))
    reference = Evaluation("champion", spend, spend + rng.normal(0, 21, args.rows))
    metric = GATE_METRICS["rmse"]

    timings: dict[str, list[float]] = {"counts x terms (ml.evaluation)": [], "gathered per column (before)": []}
    results = {}
    for _ in range(args.repeats):
        start = time.perf_counter()
        comparison = compare(candidate, reference, metric, seed=0, resamples=args.resamples)
        timings["counts x terms (ml.evaluation)"].append(time.perf_counter() - start)
        results["new"] = (comparison.low, comparison.high, comparison.p_value)
        start = time.perf_counter()
        results["old"] = gathered_bootstrap(candidate, reference, args.resamples, seed=0)
        timings["gathered per column (before)"].append(time.perf_counter() - start)

    new, old = (min(timings[key]) for key in timings)
    difference = max(abs(a - b) / max(abs(b), 1e-300) for a, b in zip(results["new"], results["old"]))
    print(f"`{shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}`\n")
    print(f"{args.rows:,} rows, {args.resamples:,} resamples, best of {args.repeats}\n")
    print("| method | seconds | per resample (ms) |\n|---|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {min(seconds):.2f} | {1000 * min(seconds) / args.resamples:.1f} |")
    print(f"\nbefore / now: **{old / new:.2f}x**; interval and p-value: largest relative difference {difference:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
