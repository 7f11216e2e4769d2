"""revopt.platform.changes without a database: what is measured, the one query, and the rows built from it."""

from __future__ import annotations

import datetime as dt

from revopt.platform.changes import change_rows, changes_query, table_measures

TODAY = dt.date(2024, 5, 2)
BEFORE = dt.date(2024, 4, 29)


def test_measures_are_rows_the_listed_score_means_present_and_the_counts():
    measures = table_measures("price_recommendations", ["run_date", "product_id", "recommended_price", "current_price"])
    assert [(kind, name) for kind, name, _ in measures] == [
        ("rows", "rows"), ("mean", "recommended_price"), ("count", "moved prices")]  # elasticity absent: skipped
    assert [m[:2] for m in table_measures("attribution", ["run_date", "revenue"])] == [("rows", "rows")]


def test_the_query_reads_the_run_date_and_the_tables_own_previous_one_in_one_statement():
    text = changes_query("customer_scores", table_measures("customer_scores", ["run_date", "clv"])).as_string(None)
    assert text.count("SELECT") == 2 and '"scores"."customer_scores"' in text
    assert 'avg("clv")::float8 AS m1' in text
    assert "run_date < %(run_date)s" in text and "GROUP BY run_date" in text


def test_rows_compare_today_with_the_previous_partition():
    measures = table_measures("price_recommendations", ["run_date", "recommended_price", "current_price"])
    rows = change_rows("price_recommendations", TODAY, measures, [
        {"run_date": BEFORE, "m0": 10, "m1": 20.0, "m2": 3},
        {"run_date": TODAY, "m0": 12, "m1": 21.5, "m2": 5},
    ])
    by_measure = {row["measure"]: row for row in rows}
    assert by_measure["rows"]["today"] == 12 and by_measure["rows"]["previous"] == 10 and by_measure["rows"]["change"] == 2
    assert by_measure["recommended_price"]["change"] == 1.5
    assert by_measure["moved prices"]["today"] == 5 and by_measure["moved prices"]["kind"] == "count"
    assert {row["previous_run_date"] for row in rows} == {BEFORE}


def test_a_first_run_has_no_previous_and_an_unpublished_table_has_zero_rows():
    measures = table_measures("customer_scores", ["run_date", "clv"])
    first = change_rows("customer_scores", TODAY, measures, [{"run_date": TODAY, "m0": 7, "m1": None}])
    assert first[0]["previous_run_date"] is None and first[0]["previous"] is None and first[0]["change"] is None
    assert first[1]["today"] is None  # every clv NULL: no mean
    stale = change_rows("customer_scores", TODAY, measures, [{"run_date": BEFORE, "m0": 7, "m1": 2.0}])
    assert stale[0]["today"] == 0 and stale[0]["previous"] == 7 and stale[0]["change"] == -7
    assert stale[1]["today"] is None and stale[1]["change"] is None
