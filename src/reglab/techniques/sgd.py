"""Stochastic gradient descent with momentum (Polyak 1964) and Nesterov momentum (Sutskever et al.,
"On the importance of initialization and momentum in deep learning", ICML 2013); ``torch.optim.SGD``.

``weight_decay`` is *coupled* L2: ``weight_decay * theta`` is added to the gradient, so it passes through
the momentum buffer. Knobs: lr=0.01, momentum=0.9, nesterov=False, weight_decay=0.
"""
from __future__ import annotations

import torch
from pydantic import Field, model_validator

from .base import Knobs, Technique, fused


class SGD(Technique):
    name = "sgd"
    kind = "optimizer"
    exclusive = True
    source = "Polyak 1964; Sutskever et al. 2013 (Nesterov); torch.optim.SGD"

    class Knobs(Knobs):
        lr: float = Field(0.01, gt=0, description="learning rate")
        momentum: float = Field(0.9, ge=0, lt=1, description="momentum factor")
        nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0)")
        weight_decay: float = Field(0.0, ge=0, description="coupled L2 penalty added to the gradient")

        @model_validator(mode="after")
        def _nesterov_needs_momentum(self):  # noqa: ANN202
            if self.nesterov and self.momentum == 0:
                raise ValueError("nesterov needs momentum > 0")
            return self

    def make_optimizer(self, params, run):  # noqa: ANN001, ANN201
        k = self.knobs
        return torch.optim.SGD(params, lr=k.lr, momentum=k.momentum, nesterov=k.nesterov, weight_decay=k.weight_decay,
                               fused=fused(params) or None)
