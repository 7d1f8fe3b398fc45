"""Random horizontal flip (Krizhevsky et al. 2012): each training image is mirrored left-right with
probability ``p`` (for 1-D signals: reversed). Knobs: p=0.5.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from .base import Knobs, Technique, per_seed


def flip(x: Tensor, mask: Tensor) -> Tensor:
    """Reverse the last dimension of the examples where ``mask`` (N,) is true."""
    return torch.where(mask.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)


class Flip(Technique):
    name = "flip"
    kind = "augmentation"
    order = 11
    source = "Krizhevsky et al. 2012"

    class Knobs(Knobs):
        p: float = Field(0.5, ge=0, le=1, description="probability of flipping an example")

    def transform_batch(self, run, x, y):  # noqa: ANN001, ANN201
        size, batch = x.shape[:2]
        mask = per_seed(run, self.name, lambda g: torch.rand(batch, generator=g) < self.knobs.p)
        return flip(x.flatten(0, 1), mask.reshape(-1)).view(x.shape), y
