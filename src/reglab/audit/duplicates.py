"""Near-duplicate search with random-hyperplane LSH for cosine similarity.

Charikar (2002), "Similarity estimation techniques from rounding algorithms" (STOC): for a random
Gaussian hyperplane ``r``, ``P[sign(r.x) == sign(r.y)] = 1 - angle(x, y) / pi``. ``bits`` such signs
form a bucket code (packed into an int64); ``tables`` independent codes cut false negatives, and
multi-probe LSH (Lv et al. 2007, "Multi-probe LSH", VLDB) also looks in the buckets within Hamming
distance ``probe`` of a query's code, so fewer tables reach the same recall.

Pipeline (no quadratic pass):

1. rows -> unit vectors (raw inputs flattened, optionally mean-centred per row, or embeddings);
2. one matrix product with ``tables * bits`` hyperplanes gives every code and a ``tables * bits``-bit
   sign sketch per row;
3. per table, the index codes are sorted; the probe codes of each query are looked up with
   ``searchsorted`` and the bucket ranges expanded into candidate pairs, vectorized, in chunks;
   a bucket larger than ``max_bucket`` is not expanded but searched exactly (blockwise matrix
   product between its members and the queries that hit it);
4. sketch filter: the Hamming distance between the full sketches of a candidate pair estimates its
   angle; pairs whose distance exceeds the ``1 - sketch_tail`` binomial quantile of a pair at exactly
   ``threshold`` are dropped (a true pair is dropped with probability < ``sketch_tail``);
5. surviving candidates are de-duplicated across tables and confirmed with the exact cosine,
   computed in blocks.

:func:`exact_duplicates` is the blockwise all-pairs search used to measure recall (scikit-learn's
brute-force ``NearestNeighbors.radius_neighbors``, which also searches the giant buckets).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ReglabError

#: candidate pairs expanded at once (bounds memory: ~6 int64 arrays of this length)
PAIR_BUDGET = 1 << 22


# ----------------------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------------------
@dataclass
class Duplicates:
    """Pairs ``(i[k], j[k])`` with cosine ``cosine[k] >= threshold``, sorted by decreasing cosine.

    Between two sets ``i`` indexes A and ``j`` indexes B; within one set ``i < j`` and every pair
    appears once. ``stats`` counts the work done (candidates before/after the sketch filter, exactly
    verified pairs, giant buckets, zero rows), ``seconds`` the time per stage.
    """

    i: np.ndarray
    j: np.ndarray
    cosine: np.ndarray
    within: bool
    n_a: int
    n_b: int
    threshold: float
    method: str = "lsh"
    stats: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.i)

    def keys(self) -> np.ndarray:
        """Each pair as one int64 ``i * n_b + j`` (for set comparisons)."""
        return self.i.astype(np.int64) * self.n_b + self.j

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"i": self.i, "j": self.j, "cosine": self.cosine})

    def summary(self) -> dict[str, Any]:
        """Counts, timing and configuration as a JSON-ready dict."""
        out: dict[str, Any] = {
            "method": self.method,
            "mode": "within" if self.within else "between",
            "n_a": self.n_a,
            "n_b": self.n_b,
            "threshold": self.threshold,
            "pairs": len(self),
            "rows_a_with_duplicate": int(len(np.unique(self.i))),
            "rows_b_with_duplicate": int(len(np.unique(self.j))),
        }
        if self.within:
            out["rows_in_some_pair"] = int(len(np.unique(np.concatenate([self.i, self.j]))))
        out.update({k: int(v) for k, v in self.stats.items()})
        out["seconds"] = {k: round(v, 4) for k, v in self.seconds.items()}
        out["config"] = dict(self.config)
        return out


def recall(found: Duplicates, exact: Duplicates) -> float:
    """Fraction of the exact pairs that ``found`` reports (1.0 when there are none)."""
    if len(exact) == 0:
        return 1.0
    return float(np.isin(exact.keys(), found.keys()).mean())


# ----------------------------------------------------------------------------------------------
# vectors
# ----------------------------------------------------------------------------------------------
def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 0 or len(x) == 0:
        raise ReglabError(f"duplicates: inputs must be a non-empty array of rows (got shape {x.shape})")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ReglabError(f"duplicates: inputs must be numeric (got dtype {x.dtype})")
    return x.reshape(len(x), -1)


def unit_rows(x: Any, *, center: bool = True, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``x`` flattened to float32 unit vectors (mean-centred per row first when ``center``).

    Returns ``(unit, zero)``: rows with no direction (constant rows when centring, all-zero rows)
    are left as zero vectors and flagged in ``zero``; they are never reported as duplicates.
    """
    x = _as_numpy(x)
    out = np.empty(x.shape, dtype=np.float32)
    zero = np.zeros(len(x), dtype=bool)
    for s in range(0, len(x), chunk):
        c = x[s : s + chunk].astype(np.float32)
        scale = np.abs(c).max(axis=1) if c.shape[1] else np.zeros(len(c), np.float32)
        if center:
            c -= c.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(c, axis=1)
        z = ~np.isfinite(norm) | (norm <= 1e-6 * scale * math.sqrt(max(c.shape[1], 1))) | (norm == 0)
        c /= np.where(z, 1.0, norm)[:, None]
        c[z] = 0.0
        out[s : s + chunk] = c
        zero[s : s + chunk] = z
    return out, zero


def _hyperplanes(dim: int, bits: int, tables: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((dim, tables * bits), dtype=np.float32)


def _hash(unit: np.ndarray, planes: np.ndarray, bits: int, tables: int, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Bucket codes ``(n, tables)`` int64 and the packed sign sketch ``(n, words)`` uint64."""
    n = len(unit)
    total = bits * tables
    words = (total + 63) // 64
    codes = np.empty((n, tables), dtype=np.int64)
    sketch = np.zeros((n, words * 8), dtype=np.uint8)
    weights = np.left_shift(np.int64(1), np.arange(bits, dtype=np.int64))
    for s in range(0, n, chunk):
        signs = unit[s : s + chunk] @ planes > 0
        codes[s : s + chunk] = signs.reshape(-1, tables, bits).astype(np.int64) @ weights
        packed = np.packbits(signs, axis=1, bitorder="little")
        sketch[s : s + chunk, : packed.shape[1]] = packed
    return codes, sketch.view(np.uint64)


def _probe_masks(bits: int, probe: int) -> np.ndarray:
    """XOR masks of all codes within Hamming distance ``probe`` (0, 1 or 2) of a code."""
    masks = [0]
    if probe >= 1:
        masks += [1 << k for k in range(bits)]
    if probe >= 2:
        masks += [(1 << k) | (1 << m) for k in range(bits) for m in range(k + 1, bits)]
    return np.asarray(masks, dtype=np.int64)


def sketch_limit(threshold: float, n_bits: int, tail: float) -> int:
    """Largest sketch Hamming distance kept: the ``1 - tail`` quantile of Binomial(n_bits, angle/pi)
    for a pair whose cosine is exactly ``threshold`` (pairs above it have smaller expected distance)."""
    from scipy.stats import binom

    p = math.acos(min(max(threshold, -1.0), 1.0)) / math.pi
    return int(binom.ppf(1.0 - tail, n_bits, p))


def _expand(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[k], starts[k] + sizes[k])`` over k, vectorized."""
    total = int(sizes.sum())
    offsets = np.cumsum(sizes) - sizes
    return np.arange(total, dtype=np.int64) - np.repeat(offsets - starts, sizes)


def _cosines(ua: np.ndarray, ub: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 2048) -> np.ndarray:
    out = np.empty(len(i), dtype=np.float32)
    for s in range(0, len(i), chunk):
        out[s : s + chunk] = np.einsum("ij,ij->i", ua[i[s : s + chunk]], ub[j[s : s + chunk]])
    return out


def _check(bits: int, tables: int, probe: int, threshold: float, max_bucket: int, sketch_tail: float) -> None:
    if not 1 <= bits <= 62:
        raise ReglabError(f"duplicates: bits must be in 1..62 (got {bits})")
    if tables < 1:
        raise ReglabError(f"duplicates: tables must be >= 1 (got {tables})")
    if probe not in (0, 1, 2):
        raise ReglabError(f"duplicates: probe must be 0, 1 or 2 (got {probe})")
    if probe > bits:
        raise ReglabError(f"duplicates: probe ({probe}) cannot exceed bits ({bits})")
    if not 0.0 < threshold <= 1.0:
        raise ReglabError(f"duplicates: threshold must be in (0, 1] (got {threshold})")
    if max_bucket < 1:
        raise ReglabError(f"duplicates: max_bucket must be >= 1 (got {max_bucket})")
    if not 0.0 <= sketch_tail < 1.0:
        raise ReglabError(f"duplicates: sketch_tail must be in [0, 1) (got {sketch_tail})")


# ----------------------------------------------------------------------------------------------
# LSH search
# ----------------------------------------------------------------------------------------------
def find_duplicates(
    a: Any,
    b: Any | None = None,
    *,
    bits: int = 16,
    tables: int = 8,
    probe: int = 1,
    threshold: float = 0.95,
    seed: int = 0,
    center: bool = True,
    max_bucket: int = 4096,
    sketch_tail: float = 1e-6,
    query_chunk: int = 4096,
) -> Duplicates:
    """Near-duplicate pairs by random-hyperplane LSH, confirmed with the exact cosine.

    ``a``, ``b``: arrays or tensors with one example per row (any trailing shape, flattened).
    With ``b`` the pairs are A x B (e.g. train vs test leakage); without it, pairs ``i < j`` within A.

    Knobs: ``bits`` per code (16), ``tables`` independent codes (8), ``probe`` Hamming radius of the
    multi-probe (1; 0..2), ``threshold`` on the cosine (0.95), ``seed`` of the hyperplanes (0),
    ``center`` each row on its own mean before the cosine (True; for raw images this removes overall
    brightness), ``max_bucket`` size above which a bucket is searched exactly instead of expanded
    (4096), ``sketch_tail`` miss probability allowed to the sketch pre-filter (1e-6; 0 disables it).
    """
    _check(bits, tables, probe, threshold, max_bucket, sketch_tail)
    t0 = time.perf_counter()
    within = b is None
    ua, za = unit_rows(a, center=center)
    if within:
        ub, zb = ua, za
    else:
        ub, zb = unit_rows(b, center=center)
        if ub.shape[1] != ua.shape[1]:
            raise ReglabError(f"duplicates: A and B rows differ in size ({ua.shape[1]} vs {ub.shape[1]})")
    n_a, n_b = len(ua), len(ub)
    t_prep = time.perf_counter()

    planes = _hyperplanes(ua.shape[1], bits, tables, seed)
    codes_a, sketch_a = _hash(ua, planes, bits, tables)
    codes_b, sketch_b = (codes_a, sketch_a) if within else _hash(ub, planes, bits, tables)
    t_hash = time.perf_counter()

    limit = sketch_limit(threshold, bits * tables, sketch_tail) if sketch_tail > 0 else bits * tables
    masks = _probe_masks(bits, probe)
    index_rows = np.flatnonzero(~za)  # A rows in the index
    query_rows = np.flatnonzero(~zb)  # B rows (or A rows again) that query it
    stats = {"candidates": 0, "after_sketch_filter": 0, "verified": 0, "giant_buckets": 0,
             "giant_bucket_pairs": 0, "zero_rows_a": int(za.sum()), "zero_rows_b": 0 if within else int(zb.sum())}
    kept: list[np.ndarray] = []
    giant: dict[tuple[int, int], list[np.ndarray]] = {}  # (table, start) -> query rows hitting it
    giant_end: dict[tuple[int, int], int] = {}

    orders = []
    for t in range(tables):
        order = index_rows[np.argsort(codes_a[index_rows, t], kind="stable")]
        orders.append(order)
        sorted_codes = codes_a[order, t]
        for s in range(0, len(query_rows), query_chunk):
            q = query_rows[s : s + query_chunk]
            probes = codes_b[q, t][:, None] ^ masks[None, :]
            lo = np.searchsorted(sorted_codes, probes, side="left")
            hi = np.searchsorted(sorted_codes, probes, side="right")
            size = hi - lo
            big = size > max_bucket
            if big.any():
                qi, pi = np.nonzero(big)
                for start in np.unique(lo[qi, pi]):
                    sel = lo[qi, pi] == start
                    giant.setdefault((t, int(start)), []).append(q[qi[sel]])
                    giant_end[(t, int(start))] = int(hi[qi[sel][0], pi[sel][0]])
                size = np.where(big, 0, size)
            # expand at most ~PAIR_BUDGET candidate pairs at once (groups of whole queries)
            cum = np.cumsum(size.sum(axis=1))
            cuts = np.searchsorted(cum, np.arange(PAIR_BUDGET, cum[-1] if len(cum) else 0, PAIR_BUDGET), side="right")
            edges = np.unique(np.concatenate([[0], cuts, [len(q)]]))
            for first, last in zip(edges[:-1], edges[1:]):
                sz = size[first:last].ravel()
                qrow = np.repeat(np.repeat(q[first:last], len(masks)), sz)
                irow = order[_expand(lo[first:last].ravel(), sz)]
                if within:
                    keep = irow < qrow
                    qrow, irow = qrow[keep], irow[keep]
                stats["candidates"] += len(qrow)
                ham = np.bitwise_count(sketch_a[irow] ^ sketch_b[qrow]).sum(axis=1, dtype=np.int64)
                keep = ham <= limit
                stats["after_sketch_filter"] += int(keep.sum())
                kept.append(np.unique(irow[keep].astype(np.int64) * n_b + qrow[keep]))
    t_cand = time.perf_counter()

    keys = np.unique(np.concatenate(kept)) if kept else np.zeros(0, np.int64)
    stats["verified"] = len(keys)
    i, j = keys // n_b, keys % n_b
    cos = _cosines(ua, ub, i, j)
    hit = cos >= threshold
    i, j, cos = i[hit], j[hit], cos[hit]

    # giant buckets: exact blockwise search between their members and the queries that hit them
    if giant:
        gi, gj, gc = [i], [j], [cos]
        for (t, start), qs in giant.items():
            members = orders[t][start : giant_end[(t, start)]]
            queries = np.unique(np.concatenate(qs))
            stats["giant_buckets"] += 1
            stats["giant_bucket_pairs"] += len(members) * len(queries)
            bi, bj, bc = _block_search(ua, ub, members, queries, threshold, within)
            gi.append(bi), gj.append(bj), gc.append(bc)
        i, j, cos = np.concatenate(gi), np.concatenate(gj), np.concatenate(gc)
        keys, first = np.unique(i.astype(np.int64) * n_b + j, return_index=True)
        i, j, cos = i[first], j[first], cos[first]
    t_verify = time.perf_counter()

    rank = np.argsort(-cos, kind="stable")
    config = {"bits": bits, "tables": tables, "probe": probe, "threshold": threshold, "seed": seed,
              "center": center, "max_bucket": max_bucket, "sketch_tail": sketch_tail, "sketch_limit": limit}
    seconds = {"prepare": t_prep - t0, "hash": t_hash - t_prep, "candidates": t_cand - t_hash,
               "verify": t_verify - t_cand, "total": t_verify - t0}
    return Duplicates(i[rank].astype(np.int64), j[rank].astype(np.int64), cos[rank], within, n_a, n_b,
                      threshold, "lsh", stats, seconds, config)


def _block_search(ua: np.ndarray, ub: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray, threshold: float,
                  within: bool, block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact pairs between ``ua[rows_a]`` and ``ub[rows_b]`` with cosine >= threshold (``i < j`` when within).

    scikit-learn's brute-force ``NearestNeighbors.radius_neighbors`` (cosine distance, chunked to its
    ``working_memory``) finds the candidates within a hair of the radius; each pair's cosine is then
    the same float32 dot product of unit rows that confirms LSH candidates, so both searches agree
    exactly at the threshold.
    """
    from sklearn.neighbors import NearestNeighbors  # scikit-learn loads only when an exact search runs

    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if len(rows_a) == 0 or len(rows_b) == 0:
        return empty
    index = NearestNeighbors(radius=min(2.0, 1.0 - threshold + 1e-5), metric="cosine", algorithm="brute")
    found = index.fit(ub[rows_b]).radius_neighbors(ua[rows_a], return_distance=False)
    counts = np.fromiter((len(f) for f in found), dtype=np.int64, count=len(found))
    if counts.sum() == 0:
        return empty
    i = rows_a[np.repeat(np.arange(len(rows_a)), counts)]
    j = rows_b[np.concatenate(found).astype(np.int64)]
    cos = _cosines(ua, ub, i, j)
    keep = (cos >= threshold) & ((i < j) if within else True)
    return i[keep].astype(np.int64), j[keep].astype(np.int64), cos[keep]


def exact_duplicates(a: Any, b: Any | None = None, *, threshold: float = 0.95, center: bool = True,
                     block: int = 2048) -> Duplicates:
    """All pairs with cosine >= ``threshold`` by blockwise matrix products (quadratic; for recall)."""
    if not 0.0 < threshold <= 1.0:
        raise ReglabError(f"duplicates: threshold must be in (0, 1] (got {threshold})")
    t0 = time.perf_counter()
    within = b is None
    ua, za = unit_rows(a, center=center)
    ub, zb = (ua, za) if within else unit_rows(b, center=center)
    if ub.shape[1] != ua.shape[1]:
        raise ReglabError(f"duplicates: A and B rows differ in size ({ua.shape[1]} vs {ub.shape[1]})")
    rows_a, rows_b = np.flatnonzero(~za), np.flatnonzero(~zb)
    if within:  # only blocks on or above the diagonal
        parts = [_block_search(ua, ua, rows_a[s : s + block], rows_a[s:], threshold, True, block)
                 for s in range(0, len(rows_a), block)]
        i, j, cos = (np.concatenate([p[k] for p in parts]) for k in range(3))
    else:
        i, j, cos = _block_search(ua, ub, rows_a, rows_b, threshold, False, block)
    rank = np.lexsort((j, i, -cos))
    seconds = {"total": time.perf_counter() - t0}
    return Duplicates(i[rank].astype(np.int64), j[rank].astype(np.int64), cos[rank], within, len(ua), len(ub),
                      threshold, "exact", {"zero_rows_a": int(za.sum())}, seconds,
                      {"threshold": threshold, "center": center})


# ----------------------------------------------------------------------------------------------
# picture of the top pairs
# ----------------------------------------------------------------------------------------------
def _to_hwc(img: Any) -> np.ndarray:
    img = np.asarray(img.detach().cpu() if hasattr(img, "detach") else img)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.dtype != np.uint8:
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) / (hi - lo if hi > lo else 1.0)
    return img


def save_pair_grid(images_a: Any, images_b: Any | None, result: Duplicates, path: str | Path, *, k: int = 16,
                   pairs_per_row: int = 4, labels: tuple[str, str] = ("A", "B")) -> Path:
    """PNG of the ``k`` most similar pairs side by side (A image, B image; title: indices and cosine).

    ``images_*``: uint8 or float images, NCHW / NHWC / NHW. ``images_b`` is None for a within-set result.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images_b = images_a if images_b is None else images_b
    k = min(k, len(result))
    rows = max(1, math.ceil(k / pairs_per_row))
    cols = 2 * pairs_per_row
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    la, lb = labels if not result.within else ("", "")
    for n in range(k):
        r, c = divmod(n, pairs_per_row)
        i, j = int(result.i[n]), int(result.j[n])
        for side, (img, idx, lab) in enumerate(((images_a[i], i, la), (images_b[j], j, lb))):
            ax = axes[r, 2 * c + side]
            pic = _to_hwc(img)
            ax.imshow(pic, cmap="gray" if pic.ndim == 2 else None, interpolation="nearest")
            ax.set_title(f"{lab}{idx}" + (f"  cos {result.cosine[n]:.3f}" if side == 0 else ""), fontsize=7, loc="left")
    if k == 0:
        axes[0, 0].text(0, 0.5, "no pairs above the threshold", fontsize=9)
    fig.suptitle(f"top {k} of {len(result)} pairs with cosine >= {result.threshold}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
