"""Multi-step decay: multiply the learning rate by ``gamma`` at each epoch in ``milestones``
(``torch.optim.lr_scheduler.MultiStepLR``; He et al. 2016 divide by 10 at fixed epochs).
Knobs: milestones=[30, 60], gamma=0.1.
"""
from __future__ import annotations

import torch
from pydantic import Field

from .base import Knobs, Schedule


class MultiStep(Schedule):
    name = "multistep"
    source = "He et al. 2016; torch.optim.lr_scheduler.MultiStepLR"

    class Knobs(Knobs):
        milestones: list[int] = Field([30, 60], description="epochs after which the LR is multiplied by gamma")
        gamma: float = Field(0.1, gt=0, le=1, description="decay factor")

    def make_scheduler(self, optimizer, run):  # noqa: ANN001, ANN201
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, self.knobs.milestones, self.knobs.gamma)

    def on_epoch_end(self, run):  # noqa: ANN001, ANN201
        self.scheduler.step()
