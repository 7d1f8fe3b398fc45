"""Shared plumbing of the batch augmentations: flatten ``(S, B, ...)`` to ``(S*B, C, ...)`` images or
signals, and back. Every augmentation runs on whole batches on the training device; only the small
per-example parameters are drawn on the CPU from each seed's generator.
"""
from __future__ import annotations

from torch import Tensor

from ..errors import ReglabError


def as_channels(x: Tensor, input_shape: tuple[int, ...], name: str, min_dims: int = 1) -> Tensor:
    """``(S, B, *input_shape)`` -> ``(S*B, C, *spatial)`` (1-D signals get one channel)."""
    shape = (1, *input_shape) if len(input_shape) == 1 else tuple(input_shape)
    if len(shape) - 1 < min_dims:
        raise ReglabError(f"technique {name}: needs inputs with {min_dims} spatial dimension(s), got shape {input_shape}")
    return x.reshape(-1, *shape)
