"""The recommend step with the ALS fold-in in numpy (as it was before, kept below) beside the fold-in now
(``ml/families/recommend/kernels.py``, numba), each in its own fresh process, on one nightly extract.

Both paths run the family's nightly step (``FAMILY.nightly_predict``: fold-in, scores over the catalogue,
top-k under the rules, explanations, cold start) with the same fitted ALS; only the fold-in and the
explanation terms differ. The ALS is fitted once, on the first ``--fit-customers`` customers, with the
default configuration (256 factors) and pickled for both. The outputs are compared row by row.

    PYTHONPATH=. .venv/bin/python benchmarks/recommend_fold_in.py --extract RUN_FOLDER/extract --run-date 2025-02-14

``--extract`` is a nightly run's extract folder (e.g. kept from ``benchmarks/scale.py --dags nightly``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import pickle
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
PATHS = ("numpy", "numba")


def numpy_fold_in(model, customer_rows, item_index, n, bought):
    """The fold-in before the kernels (commit 453d45d's ``estimator.fold_in``): padded batches of similar history
    length, batched numpy solves and products; its explanation closure feeds today's ``Solved.contributions``."""
    from ml.families.recommend.estimator import Solved, histories

    config, factors = model.config, model.factors
    f = factors.shape[1]
    gram = model.gram()
    inverse = np.linalg.inv(gram)
    projected = factors @ inverse
    rows, items, confidence, bought, starts, lengths = histories(customer_rows, item_index, n, bought, config)
    by_length = np.argsort(lengths, kind="stable")
    done = 0
    while done < len(by_length):
        size = 1
        while done + size < len(by_length) and (size + 1) * _elements(int(lengths[by_length[done + size]]), f) <= 1 << 22:
            size += 1
        batch = by_length[done:done + size]
        done += size
        longest = int(lengths[batch].max())
        offsets = np.arange(longest)
        valid = offsets[None, :] < lengths[batch][:, None]
        at = np.where(valid, starts[batch][:, None] + offsets[None, :], 0)
        batch_items = np.where(valid, items[at], -1)
        c = np.where(valid, confidence[at], 0.0)
        history = np.where(valid[:, :, None], factors[np.maximum(batch_items, 0)], 0.0)
        history_t = np.transpose(history, (0, 2, 1))
        d = c - valid
        if longest < f:
            p = np.where(valid[:, :, None], projected[np.maximum(batch_items, 0)], 0.0)
            kernel = np.matmul(p, history_t)
            m = np.eye(longest)[None] + d[:, :, None] * kernel
            r = np.eye(longest)[None] - np.linalg.solve(m, d[:, :, None] * kernel)
            x = np.matmul(np.transpose(p, (0, 2, 1)), np.matmul(r, c[:, :, None]))[:, :, 0]

            def explain(picked, history_t=history_t, r=r):
                return np.matmul(np.matmul(picked @ inverse, history_t), r)
        else:
            a = gram[None] + np.matmul(history_t * d[:, None, :], history)
            x = np.linalg.solve(a, np.matmul(history_t, c[:, :, None]))[:, :, 0]

            def explain(picked, history=history, a=a):
                return np.matmul(np.transpose(np.linalg.solve(a, np.transpose(picked, (0, 2, 1))), (0, 2, 1)),
                                 np.transpose(history, (0, 2, 1)))

        def terms(chosen, explain=explain, c=c, batch_items=batch_items):
            values = explain(factors[np.maximum(chosen, 0)]) * c[:, None, :]
            return np.where((batch_items >= 0)[:, None, :] & (chosen >= 0)[:, :, None], values, 0.0)
        yield Solved(rows[starts[batch]], x, batch_items, c, np.where(valid, bought[at], False), terms)


def _elements(length: int, factors: int) -> int:
    return length * factors + (length * length if length < factors else factors * factors)


def _frames(extract: str) -> dict:
    import pandas as pd

    from ml.families.recommend import FAMILY

    return {name: pd.read_parquet(Path(extract) / f"{name}.parquet") for name in FAMILY.nightly_datasets
            if (Path(extract) / f"{name}.parquet").exists()}


def fitted_model(frames: dict, run_date: dt.date, fit_customers: int):
    """A recommendations model: ALS (default configuration) fitted on the first ``fit_customers`` customers'
    interactions of ``frames`` (the model's quality is not the point of a benchmark scoring with it)."""
    from features.interactions import interactions_from_extract
    from ml.families.recommend.config import RecsConfig, rules_from_params
    from ml.families.recommend.estimator import fit_als, strengths
    from ml.families.recommend.model import RecommendationsModel
    from ml.params import RunParams

    params = RunParams()
    few = frames["customers"]["customer_id"].head(fit_customers)
    frames = {**frames, **{name: frames[name][frames[name]["customer_id"].isin(few)]
                           for name in ("customers", "order_items", "product_views") if name in frames}}
    history = interactions_from_extract(frames, run_date, params.lookback_days)
    return RecommendationsModel(fit_als(strengths(history, RecsConfig().view_weight), RecsConfig()),
                                rules_from_params(params), run_date.isoformat())


def fit(extract: str, run_date: dt.date, fit_customers: int, path: Path) -> None:
    path.write_bytes(pickle.dumps(fitted_model(_frames(extract), run_date, fit_customers)))


def _child(path: str, extract: str, run_date: str, model_file: str, output: str, queue) -> None:
    import pandas as pd

    from ml.families.recommend import FAMILY, recommender
    from ml.params import RunParams

    if path == "numpy":
        recommender.fold_in = numpy_fold_in
    model = pickle.loads(Path(model_file).read_bytes())
    frames = _frames(extract)
    if path == "numba":  # compiled (or loaded from numba's cache) before the clock starts, as the numpy path is
        from ml.families.recommend import kernels  # noqa: F401
    began = time.perf_counter()
    published = pd.DataFrame(FAMILY.nightly_predict(model, frames, dt.date.fromisoformat(run_date), RunParams()))
    seconds = time.perf_counter() - began
    published.to_parquet(output, index=False)
    queue.put({"seconds": round(seconds, 1), "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
               "rows": len(published)})


def measure(path: str, extract: str, run_date: str, model_file: Path, output: Path) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(path, extract, run_date, str(model_file), str(output), queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        return {"failed": f"exit code {process.exitcode}"}
    return queue.get()


def compare(numpy_rows, numba_rows) -> dict[str, Any]:
    """How far the two outputs are apart: the share of (customer, rank) rows with the same product, reason and
    source, and the largest score difference."""
    key = ["customer_id", "rank"]
    both = numpy_rows.merge(numba_rows, on=key, suffixes=("_numpy", "_numba"), how="outer", indicator=True)
    matched = both["_merge"] == "both"
    same = matched & (both["product_id_numpy"] == both["product_id_numba"]) & \
        (both["reason_numpy"].fillna("") == both["reason_numba"].fillna("")) & (both["source_numpy"] == both["source_numba"])
    scores = (both["score_numpy"] - both["score_numba"]).abs()
    return {"rows": len(both), "same_rows": round(float(same.mean()), 6), "unmatched": int((~matched).sum()),
            "max_score_difference": float(scores[matched].max())}


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extract", required=True, help="a nightly run's extract folder")
    parser.add_argument("--run-date", required=True)
    parser.add_argument("--fit-customers", type=int, default=50_000)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    command = "python benchmarks/recommend_fold_in.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v != "")
    report: dict[str, Any] = {"date": dt.date.today().isoformat(), "command": command, "paths": {}}
    with tempfile.TemporaryDirectory() as folder:
        model_file = Path(folder) / "model.pkl"
        began = time.perf_counter()
        fit(args.extract, dt.date.fromisoformat(args.run_date), args.fit_customers, model_file)
        report["fit_seconds"] = round(time.perf_counter() - began, 1)
        outputs = {path: Path(folder) / f"{path}.parquet" for path in PATHS}
        for path in PATHS:
            print(f"{path} ...", flush=True)
            report["paths"][path] = measure(path, args.extract, args.run_date, model_file, outputs[path])
            print(f"  {report['paths'][path]}", flush=True)
        if all(out.exists() for out in outputs.values()):
            report["comparison"] = compare(*(pd.read_parquet(outputs[path]) for path in PATHS))
    timed = [report["paths"][p].get("seconds") for p in PATHS]
    if all(timed):
        report["speedup"] = round(timed[0] / timed[1], 2)
    print(json.dumps(report, indent=1))
    RESULTS.mkdir(exist_ok=True)
    name = f"recommend-fold-in{'-' + args.label if args.label else ''}"
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
