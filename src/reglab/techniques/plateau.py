"""ReduceLROnPlateau stepped on the run's validation metric after every epoch
(``torch.optim.lr_scheduler.ReduceLROnPlateau``; the "reduce on plateau" heuristic of e.g.
Krizhevsky et al. 2012 and He et al. 2016, dividing the LR when validation stops improving).

Knobs: factor=0.1, patience=10, threshold=1e-4 (relative), cooldown=0, min_lr=0.
Trains one seed at a time: torch optimizers hold one learning rate per parameter group, and stacked
seeds would each need their own.
"""
from __future__ import annotations

import torch
from pydantic import Field

from .base import Knobs, Schedule


class Plateau(Schedule):
    name = "plateau"
    source = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    stack_blocker = "the learning rate depends on each seed's own validation curve"

    class Knobs(Knobs):
        factor: float = Field(0.1, gt=0, lt=1, description="multiply the LR by this on a plateau")
        patience: int = Field(10, ge=0, description="epochs without improvement before reducing")
        threshold: float = Field(1e-4, ge=0, description="relative improvement that counts")
        cooldown: int = Field(0, ge=0, description="epochs to wait after a reduction")
        min_lr: float = Field(0.0, ge=0, description="lower bound on the LR")

    def make_scheduler(self, optimizer, run):  # noqa: ANN001, ANN201
        k = self.knobs
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max" if run.maximize else "min", factor=k.factor, patience=k.patience,
            threshold=k.threshold, cooldown=k.cooldown, min_lr=k.min_lr,
        )

    def on_epoch_end(self, run):  # noqa: ANN001, ANN201
        self.scheduler.step(run.record(0)[run.metric])
