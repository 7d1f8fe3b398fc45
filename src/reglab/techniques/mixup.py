"""Mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018): each training batch
is replaced by convex combinations ``lam * x_i + (1 - lam) * x_perm(i)`` with the same combination of
the one-hot targets; ``lam ~ Beta(alpha, alpha)``, one draw per batch (per seed) as in the paper.
Beta draws use the inverse CDF of a uniform from the seed's generator (reproducible on any device).

Knobs: alpha=0.2.
"""
from __future__ import annotations

import torch
from pydantic import Field
from scipy.special import betaincinv
from torch import Tensor

from .base import Knobs, Technique


def soft_targets(y: Tensor, task: str, classes: int) -> Tensor:
    """Targets as float rows that can be mixed (one-hot for class ids)."""
    if task == "classification" and not y.is_floating_point():
        return torch.nn.functional.one_hot(y, classes).float()
    return y.float()


def beta_sample(g: torch.Generator, alpha: float) -> float:
    """One draw of Beta(alpha, alpha) from generator ``g``."""
    u = torch.rand((), generator=g, dtype=torch.float64).item()
    return float(betaincinv(alpha, alpha, u))


def mix(x: Tensor, y: Tensor, lam: float, perm: Tensor) -> tuple[Tensor, Tensor]:
    """``lam * (x, y) + (1 - lam) * (x, y)[perm]`` for one seed's batch."""
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


class Mixup(Technique):
    name = "mixup"
    kind = "augmentation"
    order = 30
    source = "Zhang et al. 2018"

    class Knobs(Knobs):
        alpha: float = Field(0.2, gt=0, description="Beta(alpha, alpha) concentration")

    def transform_batch(self, run, x, y):  # noqa: ANN001, ANN201
        y = soft_targets(y, run.data.task, len(run.data.classes))
        xs, ys = [], []
        for s, g in enumerate(run.stream(self.name)):
            lam = beta_sample(g, self.knobs.alpha)
            perm = torch.randperm(x.shape[1], generator=g).to(x.device)
            xm, ym = mix(x[s], y[s], lam, perm)
            xs.append(xm)
            ys.append(ym)
        return torch.stack(xs), torch.stack(ys)
