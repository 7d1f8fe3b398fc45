"""Random crop with padding (Krizhevsky et al. 2012; the standard CIFAR augmentation of He et al.
2016): pad each image (or 1-D signal: a random shift) by ``padding`` on every side and cut a window
of the original size at a uniformly random offset. Whole batches at once via ``gather``.

Knobs: padding=4, mode="constant" (zeros; or "reflect", "replicate").
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from .augment import as_channels
from .base import Knobs, Technique, per_seed


def random_crop(x: Tensor, offsets: Tensor, padding: int, mode: str = "constant") -> Tensor:
    """Crop ``x`` (N, C, L) or (N, C, H, W) padded by ``padding`` at ``offsets`` (N, dims) in [0, 2p]."""
    n, c, *spatial = x.shape
    xp = F.pad(x, (padding,) * 2 * len(spatial), mode=mode)
    if len(spatial) == 1:
        idx = offsets[:, 0, None] + torch.arange(spatial[0], device=x.device)
        return xp.gather(2, idx[:, None, :].expand(n, c, spatial[0]))
    h, w = spatial
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)
    xp = xp.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)
    return xp.gather(3, cols[:, None, None, :].expand(n, c, h, w))


class Crop(Technique):
    name = "crop"
    kind = "augmentation"
    order = 10
    source = "Krizhevsky et al. 2012; He et al. 2016"

    class Knobs(Knobs):
        padding: int = Field(4, ge=1, description="pixels (samples) of padding on each side")
        mode: Literal["constant", "reflect", "replicate"] = Field("constant", description="padding mode")

    def transform_batch(self, run, x, y):  # noqa: ANN001, ANN201
        size, batch = x.shape[:2]
        flat = as_channels(x, run.data.input_shape, self.name)
        dims = flat.dim() - 2
        span = 2 * self.knobs.padding + 1
        offsets = per_seed(run, self.name, lambda g: torch.randint(span, (batch, dims), generator=g)).reshape(-1, dims)
        return random_crop(flat, offsets, self.knobs.padding, self.knobs.mode).reshape(x.shape), y
