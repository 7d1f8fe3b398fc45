"""Random color jitter of RGB images in [0, 1], per example, on whole batches (the batched equivalent
of torchvision's ``ColorJitter``, in a fixed order: brightness, contrast, saturation, hue).

- brightness: ``x * f``, f ~ U[1 - b, 1 + b]
- contrast: ``(x - m) * f + m``, m the example's mean gray level
- saturation: ``g + (x - g) * f``, g the per-pixel gray (ITU-R 601 luma)
- hue: rotation of the chroma plane in YIQ space by ``2 pi h``, h ~ U[-hue, hue] (a linear
  approximation of torchvision's HSV hue shift)

Knobs: brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor

from ..errors import ReglabError
from .base import Knobs, Technique, per_seed

_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def color_jitter(x: Tensor, b: Tensor, c: Tensor, s: Tensor, h: Tensor) -> Tensor:
    """Jitter (N, 3, H, W) images by per-example factors ``b, c, s`` and hue angles ``h`` (turns)."""
    v = lambda t: t.view(-1, 1, 1, 1)  # noqa: E731
    x = x * v(b)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    mean = gray.mean((2, 3), keepdim=True)
    x = (x - mean) * v(c) + mean
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = gray + (x - gray) * v(s)
    if bool((h != 0).any()):
        m = _RGB2YIQ.to(x)
        yiq = torch.einsum("ij,njhw->nihw", m, x)
        cos, sin = torch.cos(2 * math.pi * h).view(-1, 1, 1), torch.sin(2 * math.pi * h).view(-1, 1, 1)
        i, q = yiq[:, 1], yiq[:, 2]
        yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], 1)
        x = torch.einsum("ij,njhw->nihw", torch.linalg.inv(m), yiq)
    return x.clamp(0, 1)


class ColorJitter(Technique):
    name = "color_jitter"
    kind = "augmentation"
    order = 13
    source = "torchvision ColorJitter (batched); Krizhevsky et al. 2012"

    class Knobs(Knobs):
        brightness: float = Field(0.2, ge=0, lt=1, description="max relative brightness change")
        contrast: float = Field(0.2, ge=0, lt=1, description="max relative contrast change")
        saturation: float = Field(0.2, ge=0, lt=1, description="max relative saturation change")
        hue: float = Field(0.0, ge=0, le=0.5, description="max hue rotation (fraction of a turn)")

    def transform_batch(self, run, x, y):  # noqa: ANN001, ANN201
        if len(run.data.input_shape) != 3 or run.data.input_shape[0] != 3:
            raise ReglabError(f"technique color_jitter: needs RGB images (3, H, W), got {run.data.input_shape}")
        k = self.knobs
        batch = x.shape[1]

        def draw(g: torch.Generator) -> Tensor:
            return torch.rand(batch, 4, generator=g) * 2 - 1

        u = per_seed(run, self.name, draw).reshape(-1, 4)
        out = color_jitter(x.flatten(0, 1), 1 + u[:, 0] * k.brightness, 1 + u[:, 1] * k.contrast,
                           1 + u[:, 2] * k.saturation, u[:, 3] * k.hue)
        return out.view(x.shape), y
