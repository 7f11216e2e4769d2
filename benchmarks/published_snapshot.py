"""Snapshot every published table of a seeded demo run, or compare two snapshots row for row.

The check behind "behaviour unchanged" when the code is reshaped: run the demo (seed, training and
nightly DAGs through Airflow) on a fresh state folder, dump each published table for the run date,
sorted by its key, with the columns that name a run rather than a result left out (MLflow run ids,
paths under the state folder, timestamps); then compare two snapshots table by table.

    .venv/bin/python benchmarks/published_snapshot.py take  snapshots/before [--customers 5000 --seed 42]
    .venv/bin/python benchmarks/published_snapshot.py compare snapshots/before snapshots/after
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

#: Published table -> its key within a run date.
TABLES = {
    "customer_scores": ["customer_id"],
    "price_recommendations": ["product_id"],
    "send_time_recommendations": ["customer_id", "day_type"],
    "budget_allocations": ["channel"],
    "feature_drift": ["column_name"],
    "drift_checks": [],
    "model_promotions": ["model_name", "candidate_version"],
    "data_quality": ["dataset"],
}
#: Columns that identify a run, not its result.
RUN_COLUMNS = {"mlflow_run_id", "result_path", "docs_path", "validated_at"}


def take(out: Path, customers: int, days: int, seed: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="revopt-snapshot-") as home:
        env = {**os.environ, "REVOPT_HOME": home}
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("AIRFLOW_HOME", None)
        revopt = str(Path(sys.executable).parent / "revopt")
        subprocess.run([revopt, "demo", "--customers", str(customers), "--days", str(days), "--seed", str(seed)],
                       env=env, check=True)
        dump = subprocess.run([sys.executable, __file__, "_dump", str(out)], env=env, check=True)
        subprocess.run([revopt, "stack", "stop"], env=env, check=False)
    print(f"snapshot in {out}" if dump.returncode == 0 else "dump failed")


def _dump(out: Path) -> None:
    from psycopg import sql

    from revopt.platform.config import load_settings
    from revopt.platform.postgres import read_frame
    from revopt.platform.stack import connect_postgres

    digests = {}
    with connect_postgres(load_settings()) as conn:
        for table, key in TABLES.items():
            query = sql.SQL("SELECT * FROM {}").format(sql.Identifier("scores", table)).as_string(conn)
            frame = read_frame(conn, query)
            frame = frame.drop(columns=[c for c in frame.columns if c in RUN_COLUMNS])
            frame = frame.sort_values(["run_date", *key]).reset_index(drop=True) if len(frame) else frame
            frame = frame.astype({c: str for c in frame.columns if frame[c].dtype == object})
            frame.to_parquet(out / f"{table}.parquet", index=False)
            digests[table] = {"rows": len(frame),
                              "sha256": hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()}
    (out / "digests.json").write_text(json.dumps(digests, indent=1))
    print(json.dumps(digests, indent=1))


def compare(before: Path, after: Path) -> int:
    different = 0
    for table in TABLES:
        a, b = pd.read_parquet(before / f"{table}.parquet"), pd.read_parquet(after / f"{table}.parquet")
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
            print(f"{table}: {len(a):,} rows, equal")
        except AssertionError as exc:
            different += 1
            print(f"{table}: DIFFERENT ({len(a):,} vs {len(b):,} rows)\n{str(exc)[:2000]}")
    return 1 if different else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    taken = commands.add_parser("take")
    taken.add_argument("out", type=Path)
    taken.add_argument("--customers", type=int, default=5000)
    taken.add_argument("--days", type=int, default=365)
    taken.add_argument("--seed", type=int, default=42)
    compared = commands.add_parser("compare")
    compared.add_argument("before", type=Path)
    compared.add_argument("after", type=Path)
    dumped = commands.add_parser("_dump")
    dumped.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "take":
        take(args.out, args.customers, args.days, args.seed)
        return 0
    if args.command == "_dump":
        _dump(args.out)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    raise SystemExit(main())
