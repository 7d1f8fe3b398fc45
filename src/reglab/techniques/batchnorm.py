"""Batch normalization inserted between each Linear/Conv and its activation (Ioffe & Szegedy,
"Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift",
ICML 2015). The Linear/Conv loses its bias (BN's shift replaces it); its weights are unchanged, so
seeds stay paired with the configuration without BN.

Knobs: momentum=0.1 (running-statistics update), eps=1e-5.
"""
from __future__ import annotations

from pydantic import Field

from ..errors import ReglabError
from ..models.surgery import batchnorm_for, insert_norm
from .base import Knobs, Technique


class BatchNorm(Technique):
    name = "batchnorm"
    kind = "normalization"
    exclusive = True
    source = "Ioffe & Szegedy 2015"

    class Knobs(Knobs):
        momentum: float = Field(0.1, gt=0, le=1, description="running-statistics momentum")
        eps: float = Field(1e-5, gt=0, description="variance epsilon")

    def apply_model(self, model, data):  # noqa: ANN001, ANN201
        if insert_norm(model, lambda layer: batchnorm_for(layer, momentum=self.knobs.momentum, eps=self.knobs.eps)) == 0:
            raise ReglabError("technique batchnorm: the model has no Linear/Conv followed by an activation in an nn.Sequential")
        return model
