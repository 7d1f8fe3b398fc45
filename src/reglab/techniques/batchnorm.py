"""Batch normalization (Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by
Reducing Internal Covariate Shift", ICML 2015) inserted at each Linear/Conv followed by an activation.

Placement (knob ``placement``):

- ``"before"`` (default, the paper's): ``Linear -> BN -> activation``; the Linear/Conv loses its
  bias (BN's shift replaces it).
- ``"after"``: ``Linear -> activation -> BN``, i.e. BN after the activation and before the next
  layer, as many course labs place it; the Linear keeps its bias (the activation sits between it
  and BN's shift). Dropout goes after such a BN (``activation -> BN -> dropout``, whichever of the
  two techniques is applied first), the order Li et al. 2019 ("Understanding the Disharmony between
  Dropout and Batch Normalization by Variance Shift") recommend.

``skip_first`` leaves the model's first (layer, activation) pair without BN (e.g. the lab's MLP,
whose first hidden layer has none). The weights of the Linear/Conv layers are unchanged, so seeds
stay paired with the configuration without BN.

Knobs: momentum=0.1 (running-statistics update), eps=1e-5, placement="before", skip_first=False.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..errors import ReglabError
from ..models.surgery import batchnorm_for, insert_norm
from .base import Knobs, Technique


class BatchNorm(Technique):
    name = "batchnorm"
    kind = "normalization"
    exclusive = True
    source = "Ioffe & Szegedy 2015"

    class Knobs(Knobs):
        momentum: float = Field(0.1, gt=0, le=1, description="running-statistics momentum")
        eps: float = Field(1e-5, gt=0, description="variance epsilon")
        placement: Literal["before", "after"] = Field("before", description="BN before the activation, or after it (before the next layer)")
        skip_first: bool = Field(False, description="no BN at the model's first Linear/Conv + activation")

    def apply_model(self, model, data):  # noqa: ANN001, ANN201
        k = self.knobs
        make = lambda layer: batchnorm_for(layer, momentum=k.momentum, eps=k.eps)  # noqa: E731
        if insert_norm(model, make, placement=k.placement, skip=int(k.skip_first)) == 0:
            what = "second " if k.skip_first else ""
            raise ReglabError(f"technique batchnorm: the model has no {what}Linear/Conv followed by an activation in an nn.Sequential")
        return model
