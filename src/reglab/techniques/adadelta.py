"""Adadelta (Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012);
``torch.optim.Adadelta``. Used by Rolnick et al. (2017) for the label-noise experiments.

Knobs: lr=1.0 (a multiplier of the adaptive step), rho=0.9, eps=1e-6, weight_decay=0 (coupled L2).
"""
from __future__ import annotations

import torch
from pydantic import Field

from .base import Knobs, Technique


class Adadelta(Technique):
    name = "adadelta"
    kind = "optimizer"
    exclusive = True
    source = "Zeiler 2012; torch.optim.Adadelta"

    class Knobs(Knobs):
        lr: float = Field(1.0, gt=0, description="multiplier of the adaptive step")
        rho: float = Field(0.9, ge=0, lt=1, description="decay of the running averages")
        eps: float = Field(1e-6, gt=0, description="numerical epsilon")
        weight_decay: float = Field(0.0, ge=0, description="coupled L2 penalty added to the gradient")

    def make_optimizer(self, params, run):  # noqa: ANN001, ANN201
        k = self.knobs
        return torch.optim.Adadelta(params, lr=k.lr, rho=k.rho, eps=k.eps, weight_decay=k.weight_decay)
