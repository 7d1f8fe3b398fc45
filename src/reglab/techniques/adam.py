"""Adam (Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015); ``torch.optim.Adam``.

``weight_decay`` here is *coupled* L2 (added to the gradient before the adaptive scaling), which
Loshchilov & Hutter (2019) show is not equivalent to weight decay; use ``adamw`` for decoupled decay.
Knobs: lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.
"""
from __future__ import annotations

import torch
from pydantic import Field

from .base import Knobs, Technique, fused


class Adam(Technique):
    name = "adam"
    kind = "optimizer"
    exclusive = True
    source = "Kingma & Ba 2015; torch.optim.Adam"

    class Knobs(Knobs):
        lr: float = Field(1e-3, gt=0, description="learning rate")
        beta1: float = Field(0.9, ge=0, lt=1, description="first-moment decay")
        beta2: float = Field(0.999, ge=0, lt=1, description="second-moment decay")
        eps: float = Field(1e-8, gt=0, description="denominator epsilon")
        weight_decay: float = Field(0.0, ge=0, description="coupled L2 penalty added to the gradient")

    def make_optimizer(self, params, run):  # noqa: ANN001, ANN201
        k = self.knobs
        return torch.optim.Adam(params, lr=k.lr, betas=(k.beta1, k.beta2), eps=k.eps, weight_decay=k.weight_decay,
                                fused=fused(params) or None)
