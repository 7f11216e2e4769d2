"""Probabilistic matching of duplicate accounts: pairs of customer ids whose contact records look like one person.

**The model.** Splink 4's Fellegi-Sunter model on its DuckDB backend (in-process, nothing to run beside it).
Each candidate pair of accounts falls, per *comparison*, in one level (agree exactly, agree approximately,
disagree, a value missing); a level carries ``m`` = P(level | same person) and ``u`` = P(level | different
people), and the pair's match weight is the prior log-odds ``log2 lambda / (1 - lambda)`` (lambda: the share
of all pairs that are one person) plus ``log2 m / u`` of each comparison (a missing value adds nothing);
``match_probability`` is its logistic.  Training needs no labels:

1. ``u`` from a seeded random sample of :data:`U_SAMPLE_PAIRS` pairs (two random accounts are almost always
   two people);
2. ``m`` of every comparison but the e-mail by Splink's expectation maximisation on the pairs that share an
   e-mail hash (nearly all one person, so they show how a person's two records differ);
3. lambda and the e-mail's ``m`` by EM over every candidate pair with the rest held (:func:`_fit_lambda`,
   which says why it is not Splink's own estimate).

**The comparisons** (:data:`MATCH_FIELDS` of ``shop.customer_contacts``):

- ``email_hash``: exact.  An address is personal: agreement is near-proof, disagreement weak evidence
  (people open a second account with another address).
- ``household``: last name (Jaro-Winkler >= :data:`LAST_NAME_CLOSE`), postcode (exact) and phone hash
  (exact) *jointly*, in levels from "all three agree" down to "none".  Fellegi-Sunter assumes comparisons
  independent given the match status; a household breaks that (its members share the last name, the
  postcode and often a landline while being different people), and three separate comparisons counted the
  household three times: spouses sharing a landline scored 0.99 and precision fell to 0.85.  One joint
  comparison counts it once (its ``u`` for "all three agree" is the share of random pairs that are such
  household members).  Phones given on both sides and different split the "last name and postcode" level.
- ``first_name``: exact (term-frequency adjusted: two Jameses agree by chance far more often than two
  Felixes), one edit apart (Damerau-Levenshtein <= 1: typos), Jaro-Winkler >= :data:`FIRST_NAME_NEAR`, else.
  What tells household members apart; a nickname (Bill for William) reads as a disagreement.
- ``birth_date``: exact (term-frequency adjusted: placeholder dates repeat), same year and month, else.

**Assumptions.** Comparisons independent given the match status (the household fields made one comparison so
that this roughly holds); e-mail-sharing duplicates differ in their other fields like the other duplicates;
hashes are of normalised values (the contract).  A level training never observed keeps a prior: ``u`` one
over the number of pairs sampled (it was rarer than that), ``m`` from ``_PRIOR``; a store of fewer than
:data:`MIN_ACCOUNTS_TO_TRAIN` accounts keeps every prior (``u`` too: a sample of a handful of accounts says
nothing about strangers).  Probabilities are the model's, not calibrated: two accounts with the same full name
and postcode and nothing else score lower than the truth (household members never share a first name, which
an independent comparison cannot know), so such duplicates are the ones missed at 0.5.

**Candidate pairs (blocking).** Only pairs that agree exactly on all fields of one of :data:`BLOCKING_RULES`
are scored.  The union keeps duplicates that changed one or two fields: a shared e-mail or phone; the full name
(moved, new contact points); last name + postcode (nickname, first-name typo); first name + postcode
(last-name typo or change); birth date with the postcode, the last or the first name (two changes).  On the
synthetic contacts 99 % of true pairs are candidates, and the blocks stay small because every rule but the
contact hashes pairs a name with a place or a date.

**Why Splink** (``benchmarks/identity_matching.py``, 3 seeds, pairs at >= 0.5, 2 shared cores): Splink with
this model found 0.97-0.99 precision / 0.94-0.95 recall at 5,000 people in 7-9 s and 0.98 / 0.93-0.94 at
100,000 in 9-12 s.  recordlinkage 0.16 (its unsupervised ECM classifier on binary agreements; no release since
2023-07) gave 1.00 / 0.58-0.68 at 5,000 and, its EM landing elsewhere, 0.10 / 0.94-0.96 at 100,000; it
cannot express the joint household comparison.  dedupe 3.0.3 (last release 2024-08) cannot train without
labels (active learning); with an oracle answering 50 of its questions from the truth it gave 0.97-0.99 /
0.85-0.93 at 5,000 in 60-80 s (recall 0.81 on a rerun of one seed: not reproducible) and 1.00 / 0.49 at
100,000 in 146 s, and it needs
``BTrees < 6`` (its canopy index calls a method BTrees 6 removed) though its requirements allow 6.  All three install beside requirements.lock without changing a pin.  Splink 5.0.0
(2026-09) changed the API (inputs registered as Splink frames, ``bf_`` columns become ``mw_``); 4.0.17
(2026-09) is the maintained 4 line pinned here.  Splink ignores ``seed=0`` (``if seed:``), so the sample is
drawn with ``seed + 1``.

:func:`match_accounts` returns the pairs at or above a threshold (``customer_id_l < customer_id_r``) with the
fields that agreed and disagreed; ``ml.identity.stitch`` turns pairs into people.  Pure: the input frame is
not modified, nothing is written.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: The columns of :func:`match_accounts`'s result.
MATCH_COLUMNS = ("customer_id_l", "customer_id_r", "match_probability", "agreed", "disagreed")
#: The contact fields compared (``shop.customer_contacts`` minus ``customer_id``), in the order they are explained.
MATCH_FIELDS = ("email_hash", "phone_hash", "first_name", "last_name", "postcode", "birth_date")
#: Jaro-Winkler similarity from which two last names agree (a typo in a long name, not Smith / Smyth's cousin).
LAST_NAME_CLOSE = 0.92
#: Jaro-Winkler similarity of the weakest first-name agreement level.
FIRST_NAME_NEAR = 0.88
#: Candidate pairs: accounts that agree exactly on all the fields of at least one rule (module docstring).
BLOCKING_RULES = (("email_hash",), ("phone_hash",), ("first_name", "last_name"), ("last_name", "postcode"),
                  ("first_name", "postcode"), ("birth_date", "postcode"), ("birth_date", "last_name"),
                  ("birth_date", "first_name"))
#: Splink's EM session: pairs sharing an e-mail are (nearly) all one person, so they teach the m of the other
#: fields (not how many pairs match overall: :func:`_fit_lambda`).
EMAIL_BLOCK = ("email_hash",)
#: Random pairs sampled to estimate ``u``.
U_SAMPLE_PAIRS = 5_000_000
#: Fewer accounts than this keep the u priors: a random sample of them says little about strangers.
MIN_ACCOUNTS_TO_TRAIN = 200
#: A training session runs only with at least this many pairs in its block.
MIN_TRAINING_PAIRS = 10

# Agreement of one field, in DuckDB SQL over the pair's two records l and r (NULL when a value is missing).
_AGREES = {
    "email_hash": "l.email_hash = r.email_hash",
    "phone_hash": "l.phone_hash = r.phone_hash",
    "first_name": (f"(l.first_name = r.first_name OR damerau_levenshtein(l.first_name, r.first_name) <= 1 "
                   f"OR jaro_winkler_similarity(l.first_name, r.first_name) >= {FIRST_NAME_NEAR})"),
    "last_name": f"jaro_winkler_similarity(l.last_name, r.last_name) >= {LAST_NAME_CLOSE}",
    "postcode": "l.postcode = r.postcode",
    "birth_date": "substr(l.birth_date, 1, 7) = substr(r.birth_date, 1, 7)",
}
# Priors per comparison, one (m, u) per non-null level in order.  m: rough shares of true duplicates per level,
# EM's starting values, kept for a level no session observed.  u: orders of magnitude on the synthetic contacts
# of ~5,000 accounts, used only for stores under MIN_ACCOUNTS_TO_TRAIN accounts (a random sample of a handful of
# accounts says nothing of how often strangers agree).
_PRIOR = {
    "email_hash": ((0.3, 1e-6), (0.7, 1.0)),
    "household": ((0.25, 1e-6), (0.05, 1e-7), (0.01, 1e-7), (0.1, 1e-5), (0.35, 2e-5), (0.15, 5e-3), (0.07, 4e-3),
                  (0.02, 0.99)),
    "first_name": ((0.8, 0.013), (0.08, 1.5e-3), (0.04, 1e-3), (0.08, 0.985)),
    "birth_date": ((0.9, 6e-5), (0.05, 1.7e-3), (0.05, 0.998)),
}


def empty_matches() -> pd.DataFrame:
    """No pairs, in the result's columns and dtypes."""
    return pd.DataFrame({
        "customer_id_l": pd.Series(dtype="int64"), "customer_id_r": pd.Series(dtype="int64"),
        "match_probability": pd.Series(dtype="float64"), "agreed": pd.Series(dtype="object"),
        "disagreed": pd.Series(dtype="object"),
    })


def match_accounts(contacts: pd.DataFrame, threshold: float, seed: int = 0) -> pd.DataFrame:
    """Pairs of accounts that are one person with probability at least ``threshold``.

    ``contacts``: ``shop.customer_contacts`` rows (``customer_id`` and any of :data:`MATCH_FIELDS`; missing
    columns and values are fine).  Returns one row per candidate pair with ``match_probability >= threshold``:
    ``customer_id_l < customer_id_r`` (int64), ``match_probability`` (float64), ``agreed`` / ``disagreed``
    (the fields that agreed / were given on both sides and disagreed, comma-separated in :data:`MATCH_FIELDS`
    order), sorted by the two ids.  Fewer than three accounts, or no field given, give no pairs.
    Deterministic for a seed (the random sample of pairs that estimates ``u``).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    records = normalised_contacts(contacts)
    fields = [field for field in MATCH_FIELDS if records[field].notna().any()]
    if len(records) < 3 or not fields:
        return empty_matches()
    from splink import DuckDBAPI, Linker

    settings = _settings(fields, len(records))
    with _quiet_splink():
        trained = _train(records, settings, fields, seed)
        linker = Linker(records, trained, DuckDBAPI(_single_threaded()), set_up_basic_logging=False)
        # Splink filters on the weight (a hair below the threshold's: rounding); ours on the probability.
        threshold_weight = _weight(threshold) - 1e-9 if 0.0 < threshold < 1.0 else None
        predictions = linker.inference.predict(threshold_match_weight=threshold_weight).as_pandas_dataframe()
    pairs = predictions.loc[predictions["match_probability"] >= threshold, ["customer_id_l", "customer_id_r",
                                                                             "match_probability"]]
    logger.info("matched %d account pairs at probability >= %.3f among %d accounts", len(pairs), threshold,
                len(records))
    if pairs.empty:
        return empty_matches()
    return _explained(pairs, records, fields)


def normalised_contacts(contacts: pd.DataFrame) -> pd.DataFrame:
    """The fields normalised for comparison: hashes lower-case, names lower-case, postcodes upper-case without
    spaces, birth dates ``YYYY-MM-DD`` text; blanks as missing; one row per customer id."""
    frame = contacts.loc[contacts["customer_id"].notna()] if "customer_id" in contacts else contacts.iloc[:0]
    out = pd.DataFrame({"customer_id": frame.get("customer_id", pd.Series(dtype="int64")).astype("int64")})

    def text(column: str) -> pd.Series:
        if column not in frame:
            return pd.Series(pd.NA, index=frame.index, dtype="string")
        values = frame[column].astype("string").str.strip()
        return values.where(values != "")

    out["email_hash"] = text("email_hash").str.lower()
    out["phone_hash"] = text("phone_hash").str.lower()
    out["first_name"] = text("first_name").str.lower().str.replace(r"\s+", " ", regex=True)
    out["last_name"] = text("last_name").str.lower().str.replace(r"\s+", " ", regex=True)
    out["postcode"] = text("postcode").str.upper().str.replace(r"\s+", "", regex=True)
    birth = (pd.to_datetime(frame["birth_date"], errors="coerce") if "birth_date" in frame
             else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]"))
    out["birth_date"] = birth.dt.strftime("%Y-%m-%d").astype("string")
    duplicated = out["customer_id"].duplicated()
    if duplicated.any():
        logger.warning("contacts: %d repeated customer ids, keeping each one's first row", int(duplicated.sum()))
    return out.loc[~duplicated].reset_index(drop=True)


def _settings(fields: list[str], n_records: int) -> dict:
    """Splink settings over the fields the store gives (module docstring)."""
    from splink import SettingsCreator, block_on

    comparisons = []
    if "email_hash" in fields:
        comparisons.append(_email())
    if {"last_name", "postcode", "phone_hash"} & set(fields):
        comparisons.append(_household("phone_hash" in fields))
    if "first_name" in fields:
        comparisons.append(_first_name())
    if "birth_date" in fields:
        comparisons.append(_birth_date())
    rules = [block_on(*rule) for rule in BLOCKING_RULES if set(rule) <= set(fields)]
    expected_pairs = 0.02 * n_records  # prior: 2 % of accounts a duplicate, until EM estimates lambda
    creator = SettingsCreator(
        link_type="dedupe_only", unique_id_column_name="customer_id", comparisons=comparisons,
        blocking_rules_to_generate_predictions=rules, retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
        probability_two_random_records_match=min(0.5, expected_pairs / max(1.0, n_records * (n_records - 1) / 2)),
    )
    settings = creator.get_settings("duckdb").as_dict()
    if n_records >= MIN_ACCOUNTS_TO_TRAIN:  # u from the data; a level the sample misses gets a floor (_train)
        for comparison in settings["comparisons"]:
            for level in comparison["comparison_levels"]:
                level.pop("u_probability", None)
    return settings


def _primed(level, prior: tuple[float, float]):
    """``level`` with its (m, u) prior."""
    m, u = prior
    return level.configure(m_probability=m, u_probability=u)


def _email():
    import splink.comparison_level_library as cll
    from splink.comparison_library import CustomComparison

    prior = _PRIOR["email_hash"]
    return CustomComparison(output_column_name="email_hash", comparison_levels=[
        cll.NullLevel("email_hash"),
        _primed(cll.ExactMatchLevel("email_hash"), prior[0]),
        _primed(cll.ElseLevel(), prior[1]),
    ])


def _household(with_phone: bool):
    """Last name, postcode and phone jointly (module docstring); NULLs make a condition false."""
    import splink.comparison_level_library as cll
    from splink.comparison_library import CustomComparison

    phone, differ = "phone_hash_l = phone_hash_r", "phone_hash_l <> phone_hash_r"
    last = f"jaro_winkler_similarity(last_name_l, last_name_r) >= {LAST_NAME_CLOSE}"
    postcode = "postcode_l = postcode_r"
    levels = [
        (f"{phone} AND {last} AND {postcode}", "phone, last name and postcode"),
        (f"{phone} AND ({last} OR {postcode})", "phone and last name or postcode"),
        (phone, "phone only"),
        (f"{last} AND {postcode} AND {differ}", "last name and postcode, phones differ"),
        (f"{last} AND {postcode}", "last name and postcode"),
        (last, "last name only"),
        (postcode, "postcode only"),
    ]
    prior = _PRIOR["household"]
    chosen = [(level, p) for level, p in zip(levels, prior) if with_phone or "phone" not in level[1]]
    missing = " AND ".join(f"({column}_l IS NULL OR {column}_r IS NULL)"
                           for column in ("last_name", "postcode", *(("phone_hash",) if with_phone else ())))
    return CustomComparison(output_column_name="household", comparison_levels=[
        cll.CustomLevel(missing, "none of them given on both sides").configure(is_null_level=True),
        *(_primed(cll.CustomLevel(sql, label), p) for (sql, label), p in chosen),
        _primed(cll.ElseLevel(), prior[-1]),
    ])


def _first_name():
    import splink.comparison_level_library as cll
    from splink.comparison_library import CustomComparison

    prior = _PRIOR["first_name"]
    return CustomComparison(output_column_name="first_name", comparison_levels=[
        cll.NullLevel("first_name"),
        _primed(cll.ExactMatchLevel("first_name", term_frequency_adjustments=True), prior[0]),
        _primed(cll.DamerauLevenshteinLevel("first_name", 1), prior[1]),
        _primed(cll.JaroWinklerLevel("first_name", FIRST_NAME_NEAR), prior[2]),
        _primed(cll.ElseLevel(), prior[3]),
    ])


def _birth_date():
    import splink.comparison_level_library as cll
    from splink.comparison_library import CustomComparison

    prior = _PRIOR["birth_date"]
    return CustomComparison(output_column_name="birth_date", comparison_levels=[
        cll.NullLevel("birth_date"),
        _primed(cll.ExactMatchLevel("birth_date", term_frequency_adjustments=True), prior[0]),
        _primed(cll.CustomLevel("substr(birth_date_l, 1, 7) = substr(birth_date_r, 1, 7)", "same year and month"),
                prior[1]),
        _primed(cll.ElseLevel(), prior[2]),
    ])


def _train(records: pd.DataFrame, settings: dict, fields: list[str], seed: int) -> dict:
    """The trained model's settings (module docstring): ``u`` by random sampling, ``m`` by Splink's EM on the
    pairs that share an e-mail (levels it did not observe keep their priors), then lambda and the e-mail's ``m``
    by :func:`_fit_lambda` over the candidate pairs."""
    from splink import DuckDBAPI, Linker, block_on

    n = len(records)
    linker = Linker(records, settings, DuckDBAPI(_single_threaded()), set_up_basic_logging=False)
    if n >= MIN_ACCOUNTS_TO_TRAIN:
        linker.training.estimate_u_using_random_sampling(max_pairs=U_SAMPLE_PAIRS, seed=seed + 1)
    if set(EMAIL_BLOCK) <= set(fields) and _pairs_sharing(records, EMAIL_BLOCK) >= MIN_TRAINING_PAIRS:
        linker.training.estimate_parameters_using_expectation_maximisation(block_on(*EMAIL_BLOCK))
    else:
        logger.info("matching: fewer than %d pairs share an e-mail, m at its priors", MIN_TRAINING_PAIRS)
    model = linker.misc.save_model_to_json()
    _fill_untrained(model, settings, u_floor=1.0 / max(1.0, min(U_SAMPLE_PAIRS, n * (n - 1) / 2)))
    if n >= MIN_ACCOUNTS_TO_TRAIN:
        _fit_lambda(model, records)
    return model


def _fit_lambda(model: dict, records: pd.DataFrame, iterations: int = 200, tolerance: float = 1e-9) -> None:
    """Expectation maximisation of lambda and of the e-mail comparison's ``m`` alone, the other parameters held,
    over every candidate pair (pairs outside the blocking rules taken as different people).

    Written here because Splink's estimate of lambda from an EM session (the block's match share scaled back by
    the Bayes factors of the blocking agreements) has no finite answer when the block holds only matches
    (odds 1 / 0), which a block such as "same first name and birth date" often does in a store of a few thousand
    accounts; and because an EM session with every ``m`` free lets them absorb the block's non-matches.  With
    the other comparisons held, the likelihood in these two parameters has one maximum.
    """
    from splink import DuckDBAPI, Linker

    scoring = dict(model, retain_intermediate_calculation_columns=True)
    candidates = Linker(records, scoring, DuckDBAPI(_single_threaded()), set_up_basic_logging=False).inference.predict(
    ).as_pandas_dataframe()
    n = len(records)
    all_pairs = n * (n - 1) / 2
    prior = model["probability_two_random_records_match"]
    if candidates.empty:
        return
    email = next((c for c in model["comparisons"] if c["output_column_name"] == "email_hash"), None)
    email_bf = candidates["bf_email_hash"].to_numpy(dtype=float) if email else np.ones(len(candidates))
    # log2 Bayes factor of everything but lambda and the e-mail
    rest = candidates["match_weight"].to_numpy(dtype=float) - math.log2(prior / (1 - prior)) - np.log2(email_bf)
    agree, disagree = email_bf > 1.0, email_bf < 1.0
    if email:
        levels = [level for level in email["comparison_levels"] if not level.get("is_null_level")]
        u_agree, u_else = levels[0]["u_probability"], levels[1]["u_probability"]
        m_agree = levels[0]["m_probability"]
    lam = prior
    for _ in range(iterations):
        bayes = np.exp2(rest)
        if email:
            bayes = bayes * np.where(agree, m_agree / u_agree, np.where(disagree, (1 - m_agree) / u_else, 1.0))
        odds = lam / (1 - lam) * bayes
        p = odds / (1 + odds)
        new_lam = float(np.clip(p.sum() / all_pairs, 1e-12, 0.5))
        if email and p[agree | disagree].sum() > 0:
            m_agree = float(np.clip(p[agree].sum() / p[agree | disagree].sum(), 1e-6, 1 - 1e-6))
        if abs(new_lam - lam) <= tolerance * lam:
            lam = new_lam
            break
        lam = new_lam
    model["probability_two_random_records_match"] = lam
    if email:
        levels[0]["m_probability"], levels[1]["m_probability"] = m_agree, 1 - m_agree
    logger.info("matching: lambda %.3g (%.1f expected duplicate pairs), e-mail shared by %.0f %% of them", lam,
                lam * all_pairs, 100 * m_agree if email else float("nan"))


def _pairs_sharing(records: pd.DataFrame, block: tuple[str, ...]) -> int:
    sizes = records.dropna(subset=list(block)).groupby(list(block)).size()
    return int((sizes * (sizes - 1) // 2).sum())


def _fill_untrained(trained: dict, prior: dict, u_floor: float) -> None:
    """Give every level a probability: ``m`` its prior, ``u`` ``u_floor`` where training left none."""
    for comparison, prior_comparison in zip(trained["comparisons"], prior["comparisons"]):
        for level, prior_level in zip(comparison["comparison_levels"], prior_comparison["comparison_levels"]):
            if level.get("is_null_level"):
                continue
            if not _is_probability(level.get("m_probability")):
                level["m_probability"] = prior_level.get("m_probability")
            if not _is_probability(level.get("u_probability")):
                level["u_probability"] = u_floor
    if not _is_probability(trained.get("probability_two_random_records_match")):
        trained["probability_two_random_records_match"] = prior["probability_two_random_records_match"]


def _is_probability(value: object) -> bool:
    return isinstance(value, float | int) and 0.0 < float(value) <= 1.0


def _weight(probability: float) -> float:
    """Match weight (log2 odds) of a probability in (0, 1)."""
    return math.log2(probability / (1.0 - probability))


def _single_threaded():
    """A DuckDB connection on one thread: parallel aggregation sums floating-point numbers in varying order, and a
    pair whose probability lands a hair either side of the threshold would make re-runs of one night differ."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads TO 1")
    return con


def _explained(pairs: pd.DataFrame, records: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """``pairs`` with ids ordered, ``agreed`` / ``disagreed`` per field (:data:`_AGREES`), sorted."""
    import duckdb

    low = np.minimum(pairs["customer_id_l"], pairs["customer_id_r"]).astype("int64")
    high = np.maximum(pairs["customer_id_l"], pairs["customer_id_r"]).astype("int64")
    ordered = pd.DataFrame({"customer_id_l": low.to_numpy(), "customer_id_r": high.to_numpy(),
                            "match_probability": pairs["match_probability"].astype("float64").to_numpy()})
    verdicts = ", ".join(f"({_AGREES[field]}) AS {field}" for field in fields)
    with duckdb.connect() as con:
        con.register("pairs", ordered)
        con.register("records", records)
        agreement = con.execute(f"""
            SELECT p.customer_id_l, p.customer_id_r, {verdicts}
            FROM pairs p
            JOIN records l ON l.customer_id = p.customer_id_l
            JOIN records r ON r.customer_id = p.customer_id_r
        """).df()
    out = ordered.merge(agreement, on=["customer_id_l", "customer_id_r"], how="left", validate="one_to_one")
    verdict = out[fields].astype("boolean")
    out["agreed"] = _field_lists(verdict.fillna(False).to_numpy(dtype=bool), fields)
    out["disagreed"] = _field_lists((~verdict).fillna(False).to_numpy(dtype=bool), fields)
    out = out[list(MATCH_COLUMNS)].sort_values(["customer_id_l", "customer_id_r"], kind="stable")
    return out.reset_index(drop=True).astype({"agreed": "object", "disagreed": "object"})


def _field_lists(mask: np.ndarray, fields: list[str]) -> list[str]:
    """Per row of ``mask`` (rows x fields), the fields where it is true, comma-separated."""
    return [", ".join(field for field, flag in zip(fields, row) if flag) for row in mask.tolist()]


@contextlib.contextmanager
def _quiet_splink() -> Iterator[None]:
    """Splink warns for every level a training session did not observe (expected: a session learns nothing
    about the fields it blocks on, and the gaps are filled with priors); keep its log at ERROR meanwhile."""
    splink_logger = logging.getLogger("splink")
    level = splink_logger.level
    splink_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        splink_logger.setLevel(level)
