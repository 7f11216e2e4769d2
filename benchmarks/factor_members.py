"""The exact factors of each customer champion's members, one member at a time, on a stack kept by
``benchmarks/scale.py --keep-home DIR`` after its nightly run (its champions and that night's customer features).

Each member of a blend (LightGBM, XGBoost, CatBoost) is explained alone, as the score step explains it
(``BinaryModel.contributions``: its trees handed to the TreeSHAP kernel, ``ml.families.treeshap``), on the first
``--customers`` customers, and its library's own prediction of them is timed beside (``predict_seconds``):
run it at two commits to compare a kernel change member by member, with ``--out`` to check
that the values are the same (docs/scale.md, "Session 27").

    PYTHONPATH=. .venv/bin/python benchmarks/factor_members.py --home DIR --customers 500000 [--out FILE.npz]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scale import START, _resources  # noqa: E402

FAMILIES = ("revopt_purchase_propensity", "revopt_churn_risk")


def members(model) -> list:
    """The single-estimator models of a ``BinaryModel`` (a blend's members, recursively)."""
    return [m for member in model.estimator for m in members(member)] if model.spec.family == "ensemble" else [model]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="the stack folder scale.py kept (--keep-home)")
    parser.add_argument("--run-date", type=dt.date.fromisoformat, default=START + dt.timedelta(days=410))
    parser.add_argument("--customers", type=int, default=500_000)
    parser.add_argument("--out", type=Path, default=None, help="save every member's values here (.npz)")
    args = parser.parse_args()

    from ml.families.binary import with_btyd
    from ml.registry import load_champion

    resources = _resources(args.home)
    features = pd.read_parquet(Path(args.home) / "runs" / args.run_date.isoformat() / "features" /
                               "customer_features.parquet").set_index("customer_id").head(args.customers)
    saved, results = {}, []
    for name in FAMILIES:
        python_model = load_champion(resources, name).python_model
        X = with_btyd(features, python_model.btyd)
        for k, member in enumerate(members(python_model.model.model)):
            member.contributions(X.head(2_000))  # compiled (numba's cache) before the clock starts
            began = time.perf_counter()
            values = member.contributions(X)
            seconds = time.perf_counter() - began
            began = time.perf_counter()
            member.predict_proba(X)
            predict_seconds = time.perf_counter() - began
            saved[f"{name}_{k}"] = values.to_numpy()
            results.append({"champion": name, "member": member.spec.family, "rounds": member.spec.num_rounds,
                            "params": member.spec.params, "seconds": round(seconds, 2),
                            "customers_per_s": round(len(X) / seconds), "predict_seconds": round(predict_seconds, 2)})
            print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"customers": len(features), "seconds": round(sum(r["seconds"] for r in results), 2)}))
    if args.out is not None:
        np.savez(args.out, **saved)


if __name__ == "__main__":
    main()
