"""The recommendations family's ALS fit with ``implicit``'s own conjugate-gradient step and with the blocked one
(``ml.families.recommend.solver``), side by side in one process, on a store's real training extract.

For each solver: the configuration (default: the family's default) fitted on the history before the test window,
as the training task's test fit is, timed; then its NDCG@K, precision and recall on the test window, and how
many of the test rows' lists are the same. Reads the extract of a stack kept by ``benchmarks/scale.py --keep-home
DIR`` (the recommendations family's training datasets under ``DIR/runs/<run date>/extract``).

    PYTHONPATH=. .venv/bin/python benchmarks/als_solver.py --home DIR [--factors 256] [--iterations 15]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scale import START  # noqa: E402


@contextmanager
def _solver(name: str):
    """``fit_als`` with ``implicit``'s model (``implicit``) or the blocked one (``blocked``)."""
    from implicit.cpu.als import AlternatingLeastSquares

    from ml.families.recommend import solver

    blocked = solver.BlockedALS
    solver.BlockedALS = AlternatingLeastSquares if name == "implicit" else blocked
    try:
        yield
    finally:
        solver.BlockedALS = blocked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="the stack folder scale.py kept (--keep-home)")
    parser.add_argument("--run-date", type=dt.date.fromisoformat, default=START + dt.timedelta(days=410))
    parser.add_argument("--factors", type=int, default=None, help="default: the family's default configuration's")
    parser.add_argument("--iterations", type=int, default=None)
    args = parser.parse_args()

    from ml.families.recommend import FAMILY
    from ml.families.recommend.backtest import fitted, predictions, scores
    from ml.params import RunParams
    from revopt.platform.extract import read_extract

    folder = Path(args.home) / "runs" / args.run_date.isoformat() / "extract"
    params = RunParams()
    frames = read_extract({name: str(folder / f"{name}.parquet") for name in FAMILY.training_datasets})
    data = FAMILY.training_data(frames, args.run_date, params)
    config = dataclasses.replace(data.default, **{key: value for key, value in
                                                  {"factors": args.factors, "iterations": args.iterations}.items()
                                                  if value is not None})
    test = data.test_window()
    results, lists = [], {}
    for name in ("implicit", "blocked"):
        with _solver(name):
            began = time.perf_counter()
            model = fitted(test, config)
            seconds = time.perf_counter() - began
        lists[name] = predictions(test, model)
        results.append({"solver": name, "seconds": round(seconds, 2), **{key: round(value, 5) for key, value in
                                                                         scores(test, lists[name]).items()}})
        print(json.dumps(results[-1]), flush=True)
    same = np.mean([np.array_equal(a[a >= 0], b[b >= 0]) for a, b in zip(lists["implicit"], lists["blocked"])])
    print(json.dumps({"config": dataclasses.asdict(config), "test_rows": len(test.customer_ids),
                      "customers": len(data.interactions.customers), "same_lists": round(float(same), 4),
                      "speed-up": round(results[0]["seconds"] / results[1]["seconds"], 2)}))


if __name__ == "__main__":
    main()
