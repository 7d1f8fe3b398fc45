"""Cosine annealing of the learning rate over the whole run, stepped every iteration (Loshchilov &
Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017, without restarts):
``lr(t) = eta_min + (lr0 - eta_min) * (1 + cos(pi * t / T)) / 2`` with T = epochs * steps per epoch.
Knobs: eta_min=0.
"""
from __future__ import annotations

import torch
from pydantic import Field

from .base import Knobs, Technique


class Cosine(Technique):
    name = "cosine"
    kind = "schedule"
    exclusive = True
    source = "Loshchilov & Hutter 2017 (SGDR)"

    class Knobs(Knobs):
        eta_min: float = Field(0.0, ge=0, description="final learning rate")

    def make_scheduler(self, optimizer, run):  # noqa: ANN001, ANN201
        total = run.config.epochs * run.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=self.knobs.eta_min)

    def after_step(self, run):  # noqa: ANN001, ANN201
        self.scheduler.step()

    def state_dict(self):  # noqa: ANN201
        return self.scheduler.state_dict()

    def load_state_dict(self, state):  # noqa: ANN001, ANN201
        self.scheduler.load_state_dict(state)
