"""Layer normalization inserted between each Linear/Conv and its activation (Ba, Kiros & Hinton,
"Layer Normalization", arXiv:1607.06450, 2016). For convolutions it normalizes over (C, H, W) as
``GroupNorm(1, C)``. Knobs: eps=1e-5.
"""
from __future__ import annotations

from pydantic import Field
from torch import nn

from ..errors import ReglabError
from ..models.surgery import insert_norm, out_features
from .base import Knobs, Technique


class LayerNorm(Technique):
    name = "layernorm"
    kind = "normalization"
    exclusive = True
    source = "Ba, Kiros & Hinton 2016"

    class Knobs(Knobs):
        eps: float = Field(1e-5, gt=0, description="variance epsilon")

    def apply_model(self, model, data):  # noqa: ANN001, ANN201
        def make(layer: nn.Module) -> nn.Module:
            width = out_features(layer)
            return nn.LayerNorm(width, eps=self.knobs.eps) if isinstance(layer, nn.Linear) else nn.GroupNorm(1, width, eps=self.knobs.eps)

        if insert_norm(model, make, drop_bias=False) == 0:
            raise ReglabError("technique layernorm: the model has no Linear/Conv followed by an activation in an nn.Sequential")
        return model
