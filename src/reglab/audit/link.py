"""Fuzzy record linkage between two tables (e.g. the same people listed by two sites).

The classic pairwise approach (Fellegi & Sunter 1969; Christen, "Data Matching", Springer 2012):

1. normalize the compared columns (lowercase, accents stripped with ``unicodedata``, punctuation
   removed) and compute string-similarity features for every A x B pair with rapidfuzz
   (``ratio``, ``partial_ratio``, ``token_sort_ratio``, ``token_set_ratio``, Jaro-Winkler on the
   token-sorted strings, agreement of the sorted initials, and an acronym score that matches
   ``hr`` to ``human resources``);
2. train a logistic regression on labelled matches with ``negatives`` non-matches per match sampled
   uniformly from the other B records (optionally a ``hard_fraction`` of them are the most similar
   non-partners instead; on the generated tables that lowered the correct rate, so the default is 0);
3. score all A x B pairs and take the one-to-one assignment of maximum total probability
   (``scipy.optimize.linear_sum_assignment``) among the pairs whose probability exceeds
   ``threshold``; the other records are left unmatched (abstain).

:func:`cross_validate` folds over the true match pairs (records of one fold are never seen in
training) and counts, over the held-out A records, correct matches, wrong matches (matched to a record
that is not the partner, or matched though there is no partner), missed matches (abstained on a
record that has a partner) and correct abstentions; held-out A records compete for every B record that
no training match has taken. The baseline :func:`levenshtein_first` matches
each A record to the first unused B record whose normalized Levenshtein similarity reaches a
threshold (tuned on the training folds). :func:`make_tables` generates a labelled pair of tables.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ReglabError

FEATURES = ("ratio", "partial_ratio", "token_sort_ratio", "token_set_ratio", "jaro_winkler", "initials", "acronym")
_SPECIAL = str.maketrans({"ø": "o", "ł": "l", "æ": "ae", "œ": "oe", "ß": "ss", "đ": "d", "ð": "d", "ı": "i",
                          "þ": "th", "&": " and "})
_STOP = {"and", "of", "the", "for"}


# ----------------------------------------------------------------------------------------------
# strings and features
# ----------------------------------------------------------------------------------------------
def normalize(text: Any) -> str:
    """Lowercase, accents and punctuation removed, single spaces: ``"Lefèvre, Zoë"`` -> ``"lefevre zoe"``."""
    if text is None or (isinstance(text, float) and text != text):  # None / NaN
        return ""
    s = unicodedata.normalize("NFKD", str(text).lower().translate(_SPECIAL))
    s = "".join(ch if ch.isalnum() else " " for ch in s if not unicodedata.combining(ch))
    return " ".join(s.split())


def _initials(s: str, sort: bool) -> str:
    letters = [t[0] for t in s.split() if t not in _STOP]
    return "".join(sorted(letters) if sort else letters)


def pair_features(a_texts: Sequence[str], b_texts: Sequence[str], workers: int = 1) -> np.ndarray:
    """Similarity features of every (a, b) pair of normalized strings: array ``(len(a), len(b), 7)`` in [0, 1],
    in the order of :data:`FEATURES`."""
    from rapidfuzz import fuzz, process
    from rapidfuzz.distance import JaroWinkler

    a, b = list(a_texts), list(b_texts)
    out = np.empty((len(a), len(b), len(FEATURES)), dtype=np.float32)
    if not a or not b:
        return out

    def cd(x: list[str], y: list[str], scorer: Any, scale: float = 100.0) -> np.ndarray:
        return process.cdist(x, y, scorer=scorer, dtype=np.float32, workers=workers) / scale

    sort_a = [" ".join(sorted(s.split())) for s in a]
    sort_b = [" ".join(sorted(s.split())) for s in b]
    out[..., 0] = cd(a, b, fuzz.ratio)
    out[..., 1] = cd(a, b, fuzz.partial_ratio)
    out[..., 2] = cd(a, b, fuzz.token_sort_ratio)
    out[..., 3] = cd(a, b, fuzz.token_set_ratio)
    out[..., 4] = cd(sort_a, sort_b, JaroWinkler.normalized_similarity, 1.0)
    out[..., 5] = cd([_initials(s, True) for s in a], [_initials(s, True) for s in b], fuzz.ratio)
    compact_a, compact_b = [s.replace(" ", "") for s in a], [s.replace(" ", "") for s in b]
    acr_a, acr_b = [_initials(s, False) for s in a], [_initials(s, False) for s in b]
    out[..., 6] = np.maximum(cd(acr_a, compact_b, fuzz.ratio), cd(compact_a, acr_b, fuzz.ratio))
    return out


def _column_pairs(a: Any, b: Any, columns: Sequence[str] | Mapping[str, str] | str) -> list[tuple[str, str]]:
    if isinstance(columns, str):
        columns = [columns]
    pairs = list(columns.items()) if isinstance(columns, Mapping) else [(c, c) for c in columns]
    if not pairs:
        raise ReglabError("link: columns must name at least one column")
    for ca, cb in pairs:
        for table, col, name in ((a, ca, "A"), (b, cb, "B")):
            if col not in table.columns:
                raise ReglabError(f"link: column '{col}' is not in table {name} (columns: {', '.join(map(str, table.columns))})")
    return pairs


def table_features(a: Any, b: Any, columns: Sequence[str] | Mapping[str, str] | str, workers: int = 1) -> np.ndarray:
    """Features of all A x B row pairs of two pandas tables: ``(len(a), len(b), 7 * n_columns)``.

    ``columns``: names present in both tables, or a mapping ``{column in A: column in B}``."""
    pairs = _column_pairs(a, b, columns)
    parts = [pair_features([normalize(v) for v in a[ca]], [normalize(v) for v in b[cb]], workers) for ca, cb in pairs]
    return np.concatenate(parts, axis=2)


def record_strings(table: Any, columns: Sequence[str]) -> list[str]:
    """Each row's columns joined by a space, normalized (the baseline compares these)."""
    return [normalize(" ".join("" if v is None or v != v else str(v) for v in row)) for row in table[list(columns)].itertuples(index=False)]


# ----------------------------------------------------------------------------------------------
# classifier and matching
# ----------------------------------------------------------------------------------------------
@dataclass
class PairClassifier:
    """Logistic regression on pair features; ``negatives`` non-matches per labelled match sampled
    uniformly from the B pool, except a ``hard_fraction`` of them taken as the most similar
    non-partners of the A record (by mean feature)."""

    negatives: int = 5
    hard_fraction: float = 0.0
    C: float = 1.0
    seed: int = 0
    model: Any = field(default=None, repr=False)

    def fit(self, features: np.ndarray, pairs: np.ndarray, b_pool: np.ndarray | None = None) -> "PairClassifier":
        """``features``: ``(nA, nB, F)``; ``pairs``: ``(m, 2)`` (A row, B row) true matches; negatives are
        drawn from the B rows ``b_pool`` (default: all)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if self.negatives < 1:
            raise ReglabError(f"link: negatives must be >= 1 (got {self.negatives})")
        if not 0.0 <= self.hard_fraction <= 1.0:
            raise ReglabError(f"link: hard_fraction must be in [0, 1] (got {self.hard_fraction})")
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if len(pairs) == 0:
            raise ReglabError("link: training needs at least one labelled match")
        rng = np.random.default_rng(self.seed)
        pool = np.arange(features.shape[1]) if b_pool is None else np.asarray(b_pool, dtype=np.int64)
        n_hard = int(round(self.negatives * self.hard_fraction))
        rows, cols = [pairs[:, 0]], [pairs[:, 1]]
        mean_sim = features[:, pool].mean(axis=2)  # (nA, |pool|)
        for a_row, b_row in pairs:
            others = pool[pool != b_row]
            if len(others) == 0:
                continue
            sim = mean_sim[a_row][pool != b_row]
            hard = others[np.argsort(-sim, kind="stable")[:n_hard]]
            rest = np.setdiff1d(others, hard)
            easy = rng.choice(rest, size=min(self.negatives - len(hard), len(rest)), replace=False)
            neg = np.concatenate([hard, easy])
            rows.append(np.full(len(neg), a_row)), cols.append(neg)
        r, c = np.concatenate(rows), np.concatenate(cols)
        y = np.zeros(len(r), dtype=np.int64)
        y[: len(pairs)] = 1
        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=1000))
        self.model.fit(features[r, c], y)
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Match probability of every pair: ``(nA, nB)``."""
        if self.model is None:
            raise ReglabError("link: the classifier is not fitted")
        n_a, n_b, f = features.shape
        return self.model.predict_proba(features.reshape(-1, f))[:, 1].reshape(n_a, n_b)


def one_to_one(prob: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum-weight one-to-one matching among pairs with probability > ``threshold`` (strictly, so
    ``threshold=1`` abstains everywhere). Returns ``(a_rows, b_rows, probabilities)``."""
    from scipy.optimize import linear_sum_assignment

    if not 0.0 <= threshold <= 1.0:
        raise ReglabError(f"link: threshold must be in [0, 1] (got {threshold})")
    ok = prob > threshold
    ra, cb = np.flatnonzero(ok.any(axis=1)), np.flatnonzero(ok.any(axis=0))
    if len(ra) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    weights = np.where(ok, prob, 0.0)[np.ix_(ra, cb)]
    r, c = linear_sum_assignment(weights, maximize=True)
    keep = weights[r, c] > 0
    a_rows, b_rows = ra[r[keep]], cb[c[keep]]
    return a_rows, b_rows, prob[a_rows, b_rows]


def levenshtein_first(similarity: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: each A row in order takes the first unused B row whose similarity >= ``threshold``."""
    used = np.zeros(similarity.shape[1], dtype=bool)
    a_rows, b_rows = [], []
    for r in range(similarity.shape[0]):
        hits = np.flatnonzero((similarity[r] >= threshold) & ~used)
        if len(hits):
            used[hits[0]] = True
            a_rows.append(r), b_rows.append(int(hits[0]))
    return np.asarray(a_rows, np.int64), np.asarray(b_rows, np.int64)


def levenshtein_matrix(a_texts: Sequence[str], b_texts: Sequence[str], workers: int = 1) -> np.ndarray:
    """Normalized Levenshtein similarity (rapidfuzz) of all pairs, in [0, 1]."""
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    return process.cdist(list(a_texts), list(b_texts), scorer=Levenshtein.normalized_similarity,
                         dtype=np.float32, workers=workers)


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------
@dataclass
class LinkScore:
    """Outcome counts over A records: matched to the partner (correct), matched to another record or
    matched without a partner (wrong), abstained with a partner (missed), abstained without (abstained)."""

    correct: int = 0
    wrong: int = 0
    missed: int = 0
    abstained: int = 0

    @property
    def n(self) -> int:
        return self.correct + self.wrong + self.missed + self.abstained

    def __add__(self, other: "LinkScore") -> "LinkScore":
        return LinkScore(self.correct + other.correct, self.wrong + other.wrong, self.missed + other.missed,
                         self.abstained + other.abstained)

    def rates(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {"correct": self.correct / n, "wrong": self.wrong / n, "missed": self.missed / n,
                "abstained": self.abstained / n}


def score_matches(a_rows: np.ndarray, b_rows: np.ndarray, partner: np.ndarray, test_a: np.ndarray) -> LinkScore:
    """Score a matching over the A records ``test_a``; ``partner[a]`` is a's true B row or -1."""
    matched = np.full(len(partner), -2, dtype=np.int64)
    matched[a_rows] = b_rows
    m, p = matched[test_a], partner[test_a]
    return LinkScore(correct=int(((m >= 0) & (m == p)).sum()), wrong=int(((m >= 0) & (m != p)).sum()),
                     missed=int(((m < 0) & (p >= 0)).sum()), abstained=int(((m < 0) & (p < 0)).sum()))


def truth_positions(a: Any, b: Any, truth: Any, id_column: str | None = "id") -> np.ndarray:
    """Labelled matches as ``(m, 2)`` row positions. ``truth``: an ``(m, 2)`` array of positions, a table
    with columns ``a_id, b_id`` (values of ``id_column`` in A and B, or row numbers when
    ``id_column`` is None), or the name of a column present in both tables (equal values match)."""
    if isinstance(truth, str):
        if truth not in a.columns or truth not in b.columns:
            raise ReglabError(f"link: truth column '{truth}' must be present in both tables")
        pos_b: dict[Any, int] = {}
        for k, v in enumerate(b[truth]):
            if v == v and v is not None:
                pos_b.setdefault(v, k)
        pairs = [(k, pos_b[v]) for k, v in enumerate(a[truth]) if v in pos_b]
        return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if hasattr(truth, "columns"):
        for col in ("a_id", "b_id"):
            if col not in truth.columns:
                raise ReglabError(f"link: truth table needs columns a_id, b_id (got {', '.join(map(str, truth.columns))})")
        if id_column is None:
            index_a, index_b = {k: k for k in range(len(a))}, {k: k for k in range(len(b))}
        else:
            for table, name in ((a, "A"), (b, "B")):
                if id_column not in table.columns:
                    raise ReglabError(f"link: id column '{id_column}' is not in table {name}")
            index_a = {v: k for k, v in enumerate(a[id_column])}
            index_b = {v: k for k, v in enumerate(b[id_column])}
        rows = []
        for x, y in zip(truth["a_id"], truth["b_id"]):
            if x not in index_a or y not in index_b:
                raise ReglabError(f"link: truth pair ({x}, {y}) names an id missing from A or B")
            rows.append((index_a[x], index_b[y]))
        pairs = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    else:
        pairs = np.asarray(truth, dtype=np.int64).reshape(-1, 2)
    if len(np.unique(pairs[:, 0])) != len(pairs) or len(np.unique(pairs[:, 1])) != len(pairs):
        raise ReglabError("link: truth must be one-to-one (an A or B record appears in two labelled matches)")
    return pairs


@dataclass
class CVResult:
    """Cross-validated outcome of one method: totals, per-fold scores and per-fold chosen thresholds."""

    method: str
    total: LinkScore
    folds: list[LinkScore]
    thresholds: list[float]

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "records": self.total.n, **{k: round(v, 4) for k, v in self.total.rates().items()},
                "counts": vars(self.total), "thresholds": [round(t, 3) for t in self.thresholds]}


def _folds(pairs: np.ndarray, n_a: int, n_b: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(A rows, B rows) of each fold: the true pairs split k ways, unpaired records spread over the folds."""
    rng = np.random.default_rng(seed)
    fold_of_pair = rng.permutation(len(pairs)) % k
    lone_a = np.setdiff1d(np.arange(n_a), pairs[:, 0])
    lone_b = np.setdiff1d(np.arange(n_b), pairs[:, 1])
    fold_a, fold_b = rng.permutation(len(lone_a)) % k, rng.permutation(len(lone_b)) % k
    return [(np.sort(np.concatenate([pairs[fold_of_pair == f, 0], lone_a[fold_a == f]])),
             np.sort(np.concatenate([pairs[fold_of_pair == f, 1], lone_b[fold_b == f]]))) for f in range(k)]


def cross_validate(
    a: Any,
    b: Any,
    truth: Any,
    columns: Sequence[str] | Mapping[str, str] | str,
    *,
    folds: int = 5,
    negatives: int = 5,
    hard_fraction: float = 0.0,
    threshold: float = 0.5,
    seed: int = 0,
    id_column: str | None = "id",
    baseline_columns: Sequence[str] | None = None,
    workers: int = 1,
) -> dict[str, CVResult]:
    """k-fold cross-validation of the classifier and of the Levenshtein baseline (same folds).

    Each fold holds out ~1/k of the true pairs plus ~1/k of the unpaired A records; the classifier is
    trained on the other records' labelled matches (negatives drawn from the B records of the other
    folds), the baseline's threshold is the one maximizing ``correct - wrong`` on them; both then match
    the held-out A records against every B record that no training match has taken (the held-out
    partners and all unpaired B records, the candidates a user would face).
    The baseline compares the ``baseline_columns`` (A names; default: all compared columns) joined by
    spaces.
    """
    if folds < 2:
        raise ReglabError(f"link: folds must be >= 2 (got {folds})")
    pairs = truth_positions(a, b, truth, id_column)
    if len(pairs) < folds:
        raise ReglabError(f"link: {len(pairs)} labelled matches cannot fill {folds} folds")
    cols = _column_pairs(a, b, columns)
    feats = table_features(a, b, dict(cols), workers)
    base = cols if baseline_columns is None else [(ca, cb) for ca, cb in cols if ca in set(baseline_columns)]
    if not base:
        raise ReglabError(f"link: baseline_columns {list(baseline_columns or [])} name none of the compared columns")
    lev = levenshtein_matrix(record_strings(a, [c for c, _ in base]), record_strings(b, [c for _, c in base]), workers)
    partner = np.full(len(a), -1, dtype=np.int64)
    partner[pairs[:, 0]] = pairs[:, 1]
    grid = np.round(np.arange(0.5, 1.0, 0.025), 3)

    results = {"classifier": CVResult("classifier", LinkScore(), [], []),
               "levenshtein": CVResult("levenshtein", LinkScore(), [], [])}
    split = _folds(pairs, len(a), len(b), folds, seed)
    for f, (test_a, fold_b) in enumerate(split):
        train_a = np.setdiff1d(np.arange(len(a)), test_a)
        train_b = np.setdiff1d(np.arange(len(b)), fold_b)
        train_pairs = pairs[np.isin(pairs[:, 0], train_a)]
        # held-out A records are matched against every B record not known to be taken by a labelled
        # match: their partners and *all* the unpaired B records, as in use
        test_b = np.setdiff1d(np.arange(len(b)), train_pairs[:, 1])

        clf = PairClassifier(negatives, hard_fraction, seed=seed + f).fit(feats, train_pairs, train_b)
        prob = clf.predict_proba(feats[np.ix_(test_a, test_b)])
        ra, rb, _ = one_to_one(prob, threshold)
        s = score_matches(test_a[ra], test_b[rb], partner, test_a)
        results["classifier"].folds.append(s)
        results["classifier"].thresholds.append(threshold)

        sub = lev[np.ix_(train_a, train_b)]

        def gain(t: float) -> int:
            ra, rb = levenshtein_first(sub, t)
            sc = score_matches(train_a[ra], train_b[rb], partner, train_a)
            return sc.correct - sc.wrong

        best = max(grid, key=gain)
        ra, rb = levenshtein_first(lev[np.ix_(test_a, test_b)], best)
        s = score_matches(test_a[ra], test_b[rb], partner, test_a)
        results["levenshtein"].folds.append(s)
        results["levenshtein"].thresholds.append(float(best))
    for r in results.values():
        r.total = sum(r.folds, LinkScore())
    return results


# ----------------------------------------------------------------------------------------------
# fitted linker for new tables
# ----------------------------------------------------------------------------------------------
def link_tables(a: Any, b: Any, truth: Any, columns: Sequence[str] | Mapping[str, str] | str, *,
                negatives: int = 5, hard_fraction: float = 0.0, threshold: float = 0.5, seed: int = 0,
                id_column: str | None = "id", workers: int = 1) -> Any:
    """Train on all labelled matches, then match all of A to all of B one-to-one.

    Returns a DataFrame ``a_row, b_row, probability`` (plus ``a_id``/``b_id`` when ``id_column`` is in
    both tables), one row per accepted match."""
    import pandas as pd

    pairs = truth_positions(a, b, truth, id_column)
    feats = table_features(a, b, columns, workers)
    clf = PairClassifier(negatives, hard_fraction, seed=seed).fit(feats, pairs)
    ra, rb, p = one_to_one(clf.predict_proba(feats), threshold)
    out = pd.DataFrame({"a_row": ra, "b_row": rb, "probability": p})
    if id_column and id_column in a.columns and id_column in b.columns:
        out.insert(0, "b_id", b[id_column].to_numpy()[rb])
        out.insert(0, "a_id", a[id_column].to_numpy()[ra])
    return out


# ----------------------------------------------------------------------------------------------
# generator of a realistic labelled pair of tables
# ----------------------------------------------------------------------------------------------
FIRST = ["José", "María", "François", "Zoë", "Søren", "Björn", "Łukasz", "Ana", "Jürgen", "Chloé", "Renée",
         "André", "Inês", "João", "Élodie", "Hélène", "Mónica", "Raúl", "Ángel", "Núria", "Dagný", "Ørjan",
         "Şebnem", "Çağla", "Göran", "Ayşe", "Mehmet", "Nguyệt", "Thảo", "Siobhán", "Seán", "Niamh", "Eoin",
         "William", "Robert", "Elizabeth", "Katherine", "Alexander", "Margaret", "James", "Michael", "Jennifer",
         "David", "Sarah", "Thomas", "Emily", "Daniel", "Olivia", "Wei", "Li", "Hiroshi", "Yuki", "Priya",
         "Arjun", "Fatima", "Omar", "Aisha", "Ivan", "Olga", "Dmitri", "Giuseppe", "Francesca", "Lars", "Ingrid",
         "Pierre", "Camille", "Karl", "Greta", "Pablo", "Lucía"]
MIDDLE = ["Luis", "Anne", "Marie", "Jean", "Lee", "Ray", "Grace", "Paul", "Joseph", "Rose", "Ángeles",
          "Inés", "Kai", "Maximilian"]
LAST = ["García", "López", "Müller", "Nguyen", "Østergaard", "Dvořák", "Kowalski", "O'Brien", "Smith", "Johnson",
        "Williams", "Brown", "Jones", "Schmidt", "Rossi", "Bianchi", "Fernández", "Martín", "Pérez", "Sánchez",
        "Gómez", "Kim", "Lee", "Park", "Chen", "Wang", "Li", "Zhang", "Singh", "Patel", "Kumar", "Khan", "Ali",
        "Hassan", "Ivanov", "Petrov", "Novák", "Svoboda", "Horváth", "Nagy", "Kovács", "Andersson", "Johansson",
        "Nielsen", "Hansen", "Jensen", "Dubois", "Lefèvre", "Moreau", "Laurent", "Girard", "Bernard", "Ruiz",
        "Díaz", "Álvarez", "Romero", "Suárez", "Navarro", "Ortega", "Castro", "Silva", "Santos", "Oliveira",
        "Costa", "Ferreira", "Rodrigues", "Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Öztürk", "Tanaka",
        "Suzuki", "Satō", "Watanabe", "Murphy", "Kelly", "MacDonald", "Schröder", "Weiß", "Krüger"]
NICK = {"William": "Bill", "Robert": "Bob", "Elizabeth": "Liz", "Katherine": "Kate", "Alexander": "Alex",
        "Margaret": "Maggie", "James": "Jim", "Michael": "Mike", "Jennifer": "Jen", "David": "Dave",
        "Thomas": "Tom", "Daniel": "Dan", "Giuseppe": "Beppe", "Francesca": "Franca", "José": "Pepe",
        "Dmitri": "Dima"}
DEPARTMENTS = {"Engineering": ["Eng.", "Engg"], "Human Resources": ["HR"], "Finance": ["Fin.", "Finance Dept"],
               "Marketing": ["Mktg"], "Research and Development": ["R&D", "Research & Dev."],
               "Information Technology": ["IT"], "Legal": ["Legal Dept.", "Legal"], "Operations": ["Ops"],
               "Sales": ["Sales Dept", "Sales"], "Customer Support": ["Support", "Cust. Support"],
               "Quality Assurance": ["QA"], "Public Relations": ["PR"], "Procurement": ["Purchasing", "Proc."],
               "Facilities": ["Facilities Mgmt"]}


def _strip_accents(s: str) -> str:
    s = unicodedata.normalize("NFKD", s.translate(str.maketrans({"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "ı": "i", "ß": "ss"})))
    return "".join(ch for ch in s if not unicodedata.combining(ch))


def _typo(word: str, rng: np.random.Generator) -> str:
    if len(word) < 4:
        return word
    k = int(rng.integers(1, len(word) - 1))
    kind = rng.integers(4)
    letter = "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(26))]
    if kind == 0:
        return word[:k] + letter + word[k + 1 :]  # substitution
    if kind == 1:
        return word[:k] + word[k + 1 :]  # deletion
    if kind == 2:
        return word[:k] + letter + word[k:]  # insertion
    return word[: k - 1] + word[k] + word[k - 1] + word[k + 1 :]  # transposition


def _variant(person: dict[str, Any], rng: np.random.Generator) -> tuple[str, str]:
    """How site B writes a person: accents dropped, initials, nicknames, missing middle names,
    "Last, First", typos, upper case, abbreviated or (rarely) changed department."""
    first, middle, last = person["first"], person["middle"], person["last"]
    if first in NICK and rng.random() < 0.15:
        first = NICK[first]
    elif rng.random() < 0.2:
        first = first[0] + "."
    if middle:
        u = rng.random()
        middle = "" if u < 0.5 else (middle[0] + "." if u < 0.75 else middle)
    if person["last2"] and rng.random() < 0.5:
        last = last.split()[0]  # second surname dropped
    words = [w for w in (first, middle) if w]
    if rng.random() < 0.35:
        name = f"{last}, {' '.join(words)}"
    else:
        name = " ".join(words + [last])
    if rng.random() < 0.35:
        tokens = name.split(" ")
        k = int(rng.integers(len(tokens)))
        tokens[k] = _typo(tokens[k], rng)
        name = " ".join(tokens)
    if rng.random() < 0.6:
        name = _strip_accents(name)
    if rng.random() < 0.1:
        name = name.upper()
    dept = person["department"]
    u = rng.random()
    if u < 0.05:
        dept = str(rng.choice(list(DEPARTMENTS)))  # moved to another department
    elif u < 0.6:
        dept = str(rng.choice(DEPARTMENTS[dept]))
    return name, dept


def _person(rng: np.random.Generator) -> dict[str, Any]:
    last = str(rng.choice(LAST))
    two = rng.random() < 0.15
    if two:
        last = f"{last} {rng.choice(LAST)}"
    return {"first": str(rng.choice(FIRST)), "middle": str(rng.choice(MIDDLE)) if rng.random() < 0.3 else "",
            "last": last, "last2": two, "department": str(rng.choice(list(DEPARTMENTS)))}


def make_tables(n: int = 600, *, overlap: float = 0.8, extra_b: float = 0.15, seed: int = 0) -> tuple[Any, Any, Any]:
    """A labelled pair of tables of people: ``(A, B, truth)``.

    A has ``n`` people (``id, name, department``; names like "María Luisa García López"); a fraction
    ``overlap`` of them appears in B, written as site B would (see :func:`_variant`), plus
    ``extra_b * n`` people only in B; B's rows are shuffled. ``truth`` lists the matches ``a_id, b_id``.
    """
    import pandas as pd

    if n < 2 or not 0.0 < overlap <= 1.0 or extra_b < 0:
        raise ReglabError(f"make_tables: need n >= 2, overlap in (0, 1], extra_b >= 0 (got {n}, {overlap}, {extra_b})")
    rng = np.random.default_rng(seed)
    people = [_person(rng) for _ in range(n)]
    a = pd.DataFrame({
        "id": [f"a{k:05d}" for k in range(n)],
        "name": [" ".join(w for w in (p["first"], p["middle"], p["last"]) if w) for p in people],
        "department": [p["department"] for p in people],
    })
    shared = np.sort(rng.choice(n, size=int(round(overlap * n)), replace=False))
    b_people = [people[k] for k in shared] + [_person(rng) for _ in range(int(round(extra_b * n)))]
    origin = np.concatenate([shared, np.full(len(b_people) - len(shared), -1)])
    order = rng.permutation(len(b_people))
    rows = [_variant(b_people[k], rng) for k in order]
    b = pd.DataFrame({"id": [f"b{k:05d}" for k in range(len(rows))], "name": [r[0] for r in rows],
                      "department": [r[1] for r in rows]})
    src = origin[order]
    truth = pd.DataFrame({"a_id": a["id"].to_numpy()[src[src >= 0]], "b_id": b["id"].to_numpy()[src >= 0]})
    return a, b, truth.sort_values("a_id").reset_index(drop=True)
