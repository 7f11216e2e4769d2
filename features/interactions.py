"""Customer x product interactions for the recommender, and its one-frame nightly input.

Data preparation only (the model is :mod:`ml.families.recommend`). Two extracts feed it
(``revopt.platform.extract``): ``order_items`` (order_id, customer_id, order_ts, product_id,
quantity, value, product_name: one row per completed order and product in the window) and
``product_views`` (customer_id, product_id, day, views: ``product_view`` events of known customers per
UTC day, empty without clickstream). Around them, ``customers`` (the segment columns of the cold start),
``products`` (category) and ``inventory`` (the latest ``on_hand`` per product).

- :func:`daily_purchases`: the orders per customer, product and UTC day (a product ordered twice in
  one order counts once); :func:`daily_views`: the views per customer, product and day, typed;
- :func:`catalogue`: one row per product with its category, a display name (``product_name`` of its
  order lines, else ``"product <id>"``) and ``on_hand`` (NaN when the store keeps no stock for it);
- :func:`recommendation_input` stacks customers, purchases, views and the catalogue into one long
  frame with a ``source`` column (what a registered model's ``predict`` takes, so ``mlflow models
  serve`` answers what revopt publishes); :func:`split_recommendation_input` gives them back.

Days are UTC calendar days as zone-naive ``datetime64[ns]`` (MLflow's schema takes only naive
datetimes); counts are float64 in the long frame so the other sources' rows can be missing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

ORDER_ITEMS = "order_items"
PRODUCT_VIEWS = "product_views"
CUSTOMERS = "customers"
PRODUCTS = "products"
INVENTORY = "inventory"

#: the long frame's column naming each row's dataset, and its values
SOURCE_COLUMN = "source"
CUSTOMER_ROWS, PURCHASE_ROWS, VIEW_ROWS, CATALOGUE_ROWS = "customers", "purchases", "views", "catalogue"
SOURCES: tuple[str, ...] = (CUSTOMER_ROWS, PURCHASE_ROWS, VIEW_ROWS, CATALOGUE_ROWS)

ORDER_ITEM_COLUMNS: tuple[str, ...] = ("order_id", "customer_id", "order_ts", "product_id", "quantity", "value",
                                       "product_name")
PRODUCT_VIEW_COLUMNS: tuple[str, ...] = ("customer_id", "product_id", "day", "views")
#: the segment columns of ``shop.customers`` the cold start backs off along (most specific first)
SEGMENT_COLUMNS: tuple[str, ...] = ("country", "acquisition_channel")
CUSTOMER_COLUMNS: tuple[str, ...] = ("customer_id", *SEGMENT_COLUMNS)
PURCHASE_COLUMNS: tuple[str, ...] = ("customer_id", "product_id", "day", "orders")
VIEW_COLUMNS: tuple[str, ...] = ("customer_id", "product_id", "day", "views")
CATALOGUE_COLUMNS: tuple[str, ...] = ("product_id", "category", "name", "on_hand")
#: the long frame's columns, in order
INPUT_COLUMNS: tuple[str, ...] = (SOURCE_COLUMN, "customer_id", "product_id", "day", "orders", "views",
                                  *SEGMENT_COLUMNS, "category", "name", "on_hand")


@dataclass(frozen=True)
class RecommendationInput:
    """The four frames a recommendation run reads: ``customers`` (:data:`CUSTOMER_COLUMNS`, the ones
    to recommend to), ``purchases`` (:data:`PURCHASE_COLUMNS`), ``views`` (:data:`VIEW_COLUMNS`) and
    ``catalogue`` (:data:`CATALOGUE_COLUMNS`, the products that may be recommended)."""

    customers: pd.DataFrame
    purchases: pd.DataFrame
    views: pd.DataFrame
    catalogue: pd.DataFrame

    def before(self, as_of: pd.Timestamp, since: pd.Timestamp | None = None) -> RecommendationInput:
        """The interactions on days in ``[since, as_of)`` (``since`` None: from the start)."""
        def window(frame: pd.DataFrame) -> pd.DataFrame:
            keep = frame["day"] < as_of
            if since is not None:
                keep &= frame["day"] >= since
            return frame.loc[keep].reset_index(drop=True)
        return RecommendationInput(self.customers, window(self.purchases), window(self.views), self.catalogue)

    def of_customers(self, customer_ids: np.ndarray) -> RecommendationInput:
        """The customers, purchases and views of ``customer_ids`` alone (a training sample); the catalogue whole."""
        def rows(frame: pd.DataFrame) -> pd.DataFrame:
            return frame.loc[frame["customer_id"].isin(customer_ids)].reset_index(drop=True)
        return RecommendationInput(rows(self.customers), rows(self.purchases), rows(self.views), self.catalogue)


def order_items_from_shop(orders: pd.DataFrame, order_lines: pd.DataFrame, products: pd.DataFrame | None = None,
                          since: pd.Timestamp | None = None, until: pd.Timestamp | None = None) -> pd.DataFrame:
    """The ``order_items`` extract computed from ``shop`` frames in memory (what
    ``revopt.platform.extract.ORDER_ITEMS_SQL`` reads from PostgreSQL): completed orders with
    ``since <= order_ts < until``, one row per order and product (quantities and values summed), the
    product's ``name`` as ``product_name`` when ``products`` has one. For benchmarks and tests."""
    chosen = orders.loc[orders["status"] == "completed"].drop_duplicates("order_id")
    if since is not None:
        chosen = chosen.loc[chosen["order_ts"] >= since]
    if until is not None:
        chosen = chosen.loc[chosen["order_ts"] < until]
    lines = order_lines.loc[order_lines["product_id"].notna() & order_lines["order_id"].isin(chosen["order_id"])]
    lines = lines.assign(value=lines["quantity"] * lines["unit_price"])
    items = lines.groupby(["order_id", "product_id"], sort=True).agg(quantity=("quantity", "sum"),
                                                                      value=("value", "sum")).reset_index()
    items = items.merge(chosen[["order_id", "customer_id", "order_ts"]], on="order_id", how="left")
    names = (products.set_index("product_id")["name"] if products is not None and "name" in products.columns
             else pd.Series(dtype=object))
    items["product_name"] = items["product_id"].map(names).astype(object)
    return items.astype({"order_id": "int64", "customer_id": "int64", "product_id": "int64", "quantity": "int64",
                         "value": "float64"})[list(ORDER_ITEM_COLUMNS)]


def daily_purchases(order_items: pd.DataFrame) -> pd.DataFrame:
    """Orders per customer, product and UTC day (:data:`PURCHASE_COLUMNS`; ``orders`` int64), sorted."""
    _require(order_items, ORDER_ITEMS, ("order_id", "customer_id", "order_ts", "product_id"))
    if not len(order_items):
        return _empty(PURCHASE_COLUMNS, {"orders": "int64"})
    day = _utc_day(order_items["order_ts"], f"{ORDER_ITEMS}.order_ts")
    frame = pd.DataFrame({"customer_id": order_items["customer_id"].to_numpy(dtype=np.int64),
                          "product_id": order_items["product_id"].to_numpy(dtype=np.int64), "day": day,
                          "order_id": order_items["order_id"].to_numpy(dtype=np.int64)})
    counted = frame.groupby(["customer_id", "product_id", "day"], sort=True)["order_id"].nunique()
    return counted.rename("orders").astype("int64").reset_index()


def daily_views(product_views: pd.DataFrame) -> pd.DataFrame:
    """The ``product_views`` extract typed (:data:`VIEW_COLUMNS`; ``views`` int64, ``day`` naive UTC)."""
    _require(product_views, PRODUCT_VIEWS, PRODUCT_VIEW_COLUMNS)
    if not len(product_views):
        return _empty(VIEW_COLUMNS, {"views": "int64"})
    frame = product_views[list(VIEW_COLUMNS)].astype({"customer_id": "int64", "product_id": "int64", "views": "int64"})
    frame["day"] = _naive_day(frame["day"])
    keys = ["customer_id", "product_id", "day"]
    if not _in_order(frame, keys):  # the extract's query orders them already: a sort of 27M rows at 1M customers
        frame = frame.sort_values(keys, kind="stable")
    return frame.reset_index(drop=True)


def _in_order(frame: pd.DataFrame, columns: list[str]) -> bool:
    """Whether the rows are sorted by ``columns`` (numbers or datetimes, none missing), compared as arrays: a
    later row is smaller in none of them where it ties in all before."""
    if len(frame) < 2:
        return True
    tied = np.ones(len(frame) - 1, dtype=bool)
    for column in columns:
        values = frame[column].to_numpy()
        if frame[column].isna().any() or (tied & (values[1:] < values[:-1])).any():
            return False
        tied &= values[1:] == values[:-1]
    return True


def catalogue(products: pd.DataFrame, inventory: pd.DataFrame | None, order_items: pd.DataFrame | None) -> pd.DataFrame:
    """One row per product (:data:`CATALOGUE_COLUMNS`): its category, a name (``product_name`` of its
    order lines where the store has one, else ``"product <id>"``) and ``on_hand`` from the latest
    ``inventory`` row (NaN for a product without one, or a store without inventory)."""
    _require(products, PRODUCTS, ("product_id", "category"))
    frame = products[["product_id", "category"]].drop_duplicates("product_id").astype({"product_id": "int64"})
    names = pd.Series(dtype=object)
    if order_items is not None and "product_name" in order_items.columns and len(order_items):
        named = order_items.loc[order_items["product_name"].notna(), ["product_id", "product_name"]]
        names = named.drop_duplicates("product_id", keep="last").set_index("product_id")["product_name"]
    name = frame["product_id"].map(names)
    frame["name"] = name.where(name.notna(), "product " + frame["product_id"].astype(str)).astype(object)
    on_hand = pd.Series(dtype="float64")
    if inventory is not None and len(inventory):
        latest = inventory.sort_values("day", kind="stable").drop_duplicates("product_id", keep="last")
        on_hand = latest.set_index("product_id")["on_hand"].astype("float64")
    frame["on_hand"] = frame["product_id"].map(on_hand).astype("float64")
    frame["category"] = frame["category"].astype(object)
    return frame.sort_values("product_id", kind="stable").reset_index(drop=True)[list(CATALOGUE_COLUMNS)]


def customer_segments(customers: pd.DataFrame) -> pd.DataFrame:
    """customer_id and the segment columns (:data:`CUSTOMER_COLUMNS`; missing segment columns read as None)."""
    _require(customers, CUSTOMERS, ("customer_id",))
    frame = pd.DataFrame({"customer_id": customers["customer_id"].to_numpy(dtype=np.int64)})
    for column in SEGMENT_COLUMNS:
        values = customers[column].astype(object) if column in customers.columns else pd.Series(None, index=customers.index)
        frame[column] = values.where(values.notna(), None).to_numpy(dtype=object)
    return frame.drop_duplicates("customer_id").reset_index(drop=True)


def interactions_from_extract(frames: Mapping[str, pd.DataFrame], run_date: dt.date,
                              lookback_days: int | None = None) -> RecommendationInput:
    """The run's :class:`RecommendationInput` from its extracts (``customers``, ``order_items``,
    ``products``; ``product_views`` and ``inventory`` when present): interactions before the run date,
    and only the last ``lookback_days`` of them when given (the nightly window)."""
    items = frames[ORDER_ITEMS]
    views = frames.get(PRODUCT_VIEWS)
    data = RecommendationInput(
        customer_segments(frames[CUSTOMERS]), daily_purchases(items),
        daily_views(views if views is not None else pd.DataFrame(columns=list(PRODUCT_VIEW_COLUMNS))),
        catalogue(frames[PRODUCTS], frames.get(INVENTORY), items))
    as_of = pd.Timestamp(run_date)
    return data.before(as_of, None if lookback_days is None else as_of - pd.Timedelta(days=lookback_days))


def recommendation_input(data: RecommendationInput) -> pd.DataFrame:
    """One long frame (:data:`INPUT_COLUMNS`) of the customers, purchases, views and catalogue, in
    that order, each in its own row order; :func:`split_recommendation_input` gives them back."""
    parts = {CUSTOMER_ROWS: data.customers, PURCHASE_ROWS: data.purchases, VIEW_ROWS: data.views,
             CATALOGUE_ROWS: data.catalogue}
    wanted = {CUSTOMER_ROWS: CUSTOMER_COLUMNS, PURCHASE_ROWS: PURCHASE_COLUMNS, VIEW_ROWS: VIEW_COLUMNS,
              CATALOGUE_ROWS: CATALOGUE_COLUMNS}
    for name, frame in parts.items():
        _require(frame, name, wanted[name])
    sizes = [len(parts[name]) for name in SOURCES]
    bounds = dict(zip(SOURCES, zip(np.cumsum([0, *sizes[:-1]]), np.cumsum(sizes))))

    def stacked(values: dict[str, np.ndarray], filler: object, dtype: object) -> np.ndarray:
        column = np.full(sum(sizes), filler, dtype=dtype)
        for name, part in values.items():
            column[bounds[name][0]:bounds[name][1]] = part
        return column

    def ints(name: str, column: str) -> np.ndarray:
        return parts[name][column].to_numpy(dtype=np.int64)

    def objects(name: str, column: str) -> np.ndarray:
        values = parts[name][column].astype(object)
        return values.where(values.notna(), None).to_numpy(dtype=object)

    columns = {
        SOURCE_COLUMN: np.repeat(np.asarray(SOURCES, dtype=object), sizes),
        "customer_id": stacked({name: ints(name, "customer_id") for name in SOURCES[:3]}, 0, np.int64),
        "product_id": stacked({name: ints(name, "product_id") for name in SOURCES[1:]}, 0, np.int64),
        "day": stacked({name: _naive_day(parts[name]["day"]).to_numpy() for name in (PURCHASE_ROWS, VIEW_ROWS)},
                       np.datetime64("NaT", "ns"), "datetime64[ns]"),
        "orders": stacked({PURCHASE_ROWS: data.purchases["orders"].to_numpy(dtype=np.float64)}, np.nan, np.float64),
        "views": stacked({VIEW_ROWS: data.views["views"].to_numpy(dtype=np.float64)}, np.nan, np.float64),
        **{column: stacked({CUSTOMER_ROWS: objects(CUSTOMER_ROWS, column)}, None, object) for column in SEGMENT_COLUMNS},
        "category": stacked({CATALOGUE_ROWS: objects(CATALOGUE_ROWS, "category")}, None, object),
        "name": stacked({CATALOGUE_ROWS: objects(CATALOGUE_ROWS, "name")}, None, object),
        "on_hand": stacked({CATALOGUE_ROWS: data.catalogue["on_hand"].to_numpy(dtype=np.float64)}, np.nan, np.float64),
    }
    return pd.DataFrame(columns)


def split_recommendation_input(frame: pd.DataFrame) -> RecommendationInput:
    """The four frames of a :func:`recommendation_input` frame, typed as the builders type them."""
    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"the recommendation input is missing column(s) {missing}; it has {list(frame.columns)}")
    unknown = set(frame[SOURCE_COLUMN].unique()) - set(SOURCES)
    if unknown:
        raise ValueError(f"the recommendation input's {SOURCE_COLUMN!r} has unknown values {sorted(map(str, unknown))}; "
                         f"expected {', '.join(SOURCES)}")
    source = frame[SOURCE_COLUMN].to_numpy()

    def rows(name: str, columns: tuple[str, ...]) -> pd.DataFrame:
        return frame.loc[source == name, list(columns)]

    return typed_recommendation_input(RecommendationInput(
        rows(CUSTOMER_ROWS, CUSTOMER_COLUMNS), rows(PURCHASE_ROWS, PURCHASE_COLUMNS), rows(VIEW_ROWS, VIEW_COLUMNS),
        rows(CATALOGUE_ROWS, CATALOGUE_COLUMNS)))


def typed_recommendation_input(data: RecommendationInput) -> RecommendationInput:
    """The four frames with the columns and types the long frame gives back (:func:`split_recommendation_input`):
    what the model reads whether the frames came through the long frame or straight from the extract."""
    def typed(frame: pd.DataFrame, name: str, columns: tuple[str, ...], dtypes: dict[str, str]) -> pd.DataFrame:
        _require(frame, name, columns)
        return frame[list(columns)].astype(dtypes).reset_index(drop=True)

    def objects(values: pd.Series) -> pd.Series:
        values = values.astype(object)
        return values.where(values.notna(), None)

    customers = typed(data.customers, CUSTOMER_ROWS, CUSTOMER_COLUMNS, {"customer_id": "int64"})
    for column in SEGMENT_COLUMNS:
        customers[column] = objects(customers[column])
    purchases = typed(data.purchases, PURCHASE_ROWS, PURCHASE_COLUMNS,
                      {"customer_id": "int64", "product_id": "int64", "orders": "int64"})
    views = typed(data.views, VIEW_ROWS, VIEW_COLUMNS, {"customer_id": "int64", "product_id": "int64", "views": "int64"})
    for part in (purchases, views):
        part["day"] = _naive_day(part["day"])
    products = typed(data.catalogue, CATALOGUE_ROWS, CATALOGUE_COLUMNS, {"product_id": "int64", "on_hand": "float64"})
    products["category"] = objects(products["category"])
    products["name"] = objects(products["name"])
    return RecommendationInput(customers, purchases, views, products)


def _utc_day(values: pd.Series, name: str) -> pd.Series:
    """Timezone-aware instants -> their UTC calendar day, zone-naive."""
    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        raise ValueError(f"{name} must be timezone-aware UTC timestamps, got dtype {values.dtype}")  # noqa: TRY004
    return values.dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("D").astype("datetime64[ns]").reset_index(drop=True)


def _naive_day(values: pd.Series) -> pd.Series:
    """Days (naive, or aware and read in UTC) as zone-naive ``datetime64[ns]`` midnights."""
    stamps = pd.to_datetime(pd.Series(values))
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.astype("datetime64[ns]").dt.floor("D")


def _require(frame: pd.DataFrame, name: str, columns: tuple[str, ...] | list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; it has {list(frame.columns)}")


def _empty(columns: tuple[str, ...], dtypes: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "int64")) for c in columns})
    frame["day"] = pd.Series(dtype="datetime64[ns]")
    return frame
