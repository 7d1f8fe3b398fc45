"""Remove every BatchNorm layer from a model (replace it by identity), e.g. to compare a ResNet with
and without BN as Bjorck et al. ("Understanding Batch Normalization", NeurIPS 2018) do. No knobs.
"""
from __future__ import annotations

from ..models.surgery import remove_batchnorm
from .base import Technique


class NoBatchNorm(Technique):
    name = "no_batchnorm"
    kind = "normalization"
    exclusive = True
    source = "Bjorck et al. 2018 (the without-BN arm)"

    def apply_model(self, model, data):  # noqa: ANN001, ANN201
        remove_batchnorm(model)
        return model
