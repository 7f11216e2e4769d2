"""Realistic contact values for the synthetic identities (:mod:`revopt.sample_data.identity`): first and last
names with Zipf-like frequencies (so different people share common names), UK-style postcodes, e-mail addresses
and phone numbers, hashed the way a store would hash them, and the typos of a second account.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math

import numpy as np

#: Zipf-Mandelbrot offsets of the name frequencies: weight 1 / (rank + offset)
FIRST_NAME_OFFSET, LAST_NAME_OFFSET = 10.0, 10.0
CONTACTS_REFERENCE_DATE = dt.date(2024, 1, 1)
_LETTERS = "abcdefghijklmnopqrstuvwxyz"

#: common first names, most frequent first, with the nicknames a second account may use
FIRST_NAMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("James", ("Jim", "Jamie")), ("Mary", ("Molly",)), ("John", ("Jack", "Johnny")), ("Sarah", ("Sally",)),
    ("David", ("Dave",)), ("Emma", ("Em",)), ("Michael", ("Mike", "Mick")), ("Laura", ()),
    ("Robert", ("Rob", "Bob", "Bobby")), ("Elizabeth", ("Liz", "Beth", "Lizzie")), ("William", ("Will", "Bill")),
    ("Jennifer", ("Jen", "Jenny")), ("Thomas", ("Tom", "Tommy")), ("Jessica", ("Jess",)),
    ("Daniel", ("Dan", "Danny")), ("Katherine", ("Kate", "Katie", "Kathy")), ("Christopher", ("Chris",)),
    ("Rebecca", ("Becky", "Becca")), ("Matthew", ("Matt",)), ("Rachel", ()), ("Andrew", ("Andy", "Drew")),
    ("Anna", ("Annie",)), ("Joseph", ("Joe", "Joey")), ("Hannah", ()), ("Richard", ("Rick", "Dick", "Richie")),
    ("Charlotte", ("Lottie", "Charlie")), ("Paul", ()), ("Sophie", ("Soph",)), ("Mark", ()), ("Emily", ("Em", "Emmy")),
    ("Peter", ("Pete",)), ("Amy", ()), ("Steven", ("Steve",)), ("Olivia", ("Liv", "Livvy")),
    ("Benjamin", ("Ben", "Benny")), ("Lucy", ()), ("Samuel", ("Sam", "Sammy")), ("Victoria", ("Vicky", "Tori")),
    ("Alexander", ("Alex", "Sandy")), ("Grace", ()), ("Anthony", ("Tony",)), ("Margaret", ("Maggie", "Peggy", "Meg")),
    ("Jonathan", ("Jon", "Jonny")), ("Susan", ("Sue", "Susie")), ("Edward", ("Ed", "Eddie", "Ted")),
    ("Patricia", ("Pat", "Patty", "Trish")), ("Nicholas", ("Nick", "Nicky")), ("Helen", ()),
    ("George", ()), ("Claire", ()), ("Oliver", ("Ollie",)), ("Alice", ("Ally",)), ("Harry", ()),
    ("Jane", ("Janie",)), ("Jack", ()), ("Lisa", ()), ("Henry", ("Harry", "Hank")), ("Karen", ()),
    ("Charles", ("Charlie", "Chuck")), ("Natalie", ("Nat",)), ("Stephen", ("Steve",)), ("Nicola", ("Nicky",)),
    ("Timothy", ("Tim", "Timmy")), ("Deborah", ("Debbie", "Deb")), ("Kevin", ("Kev",)), ("Julia", ("Jules",)),
    ("Simon", ()), ("Louise", ("Lou",)), ("Adam", ()), ("Caroline", ("Carrie",)), ("Ryan", ()),
    ("Christine", ("Chris", "Tina")), ("Luke", ()), ("Amanda", ("Mandy",)), ("Gary", ()), ("Lauren", ()),
    ("Philip", ("Phil",)), ("Ruth", ()), ("Martin", ("Marty",)), ("Joanne", ("Jo",)), ("Lewis", ("Lew",)),
    ("Megan", ("Meg",)), ("Jacob", ("Jake",)), ("Chloe", ()), ("Ian", ()), ("Zoe", ()), ("Nathan", ("Nate",)),
    ("Eleanor", ("Ellie", "Nell")), ("Ethan", ()), ("Abigail", ("Abby",)), ("Scott", ()),
    ("Frances", ("Fran", "Frankie")), ("Patrick", ("Pat", "Paddy")), ("Jacqueline", ("Jackie",)),
    ("Raymond", ("Ray",)), ("Isabel", ("Izzy", "Bella")), ("Gregory", ("Greg",)), ("Diana", ("Di",)),
    ("Frederick", ("Fred", "Freddie")), ("Teresa", ("Tess", "Terry")), ("Lucas", ("Luke",)), ("Maria", ()),
    ("Felix", ()), ("Ella", ()), ("Oscar", ()), ("Mia", ()), ("Leo", ()), ("Ava", ()), ("Noah", ()), ("Isla", ()),
    ("Jamal", ()), ("Aisha", ()), ("Mohammed", ("Mo",)), ("Fatima", ()), ("Ahmed", ()), ("Priya", ()),
    ("Rahul", ()), ("Mei", ()), ("Wei", ()), ("Yuki", ()), ("Lars", ()), ("Ingrid", ()), ("Pierre", ()),
    ("Camille", ()), ("Lukas", ()), ("Hanna", ()), ("Mateo", ()), ("Lucia", ()), ("Sven", ()), ("Greta", ()),
)
#: common last names, most frequent first; a long tail of place-like names follows them (last_names)
_COMMON_LAST_NAMES = (
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas", "Johnson",
    "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards", "Hughes", "Green", "Hall",
    "Lewis", "Harris", "Clarke", "Patel", "Jackson", "Wood", "Turner", "Martin", "Cooper", "Hill",
    "Ward", "Morris", "Moore", "Clark", "Lee", "King", "Baker", "Harrison", "Morgan", "Allen",
    "James", "Scott", "Phillips", "Watson", "Davis", "Parker", "Price", "Bennett", "Young", "Griffiths",
    "Mitchell", "Kelly", "Cook", "Carter", "Richardson", "Bailey", "Collins", "Bell", "Shaw", "Murphy",
    "Miller", "Cox", "Richards", "Khan", "Marshall", "Anderson", "Simpson", "Ellis", "Adams", "Singh",
    "Begum", "Wilkinson", "Foster", "Chapman", "Powell", "Webb", "Rogers", "Gray", "Mason", "Ali",
    "Hunt", "Hussain", "Campbell", "Matthews", "Owen", "Palmer", "Holmes", "Mills", "Barnes", "Knight",
    "Lloyd", "Butler", "Russell", "Barker", "Fisher", "Stevens", "Jenkins", "Murray", "Dixon", "Harvey",
    "Graham", "Pearson", "Ahmed", "Fletcher", "Walsh", "Kaur", "Gibson", "Howard", "Andrews", "Stewart",
    "Elliott", "Reynolds", "Saunders", "Payne", "Fox", "Ford", "Pearce", "Day", "Brooks", "West",
    "Lawrence", "Cole", "Atkinson", "Bradley", "Spencer", "Gill", "Dawson", "Ball", "Burton", "O'Brien",
    "Watts", "Rose", "Booth", "Perry", "Ryan", "Grant", "Wells", "Armstrong", "Francis", "Rees",
    "Hayes", "Hart", "Hudson", "Newman", "Barrett", "Webster", "Hunter", "Gregory", "Carr", "Lowe",
    "Page", "Marsh", "Riley", "Dunn", "Woods", "Parsons", "Berry", "Stone", "Reid", "Holland",
    "Hawkins", "Harding", "Porter", "Robertson", "Newton", "Oliver", "Reed", "Kennedy", "Williamson", "Bird",
    "Gardner", "Shah", "Dean", "Lane", "Cooke", "Bates", "Henderson", "Parry", "Burgess", "Bishop",
    "Walton", "Burns", "Nicholson", "Shepherd", "Ross", "Cross", "Long", "Freeman", "Warren", "Nicholls",
    "Hamilton", "Byrne", "Sutton", "McDonald", "Yates", "Hodgson", "Robson", "Curtis", "Hopkins", "O'Connor",
    "Mueller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
    "Martin", "Bernard", "Dubois", "Durand", "Lefebvre", "Moreau", "Laurent", "Garcia", "Rodriguez", "Nguyen",
    "de Jong", "Jansen", "de Vries", "van Dijk", "Bakker", "Visser", "Smit", "Meijer", "Chen", "Wang",
)
_LAST_NAME_STEMS = (
    "Ash", "Black", "Brad", "Brook", "Cart", "Chap", "Clay", "Cole", "Craw", "Dal", "Ed", "Fair", "Fen",
    "Gold", "Green", "Hal", "Hart", "Hay", "Hol", "Kings", "Lang", "Lind", "Mar", "Mid", "Mor", "New",
    "Nor", "Oak", "Pen", "Ral", "Red", "Ring", "Rox", "Sand", "Shel", "Stan", "Stock", "Sut", "Thorn",
    "Wal", "West", "Whit", "Wick", "Win", "Wood", "Wy", "Bram", "Cam", "Dun", "Elm",
)
_LAST_NAME_ENDINGS = (
    "ley", "ton", "field", "ford", "wood", "worth", "by", "ham", "well", "more", "wick", "stead", "bury",
    "croft", "dale", "cott", "ridge", "brook", "hurst", "land",
)
#: e-mail domains and their shares
_EMAIL_DOMAINS = (("gmail.com", 0.38), ("outlook.com", 0.14), ("hotmail.com", 0.12), ("yahoo.com", 0.11),
                  ("icloud.com", 0.09), ("gmx.de", 0.05), ("orange.fr", 0.04), ("proton.me", 0.03),
                  ("btinternet.com", 0.04))
#: two-letter postcode areas (a UK-like format: area + district, space, sector + unit)
_POSTCODE_AREA_LETTERS = "ABCDEFGHJKLMNPRSTUWY"
_POSTCODE_UNIT_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"


def sha256_hex(values: np.ndarray) -> np.ndarray:
    """SHA-256 hex of each value (None stays None)."""
    return np.asarray([None if v is None else hashlib.sha256(v.encode()).hexdigest() for v in values.tolist()],
                      dtype=object)


def zipf(rng: np.random.Generator, n_names: int, offset: float, size: int) -> np.ndarray:
    """Ranks 0..n_names-1 drawn with weight 1 / (rank + 1 + offset)."""
    weight = 1.0 / (np.arange(1, n_names + 1) + offset)
    return rng.choice(n_names, size=size, p=weight / weight.sum())


def last_names() -> np.ndarray:
    """The common last names, then the tail of stem + ending names not among them."""
    common = list(dict.fromkeys(_COMMON_LAST_NAMES))
    tail = [stem + ending for ending in _LAST_NAME_ENDINGS for stem in _LAST_NAME_STEMS]
    seen = set(common)
    return np.asarray(common + [name for name in tail if not (name in seen or seen.add(name))], dtype=object)


def unique_numbers(rng: np.random.Generator, n: int, space: int) -> np.ndarray:
    """``n`` distinct pseudo-random integers in ``[0, space)`` (``space`` below 2**33): an affine permutation
    ``(a k + b) mod space`` of ``k = 0..n-1`` with ``a`` coprime to ``space``."""
    k = np.arange(n, dtype=np.int64)
    return (k * _coprime(rng, space) + int(rng.integers(0, space))) % space


def postcode_pool(rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` distinct UK-like postcodes ('KT12 3AB')."""
    areas, units = len(_POSTCODE_AREA_LETTERS), len(_POSTCODE_UNIT_LETTERS)
    space = areas * areas * 99 * 10 * units * units
    code = (np.arange(size, dtype=np.int64) * _coprime(rng, space) + int(rng.integers(0, space))) % space
    code, unit2 = np.divmod(code, units)
    code, unit1 = np.divmod(code, units)
    code, sector = np.divmod(code, 10)
    code, district = np.divmod(code, 99)
    area1, area2 = np.divmod(code, areas)
    A, U = _POSTCODE_AREA_LETTERS, _POSTCODE_UNIT_LETTERS
    return np.asarray([f"{A[a1]}{A[a2]}{d + 1} {s}{U[u1]}{U[u2]}" for a1, a2, d, s, u1, u2 in
                       zip(area1.tolist(), area2.tolist(), district.tolist(), sector.tolist(), unit1.tolist(),
                           unit2.tolist())], dtype=object)


def _coprime(rng: np.random.Generator, space: int) -> int:
    while True:
        a = int(rng.integers(2, space))
        if math.gcd(a, space) == 1:
            return a


def email_addresses(rng: np.random.Generator, first: np.ndarray, last: np.ndarray, number: np.ndarray,
                     avoid: np.ndarray | None = None) -> np.ndarray:
    """Lower-cased addresses from the names, unique through ``number`` (one per person); with ``avoid``, each
    one's domain differs from that address's, so the two never coincide."""
    domains = np.asarray([d for d, _ in _EMAIL_DOMAINS], dtype=object)
    share = np.asarray([s for _, s in _EMAIL_DOMAINS])
    domain = rng.choice(len(domains), size=len(first), p=share / share.sum())
    if avoid is not None:
        current = np.asarray([domains.tolist().index(a.rsplit("@", 1)[1]) for a in avoid.tolist()], dtype=np.int64)
        clash = domain == current
        domain[clash] = (domain[clash] + rng.integers(1, len(domains), int(clash.sum()))) % len(domains)
    pattern = rng.integers(0, 4, len(first))
    out = []
    for f, l, n, p, d in zip(first.tolist(), last.tolist(), number.tolist(), pattern.tolist(), domain.tolist()):
        f, l = _plain(f), _plain(l)
        local = (f"{f}.{l}", f"{f[0]}{l}", f"{f}_{l}", f"{l}.{f}")[p]
        out.append(f"{local}{n}@{domains[d]}")
    return np.asarray(out, dtype=object)


def _plain(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch in _LETTERS)


def with_typos(rng: np.random.Generator, names: np.ndarray, which: np.ndarray) -> np.ndarray:
    """``names`` with one typo in each of ``which``: a letter after the first substituted, dropped, doubled or
    swapped with the next (always a different name)."""
    out = names.copy()
    for k in np.flatnonzero(which):
        name = out[k]
        for _ in range(10):
            kind = int(rng.integers(0, 4)) if len(name) > 2 else 0
            at = int(rng.integers(1, len(name))) if len(name) > 1 else 0
            letter = _LETTERS[int(rng.integers(0, 26))]
            if kind == 0:
                typed = name[:at] + (letter.upper() if at == 0 else letter) + name[at + 1:]
            elif kind == 1:
                typed = name[:at] + name[at + 1:]
            elif kind == 2:
                typed = name[:at + 1] + name[at] + name[at + 1:]
            else:
                at = min(at, len(name) - 2)
                typed = name[:at] + name[at + 1] + name[at] + name[at + 2:]
            if typed != name:
                out[k] = typed
                break
    return out
