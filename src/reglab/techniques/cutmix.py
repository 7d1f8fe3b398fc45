"""CutMix (Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable
Features", ICCV 2019): a random box of each training image is replaced by the same box of another
image of the batch; targets are mixed in proportion to the pasted area. ``lam ~ Beta(alpha, alpha)``
sets the box size (area fraction 1 - lam), its centre is uniform, the box is clipped to the image and
the target weight recomputed from the clipped area. One box per batch (per seed), as in the paper.

Knobs: alpha=1.0.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field

from ..errors import ReglabError
from .base import Knobs, Technique
from .mixup import beta_sample, soft_targets


def cut_box(lam: float, h: int, w: int, cy: float, cx: float) -> tuple[int, int, int, int]:
    """Clipped box (y0, y1, x0, x1) of area about (1 - lam) * h * w centred at (cy, cx) in [0, 1)."""
    r = math.sqrt(1.0 - lam)
    ch, cw = int(h * r), int(w * r)
    y, x = int(cy * h), int(cx * w)
    return max(y - ch // 2, 0), min(y + ch // 2, h), max(x - cw // 2, 0), min(x + cw // 2, w)


class CutMix(Technique):
    name = "cutmix"
    kind = "augmentation"
    order = 31
    source = "Yun et al. 2019"

    class Knobs(Knobs):
        alpha: float = Field(1.0, gt=0, description="Beta(alpha, alpha) concentration")

    def transform_batch(self, run, x, y):  # noqa: ANN001, ANN201
        if len(run.data.input_shape) != 3:
            raise ReglabError(f"technique cutmix: needs images (C, H, W), got {run.data.input_shape}")
        h, w = run.data.input_shape[1:]
        y = soft_targets(y, run.data.task, len(run.data.classes))
        x = x.clone()
        y = y.clone()
        for s, g in enumerate(run.stream(self.name)):
            lam = beta_sample(g, self.knobs.alpha)
            cy, cx = torch.rand(2, generator=g).tolist()
            perm = torch.randperm(x.shape[1], generator=g).to(x.device)
            y0, y1, x0, x1 = cut_box(lam, h, w, cy, cx)
            x[s, :, :, y0:y1, x0:x1] = x[s, perm, :, y0:y1, x0:x1]
            kept = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
            y[s] = kept * y[s] + (1 - kept) * y[s, perm]
        return x, y
