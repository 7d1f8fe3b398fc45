"""Sudoku generator, solver, augmentations, metrics and the ``sudoku`` dataset."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reglab.data import load
from reglab.data.sudoku import (
    augment,
    augment_maps,
    cell_accuracy,
    count_solutions,
    exact_accuracy,
    generate,
    is_valid_solution,
    make_puzzle,
    random_grid,
    solve,
)
from reglab.errors import ReglabError

# A 17-clue puzzle (the minimum for a unique solution); the test checks it has exactly one.
PUZZLE_17 = (
    "000000010400000000020000000000050407008000300001090000300400200050100000000806000"
)


def grid(s: str) -> np.ndarray:
    return np.array([int(c) for c in s], dtype=np.int64)


def check_solution_of(puzzle: np.ndarray, solution: np.ndarray) -> None:
    assert is_valid_solution(solution)
    given = puzzle > 0
    assert (solution[given] == puzzle[given]).all()


def test_solver_counts_and_solves():
    p = grid(PUZZLE_17)
    assert count_solutions(p) == 1
    s = solve(p)
    check_solution_of(p, s)
    # removing a clue of a minimal puzzle admits several solutions
    q = p.copy()
    q[np.flatnonzero(q)[0]] = 0
    assert count_solutions(q, limit=2) == 2
    assert count_solutions(q, limit=5) == 5
    # a contradictory puzzle (two 1s in the first row) has none
    bad = np.zeros(81, dtype=np.int64)
    bad[0] = bad[1] = 1
    assert count_solutions(bad) == 0 and solve(bad) is None
    # a puzzle with no contradiction among givens but no completion
    blocked = np.zeros(81, dtype=np.int64)
    blocked[1:9] = np.arange(2, 10)  # row 0 needs a 1 at cell 0 ...
    blocked[9 * 4] = 1  # ... but column 0 already has one
    assert count_solutions(blocked) == 0
    with pytest.raises(ReglabError):
        count_solutions(np.zeros(80, dtype=np.int64))


def test_is_valid_solution_detects_errors():
    s = random_grid(np.random.default_rng(3))
    assert is_valid_solution(s)
    swapped = s.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # swap two cells of a row: columns break
    assert not is_valid_solution(swapped)


def test_generated_puzzles_are_valid_and_unique():
    rng = np.random.default_rng(0)
    puzzles, solutions, clues = generate(50, min_clues=22, max_clues=40, rng=rng)
    for p, s, c in zip(puzzles, solutions, clues):
        check_solution_of(p, s)
        assert count_solutions(p) == 1
        assert (solve(p) == s).all()
        assert c == (p > 0).sum() and 22 <= c <= 81
    assert clues.max() <= 40 and clues.min() < 30  # targets are reached, difficulty varies
    # same generator seed, same puzzles
    again = generate(50, min_clues=22, max_clues=40, rng=np.random.default_rng(0))
    assert (again[0] == puzzles).all() and (again[1] == solutions).all()
    assert not (generate(5, min_clues=22, max_clues=40, rng=np.random.default_rng(1))[1] == solutions[:5]).all()


def test_make_puzzle_hits_target_or_is_minimal():
    rng = np.random.default_rng(7)
    s = random_grid(rng)
    assert ((make_puzzle(s, 45, rng) > 0).sum()) == 45
    for _ in range(3):  # target 17 is out of reach of random removal: the result must be minimal
        s = random_grid(rng)
        p = make_puzzle(s, 17, rng)
        assert count_solutions(p) == 1 and (p > 0).sum() > 17
        for cell in np.flatnonzero(p):
            q = p.copy()
            q[cell] = 0
            assert count_solutions(q) == 2


def _as_tensors(puzzles: np.ndarray, solutions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(puzzles), torch.from_numpy(solutions) - 1


def test_augmentations_preserve_validity_and_are_deterministic():
    puzzles, solutions, _ = generate(20, min_clues=28, max_clues=34, rng=np.random.default_rng(1))
    x, y = _as_tensors(puzzles, solutions)
    xa, ya = augment(x, y, torch.Generator().manual_seed(5))
    assert xa.shape == x.shape and xa.dtype == torch.int64 and ya.dtype == torch.int64
    for p, s in zip(xa.numpy(), ya.numpy() + 1):
        check_solution_of(p, s)
    assert ((xa > 0).sum(1) == (x > 0).sum(1)).all()  # same number of clues
    for p in xa[:5].numpy():
        assert count_solutions(p) == 1
    # deterministic for a fixed generator, different for another seed, never the identity here
    xb, yb = augment(x, y, torch.Generator().manual_seed(5))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    xc, _ = augment(x, y, torch.Generator().manual_seed(6))
    assert not torch.equal(xa, xc)
    assert (xa != x).any(1).all()


def test_augment_maps_cover_every_transformation():
    cell, digits = augment_maps(3000, torch.Generator().manual_seed(0))
    assert (cell.sort(1).values == torch.arange(81)).all()  # each map is a permutation of cells
    assert (digits[:, 0] == 0).all() and (digits[:, 1:].sort(1).values == torch.arange(1, 10)).all()
    old_row = cell.view(-1, 9, 9) // 9
    plain = (old_row == old_row[:, :, :1]).flatten(1).all(1)  # new row i <- one old row
    transposed = (old_row == old_row[:, :1, :]).flatten(1).all(1)  # new row i <- one old column
    assert (plain ^ transposed).all()
    assert 0.45 < transposed.float().mean() < 0.55
    g = cell.view(-1, 9, 9)[plain]
    for order in (g[:, :, 0] // 9, g[:, 0, :] % 9):  # row order and column order
        bands = order.view(-1, 3, 3) // 3
        assert (bands == bands[:, :, :1]).all()  # lines stay within their band/stack
        assert len({tuple(b) for b in bands[:, :, 0].tolist()}) == 6  # all band orders occur
        assert len({tuple(w) for w in (order.view(-1, 3, 3) % 3)[:, 0].tolist()}) == 6  # and orders within


def test_metrics_trust_givens_and_count_blanks():
    puzzles, solutions, _ = generate(2, min_clues=40, max_clues=40, rng=np.random.default_rng(2))
    x, y = _as_tensors(puzzles, solutions)
    logits = torch.nn.functional.one_hot(y, 9).float()
    assert exact_accuracy(logits, y, x).item() == 1.0 and cell_accuracy(logits, y, x).item() == 1.0
    wrong = logits.clone()
    given = int(torch.nonzero(x[0] > 0)[0])
    wrong[0, given] = torch.roll(wrong[0, given], 1)  # a wrong given cell is overridden by the puzzle
    assert exact_accuracy(wrong, y, x).item() == 1.0
    blank = int(torch.nonzero(x[0] == 0)[0])
    wrong[0, blank] = torch.roll(wrong[0, blank], 1)
    assert exact_accuracy(wrong, y, x).item() == 0.5
    assert cell_accuracy(wrong, y, x).item() == pytest.approx(1 - 1 / 82)  # 41 + 41 blanks
    stacked = exact_accuracy(torch.stack([logits, wrong]), torch.stack([y, y]), torch.stack([x, x]))
    assert stacked.tolist() == [1.0, 0.5]  # a leading seed dimension gives one value per seed


def test_dataset_is_cached_fixed_by_seed_and_validated(tmp_path, monkeypatch):
    monkeypatch.setenv("REGLAB_CACHE", str(tmp_path))
    d = load("sudoku", n_train=12, n_val=4, n_test=6, clues=36, seed=3)
    assert d.task == "classification" and d.input_shape == (81,) and d.num_outputs == 9
    assert d.classes == [str(i) for i in range(1, 10)]
    assert d.train.x.shape == (12, 81) and d.train.y.shape == (12, 81) and d.test.x.shape == (6, 81)
    assert d.train.x.dtype == torch.int64 and d.train.y.min() >= 0 and d.train.y.max() <= 8
    assert (d.train.extra["clues"] == 36).all()
    for split in (d.train, d.val, d.test):
        for p, s in zip(split.x.numpy(), split.y.numpy() + 1):
            check_solution_of(p, s)
    assert len(list((tmp_path / "sudoku").glob("*.npz"))) == 3
    again = load("sudoku", n_train=20, n_val=4, n_test=6, clues=36, seed=3)
    assert torch.equal(again.test.x, d.test.x) and torch.equal(again.val.y, d.val.y)  # independent of n_train
    other = load("sudoku", n_train=12, n_val=4, n_test=6, clues=36, seed=4)
    assert not torch.equal(other.test.x, d.test.x)
    aug = load("sudoku", n_train=12, n_val=4, n_test=6, clues=36, seed=3, augment_copies=2)
    assert len(aug.train) == 36 and torch.equal(aug.train.x[:12], d.train.x)
    for p, s in zip(aug.train.x[12:].numpy(), aug.train.y[12:].numpy() + 1):
        check_solution_of(p, s)
    with pytest.raises(ReglabError, match="clues"):
        load("sudoku", min_clues=40, max_clues=30)
    with pytest.raises(ReglabError, match="n_train"):
        load("sudoku", n_train=0)
    with pytest.raises(ReglabError, match="unknown option"):
        load("sudoku", clue=30)
