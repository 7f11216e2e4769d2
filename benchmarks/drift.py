"""Run time of the nightly drift check (ml.drift.check_drift) at 100k and 1M customers.

Numbers and their reading: docs/drift.md. Run from the repository root:

    env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=/tmp/revopt-pycache PYTHONPATH=. .venv/bin/python benchmarks/drift.py
"""
import datetime as dt, logging, time
import numpy as np, pandas as pd
from benchmarks.customer_models import synthetic_frames
from features.customer import FEATURE_COLUMNS, customer_features
from ml.drift import DriftConfig, check_drift
from revopt.sample_data.synth import generate_store

logging.basicConfig(level=logging.WARNING)
SCORES = ["purchase_propensity", "churn_risk", "clv"]
store = generate_store(110_000, 400, dt.date(2023, 1, 1), seed=1)

def features_at(day):
    frames = synthetic_frames(store, day)
    frame = customer_features(frames["customers"], frames["orders"], frames["customer_daily_events"],
                              pd.Timestamp(day, tz="UTC"))
    rng = np.random.default_rng(day.toordinal())  # stand-in scores: only their cost matters here
    return frame.assign(purchase_propensity=rng.beta(1, 20, len(frame)),
                        churn_risk=rng.beta(2, 5, len(frame)), clv=rng.gamma(2.0, 60.0, len(frame)))

reference, current = features_at(dt.date(2023, 11, 1)), features_at(dt.date(2024, 2, 1))
started = time.perf_counter()
import evidently.presets  # noqa: F401  -- a process pays this once; reported on its own
print(f"import evidently: {time.perf_counter() - started:.1f} s")

def timed(label, ref, cur, config, scores, repeats):
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = check_drift(ref, cur, FEATURE_COLUMNS, config, score_columns=scores)
        seconds.append(time.perf_counter() - started)
    print(f"{label:<38} {len(ref):>9,} / {len(cur):>9,} rows -> {result.n_reference:>7,} / {result.n_current:>7,}"
          f"  {len(FEATURE_COLUMNS) + len(scores)} cols  best {min(seconds):5.1f} s  median {np.median(seconds):5.1f} s"
          f"  ({repeats} runs)  drift_share {result.drift_share:.3f}")

timed("100k, 16 features, no sampling", reference, current, DriftConfig(max_rows=None), [], 3)
timed("100k, 16 features + 3 scores", reference, current, DriftConfig(max_rows=None), SCORES, 3)
timed("max_rows=20_000, 16 + 3", reference, current, DriftConfig(max_rows=20_000), SCORES, 3)
big_ref, big_cur = (pd.concat([frame] * 10, ignore_index=True) for frame in (reference, current))
timed("1M, max_rows=100_000 (default), 16 + 3", big_ref, big_cur, DriftConfig(), SCORES, 3)
timed("1M, no sampling, 16 + 3", big_ref, big_cur, DriftConfig(max_rows=None), SCORES, 1)
