"""Unit tests for the order-history importer (UCI Online Retail -> source contract frames)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from revopt.platform.contract import SHOP_DDL, SHOP_TABLES, ddl_columns
from revopt.sample_data.importer import (
    MERCHANDISE,
    UCI_PRODUCT_TYPES,
    ImportReport,
    default_uci_path,
    frames_from_uci,
    uci_online_retail,
)

UCI_FILE = default_uci_path()

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
ROWS = [
    # a normal winter invoice with two lines (GMT: wall clock = UTC)
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850,United Kingdom",
    # its partial cancellation: own invoice number, negative quantity
    "C536379,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-2,2010-12-01 09:41:00,2.55,17850,United Kingdom",
    # no CustomerID
    "536380,22633,HAND WARMER UNION JACK,1,2010-12-01 09:45:00,1.85,,United Kingdom",
    # a French invoice with a zero-price row
    "536381,22139,RETROSPOT TEA SET CERAMIC,4,2010-12-02 10:00:00,4.95,12583,France",
    "536381,22139,check,10,2010-12-02 10:00:00,0,12583,France",
    # a bulk price (more units, one line) against two lines at the list price in the same week
    "536382,22139,RETROSPOT TEA SET CERAMIC,100,2010-12-03 11:00:00,4.25,12583,France",
    "536383,22139,RETROSPOT TEA SET CERAMIC,2,2010-12-03 12:00:00,4.95,12583,France",
    # a negative quantity on an ordinary invoice (stock write-off)
    "536390,22633,damaged,-5,2010-12-03 13:00:00,1.85,12583,France",
    # an invoice that is neither a sale nor a cancellation
    "A563185,B,Adjust bad debt,1,2011-08-12 14:50:00,11062.06,12583,France",
    # a summer invoice (BST: UTC = wall clock - 1 h) repeating a product on two lines
    "560000,85123A,WHITE HANGING HEART T-LIGHT HOLDER,12,2011-07-15 10:00:00,2.95,17850,United Kingdom",
    "560000,85123A,WHITE HANGING HEART T-LIGHT HOLDER,1,2011-07-15 10:00:00,2.95,17850,United Kingdom",
    # a country without a known zone; same price as before: no new list price
    "560001,71053,WHITE METAL LANTERN,1,2011-07-16 12:00:00,3.39,12346,Unspecified",
    # an invoice reversed line for line by a credit note minutes later (lines in another order)
    "570000,22139,RETROSPOT TEA SET CERAMIC,3,2011-08-02 10:00:00,4.95,12583,France",
    "570000,71053,WHITE METAL LANTERN,1,2011-08-02 10:00:00,3.39,12583,France",
    "C570001,71053,WHITE METAL LANTERN,-1,2011-08-02 10:05:00,3.39,12583,France",
    "C570001,22139,RETROSPOT TEA SET CERAMIC,-3,2011-08-02 10:05:00,4.95,12583,France",
]


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("uci") / "retail.csv"
    path.write_text("\n".join([HEADER, *ROWS]) + "\n")
    return path


@pytest.fixture(scope="module")
def imported(small_file: Path) -> tuple[dict[str, pd.DataFrame], ImportReport]:
    return uci_online_retail(small_file)


@pytest.fixture(scope="module")
def frames(imported: tuple[dict[str, pd.DataFrame], ImportReport]) -> dict[str, pd.DataFrame]:
    return imported[0]


@pytest.fixture(scope="module")
def report(imported: tuple[dict[str, pd.DataFrame], ImportReport]) -> ImportReport:
    return imported[1]


def _product_id(frames: dict[str, pd.DataFrame], sku: str) -> int:
    products = frames["products"]
    return int(products.loc[products["sku"] == sku, "product_id"].item())


# --- shape -------------------------------------------------------------------------------------


def test_frames_have_exactly_the_contract_columns(frames: dict[str, pd.DataFrame]) -> None:
    ddl = ddl_columns(SHOP_DDL)
    assert list(frames) == list(SHOP_TABLES)
    for name, frame in frames.items():
        assert list(frame.columns) == ddl[name], name


def test_dtypes_follow_the_synthetic_store(frames: dict[str, pd.DataFrame]) -> None:
    expected = {
        "customers": {"customer_id": "int64", "signup_date": "datetime64[ns]", "country": "object",
                      "timezone": "object", "acquisition_channel": "object", "email_opt_in": "bool",
                      "do_not_profile": "bool"},
        "products": {"product_id": "int64", "sku": "object", "name": "object", "category": "object",
                     "cost": "float64", "current_price": "float64"},
        "product_prices": {"product_id": "int64", "valid_from": "datetime64[ns]", "list_price": "float64"},
        "orders": {"order_id": "int64", "customer_id": "int64", "order_ts": "datetime64[ns, UTC]",
                   "channel": "object", "status": "object"},
        "order_lines": {"order_id": "int64", "line_no": "int32", "product_id": "int64", "quantity": "int32",
                        "unit_price": "float64", "discount": "float64"},
        "marketing_spend": {"day": "datetime64[ns]", "channel": "object", "spend": "float64",
                            "impressions": "int64", "clicks": "int64", "campaign": "object"},
    }
    for name, columns in expected.items():
        assert {c: str(t) for c, t in frames[name].dtypes.items()} == columns, name
    assert frames["marketing_spend"].empty


# --- report ------------------------------------------------------------------------------------


def test_report_counts_every_dropped_row_once(report: ImportReport) -> None:
    assert report.rows_read == len(ROWS)
    assert report.dropped == {
        "no_customer_id": 1,
        "no_stock_code": 0,
        "unrecognised_invoice": 1,
        "unparseable_invoice_date": 0,
        "non_positive_price": 1,
        "non_positive_quantity_on_sale": 1,
        "non_negative_quantity_on_cancellation": 0,
        "credit_note_of_whole_invoice": 2,
    }
    assert report.rows_kept == len(ROWS) - 6
    assert report.changed["cancellation_quantities_made_positive"] == 3  # counted as read, before matching
    assert report.changed["repeated_product_lines_kept"] == 1
    assert report.changed["customers_with_unknown_timezone"] == 1
    assert report.changed["whole_invoice_reversals"] == 1
    assert report.changed["lines_below_list_price"] == 1
    assert report.rows == {"customers": 3, "products": 3, "product_prices": 4, "orders": 8,
                           "order_lines": 11, "marketing_spend": 0}
    assert report.products_by_category == {"candles_and_lights": 2, "kitchen_and_tableware": 1}
    assert report.first_order_ts == pd.Timestamp("2010-12-01 08:26", tz="UTC")
    assert "no_customer_id=1" in str(report)
    assert "candles_and_lights=2" in str(report)


# --- orders and lines --------------------------------------------------------------------------


def test_orders_are_numbered_by_invoice_and_cancellations_are_their_own_orders(frames: dict[str, pd.DataFrame]) -> None:
    orders = frames["orders"].set_index("order_id")
    assert orders.index.tolist() == [536365, 536379, 536381, 536382, 536383, 560000, 560001, 570000]  # C536379 -> 536379
    assert orders.loc[536379, "status"] == "cancelled"
    assert orders.loc[536365, "status"] == "completed"  # only partly returned: gross revenue stays
    assert orders.loc[570000, "status"] == "cancelled"  # reversed whole: cancelled, its credit note C570001 gone
    assert (orders.drop(index=[536379, 570000])["status"] == "completed").all()
    assert orders.loc[536379, "customer_id"] == 17850
    assert (orders["channel"] == "unknown").all()
    lines = frames["order_lines"]
    cancelled = lines[lines["order_id"] == 536379]
    assert cancelled["quantity"].tolist() == [2]  # units returned, positive


def test_order_time_is_uk_wall_clock_converted_to_utc(frames: dict[str, pd.DataFrame]) -> None:
    order_ts = frames["orders"].set_index("order_id")["order_ts"]
    assert order_ts[536365] == pd.Timestamp("2010-12-01 08:26", tz="UTC")  # GMT
    assert order_ts[560000] == pd.Timestamp("2011-07-15 09:00", tz="UTC")  # BST = UTC + 1 h
    assert str(order_ts.dt.tz) == "UTC"


def test_lines_keep_file_order_and_repeated_products(frames: dict[str, pd.DataFrame]) -> None:
    lines = frames["order_lines"]
    first = lines[lines["order_id"] == 536365]
    assert first["line_no"].tolist() == [1, 2]
    assert first["product_id"].tolist() == [_product_id(frames, "85123A"), _product_id(frames, "71053")]
    assert first["unit_price"].tolist() == [2.55, 3.39]
    repeated = lines[lines["order_id"] == 560000]
    assert repeated["line_no"].tolist() == [1, 2]
    assert repeated["quantity"].tolist() == [12, 1]
    # paid below that week's list price (the bulk line of 100 at 4.25 against 4.95): a discount
    bulk = lines[lines["order_id"] == 536382]
    assert bulk["discount"].tolist() == [round(1 - 4.25 / 4.95, 4)]
    assert (lines.drop(index=bulk.index)["discount"] == 0).all()
    assert not lines.duplicated(["order_id", "line_no"]).any()
    # the zero-price row is gone, its invoice keeps its priced line
    assert lines.loc[lines["order_id"] == 536381, "quantity"].tolist() == [4]


# --- products and prices -----------------------------------------------------------------------


def test_products_from_stock_codes(frames: dict[str, pd.DataFrame]) -> None:
    products = frames["products"].set_index("sku")
    assert sorted(products.index) == ["22139", "71053", "85123A"]
    assert products["product_id"].tolist() == [1, 2, 3]  # numbered in sorted code order
    assert products.loc["22139", "name"] == "RETROSPOT TEA SET CERAMIC"  # not the dropped row's "check"
    assert products["category"].to_dict() == {
        "22139": "kitchen_and_tableware", "71053": "candles_and_lights", "85123A": "candles_and_lights"}


@pytest.mark.parametrize(("description", "category"), [
    ("JUMBO BAG RED RETROSPOT", "bags"),
    ("PACK OF 72 RETROSPOT CAKE CASES", "baking_and_party"),
    ("ALARM CLOCK BAKELIKE RED", "home_decor"),
    ("HOT WATER BOTTLE KEEP CALM", "bath_and_body"),
    ("LUNCH BOX I LOVE LONDON", "storage"),
    ("CREAM CUPID HEARTS COAT HANGER", "home_decor"),  # the broad decor words, last
    # seasonal first: a Christmas candle, paper chain or bag is Christmas stock
    ("SET OF 6 T-LIGHTS SANTA", "christmas"),
    ("PAPER CHAIN KIT 50'S CHRISTMAS", "christmas"),
    ("JUMBO BAG 50'S CHRISTMAS", "christmas"),
    # the type before the container or material it comes in
    ("SET OF 3 CAKE TINS PANTRY DESIGN", "kitchen_and_tableware"),
    ("PLASTERS IN TIN SPACEBOY", "bath_and_body"),
    ("WHITE HANGING HEART T-LIGHT HOLDER", "candles_and_lights"),
    # whole words: DESIGN is no SIGN (home decor), DELIGHT no LIGHT (lighting)
    ("RECIPE BOX PANTRY YELLOW DESIGN", "kitchen_and_tableware"),
    ("APRON APPLE DELIGHT", "kitchen_and_tableware"),
])
def test_merchandise_gets_the_product_type_its_name_says(description: str, category: str) -> None:
    assert _categories_of([("85099B", description)]) == {"85099B": category}


def test_product_types_ignore_case_and_names_keep_theirs() -> None:
    frames, _ = frames_from_uci(_one_line_per_product([("85099B", "jumbo bag red retrospot"),
                                                       ("22910", "Paper Chain Kit Vintage Christmas")]))
    products = frames["products"].set_index("sku")
    assert products["category"].to_dict() == {"22910": "christmas", "85099B": "bags"}
    assert products.loc["85099B", "name"] == "jumbo bag red retrospot"


def test_merchandise_of_no_known_type_stays_merchandise() -> None:
    assert _categories_of([("21731", "SOMBRERO"), ("23166", "CLASSIC CHROME BICYCLE BELL"),
                           ("DCGS0070", "JUMBO BAG RED RETROSPOT"), ("84029E", None)]) == {
        "21731": MERCHANDISE, "23166": MERCHANDISE, "DCGS0070": "bags", "84029E": MERCHANDISE}  # unnamed: the code
    assert MERCHANDISE not in {category for _, category in UCI_PRODUCT_TYPES}


def test_non_merchandise_codes_keep_their_category_whatever_the_name_says() -> None:
    assert _categories_of([
        ("POST", "POSTAGE FOR CHRISTMAS CARDS"), ("BANK CHARGES", "Bank charges candle"), ("M", "manual jumbo bag"),
        ("GIFT_0001_20", "Gift voucher alarm clock"), ("PADS", "PADS TO MATCH ALL CUSHION"),
    ]) == {"BANK CHARGES": "fee", "GIFT_0001_20": "gift_voucher", "M": "adjustment", "PADS": "other",
           "POST": "postage"}


def test_price_history_is_the_weekly_modal_price_changes_only(frames: dict[str, pd.DataFrame]) -> None:
    history = frames["product_prices"]
    heart = history[history["product_id"] == _product_id(frames, "85123A")]
    assert heart["valid_from"].tolist() == [pd.Timestamp("2010-11-29"), pd.Timestamp("2011-07-11")]  # Mondays
    assert heart["list_price"].tolist() == [2.55, 2.95]
    lantern = history[history["product_id"] == _product_id(frames, "71053")]
    assert lantern["list_price"].tolist() == [3.39]  # the same price in July: no new row
    tea_set = history[history["product_id"] == _product_id(frames, "22139")]
    assert tea_set["list_price"].tolist() == [4.95]  # two lines at 4.95 outvote one bulk line of 100 at 4.25


def test_current_price_and_cost(frames: dict[str, pd.DataFrame]) -> None:
    products = frames["products"].set_index("sku")
    assert products.loc["85123A", "current_price"] == 2.95
    assert products.loc["85123A", "cost"] == pytest.approx(round(0.6 * 2.95, 2))  # median of 2.55, 2.95, 2.95
    assert products.loc["22139", "cost"] == pytest.approx(round(0.6 * 4.95, 2))
    cheaper, _ = frames_from_uci(_raw(), cost_share=0.5)
    assert cheaper["products"].set_index("sku").loc["85123A", "cost"] == pytest.approx(1.48)


# --- customers ---------------------------------------------------------------------------------


def test_customers(frames: dict[str, pd.DataFrame]) -> None:
    customers = frames["customers"].set_index("customer_id")
    assert sorted(customers.index) == [12346, 12583, 17850]
    assert customers.loc[17850, "signup_date"] == pd.Timestamp("2010-12-01")
    assert customers.loc[17850, "timezone"] == "Europe/London"
    assert customers.loc[12583, "timezone"] == "Europe/Paris"
    assert customers.loc[12346, "timezone"] == "UTC"  # "Unspecified"
    assert customers.loc[12346, "country"] == "Unspecified"
    assert (customers["acquisition_channel"] == "unknown").all()
    assert not customers["email_opt_in"].any()
    assert set(frames["orders"]["customer_id"]) == set(customers.index)


def test_timezone_by_country_overrides_the_map() -> None:
    frames, report = frames_from_uci(_raw(), timezone_by_country={"Unspecified": "Europe/London"})
    assert report.changed["customers_with_unknown_timezone"] == 0
    assert frames["customers"].set_index("customer_id").loc[12346, "timezone"] == "Europe/London"


# --- inputs ------------------------------------------------------------------------------------


def test_input_is_not_modified_and_the_original_uci_date_format_parses() -> None:
    raw = _raw().head(2).assign(InvoiceDate=["12/1/2010 8:26", "12/1/2010 8:26"])
    before = raw.copy()
    frames, _ = frames_from_uci(raw)
    pd.testing.assert_frame_equal(raw, before)
    assert frames["orders"]["order_ts"].tolist() == [pd.Timestamp("2010-12-01 08:26", tz="UTC")]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="cost_share"):
        frames_from_uci(_raw(), cost_share=0.0)
    with pytest.raises(ValueError, match="missing columns"):
        frames_from_uci(_raw().drop(columns="UnitPrice"))


def _one_line_per_product(products: list[tuple[str, str | None]]) -> pd.DataFrame:
    """Raw UCI rows: one sale of each (StockCode, Description)."""
    return pd.DataFrame({
        "InvoiceNo": [str(580000 + i) for i in range(len(products))],
        "StockCode": [code for code, _ in products],
        "Description": [description for _, description in products],
        "Quantity": 1.0,
        "InvoiceDate": "2011-06-01 10:00:00",
        "UnitPrice": 2.5,
        "CustomerID": 12583.0,
        "Country": "France",
    })


def _categories_of(products: list[tuple[str, str | None]]) -> dict[str, str]:
    frames, _ = frames_from_uci(_one_line_per_product(products))
    return frames["products"].set_index("sku")["category"].to_dict()


def _raw() -> pd.DataFrame:
    from io import StringIO

    from revopt.sample_data.importer import read_uci_online_retail

    return read_uci_online_retail(StringIO("\n".join([HEADER, *ROWS]) + "\n"))


# --- the real file -----------------------------------------------------------------------------


@pytest.mark.skipif(not UCI_FILE.exists(), reason="UCI Online Retail file not present")
def test_first_rows_of_the_real_file() -> None:
    frames, report = uci_online_retail(UCI_FILE, nrows=20_000)
    assert report.rows_read == 20_000
    keys = {"customers": ["customer_id"], "products": ["product_id"], "product_prices": ["product_id", "valid_from"],
            "orders": ["order_id"], "order_lines": ["order_id", "line_no"]}
    for name, key in keys.items():
        assert not frames[name].duplicated(key).any(), name
        assert len(frames[name]) > 0, name
    lines, orders, products = frames["order_lines"], frames["orders"], frames["products"]
    assert set(lines["order_id"]) == set(orders["order_id"])  # every order has lines
    assert set(lines["product_id"]) <= set(products["product_id"])
    assert set(orders["customer_id"]) == set(frames["customers"]["customer_id"])
    assert set(frames["product_prices"]["product_id"]) == set(products["product_id"])
    assert (lines["quantity"] > 0).all() and (lines["unit_price"] > 0).all()
    assert (products["cost"] > 0).all() and (products["current_price"] > 0).all()
    assert set(orders["status"]) == {"completed", "cancelled"}
    assert report.dropped["no_customer_id"] > 0
    assert not any(frame.isna().any().any() for frame in frames.values())
    assert np.all(orders["order_ts"].dt.year.isin([2010, 2011]))


@pytest.mark.skipif(not UCI_FILE.exists(), reason="UCI Online Retail file not present")
def test_the_real_files_merchandise_spreads_over_its_product_types() -> None:
    frames, report = uci_online_retail(UCI_FILE)
    lines, orders, products = frames["order_lines"], frames["orders"], frames["products"]
    completed = lines[lines["order_id"].isin(orders.loc[orders["status"] == "completed", "order_id"])]
    category = products.set_index("product_id")["category"]
    revenue = (completed["quantity"] * completed["unit_price"]).groupby(completed["product_id"].map(category)).sum()
    merchandise = revenue[revenue.index.isin({MERCHANDISE} | {name for _, name in UCI_PRODUCT_TYPES})]
    share = merchandise / merchandise.sum()
    assert len(share) >= 11  # every type sells
    assert share[MERCHANDISE] < 0.25  # the fallback: 4 % when measured
    assert share.max() < 0.35  # the largest type: 22 % when measured
    assert {"postage", "fee", "adjustment"} <= set(report.products_by_category)
