"""A user's own data as a :class:`~reglab.data.base.Data`: ``(X, y)`` tensors or numpy arrays, a
torch ``Dataset``, or train/validation/test pairs (what :func:`reglab.fit` and :func:`reglab.study`
accept).

- ``(X, y)``: one row per example. Without ``test``, ``test_fraction`` of the rows are held out as the
  test split; without ``val``, ``val_fraction`` of the remaining training rows form the validation
  split. Both are drawn with the fixed ``split_seed`` (independent of the run seeds), so every seed
  and every run sees the same splits.
- a ``torch.utils.data.Dataset`` whose items are ``(x, y)`` pairs of tensors, arrays or numbers is
  read once into tensors (``len(dataset)`` items).
- ``{"train": (X, y), "val": (X, y), "test": (X, y)}`` (``val``/``test`` optional) or the same as
  keyword arguments.

The task is inferred from ``y`` unless given: integer labels are a classification (classes
``0..max(y)``), floats a regression; a multilabel task must be named (0/1 rows). Float inputs are
standardized per channel (the first feature dimension) with the training split's mean and standard
deviation, uint8 inputs are images (scaled to [0, 1], then standardized), int64 inputs are token ids
(left as they are). The dataset is named ``tensors@<fingerprint>``: a hash of its contents, so a
configuration's record says which data it was trained on.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ReglabError
from ..options import registered_while
from . import DATASETS, DatasetEntry
from .base import Data, Split, Task, carve_validation, channel_stats

TASKS = ("classification", "multilabel", "regression")


def as_tensor(value: Any, what: str) -> Tensor:
    """A tensor from a tensor, a numpy array or a (nested) list of numbers; float64 becomes float32."""
    if isinstance(value, Tensor):
        t = value.detach().cpu()
    elif isinstance(value, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(value))
    else:
        try:
            t = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise ReglabError(f"data: {what} must be a tensor, a numpy array or a list of numbers "
                              f"(got {type(value).__name__})") from None
    return t.float() if t.dtype == torch.float64 else t


def as_pair(obj: Any, what: str) -> tuple[Tensor, Tensor]:
    """``(X, y)`` tensors from a pair of tensors/arrays or from a torch ``Dataset`` of pairs."""
    if isinstance(obj, torch.utils.data.Dataset) and not isinstance(obj, tuple):
        return _materialize(obj, what)
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise ReglabError(f"data: {what} must be an (X, y) pair or a torch Dataset of (x, y) items "
                          f"(got {type(obj).__name__})")
    x, y = as_tensor(obj[0], f"{what} X"), as_tensor(obj[1], f"{what} y")
    if len(x) != len(y):
        raise ReglabError(f"data: {what} has {len(x)} inputs but {len(y)} targets")
    if len(x) == 0:
        raise ReglabError(f"data: {what} is empty")
    return x, y


def _materialize(dataset: Any, what: str) -> tuple[Tensor, Tensor]:
    try:
        n = len(dataset)
    except TypeError:
        raise ReglabError(f"data: {what} is a Dataset without len(); pass (X, y) tensors instead") from None
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ReglabError(f"data: {what}[{i}] is not an (x, y) pair (got {type(item).__name__})")
        x, y = item
        if not isinstance(x, (Tensor, np.ndarray, int, float, list)):
            raise ReglabError(f"data: {what}[{i}] input is a {type(x).__name__}; give the Dataset a transform "
                              "that returns tensors (e.g. torchvision.transforms.v2.PILToTensor())")
        xs.append(as_tensor(x, f"{what}[{i}] input"))
        ys.append(as_tensor(y, f"{what}[{i}] target"))
    if not xs:
        raise ReglabError(f"data: {what} is empty")
    return torch.stack(xs), torch.stack(ys)


def infer_task(y: Tensor) -> Task:
    """Integer (or bool) labels: classification; floating targets: regression."""
    return "regression" if y.is_floating_point() else "classification"


def _targets(y: Tensor, task: Task, what: str) -> Tensor:
    if task == "classification":
        if y.is_floating_point():
            if not torch.equal(y, y.round()):
                raise ReglabError(f"data: {what} y holds non-integer values; a classification needs class ids")
        y = y.long()
        if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] > 1):
            y = y.reshape(len(y))
        if len(y) and int(y.min()) < 0:
            raise ReglabError(f"data: {what} y holds negative class ids (classes are 0..K-1)")
        return y
    if task == "multilabel":
        if y.ndim != 2:
            raise ReglabError(f"data: {what} y must be (N, labels) 0/1 rows for a multilabel task, got shape {tuple(y.shape)}")
        return y.float()
    return y.float()


def _stats(x: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """Per-channel mean and std of training inputs (None for token ids)."""
    if x.dtype == torch.uint8:
        return channel_stats(x) if x.ndim >= 3 else channel_stats(x.unsqueeze(1))
    if not x.is_floating_point():
        return None, None
    dims = [d for d in range(x.ndim) if d != 1] if x.ndim > 1 else [0]
    mean, std = x.mean(dims), x.std(dims)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean, std


def _kind(x: Tensor) -> str:
    if x.dtype == torch.int64 or x.dtype == torch.int32:
        return "text"
    if x.ndim == 4 or x.dtype == torch.uint8:
        return "image"
    return "signal" if x.ndim == 3 else "tabular"


def from_tensors(
    train: Any,
    val: Any = None,
    test: Any = None,
    *,
    task: Task | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    classes: list[str] | None = None,
) -> Data:
    """A :class:`Data` from ``(X, y)`` pairs or Datasets (see the module docstring)."""
    if task is not None and task not in TASKS:
        raise ReglabError(f"data: unknown task '{task}' (allowed: {', '.join(TASKS)})")
    x, y = as_pair(train, "train")
    task = task or infer_task(y)
    pairs: dict[str, tuple[Tensor, Tensor]] = {}
    if test is None:
        if not 0.0 < test_fraction < 1.0:
            raise ReglabError(f"data: test_fraction must be in (0, 1) when no test split is given, got {test_fraction}")
        rest, held = carve_validation(x, y, test_fraction, split_seed + 1)
        x, y = rest.x, rest.y
        pairs["test"] = (held.x, held.y)
    else:
        pairs["test"] = as_pair(test, "test")
    if val is None:
        fit_split, val_split = carve_validation(x, y, val_fraction, split_seed)
        pairs["train"], pairs["val"] = (fit_split.x, fit_split.y), (val_split.x, val_split.y)
    else:
        pairs["train"], pairs["val"] = (x, y), as_pair(val, "val")
    splits = {}
    for name, (sx, sy) in pairs.items():
        if sx.shape[1:] != pairs["train"][0].shape[1:]:
            raise ReglabError(f"data: {name} inputs have shape {tuple(sx.shape[1:])}, train inputs "
                              f"{tuple(pairs['train'][0].shape[1:])}")
        splits[name] = Split(sx, _targets(sy, task, name))
    if task == "classification":
        count = 1 + max(int(s.y.max()) for s in splits.values())
        if classes is not None and len(classes) < count:
            raise ReglabError(f"data: {len(classes)} class names for class ids up to {count - 1}")
        classes = list(classes) if classes is not None else [str(c) for c in range(count)]
    elif task == "multilabel":
        classes = list(classes) if classes is not None else [str(c) for c in range(splits["train"].y.shape[1])]
    else:
        classes = []
    mean, std = _stats(splits["train"].x)
    data = Data("tensors", task, splits["train"], splits["val"], splits["test"], tuple(splits["train"].x.shape[1:]),
                classes, mean, std, kind=_kind(splits["train"].x))
    return replace(data, name=f"tensors@{fingerprint(data)}")


def as_data(data: Any, *, val: Any = None, test: Any = None, **options: Any) -> Data:
    """Any accepted form of a user's data as a :class:`Data` (a :class:`Data` is returned as is)."""
    if isinstance(data, Data):
        if val is not None or test is not None:
            raise ReglabError("data: val=/test= go with (X, y) data; a reglab Data already holds its splits")
        return data
    if isinstance(data, dict):
        unknown_keys = set(data) - {"train", "val", "test"}
        if unknown_keys or "train" not in data:
            raise ReglabError(f"data: a dict of splits needs 'train' and may have 'val', 'test' (got {sorted(data)})")
        return from_tensors(data["train"], data.get("val", val), data.get("test", test), **options)
    return from_tensors(data, val, test, **options)


def fingerprint(data: Data) -> str:
    """12 hex digits of a hash of every split's tensors (inputs, targets, index, side information)."""
    h = hashlib.sha1()
    for split in (data.train, data.val, data.test):
        for t in (split.x, split.y, split.index, *split.extra.values()):
            if t is not None:
                t = t.detach().cpu().contiguous()
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool
                         else t.numpy().tobytes())
    return h.hexdigest()[:12]


@contextmanager
def registered(data: Data) -> Iterator[str]:
    """Make ``data`` loadable by a name of its own (``load(name)``) while the block runs, and yield the
    name: ``tensors@<fingerprint>``, or ``<data.name>@<fingerprint>`` for a reglab :class:`Data`. A
    study's runner needs this, since it loads each configuration's dataset by name."""
    name = data.name if data.name.startswith("tensors@") else f"{data.name.replace(':', '-')}@{fingerprint(data)}"
    data = replace(data, name=name)

    def loader(_path: None, *, val_fraction: float = 0.1, split_seed: int = 0) -> Data:
        return data

    with registered_while(DATASETS, name, DatasetEntry(name, loader, "your own data (in memory, for the duration of one call)")):
        yield name
