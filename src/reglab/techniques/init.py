"""Weight initialization schemes, for comparing them (e.g. with and without batch normalization,
Bjorck et al. 2018, "Understanding Batch Normalization").

Every Linear and Conv layer of the freshly built model is re-drawn (its biases set to 0) by:

- ``"default"``: PyTorch's own initialization, as the model was built (only ``scale`` applies);
- ``"kaiming"``: He et al. 2015 ("Delving Deep into Rectifiers", ICCV), ``W ~ N(0, gain^2 / fan_in)``
  with ``gain = sqrt(2)`` for ReLU (``torch.nn.init.calculate_gain(nonlinearity)``, default relu);
- ``"xavier"``: Glorot & Bengio 2010 ("Understanding the difficulty of training deep feedforward
  neural networks", AISTATS), the normalized initialization ``W ~ U[-a, a]``,
  ``a = gain * sqrt(6 / (fan_in + fan_out))`` (default gain 1, ``nonlinearity="linear"``, as in the paper);

then every weight is multiplied by ``scale`` (``scale = 10`` is "a too-large scale": activations and
gradients then grow with depth without normalization). ``fan_in`` / ``fan_out`` of a convolution
count its kernel (``in_channels * k * k``). Draws come from torch's global generator right after the
model is built, which the engine seeds with the run seed before building each seed's model: each seed
has its own initialization, the same alone or stacked with other seeds.

Interactions: BatchNorm placed before the activation removes the bias of the layer before it (there
is none to set); layers a technique adds after this one (a later ``batchnorm``'s BN layers) are not
touched (BN starts at weight 1, bias 0).

Knobs: scheme="kaiming", nonlinearity=None (relu for kaiming, linear for xavier), scale=1.0.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import ReglabError
from ..models.surgery import WEIGHT_LAYERS
from .base import Knobs, Technique

if TYPE_CHECKING:
    from ..data import Data

Scheme = Literal["default", "kaiming", "xavier"]


@torch.no_grad()
def initialize(model: nn.Module, scheme: str = "kaiming", nonlinearity: str | None = None, scale: float = 1.0) -> int:
    """Re-draw every Linear/Conv weight of ``model`` by ``scheme`` (biases 0 unless ``"default"``), then
    multiply the weights by ``scale``; in place, from torch's global generator. ``nonlinearity``
    sets the gain (None: ``relu`` for kaiming, ``linear``, gain 1, for xavier). Returns the number of
    layers initialized."""
    gain = nn.init.calculate_gain(nonlinearity or ("relu" if scheme == "kaiming" else "linear"))
    count = 0
    for m in model.modules():
        if not isinstance(m, WEIGHT_LAYERS):
            continue
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
        if scheme == "kaiming":
            m.weight.normal_(0.0, gain / math.sqrt(fan_in))
        elif scheme == "xavier":
            bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
            m.weight.uniform_(-bound, bound)
        if scheme != "default" and m.bias is not None:
            m.bias.zero_()
        m.weight.mul_(scale)
        count += 1
    return count


class Init(Technique):
    name = "init"
    kind = "initialization"
    exclusive = True
    source = "He et al. 2015 (kaiming); Glorot & Bengio 2010 (xavier)"

    class Knobs(Knobs):
        scheme: Scheme = Field("kaiming", description="default (PyTorch's), kaiming (He normal, fan-in) or xavier (Glorot uniform)")
        nonlinearity: Literal["relu", "leaky_relu", "tanh", "sigmoid", "linear"] | None = Field(
            None, description="gain of torch.nn.init.calculate_gain (None: relu for kaiming, linear for xavier)")
        scale: float = Field(1.0, gt=0, description="factor on every weight after the scheme (large: a too-large init)")

    def apply_model(self, model: nn.Module, data: Data) -> nn.Module:
        k = self.knobs
        if initialize(model, k.scheme, k.nonlinearity, k.scale) == 0:
            raise ReglabError("technique init: the model has no Linear/Conv layer to initialize")
        return model
