"""A ResNet for 32x32 images (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

The CIFAR variant of section 4.2: a 3x3 stem, three stages of ``depth`` basic blocks with widths
``width``, ``2*width``, ``4*width`` (stride 2 at the start of stages 2 and 3), global average pooling
and a linear head. ``width=16, depth=3`` is ResNet-20. ``norm="none"`` builds it without any
normalization (for the batch-norm study of Bjorck et al. 2018).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from torch import Tensor, nn

from ..errors import ReglabError
from . import Activation, make_activation, register


def _norm(kind: str, c: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(c)
    if kind == "group":
        return nn.GroupNorm(min(8, c), c)
    if kind == "layer":
        return nn.GroupNorm(1, c)
    return nn.Identity()


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: str, activation: str) -> None:
        super().__init__()
        bias = norm == "none"
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=bias)
        self.norm1 = _norm(norm, c_out)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=bias)
        self.norm2 = _norm(norm, c_out)
        self.act2 = make_activation(activation)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=bias), _norm(norm, c_out))

    def forward(self, x: Tensor) -> Tensor:
        h = self.act1(self.norm1(self.conv1(x)))
        return self.act2(self.norm2(self.conv2(h)) + self.shortcut(x))


@register("resnet", "ResNet for 32x32 images (CIFAR variant; width=16, depth=3 is ResNet-20)")
def resnet(
    input_shape: tuple[int, ...],
    num_outputs: int,
    *,
    width: Annotated[int, Field(ge=1)] = 16,
    depth: Annotated[int, Field(ge=1)] = 3,
    norm: Literal["batch", "group", "layer", "none"] = "batch",
    activation: Activation = "relu",
) -> nn.Sequential:
    if len(input_shape) != 3:
        raise ReglabError(f"model resnet: needs image input (C, H, W), got {input_shape}")
    layers: list[nn.Module] = [
        nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=norm == "none"), _norm(norm, width), make_activation(activation)
    ]
    c = width
    for stage, c_out in enumerate((width, 2 * width, 4 * width)):
        for block in range(depth):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(c, c_out, stride, norm, activation))
            c = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_outputs)]
    return nn.Sequential(*layers)
