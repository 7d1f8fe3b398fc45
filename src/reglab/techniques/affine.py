"""Random affine transforms of images: rotation, translation, scaling and shear, one draw per
example, applied to whole batches with ``F.affine_grid`` + ``F.grid_sample`` (bilinear, zero
padding); the batched equivalent of torchvision's ``RandomAffine``. Also serves as the "jitter"
augmentation of Hinton et al. (2012, 2015) via small translations.

Knobs: degrees=15, translate=0.1 (fraction of the size), scale=[0.9, 1.1], shear=0 (degrees).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from .augment import as_channels
from .base import Knobs, Technique, per_seed


def affine_matrices(angle: Tensor, tx: Tensor, ty: Tensor, scale: Tensor, shear: Tensor, aspect: float = 1.0) -> Tensor:
    """(N, 2, 3) sampling matrices for ``affine_grid`` (angles in degrees, shifts in [-1, 1] units)
    of images with height / width = ``aspect``. As torchvision's ``RandomAffine``, the forward map
    is shear_x, then scale, then rotation, then translation; ``affine_grid`` wants its inverse
    (output -> input coordinates), written in pixel units and converted to the normalized ones."""
    a, sh = torch.deg2rad(angle), torch.deg2rad(shear)
    cos, sin, tan = torch.cos(a), torch.sin(a), torch.tan(sh)
    m00 = (cos - sin * tan) / scale
    m01 = (sin + cos * tan) / scale * aspect
    m10 = -sin / scale / aspect
    m11 = cos / scale
    row0 = torch.stack([m00, m01, -(m00 * tx + m01 * ty)], -1)
    row1 = torch.stack([m10, m11, -(m10 * tx + m11 * ty)], -1)
    return torch.stack([row0, row1], 1)


def affine(x: Tensor, theta: Tensor) -> Tensor:
    """Resample images ``x`` (N, C, H, W) through matrices ``theta`` (N, 2, 3)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Affine(Technique):
    name = "affine"
    kind = "augmentation"
    order = 12
    source = "torchvision RandomAffine (batched); Hinton et al. 2012 jitter"

    class Knobs(Knobs):
        degrees: float = Field(15.0, ge=0, le=180, description="max rotation (degrees, both ways)")
        translate: float = Field(0.1, ge=0, lt=1, description="max shift as a fraction of the size")
        scale: tuple[float, float] = Field((0.9, 1.1), description="scale range")
        shear: float = Field(0.0, ge=0, lt=90, description="max horizontal shear (degrees)")

    def transform_batch(self, run, x, y):  # noqa: ANN001, ANN201
        k = self.knobs
        batch = x.shape[1]
        flat = as_channels(x, run.data.input_shape, self.name, min_dims=2)

        def draw(g: torch.Generator) -> Tensor:
            u = torch.rand(batch, 5, generator=g) * 2 - 1  # uniform in [-1, 1]
            lo, hi = k.scale
            scale = lo + (hi - lo) * (u[:, 3] + 1) / 2
            return torch.stack([u[:, 0] * k.degrees, u[:, 1] * 2 * k.translate, u[:, 2] * 2 * k.translate,
                                scale, u[:, 4] * k.shear], -1)

        p = per_seed(run, self.name, draw).reshape(-1, 5)
        theta = affine_matrices(p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4], aspect=flat.shape[-2] / flat.shape[-1])
        return affine(flat, theta).reshape(x.shape), y


