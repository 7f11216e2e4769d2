"""The data-quality gate's shares (``ExtractFiles.share``, the DAGs' ``validate_events`` tasks): every dataset is
validated by exactly one share, and the shares are about equal in work."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from revopt.platform.extract import SHARE_DATASET_CELLS, ExtractFiles


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("extract")
    sizes = {"big": (400_000, 5), "mid": (300_000, 4), "small": (100_000, 6), "tiny": (10, 3), "empty": (0, 2)}
    paths = {}
    for name, (rows, columns) in sizes.items():
        frame = pd.DataFrame({f"c{i}": np.zeros(rows, dtype=np.int8) for i in range(columns)})
        paths[name] = str(folder / f"{name}.parquet")
        frame.to_parquet(paths[name], index=False)
    return ExtractFiles(paths), {name: rows * columns + SHARE_DATASET_CELLS for name, (rows, columns) in sizes.items()}


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_every_dataset_is_in_exactly_one_share_in_the_extracts_order(files, n):
    extract, _ = files
    shares = [list(extract.share(k, n)) for k in range(n)]
    assert sorted(name for share in shares for name in share) == sorted(extract)
    for share in shares:
        assert share == [name for name in extract if name in share]
    assert list(extract.share(0, 1)) == list(extract)


def test_two_shares_split_the_work_about_evenly(files):
    extract, weight = files
    loads = [sum(weight[name] for name in extract.share(k, 2)) for k in range(2)]
    # weights (cells + 1M each): big 3.0M, mid 2.2M, small 1.6M, tiny and empty 1.0M; the heaviest first, each to
    # the lightest share so far: big | mid, small (3.8M) | tiny (to big: 4.0M) | empty (to mid and small: 4.8M)
    assert set(extract.share(0, 2)) == {"big", "tiny"} and set(extract.share(1, 2)) == {"mid", "small", "empty"}
    assert max(loads) / min(loads) < 1.25, loads


def test_a_share_outside_the_range_is_refused(files):
    extract, _ = files
    with pytest.raises(ValueError, match="share 2 of 2"):
        extract.share(2, 2)
