"""Module surgery used by techniques: insert normalization or dropout, remove batch norm.

All edits keep the existing weights (a Linear that gets a BatchNorm after it only loses its bias),
so a seed's initialization stays paired between a configuration with and without the edit.
Normalization is inserted between a Linear/Conv and the activation that follows it *inside an
``nn.Sequential``* (how reglab's ``mlp`` and ``convnet`` are built); dropout goes after every activation
module wherever it sits.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from . import ACTIVATIONS

ACTIVATION_TYPES = tuple(t for t in ACTIVATIONS.values() if t is not nn.Identity)
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def out_features(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def insert_norm(model: nn.Module, make: Callable[[nn.Module], nn.Module], drop_bias: bool = True,
                placement: str = "before", skip: int = 0) -> int:
    """Insert ``make(layer)`` for every Linear/Conv followed by an activation in any ``nn.Sequential``
    of ``model`` (in place); returns how many were inserted.

    ``placement="before"``: between the layer and its activation (the layer loses its bias when
    ``drop_bias``); ``"after"``: right after the activation, i.e. before the next layer (the layer
    keeps its bias: the activation sits between it and the norm's shift). ``skip``: leave the first
    ``skip`` (layer, activation) pairs of the model, in module order, without a norm."""
    if placement not in ("before", "after"):
        raise ValueError(f"placement must be 'before' or 'after', got {placement!r}")
    count = pairs = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        layers = list(seq)
        new: list[nn.Module] = []
        inserted, i = 0, 0
        while i < len(layers):
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            new.append(layer)
            if isinstance(layer, WEIGHT_LAYERS) and isinstance(nxt, ACTIVATION_TYPES):
                pairs += 1
                if pairs > skip:
                    if placement == "before":
                        if drop_bias and layer.bias is not None:
                            layer.register_parameter("bias", None)
                        new.append(make(layer))
                    else:  # the activation, then the norm
                        new += [nxt, make(layer)]
                        i += 1
                    inserted += 1
            i += 1
        if inserted:
            count += inserted
            _refill(seq, new)
    return count


def wrap_activations(model: nn.Module, make: Callable[[], nn.Module]) -> int:
    """Put ``make()`` right after every activation module (in place): inside an ``nn.Sequential`` the
    new module is inserted after the activation (so normalization can still find Linear -> activation
    later), or after a BatchNorm that directly follows the activation (BatchNorm placed after the
    activation, then dropout, whichever is inserted first); elsewhere the activation ``a`` is
    replaced by ``Sequential(a, make())``."""
    count = 0
    for parent in list(model.modules()):
        if isinstance(parent, nn.Sequential):
            new: list[nn.Module] = []
            layers = list(parent)
            for i, layer in enumerate(layers):
                new.append(layer)
                after = isinstance(layer, ACTIVATION_TYPES) and not (
                    i + 1 < len(layers) and isinstance(layers[i + 1], nn.modules.batchnorm._BatchNorm))
                after |= (isinstance(layer, nn.modules.batchnorm._BatchNorm) and i > 0
                          and isinstance(layers[i - 1], ACTIVATION_TYPES))
                if after:
                    new.append(make())
            if len(new) > len(parent):
                count += len(new) - len(parent)
                _refill(parent, new)
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, ACTIVATION_TYPES):
                setattr(parent, name, nn.Sequential(child, make()))
                count += 1
    return count


def remove_batchnorm(model: nn.Module) -> int:
    """Replace every BatchNorm layer by ``nn.Identity`` (in place)."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, nn.Identity())
                count += 1
    return count


def batchnorm_for(layer: nn.Module, **kwargs: float) -> nn.Module:
    width = out_features(layer)
    if isinstance(layer, nn.Conv2d):
        return nn.BatchNorm2d(width, **kwargs)
    if isinstance(layer, nn.Conv3d):
        return nn.BatchNorm3d(width, **kwargs)
    return nn.BatchNorm1d(width, **kwargs)


def _refill(seq: nn.Sequential, layers: list[nn.Module]) -> None:
    for key in list(seq._modules):
        del seq._modules[key]
    for i, layer in enumerate(layers):
        seq.add_module(str(i), layer)
