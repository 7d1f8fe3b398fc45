"""Memorization diagnostics of Arpit et al., "A Closer Look at Memorization in Deep Networks" (ICML 2017).

- **P(correct)** (section 3): train many independently initialized and shuffled models for one epoch
  and record, per training example, the fraction of models that classify it correctly. On real data
  many examples are learned by (almost) every model ("easy" examples) and a few by almost none; on
  noise data (``rand_x``: inputs replaced by Gaussian noise; ``rand_y``: labels replaced by random
  ones) every example sits near chance: there is nothing shared to learn first.
  :func:`train_population` trains the models as one stacked :class:`reglab.engine.stacked.Stacked`
  (``reglab.engine.loop.fit`` with many seeds), not one process per model.
- **Critical sample ratio** (section 4): the fraction of examples ``x`` that have an adversarial
  example within an L-infinity box of radius ``r`` around them, found by Langevin adversarial sample
  search (their Algorithm 1): ``x~ <- clip_r(x~ + alpha * sign(grad) + beta * eta)`` with ``eta``
  uniform on {-1, +1}, until the predicted class changes or ``max_iter`` steps. ``grad`` is the
  gradient of the cross-entropy of the originally predicted class, so each step moves away from it.
  :class:`CriticalSampleRatio` is a trainer callback that measures it on a fixed subset during training.

The search runs in input units before normalization (``[0, 1]`` pixels for images), so ``r`` is a
pixel budget; the defaults (``r = 0.02``, about 5/255, ``alpha = r/10``, ``beta = r/20``, 20 steps) are
ours, chosen so that the sign steps can reach the box's edge.

The noise treatments themselves are :func:`reglab.data.label_noise.with_label_noise` (``rand_x``,
``rand_y``: seeded, fixed once, so every epoch and every model sees the same randomized examples).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data import Data, Split
from ..engine.callbacks import Callback
from ..engine.grouping import fit_seeds
from ..errors import ReglabError
from .plots import plt, save_figure

Kind = Literal["real", "rand_x", "rand_y"]
KINDS: tuple[str, ...] = ("real", "rand_x", "rand_y")


# ---- P(correct) --------------------------------------------------------------------------------
def p_correct(correct: Tensor) -> Tensor:
    """Per-example probability of being classified correctly: the mean over models (dim 0) of a
    ``(models, examples)`` 0/1 (or bool) matrix."""
    if correct.dim() != 2:
        raise ReglabError(f"p_correct: expected a (models, examples) matrix, got shape {tuple(correct.shape)}")
    return correct.float().mean(0)


@torch.no_grad()
def population_predictions(model: torch.nn.Module, data: Data, split: Split, batch_size: int = 1024) -> Tensor:
    """Logits ``(S, N, C)`` of every member of an :class:`~reglab.engine.stacked.Stacked` (eval mode) on ``split``."""
    model.eval()
    outs = []
    for start in range(0, len(split), batch_size):
        rows = torch.arange(start, min(len(split), start + batch_size), device=split.y.device)
        x = data.batch(split, rows)
        outs.append(model(x, shared=True).float())
    return torch.cat(outs, 1)


@dataclass
class Population:
    """The outcome of :func:`train_population`: per-model, per-example correctness on the training split."""

    correct: Tensor  # (models, examples) bool
    true_prob: Tensor  # (models, examples) softmax probability of the labelled class
    labels: Tensor  # (examples,)
    seconds: float
    seeds: list[int]
    grouped: bool = False  # whether the seeds trained stacked in one Stacked model
    reason: str = ""  # why (reglab.engine.grouping.decide)

    @property
    def p_correct(self) -> Tensor:
        return p_correct(self.correct)


class _Recorder(Callback):
    """Callback: after each ``fit`` call, record every member's correctness on the training split."""

    def __init__(self) -> None:
        self.correct: list[Tensor] = []
        self.true_prob: list[Tensor] = []

    def on_fit_end(self, run: Any) -> None:
        split = run.data.train
        logits = population_predictions(run.model, run.data, split)
        y = split.y.unsqueeze(0).expand(logits.shape[0], -1)
        self.correct.append((logits.argmax(-1) == y).cpu())
        self.true_prob.append(logits.softmax(-1).gather(-1, y.unsqueeze(-1)).squeeze(-1).cpu())


def train_population(config: Any, data: Data, seeds: list[int], grouping: str = "auto",
                     progress: bool = False) -> Population:
    """Train ``config`` (usually ``epochs=1``) for every seed through :func:`reglab.engine.grouping.fit_seeds`
    and record which training examples each model classifies correctly. Each seed has its own
    initialization and data order. ``grouping``: ``auto`` (stack the seeds in one
    :class:`~reglab.engine.stacked.Stacked` when that is faster on this device), ``group`` or ``single``."""
    if grouping not in ("auto", "group", "single"):
        raise ReglabError(f"grouping: unknown '{grouping}' (allowed: auto, group, single)")
    recorder = _Recorder()
    decisions: list[Any] = []
    t0 = time.perf_counter()
    fit_seeds(config, list(seeds), data=data, grouping=grouping, callbacks=(recorder,), progress=progress,
              on_decision=decisions.append)
    seconds = time.perf_counter() - t0
    decision = decisions[0] if decisions else None
    return Population(torch.cat(recorder.correct), torch.cat(recorder.true_prob), data.train.y.cpu(), seconds,
                      list(seeds), bool(decision and decision.grouped), decision.reason if decision else "")


# ---- critical sample ratio ---------------------------------------------------------------------
def langevin_search(
    f: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    alpha: float = 0.002,
    beta: float = 0.001,
    r: float = 0.02,
    max_iter: int = 20,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Langevin adversarial sample search (Arpit et al. 2017, Algorithm 1) for a batch ``x``.

    ``f`` maps inputs of ``x``'s shape ``(..., B, *input)`` to logits ``(..., B, C)`` (leading seed
    dims allowed). Each step adds ``alpha * sign(grad) + beta * eta`` (``eta`` uniform on {-1, +1},
    drawn from ``generator`` on the CPU) and clips to the L-infinity box of radius ``r`` around ``x``;
    an example stops moving once its predicted class differs from the original one. Returns
    ``(x_adv, flipped)``; ``x_adv`` is the sample that flipped (or the last iterate), ``flipped`` a
    bool tensor of shape ``(..., B)``.
    """
    for name, value in (("alpha", alpha), ("beta", beta), ("r", r)):
        if not (value >= 0 and math.isfinite(value)):
            raise ReglabError(f"{name}: must be a finite number >= 0, got {value}")
    if max_iter < 1:
        raise ReglabError(f"max_iter: must be >= 1, got {max_iter}")
    x = x.detach()
    with torch.no_grad():
        original = f(x).argmax(-1)
    batch_dims = original.dim()
    expand = (...,) + (None,) * (x.dim() - batch_dims)
    x_adv = x.clone()
    flipped = torch.zeros_like(original, dtype=torch.bool)
    for _ in range(max_iter):
        active = ~flipped
        if not active.any():
            break
        probe = x_adv.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = f(probe)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), original.reshape(-1), reduction="sum")
            (grad,) = torch.autograd.grad(loss, probe)
        eta = torch.randint(0, 2, x.shape, generator=generator).to(x.device, x.dtype) * 2 - 1
        step = alpha * grad.sign() + beta * eta
        moved = torch.minimum(torch.maximum(x_adv + step, x - r), x + r)
        x_adv = torch.where(active[expand], moved, x_adv)
        with torch.no_grad():
            flipped = flipped | (f(x_adv).argmax(-1) != original)
    return x_adv.detach(), flipped


def critical_sample_ratio(model: torch.nn.Module, data: Data, x: Tensor, **search: Any) -> Tensor:
    """Fraction of the inputs ``x`` (stored units, ``(B, ...)``) that are critical samples for each
    member of an :class:`~reglab.engine.stacked.Stacked` (eval mode): a tensor ``(S,)``. ``search``:
    :func:`langevin_search` knobs."""
    was_training = model.training
    model.eval()
    xs = data.to_input(x)
    size = getattr(model, "size", 1)
    xs = xs.unsqueeze(0).expand(size, *xs.shape).contiguous()

    def f(inp: Tensor) -> Tensor:
        return model(data.normalize(inp))

    try:
        _, flipped = langevin_search(f, xs, **search)
    finally:
        model.train(was_training)
    return flipped.float().mean(-1)


class CriticalSampleRatio(Callback):
    """Callback: the critical sample ratio of every seed on ``n`` fixed training examples,
    before training and after every ``every`` epochs. ``history`` holds ``(epoch, [csr per seed])``."""

    order = 90

    def __init__(self, n: int = 500, every: int = 1, seed: int = 0, **search: Any) -> None:
        if n < 1 or every < 1:
            raise ReglabError(f"CriticalSampleRatio: n and every must be >= 1, got n={n}, every={every}")
        self.n, self.every, self.seed, self.search = n, every, seed, search
        self.history: list[tuple[int, list[float]]] = []
        self.rows: Tensor | None = None

    def _measure(self, run: Any) -> None:
        split = run.data.train
        g = torch.Generator().manual_seed(self.seed)
        if self.rows is None:
            self.rows = torch.randperm(len(split), generator=g)[: self.n].sort().values.to(split.y.device)
        csr = critical_sample_ratio(run.model, run.data, split.inputs(self.rows), generator=g, **self.search)
        self.history.append((run.epoch, csr.tolist()))

    def on_fit_start(self, run: Any) -> None:
        if run.epoch == 0:
            self._measure(run)

    def on_epoch_end(self, run: Any) -> None:
        if run.epoch % self.every == 0:
            self._measure(run)


# ---- plots -------------------------------------------------------------------------------------
def plot_p_correct(curves: dict[str, Tensor], path: str | Path, title: str = "") -> Path:
    """Per-example P(correct), sorted from easiest to hardest, one line per dataset variant."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, p in curves.items():
        values = p.sort(descending=True).values.numpy()
        ax.plot(range(1, len(values) + 1), values, lw=2, label=label)
    ax.set_xlabel("training examples, sorted by P(correct)")
    ax.set_ylabel("P(correct) over models")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or "P(correct) after one epoch")
    ax.legend()
    return save_figure(fig, path)


def easy_and_hard(p: Tensor, tiebreak: Tensor | None = None, k: int = 10) -> tuple[Tensor, Tensor]:
    """Indices of the ``k`` easiest and ``k`` hardest examples: by P(correct), ties broken by
    ``tiebreak`` (e.g. the mean probability of the labelled class) when given."""
    key = p.double() + (0 if tiebreak is None else 1e-6 * tiebreak.double())
    order = key.argsort(descending=True)
    return order[:k], order.flip(0)[:k]


def plot_examples(data: Data, rows: dict[str, Tensor], p: Tensor, path: str | Path) -> Path:
    """An image grid: one row per entry of ``rows`` (e.g. easiest / hardest), each image titled
    with its class and P(correct)."""
    k = max(len(r) for r in rows.values())
    fig, axes = plt.subplots(len(rows), k, figsize=(1.3 * k, 1.6 * len(rows)), squeeze=False)
    for i, (label, idx) in enumerate(rows.items()):
        for j in range(k):
            ax = axes[i][j]
            ax.axis("off")
            if j >= len(idx):
                continue
            row = idx[j : j + 1]
            img = data.to_input(data.train.inputs(row.to(data.train.y.device)))[0].cpu()
            img = img.permute(1, 2, 0).clamp(0, 1).numpy() if img.dim() == 3 else img.numpy()
            cmap = "gray" if img.ndim == 2 or img.shape[-1] == 1 else None
            ax.imshow(img.squeeze(-1) if cmap and img.ndim == 3 else img, cmap=cmap)
            cls = int(data.train.y[row].item())
            name = data.classes[cls] if data.classes else str(cls)
            ax.set_title(f"{name}\n{p[row].item():.2f}", fontsize=7)
        axes[i][0].text(-0.3, 0.5, label, transform=axes[i][0].transAxes, ha="right", va="center", fontsize=9)
    return save_figure(fig, path)


def plot_csr(histories: dict[str, list[tuple[int, list[float]]]], path: str | Path) -> Path:
    """Critical sample ratio per epoch (mean over seeds, band = min..max), one line per variant."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, history in histories.items():
        epochs = [e for e, _ in history]
        values = torch.tensor([v for _, v in history])
        ax.plot(epochs, values.mean(1).numpy(), lw=2, label=label)
        if values.shape[1] > 1:
            ax.fill_between(epochs, values.min(1).values.numpy(), values.max(1).values.numpy(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("critical sample ratio")
    ax.set_title("critical sample ratio on training examples")
    ax.legend()
    return save_figure(fig, path)
