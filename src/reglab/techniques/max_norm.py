"""Max-norm constraint (Srebro & Shraibman 2005; used with dropout by Srivastava et al. 2014 and
Hinton et al. 2012): after each step, every Linear unit's incoming weight vector (a row of the weight
matrix) is rescaled to L2 norm <= c. Knobs: c=3.0.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from .base import Knobs, Technique


@torch.no_grad()
def max_norm_(weight: Tensor, c: float) -> None:
    """Rescale in place each row (last dimension) of ``weight`` to norm at most ``c``."""
    norms = weight.norm(dim=-1, keepdim=True)
    weight.mul_(torch.clamp(c / norms.clamp_min(1e-12), max=1.0))


class MaxNorm(Technique):
    name = "max_norm"
    source = "Srebro & Shraibman 2005; Srivastava et al. 2014"

    class Knobs(Knobs):
        c: float = Field(3.0, gt=0, description="maximum L2 norm of a unit's incoming weights")

    def after_step(self, run):  # noqa: ANN001, ANN201
        for _, weight in run.model.stacked_of(nn.Linear, "weight"):
            max_norm_(weight, self.knobs.c)
