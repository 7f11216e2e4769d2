"""Benchmark: the drift check's Evidently report as ``DataDriftPreset`` and as the preset's metrics, side by side.

``ml.drift`` runs, per column group, the metrics ``DataDriftPreset`` is made of (the drifted-column count and one
``ValueDrift`` per column) without the preset, whose HTML table tests every column twice more and draws its plots
again. This runs both reports on the same frames (normal columns, the current frame shifted by 0.05 sd) and prints a
markdown table: seconds to run each report and to render its HTML, the HTML's size, and the ratio (docs/drift.md)::

    .venv/bin/python benchmarks/drift_report.py
    .venv/bin/python benchmarks/drift_report.py --rows 1500 100000 --columns 40
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd


def _run(metrics: list, current: pd.DataFrame, reference: pd.DataFrame, definition) -> tuple[float, float, int]:
    from evidently import Dataset, Report

    started = time.perf_counter()
    run = Report(metrics, include_tests=True).run(Dataset.from_pandas(current, data_definition=definition),
                                                  Dataset.from_pandas(reference, data_definition=definition))
    ran = time.perf_counter()
    html = run.get_html_str(as_iframe=False)
    return ran - started, time.perf_counter() - ran, len(html)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1500, 100_000])
    parser.add_argument("--columns", type=int, default=40)
    args = parser.parse_args()
    from evidently import DataDefinition
    from evidently.metrics import DriftedColumnsCount, ValueDrift
    from evidently.presets import DataDriftPreset

    columns = [f"f{i}" for i in range(args.columns)]
    definition = DataDefinition(numerical_columns=columns)
    print("| rows | columns | report | run s | HTML s | HTML MB | preset / metrics |")
    print("|---|---|---|---|---|---|---|")
    for rows in args.rows:
        rng = np.random.default_rng(0)
        reference = pd.DataFrame(rng.normal(size=(rows, len(columns))), columns=columns)
        current = pd.DataFrame(rng.normal(0.05, 1.0, size=(rows, len(columns))), columns=columns)
        _run([DataDriftPreset(columns=columns[:2])], current.iloc[:100], reference.iloc[:100], definition)  # warm-up
        preset = _run([DataDriftPreset(columns=columns)], current, reference, definition)
        metrics = _run([DriftedColumnsCount(columns=columns), *(ValueDrift(column=c) for c in columns)], current,
                       reference, definition)
        ratio = sum(preset[:2]) / sum(metrics[:2])
        for name, (run, html, size) in (("DataDriftPreset", preset), ("its metrics (ml.drift)", metrics)):
            print(f"| {rows:,} | {len(columns)} | {name} | {run:.2f} | {html:.2f} | {size / 1e6:.1f} | "
                  f"{f'{ratio:.2f}x' if name != 'DataDriftPreset' else ''} |")


if __name__ == "__main__":
    main()
