"""Multi-layer perceptron: Flatten -> [Linear -> (Norm) -> Activation -> (Dropout)] * L -> Linear.

Dropout is :class:`reglab.models.seeded.SeedDropout`: masks per seed, the same alone or stacked.

With ``norm="batch"`` each hidden Linear has no bias (BatchNorm's shift replaces it), following
Ioffe & Szegedy (2015).
"""
from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field
from torch import nn

from . import Activation, make_activation, register
from .seeded import SeedDropout, layer_key

Norm = Literal["none", "batch", "layer"]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]


def norm_layer(kind: Norm, width: int, dims: int = 1) -> list[nn.Module]:
    """[] or [BatchNorm/LayerNorm] for ``width`` features (``dims``: 1 for vectors, 2 for images)."""
    if kind == "none":
        return []
    if kind == "batch":
        return [nn.BatchNorm1d(width) if dims == 1 else nn.BatchNorm2d(width)]
    if dims == 1:
        return [nn.LayerNorm(width)]
    return [nn.GroupNorm(1, width)]  # layer norm over (C, H, W)


@register("mlp", "MLP: hidden widths, activation, optional batch/layer norm and dropout")
def mlp(
    input_shape: tuple[int, ...],
    num_outputs: int,
    *,
    hidden: list[Annotated[int, Field(ge=1)]] = [256, 256],  # noqa: B006 (pydantic copies it)
    activation: Activation = "relu",
    norm: Norm = "none",
    dropout: Probability = 0.0,
) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers.append(nn.Linear(width, h, bias=norm != "batch"))
        layers += norm_layer(norm, h)
        layers.append(make_activation(activation))
        if dropout > 0:
            layers.append(SeedDropout(dropout, layer_key(f"dropout/{len(layers)}")))
        width = h
    layers.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*layers)
