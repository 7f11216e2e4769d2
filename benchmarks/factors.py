"""Rows per second of building the published top_factors JSON (3 scores x 3 factors) from contributions.

"before": the {feature, contribution} JSON as published until issue 21 (the old
``ml.families.classifier.top_factors``, copied below so the ratio stays measurable); "after":
``ml.families.explain.top_factors`` (value, unit, converted contribution, link contribution, sentence). Both
end in ``ml.pipeline._combine_json``. Only the JSON building is timed: computing the TreeSHAP values
themselves is the same either way (docs/scale.md). Run from the repository root:

    PYTHONPATH=. .venv/bin/python benchmarks/factors.py [rows]
"""
import sys
import time

import numpy as np
import pandas as pd

from features.customer import FEATURE_COLUMNS
from ml.families.explain import score_terms, top_factors
from ml.families.binary import BTYD_FEATURES
from ml.pipeline import _combine_json

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
REPEATS = 3
rng = np.random.default_rng(0)
columns = {"purchase_propensity": [*FEATURE_COLUMNS, *BTYD_FEATURES], "churn_risk": [*FEATURE_COLUMNS, *BTYD_FEATURES],
           "clv": list(FEATURE_COLUMNS)}
all_columns = columns["purchase_propensity"]
values = pd.DataFrame({c: rng.poisson(20, ROWS).astype("float64") if i % 3 else rng.gamma(2.0, 50.0, ROWS)
                       for i, c in enumerate(all_columns)})
contributions = {score: pd.DataFrame(rng.normal(0, 0.3, (ROWS, len(names))), columns=names)
                 for score, names in columns.items()}
scores = {"purchase_propensity": rng.beta(1, 8, ROWS), "churn_risk": rng.beta(2, 5, ROWS), "clv": rng.gamma(2.0, 60.0, ROWS)}


def legacy_top_factors(contributions: pd.DataFrame, k: int = 3) -> pd.Series:
    """The pre-issue-21 builder, verbatim."""
    values = contributions.to_numpy(dtype="float64")
    k = min(k, values.shape[1])
    order = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]
    names = np.asarray(contributions.columns)[order]
    picked = np.take_along_axis(values, order, axis=1)
    objects = [
        np.char.add(
            np.char.add(np.char.add('{"feature":"', names[:, i].astype(str)), '","contribution":'),
            np.char.add(np.char.mod("%.4g", picked[:, i]), "}"),
        )
        for i in range(k)
    ]
    joined = objects[0]
    for piece in objects[1:]:
        joined = np.char.add(np.char.add(joined, ","), piece)
    return pd.Series(np.char.add(np.char.add("[", joined), "]"), index=contributions.index, name="top_factors")


def before() -> np.ndarray:
    return _combine_json({score: legacy_top_factors(c) for score, c in contributions.items()})


def after() -> np.ndarray:
    return _combine_json({score: top_factors(c, values, scores[score], score_terms(score, 90))
                          for score, c in contributions.items()})


def best_seconds(build) -> tuple[float, np.ndarray]:
    seconds, out = [], None
    for _ in range(REPEATS):
        started = time.perf_counter()
        out = build()
        seconds.append(time.perf_counter() - started)
    return min(seconds), out


results = {}
for name, build in (("before", before), ("after", after)):
    seconds, out = best_seconds(build)
    results[name] = seconds
    size = np.mean([len(row) for row in out[:2000]])
    print(f"{name:<7} {ROWS:,} rows x 3 scores: best of {REPEATS} {seconds:6.2f} s  {ROWS / seconds:>9,.0f} rows/s  "
          f"{size:,.0f} bytes of JSON per row")
print(f"after / before time: {results['after'] / results['before']:.2f}x")
