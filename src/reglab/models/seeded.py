"""Randomness that belongs to one seed and one purpose, the same whether the seed trains alone or
stacked with other seeds under ``torch.func.vmap``.

- :func:`purpose_seed` derives the seed of one random stream from a run seed and the stream's name
  (a SHA-256 of ``"<seed>/<purpose>"``), so streams of different purposes (data order, each
  augmentation, dropout, noise inputs) are independent and adding a technique never shifts another
  stream. The engine's per-seed generators (``Run.stream``) are seeded this way.
- Inside a model, draws cannot come from a per-seed ``torch.Generator`` under vmap. Layers here use
  counter-based random numbers instead (the idea of Salmon et al. 2011, "Parallel random numbers:
  as easy as 1, 2, 3"): a value is a hash of (key, call counter, position). The key is derived from
  the seed the model was built under (``torch.initial_seed()``: the engine seeds torch with the run
  seed before building each seed's model) and the layer's name, so it does not consume the global
  generator; the counter is a buffer, so it is stacked per seed and checkpointed for exact resume.
  :class:`SeedDropout` (inverted dropout; Srivastava et al. 2014) and :func:`hash_normal` (Gaussian
  noise, e.g. engression's noise inputs) are built on :func:`hash_uniform`.
"""
from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor, nn

_M32 = 0xFFFFFFFF


def purpose_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for the random stream ``purpose`` of run seed ``seed``."""
    digest = hashlib.sha256(f"{seed}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def layer_key(tag: str) -> int:
    """A 31-bit key for a layer named ``tag`` of the model being built under ``torch.manual_seed(seed)``."""
    return purpose_seed(torch.initial_seed(), tag) & 0x7FFFFFFF


def hash_uniform(key: Tensor, call: Tensor, shape: torch.Size, device: torch.device) -> Tensor:
    """Uniform [0, 1) floats of ``shape``, a function of (key, call, position) only (a 32-bit
    integer mix in the style of Wang/Murmur3's finalizer, computed in int64). A float32 has 24
    significant bits, so ``h / 2**32`` rounds to 1.0 for the top 128 hash values (about one draw in
    3e7); those are clamped to the largest float32 below 1, so the interval stays half-open and
    :func:`hash_normal`'s ``log1p(-u)`` stays finite."""
    pos = torch.arange(math.prod(shape), device=device, dtype=torch.int64).reshape(shape)
    h = (pos * 0x9E3779B1 + call * 0x85EBCA77 + key) & _M32
    h = ((h ^ (h >> 16)) * 0x7FEB352D) & _M32
    h = ((h ^ (h >> 15)) * 0x846CA68B) & _M32
    h = h ^ (h >> 16)
    return torch.clamp(h.to(torch.float32) * (1.0 / 2**32), max=1.0 - 2**-24)


def hash_normal(key: Tensor, call: Tensor, shape: torch.Size, device: torch.device) -> Tensor:
    """Standard normal floats of ``shape`` from two :func:`hash_uniform` draws (Box & Muller 1958)."""
    u1 = hash_uniform(key, 2 * call, shape, device)
    u2 = hash_uniform(key, 2 * call + 1, shape, device)
    return torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2 * math.pi * u2)


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
