"""A small convnet for 1-D signals (e.g. MNIST-1D, input ``(L,)`` or ``(C, L)``) and images ``(C, H, W)``.

Stages of Conv -> (Norm) -> Activation -> (Dropout) -> MaxPool(2), then Flatten -> Linear. Flattening
(rather than global pooling) keeps position information, which MNIST-1D needs.
"""
from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from ..errors import ReglabError
from . import Activation, make_activation, register
from .seeded import SeedDropout, layer_key
from .mlp import Norm, Probability, norm_layer


@register("convnet", "small convnet for 1-D signals or images: conv stages with pooling, linear head")
def convnet(
    input_shape: tuple[int, ...],
    num_outputs: int,
    *,
    channels: list[Annotated[int, Field(ge=1)]] = [32, 64, 128],  # noqa: B006
    kernel_size: Annotated[int, Field(ge=1)] = 3,
    activation: Activation = "relu",
    norm: Norm = "none",
    dropout: Probability = 0.0,
) -> nn.Sequential:
    shape = (1, *input_shape) if len(input_shape) == 1 else tuple(input_shape)
    dims = len(shape) - 1
    if dims not in (1, 2):
        raise ReglabError(f"model convnet: input shape must be (L,), (C, L) or (C, H, W), got {input_shape}")
    conv, pool = (nn.Conv1d, nn.MaxPool1d) if dims == 1 else (nn.Conv2d, nn.MaxPool2d)
    layers: list[nn.Module] = [nn.Unflatten(1, shape)] if len(input_shape) == 1 else []
    c_in = shape[0]
    size = list(shape[1:])
    for c in channels:
        layers.append(conv(c_in, c, kernel_size, padding=kernel_size // 2, bias=norm != "batch"))
        layers += norm_layer(norm, c, dims=dims)
        layers.append(make_activation(activation))
        if dropout > 0:
            layers.append(SeedDropout(dropout, layer_key(f"dropout/{len(layers)}")))
        if min(size) >= 2:
            layers.append(pool(2))
            size = [s // 2 for s in size]
        c_in = c
    layers += [nn.Flatten(), nn.Linear(c_in * math.prod(size), num_outputs)]
    model = nn.Sequential(*layers)
    with torch.no_grad():  # fail early, with the shape, if the stages do not fit the input
        model.eval()(torch.zeros(2, *input_shape))
    return model
