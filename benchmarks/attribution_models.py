"""Benchmark: speed and memory of the attribution models (:mod:`ml.attribution.models`) on synthetic journeys.

Speed only (the quality against a store's true channel effects is measured elsewhere). Draws ``--journeys``
journeys (converting and not) with 1 + Poisson(``--mean-touches`` - 1) touches each over ``--channels``
channels (one of them ``direct``) and five campaigns per non-direct channel, conversion more likely the
more distinct channels a journey saw. Each model then runs in a forked child process: its wall time
(frames in, credits out, the preparation included), and its peak memory above the child's size at the
fork (``VmHWM`` minus ``VmRSS`` at start, from ``/proc/self/status``), then ``check_conservation`` on its
credits (timed apart). Prints a markdown table with the command and date::

    .venv/bin/python benchmarks/attribution_models.py                      # 1M journeys, ~3 touches
    .venv/bin/python benchmarks/attribution_models.py --journeys 100000 --markov-orders 1 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import shlex
import sys
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from ml.attribution.models import (
    check_conservation,
    first_touch,
    last_non_direct_touch,
    linear,
    markov_chain,
    position_based,
    shapley,
    time_decay,
)

RUN_TS = pd.Timestamp("2024-06-01", tz="UTC")


def synthetic_journeys(n_journeys: int, mean_touches: float, n_channels: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(journeys, outcomes) in the models' input shape."""
    rng = np.random.default_rng(seed)
    channels = np.array(["direct"] + [f"channel_{i}" for i in range(1, n_channels)], dtype=object)
    campaigns = np.array([None] + [f"channel_{i}_campaign_{k}" for i in range(1, n_channels) for k in range(5)], dtype=object)
    n_touches = 1 + rng.poisson(mean_touches - 1, n_journeys)
    journey = np.repeat(np.arange(n_journeys), n_touches)
    start = np.cumsum(n_touches) - n_touches
    position = np.arange(len(journey)) - start[journey]
    channel = rng.integers(0, n_channels, len(journey))
    campaign = np.where(channel == 0, 0, 1 + (channel - 1) * 5 + rng.integers(0, 5, len(journey)))
    distinct = pd.Series(channel).groupby(journey).nunique().to_numpy()
    converted = rng.random(n_journeys) < 1 - 0.85 ** distinct
    conversion_ts = RUN_TS - pd.to_timedelta(rng.integers(0, 28 * 86_400, n_journeys), unit="s")
    age = pd.to_timedelta(rng.exponential(5 * 86_400, len(journey)).astype(np.int64), unit="s")
    journeys = pd.DataFrame({
        "journey_id": journey.astype(np.int64), "position": position, "channel": channels[channel],
        "campaign": campaigns[campaign], "touch_ts": conversion_ts[journey] - age,
    })
    outcomes = pd.DataFrame({
        "journey_id": np.arange(n_journeys, dtype=np.int64), "converted": converted,
        "revenue": np.where(converted, rng.gamma(2.0, 40.0, n_journeys), 0.0),
        "conversion_ts": pd.Series(conversion_ts).where(converted),
    })
    return journeys, outcomes


def _memory_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def _measure(model: Callable[[], pd.DataFrame], outcomes: pd.DataFrame, queue: mp.Queue) -> None:
    baseline = _memory_kb("VmRSS:")
    began = time.perf_counter()
    credits = model()
    seconds = time.perf_counter() - began
    peak_mb = (_memory_kb("VmHWM:") - baseline) / 1024
    began = time.perf_counter()
    check_conservation(credits, outcomes)
    queue.put((seconds, peak_mb, time.perf_counter() - began, len(credits)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--journeys", type=int, default=1_000_000)
    parser.add_argument("--mean-touches", type=float, default=3.0)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--markov-orders", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    command = shlex.join([".venv/bin/python", "benchmarks/attribution_models.py",
                          *(argv if argv is not None else sys.argv[1:])])
    print(f"command: `{command}`  date: {dt.date.today()}")
    began = time.perf_counter()
    journeys, outcomes = synthetic_journeys(args.journeys, args.mean_touches, args.channels, args.seed)
    print(f"\n{len(outcomes):,} journeys ({int(outcomes['converted'].sum()):,} converted), {len(journeys):,} touches, "
          f"{args.channels} channels; generated in {time.perf_counter() - began:.1f} s\n")
    models: list[tuple[str, Callable[[], pd.DataFrame]]] = [
        ("first touch", lambda: first_touch(journeys, outcomes)),
        ("last non-direct touch", lambda: last_non_direct_touch(journeys, outcomes)),
        ("linear", lambda: linear(journeys, outcomes)),
        ("time decay (7 d)", lambda: time_decay(journeys, outcomes)),
        ("position based 40/20/40", lambda: position_based(journeys, outcomes)),
        *[(f"Markov order {k}", lambda k=k: markov_chain(journeys, outcomes, order=k)) for k in args.markov_orders],
        ("Shapley", lambda: shapley(journeys, outcomes)),
    ]
    print("| model | wall s | peak memory above the inputs, MB | credit rows | check_conservation s |")
    print("|---|---|---|---|---|")
    context = mp.get_context("fork")  # the child shares the inputs; its peak counts only what the model adds
    total = 0.0
    for name, model in models:
        queue = context.Queue()
        child = context.Process(target=_measure, args=(model, outcomes, queue))
        child.start()
        seconds, peak_mb, check_seconds, rows = queue.get()
        child.join()
        total += seconds
        print(f"| {name} | {seconds:.1f} | {peak_mb:,.0f} | {rows:,} | {check_seconds:.1f} |")
    print(f"\nall models: {total:.1f} s; total wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
