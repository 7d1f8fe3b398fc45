"""Group normalization inserted between each Conv and its activation (Wu & He, "Group
Normalization", ECCV 2018); Linear layers get LayerNorm (one group). Knobs: groups=8 (reduced to a
divisor of the channel count when needed), eps=1e-5.
"""
from __future__ import annotations

import math

from pydantic import Field
from torch import nn

from ..errors import ReglabError
from ..models.surgery import insert_norm, out_features
from .base import Knobs, Technique


class GroupNorm(Technique):
    name = "groupnorm"
    kind = "normalization"
    exclusive = True
    source = "Wu & He 2018"

    class Knobs(Knobs):
        groups: int = Field(8, ge=1, description="number of channel groups")
        eps: float = Field(1e-5, gt=0, description="variance epsilon")

    def apply_model(self, model, data):  # noqa: ANN001, ANN201
        def make(layer: nn.Module) -> nn.Module:
            width = out_features(layer)
            if isinstance(layer, nn.Linear):
                return nn.LayerNorm(width, eps=self.knobs.eps)
            return nn.GroupNorm(math.gcd(self.knobs.groups, width), width, eps=self.knobs.eps)

        if insert_norm(model, make, drop_bias=False) == 0:
            raise ReglabError("technique groupnorm: the model has no Linear/Conv followed by an activation in an nn.Sequential")
        return model
