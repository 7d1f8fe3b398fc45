"""Label-noise wrappers around any dataset, to measure robustness and memorization.

Three treatments of the *training* split (validation and test stay clean and untouched):

- ``noisy_labels(alpha)`` (Rolnick, Veit, Belongie & Shavit, "Deep Learning is Robust to Massive
  Label Noise", arXiv:1705.10694, 2017): the clean examples are kept and ``alpha`` extra copies of
  every example are added, each with a label drawn uniformly from all K classes (so a noisy copy
  carries the true label with probability 1/K). The copies are *index-mapped* onto the stored
  inputs (``Split.index``), never copied: at alpha = 100 only the labels and the index are new.
  Rows ``0..n-1`` are the clean examples; copy ``j`` (1..alpha) of example ``i`` is row ``j*n + i``.
- ``rand_y(fraction)`` (Zhang et al., "Understanding deep learning requires rethinking
  generalization", ICLR 2017; Arpit et al., "A Closer Look at Memorization in Deep Networks", ICML
  2017): a random subset of ``round(fraction * n)`` examples gets labels drawn uniformly from all
  K classes (which may coincide with the true label, as in Zhang et al.).
- ``rand_x(fraction)`` (Arpit et al. 2017; Zhang et al.'s "Gaussian" inputs): a random subset of
  ``round(fraction * n)`` examples has its input replaced by Gaussian noise with the per-channel mean
  and standard deviation of the training inputs; labels are kept. Only the new noise inputs are
  stored (appended to ``x`` and reached through ``index``). Images stored as uint8 get the noise in
  pixel units, rounded and clipped to [0, 255] (the clipping shifts the moments of the noise a little).

All draws come from one generator seeded with ``noise_seed``, independent of the run seed: the noise
is fixed at load time, so every epoch, every seed and every reload with the same ``noise_seed`` sees
the same noisy dataset. Registered as the dataset ``noisy:NAME`` (any registered dataset, e.g.
``noisy:mnist`` or ``noisy:csv:data.csv``) with options ``mode`` ("noisy_labels", "rand_y",
"rand_x"), ``alpha`` (noisy_labels), ``fraction`` (rand_y, rand_x), ``noise_seed`` and ``options``
(passed to the wrapped loader).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from ..errors import ReglabError
from . import load, register
from .base import Data, Split, channel_stats

Mode = Literal["noisy_labels", "rand_y", "rand_x"]


def _base_index(split: Split) -> Tensor:
    return torch.arange(len(split)) if split.index is None else split.index


def noisy_labels(split: Split, alpha: int, num_classes: int, seed: int = 0) -> Split:
    """``split`` plus ``alpha`` index-mapped copies of every example with uniform random labels."""
    if alpha < 0:
        raise ReglabError(f"label noise: alpha must be >= 0, got {alpha}")
    if alpha == 0:
        return split
    _check_labels(split, "noisy_labels")
    n = len(split)
    g = torch.Generator().manual_seed(seed)
    noisy = torch.randint(num_classes, (alpha * n,), generator=g, dtype=torch.int64)
    base = _base_index(split)
    index = base.repeat(alpha + 1)
    extra = {k: v.repeat(alpha + 1, *([1] * (v.ndim - 1))) for k, v in split.extra.items()}
    return Split(split.x, torch.cat([split.y, noisy]), index, extra)


def rand_y(split: Split, fraction: float, num_classes: int, seed: int = 0) -> Split:
    """``split`` with the labels of a random ``fraction`` of its examples drawn uniformly."""
    _check_fraction(fraction)
    _check_labels(split, "rand_y")
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(split), generator=g)[: round(fraction * len(split))]
    y = split.y.clone()
    y[rows] = torch.randint(num_classes, (len(rows),), generator=g, dtype=y.dtype)
    return Split(split.x, y, split.index, dict(split.extra))


def rand_x(split: Split, fraction: float, seed: int = 0) -> Split:
    """``split`` with the inputs of a random ``fraction`` of its examples replaced by Gaussian noise
    matching the per-channel mean and std of the stored training inputs (uint8: clipped to 0..255)."""
    _check_fraction(fraction)
    x = split.x
    if x.dtype == torch.int64:
        raise ReglabError("label noise: rand_x needs numeric inputs, not token ids")
    g = torch.Generator().manual_seed(seed)
    n = len(split)
    rows = torch.randperm(n, generator=g)[: round(fraction * n)]
    inputs = split.inputs(torch.arange(n))
    if x.dtype == torch.uint8 and inputs.ndim > 2:  # exact per-channel stats from histograms
        mean, std = (s.double().mul(255).view(-1, *[1] * (inputs.ndim - 2)) for s in channel_stats(inputs))
    else:  # per channel for (N, C, ...) inputs, per feature for (N, D)
        inputs = inputs.double()
        dims = [d for d in range(inputs.ndim) if d != 1] if inputs.ndim > 2 else [0]
        mean = inputs.mean(dim=dims, keepdim=True)[0]
        std = inputs.std(dim=dims, keepdim=True)[0]
    noise = mean + std * torch.randn((len(rows), *x.shape[1:]), generator=g, dtype=torch.float64)
    if x.dtype == torch.uint8:
        noise = noise.round().clamp(0, 255)
    noise = noise.to(x.dtype)
    index = _base_index(split).clone()
    index[rows] = len(x) + torch.arange(len(rows))
    return Split(torch.cat([x, noise]), split.y, index, dict(split.extra))


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction <= 1.0:
        raise ReglabError(f"label noise: fraction must be in [0, 1], got {fraction}")


def _check_labels(split: Split, mode: str) -> None:
    if split.y.dtype != torch.int64 or split.y.ndim != 1:
        raise ReglabError(f"label noise: mode {mode} needs single-label classification (class ids)")


def with_label_noise(data: Data, mode: Mode, *, alpha: int = 1, fraction: float = 1.0, seed: int = 0) -> Data:
    """``data`` with its training split treated by ``mode``; validation and test are untouched."""
    if mode in ("noisy_labels", "rand_y") and data.task != "classification":
        raise ReglabError(f"label noise: mode {mode} needs a classification dataset, not {data.task}")
    if mode == "noisy_labels":
        train = noisy_labels(data.train, alpha, data.num_outputs, seed)
        setting: dict[str, Any] = {"mode": mode, "alpha": alpha}
    elif mode == "rand_y":
        train = rand_y(data.train, fraction, data.num_outputs, seed)
        setting = {"mode": mode, "fraction": fraction}
    elif mode == "rand_x":
        train = rand_x(data.train, fraction, seed)
        setting = {"mode": mode, "fraction": fraction}
    else:
        raise ReglabError(f"label noise: unknown mode '{mode}' (allowed: noisy_labels, rand_y, rand_x)")
    info = {**data.info, "label_noise": {**setting, "noise_seed": seed, "clean_train": len(data.train)}}
    return replace(data, name=f"noisy:{data.name}", train=train, info=info)


@register("noisy", "label-noise wrapper noisy:NAME: noisy_labels(alpha) / rand_y(fraction) / rand_x(fraction) "
          "on the train split of any dataset NAME (Rolnick 2017, Zhang 2017, Arpit 2017)", takes_path=True,
          argument="NAME")
def load_noisy(
    path: str,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    mode: Mode = "noisy_labels",
    alpha: Annotated[int, Field(ge=0)] = 1,
    fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0,
    noise_seed: int = 0,
    options: dict[str, Any] = {},  # noqa: B006 (pydantic copies it)
) -> Data:
    inner = load(path, val_fraction=val_fraction, split_seed=split_seed, **options)
    return with_label_noise(inner, mode, alpha=alpha, fraction=fraction, seed=noise_seed)
