"""A user's own ``nn.Module`` (or a factory of one) as a model builder, for :func:`reglab.fit`.

The engine builds every seed's model by name (``build_model(config.model, ...)``, after
``torch.manual_seed(seed)``), so a user's model is registered for the duration of a call under the
name ``custom:<ClassName>@<fingerprint>``; the fingerprint hashes the architecture (the module's
``repr`` and every parameter's and buffer's name, shape and dtype) and the ``init`` function's name,
so a configuration's record says which model it trained and two different models never share a
name. Each seed's model is

- for an ``nn.Module``: a deep copy, re-initialized by calling every submodule's
  ``reset_parameters()`` (in ``modules()`` order) under the seed, then ``init(module)`` when given;
  a module that holds parameters but has no ``reset_parameters`` needs ``init`` (otherwise every
  seed would start from the same weights);
- for a factory ``fn() -> nn.Module``: ``fn()`` called under the seed, then ``init`` when given.

The input shape and number of outputs come from the user's model, not from the data, so the builder
ignores them.
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import ReglabError
from ..options import registered_while
from . import MODELS, ModelEntry

PREFIX = "custom:"


def _without_reset(module: nn.Module) -> list[str]:
    """Names of submodules that own parameters directly but have no ``reset_parameters``."""
    return [name or type(module).__name__ for name, m in module.named_modules()
            if any(True for _ in m.parameters(recurse=False)) and not callable(getattr(m, "reset_parameters", None))]


def reinitialize(module: nn.Module) -> nn.Module:
    """Call ``reset_parameters()`` of every submodule that has one (in place; draws from torch's
    global generator)."""
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    return module


def fingerprint(module: nn.Module, init: Callable[[nn.Module], object] | None = None) -> str:
    """12 hex digits naming an architecture (see the module docstring)."""
    h = hashlib.sha1(repr(module).encode())
    for name, t in module.state_dict().items():
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
    if init is not None:
        h.update(f"{getattr(init, '__module__', '')}.{getattr(init, '__qualname__', repr(init))}".encode())
    return h.hexdigest()[:12]


def builder_of(model: nn.Module | Callable[[], nn.Module],
               init: Callable[[nn.Module], object] | None = None) -> tuple[str, Callable[..., nn.Module]]:
    """``(name, builder)`` for a user's module or factory; the builder makes one seed's model."""
    if isinstance(model, nn.Module):
        if init is None and (bare := _without_reset(model)):
            raise ReglabError(f"model {type(model).__name__}: {', '.join(bare[:3])} hold parameters but have no "
                              "reset_parameters(), so every seed would start from the same weights; pass init=fn "
                              "(fn(module) re-initializes it in place) or a factory fn() -> nn.Module")
        template = copy.deepcopy(model).cpu()

        def build(input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
            member = reinitialize(copy.deepcopy(template))
            if init is not None:
                init(member)
            return member

        sample = template
    elif callable(model):
        def build(input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
            member = model()
            if not isinstance(member, nn.Module):
                raise ReglabError(f"model factory {getattr(model, '__name__', model)!r} returned "
                                  f"{type(member).__name__}, not an nn.Module")
            if init is not None:
                init(member)
            return member

        state = torch.get_rng_state()
        try:
            sample = build((), 0)
        finally:
            torch.set_rng_state(state)
    else:
        raise ReglabError(f"model: expected an nn.Module, a factory fn() -> nn.Module or a model name "
                          f"(got {type(model).__name__})")
    return f"{PREFIX}{type(sample).__name__}@{fingerprint(sample, init)}", build


@contextmanager
def registered(model: nn.Module | Callable[[], nn.Module],
               init: Callable[[nn.Module], object] | None = None) -> Iterator[str]:
    """Register a user's model under its ``custom:`` name while the block runs; yields the name."""
    name, build = builder_of(model, init)
    with registered_while(MODELS, name, ModelEntry(name, build, "your own model (in memory, for the duration of one call)")):
        yield name
