"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay
Regularization", ICLR 2019); ``torch.optim.AdamW``.

The decay shrinks the weights directly, ``theta <- theta - lr * weight_decay * theta``, outside the
adaptive gradient scaling. Knobs: lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01.
"""
from __future__ import annotations

import torch
from pydantic import Field

from .base import Knobs, Technique, fused


class AdamW(Technique):
    name = "adamw"
    kind = "optimizer"
    exclusive = True
    source = "Loshchilov & Hutter 2019; torch.optim.AdamW"

    class Knobs(Knobs):
        lr: float = Field(1e-3, gt=0, description="learning rate")
        beta1: float = Field(0.9, ge=0, lt=1, description="first-moment decay")
        beta2: float = Field(0.999, ge=0, lt=1, description="second-moment decay")
        eps: float = Field(1e-8, gt=0, description="denominator epsilon")
        weight_decay: float = Field(0.01, ge=0, description="decoupled decay rate (times lr per step)")

    def make_optimizer(self, params, run):  # noqa: ANN001, ANN201
        k = self.knobs
        return torch.optim.AdamW(params, lr=k.lr, betas=(k.beta1, k.beta2), eps=k.eps, weight_decay=k.weight_decay,
                                 fused=fused(params) or None)
