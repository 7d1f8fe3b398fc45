"""One-cycle learning-rate policy (Smith & Topin, "Super-Convergence", 2019;
``torch.optim.lr_scheduler.OneCycleLR``), stepped every iteration over epochs * steps per epoch:
the LR rises from ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start`` of training
(cosine), then anneals to ``max_lr / (div_factor * final_div_factor)``. Momentum is cycled inversely
when the optimizer has momentum or betas.

Knobs: max_lr=None (the optimizer's lr), pct_start=0.3, div_factor=25, final_div_factor=1e4.
"""
from __future__ import annotations

import torch
from pydantic import Field

from .base import Knobs, Schedule


def has_momentum(optimizer: torch.optim.Optimizer) -> bool:
    """True when the optimizer has a momentum (SGD with momentum > 0) or betas (Adam) to cycle."""
    defaults = optimizer.defaults
    return "betas" in defaults or defaults.get("momentum", 0) > 0


class OneCycle(Schedule):
    name = "onecycle"
    source = "Smith & Topin 2019; torch.optim.lr_scheduler.OneCycleLR"

    class Knobs(Knobs):
        max_lr: float | None = Field(None, gt=0, description="peak LR (default: the optimizer's lr)")
        pct_start: float = Field(0.3, gt=0, lt=1, description="fraction of steps spent increasing the LR")
        div_factor: float = Field(25.0, gt=0, description="initial LR = max_lr / div_factor")
        final_div_factor: float = Field(1e4, gt=0, description="final LR = initial LR / final_div_factor")

    def make_scheduler(self, optimizer, run):  # noqa: ANN001, ANN201
        k = self.knobs
        self.total = run.total_batches
        max_lr = k.max_lr if k.max_lr is not None else optimizer.param_groups[0]["lr"]
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=self.total, pct_start=k.pct_start,
            div_factor=k.div_factor, final_div_factor=k.final_div_factor,
            cycle_momentum=has_momentum(optimizer),
        )

    def after_step(self, run):  # noqa: ANN001, ANN201
        if self.scheduler.last_epoch < self.total:
            self.scheduler.step()
