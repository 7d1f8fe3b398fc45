"""L1 penalty ``lambda * sum |theta|`` added to the training loss (Tibshirani 1996, the lasso; for
networks e.g. Goodfellow, Bengio & Courville, Deep Learning, section 7.1.2). Its gradient is
``lambda * sign(theta)``. Knobs: lam=1e-5, biases=True (also penalize biases and normalization parameters; with False only
weight matrices and convolution kernels are penalized).
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from .base import Knobs, Technique


def l1_penalty(stacked: dict[str, Tensor], lam: float, biases: bool = True) -> Tensor:
    """``lam * sum |theta|`` per seed, for parameters given as ``(S, ...)`` tensors (``biases=False``:
    only tensors with two or more dimensions per seed, i.e. weight matrices and kernels)."""
    total = sum(p.abs().flatten(1).sum(1) for name, p in stacked.items() if biases or p.dim() > 2)
    return lam * total if isinstance(total, Tensor) else torch.zeros(())


class L1(Technique):
    name = "l1"
    source = "Tibshirani 1996; Goodfellow et al. 2016, sec. 7.1.2"

    class Knobs(Knobs):
        lam: float = Field(1e-5, ge=0, description="penalty weight lambda")
        biases: bool = Field(True, description="also penalize biases and normalization parameters")

    def loss(self, run, loss, out, y, x):  # noqa: ANN001, ANN201
        return loss + l1_penalty(run.model.stacked(), self.knobs.lam, self.knobs.biases)
