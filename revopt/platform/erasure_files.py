"""The files side of erasure (:mod:`revopt.platform.erasure`): the person being erased, and rewriting revopt's
files without them — Parquet without their rows (customer, identifier, anonymous id, order and journey columns),
JSON / CSV without their records, text without their lines, other files holding their tokens deleted.
Written here, not taken from a library: which columns and files of revopt's own state hold a person is revopt's
knowledge."""

from __future__ import annotations
import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
logger = logging.getLogger(__name__)

#: A column holding a customer (account) id: customer_id, customer_id_l, canonical_customer_id, customer, ...
#: (not counts such as ``customers`` / ``new_customers``: integer or string columns only are compared).
CUSTOMER_COLUMN = re.compile(r"(^|_)(customer|account)(_id)?(_[a-z]+)?$")
_ORDER_COLUMNS = ("order_id", "journey_id")
_EXAMPLES = re.compile(r"e\.g\. \[[^\]]*\]")  # the example values of a failed expectation (revopt.platform.validation)
_TEXT_SUFFIXES = (".log", ".txt", ".out")


@dataclass(frozen=True)
class Person:
    """Every identifier of the person being erased, and the values revopt may hold them as."""

    accounts: frozenset[int]
    anonymous_ids: frozenset[str] = frozenset()
    pseudonyms: frozenset[str] = frozenset()  # pseudonymise(accounts and anonymous ids, purpose="id")
    contact_hashes: frozenset[str] = frozenset()  # shop.customer_contacts e-mail / phone hashes
    order_ids: frozenset[int] = frozenset()

    @property
    def account_texts(self) -> frozenset[str]:
        return frozenset(str(a) for a in self.accounts)

    @property
    def tokens(self) -> frozenset[str]:
        """Values that name the person wherever they appear (long random strings: no false matches)."""
        return self.anonymous_ids | self.pseudonyms | self.contact_hashes

    def number_pattern(self) -> re.Pattern[str] | None:
        """The accounts as whole numbers in text (``549`` but not ``1549``, ``5490`` or ``549.8``)."""
        if not self.accounts:
            return None
        ids = "|".join(str(a) for a in sorted(self.accounts))
        return re.compile(rf"(?<![\d.])(?:{ids})(?![\d]|\.\d)")


@dataclass
class ErasureReport:
    accounts: list[int]
    anonymous_ids: list[str]
    removed: dict[str, int] = field(default_factory=dict)  # where -> rows (tables) or rows / lines / files
    left: dict[str, int] = field(default_factory=dict)  # where the person was found but could not be removed

    def add(self, where: str, count: int) -> None:
        if count:
            self.removed[where] = self.removed.get(where, 0) + int(count)


def redact_text(text: str, person: Person, pattern: re.Pattern[str] | None = None) -> str:
    """``text`` with the person's tokens replaced anywhere and their account ids replaced inside example lists
    (``e.g. [549, 17]``), the only place revopt's free text lists customer ids."""
    pattern = pattern if pattern is not None else person.number_pattern()
    for token in person.tokens:
        text = text.replace(token, "[erased]")
    if pattern is not None:
        text = _EXAMPLES.sub(lambda m: pattern.sub("[erased]", m.group(0)), text)
    return text


# --- files -----------------------------------------------------------------------------------------


def person_rows(table: pa.Table, person: Person, *, journeys: frozenset[int] = frozenset(),
                customer_experiments: frozenset[str] | None = None) -> np.ndarray:
    """A boolean mask of the rows of ``table`` that are about the person: a customer-id column (integer, or a
    string holding the id or its pseudonym), ``identifier`` / ``anonymous_id``, ``unit_id`` (of customer
    experiments when the table says which), ``order_id`` / ``journey_id`` (the person's orders and ``journeys``),
    or any string cell that is one of the person's tokens (a device id, pseudonym or contact hash)."""
    mask = np.zeros(table.num_rows, dtype=bool)
    if table.num_rows == 0:
        return mask
    tokens = sorted(person.tokens)
    for name in table.column_names:
        column = _plain(table.column(name))
        kind = column.type
        integer, text = pa.types.is_integer(kind), pa.types.is_string(kind) or pa.types.is_large_string(kind)
        hit = None
        if CUSTOMER_COLUMN.search(name) and integer:
            hit = _isin(column, sorted(person.accounts), pa.int64())
        elif CUSTOMER_COLUMN.search(name) and text:
            hit = _isin(column, sorted(person.account_texts | person.pseudonyms), pa.string())
        elif name == "identifier" and text:
            hit = _isin(column, sorted(person.account_texts | person.anonymous_ids), pa.string())
        elif name == "unit_id" and (integer or text):
            values = sorted(person.accounts) if integer else sorted(person.account_texts)
            hit = _isin(column, values, pa.int64() if integer else pa.string())
            if "experiment_id" in table.column_names and customer_experiments is not None:
                hit &= _isin(_plain(table.column("experiment_id")), sorted(customer_experiments), pa.string())
            elif "unit" in table.column_names:
                hit &= np.asarray(_plain(table.column("unit")).to_pandas() == "customer")
        elif name in _ORDER_COLUMNS and integer:
            hit = _isin(column, sorted(person.order_ids | (journeys if name == "journey_id" else frozenset())),
                        pa.int64())
        elif text and tokens:
            hit = np.zeros(table.num_rows, dtype=bool)
            for token in tokens:
                hit |= np.asarray(pc.fill_null(pc.match_substring(column, token), False))
        if hit is not None:
            mask |= hit
    return mask


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column


def _isin(column: pa.ChunkedArray, values: list, kind: pa.DataType) -> np.ndarray:
    if not values:
        return np.zeros(len(column), dtype=bool)
    if pa.types.is_integer(kind) and not pa.types.is_integer(column.type):
        return np.zeros(len(column), dtype=bool)
    target = column.type if pa.types.is_integer(column.type) and pa.types.is_integer(kind) else kind
    try:
        value_set = pa.array(values, type=target)
    except (pa.ArrowInvalid, OverflowError):  # an id outside the column's range cannot be in it
        value_set = pa.array([v for v in values if _fits(v, target)], type=target)
    return np.asarray(pc.fill_null(pc.is_in(column, value_set=value_set), False))


def _fits(value: int, kind: pa.DataType) -> bool:
    try:
        pa.array([value], type=kind)
        return True
    except (pa.ArrowInvalid, OverflowError):
        return False


def _journeys_of(paths: Iterable[Path], person: Person) -> frozenset[int]:
    """The person's journey ids in one run folder: rows of a Parquet file with a journey and a customer column."""
    journeys: set[int] = set()
    for path in paths:
        names = pq.read_schema(path).names
        customer = [n for n in names if CUSTOMER_COLUMN.search(n)]
        if "journey_id" in names and customer:
            table = pq.read_table(path, columns=["journey_id", *customer])
            mask = person_rows(table.select(customer), person)
            journeys |= {int(j) for j in np.asarray(table.column("journey_id"))[mask]}
    return frozenset(journeys)


def rewrite_parquet(path: Path, person: Person, **kwargs: Any) -> int:
    """Rewrite ``path`` without the person's rows (a temp file, then ``os.replace``); returns rows removed."""
    table = pq.read_table(path)
    mask = person_rows(table, person, **kwargs)
    removed = int(mask.sum())
    if removed:
        _replace(path, lambda tmp: pq.write_table(table.filter(pa.array(~mask)), tmp))
    return removed


def _replace(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.erasing")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def scrub_json(node: Any, person: Person) -> tuple[Any, int]:
    """``node`` (parsed JSON) without the person: rows of a split-orient table (``{"columns", "data"}``, MLflow
    input examples and logged tables), records (dicts in a list) naming them, example values of a Great
    Expectations result on a customer column, and their tokens anywhere. Returns (new node, items removed)."""
    return _scrub(node, person, listed_ids=False)


def _is_account(value: Any, person: Person) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value in person.accounts
    if isinstance(value, float):
        return value.is_integer() and int(value) in person.accounts
    return isinstance(value, str) and (value in person.account_texts or value in person.pseudonyms)


def _names_person(value: Any, person: Person) -> bool:
    return isinstance(value, str) and any(token in value for token in person.tokens)


def _is_id_name(name: object) -> bool:
    return isinstance(name, str) and (bool(CUSTOMER_COLUMN.search(name)) or name in ("identifier", "unit_id"))


def _scrub(node: Any, person: Person, listed_ids: bool) -> tuple[Any, int]:
    """``listed_ids``: the values listed below here are customer ids (a customer column's examples)."""
    removed = 0
    if isinstance(node, dict):
        columns, data = node.get("columns"), node.get("data")
        if isinstance(columns, list) and isinstance(data, list) and all(isinstance(c, str) for c in columns):
            ids = [i for i, c in enumerate(columns) if _is_id_name(c)]
            kept = [row for row in data if not (isinstance(row, list) and (
                any(i < len(row) and _is_account(row[i], person) for i in ids)
                or any(_names_person(v, person) for v in row)))]
            removed += len(data) - len(kept)
            node = {**node, "data": kept}
        config = node.get("expectation_config")
        kwargs = (config.get("kwargs") or {}) if isinstance(config, dict) else {}
        expectation_on_ids = any(_is_id_name(c) for c in [kwargs.get("column"), *(kwargs.get("column_list") or [])])
        out = {}
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                out[key], count = _scrub(value, person, listed_ids or _is_id_name(key)
                                         or (key == "result" and expectation_on_ids))
            elif (_is_id_name(key) and _is_account(value, person)) or _names_person(value, person):
                out[key], count = None, 1
            else:
                out[key], count = value, 0
            removed += count
        return out, removed
    if isinstance(node, list):
        kept = []
        for item in node:
            if isinstance(item, dict):
                if _record_names_person(item, person) or (listed_ids and _is_account(item.get("value"), person)):
                    removed += 1
                    continue
            elif not isinstance(item, list) and (_names_person(item, person)
                                                 or (listed_ids and _is_account(item, person))):
                removed += 1
                continue
            scrubbed, count = _scrub(item, person, listed_ids)
            kept.append(scrubbed)
            removed += count
        return kept, removed
    return node, removed


def _record_names_person(record: dict, person: Person) -> bool:
    """A record (a dict in a list) is the person's when a customer-id field holds them or any field names them."""
    return any((_is_id_name(key) and _is_account(value, person)) or _names_person(value, person)
               for key, value in record.items() if not isinstance(value, (dict, list)))


def rewrite_json(path: Path, person: Person) -> int:
    """Rewrite a JSON file without the person (:func:`scrub_json`); returns items removed."""
    try:
        node = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return rewrite_other(path, person)
    scrubbed, removed = scrub_json(node, person)
    if removed:
        indent = 1 if path.read_text().startswith("{\n") else None
        _replace(path, lambda tmp: tmp.write_text(json.dumps(scrubbed, indent=indent, default=str)))
    return removed


def rewrite_lines(path: Path, person: Person) -> int:
    """Rewrite a text file (a log) without the lines naming the person (a token, or an account id as a whole
    number); returns lines removed."""
    pattern = person.number_pattern()
    lines = path.read_text(errors="replace").splitlines(keepends=True)
    kept = [line for line in lines if not (any(t in line for t in person.tokens)
                                            or (pattern is not None and pattern.search(line)))]
    if len(kept) != len(lines):
        _replace(path, lambda tmp: tmp.write_text("".join(kept)))
    return len(lines) - len(kept)


def rewrite_csv(path: Path, person: Person) -> int:
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    as_numbers = {c: pd.to_numeric(frame[c], errors="coerce") for c in frame.columns if CUSTOMER_COLUMN.search(c)}
    mask = person_rows(table, person)
    for values in as_numbers.values():
        mask |= values.isin(sorted(person.accounts)).to_numpy()
    if mask.any():
        _replace(path, lambda tmp: frame.loc[~mask].to_csv(tmp, index=False))
    return int(mask.sum())


def rewrite_other(path: Path, person: Person) -> int:
    """Any other file: deleted if its bytes hold one of the person's tokens (it cannot be rewritten safely);
    returns 1 if deleted."""
    if not person.tokens:
        return 0
    data = path.read_bytes()
    if any(token.encode() in data for token in person.tokens):
        path.unlink()
        return 1
    return 0


def _is_model_file(path: Path, root: Path) -> bool:
    """Whether ``path`` belongs to a logged model (a folder above it, up to ``root``, holds an ``MLmodel``)."""
    for folder in path.parents:
        if (folder / "MLmodel").exists():
            return True
        if folder == root:
            return False
    return False


def erase_files(root: Path, person: Person, report: ErasureReport, label: str, *,
                customer_experiments: frozenset[str] | None = None, keep_models: bool = False) -> None:
    """Remove the person from every file under ``root``, grouped by its top folder (a run date, an MLflow run):
    journeys are matched per group. Counts go to ``report`` under ``label``."""
    if not root.is_dir():
        return
    groups: dict[Path, list[Path]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".erasing")):
        top = root / path.relative_to(root).parts[0]
        groups.setdefault(top, []).append(path)
    for paths in groups.values():
        parquets = [p for p in paths if p.suffix == ".parquet"]
        journeys = _journeys_of(parquets, person)
        rewritten_json: set[Path] = set()
        for path in paths:
            suffix = path.suffix.lower()
            if suffix == ".parquet":
                count = rewrite_parquet(path, person, journeys=journeys, customer_experiments=customer_experiments)
                report.add(f"{label}: Parquet rows", count)
                report.add(f"{label}: Parquet files rewritten", int(count > 0))
            elif suffix == ".json":
                count = rewrite_json(path, person) if path.exists() else 0
                if count:
                    rewritten_json.add(path.with_suffix(""))
                report.add(f"{label}: JSON items", count)
                report.add(f"{label}: JSON files rewritten", int(count > 0))
            elif suffix == ".csv":
                report.add(f"{label}: CSV rows", rewrite_csv(path, person))
            elif suffix in _TEXT_SUFFIXES:
                report.add(f"{label}: log lines", rewrite_lines(path, person))
        for path in paths:
            suffix = path.suffix.lower()
            if suffix in (".parquet", ".json", ".csv", *_TEXT_SUFFIXES) or not path.exists():
                continue
            if suffix == ".html" and path.with_suffix("") in rewritten_json:
                path.unlink()  # a data docs page shows the examples its JSON result held
                report.add(f"{label}: files deleted", 1)
                continue
            if keep_models and _is_model_file(path, root):
                data = path.read_bytes()
                if any(token.encode() in data for token in person.tokens):
                    report.left[f"{label}: model file {path.relative_to(root)}"] = 1
                    logger.warning("a registered model's file holds the erased person's pseudonym; retrain its "
                                   "family to forget them: %s", path)
                continue
            report.add(f"{label}: files deleted", rewrite_other(path, person))
