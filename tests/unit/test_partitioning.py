"""Customer-hash partitions (ml.partitioning) and the gather / stage steps of the mapped scoring (ml.partitioned)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ml.families.clv import value_tier
from ml.partitioning import MAX_PARTITIONS, Partition, hash64, in_partition, partition_of, sql_predicate

RUN_DATE = dt.date(2024, 10, 27)

#: ClickHouse's own answers (chDB 'SELECT intHash64(toInt64(id)), intHash64(toInt64(id)) % 7'): the slices
#: taken in Python are the ones ``sql_predicate`` takes in the store
CLICKHOUSE = {-5: (13263830642547698461, 3), 0: (4761183170873013810, 2), 1: (10577349846663553072, 0),
              12345: (16722121143744093920, 3), 4611686018427387911: (2981157101179915390, 5),
              -9223372036854775808: (7378616448805205431, 2)}


def test_the_hash_is_clickhouses_inthash64_so_python_and_sql_take_the_same_slices():
    ids = list(CLICKHOUSE)
    assert hash64(ids).tolist() == [h for h, _ in CLICKHOUSE.values()]
    assert partition_of(ids, 7).tolist() == [k for _, k in CLICKHOUSE.values()]
    assert sql_predicate("customer_id", 3, 7) == "intHash64(toInt64(customer_id)) % 7 = 3"


def test_a_customers_partition_is_stable_whatever_else_is_in_the_batch():
    ids = np.arange(1, 20_001, dtype="int64")
    alone = np.array([partition_of([i], 4)[0] for i in ids[:200]])
    assert (partition_of(ids, 4)[:200] == alone).all()
    assert (partition_of(ids[::-1], 4)[::-1] == partition_of(ids, 4)).all()


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16, MAX_PARTITIONS])
def test_the_partitions_of_one_count_are_disjoint_cover_every_customer_and_are_balanced(n):
    ids = np.concatenate([np.arange(1, 100_001), np.arange(-50, 0), [2**62, -(2**63)]]).astype("int64")
    masks = np.stack([in_partition(ids, k, n) for k in range(n)])
    assert (masks.sum(axis=0) == 1).all(), "every customer in exactly one partition"
    shares = masks.sum(axis=1) / len(ids)
    assert np.abs(shares - 1 / n).max() < 0.25 / n, shares  # within 25 % of an even share (100k ids)


def test_a_partition_keeps_its_rows_in_their_order():
    frame = pd.DataFrame({"customer_id": np.arange(100, 0, -1), "x": np.arange(100)})
    parts = [Partition(k, 3).rows(frame) for k in range(3)]
    assert sorted(pd.concat(parts)["customer_id"]) == sorted(frame["customer_id"])
    for part in parts:
        assert part["customer_id"].is_monotonic_decreasing
    assert Partition(0, 1).rows(frame).equals(frame)


def test_a_partition_reads_its_rows_of_a_file_a_batch_at_a_time_as_a_whole_read_would(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    views = pd.DataFrame({"customer_id": rng.integers(1, 5_000, 30_000), "day": pd.Timestamp("2024-01-01"),
                          "product_id": rng.integers(1, 50, 30_000), "views": rng.integers(1, 4, 30_000)})
    path = tmp_path / "product_views.parquet"
    views.to_parquet(path, index=False, row_group_size=4_096)
    batches = []
    original = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches",
                        lambda self, **kw: (batches.append(b) or b for b in original(self, **{**kw, "batch_size": 5_000})))
    for n in (1, 3):
        parts = [Partition(k, n).read(str(path)) for k in range(n)]
        for k, part in enumerate(parts):
            pd.testing.assert_frame_equal(part, Partition(k, n).rows(pd.read_parquet(path)))
        assert sum(len(part) for part in parts) == len(views)
    assert len(batches) == 3 * 6  # 30,000 rows in batches of 5,000, for each of the 3 partitions


@pytest.mark.parametrize("k, n", [(0, 0), (0, MAX_PARTITIONS + 1), (4, 4), (-1, 2), (0, 2.0)])
def test_partition_bounds_are_refused(k, n):
    with pytest.raises(ValueError):
        Partition(k, n)


def test_a_partition_travels_through_xcom_as_a_plain_dict():
    partition = Partition(2, 4, {"purchase_propensity": "3"}, {"clv": "no champion"})
    assert Partition.from_dict(partition.as_dict()) == partition
    assert partition.name == "customer_scores.part-002-of-004"


class _Outputs:
    """What the gather and stage steps use of Resources: the run folder's outputs."""

    def __init__(self, root):
        self.root = root

    def write_output(self, run_date, name, table):
        path = self.root / f"{name}.parquet"
        table.to_parquet(path, index=False)
        return path


def _store(tmp_path, n: int, drop: int | None = None, twice: int | None = None):
    """Tonight's features (customer ids in feature order) and ``n`` score slices as ml.pipeline writes them:
    CLV with many ties, so the tiers depend on the feature order."""
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(1, 1001)).astype("int64")
    features = tmp_path / "features.parquet"
    pd.DataFrame({"customer_id": ids, "recency_days": 1.0}).to_parquet(features, index=False)
    scores = pd.DataFrame({"run_date": RUN_DATE, "customer_id": ids, "purchase_propensity": rng.random(len(ids)),
                           "churn_risk": np.nan, "clv": rng.integers(0, 5, len(ids)).astype(float),
                           "value_tier": None, "top_factors": "{}"})
    slices = []
    for k in range(n):
        if k == drop:
            continue
        part = Partition(k, n).rows(scores)
        path = tmp_path / f"slice{k}.parquet"
        part.to_parquet(path, index=False)
        slices.append({"path": str(path), "versions": {"purchase_propensity": "1", "clv": "2"}, "without": {}})
        if k == twice:
            slices.append(slices[-1])
    return str(features), scores, slices


@pytest.mark.parametrize("n", [1, 4])
def test_gathered_tiers_and_staged_slices_are_what_one_unpartitioned_run_publishes(tmp_path, n):
    from ml.partitioned import gather_scores
    from ml.publishing import staged_rows

    features, scores, slices = _store(tmp_path, n)
    gathered = gather_scores(_Outputs(tmp_path), RUN_DATE, slices, features)
    assert gathered["rows"] == len(scores) and gathered["slices"] == [s["path"] for s in slices]
    published = pd.concat([staged_rows(RUN_DATE, s, gathered) for s in slices], ignore_index=True)
    expected = scores.assign(value_tier=value_tier(scores["clv"].to_numpy()))  # ranked in feature order
    pd.testing.assert_frame_equal(published.sort_values("customer_id").reset_index(drop=True),
                                  expected.sort_values("customer_id").reset_index(drop=True))
    drift_input = pd.read_parquet(gathered["path"])  # in feature order, as the drift check aligns it
    assert drift_input["customer_id"].tolist() == scores["customer_id"].tolist()


def test_without_a_clv_champion_the_tier_stays_null(tmp_path):
    from ml.partitioned import gather_scores
    from ml.publishing import staged_rows

    features, scores, slices = _store(tmp_path, 2)
    slices = [{**s, "versions": {"purchase_propensity": "1"}} for s in slices]
    gathered = gather_scores(_Outputs(tmp_path), RUN_DATE, slices, features)
    assert all(staged_rows(RUN_DATE, s, gathered)["value_tier"].isna().all() for s in slices)


@pytest.mark.parametrize("broken", ["a slice lost", "a slice twice", "versions differ"])
def test_gather_refuses_slices_that_are_not_every_customer_once_with_one_set_of_versions(tmp_path, broken):
    from ml.partitioned import gather_scores

    features, _, slices = _store(tmp_path, 4, drop=2 if broken == "a slice lost" else None,
                                 twice=1 if broken == "a slice twice" else None)
    if broken == "versions differ":
        slices[3] = {**slices[3], "versions": {"purchase_propensity": "9", "clv": "2"}}
    with pytest.raises(ValueError, match="exactly one slice" if "slice" in broken else "different champion"):
        gather_scores(_Outputs(tmp_path), RUN_DATE, slices, features)
