"""The file pieces of erasure (revopt.platform.erasure): which rows, items and lines name a person, and the
rewrites that remove them and nothing else."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from revopt.platform.erasure_files import (
    ErasureReport, Person, erase_files, person_rows, redact_text, rewrite_lines, rewrite_parquet, scrub_json,
)

DEVICE = "d0123456789abcdef"
PSEUDONYM = "6f1c0b7e9a2d4c3b8e5f7a1d2c3b4a59"
PERSON = Person(accounts=frozenset({549, 1530}), anonymous_ids=frozenset({DEVICE}), pseudonyms=frozenset({PSEUDONYM}),
                contact_hashes=frozenset({"e" * 64}), order_ids=frozenset({7001}))


def _write(path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def test_person_rows_match_every_kind_of_key_and_leave_counts_and_other_numbers_alone():
    table = pa.table({
        "customer_id": [549, 1530, 17, 5490, 17, 17, 17, 17],
        "customers": [549, 549, 549, 549, 549, 549, 549, 549],  # a count, not an id
        "monetary": [549.0] * 8,
        "identifier": ["x", "y", DEVICE, "1549", "z", "z", "z", "z"],
        "order_id": [1, 2, 3, 4, 7001, 5, 6, 8],
        "note": ["", "", "", "", "", f"seen on {DEVICE}", PSEUDONYM, ""],
    })
    assert person_rows(table, PERSON).tolist() == [True, True, True, False, True, True, True, False]


def test_pseudonymised_and_string_ids_and_unit_ids_of_customer_experiments_only():
    table = pa.table({"customer_key": [PSEUDONYM, "other", "549"], "unit_id": [549, 549, 3],
                      "experiment_id": ["price_test", "model_test", "model_test"]})
    rows = person_rows(table, PERSON, customer_experiments=frozenset({"model_test"}))
    assert rows.tolist() == [True, True, True]
    rows = person_rows(table.select(["unit_id", "experiment_id"]), PERSON,
                       customer_experiments=frozenset({"model_test"}))
    assert rows.tolist() == [False, True, False]  # a product experiment's unit 549 is a product


def test_rewrite_parquet_removes_only_the_persons_rows_and_keeps_the_schema(tmp_path):
    path = tmp_path / "orders.parquet"
    frame = pd.DataFrame({"order_id": [1, 2, 3], "customer_id": pd.array([549, 2, 3], dtype="int64"),
                          "value": [1.5, 2.5, 3.5]})
    _write(path, frame)
    assert rewrite_parquet(path, PERSON) == 1
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame.iloc[1:].reset_index(drop=True))
    assert b"pandas" in pq.read_schema(path).metadata  # the pandas metadata is kept
    assert rewrite_parquet(path, PERSON) == 0  # idempotent
    assert not list(tmp_path.glob(".*erasing"))


def test_journeys_of_the_person_are_removed_from_the_run_folder_s_other_files(tmp_path):
    run = tmp_path / "runs" / "2025-01-01"
    _write(run / "extract" / "conversion_paths.parquet",
           pd.DataFrame({"journey_id": [7001, 9001, 9002], "customer_id": [549, 549, 2]}))
    _write(run / "scores" / "order_credits.parquet",
           pd.DataFrame({"journey_id": [7001, 9001, 9002], "credit": [1.0, 1.0, 1.0]}))
    _write(tmp_path / "runs" / "2025-01-02" / "scores" / "order_credits.parquet",
           pd.DataFrame({"journey_id": [9001], "credit": [1.0]}))  # another run's journey 9001 is someone else's
    report = ErasureReport(accounts=[549], anonymous_ids=[])
    erase_files(tmp_path / "runs", PERSON, report, "runs")
    assert pd.read_parquet(run / "scores" / "order_credits.parquet")["journey_id"].tolist() == [9002]
    assert len(pd.read_parquet(tmp_path / "runs" / "2025-01-02" / "scores" / "order_credits.parquet")) == 1
    assert report.removed == {"runs: Parquet rows": 4, "runs: Parquet files rewritten": 2}


def test_scrub_json_drops_split_rows_records_and_validation_examples_but_not_other_numbers():
    example = {"columns": ["customer_id", "recency_days"], "data": [[549, 3], [2, 549], [1530, 1]]}
    served = {"dataframe_split": example}
    records = [{"customer_id": 549, "x": 1}, {"customer_id": 2, "x": 549}, {"device": DEVICE}]
    validation = {"results": [
        {"expectation_config": {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "customer_id"}},
         "result": {"element_count": 549, "partial_unexpected_list": [549, 2, 549],
                    "partial_unexpected_counts": [{"value": 549, "count": 2}, {"value": 2, "count": 1}]}},
        {"expectation_config": {"type": "expect_column_values_to_be_between", "kwargs": {"column": "recency_days"}},
         "result": {"partial_unexpected_list": [549]}},
    ]}
    scrubbed, removed = scrub_json({"example": example, "served": served, "records": records,
                                    "validation": validation, "owner": PSEUDONYM, "customer_id": 1530}, PERSON)
    assert scrubbed["example"]["data"] == [[2, 549]] and scrubbed["served"]["dataframe_split"]["data"] == [[2, 549]]
    assert scrubbed["records"] == [{"customer_id": 2, "x": 549}]
    ids, days = scrubbed["validation"]["results"]
    assert ids["result"] == {"element_count": 549, "partial_unexpected_list": [2],
                             "partial_unexpected_counts": [{"value": 2, "count": 1}]}
    assert days["result"] == {"partial_unexpected_list": [549]}  # a value of 549 days is nobody
    assert scrubbed["owner"] is None and scrubbed["customer_id"] is None
    assert removed == 2 + 2 + 2 + 3 + 2
    assert scrub_json(scrubbed, PERSON)[1] == 0


def test_a_validation_result_rewritten_takes_its_data_docs_page_with_it(tmp_path):
    folder = tmp_path / "runs" / "2025-01-01" / "validation"
    folder.mkdir(parents=True)
    result = {"results": [{"expectation_config": {"kwargs": {"column": "customer_id"}},
                           "result": {"partial_unexpected_list": [549]}}]}
    (folder / "customers.json").write_text(json.dumps(result))
    (folder / "customers.html").write_text("<td>549</td>")
    (folder / "orders.json").write_text(json.dumps({"results": []}))
    (folder / "orders.html").write_text("<td>549 rows</td>")
    report = ErasureReport(accounts=[549], anonymous_ids=[])
    erase_files(tmp_path / "runs", PERSON, report, "runs")
    assert sorted(p.name for p in folder.iterdir()) == ["customers.json", "orders.html", "orders.json"]
    assert report.removed == {"runs: JSON items": 1, "runs: JSON files rewritten": 1, "runs: files deleted": 1}


def test_logs_lose_the_lines_naming_the_person_only(tmp_path):
    log = tmp_path / "airflow-revopt_nightly.log"
    log.write_text("started\nscored customer 549\nspend 549.80 and 15490 rows\ndevice d0123456789abcdef seen\n"
                   "account 1530, merged\ndone\n")
    assert rewrite_lines(log, PERSON) == 3
    assert log.read_text() == "started\nspend 549.80 and 15490 rows\ndone\n"


def test_model_files_holding_a_pseudonym_are_left_and_reported_other_binaries_deleted(tmp_path):
    model = tmp_path / "mlflow" / "models" / "m-1" / "artifacts"
    model.mkdir(parents=True)
    (model / "MLmodel").write_text("flavors: {}\n")
    (model / "python_model.pkl").write_bytes(b"\x80\x04" + PSEUDONYM.encode())
    (model / "input_example.json").write_text(json.dumps({"columns": ["customer_id"], "data": [[549], [2]]}))
    plot = tmp_path / "mlflow" / "run1" / "artifacts" / "plot.svg"
    plot.parent.mkdir(parents=True)
    plot.write_text(f"<svg>{DEVICE}</svg>")
    report = ErasureReport(accounts=[549], anonymous_ids=[])
    erase_files(tmp_path / "mlflow", PERSON, report, "mlflow", keep_models=True)
    assert (model / "python_model.pkl").exists() and not plot.exists()
    assert json.loads((model / "input_example.json").read_text())["data"] == [[2]]
    assert list(report.left) == ["mlflow: model file models/m-1/artifacts/python_model.pkl"]
    assert report.removed["mlflow: files deleted"] == 1


def test_redact_text_replaces_ids_only_inside_example_lists():
    text = ("expect_column_values_to_be_unique(column='customer_id'): 2 unexpected of 549 rows (0.4%), "
            "e.g. [549, 17, 1530]; owner d0123456789abcdef")
    assert redact_text(text, PERSON) == ("expect_column_values_to_be_unique(column='customer_id'): 2 unexpected of "
                                         "549 rows (0.4%), e.g. [[erased], 17, [erased]]; owner [erased]")
