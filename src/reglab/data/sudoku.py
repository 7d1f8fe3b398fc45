"""Sudoku puzzles generated offline, with unique solutions, and their validity-preserving augmentations.

The reference task of "Less is More: Recursive Reasoning with Tiny Networks" (Jolicoeur-Martineau,
2025, arXiv:2510.04871), which trains on 1000 Sudoku-Extreme puzzles, each expanded by 1000
augmentations (digit relabelling, row/column permutations within bands/stacks, band/stack
permutations, transposition). Here the puzzles are generated, not downloaded:

* :func:`count_solutions` / :func:`solve`: a depth-first search on 9-bit candidate masks per
  row/column/box that always branches on the blank cell with the fewest candidates (the
  minimum-remaining-values heuristic), pure Python.
* :func:`random_grid`: a full valid grid from a randomized search (candidate order per cell and
  cell tie-breaking drawn from a numpy ``Generator``).
* :func:`make_puzzle`: clues removed one at a time in random order, keeping the solution unique,
  until the target number of clues is reached or no clue can be removed. Uniqueness after removing
  a clue of value ``v`` at cell ``c`` holds iff the puzzle has no solution with ``c != v`` (any
  other solution would also solve the puzzle before the removal, whose solution is unique), so
  each check is one search for a solution, usually answered at the first node.
* :func:`augment`: the paper's augmentations as vectorized index maps on ``(N, 81)`` tensors, one
  independent transformation per example drawn from a ``torch.Generator``.

Dataset ``sudoku``: ``x`` is ``(N, 81)`` int64 with 0 for a blank and 1..9 for a given digit,
``y`` is ``(N, 81)`` int64 with the solution digit minus one (classes "1".."9"); the trainer's
classification loss is then a per-cell cross-entropy. Splits are generated from independent
streams of ``seed`` (the test set does not change with ``n_train``) and cached as ``.npz`` under
``cache_dir("sudoku")``. Random removal rarely goes below ~22 clues; the achieved number of clues
of each puzzle is kept in ``Split.extra["clues"]``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import ReglabError
from . import cache_dir, register
from .base import Data, Split

ROW = [i // 9 for i in range(81)]
COL = [i % 9 for i in range(81)]
BOX = [(i // 27) * 3 + (i % 9) // 3 for i in range(81)]
_FULL = 0x1FF
_POPCOUNT = [bin(m).count("1") for m in range(512)]
_DIGITS = [[d + 1 for d in range(9) if m >> d & 1] for m in range(512)]


# ---- solver ---------------------------------------------------------------------------------------
class _Search:
    """Bitmask state of one grid: ``rows[r]`` has bit ``d-1`` set when digit ``d`` is in row ``r``."""

    def __init__(self, grid: list[int], order: np.ndarray | None = None):
        self.grid = list(grid)
        self.rows, self.cols, self.boxes = [0] * 9, [0] * 9, [0] * 9
        self.empties: list[int] = []
        self.order = order  # (81, 9) preferred digit order per cell, or None for ascending
        self.solution: list[int] | None = None
        for i, d in enumerate(self.grid):
            if d == 0:
                self.empties.append(i)
                continue
            bit = 1 << (d - 1)
            if (self.rows[ROW[i]] | self.cols[COL[i]] | self.boxes[BOX[i]]) & bit:
                self.consistent = False
                return
            self.rows[ROW[i]] |= bit
            self.cols[COL[i]] |= bit
            self.boxes[BOX[i]] |= bit
        self.consistent = True

    def candidates(self, i: int) -> int:
        return ~(self.rows[ROW[i]] | self.cols[COL[i]] | self.boxes[BOX[i]]) & _FULL

    def count(self, limit: int) -> int:
        """Number of completions, stopping at ``limit``; the first one found is kept in ``solution``."""
        empties = self.empties
        if not empties:
            if self.solution is None:
                self.solution = list(self.grid)
            return 1
        rows, cols, boxes = self.rows, self.cols, self.boxes
        best_n, best_k, best_mask = 10, -1, 0
        for k, i in enumerate(empties):  # minimum remaining values
            mask = ~(rows[ROW[i]] | cols[COL[i]] | boxes[BOX[i]]) & _FULL
            n = _POPCOUNT[mask]
            if n < best_n:
                best_n, best_k, best_mask = n, k, mask
                if n <= 1:
                    break
        if best_n == 0:
            return 0
        cell = empties[best_k]
        empties[best_k] = empties[-1]
        empties.pop()
        r, c, b = ROW[cell], COL[cell], BOX[cell]
        digits = _DIGITS[best_mask]
        if self.order is not None and len(digits) > 1:
            digits = [d for d in self.order[cell] if best_mask >> (d - 1) & 1]
        total = 0
        for d in digits:
            bit = 1 << (d - 1)
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            self.grid[cell] = d
            total += self.count(limit - total)
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
            if total >= limit:
                break
        self.grid[cell] = 0
        empties.append(cell)
        empties[best_k], empties[-1] = empties[-1], empties[best_k]
        return total


def _as_list(grid: np.ndarray | list[int] | Tensor) -> list[int]:
    flat = np.asarray(grid, dtype=np.int64).reshape(-1)
    if flat.size != 81 or flat.min() < 0 or flat.max() > 9:
        raise ReglabError(f"sudoku grid: expected 81 values in 0..9, got {flat.size} values")
    return [int(v) for v in flat]


def count_solutions(grid: np.ndarray | list[int] | Tensor, limit: int = 2) -> int:
    """Number of solutions of a puzzle (81 values, 0 = blank), counting at most ``limit``."""
    search = _Search(_as_list(grid))
    if not search.consistent:
        return 0
    return search.count(limit)


def solve(grid: np.ndarray | list[int] | Tensor) -> np.ndarray | None:
    """One solution as an (81,) int64 array of digits 1..9, or None when there is none."""
    search = _Search(_as_list(grid))
    if not search.consistent:
        return None
    search.count(1)
    return None if search.solution is None else np.array(search.solution, dtype=np.int64)


def is_valid_solution(grid: np.ndarray | Tensor) -> bool:
    """True when an (81,) grid of digits 1..9 has every row, column and box a permutation of 1..9."""
    g = np.asarray(grid).reshape(9, 9)
    target = np.arange(1, 10)
    boxes = g.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3).reshape(9, 9)
    return all((np.sort(block, axis=1) == target).all() for block in (g, g.T, boxes))


# ---- generator ------------------------------------------------------------------------------------
def random_grid(rng: np.random.Generator) -> np.ndarray:
    """A random full valid grid, (81,) int64 digits 1..9."""
    order = rng.permuted(np.tile(np.arange(1, 10), (81, 1)), axis=1)
    search = _Search([0] * 81, order=order)
    search.empties = [int(i) for i in rng.permutation(81)]  # random tie-breaking between cells
    search.count(1)  # recursion depth is at most one frame per blank cell (81)
    assert search.solution is not None  # the empty grid always has a completion
    return np.array(search.solution, dtype=np.int64)


def make_puzzle(solution: np.ndarray, clues: int, rng: np.random.Generator) -> np.ndarray:
    """Remove clues from a full grid in random order while the solution stays unique.

    Stops at ``clues`` givens or when every clue has been tried; returns the (81,) puzzle (0 = blank).
    """
    grid = [int(v) for v in solution]
    search = _Search(grid)
    given = 81
    for cell in rng.permutation(81):
        if given <= clues:
            break
        cell = int(cell)
        d = search.grid[cell]
        bit = 1 << (d - 1)
        r, c, b = ROW[cell], COL[cell], BOX[cell]
        search.rows[r] ^= bit
        search.cols[c] ^= bit
        search.boxes[b] ^= bit
        search.grid[cell] = 0
        if search.candidates(cell) != bit and _has_other_solution(search, cell, d):
            search.rows[r] |= bit  # keep the clue: removing it would admit a second solution
            search.cols[c] |= bit
            search.boxes[b] |= bit
            search.grid[cell] = d
        else:
            given -= 1
    return np.array(search.grid, dtype=np.int64)


def _has_other_solution(search: _Search, cell: int, digit: int) -> bool:
    """Is there a completion with ``cell != digit``? (``cell`` is blank in ``search``.)"""
    other = _Search(search.grid)
    mask = other.candidates(cell) & ~(1 << (digit - 1))
    other.empties.remove(cell)
    r, c, b = ROW[cell], COL[cell], BOX[cell]
    for d in _DIGITS[mask]:
        dbit = 1 << (d - 1)
        other.rows[r] |= dbit
        other.cols[c] |= dbit
        other.boxes[b] |= dbit
        other.grid[cell] = d
        if other.count(1):
            return True
        other.rows[r] ^= dbit
        other.cols[c] ^= dbit
        other.boxes[b] ^= dbit
    return False


def generate(
    n: int, *, min_clues: int, max_clues: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` puzzles: (puzzles (n, 81) 0..9, solutions (n, 81) 1..9, achieved clue counts (n,)).

    Each puzzle's target number of clues is drawn uniformly from ``[min_clues, max_clues]``.
    """
    puzzles = np.zeros((n, 81), dtype=np.int64)
    solutions = np.zeros((n, 81), dtype=np.int64)
    targets = rng.integers(min_clues, max_clues + 1, size=n)
    for k in range(n):
        solutions[k] = random_grid(rng)
        puzzles[k] = make_puzzle(solutions[k], int(targets[k]), rng)
    return puzzles, solutions, (puzzles > 0).sum(1)


# ---- augmentation ---------------------------------------------------------------------------------
def _perms(n: int, k: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """(n, k) independent random permutations of 0..k-1."""
    return torch.rand(n, k, generator=generator, device=device).argsort(-1)


def _line_order(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """(n, 9) new-to-old row (or column) order: bands permuted, rows permuted within each band."""
    bands = _perms(n, 3, generator, device)  # which old band goes to new band b
    within = _perms(n * 3, 3, generator, device).view(n, 3, 3)  # row order inside each band
    return (bands.unsqueeze(-1) * 3 + within).view(n, 9)


def augment_maps(
    n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """Per-example (cell map (n, 81), digit map (n, 10)): ``new[i] = digit_map[old[cell_map[i]]]``.

    Cell maps combine band, row-within-band, stack and column-within-stack permutations and a
    transposition with probability 1/2; digit maps relabel 1..9 by a random permutation (0 stays 0).
    """
    device = torch.device(device)
    rows = _line_order(n, generator, device)
    cols = _line_order(n, generator, device)
    cell = (rows.unsqueeze(-1) * 9 + cols.unsqueeze(-2))  # (n, 9, 9): new (i, j) <- old (rows[i], cols[j])
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    cell = torch.where(flip.view(n, 1, 1), cell.transpose(1, 2), cell).reshape(n, 81)
    digits = torch.cat([torch.zeros(n, 1, dtype=torch.long, device=device), _perms(n, 9, generator, device) + 1], 1)
    return cell, digits


def augment(x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Apply one random validity-preserving transformation per example.

    ``x``: (N, 81) puzzles (0 = blank, 1..9), ``y``: (N, 81) solutions as class ids 0..8. Returns the
    transformed (x, y); the same transformation is applied to an example's puzzle and solution.
    """
    if x.shape != y.shape or x.ndim != 2 or x.shape[1] != 81:
        raise ReglabError(f"sudoku augment: expected x and y of shape (N, 81), got {tuple(x.shape)} and {tuple(y.shape)}")
    cell, digits = augment_maps(len(x), generator, x.device)
    x_new = digits.gather(1, x.gather(1, cell))
    y_new = digits.gather(1, y.gather(1, cell) + 1) - 1
    return x_new, y_new


# ---- metrics --------------------------------------------------------------------------------------
def trusted(answer: Tensor, x: Tensor) -> Tensor:
    """Class ids ``answer`` (..., 81) with the given cells of ``x`` (tokens 1..9) trusted."""
    return torch.where(x > 0, x - 1, answer)


def predict(logits: Tensor, x: Tensor) -> Tensor:
    """Predicted class ids (..., 81) from logits (..., 81, 9), with the given cells of ``x`` trusted."""
    return trusted(logits.argmax(-1), x)


def exact_accuracy(logits: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """Fraction of puzzles with all 81 cells right, averaged over the batch dimension (dim -2 of y).

    ``logits``: (..., B, 81, 9), ``y``: (..., B, 81) class ids, ``x``: (..., B, 81) puzzles; returns
    a tensor of shape ``...`` (e.g. (S,) per seed, or a scalar).
    """
    return (predict(logits, x) == y).all(-1).float().mean(-1)


def cell_accuracy(logits: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """Fraction of blank cells predicted right (given cells excluded), shape ``...`` as above."""
    blank = (x == 0).float()
    right = (logits.argmax(-1) == y).float() * blank
    return right.sum((-1, -2)) / blank.sum((-1, -2)).clamp_min(1)


# ---- dataset --------------------------------------------------------------------------------------
_FORMAT = 1  # bump when the generator changes, so that stale cached puzzles are not reused


def _split_arrays(name: str, n: int, min_clues: int, max_clues: int, seed: int) -> dict[str, np.ndarray]:
    path = cache_dir("sudoku") / f"v{_FORMAT}_{name}_n{n}_clues{min_clues}-{max_clues}_seed{seed}.npz"
    if path.exists():
        return dict(np.load(path))
    stream = {"train": 0, "val": 1, "test": 2}[name]
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream]))
    puzzles, solutions, clues = generate(n, min_clues=min_clues, max_clues=max_clues, rng=rng)
    arrays = {"x": puzzles, "solution": solutions, "clues": clues}
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)
    return arrays


def _split(a: dict[str, np.ndarray]) -> Split:
    return Split(
        torch.from_numpy(a["x"]).long(),
        torch.from_numpy(a["solution"]).long() - 1,
        extra={"clues": torch.from_numpy(a["clues"]).long()},
    )


@register("sudoku", "Sudoku 9x9 with unique solutions, generated offline (x: 81 cells 0..9, y: digits as 9 classes)")
def load_sudoku(
    _path: None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    n_train: int = 1000,
    n_val: int = 200,
    n_test: int = 500,
    clues: int | None = None,
    min_clues: int = 30,
    max_clues: int = 36,
    seed: int = 0,
    augment_copies: int = 0,
) -> Data:
    """``clues`` sets both bounds; ``augment_copies`` appends that many augmented copies of each
    training puzzle (fixed by ``seed``; the TRM paper uses 1000). ``val_fraction``/``split_seed`` are
    unused: the validation set is generated separately."""
    if clues is not None:
        min_clues = max_clues = clues
    if not 17 <= min_clues <= max_clues <= 81:
        raise ReglabError(f"dataset sudoku: clues must satisfy 17 <= min_clues <= max_clues <= 81, got {min_clues}..{max_clues}")
    for field, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if value < 1:
            raise ReglabError(f"dataset sudoku: {field} must be >= 1, got {value}")
    if augment_copies < 0:
        raise ReglabError(f"dataset sudoku: augment_copies must be >= 0, got {augment_copies}")
    train = _split(_split_arrays("train", n_train, min_clues, max_clues, seed))
    if augment_copies:
        gen = torch.Generator().manual_seed(seed)
        xs, ys = [train.x], [train.y]
        for _ in range(augment_copies):
            xa, ya = augment(train.x, train.y, gen)
            xs.append(xa)
            ys.append(ya)
        clue_counts = train.extra["clues"].repeat(augment_copies + 1)
        train = Split(torch.cat(xs), torch.cat(ys), extra={"clues": clue_counts})
    return Data(
        name="sudoku",
        task="classification",
        train=train,
        val=_split(_split_arrays("val", n_val, min_clues, max_clues, seed)),
        test=_split(_split_arrays("test", n_test, min_clues, max_clues, seed)),
        input_shape=(81,),
        classes=[str(d) for d in range(1, 10)],
        kind="tabular",  # a "sudoku"/"grid" kind is not in Data.kind yet
        info={"min_clues": min_clues, "max_clues": max_clues, "seed": seed, "augment_copies": augment_copies},
    )
