"""The dataset container every loader returns.

A :class:`Data` holds the train, validation and test splits as tensors (images as uint8 NCHW,
tabular features as float32, token ids as int64) plus what a model and a trainer need to know:
the task, the class names, the input shape, and how to turn a stored batch into model input.
The trainer moves the tensors to the training device once and indexes batches there.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor

from ..errors import ReglabError

Task = Literal["classification", "multilabel", "regression"]


@dataclass
class Split:
    """One split. ``x[index[i]]`` is the input of example ``i`` when ``index`` is set (wrappers such
    as label noise add examples without copying inputs); otherwise ``x[i]``. ``y`` has one row per
    example: class ids (int64), multilabel 0/1 rows (float32) or regression targets (float32).
    ``extra`` holds per-example side information aligned with ``y`` (e.g. ``standard_error``)."""

    x: Tensor
    y: Tensor
    index: Tensor | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def inputs(self, rows: Tensor) -> Tensor:
        """Stored inputs of the examples ``rows`` (any shape of indices)."""
        return self.x[rows if self.index is None else self.index[rows]]

    def to(self, device: torch.device | str) -> "Split":
        return Split(
            self.x.to(device),
            self.y.to(device),
            None if self.index is None else self.index.to(device),
            {k: v.to(device) for k, v in self.extra.items()},
        )


@dataclass
class Data:
    """Train/validation/test splits plus metadata.

    ``input_shape`` is the shape of one model input (``(40,)`` for MNIST-1D, ``(3, 32, 32)`` for
    CIFAR-10). ``mean``/``std`` are per-channel statistics of the training inputs *after*
    :meth:`to_input`, used by :meth:`normalize`; ``None`` when the stored inputs are already
    standardized. Image inputs are stored as uint8 and scaled to [0, 1] by :meth:`to_input`;
    augmentation runs between :meth:`to_input` and :meth:`normalize`.
    """

    name: str
    task: Task
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    classes: list[str] = field(default_factory=list)
    mean: Tensor | None = None
    std: Tensor | None = None
    kind: Literal["image", "signal", "tabular", "text"] = "tabular"
    info: dict = field(default_factory=dict)

    @property
    def num_outputs(self) -> int:
        if self.task == "regression":
            return 1 if self.train.y.ndim == 1 else self.train.y.shape[1]
        return len(self.classes)

    def to_input(self, x: Tensor) -> Tensor:
        """Stored batch -> float model input in natural units ([0, 1] for images)."""
        if x.dtype == torch.uint8:
            return x.float().div_(255)
        return x if x.dtype == torch.int64 else x.float()

    def normalize(self, x: Tensor) -> Tensor:
        """Standardize a float batch of shape (..., C, H, W) or (..., D) with the train statistics."""
        if self.mean is None:
            return x
        shape = (-1,) + (1,) * (len(self.input_shape) - 1)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def batch(self, split: Split, rows: Tensor) -> Tensor:
        """The model input of the examples ``rows`` of ``split``: stored inputs, :meth:`to_input`,
        :meth:`normalize` (what evaluation feeds the model; training augments in between)."""
        return self.normalize(self.to_input(split.inputs(rows)))

    def to(self, device: torch.device | str) -> "Data":
        return replace(
            self,
            train=self.train.to(device),
            val=self.val.to(device),
            test=self.test.to(device),
            mean=None if self.mean is None else self.mean.to(device),
            std=None if self.std is None else self.std.to(device),
        )


def carve_validation(x: Tensor, y: Tensor, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split train into (train, validation) with a fixed seed; the test split is never touched."""
    if not 0.0 < fraction < 1.0:
        raise ReglabError(f"val_fraction must be in (0, 1), got {fraction}")
    n = len(y)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(n * fraction))
    val, train = perm[:n_val].sort().values, perm[n_val:].sort().values
    return Split(x[train], y[train]), Split(x[val], y[val])


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Exact per-channel mean and std of a uint8 (N, C, ...) image tensor on [0, 1], from a
    256-bin histogram per channel (fast, and free of float accumulation error)."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        p = hist / hist.sum()
        mean = (p * values).sum()
        means.append(mean)
        stds.append(((p * (values - mean).pow(2)).sum()).sqrt())
    return torch.stack(means).float(), torch.stack(stds).float()


def subset(data: Data, n_train: int | None = None, n_val: int | None = None, n_test: int | None = None,
           seed: int = 0) -> Data:
    """``data`` with the first ``n`` examples of a seeded permutation of each split (None: all)."""
    g = torch.Generator().manual_seed(seed)

    def take(split: Split, n: int | None, what: str) -> Split:
        if n is None or n >= len(split):
            return split
        if n < 1:
            raise ReglabError(f"{what}: must be >= 1, got {n}")
        rows = torch.randperm(len(split), generator=g)[:n].sort().values
        index = None if split.index is None else split.index[rows]
        return Split(split.x if index is not None else split.x[rows], split.y[rows], index,
                     {k: v[rows] for k, v in split.extra.items()})

    return replace(data, train=take(data.train, n_train, "n_train"), val=take(data.val, n_val, "n_val"),
                   test=take(data.test, n_test, "n_test"))
