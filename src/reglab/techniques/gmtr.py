"""Gaussian multi-target regularization (GMTR): K output heads fitted to K noisy copies of each target.

For regression targets published with a per-example standard error ``se_i`` (replicate means,
survey estimates, lab measurements), the model's final ``Linear(d, 1)`` becomes ``Linear(d, K)``
(K heads, e.g. 32; the extra cost is K small dot products, so 1024 heads cost almost nothing). At
every training step each head k gets its own target ``t_ik ~ N(y_i, se_i^2)``, drawn afresh; the
loss is the mean squared error over examples and heads,

    L = 1/(B K) sum_i sum_k (f_k(x_i) - t_ik)^2,

and the prediction is the mean of the heads. (In expectation over the draws
``L = MSE(heads, y) + mean se^2``: the noise does not move the optimum of each head, it acts as
per-example label noise whose size follows the measurement's own uncertainty.) The claim under test:
lower validation RMSE and a smaller spread between seeds than the single-head baseline. This is a
reglab technique, not a published method; no published reference is claimed for it.

Pieces: :class:`GaussianHeads` (the K-head layer: ``(B, K)`` in training, the mean ``(B, 1)`` in
eval), :func:`add_heads` (the model transform), :func:`gmtr_targets` / :func:`gmtr_loss` (the
functional form) and the technique ``gmtr`` (knobs: ``heads`` 1..4096, default 32; ``se_scale``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import Field
from torch import Tensor, nn

from ..errors import ReglabError
from .base import Knobs, Technique

if TYPE_CHECKING:
    from ..data import Data
    from ..engine.run import Run

__all__ = ["GaussianHeads", "add_heads", "gmtr_targets", "gmtr_loss", "GMTR"]


class GaussianHeads(nn.Module):
    """K linear heads for ``out_features`` outputs each (one ``Linear(in, K * out)``, head-major).

    Training mode: ``(B, K)`` for one output, ``(B, K, D)`` for D outputs. Eval mode: the mean over
    heads, ``(B, D)`` -- the same shape as the ``Linear(in_features, D)`` it replaces.
    """

    def __init__(self, in_features: int, out_features: int = 1, heads: int = 32, bias: bool = True) -> None:
        super().__init__()
        self.heads, self.out_features = heads, out_features
        self.linear = nn.Linear(in_features, heads * out_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.linear(x).unflatten(-1, (self.heads, self.out_features))  # (..., K, D)
        if not self.training:
            return out.mean(-2)
        return out.squeeze(-1) if self.out_features == 1 else out


def add_heads(model: nn.Module, heads: int, out_features: int | None = None) -> nn.Module:
    """Replace the model's last ``nn.Linear`` (its output layer) by :class:`GaussianHeads`, in place.

    Head 0 starts from the replaced layer's weights, heads 1..K-1 from a fresh default init; every
    other module and parameter is kept as it is. ``out_features``, when given, must match the
    replaced layer's (a guard against models whose last Linear is not the output layer).
    """
    name = next((n for n, m in reversed(list(model.named_modules())) if isinstance(m, nn.Linear)), None)
    if name is None:
        raise ReglabError("technique gmtr: the model has no Linear output layer to replace with heads")
    old: nn.Linear = model.get_submodule(name)
    if out_features is not None and old.out_features != out_features:
        raise ReglabError(
            f"technique gmtr: the model's last Linear has {old.out_features} outputs, expected {out_features}"
        )
    new = GaussianHeads(old.in_features, old.out_features, heads, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():  # head 0 keeps the replaced layer's weights: K = 1 is the plain model
        new.linear.weight[: old.out_features].copy_(old.weight)
        if old.bias is not None:
            new.linear.bias[: old.out_features].copy_(old.bias)
    if not name:
        return new
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)
    return model


def _randn(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | list[torch.Generator] | None) -> Tensor:
    """Standard normal draws of ``shape``; with a list of generators, row s of dim 0 uses generator s."""
    if generator is None or isinstance(generator, torch.Generator):
        dev = like.device if generator is None else generator.device
        return torch.randn(shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a leading dimension of {shape[0]}")
    return torch.stack([_randn(shape[1:], like, g) for g in generator])


def gmtr_targets(
    y: Tensor, se: Tensor, heads: int, generator: torch.Generator | list[torch.Generator] | None = None
) -> Tensor:
    """K noisy copies of each target, heads last: ``y (...) -> (..., K)``, ``t_k = y + se * z_k``.

    ``se`` broadcasts against ``y``; z ~ N(0, 1) from ``generator``: one generator, a list with one
    generator per row of the leading (seed) dimension, or None (the global generator).
    """
    z = _randn((*y.shape, heads), y, generator)
    return y.unsqueeze(-1) + se.expand_as(y).unsqueeze(-1) * z


def gmtr_loss(
    pred_heads: Tensor, y: Tensor, se: Tensor, generator: torch.Generator | list[torch.Generator] | None = None
) -> Tensor:
    """GMTR loss: the mean over examples and heads of ``(pred_k - t_k)^2``, ``t_k ~ N(y, se^2)``.

    One output: ``pred_heads (..., B, K)``, ``y`` and ``se`` ``(..., B)`` or ``(..., B, 1)``.
    D outputs: ``pred_heads (..., B, K, D)``, ``y`` and ``se`` ``(..., B, D)``.
    Returns ``(...)``: a scalar for one model, ``(S,)`` for S stacked seeds.
    """
    y, se = y.to(pred_heads.dtype), se.to(pred_heads.dtype).expand_as(y)
    heads = pred_heads.shape[-1]
    if pred_heads.shape[:-1] != y.shape and y.shape[-1] == 1 and pred_heads.shape[:-1] == y.shape[:-1]:
        y, se = y.squeeze(-1), se.squeeze(-1)  # (..., B, 1) targets of a one-output model
    if pred_heads.shape[:-1] == y.shape:  # one output
        t = gmtr_targets(y, se, heads, generator)
        return (pred_heads - t).pow(2).flatten(-2).mean(-1)
    heads = pred_heads.shape[-2]
    if pred_heads.shape[:-2] == y.shape[:-1] and pred_heads.shape[-1] == y.shape[-1]:  # D outputs
        t = gmtr_targets(y, se, heads, generator).movedim(-1, -2)  # (..., B, K, D)
        return (pred_heads - t).pow(2).flatten(-3).mean(-1)
    raise ValueError(f"gmtr_loss: heads of shape {tuple(pred_heads.shape)} do not fit targets {tuple(y.shape)}")


class GMTR(Technique):
    """The technique: K heads on the model, targets drawn from N(y, (se_scale * se)^2) each step."""

    name = "gmtr"
    kind = "regularizer"
    source = "reglab: Gaussian multi-target regularization (no published reference)"

    class Knobs(Knobs):
        heads: int = Field(32, ge=1, le=4096, description="number of output heads K")
        se_scale: float = Field(1.0, ge=0, description="multiplies each example's standard error (0: no noise)")

    def apply_model(self, model: nn.Module, data: Data) -> nn.Module:
        if data.task != "regression":
            raise ReglabError(f"technique gmtr: needs a regression dataset ('{data.name}' is {data.task})")
        if "standard_error" not in data.train.extra:
            raise ReglabError(
                f"technique gmtr: dataset '{data.name}' has no per-example standard_error "
                "(csv: add a standard_error column; or use dataset 'replicates')"
            )
        return add_heads(model, self.knobs.heads, data.num_outputs)

    def compute_loss(self, run: Run, out: Tensor, y: Tensor, x: Tensor) -> Tensor:
        """The GMTR loss replaces the task's MSE (penalties of other techniques are added to it)."""
        se = run.data.train.extra["standard_error"][run.batch_rows] * self.knobs.se_scale  # (S, B[, D])
        return gmtr_loss(out.float(), y, se, run.stream(self.name))
