"""What a trained model needs to know about its dataset, without the dataset.

:func:`signature` records a :class:`~reglab.data.base.Data`'s task, class names, input shape and
dtype, target shape, normalization statistics, kind, side-information names and the model options
it suggests; checkpoints store it, so that :func:`reglab.load` rebuilds a trained model (every
technique's model transformation included) and :func:`reglab.predict` normalizes new inputs as the
run did, without loading the data. :func:`placeholder` turns it back into a :class:`Data` whose
splits are empty.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import Data, Split


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def signature(data: Data) -> dict[str, Any]:
    """The dataset facts a model and its inputs depend on (tensors, numbers, strings and lists only)."""
    suggested = data.info.get("model_options", {})
    return {
        "name": data.name,
        "task": data.task,
        "classes": list(data.classes),
        "input_shape": list(data.input_shape),
        "x_dtype": _dtype_name(data.train.x.dtype),
        "x_shape": list(data.train.x.shape[1:]),
        "y_dtype": _dtype_name(data.train.y.dtype),
        "y_shape": list(data.train.y.shape[1:]),
        "mean": None if data.mean is None else data.mean.detach().cpu().float(),
        "std": None if data.std is None else data.std.detach().cpu().float(),
        "kind": data.kind,
        "extra": sorted(data.train.extra),
        "model_options": {k: v for k, v in suggested.items() if isinstance(v, (int, float, str, bool))},
        "vocab_size": data.info["vocab_size"] if isinstance(data.info.get("vocab_size"), int) else None,
    }


def placeholder(sig: dict[str, Any]) -> Data:
    """A :class:`Data` with the facts of ``sig`` and empty splits (for rebuilding a model)."""
    x_dtype, y_dtype = getattr(torch, sig["x_dtype"]), getattr(torch, sig["y_dtype"])

    def empty() -> Split:
        extra: dict[str, Tensor] = {k: torch.zeros(0) for k in sig["extra"]}
        return Split(torch.zeros(0, *sig["x_shape"], dtype=x_dtype), torch.zeros(0, *sig["y_shape"], dtype=y_dtype),
                     extra=extra)

    info: dict[str, Any] = {"model_options": dict(sig["model_options"])}
    if sig.get("vocab_size") is not None:
        info["vocab_size"] = sig["vocab_size"]
    return Data(sig["name"], sig["task"], empty(), empty(), empty(), tuple(sig["input_shape"]), list(sig["classes"]),
                sig["mean"], sig["std"], kind=sig["kind"], info=info)
