"""Which unit sees which variant: deterministic, salted hashing of (salt, unit).

**The hash.** :func:`unit_hash` maps a salt and a unit id to a number in [0, 1): SHA-256 of the UTF-8
string ``f"{salt}\\x1f{unit}"`` (salt, the ASCII unit separator, the unit id in decimal for integers or
as is for strings), its first 8 bytes read as a big-endian unsigned integer ``x``, and ``x / 2**64``
rounded down to a float64 (``(x >> 11) / 2**53``, so 1.0 never occurs). Nothing in it depends on the
process, the machine or the Python version (``hash()`` would: it is salted per process), so the same
unit gets the same variant on every run and anyone can recompute it (in SQL: ``sha256``). Salts carry
no control character and no ``:`` (:class:`~ml.experiments.definitions.Experiment` validates this) so
the string is unambiguous and the system salts below never equal an experiment's. Integers and their
decimal strings are the same unit (``5`` and ``"5"``); float ids are refused, not guessed at.

**Three independent hashes per unit**, each with its own salt:

1. the *global holdout* (salt ``"holdout:global"`` by default): units with hash < ``holdout_share``
   enter no experiment. They are *excluded* from the assignment table rather than recorded as a
   variant: the holdout is not an arm of any experiment (recording it per experiment would add an arm
   the sample-ratio check and the analysis would have to skip), and :func:`in_holdout` recomputes the
   group at any time for a platform-wide comparison. Raising the share later keeps everyone held out so
   far (the test is hash < share).
2. the *layer* (salt ``"layer:" + layer``) places the unit on the line [0, 1); each experiment of the
   layer owns disjoint intervals of that line, of total width its ``traffic``
   (:func:`layer_allocations`), so experiments of one layer never share a unit while experiments of
   different layers overlap independently;
3. the *experiment* (salt: the experiment's ``salt``, by default its id) picks the variant by the
   cumulative normalised weights (:func:`pick_variants`). It is independent of the layer position, so
   the split within an interval follows the weights whatever the interval.

**Layers are allocated from history.** Per unit type and layer, experiments are taken in a stable order
(start date, then id); each takes the lowest free part of the line, free meaning not held by an
earlier experiment that is still active on its start date. An experiment that has ended frees its
intervals for those that start later; its units may then enter a later experiment (sequential reuse,
never two at once). Hence :func:`assign` must be given every experiment of the store, ended ones
included; and an experiment created with a start date in the past, or a running one whose ``traffic``
is edited, can move the intervals of experiments that started after it. Units already assigned stay
where they are (below), and a unit already in an active experiment of a layer is never assigned to
another experiment of that layer, whatever the intervals say.

**Stability.** A unit keeps the variant and ``first_assigned`` date of its first assignment for the life
of the experiment: :func:`assign` copies previous rows and only assigns units that have none. Weights
edited while an experiment runs therefore change the split of *new* units only: an analysis over units
assigned before and after the edit mixes two splits (compare within assignment cohorts if the
metric drifts over time).

Written by hand: this is a few lines of hashlib and numpy, and the exact hashing scheme is part of
revopt's contract (the golden values in ``tests/unit/test_experiment_assignment.py``), not something
to inherit from a library that may change it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from itertools import groupby

import numpy as np
import pandas as pd

from ml.experiments.definitions import Experiment

logger = logging.getLogger(__name__)

#: the columns of :func:`assign` (and of ``scores.experiment_assignments`` besides its run date)
ASSIGNMENT_COLUMNS: tuple[str, ...] = ("experiment_id", "unit_id", "variant", "first_assigned")
HOLDOUT_SALT = "holdout:global"
LAYER_SALT_PREFIX = "layer:"
_SEPARATOR = "\x1f"
_TOLERANCE = 1e-9  # floating-point slack on sums of traffic shares

Interval = tuple[float, float]


class LayerOverflowError(ValueError):
    """Experiments active together in one layer ask for more than the whole layer."""


def unit_hash(salt: str, unit: int | str) -> float:
    """The unit's position in [0, 1) for ``salt`` (see the module docstring for the exact scheme)."""
    digest = hashlib.sha256(f"{salt}{_SEPARATOR}{_unit_key(unit)}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / 2**53


def unit_hashes(salt: str, units: Iterable[int | str] | np.ndarray | pd.Series) -> np.ndarray:
    """:func:`unit_hash` of each unit, as a float64 array. A list comprehension over hashlib: about 1.5 million
    integer ids a second on one core of a 2-core development VM (1M ids: 0.54-0.64 s; 1M short strings: 0.7-0.9 s)."""
    return _hash_keys(salt, _unit_keys(units))


def in_holdout(units: Iterable[int | str] | np.ndarray | pd.Series, share: float,
               salt: str = HOLDOUT_SALT) -> np.ndarray:
    """Whether each unit is in the global holdout of ``share`` (a boolean array)."""
    if not 0 <= share < 1:
        raise ValueError(f"holdout_share={share!r}: must be in [0, 1)")
    keys = _unit_keys(units)
    return _hash_keys(salt, keys) < share if share > 0 else np.zeros(len(keys), dtype=bool)


def pick_variants(experiment: Experiment, units: Iterable[int | str] | np.ndarray | pd.Series) -> np.ndarray:
    """The variant name the experiment's own hash gives each unit, by its cumulative weights (an object
    array). Layers and holdout are not considered here: see :func:`assign`."""
    return _pick(experiment, _unit_keys(units))


def layer_allocations(experiments: Sequence[Experiment]) -> dict[str, tuple[Interval, ...]]:
    """Each experiment's intervals of its layer's line [0, 1) (half-open ``[lo, hi)``, total width its
    ``traffic``; none for an experiment that is never active). Raises :class:`LayerOverflowError` naming
    the experiments when those active together in a layer need more than all of it."""
    _check_unique(experiments)
    allocations: dict[str, tuple[Interval, ...]] = {}
    ordered = sorted(experiments, key=lambda e: (e.unit, e.layer, e.start, e.experiment_id))
    for _, group in groupby(ordered, key=lambda e: (e.unit, e.layer)):
        placed: list[Experiment] = []
        for experiment in group:
            if not _ever_active(experiment):
                allocations[experiment.experiment_id] = ()
                continue
            holders = [e for e in placed if _active_on_or_after(e, experiment.start)]
            allocations[experiment.experiment_id] = _take(
                experiment, holders, [i for e in holders for i in allocations[e.experiment_id]])
            placed.append(experiment)
    return allocations


def assign(experiments: Sequence[Experiment], units: pd.DataFrame, run_date: dt.date,
           previous: pd.DataFrame | None = None, *, holdout_share: float = 0.0,
           holdout_salt: str = HOLDOUT_SALT) -> pd.DataFrame:
    """The assignment as of ``run_date``: :data:`ASSIGNMENT_COLUMNS`, one row per experiment and unit.

    - ``experiments``: every experiment of the store, ended and stopped ones included (layer intervals
      are allocated from history, :func:`layer_allocations`); ids and salts must be unique.
    - ``units``: ``unit_id`` (int or str) and ``first_seen`` (date or timestamp); with a ``unit`` column
      ("customer" / "product") when the experiments randomise both kinds. A unit is eligible on
      ``run_date`` once seen before it (``first_seen < run_date``: as every step of run D, only what was
      known before D).
    - ``previous``: earlier assignments (:data:`ASSIGNMENT_COLUMNS`), e.g. what earlier runs published;
      None for none. Rows with ``first_assigned`` after ``run_date`` are ignored (a re-run of an earlier
      date reproduces that date), rows of experiments not in ``experiments`` are dropped.

    Previous rows are kept as they are (variant and ``first_assigned``); each experiment active on
    ``run_date`` then assigns its eligible units that have no row yet, are outside the holdout, fall in
    its layer intervals and are not in another active experiment of the layer, with
    ``first_assigned = run_date``. The rows new on ``run_date`` are those with
    ``first_assigned == run_date``. Rows are sorted by experiment, first assigned date and unit id, so a
    re-run with the same inputs returns an identical frame.
    """
    if isinstance(run_date, dt.datetime):  # pandas Timestamps too
        run_date = run_date.date()
    _check_unique(experiments)
    for experiment in experiments:
        experiment.validate()
    in_holdout([], holdout_share)  # validates the share
    by_id = {e.experiment_id: e for e in experiments}
    units = _checked_units(units, experiments, run_date)
    kept = _kept_previous(previous, by_id, run_date, units)
    allocations = layer_allocations(experiments)

    new_rows = []
    active = sorted((e for e in experiments if e.is_active(run_date)), key=lambda e: (e.unit, e.layer))
    for (unit_type, layer), group in groupby(active, key=lambda e: (e.unit, e.layer)):
        group = list(group)
        pool = units[units["unit"] == unit_type] if "unit" in units.columns else units
        taken = pd.Index(kept.loc[kept["experiment_id"].isin([e.experiment_id for e in group]), "_key"])
        pool = pool[~pool["_key"].isin(taken)]
        keys = pool["_key"].to_numpy()
        keep = ~in_holdout(keys, holdout_share, holdout_salt) if holdout_share > 0 else np.ones(len(keys), bool)
        pool, keys = pool[keep], keys[keep]
        position = _hash_keys(LAYER_SALT_PREFIX + layer, keys)
        for experiment in sorted(group, key=lambda e: e.experiment_id):
            inside = np.zeros(len(keys), dtype=bool)
            for lo, hi in allocations[experiment.experiment_id]:
                inside |= (position >= lo) & (position < hi)
            chosen = pool[inside]
            new_rows.append(pd.DataFrame({
                "experiment_id": experiment.experiment_id, "unit_id": chosen["unit_id"].to_numpy(),
                "variant": _pick(experiment, keys[inside]), "first_assigned": run_date}))
            logger.info("experiment %s: %d new units on %s", experiment.experiment_id, int(inside.sum()), run_date)

    frame = pd.concat([kept[list(ASSIGNMENT_COLUMNS)], *new_rows], ignore_index=True)
    frame = frame.astype({"experiment_id": object, "variant": object, "first_assigned": object})
    frame["unit_id"] = _like(frame["unit_id"], units["unit_id"])
    return frame.sort_values(["experiment_id", "first_assigned", "unit_id"], kind="stable", ignore_index=True)


def _unit_key(unit: object) -> str:
    if isinstance(unit, (bool, np.bool_)):
        raise TypeError(f"unit id {unit!r}: must be an integer or a string")
    if isinstance(unit, (int, np.integer)):
        return str(int(unit))
    if isinstance(unit, str):
        return unit
    raise TypeError(f"unit id {unit!r} ({type(unit).__name__}): must be an integer or a string (an integer id "
                    f"read with NULLs becomes a float: drop the NULLs and cast)")


def _unit_keys(units: Iterable[int | str] | np.ndarray | pd.Series) -> np.ndarray:
    """The canonical string of each unit id (an object array)."""
    values = units.to_numpy() if isinstance(units, (pd.Series, pd.Index)) else np.asarray(
        units if isinstance(units, np.ndarray) else list(units))
    if values.dtype.kind in "iu":
        return values.astype(str).astype(object)
    if values.dtype.kind in "OUT" or len(values) == 0:
        return np.array([_unit_key(unit) for unit in values.tolist()], dtype=object)
    raise TypeError(f"unit ids of dtype {values.dtype}: must be integers or strings (an integer id read with "
                    f"NULLs becomes a float: drop the NULLs and cast)")


def _hash_keys(salt: str, keys: np.ndarray) -> np.ndarray:
    prefix = f"{salt}{_SEPARATOR}"
    sha256 = hashlib.sha256
    digests = b"".join([sha256((prefix + key).encode()).digest()[:8] for key in keys])
    return (np.frombuffer(digests, dtype=">u8") >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _pick(experiment: Experiment, keys: np.ndarray) -> np.ndarray:
    weights = np.array([v.weight for v in experiment.variants], dtype=float)
    edges = np.cumsum(weights) / weights.sum()
    edges[-1] = 1.0  # the hash is < 1: the last variant takes whatever rounding left
    names = np.array([v.name for v in experiment.variants], dtype=object)
    return names[np.searchsorted(edges, _hash_keys(experiment.salt, keys), side="right")]


def _check_unique(experiments: Sequence[Experiment]) -> None:
    for attribute in ("experiment_id", "salt"):
        values = [getattr(e, attribute) for e in experiments]
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"experiments share a {attribute}: {repeated} (each needs its own)")


def _ever_active(experiment: Experiment) -> bool:
    return experiment.is_active(experiment.start)


def _active_on_or_after(experiment: Experiment, day: dt.date) -> bool:
    last = experiment.last_active_day()
    return last is None or last >= day


def _take(experiment: Experiment, holders: list[Experiment], occupied: list[Interval]) -> tuple[Interval, ...]:
    """The lowest free parts of [0, 1) outside ``occupied``, of total width the experiment's traffic."""
    need, cursor, taken = experiment.traffic, 0.0, []
    for lo, hi in sorted(occupied) + [(1.0, 1.0)]:
        if lo > cursor and need > _TOLERANCE:
            width = min(lo - cursor, need)
            taken.append((cursor, cursor + width))
            need -= width
        cursor = max(cursor, hi)
    if need > _TOLERANCE:
        held = ", ".join(f"{e.experiment_id} ({e.traffic:g})" for e in holders)
        raise LayerOverflowError(
            f"experiment {experiment.experiment_id} asks for {experiment.traffic:g} of layer "
            f"{experiment.layer!r} ({experiment.unit}s) from {experiment.start}, but only "
            f"{experiment.traffic - need:.4g} is free: {held} hold the rest. Lower a traffic share, move one "
            f"to another layer, or start it after one ends.")
    if taken and 1.0 - taken[-1][1] < _TOLERANCE:
        taken[-1] = (taken[-1][0], 1.0)  # no sliver of the line left unowned by rounding
    return tuple(taken)


def _like(ids: pd.Series, units_ids: pd.Series) -> pd.Series:
    """``ids`` in the dtype of the units' ids (previous rows read back from a text column, say)."""
    if units_ids.dtype.kind not in "iuO" or ids.dtype == units_ids.dtype:
        return ids
    try:
        return ids.astype(units_ids.dtype) if units_ids.dtype.kind in "iu" else ids.map(_unit_key).astype(object)
    except (TypeError, ValueError) as error:
        raise ValueError(f"previous unit ids cannot be read as the units' {units_ids.dtype} ids: {error}") from error


def _checked_units(units: pd.DataFrame, experiments: Sequence[Experiment], run_date: dt.date) -> pd.DataFrame:
    """The eligible units (first seen before ``run_date``) with their canonical ``_key``."""
    missing = {"unit_id", "first_seen"} - set(units.columns)
    if missing:
        raise ValueError(f"units lack the columns {sorted(missing)}")
    kinds = sorted({e.unit for e in experiments})
    if "unit" not in units.columns and len(kinds) > 1:
        raise ValueError(f"the experiments randomise {kinds}: units need a 'unit' column saying which each row is")
    units = units[["unit_id", "first_seen", *(["unit"] if "unit" in units.columns else [])]].copy()
    units["_key"] = _unit_keys(units["unit_id"])
    if units.duplicated(["unit", "_key"] if "unit" in units.columns else ["_key"]).any():
        raise ValueError("units repeat a unit id")
    seen = pd.to_datetime(units["first_seen"])
    if getattr(seen.dt, "tz", None) is not None:
        seen = seen.dt.tz_convert("UTC").dt.tz_localize(None)
    if seen.isna().any():
        raise ValueError(f"{int(seen.isna().sum())} units have no first_seen date")
    return units[(seen < pd.Timestamp(run_date)).to_numpy()]


def _kept_previous(previous: pd.DataFrame | None, by_id: Mapping[str, Experiment], run_date: dt.date,
                   units: pd.DataFrame) -> pd.DataFrame:
    """Earlier assignment rows that stand on ``run_date``, with their canonical ``_key``."""
    if previous is None:
        previous = pd.DataFrame(columns=list(ASSIGNMENT_COLUMNS))
    missing = set(ASSIGNMENT_COLUMNS) - set(previous.columns)
    if missing:
        raise ValueError(f"previous lacks the columns {sorted(missing)}")
    kept = previous[list(ASSIGNMENT_COLUMNS)].copy()
    kept["first_assigned"] = pd.to_datetime(kept["first_assigned"]).dt.date
    kept = kept[kept["experiment_id"].isin(list(by_id)) & (kept["first_assigned"] <= run_date)]
    kept["_key"] = _unit_keys(kept["unit_id"])
    if kept.duplicated(["experiment_id", "_key"]).any():
        raise ValueError("previous assigns a unit twice in one experiment")
    for experiment_id, variants in kept.groupby("experiment_id")["variant"]:
        unknown = set(variants) - {v.name for v in by_id[experiment_id].variants}
        if unknown:  # kept: a unit never changes arm; serving must still know what the arm was
            logger.warning("experiment %s: previous rows in variants no longer defined: %s", experiment_id,
                           sorted(unknown))
    return kept
