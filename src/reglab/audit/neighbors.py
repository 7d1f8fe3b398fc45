"""Approximate cosine k-nearest neighbours from a random-hyperplane LSH index, with recall against
exact search.

The index is that of :mod:`reglab.audit.duplicates` (Charikar 2002: ``tables`` codes of ``bits``
signs of random Gaussian projections, so two rows at angle ``theta`` share a code bit with
probability ``1 - theta / pi``; multi-probe LSH of Lv et al. 2007 also visits the buckets within
Hamming distance ``probe`` of a query's code). A query's candidates are the index rows in the buckets
it probes in any table; their exact cosines rank them and the ``k`` best are returned. Nothing is
quadratic: the work per query is the number of candidates, which falls with ``bits`` and grows with
``tables`` and ``probe`` (as does the recall).

- :class:`CosineIndex` builds the index once (unit rows, codes, rows sorted by code per table);
  :meth:`CosineIndex.query` answers for new vectors and :meth:`CosineIndex.neighbors_of` for rows of
  the index itself (each row's own entry excluded).
- :func:`exact_neighbors` is the exact answer with scikit-learn's brute-force ``NearestNeighbors``
  (cosine metric) on the same unit rows; :func:`knn_recall` is the mean fraction of the exact ``k``
  neighbours the approximate search returns (recall@k).

Rows with no direction (all zero, or constant when ``center``) are left out of the index and get no
neighbours (index -1, cosine NaN), as in the duplicate search.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ReglabError
from .duplicates import PAIR_BUDGET, _expand, _hash, _hyperplanes, _probe_masks, unit_rows


@dataclass
class Neighbors:
    """``indices[q, r]``: the index row at rank ``r`` (most similar first) for query ``q`` (-1 when
    fewer than ``k`` were found), ``cosine[q, r]`` its cosine (NaN where -1); ``candidates[q]``: the
    distinct index rows whose exact cosine was computed for query ``q``."""

    indices: np.ndarray
    cosine: np.ndarray
    candidates: np.ndarray
    method: str = "lsh"
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)


def _check_k(k: int, n: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ReglabError(f"neighbors: k must be an integer >= 1 (got {k!r})")
    if n == 0:
        raise ReglabError("neighbors: the index holds no row with a direction")


def _distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int64 array (a sort and a comparison with the neighbour)."""
    keys = np.sort(keys)
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys


def _top_k(q: np.ndarray, i: np.ndarray, cos: np.ndarray, n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest cosines per query from flat (query, row, cosine) triples sorted by (query,
    row): one stable sort on ``query + (1 - cosine) / 2.0001`` (ties keep the smaller row first)."""
    order = np.argsort(q + (1.0 - np.clip(cos.astype(np.float64), -1, 1)) / 2.0001, kind="stable")
    q, i, cos = q[order], i[order], cos[order]
    starts = np.searchsorted(q, np.arange(n_queries), side="left")
    rank = np.arange(len(q)) - starts[q]
    keep = rank < k
    indices = np.full((n_queries, k), -1, dtype=np.int64)
    cosine = np.full((n_queries, k), np.nan, dtype=np.float32)
    indices[q[keep], rank[keep]] = i[keep]
    cosine[q[keep], rank[keep]] = cos[keep]
    return indices, cosine


class CosineIndex:
    """Random-hyperplane LSH index of the rows of ``x`` for approximate cosine neighbours.

    Knobs: ``bits`` per code (16), ``tables`` (8), ``seed`` of the hyperplanes (0), ``center`` each row
    on its own mean first (False: plain cosine of the vectors, e.g. embeddings).
    """

    def __init__(self, x: Any, *, bits: int = 16, tables: int = 8, seed: int = 0, center: bool = False) -> None:
        if not 1 <= bits <= 62:
            raise ReglabError(f"neighbors: bits must be in 1..62 (got {bits})")
        if tables < 1:
            raise ReglabError(f"neighbors: tables must be >= 1 (got {tables})")
        t0 = time.perf_counter()
        self.bits, self.tables, self.seed, self.center = bits, tables, seed, center
        self.unit, zero = unit_rows(x, center=center)
        self.planes = _hyperplanes(self.unit.shape[1], bits, tables, seed)
        codes, _ = _hash(self.unit, self.planes, bits, tables)
        self.rows = np.flatnonzero(~zero)  # rows with a direction
        self.order = [self.rows[np.argsort(codes[self.rows, t], kind="stable")] for t in range(tables)]
        self.sorted_codes = [codes[o, t] for t, o in enumerate(self.order)]
        self.seconds = time.perf_counter() - t0

    def __len__(self) -> int:
        return len(self.unit)

    def query(self, q: Any, k: int = 10, *, probe: int = 1, exclude: np.ndarray | None = None,
              chunk: int = 1024) -> Neighbors:
        """The (approximately) ``k`` most cosine-similar index rows of each row of ``q``; ``probe``: the
        Hamming radius of the multi-probe (0, 1 or 2); ``exclude[j]``: an index row never returned for
        query ``j`` (-1: none)."""
        _check_k(k, len(self.rows))
        if probe not in (0, 1, 2) or probe > self.bits:
            raise ReglabError(f"neighbors: probe must be 0, 1 or 2 and at most bits (got {probe})")
        t0 = time.perf_counter()
        uq, zq = unit_rows(q, center=self.center)
        if uq.shape[1] != self.unit.shape[1]:
            raise ReglabError(f"neighbors: query rows have {uq.shape[1]} values, the index rows {self.unit.shape[1]}")
        codes, _ = _hash(uq, self.planes, self.bits, self.tables)
        masks = _probe_masks(self.bits, probe)
        n, nq = len(self.unit), len(uq)
        indices = np.full((nq, k), -1, dtype=np.int64)
        cosine = np.full((nq, k), np.nan, dtype=np.float32)
        candidates = np.zeros(nq, dtype=np.int64)
        live = np.flatnonzero(~zq)
        for s in range(0, len(live), chunk):
            qs = live[s : s + chunk]
            keys = []
            for t in range(self.tables):
                probes = codes[qs, t][:, None] ^ masks[None, :]
                lo = np.searchsorted(self.sorted_codes[t], probes, side="left")
                hi = np.searchsorted(self.sorted_codes[t], probes, side="right")
                size = hi - lo
                cum = np.cumsum(size.sum(axis=1))
                cuts = np.searchsorted(cum, np.arange(PAIR_BUDGET, cum[-1] if len(cum) else 0, PAIR_BUDGET), side="right")
                edges = np.unique(np.concatenate([[0], cuts, [len(qs)]]))
                for first, last in zip(edges[:-1], edges[1:]):
                    sz = size[first:last].ravel()
                    qrow = np.repeat(np.repeat(np.arange(first, last), len(masks)), sz)
                    irow = self.order[t][_expand(lo[first:last].ravel(), sz)]
                    keys.append(qrow.astype(np.int64) * n + irow)
            key = _distinct(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
            ql, il = key // n, key % n
            if exclude is not None:
                keep = il != np.asarray(exclude)[qs][ql]
                ql, il = ql[keep], il[keep]
            candidates[qs] = np.bincount(ql, minlength=len(qs))
            cos = np.empty(len(ql), dtype=np.float32)
            for c in range(0, len(ql), 1 << 20):
                a, b = ql[c : c + (1 << 20)], il[c : c + (1 << 20)]
                cos[c : c + (1 << 20)] = np.einsum("ij,ij->i", uq[qs[a]], self.unit[b])
            indices[qs], cosine[qs] = _top_k(ql, il, cos, len(qs), k)
        config = {"bits": self.bits, "tables": self.tables, "probe": probe, "seed": self.seed, "center": self.center, "k": k}
        return Neighbors(indices, cosine, candidates, "lsh", time.perf_counter() - t0, config)

    def neighbors_of(self, rows: Any, k: int = 10, *, probe: int = 1) -> Neighbors:
        """``query`` for rows of the index itself, each row's own entry excluded."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= len(self))):
            raise ReglabError(f"neighbors: rows must be a list of row numbers in 0..{len(self) - 1}")
        return self.query(self.unit[rows], k, probe=probe, exclude=rows)


def exact_neighbors(x: Any, q: Any, k: int = 10, *, center: bool = False, exclude: np.ndarray | None = None) -> Neighbors:
    """The exact ``k`` cosine nearest neighbours in ``x`` of each row of ``q``: scikit-learn's
    brute-force ``NearestNeighbors(metric="cosine")`` on the same unit rows as :class:`CosineIndex`
    (``exclude[j]``: a row of ``x`` never returned for query ``j``, e.g. the query itself)."""
    from sklearn.neighbors import NearestNeighbors  # scikit-learn loads only when an exact search runs

    t0 = time.perf_counter()
    ux, zx = unit_rows(x, center=center)
    uq, zq = unit_rows(q, center=center)
    rows = np.flatnonzero(~zx)
    _check_k(k, len(rows))
    extra = 0 if exclude is None else 1
    found = NearestNeighbors(n_neighbors=min(k + extra, len(rows)), metric="cosine", algorithm="brute").fit(ux[rows])
    dist, idx = found.kneighbors(uq)
    idx = rows[idx]
    if exclude is not None:
        own = idx == np.asarray(exclude)[:, None]
        drop = np.where(own.any(1), own.argmax(1), idx.shape[1] - 1)  # the query itself, else the (k+1)-th
        keep = np.ones_like(idx, dtype=bool)
        keep[np.arange(len(idx)), drop] = False
        idx, dist = idx[keep].reshape(len(idx), -1), dist[keep].reshape(len(idx), -1)
    cos = np.einsum("qkd,qd->qk", ux[idx], uq).astype(np.float32)  # the same float32 products as the LSH search
    indices = np.full((len(uq), k), -1, dtype=np.int64)
    cosine = np.full((len(uq), k), np.nan, dtype=np.float32)
    width = idx.shape[1]
    indices[:, :width], cosine[:, :width] = idx, cos
    indices[zq], cosine[zq] = -1, np.nan
    return Neighbors(indices, cosine, np.full(len(uq), len(rows)), "exact", time.perf_counter() - t0,
                     {"k": k, "center": center})


def knn_recall(found: Neighbors, exact: Neighbors) -> float:
    """Recall@k: the mean over queries of |found's k rows ∩ exact's k rows| / (exact's rows found)."""
    if found.indices.shape != exact.indices.shape:
        raise ReglabError(f"neighbors: shapes differ ({found.indices.shape} vs {exact.indices.shape})")
    hits, total = 0, 0
    for a, b in zip(found.indices, exact.indices):
        b = b[b >= 0]
        hits += len(np.intersect1d(a[a >= 0], b))
        total += len(b)
    return hits / total if total else 1.0
