"""Mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018): each training batch
is replaced by convex combinations ``lam * x_i + (1 - lam) * x_perm(i)`` with the same combination of
the one-hot targets; ``lam ~ Beta(alpha, alpha)``, one draw per batch (per seed) as in the paper.
Beta draws use the inverse CDF of a uniform from the seed's generator (reproducible on any device).

k-way mixup (``k > 2``): the combination of ``k`` examples that Zhang et al. 2018 describe in their
Section 2 ("convex combinations of three or more examples with weights sampled from a Dirichlet
distribution"): ``x~_i = sum_{j=1..k} w_j x_{pi_j(i)}`` and ``y~_i = sum_j w_j y_{pi_j(i)}`` with
``pi_1`` the identity, ``pi_2..pi_k`` independent random permutations of the batch and
``w ~ Dirichlet(alpha, ..., alpha)`` (k components), one draw per batch and seed. The Dirichlet draw
is ``w_j = g_j / sum_l g_l`` with ``g_j ~ Gamma(alpha, 1)``, each Gamma by the inverse CDF of a uniform
from the seed's generator. ``E[w_j] = 1/k``, ``Var[w_j] = (k - 1) / (k^2 (k alpha + 1))``. ``k = 2`` is
two-way mixup exactly as above (the same draws: Beta(alpha, alpha) is the first component of a
two-component Dirichlet).

Interactions: with label smoothing the mixed soft targets are smoothed again; cutmix also replaces
the targets, so use one of the two.

Knobs: alpha=0.2, k=2.
"""
from __future__ import annotations

import torch
from pydantic import Field
from scipy.special import betaincinv, gammaincinv
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


def dirichlet_sample(g: torch.Generator, alpha: float, k: int) -> Tensor:
    """One draw of the symmetric Dirichlet(alpha, ..., alpha) over ``k`` components from generator
    ``g`` (float64, sums to 1): normalized Gamma(alpha, 1) draws, each the inverse CDF of a uniform."""
    u = torch.rand(k, generator=g, dtype=torch.float64)
    gam = torch.from_numpy(gammaincinv(alpha, u.numpy()))
    if float(gam.sum()) <= 0:  # every Gamma draw underflowed (alpha tiny): all the weight on the largest uniform
        return torch.nn.functional.one_hot(u.argmax(), k).double()
    return gam / gam.sum()


def mix(x: Tensor, y: Tensor, lam: float, perm: Tensor) -> tuple[Tensor, Tensor]:
    """``lam * (x, y) + (1 - lam) * (x, y)[perm]`` for one seed's batch."""
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def mix_k(x: Tensor, y: Tensor, weights: Tensor, perms: list[Tensor]) -> tuple[Tensor, Tensor]:
    """``sum_j weights[j] * (x, y)[perms[j]]`` for one seed's batch (``perms[0]`` is usually the identity)."""
    xm = sum(float(w) * x[p] for w, p in zip(weights, perms))
    ym = sum(float(w) * y[p] for w, p in zip(weights, perms))
    return xm, ym


class Mixup(Technique):
    name = "mixup"
    kind = "augmentation"
    order = 30
    source = "Zhang et al. 2018 (k > 2: their Section 2, Dirichlet weights over k examples)"

    class Knobs(Knobs):
        alpha: float = Field(0.2, gt=0, description="Beta(alpha, alpha) / Dirichlet(alpha, ..., alpha) concentration")
        k: int = Field(2, ge=2, le=16, description="examples mixed into each one (2: classic mixup)")

    def transform_batch(self, run, x, y):  # noqa: ANN001, ANN201
        y = soft_targets(y, run.data.task, len(run.data.classes))
        xs, ys = [], []
        n, k = x.shape[1], self.knobs.k
        for s, g in enumerate(run.stream(self.name)):
            if k == 2:
                lam = beta_sample(g, self.knobs.alpha)
                perm = torch.randperm(n, generator=g).to(x.device)
                xm, ym = mix(x[s], y[s], lam, perm)
            else:
                weights = dirichlet_sample(g, self.knobs.alpha, k)
                perms = [torch.arange(n)] + [torch.randperm(n, generator=g) for _ in range(k - 1)]
                xm, ym = mix_k(x[s], y[s], weights, [p.to(x.device) for p in perms])
            xs.append(xm)
            ys.append(ym)
        return torch.stack(xs), torch.stack(ys)
