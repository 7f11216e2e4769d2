"""Import a real order history into the source contract (built-in mapping: UCI Online Retail).

:func:`uci_online_retail` reads the UCI "Online Retail" file (InvoiceNo, StockCode, Description,
Quantity, InvoiceDate, UnitPrice, CustomerID, Country; see ``/work/shared/data/README.md``) and
returns the ``shop`` frames with exactly the contract's columns and the dtypes of
:mod:`revopt.sample_data.synth` (ids ``int64``, ``line_no`` / ``quantity`` ``int32``, text ``object``, money
``float64`` rounded to cents, dates ``datetime64[ns]`` at midnight, ``order_ts``
``datetime64[ns, UTC]``), plus an :class:`ImportReport` counting every row dropped and every value
changed.  :func:`load_into_contract` replaces the sources with them.

Rules
-----
Rows are dropped by the first of these rules they break, in this order (the report counts each):

1. ``no_customer_id``: CustomerID is empty (the store cannot attribute the sale to anyone).
2. ``no_stock_code``: StockCode is empty.
3. ``unrecognised_invoice``: InvoiceNo is not digits with an optional ``C`` prefix (UCI's three
   ``A...`` "Adjust bad debt" rows).
4. ``unparseable_invoice_date``: InvoiceDate is not a timestamp.
5. ``non_positive_price``: UnitPrice rounds to 0.00 or less at cents (free samples, ``0.001``
   pads, bad-debt adjustments).
6. ``non_positive_quantity_on_sale``: quantity <= 0 on an ordinary invoice (UCI's stock
   write-offs: "damaged", "check", "?" at price 0 -- rule 5 catches those first).
7. ``non_negative_quantity_on_cancellation``: quantity >= 0 on a ``C`` invoice.
8. ``credit_note_of_whole_invoice``: the rows of a ``C`` invoice that reverses a whole earlier
   sale (the sale is cancelled instead; see Cancellations).

Orders.  One order per InvoiceNo; ``order_id`` is the invoice's number without its prefix
(``536365`` -> 536365, ``C536379`` -> 536379): stable across re-imports and subsets of the file,
and the mapping is the number itself.  (UCI numbers cancellations in the same sequence as sales;
an input where a ``C`` invoice shares its number with a sale is rejected.)  ``order_ts`` is the
invoice's earliest InvoiceDate -- the retailer's UK wall clock, localised to Europe/London (an
ambiguous autumn hour is read as summer time, a skipped spring hour shifted forward) and converted
to UTC.  ``channel`` is ``'unknown'`` (no marketing data).

Cancellations.  A ``C`` invoice is a credit note with its own number; the file does not say which
sale it reverses.  When it reverses a whole earlier invoice of the same customer exactly (the same
multiset of StockCode, quantity and price; or, for a note of manual adjustments only, StockCode
``M``, the same value within 24 hours), that sale becomes ``'cancelled'`` and the credit note is
dropped (counted as ``whole_invoice_reversals``: UCI's two largest invoices, 80,995 and 74,215
units of one item, were reversed within minutes this way, and a mis-keyed 38,970.00 invoice by a
manual note).  Any other credit note (returns are
mostly partial) becomes its own order with status ``'cancelled'`` at its own time, its lines
carrying the returned quantities as positive numbers (the contract's quantities are units, an
order's value is never negative); the sale it partly reverses stays ``'completed'``: revenue read
from completed orders is gross of partial returns.

Order lines.  One line per kept row, numbered 1.. in file order within the invoice; repeated
(InvoiceNo, StockCode) pairs stay separate lines (counted).  ``unit_price`` is UnitPrice (the price
paid) rounded to cents; ``discount`` is the fraction below that week's list price (see Prices;
bulk-tier and negotiated prices) rounded to 4 places, 0 at or above the list price.

Products.  One per StockCode, upper-cased (UCI writes some codes in both cases, e.g. ``85123a`` /
``85123A``; counted); ``product_id`` = 1.. in sorted code order, ``sku`` = the code, ``name`` = the
code's most frequent Description among kept rows (ties: alphabetically first; none: the code).
``category`` first from the code: five leading digits or ``DCGS`` -> merchandise; ``GIFT_`` ->
``gift_voucher``; ``POST``, ``DOT``, ``C2`` -> ``postage``; ``AMAZONFEE``, ``BANK CHARGES``,
``CRUK`` -> ``fee``; ``M``, ``D``, ``S``, ``B`` (manual, discount, samples, bad debt) ->
``adjustment``; anything else -> ``other`` (whatever the name says).  Merchandise then gets the
product type its ``name`` says -- the file has no categories, but a name states the type next to
its design ("JUMBO BAG RED RETROSPOT", "SET OF 3 CAKE TINS PANTRY DESIGN"): the first of the
word patterns of :data:`UCI_PRODUCT_TYPES` the upper-cased name contains, seasonal first
("PAPER CHAIN KIT 50'S CHRISTMAS" -> ``christmas``), then ``candles_and_lights``, ``home_decor``,
``bags``, ``baking_and_party``, ``kitchen_and_tableware``, ``toys_and_kids``,
``stationery_and_wrap``, ``bath_and_body``, ``jewellery_and_accessories``, ``garden``,
``storage``; a name matching none stays ``merchandise`` (on the whole file: 12 types plus the
fallback, which holds 4 % of completed merchandise revenue, the largest type 22 %; the report
counts products per category).

Prices.  A price observation is a line of a completed order (a product sold only in cancellations
uses its cancelled lines).  ``product_prices``: per product and week (Monday to Sunday, UTC), the
modal observed price counted by lines, not units, so bulk-tier prices do not outvote the list
price (ties: the higher price); a row only where it differs from the product's previous row,
``valid_from`` = that week's Monday.  ``current_price`` = the latest list price.  ``cost`` =
``cost_share`` x the median observed price, rounded to cents and at least 0.01 -- an assumption,
the file has no costs.

Customers.  ``customer_id`` = CustomerID; ``signup_date`` = UTC date of the first kept invoice;
``country`` = the Country of the latest invoice (a few customers appear under two; counted);
``timezone`` from :data:`UCI_TIMEZONES` (or ``timezone_by_country`` laid over it), a country
spanning zones getting its most populous one, an unknown country ``'UTC'`` (counted);
``acquisition_channel`` ``'unknown'``, ``email_opt_in`` False.  ``marketing_spend`` is empty, and
so are the ClickHouse events (the store has no clickstream).

Why hand-written: the mapping is the product's knowledge of this file; the work is pandas
group-bys.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from revopt.platform import contract
from revopt.platform.config import REPO_ROOT, Settings
from revopt.sample_data.seed import load_sources

logger = logging.getLogger(__name__)

UCI_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country")

#: Where the UCI file lives on the project's machines: ``../shared/data`` beside the repository, or
#: under ``/work/shared`` when the repository is cloned elsewhere (CI's clean clones).
UCI_LOCATIONS = (
    REPO_ROOT.parent / "shared" / "data" / "online_retail.csv.gz",
    Path("/work/shared/data/online_retail.csv.gz"),
)


def default_uci_path() -> Path:
    """The first of :data:`UCI_LOCATIONS` that exists (else the first, for the error message)."""
    return next((path for path in UCI_LOCATIONS if path.exists()), UCI_LOCATIONS[0])


#: The retailer's wall clock: every InvoiceDate is in this zone.
UCI_STORE_TIMEZONE = "Europe/London"

#: UCI country name -> IANA zone (a country spanning several: its most populous zone).
#: "Unspecified" and "European Community" are deliberately absent: they get 'UTC'.
UCI_TIMEZONES: dict[str, str] = {
    "United Kingdom": "Europe/London",
    "EIRE": "Europe/Dublin",
    "Channel Islands": "Europe/Jersey",
    "Germany": "Europe/Berlin",
    "France": "Europe/Paris",
    "Spain": "Europe/Madrid",
    "Netherlands": "Europe/Amsterdam",
    "Belgium": "Europe/Brussels",
    "Switzerland": "Europe/Zurich",
    "Portugal": "Europe/Lisbon",
    "Italy": "Europe/Rome",
    "Austria": "Europe/Vienna",
    "Denmark": "Europe/Copenhagen",
    "Norway": "Europe/Oslo",
    "Sweden": "Europe/Stockholm",
    "Finland": "Europe/Helsinki",
    "Iceland": "Atlantic/Reykjavik",
    "Poland": "Europe/Warsaw",
    "Czech Republic": "Europe/Prague",
    "Lithuania": "Europe/Vilnius",
    "Greece": "Europe/Athens",
    "Malta": "Europe/Malta",
    "Cyprus": "Asia/Nicosia",
    "Israel": "Asia/Jerusalem",
    "Lebanon": "Asia/Beirut",
    "Bahrain": "Asia/Bahrain",
    "Saudi Arabia": "Asia/Riyadh",
    "United Arab Emirates": "Asia/Dubai",
    "RSA": "Africa/Johannesburg",
    "Japan": "Asia/Tokyo",
    "Hong Kong": "Asia/Hong_Kong",
    "Singapore": "Asia/Singapore",
    "Australia": "Australia/Sydney",
    "USA": "America/New_York",
    "Canada": "America/Toronto",
    "Brazil": "America/Sao_Paulo",
}

#: The category of a product that is merchandise by its code and of no recognised product type.
MERCHANDISE = "merchandise"

#: (pattern on the upper-cased StockCode, category); the first match wins, no match: 'other'.
#: Merchandise is then given its product type from :data:`UCI_PRODUCT_TYPES`.
_CATEGORY_RULES: tuple[tuple[str, str], ...] = (
    (r"^\d{5}", MERCHANDISE),
    (r"^DCGS", MERCHANDISE),
    (r"^GIFT_", "gift_voucher"),
    (r"^(?:POST|DOT|C2)$", "postage"),
    (r"^(?:AMAZONFEE|BANK CHARGES|CRUK)$", "fee"),
    (r"^[MDSB]$", "adjustment"),
)
_OTHER_CATEGORY = "other"


def _any_word(*words: str) -> str:
    """A pattern matching any of ``words`` (regular expressions) as a whole word."""
    return r"\b(?:" + "|".join(words) + r")\b"


#: Merchandise product types: (pattern on the upper-cased product name, category); the first match
#: wins, no match: :data:`MERCHANDISE`.  A name says the product type and, around it, a design
#: ("JUMBO BAG RED RETROSPOT", "LUNCH BOX DOLLY GIRL"), so the patterns name types, never designs,
#: and the order settles a name that names two types: seasonal first (a Christmas candle, bag or
#: wrap is bought and stocked as Christmas); then types a name states unmistakably (a candle or
#: light holder, a sign, frame, clock or doormat, a bag) before those it may name as contents or
#: material ("T-LIGHT HOLDER" is lighting, "CAKE TINS" baking ware, "PLASTERS IN TIN" first aid:
#: the container types -- box, tin, jar -- come late), and the broadest decor words last.
#: A type may have several rules at different places in the order (home decor has two).
UCI_PRODUCT_TYPES: tuple[tuple[str, str], ...] = (
    (_any_word("CHRISTMAS", "XMAS", "ADVENT", "BAUBLES?", "SANTAS?", "REINDEER", "SNOWFLAKES?", "SNOWM[AE]N",
               "NATIVITY", "STOCKINGS?", "TINSEL", "SLEIGH"), "christmas"),
    (_any_word("CANDLES?", "CANDLEHOLDERS?", "CANDLE ?STICKS?", "T-?LIGHTS?", "TEA ?LIGHTS?", "TEALIGHTS?",
               "LANTERNS?", "LIGHTS?", "LAMPS?", "LED", "TORCH", "OIL BURNER", "INCENSE", "CHANDELIER"),
     "candles_and_lights"),
    (_any_word("SIGNS?", "DOORMAT", "WALL ART", "FRAMES?", "CLOCK", "MIRROR", "CUSHION", "BLOCK WORD",
               "BLOCK LETTERS", "KNOBS?", "DOORSTOP", "MEMO ?BOARD", "BLACK ?BOARD", "CHALKBOARD"), "home_decor"),
    (_any_word("BAGS?", "SHOPPER", "TOTE", "BACKPACK", "RUCKSACK"), "bags"),
    (_any_word("(?:CAKE|BAKING|MINI|PETIT FOUR) CASES", "BAKING", "CUPCAKES?", "BUNTING", "PARTY", "DOILIES",
               "BALLOONS?", "NAPKINS", "(?:COOKIE|BISCUIT) CUTTERS?", "ICING", "STRAWS", "BANNER", "GARLAND",
               "PAPER CHAIN", "CRACKERS?"), "baking_and_party"),
    (_any_word("MUGS?", "CUPS?", "TEACUPS?", "SAUCERS?", "PLATES?", "BOWLS?", "TEAPOT", "TEA SET", "JUGS?",
               "SPOONS?", "CUTLERY", "CAKE ?STAND", "CAKESTAND", "CAKE TINS?", "BREAD BIN", "KITCHEN", "APRON",
               "OVEN GLOVES?", "TEA TOWELS?", "TRAY", "COASTERS?", "BEAKERS?", "TUMBLERS?",
               "(?:TEA|WINE|SHOT|DRINKING) GLASS(?:ES)?", "DISH", "PANTRY", "RECIPE", "CHOPPING BOARD",
               "EGG CUPS?", "TEA COSY", "PLACEMATS?", "MEASURING", "WASHING UP", "NAPKIN RINGS?", "JAM MAKING",
               "TEA STRAINER", "TONGS", "FRYING PAN", "BOTTLE OPENER", "TABLECLOTH", "FOOD COVER", "SALT",
               "POPCORN"), "kitchen_and_tableware"),
    (_any_word("TOYS?", "GAMES?", "DOLLS?", "CHILDRENS?", "CHILDS?", "KIDS", "PLAYHOUSE", "SKIPPING ROPE",
               "JIGSAWS?", "PUZZLES?", "DOMINOES", "CRAYONS", "COLOURING", "TEDDY", "SOLDIERS?", "SPINNING TOPS?",
               "BABY", "FELTCRAFT", "KNITTING NANCY", "MONEY BANK", "PIGGY BANK", "HARMONICA", "MARBLES",
               "SKITTLES", "BLOCKS", "(?:PLAYING|SNAP) CARDS", "DRAWING SLATE", "CHALK", "LUDO", "BINGO",
               "SNAKES & LADDERS", "ROCKING HORSE", "MODELLING", "PAINT SET", "GLIDERS?"), "toys_and_kids"),
    (_any_word("CARDS?", "WRAP", "WRAPPING", "PAPER", "NOTE ?BOOKS?", "NOTEBOOKS?", "EXERCISE BOOKS?", "NOTEPAD",
               "PENCILS?", "PENS?", "STICKERS?", "TAPE", "ENVELOPES?", "JOURNAL", "DIARY", "ERASERS?",
               "CALENDAR", "GIFT TAGS?", "TISSUES?", "RIBBONS?", "STATIONERY", "SKETCHBOOK", "ALBUM", "BOOKMARK",
               "RULER", "STAMPS?", "STENCIL", "SCISSORS?"), "stationery_and_wrap"),
    (_any_word("SOAP", "BATH", "BATHROOM", "TOWELS?", "HOT WATER BOTTLE", "SPONGE", "TOILET", "TOOTHBRUSH",
               "WASH BAG", "PLASTERS", "LIP GLOSS", "COSMETIC", "MAKE ?UP", "FLANNEL"), "bath_and_body"),
    (_any_word("NECKLACE", "BRACELET", "EARRINGS", "RING", "HAIR", "PURSE", "UMBRELLA", "SCARF", "BROOCH",
               "CHARM", "JEWELLERY", "HAIRCLIP", "BANGLE", "WALLET", "HANDBAG", "SUNGLASSES", "GLOVES",
               "HAND WARMER", "KEY ?RING", "PASSPORT COVER", "DIAMANTE", "FAN", "PONCHO"),
     "jewellery_and_accessories"),
    (_any_word("GARDEN", "GARDENERS", "PLANTS?", "PLANTER", "WATERING", "BIRD ?HOUSE", "BIRD TABLE", "FEEDER",
               "BIRDCAGE", "(?:PLANT|FLOWER) POTS?", "SEEDS?", "HERB MARKER", "TROWEL", "GNOME", "PARASOL",
               "PICNIC", "KNEELING PAD", "HAMMOCK", "WINDMILL"), "garden"),
    (_any_word("BOX(?:ES)?", "TINS?", "JARS?", "BASKETS?", "STORAGE", "DRAWERS?", "CABINET", "CRATES?", "CHEST",
               "HAMPER", "TRINKET", "CONTAINER", "BUCKET", "BIN"), "storage"),
    (_any_word("HOOKS?", "ORNAMENTS?", "DECORATIONS?", "WREATH", "HEARTS?", "VASE", "COAT RACK", "PLAQUE",
               "HANGING", "HANGER", "CURTAIN", "THROW", "QUILT", "PHOTO", "PICTURE", "SHELF", "WICKER", "DOOR",
               "MAGNETS?", "MAT", "STOOL", "MAGAZINE RACK"), "home_decor"),
)
_MANUAL_ADJUSTMENT = "M"
_UNKNOWN = "unknown"
_UNKNOWN_TIMEZONE = "UTC"
_INVOICE = re.compile(r"^C?\d+$")


@dataclass(frozen=True)
class ImportReport:
    """What an import kept, dropped and changed."""

    rows_read: int
    dropped: dict[str, int]  # rule -> rows, in the order the rules apply (a row counts once)
    changed: dict[str, int]  # kind of change -> rows / orders / products / customers affected
    rows: dict[str, int] = field(default_factory=dict)  # contract table -> rows produced
    products_by_category: dict[str, int] = field(default_factory=dict)  # most products first
    first_order_ts: pd.Timestamp | None = None
    last_order_ts: pd.Timestamp | None = None

    @property
    def rows_kept(self) -> int:
        return self.rows_read - sum(self.dropped.values())

    def __str__(self) -> str:
        def _counts(counts: Mapping[str, int]) -> str:
            return ", ".join(f"{name}={n:,}" for name, n in counts.items())

        return (f"read {self.rows_read:,} rows, kept {self.rows_kept:,} "
                f"({self.first_order_ts} .. {self.last_order_ts}); dropped: {_counts(self.dropped)}; "
                f"changed: {_counts(self.changed)}; tables: {_counts(self.rows)}; "
                f"products by category: {_counts(self.products_by_category)}")


def read_uci_online_retail(path: str | Path, *, nrows: int | None = None) -> pd.DataFrame:
    """The raw UCI file (CSV, optionally compressed) with its eight columns as text / numbers."""
    return pd.read_csv(
        path,
        nrows=nrows,
        usecols=list(UCI_COLUMNS),
        dtype={"InvoiceNo": str, "StockCode": str, "Description": str, "InvoiceDate": str, "Country": str,
               "Quantity": "float64", "UnitPrice": "float64", "CustomerID": "float64"},
        keep_default_na=False,
        na_values=[""],
    )


def uci_online_retail(
    path: str | Path,
    *,
    cost_share: float = 0.6,
    timezone_by_country: Mapping[str, str] | None = None,
    nrows: int | None = None,
) -> tuple[dict[str, pd.DataFrame], ImportReport]:
    """Read the UCI Online Retail file into contract frames (see the module docstring for the rules).

    Returns ``(frames, report)``: ``frames`` maps each of :data:`revopt.platform.contract.SHOP_TABLES` to its
    frame. ``timezone_by_country`` adds to / overrides :data:`UCI_TIMEZONES`; ``nrows`` reads only
    the first rows of the file.
    """
    started = time.perf_counter()
    raw = read_uci_online_retail(path, nrows=nrows)
    frames, report = frames_from_uci(raw, cost_share=cost_share, timezone_by_country=timezone_by_country)
    logger.info("imported %s in %.1f s: %s", path, time.perf_counter() - started, report)
    return frames, report


def frames_from_uci(
    raw: pd.DataFrame,
    *,
    cost_share: float = 0.6,
    timezone_by_country: Mapping[str, str] | None = None,
) -> tuple[dict[str, pd.DataFrame], ImportReport]:
    """Contract frames and a report from the raw UCI rows (``raw`` is not modified)."""
    if not 0.0 < cost_share <= 1.0:
        raise ValueError(f"cost_share must be in (0, 1], got {cost_share}")
    missing = [c for c in UCI_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"not a UCI Online Retail file: missing columns {missing}")
    zones = {**UCI_TIMEZONES, **(timezone_by_country or {})}

    rows, dropped, changed = _clean_rows(raw)
    before = len(rows)
    rows, changed["whole_invoice_reversals"] = _match_whole_invoice_reversals(rows)
    dropped["credit_note_of_whole_invoice"] = before - len(rows)
    skus = np.sort(rows["sku"].unique().astype(str)).astype(object)  # product_id = position + 1
    orders, order_country, order_changes = _orders(rows)
    lines, line_changes = _order_lines(rows, skus)
    products, product_prices, product_changes = _products(rows, skus, lines, orders, cost_share)
    lines, changed["lines_below_list_price"] = _discounts_from_list_price(lines, orders, product_prices)
    customers, customer_changes = _customers(orders, order_country, zones)
    changed |= order_changes | line_changes | product_changes | customer_changes

    frames = {
        "customers": customers,
        "products": products,
        "product_prices": product_prices,
        "orders": orders,
        "order_lines": lines,
        "marketing_spend": _empty_marketing_spend(),
    }
    report = ImportReport(
        rows_read=len(raw),
        dropped=dropped,
        changed=changed,
        rows={name: len(frame) for name, frame in frames.items()},
        products_by_category=_products_by_category(products),
        first_order_ts=orders["order_ts"].min() if len(orders) else None,
        last_order_ts=orders["order_ts"].max() if len(orders) else None,
    )
    return frames, report


def load_into_contract(settings: Settings, frames: Mapping[str, pd.DataFrame]) -> dict[str, int]:
    """Replace the source tables with ``frames`` (one per :data:`~revopt.platform.contract.SHOP_TABLES`):
    the ``shop`` tables (the optional ones included) and the generator's ``truth`` tables are
    emptied and the frames COPYed in, in one transaction; the ClickHouse events are emptied (an
    imported order history has no clickstream); ``scores`` is left alone. Row counts per table."""
    missing = [name for name in contract.SHOP_TABLES if name not in frames]
    if missing:
        raise ValueError(f"frames missing for shop tables {missing}")
    return load_sources(settings, {name: frames[name] for name in contract.SHOP_TABLES})


# --- rows --------------------------------------------------------------------------------------


def _clean_rows(raw: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int], dict[str, int]]:
    """The kept rows, typed, with the count of rows each rule dropped and of values changed."""
    invoice = raw["InvoiceNo"].astype("string").str.strip().str.upper()
    stock_code = raw["StockCode"].astype("string").str.strip()
    sku = stock_code.str.upper()
    cancelled = invoice.str.startswith("C").fillna(False).to_numpy(dtype=bool)
    order_ts = _uk_wall_clock_to_utc(raw["InvoiceDate"])
    price = raw["UnitPrice"].round(2)
    quantity = raw["Quantity"]

    rules = {
        "no_customer_id": raw["CustomerID"].isna().to_numpy(),
        "no_stock_code": (sku.isna() | (sku == "")).fillna(True).to_numpy(dtype=bool),
        "unrecognised_invoice": ~invoice.str.fullmatch(_INVOICE.pattern).fillna(False).to_numpy(dtype=bool),
        "unparseable_invoice_date": order_ts.isna().to_numpy(),
        "non_positive_price": ~(price > 0).to_numpy(),
        "non_positive_quantity_on_sale": ~cancelled & ~(quantity > 0).to_numpy(),
        "non_negative_quantity_on_cancellation": cancelled & ~(quantity < 0).to_numpy(),
    }
    keep = np.ones(len(raw), dtype=bool)
    dropped: dict[str, int] = {}
    for name, bad in rules.items():
        dropped[name] = int((keep & bad).sum())
        keep &= ~bad

    kept = np.flatnonzero(keep)
    rows = pd.DataFrame(
        {
            "order_id": invoice.iloc[kept].str.lstrip("C").astype("int64").to_numpy(),
            "invoice": invoice.iloc[kept].to_numpy(dtype=object),
            "cancelled": cancelled[kept],
            "order_ts": order_ts.iloc[kept].array,
            "customer_id": raw["CustomerID"].iloc[kept].astype("int64").to_numpy(),
            "country": raw["Country"].iloc[kept].fillna("Unspecified").str.strip().to_numpy(dtype=object),
            "sku": sku.iloc[kept].to_numpy(dtype=object),
            "description": raw["Description"].iloc[kept].str.strip().replace("", np.nan).to_numpy(dtype=object),
            "quantity": quantity.iloc[kept].abs().astype("int32").to_numpy(),
            "unit_price": price.iloc[kept].to_numpy(),
        }
    )
    sharing = rows.drop_duplicates(["order_id", "invoice"])["order_id"].duplicated()
    if sharing.any():
        raise ValueError(f"{int(sharing.sum())} invoice numbers are used by both a sale and a cancellation")
    changed = {
        "stock_codes_upper_cased": int((sku.iloc[kept] != stock_code.iloc[kept]).sum()),
        "prices_rounded_to_cents": int((price.iloc[kept] != raw["UnitPrice"].iloc[kept]).sum()),
        "cancellation_quantities_made_positive": int(rows["cancelled"].sum()),
    }
    return rows.drop(columns="invoice"), dropped, changed


def _match_whole_invoice_reversals(rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Cancel each sale that a later credit note of the same customer reverses whole, and drop that
    credit note; each sale is matched at most once (the latest one before the note). A note
    reverses a sale with the same lines (StockCode, quantity, price), or -- a note of manual
    adjustments only (StockCode ``M``) -- a sale of the same value in the 24 hours before it."""
    keyed = rows.assign(line_key=rows["sku"].astype(str) + "|" + rows["quantity"].astype(str) + "|"
                        + rows["unit_price"].map("{:.2f}".format),
                        value_cents=(rows["quantity"] * rows["unit_price"] * 100).round().astype("int64"),
                        manual=rows["sku"] == _MANUAL_ADJUSTMENT)
    invoices = keyed.sort_values(["order_id", "line_key"], kind="stable").groupby("order_id", sort=False).agg(
        customer_id=("customer_id", "first"), cancelled=("cancelled", "first"), order_ts=("order_ts", "min"),
        lines=("line_key", "|".join), value_cents=("value_cents", "sum"), manual=("manual", "all"),
    )
    invoices["signature"] = np.where(invoices["manual"], "value:" + invoices["value_cents"].astype(str), invoices["lines"])
    sales = invoices[~invoices["cancelled"]].reset_index().sort_values("order_ts", kind="stable")
    by_lines = sales.groupby(["customer_id", "lines"])
    by_value = sales.assign(signature="value:" + sales["value_cents"].astype(str)).groupby(["customer_id", "signature"])
    reversed_sales, matched_notes = set(), set()
    for note in invoices[invoices["cancelled"]].reset_index().itertuples(index=False):
        candidates, window = (by_value, pd.Timedelta(hours=24)) if note.manual else (by_lines, None)
        key = (note.customer_id, note.signature)
        if key not in candidates.groups:
            continue
        earlier = candidates.get_group(key)
        earlier = earlier[(earlier["order_ts"] <= note.order_ts) & ~earlier["order_id"].isin(reversed_sales)]
        if window is not None:
            earlier = earlier[earlier["order_ts"] >= note.order_ts - window]
        if len(earlier):
            reversed_sales.add(int(earlier["order_id"].iloc[-1]))
            matched_notes.add(int(note.order_id))
    kept = rows[~rows["order_id"].isin(matched_notes)].copy()
    kept.loc[kept["order_id"].isin(reversed_sales), "cancelled"] = True
    return kept, len(matched_notes)


def _uk_wall_clock_to_utc(invoice_date: pd.Series) -> pd.Series:
    """Parse InvoiceDate (ISO, or UCI's original ``12/1/2010 8:26``) as Europe/London time, in UTC.

    Parsed once per distinct string: a year of invoices has a few tens of thousands of them.
    """
    codes, uniques = pd.factorize(invoice_date)
    if len(uniques) == 0:
        return pd.Series(pd.NaT, index=invoice_date.index, dtype="datetime64[ns, UTC]")
    text = pd.Series(uniques, dtype="string").str.strip()
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
    if parsed.isna().all():
        parsed = pd.to_datetime(text, format="%m/%d/%Y %H:%M", errors="coerce")
    local = parsed.astype("datetime64[ns]").dt.tz_localize(
        UCI_STORE_TIMEZONE, ambiguous=np.ones(len(parsed), dtype=bool), nonexistent="shift_forward"
    )
    utc = pd.DatetimeIndex(local.dt.tz_convert("UTC"))
    return pd.Series(utc.take(codes, allow_fill=True), index=invoice_date.index)


# --- tables ------------------------------------------------------------------------------------


def _orders(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, dict[str, int]]:
    """shop.orders, each order's country, and how many invoices spanned several timestamps."""
    by_order = rows.groupby("order_id", sort=True)
    first = by_order.agg(
        customer_id=("customer_id", "first"),
        order_ts=("order_ts", "min"),
        cancelled=("cancelled", "first"),
        country=("country", "first"),
        n_customers=("customer_id", "nunique"),
        n_times=("order_ts", "nunique"),
    )
    if (first["n_customers"] > 1).any():
        raise ValueError(f"{int((first['n_customers'] > 1).sum())} invoices name several customers")
    orders = pd.DataFrame(
        {
            "order_id": first.index.to_numpy(dtype=np.int64),
            "customer_id": first["customer_id"].to_numpy(dtype=np.int64),
            "order_ts": first["order_ts"].array,
            "channel": np.full(len(first), _UNKNOWN, dtype=object),
            "status": np.where(first["cancelled"].to_numpy(dtype=bool), "cancelled", "completed").astype(object),
        }
    )
    country = pd.Series(first["country"].to_numpy(dtype=object), index=orders["order_id"].to_numpy())
    return orders, country, {"invoices_spanning_several_timestamps": int((first["n_times"] > 1).sum())}


def _order_lines(rows: pd.DataFrame, skus: np.ndarray) -> tuple[pd.DataFrame, dict[str, int]]:
    """shop.order_lines, numbered in file order within each order."""
    ordered = rows.sort_values("order_id", kind="stable")
    lines = pd.DataFrame(
        {
            "order_id": ordered["order_id"].to_numpy(dtype=np.int64),
            "line_no": (ordered.groupby("order_id").cumcount() + 1).to_numpy(dtype=np.int32),
            "product_id": pd.Categorical(ordered["sku"], categories=skus).codes.astype(np.int64) + 1,
            "quantity": ordered["quantity"].to_numpy(dtype=np.int32),
            "unit_price": ordered["unit_price"].to_numpy(dtype=np.float64),
            "discount": np.zeros(len(ordered), dtype=np.float64),
        }
    )
    repeated = int(lines.duplicated(["order_id", "product_id"]).sum())
    return lines, {"repeated_product_lines_kept": repeated}


def _products(
    rows: pd.DataFrame, skus: np.ndarray, lines: pd.DataFrame, orders: pd.DataFrame, cost_share: float
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """shop.products and shop.product_prices."""
    product_ids = np.arange(1, len(skus) + 1, dtype=np.int64)

    names = (
        rows.dropna(subset=["description"])
        .groupby(["sku", "description"], sort=False).size().rename("n").reset_index()
        .sort_values(["sku", "n", "description"], ascending=[True, False, True], kind="stable")
    )
    several = names["sku"].duplicated(keep=False)
    name = names.drop_duplicates("sku").set_index("sku")["description"].reindex(skus)
    unnamed = name.isna()
    name = name.where(~unnamed, pd.Series(skus, index=skus))

    prices = _price_observations(lines, orders)
    history = _weekly_modal_prices(prices)
    current = history.groupby("product_id")["list_price"].last().reindex(product_ids)
    median = prices.groupby("product_id")["unit_price"].median().reindex(product_ids)
    cost = np.maximum(np.round(cost_share * median.to_numpy(), 2), 0.01)

    products = pd.DataFrame(
        {
            "product_id": product_ids,
            "sku": skus,
            "name": name.to_numpy(dtype=object),
            "category": _categories(skus, name.to_numpy(dtype=object)),
            "cost": cost,
            "current_price": current.to_numpy(dtype=np.float64),
        }
    )
    changes = {
        "products_with_several_descriptions": int(names.loc[several, "sku"].nunique()),
        "products_named_by_sku": int(unnamed.sum()),
        "products_priced_from_cancellations": int(prices.loc[prices["from_cancellation"], "product_id"].nunique()),
    }
    return products, history, changes


def _price_observations(lines: pd.DataFrame, orders: pd.DataFrame) -> pd.DataFrame:
    """Lines of completed orders, plus the cancelled lines of products never sold in a completed one."""
    status = orders.set_index("order_id")["status"]
    completed = (status.reindex(lines["order_id"]).to_numpy() == "completed")
    sold = np.zeros(int(lines["product_id"].max()) + 1 if len(lines) else 1, dtype=bool)
    sold[lines.loc[completed, "product_id"].to_numpy()] = True
    use = completed | ~sold[lines["product_id"].to_numpy()]
    return pd.DataFrame(
        {
            "product_id": lines["product_id"].to_numpy()[use],
            "week": _order_weeks(lines["order_id"][use], orders),
            "unit_price": lines["unit_price"].to_numpy()[use],
            "from_cancellation": ~completed[use],
        }
    )


def _order_weeks(order_ids: pd.Series, orders: pd.DataFrame) -> pd.DatetimeIndex:
    """The Monday (UTC, naive) of the week each order was placed in, per given order id."""
    order_ts = pd.DatetimeIndex(orders.set_index("order_id")["order_ts"].reindex(order_ids).array)
    day = order_ts.tz_convert("UTC").tz_localize(None).normalize()
    return day - pd.to_timedelta(day.dayofweek, unit="D")


def _weekly_modal_prices(prices: pd.DataFrame) -> pd.DataFrame:
    """shop.product_prices: the modal price per product and week (by lines; ties: higher), changes only."""
    counts = prices.groupby(["product_id", "week", "unit_price"], sort=False).size().rename("n").reset_index()
    modal = counts.sort_values(
        ["product_id", "week", "n", "unit_price"], ascending=[True, True, False, False], kind="stable"
    ).drop_duplicates(["product_id", "week"])
    changed = modal["unit_price"].ne(modal.groupby("product_id")["unit_price"].shift())
    kept = modal[changed.to_numpy()]
    return pd.DataFrame(
        {
            "product_id": kept["product_id"].to_numpy(dtype=np.int64),
            "valid_from": kept["week"].to_numpy(dtype="datetime64[ns]"),
            "list_price": kept["unit_price"].to_numpy(dtype=np.float64),
        }
    )


def _discounts_from_list_price(lines: pd.DataFrame, orders: pd.DataFrame,
                               product_prices: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Each line's discount: the fraction it was paid below the list price in force that week."""
    week = _order_weeks(lines["order_id"], orders).to_numpy(dtype="datetime64[ns]")
    position = np.arange(len(lines))
    in_force = pd.merge_asof(
        pd.DataFrame({"week": week, "product_id": lines["product_id"].to_numpy(), "position": position}).sort_values("week"),
        product_prices.rename(columns={"valid_from": "week"}).sort_values("week"),
        on="week", by="product_id", direction="backward",
    ).sort_values("position")["list_price"].to_numpy(dtype=np.float64)
    paid = lines["unit_price"].to_numpy(dtype=np.float64)
    discount = np.where(np.isfinite(in_force) & (paid < in_force), 1.0 - paid / np.where(in_force > 0, in_force, 1.0), 0.0)
    discount = np.round(np.clip(discount, 0.0, 0.9999), 4)
    return lines.assign(discount=discount), int((discount > 0).sum())


def _categories(skus: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Each product's category: from its code, and for merchandise the product type its name says."""
    category = _first_match(pd.Series(skus, dtype="string"), _CATEGORY_RULES, _OTHER_CATEGORY)
    merchandise = category == MERCHANDISE
    category[merchandise] = _first_match(
        pd.Series(names[merchandise], dtype="string").str.upper(), UCI_PRODUCT_TYPES, MERCHANDISE
    )
    return category


def _products_by_category(products: pd.DataFrame) -> dict[str, int]:
    """Products per category, the most first (ties: by name)."""
    counts = products["category"].value_counts()
    return {name: int(counts[name]) for name in sorted(counts.index, key=lambda name: (-counts[name], name))}


def _first_match(texts: pd.Series, rules: tuple[tuple[str, str], ...], default: str) -> np.ndarray:
    """The category of the first rule whose pattern each text contains (``default``: none does)."""
    category = np.full(len(texts), default, dtype=object)
    undecided = np.ones(len(texts), dtype=bool)
    for pattern, name in rules:
        hit = undecided & texts.str.contains(pattern, regex=True).fillna(False).to_numpy(dtype=bool)
        category[hit] = name
        undecided &= ~hit
    return category


def _customers(
    orders: pd.DataFrame, order_country: pd.Series, zones: Mapping[str, str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """shop.customers: signup at the first invoice, country of the latest one, zone from the country."""
    history = orders[["customer_id", "order_id", "order_ts"]].assign(
        country=order_country.reindex(orders["order_id"]).to_numpy()
    ).sort_values(["customer_id", "order_ts", "order_id"], kind="stable")
    by_customer = history.groupby("customer_id", sort=True)
    first = by_customer["order_ts"].min()
    country = by_customer["country"].last()
    n_countries = by_customer["country"].nunique()
    zone = country.map(dict(zones))
    unknown = zone.isna()
    customers = pd.DataFrame(
        {
            "customer_id": first.index.to_numpy(dtype=np.int64),
            "signup_date": first.dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
            .to_numpy(dtype="datetime64[ns]"),
            "country": country.to_numpy(dtype=object),
            "timezone": zone.fillna(_UNKNOWN_TIMEZONE).to_numpy(dtype=object),
            "acquisition_channel": np.full(len(first), _UNKNOWN, dtype=object),
            "email_opt_in": np.zeros(len(first), dtype=bool),
            "do_not_profile": np.zeros(len(first), dtype=bool),
        }
    )
    changes = {
        "customers_with_several_countries": int((n_countries > 1).sum()),
        "customers_with_unknown_timezone": int(unknown.sum()),
    }
    if unknown.any():
        logger.info("no time zone for countries %s: their customers get UTC", sorted(country[unknown].unique()))
    return customers, changes


def _empty_marketing_spend() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "day": pd.Series([], dtype="datetime64[ns]"),
            "channel": pd.Series([], dtype=object),
            "spend": pd.Series([], dtype=np.float64),
            "impressions": pd.Series([], dtype=np.int64),
            "clicks": pd.Series([], dtype=np.int64),
            "campaign": pd.Series([], dtype=object),
        }
    )
