"""Dropout after every activation (Srivastava et al., "Dropout: A Simple Way to Prevent Neural
Networks from Overfitting", JMLR 15, 2014). Knobs: p=0.5 (probability of zeroing a unit).

Masks are drawn per seed: each dropout layer holds a ``key`` drawn from the seed's generator when the
model is built and a call counter, and a mask element is a counter-based hash of (key, call,
position) (the idea of Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"). So a seed
gets the same masks whether it trains alone or stacked with other seeds under ``torch.func.vmap``,
and the counter, a buffer, goes into checkpoints for exact resume.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from ..errors import ReglabError
from ..models.surgery import wrap_activations
from .base import Knobs, Technique

_M32 = 0xFFFFFFFF


def hash_uniform(key: Tensor, call: Tensor, shape: torch.Size, device: torch.device) -> Tensor:
    """Uniform [0, 1) floats of ``shape``, a function of (key, call, position) only (a 32-bit
    integer mix in the style of Wang/Murmur3's finalizer, computed in int64)."""
    pos = torch.arange(shape.numel(), device=device, dtype=torch.int64).reshape(shape)
    h = (pos * 0x9E3779B1 + call * 0x85EBCA77 + key) & _M32
    h = ((h ^ (h >> 16)) * 0x7FEB352D) & _M32
    h = ((h ^ (h >> 15)) * 0x846CA68B) & _M32
    h = h ^ (h >> 16)
    return h.to(torch.float32) * (1.0 / 2**32)


class SeedDropout(nn.Module):
    """Inverted dropout with masks from :func:`hash_uniform` (see the module docstring)."""

    def __init__(self, p: float, key: int) -> None:
        super().__init__()
        self.p = p
        self.register_buffer("key", torch.tensor(key, dtype=torch.int64))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        self.calls += 1
        keep = hash_uniform(self.key, self.calls, x.shape, x.device) >= self.p
        return x * keep.to(x.dtype) / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout(Technique):
    name = "dropout"
    source = "Srivastava et al. 2014"

    class Knobs(Knobs):
        p: float = Field(0.5, ge=0, lt=1, description="drop probability")

    def apply_model(self, model, data):  # noqa: ANN001, ANN201
        # build_run seeds torch's generator with the member's seed before building it: keys are per seed
        make = lambda: SeedDropout(self.knobs.p, int(torch.randint(0, 2**31 - 1, ())))  # noqa: E731
        if wrap_activations(model, make) == 0:
            raise ReglabError("technique dropout: the model has no activation module to put dropout after")
        return model
