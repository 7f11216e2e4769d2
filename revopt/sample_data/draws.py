"""Random-draw helpers shared by the synthetic generators (:mod:`revopt.sample_data.synth`,
:mod:`revopt.sample_data.panel`). numpy only, so a generator that uses them imports nothing heavy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def named_streams(seed: int | tuple[int, ...], names: Sequence[str]) -> dict[str, np.random.Generator]:
    """Independent named generators, so adding a draw to one part leaves the others unchanged."""
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children)}


def choice(rng: np.random.Generator, shares: Sequence[float], size: int | tuple[int, ...]) -> np.ndarray:
    """Indices into ``shares`` drawn with probabilities proportional to them."""
    p = np.asarray(shares, dtype=np.float64)
    return rng.choice(len(p), size=size, p=p / p.sum())


def positions_in_group(counts: np.ndarray) -> np.ndarray:
    """0, 1, .., counts[0]-1, 0, 1, .., counts[1]-1, ... as one array."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - starts
