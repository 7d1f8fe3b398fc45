"""Learning-rate warmup for the first ``epochs`` epochs (Goyal et al., "Accurate, Large Minibatch
SGD: Training ImageNet in 1 Hour", 2017, section 2.2): ``constant`` multiplies the LR by ``factor``;
``linear`` ramps the multiplier from ``factor`` to 1 over the warmup steps,
``w(t) = factor + (1 - factor) * t / (epochs * steps_per_epoch)`` at optimizer step t.

It composes with any schedule: the multiplier is applied just for the optimizer step and removed
after it, so the schedule's own state is untouched. Knobs: epochs=5, mode="linear", factor=0.1.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Knobs, Technique


def warmup_factor(step: int, warmup_steps: int, mode: str, factor: float) -> float:
    """The LR multiplier at optimizer step ``step`` (0-based)."""
    if step >= warmup_steps:
        return 1.0
    if mode == "constant":
        return factor
    return factor + (1.0 - factor) * step / warmup_steps


class Warmup(Technique):
    name = "warmup"
    kind = "schedule-modifier"
    source = "Goyal et al. 2017"
    order = 5  # restore the LR before any per-step schedule steps

    class Knobs(Knobs):
        epochs: int = Field(5, ge=1, description="warmup length in epochs")
        mode: Literal["linear", "constant"] = Field("linear", description="ramp or constant low factor")
        factor: float = Field(0.1, gt=0, le=1, description="starting (linear) or constant multiplier")

    def before_step(self, run):  # noqa: ANN001, ANN201
        w = warmup_factor(run.step, self.knobs.epochs * run.steps_per_epoch, self.knobs.mode, self.knobs.factor)
        self._saved = [g["lr"] for g in run.optimizer.param_groups]
        for g in run.optimizer.param_groups:
            g["lr"] *= w

    def after_step(self, run):  # noqa: ANN001, ANN201
        for g, lr in zip(run.optimizer.param_groups, getattr(self, "_saved", [])):
            g["lr"] = lr
        self._saved = []
