"""``revopt load``: a file is checked against the contract's columns and types before anything is written, and every
problem is named by table, column, expected type and the first bad rows (no stack is started for a bad file)."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from revopt import cli
from revopt.platform import contract, loading
from revopt.platform.loading import contract_tables, read_file, table_spec, validate_for_load

ORDERS = """order_id,customer_id,order_ts,channel,status
1,5,2024-01-01T10:00:00Z,seo,completed
2,6,2024-01-03 10:00:00+01:00,email,completed
3,7,2024-01-02,direct,cancelled
"""


def _csv(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])


def test_every_contract_table_is_described_from_the_ddl():
    tables = contract_tables()
    assert set(tables) == {*contract.SHOP_TABLES, *contract.SHOP_OPTIONAL_TABLES, contract.EVENTS_TABLE}
    for name, columns in {**contract.SOURCE_COLUMNS, **contract.OPTIONAL_SOURCE_COLUMNS}.items():
        assert set(columns) <= {column.name for column in tables[name].columns}, name
    orders = tables["orders"]
    assert orders.primary_key == ("order_id",) and orders.column("order_id").required
    assert tables["order_lines"].primary_key == ("order_id", "line_no")
    assert not tables["customers"].column("do_not_profile").required  # NOT NULL DEFAULT false
    assert not tables["promotions"].column("depth").required  # nullable
    assert tables["promotions"].optional and not orders.optional
    assert tables["events"].store == "clickhouse" and not tables["events"].column("anonymous_id").required


def test_a_valid_file_comes_back_typed_in_the_contracts_order():
    frame, problems = validate_for_load(table_spec("shop.orders"), _csv(ORDERS)[["status", "order_id", "customer_id",
                                                                                 "order_ts", "channel"]])
    assert problems == []
    assert list(frame.columns) == ["order_id", "customer_id", "order_ts", "channel", "status"]
    assert str(frame["order_id"].dtype) == "Int64"
    assert frame["order_ts"].tolist() == [pd.Timestamp("2024-01-01 10:00", tz="UTC"),
                                          pd.Timestamp("2024-01-03 09:00", tz="UTC"),
                                          pd.Timestamp("2024-01-02", tz="UTC")]


def test_a_value_of_the_wrong_type_is_named_with_its_column_type_and_rows():
    bad = ORDERS.replace("2,6,", "2,six,").replace("2024-01-02,", "yesterday,")
    _, problems = validate_for_load(table_spec("orders"), _csv(bad))
    assert problems == [
        "shop.orders.customer_id: expected bigint (whole number); 1 value(s) are not; first row 2: 'six'",
        "shop.orders.order_ts: expected timestamptz (ISO 8601 date and time, e.g. 2024-05-01T13:45:00Z; without a zone: "
        "UTC); 1 value(s) are not; first row 3: 'yesterday'",
    ]


@pytest.mark.parametrize("column, value, expected", [
    ("quantity", "1.5", "expected integer"),
    ("quantity", "3000000000", "expected integer"),  # beyond PostgreSQL's integer
    ("discount", "12", "expected numeric(5, 4)"),  # beyond numeric(5, 4)
    ("unit_price", "abc", "expected numeric(12, 2)"),
])
def test_numbers_outside_their_column_type_are_refused(column, value, expected):
    lines = pd.DataFrame({"order_id": ["1"], "line_no": ["1"], "product_id": ["3"], "quantity": ["2"],
                          "unit_price": ["9.99"], "discount": ["0.1"]})
    lines[column] = value
    _, problems = validate_for_load(table_spec("order_lines"), lines)
    assert len(problems) == 1 and problems[0].startswith(f"shop.order_lines.{column}: {expected}") and repr(value) in problems[0]


def test_missing_unknown_empty_and_repeated_are_each_reported():
    customers = _csv("customer_id,signup_date,country,timezone,email_opt_in,favourite_colour\n"
                     "1,2024-01-01,GB,Europe/London,yes,blue\n"
                     "1,2024-01-02,,Europe/Paris,maybe,red\n")
    _, problems = validate_for_load(table_spec("customers"), customers)
    assert problems == [
        "shop.customers: column(s) not in the contract: favourite_colour (its columns: customer_id, signup_date, "
        "country, timezone, acquisition_channel, email_opt_in, do_not_profile; --drop-unknown leaves them out)",
        "shop.customers: required column(s) missing: acquisition_channel",
        "shop.customers.country: 1 empty value(s) in a NOT NULL column, first on row(s) 2",
        "shop.customers.email_opt_in: expected boolean (true or false; also t/f, yes/no, 1/0); 1 value(s) are not; "
        "first row 2: 'maybe'",
        "shop.customers: 2 row(s) share a primary key (customer_id): customer_id=1 on rows 1, 2",
    ]
    _, problems = validate_for_load(table_spec("customers"), customers, drop_unknown=True)
    assert not any("favourite_colour" in problem for problem in problems)


def test_optional_columns_take_their_default_and_a_date_with_a_time_is_refused():
    spend = _csv("day,channel,spend,impressions,clicks\n2024-01-01,seo,1.50,10,1\n")
    frame, problems = validate_for_load(table_spec("marketing_spend"), spend)
    assert problems == [] and "campaign" not in frame.columns  # the database fills its default ''
    customers = _csv("customer_id,signup_date,country,timezone,acquisition_channel,email_opt_in,do_not_profile\n"
                     "1,2024-01-01T03:00,GB,Europe/London,seo,t,\n")
    frame, problems = validate_for_load(table_spec("customers"), customers)
    assert problems == ["shop.customers.signup_date: expected date (YYYY-MM-DD); 1 value(s) are not; first row 1: "
                        "'2024-01-01T03:00'"]
    assert frame["do_not_profile"].tolist() == [False]


def test_an_empty_campaign_is_copied_without_the_column_so_the_default_applies():
    spend = _csv("day,channel,spend,impressions,clicks,campaign\n2024-01-01,seo,1,10,1,\n2024-01-01,seo,2,10,1,c1\n")
    frame, problems = validate_for_load(table_spec("marketing_spend"), spend)
    assert problems == []
    parts = loading._parts_by_defaults(table_spec("marketing_spend"), frame)
    assert sorted("campaign" in part.columns for part in parts) == [False, True]
    assert sum(len(part) for part in parts) == 2


def test_events_are_checked_against_clickhouse_types():
    events = pd.DataFrame({"event_time": ["2024-01-01T00:00:00.123Z"], "session_id": ["1"], "customer_id": ["-1"],
                           "event_type": ["page_view"], "product_id": ["0"], "channel": ["seo"], "device": ["mobile"],
                           "is_machine": ["0"]})
    _, problems = validate_for_load(table_spec("events"), events)
    assert problems == ["events.customer_id: expected UInt64 (whole number); 1 value(s) are not; first row 1: '-1'"]


def test_parquet_keeps_its_types_and_csv_is_read_as_text(tmp_path):
    typed = pd.DataFrame({"product_id": [1, 2], "valid_from": pd.to_datetime(["2024-01-01", "2024-02-01"]),
                          "list_price": [9.99, 10.5]})
    typed.to_parquet(tmp_path / "prices.parquet")
    frame, problems = validate_for_load(table_spec("product_prices"), read_file(tmp_path / "prices.parquet"))
    assert problems == [] and [str(day) for day in frame["valid_from"]] == ["2024-01-01", "2024-02-01"]
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a CSV"):
        read_file(tmp_path / "x.json")


def test_a_bad_file_writes_nothing_and_starts_no_stack(tmp_path, monkeypatch, capsys):
    from revopt.platform import stack

    def _must_not_run(*args, **kwargs):
        raise AssertionError("nothing may start or be written for a bad file")

    monkeypatch.setenv("REVOPT_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(stack, "start_stack", _must_not_run)
    monkeypatch.setattr(loading, "load_table", _must_not_run)
    path = tmp_path / "orders.csv"
    path.write_text(ORDERS.replace("seo", ""))
    assert cli.main(["load", "orders", str(path)]) == 1
    err = capsys.readouterr().err
    assert "nothing was written" in err and "shop.orders.channel: 1 empty value(s) in a NOT NULL column" in err
    assert not (tmp_path / "state").exists()
    assert cli.main(["load", "no_such_table", str(path)]) == 1
    assert "no contract table 'no_such_table'" in capsys.readouterr().err


def test_describe_prints_the_tables_and_a_tables_columns(capsys):
    assert cli.main(["load", "--describe"]) == 0
    listing = capsys.readouterr().out
    assert "order_lines" in listing and "customer_contacts" in listing and "events" in listing
    assert cli.main(["load", "--describe", "promotions"]) == 0
    columns = capsys.readouterr().out
    assert "numeric(5, 4)" in columns and "optional" in columns and "start_date (key)" in columns
