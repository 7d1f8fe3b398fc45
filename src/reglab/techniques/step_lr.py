"""Step decay: multiply the learning rate by ``gamma`` every ``step_size`` epochs
(``torch.optim.lr_scheduler.StepLR``). Knobs: step_size=30, gamma=0.1.
"""
from __future__ import annotations

import torch
from pydantic import Field

from .base import Knobs, Schedule


class StepLR(Schedule):
    name = "step_lr"
    source = "torch.optim.lr_scheduler.StepLR"

    class Knobs(Knobs):
        step_size: int = Field(30, ge=1, description="epochs between decays")
        gamma: float = Field(0.1, gt=0, le=1, description="decay factor")

    def make_scheduler(self, optimizer, run):  # noqa: ANN001, ANN201
        self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, self.knobs.step_size, self.knobs.gamma)

    def on_epoch_end(self, run):  # noqa: ANN001, ANN201
        self.scheduler.step()
