"""Peak memory and wall time of three nightly steps at scale, the path before issue 22's second wave beside the
path now, each in its own fresh process, on one nightly extract (docs/scale.md, "Memory of the nightly steps"):

- ``send_time``: before, the champion's pyfunc ``predict`` on ``nightly_input`` (one long frame of customers,
  engagement cells and orders, checked and copied by MLflow's schema enforcement, then split again); now,
  ``FAMILY.nightly_predict`` (the same fit from the frames, the evidence cube summed over slices of rows);
- ``recommendations``: the same two paths of the recommendations family (its long frame has every purchase and view
  of the window);
- ``attribution``: before, every model's credits of the whole history at once, then cut to the window
  (``in_window(credit_all(...))``); now, one model at a time (``credit_each``), as ``ml.attribution.steps`` runs.

The models: the send-time model is a configuration (the run's defaults); the recommendations model is an ALS
fitted on the first ``--fit-customers`` customers' interactions (its quality is not the point: both paths score
with it). The pyfunc path goes through ``mlflow.pyfunc.save_model`` / ``load_model`` with the signature training
logs, so MLflow's schema enforcement runs as at night. Each path's output is compared with the other's.

    PYTHONPATH=. .venv/bin/python benchmarks/night_steps_memory.py --extract RUN_FOLDER/extract --run-date 2025-02-14

``--extract`` is a nightly run's extract folder (e.g. kept from ``benchmarks/scale.py --dags nightly``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

STEPS = ("send_time", "recommendations", "attribution")
RESULTS = Path(__file__).resolve().parent / "results"


def _frames(extract: str, names) -> dict:
    import pandas as pd

    return {name: pd.read_parquet(Path(extract) / f"{name}.parquet") for name in names
            if (Path(extract) / f"{name}.parquet").exists()}


def _pyfunc(model, example, output, params, folder: str):
    import mlflow
    from mlflow.models import infer_signature

    path = Path(folder) / "model"
    mlflow.pyfunc.save_model(path, python_model=model, signature=infer_signature(example, output, params=params),
                             pip_requirements=["pandas"])
    return mlflow.pyfunc.load_model(str(path))


def run_send_time(extract: str, run_date: dt.date, path: str, folder: str) -> Any:
    import pandas as pd

    from ml.families.send_time import FAMILY, SendTimeModel, send_time_config
    from ml.params import RunParams

    params = RunParams()
    frames = _frames(extract, FAMILY.nightly_datasets)
    model = SendTimeModel(send_time_config(params), run_date.isoformat(), pd.DataFrame())
    if path == "now":
        return FAMILY.nightly_predict(model, frames, run_date, params)
    few = frames["customers"]["customer_id"].head(20)
    small = {name: frame[frame["customer_id"].isin(few)] for name, frame in frames.items()}
    example = FAMILY.nightly_input(small, run_date, params)
    loaded = _pyfunc(model, example, model.predict(None, example, FAMILY.predict_params(run_date, params)),
                     FAMILY.predict_params(run_date, params), folder)
    return loaded.predict(FAMILY.nightly_input(frames, run_date, params), params=FAMILY.predict_params(run_date, params))


def run_recommendations(extract: str, run_date: dt.date, path: str, folder: str, fit_customers: int) -> Any:
    from benchmarks.recommend_fold_in import fitted_model
    from features.interactions import interactions_from_extract, recommendation_input
    from ml.families.recommend import FAMILY
    from ml.params import RunParams

    params = RunParams()
    frames = _frames(extract, FAMILY.nightly_datasets)
    few = frames["customers"]["customer_id"].head(fit_customers)
    model = fitted_model(frames, run_date, fit_customers)
    if path == "now":
        return FAMILY.nightly_predict(model, frames, run_date, params)
    tiny = {**frames, **{name: frames[name][frames[name]["customer_id"].isin(few.head(20))]
                         for name in ("customers", "order_items", "product_views") if name in frames}}
    example = recommendation_input(interactions_from_extract(tiny, run_date, params.lookback_days))
    predict_params = FAMILY.predict_params(run_date, params)
    loaded = _pyfunc(model, example, model.predict(None, example, predict_params), predict_params, folder)
    return loaded.predict(FAMILY.nightly_input(frames, run_date, params), params=predict_params)


def run_attribution(extract: str, run_date: dt.date, path: str, folder: str) -> Any:
    from ml.attribution import nightly as attribution
    from ml.params import RunParams

    settings = attribution.settings_of(RunParams())
    paths = _frames(extract, ("conversion_paths",))["conversion_paths"]
    if path == "before":
        return attribution.in_window(attribution.credit_all(paths, settings), paths, run_date, settings.window_days)
    return attribution.credits_in_window(paths, run_date, settings)[0]


def _child(step: str, path: str, extract: str, run_date: str, fit_customers: int, queue) -> None:
    import pandas as pd

    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        day = dt.date.fromisoformat(run_date)
        if step == "send_time":
            output = run_send_time(extract, day, path, folder)
        elif step == "recommendations":
            output = run_recommendations(extract, day, path, folder, fit_customers)
        else:
            output = run_attribution(extract, day, path, folder)
        seconds = time.perf_counter() - began
        output = pd.DataFrame(output)
        output.to_parquet(Path(extract).parent / f"night-steps-{step}-{path}.parquet", index=False)
    queue.put({"seconds": round(seconds, 1), "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
               "rows": len(output)})


def measure(step: str, path: str, extract: str, run_date: str, fit_customers: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(step, path, extract, run_date, fit_customers, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        return {"failed": f"exit code {process.exitcode}"}
    return queue.get()


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extract", required=True, help="a nightly run's extract folder")
    parser.add_argument("--run-date", required=True)
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--fit-customers", type=int, default=50_000)
    parser.add_argument("--label", default="1000000")
    args = parser.parse_args()
    report: dict[str, Any] = {"date": dt.date.today().isoformat(), "extract": args.extract, "run_date": args.run_date,
                              "command": "python benchmarks/night_steps_memory.py " + " ".join(
                                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()), "steps": {}}
    for step in [s for s in args.steps.split(",") if s]:
        report["steps"][step] = {}
        for path in ("before", "now"):
            print(f"{step} {path} ...", flush=True)
            report["steps"][step][path] = result = measure(step, path, args.extract, args.run_date, args.fit_customers)
            print(f"  {result}", flush=True)
        files = [Path(args.extract).parent / f"night-steps-{step}-{path}.parquet" for path in ("before", "now")]
        if all(f.exists() for f in files):
            before, now = (pd.read_parquet(f) for f in files)
            try:
                pd.testing.assert_frame_equal(before.reset_index(drop=True), now[list(before.columns)].reset_index(drop=True),
                                              check_dtype=False)
                report["steps"][step]["same_output"] = True
            except AssertionError as exc:
                report["steps"][step]["same_output"] = f"differs: {str(exc)[:300]}"
            for f in files:
                f.unlink()
    lines = [f"# Nightly steps, the path before and now ({report['date']})", "", f"Command: `{report['command']}`", "",
             "| step | path | wall s | peak MB | rows | same output |", "|---|---|---|---|---|---|"]
    for step, paths in report["steps"].items():
        for path in ("before", "now"):
            r = paths[path]
            lines.append(f"| {step} | {path} | {r.get('seconds', '-')} | {r.get('peak_mb', r.get('failed', '-')):,} | "
                         f"{r.get('rows', '-'):,} | {paths.get('same_output', '-')} |" if "peak_mb" in r else
                         f"| {step} | {path} | - | {r.get('failed')} | - | - |")
    markdown = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"night-steps-{args.label}.json").write_text(json.dumps(report, indent=1) + "\n")
    (RESULTS / f"night-steps-{args.label}.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
