"""ReduceLROnPlateau stepped on the run's validation metric after every epoch
(``torch.optim.lr_scheduler.ReduceLROnPlateau``; the "reduce on plateau" heuristic of e.g.
Krizhevsky et al. 2012 and He et al. 2016, dividing the LR when validation stops improving).

Knobs: factor=0.1, patience=10, threshold=1e-4 (relative), cooldown=0, min_lr=0.

Each seed has its own schedule: one torch ``ReduceLROnPlateau`` per seed, stepped on that seed's
validation metric, drives a scheduler-only optimizer whose learning rate becomes the seed's factor
``run.lr_scale[s]`` on the run's optimizer (:func:`reglab.engine.step.optimizer_step` scales each
seed's update by it). So stacked seeds train in one group and each follows its own curve.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from .base import Knobs, Schedule


class Plateau(Schedule):
    name = "plateau"
    source = "torch.optim.lr_scheduler.ReduceLROnPlateau"

    class Knobs(Knobs):
        factor: float = Field(0.1, gt=0, lt=1, description="multiply the LR by this on a plateau")
        patience: int = Field(10, ge=0, description="epochs without improvement before reducing")
        threshold: float = Field(1e-4, ge=0, description="relative improvement that counts")
        cooldown: int = Field(0, ge=0, description="epochs to wait after a reduction")
        min_lr: float = Field(0.0, ge=0, description="lower bound on the LR")

    def make_scheduler(self, optimizer, run):  # noqa: ANN001, ANN201
        k = self.knobs
        self.lr0 = float(optimizer.param_groups[0]["lr"])
        # one scheduler per seed, each on an optimizer of its own that holds only that seed's learning rate
        self.lrs = [torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=self.lr0) for _ in run.seeds]
        self.schedulers = [torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max" if run.maximize else "min", factor=k.factor, patience=k.patience,
            threshold=k.threshold, cooldown=k.cooldown, min_lr=k.min_lr) for opt in self.lrs]

    def on_epoch_end(self, run):  # noqa: ANN001, ANN201
        for s, scheduler in enumerate(self.schedulers):
            if not run.stopped[s] and run.history[s] and run.history[s][-1]["epoch"] == run.epoch:
                scheduler.step(run.record(s)[run.metric])
                run.lr_scale[s] = self.lrs[s].param_groups[0]["lr"] / self.lr0

    def state_dict(self) -> dict[str, Any]:
        return {"schedulers": [s.state_dict() for s in self.schedulers],
                "lrs": [opt.param_groups[0]["lr"] for opt in self.lrs]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for scheduler, opt, s_state, lr in zip(self.schedulers, self.lrs, state["schedulers"], state["lrs"]):
            scheduler.load_state_dict(s_state)
            opt.param_groups[0]["lr"] = lr
