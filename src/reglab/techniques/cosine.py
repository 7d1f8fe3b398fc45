"""Cosine annealing of the learning rate over the whole run, stepped every iteration (Loshchilov &
Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017, without restarts):
``lr(t) = eta_min + (lr0 - eta_min) * (1 + cos(pi * t / T)) / 2`` with T the run's training batches
(epochs x batches per epoch, or the ``steps`` budget).
Knobs: eta_min=0.
"""
from __future__ import annotations

import torch
from pydantic import Field

from .base import Knobs, Schedule


class Cosine(Schedule):
    name = "cosine"
    source = "Loshchilov & Hutter 2017 (SGDR)"

    class Knobs(Knobs):
        eta_min: float = Field(0.0, ge=0, description="final learning rate")

    def make_scheduler(self, optimizer, run):  # noqa: ANN001, ANN201
        total = run.total_batches
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=self.knobs.eta_min)

    def after_step(self, run):  # noqa: ANN001, ANN201
        self.scheduler.step()
