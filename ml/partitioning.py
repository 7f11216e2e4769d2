"""Customer-hash partitions: which slice of the customers a mapped nightly task works on (issue 22 item 5).

Partition ``k`` of ``n`` holds the customers whose ``hash64(customer_id) mod n == k``, where ``hash64`` is
ClickHouse's ``intHash64`` (MurmurHash3's 64-bit finaliser of the id xor a constant), written here in numpy so the
same slice can be taken in Python and in SQL (``intHash64(customer_id) % n = k`` in ClickHouse or chDB).
Properties the tests hold it to (tests/unit/test_partitioning.py): stable across processes and runs (no seed, no
Python ``hash``), the partitions of one ``n`` are disjoint and cover every customer, and they are balanced (a
multiplicative hash spreads consecutive ids evenly).

A :class:`Partition` is what one mapped task receives through XCom: its slice and what was decided once for the
whole population before the slices were scored (each customer family's pinned ``@champion`` version, or the
reason it is not scored tonight), so every slice scores with the same versions even if an alias moves during the
run, and nothing population-wide (the families' "can this store train it" shortfall, which reads every order) is
computed per slice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: the largest number of partitions a run may ask for (ml.params.RunParams.partitions)
MAX_PARTITIONS = 64

_SEED = np.uint64(0x4CF2D2BAAE6DA887)
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT = np.uint64(33)


def hash64(ids: Any) -> np.ndarray:
    """ClickHouse's ``intHash64`` of each id (int64 ids taken as their unsigned 64-bit pattern), as uint64."""
    x = np.asarray(ids, dtype="int64").astype("uint64") ^ _SEED
    with np.errstate(over="ignore"):  # multiplication modulo 2**64 is the point
        x ^= x >> _SHIFT
        x *= _M1
        x ^= x >> _SHIFT
        x *= _M2
        x ^= x >> _SHIFT
    return x


def partition_of(ids: Any, n: int) -> np.ndarray:
    """Each id's partition in ``0 .. n-1`` (int64)."""
    _check(0, n)
    return (hash64(ids) % np.uint64(n)).astype("int64")


def in_partition(ids: Any, k: int, n: int) -> np.ndarray:
    """Boolean mask: which ids belong to partition ``k`` of ``n`` (all of them when ``n`` is 1)."""
    _check(k, n)
    if n == 1:
        return np.ones(len(np.asarray(ids)), dtype=bool)
    return partition_of(ids, n) == k


def sql_predicate(column: str, k: int, n: int) -> str:
    """The same slice as a ClickHouse condition on ``column`` (e.g. to aggregate one partition in the store)."""
    _check(k, n)
    return f"intHash64(toInt64({column})) % {n} = {k}"


def _check(k: int, n: int) -> None:
    if not (isinstance(n, (int, np.integer)) and 1 <= n <= MAX_PARTITIONS):
        raise ValueError(f"partitions must be an integer in 1..{MAX_PARTITIONS}, got {n!r}")
    if not (isinstance(k, (int, np.integer)) and 0 <= k < n):
        raise ValueError(f"partition index must be in 0..{n - 1}, got {k!r}")


@dataclass(frozen=True)
class Partition:
    """One mapped task's slice (``index`` of ``count``) and the run's decisions it must share with the others:
    ``versions`` (family -> pinned ``@champion`` version) and ``without`` (family -> why it is not scored)."""

    index: int
    count: int
    versions: dict[str, str] = field(default_factory=dict)
    without: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.index, self.count)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Partition:
        return cls(int(value["index"]), int(value["count"]), dict(value.get("versions") or {}),
                   dict(value.get("without") or {}))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def name(self) -> str:
        """The slice's file name in the run folder, e.g. ``customer_scores.part-003-of-004``."""
        return self.file_name("customer_scores")

    def file_name(self, output: str) -> str:
        """``output``'s slice file name in the run folder, e.g. ``recommendations.part-003-of-004``."""
        return f"{output}.part-{self.index:03d}-of-{self.count:03d}"

    def holds(self, ids: Any) -> np.ndarray:
        """Boolean mask: which customer ids are in this partition."""
        return in_partition(ids, self.index, self.count)

    def rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame``'s rows of this partition (by ``customer_id``), in their order."""
        return frame.loc[self.holds(frame["customer_id"].to_numpy())].reset_index(drop=True)

    def read(self, path: str) -> pd.DataFrame:
        """The rows of this partition (by ``customer_id``) of a parquet file, in their order, read a batch of rows at
        a time: the whole file is never in memory (a night's clickstream at a million customers is GBs)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.count == 1:
            return pd.read_parquet(path)
        file = pq.ParquetFile(path)
        kept = [batch.filter(pa.array(self.holds(batch.column("customer_id").to_numpy(zero_copy_only=False))))
                for batch in file.iter_batches(batch_size=1 << 20)]
        return pa.Table.from_batches(kept, schema=file.schema_arrow).to_pandas()

    def score(self, resources, run_date: dt.date, features: pd.DataFrame, families, params) -> dict[str, Any]:
        """Each family's pinned ``@champion`` on this slice's customer ``features`` (:meth:`rows`):
        ``{family: Scored}``, or ``{family: {"skipped": reason}}`` for a family decided out for the whole run
        (ml.registry.score_family's result, without its per-run questions)."""
        from ml.registry import Scored, load_champion

        frames = {"customer_features": features}
        results: dict[str, Any] = {}
        for family in families:
            if family.name not in self.versions:
                results[family.name] = {"skipped": self.without.get(family.name, "not pinned for this run")}
                continue
            champion = load_champion(resources, family.model_name, self.versions[family.name])
            inputs = family.nightly_input(frames, run_date, params)
            output = champion.model.predict(inputs, params=family.predict_params(run_date, params) or None)
            results[family.name] = Scored(champion, inputs, output)
        return results


def pin_champions(resources, run_date: dt.date, frames: dict[str, pd.DataFrame], params, families,
                  count: int) -> list[dict[str, Any]]:
    """The ``count`` partitions' :class:`Partition` dicts (for ``.expand()``), with each family's ``@champion``
    version resolved once, or the reason it is not scored tonight: the store cannot train it (the family's
    shortfall on the whole store: ``frames`` holds every customer and order) or it has no champion."""
    from ml.registry import CHAMPION, current_version, no_champion_reason, skipped

    versions: dict[str, str] = {}
    without: dict[str, str] = {}
    for family in families:
        if reason := family.shortfall(frames, run_date, params):
            without[family.name] = skipped(family.name, run_date, reason)["skipped"]
            continue
        resources.use_tracking()
        version = current_version(family.model_name, CHAMPION)
        if version is None:
            without[family.name] = skipped(family.name, run_date, no_champion_reason(family.model_name))["skipped"]
        else:
            versions[family.name] = version
    return [Partition(k, count, versions, without).as_dict() for k in range(count)]
