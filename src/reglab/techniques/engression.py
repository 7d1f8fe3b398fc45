"""Engression as a technique: turn the run's model into a generative regression model g(x, eps).

Shen & Meinshausen, "Engression: Extrapolation through the Lens of Distributional Regression",
JRSS-B 2024 (the models and their predictions live in :mod:`reglab.models.engression`, the energy
loss in :mod:`reglab.metrics.regression`). Two ways to apply it:

- ``input="x"``: the model itself becomes g([x, eps]) -- its first Linear is widened by
  ``noise_dim`` noise inputs (models that start with Flatten -> Linear: ``mlp``, ``resmlp``);
- ``input="base"`` / ``"base+x"``: engression stacked as a head on any model's prediction:
  g([base(x), eps]) or g([base(x), x, eps]), g a residual MLP (``head_hidden`` x ``head_blocks``),
  trained jointly with the base.

Training replaces the task's MSE by the energy loss on ``samples`` draws per example;
evaluation predicts the ``point`` ("median" or "mean") of ``eval_samples`` draws, so the usual
``rmse``/``mae`` metrics apply, and (``metrics=True``) adds the CRPS (energy score for several
outputs) and the coverage and mean width of the central ``level`` interval: ``val_crps``,
``val_coverage``, ``val_width``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..errors import ReglabError
from ..metrics.regression import energy_loss, energy_score, sample_interval
from ..models.engression import BaseFeatures, Engressor, resmlp
from .base import Knobs, Technique

if TYPE_CHECKING:
    from ..data import Data
    from ..engine.run import Run


def widen_first_linear(model: nn.Module, in_features: int, extra: int) -> nn.Module:
    """Give the model's first Linear ``extra`` more inputs (fresh init), in place."""
    name = next((n for n, m in model.named_modules() if isinstance(m, nn.Linear)), None)
    if name is None or model.get_submodule(name).in_features != in_features:
        raise ReglabError(
            "technique engression: input='x' needs a model whose first layer is a Linear on the flattened "
            "input (mlp, resmlp); use input='base' or 'base+x' to stack engression on any model"
        )
    old: nn.Linear = model.get_submodule(name)
    new = nn.Linear(in_features + extra, old.out_features, bias=old.bias is not None)
    if not name:
        return new
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)
    return model


class Engression(Technique):
    name = "engression"
    kind = "loss"
    source = "Shen & Meinshausen 2024, Engression (JRSS-B); reference package `engression`"

    class Knobs(Knobs):
        input: Literal["x", "base", "base+x"] = Field("x", description="noise into the model (x) or a head on it")
        noise_dim: int = Field(100, ge=1, description="number of noise coordinates concatenated to the input")
        noise: Literal["normal", "uniform"] = Field("normal", description="noise distribution (unit variance)")
        noise_scale: float = Field(1.0, gt=0, description="noise standard deviation")
        samples: int = Field(2, ge=2, description="draws per example in the energy loss (m)")
        point: Literal["median", "mean"] = Field("median", description="the point prediction used by metrics")
        eval_samples: int = Field(512, ge=2, description="draws per example at evaluation")
        head_hidden: int = Field(100, ge=1, description="head width (input='base'/'base+x')")
        head_blocks: int = Field(1, ge=0, description="head residual blocks (input='base'/'base+x')")
        metrics: bool = Field(True, description="record CRPS, interval coverage and width at evaluation")
        level: float = Field(0.8, gt=0, lt=1, description="central interval level of the coverage metric")

    def apply_model(self, model: nn.Module, data: Data) -> nn.Module:
        if data.task != "regression":
            raise ReglabError(f"technique engression: needs a regression dataset ('{data.name}' is {data.task})")
        k = self.knobs
        options = dict(noise=k.noise, noise_scale=k.noise_scale, samples=k.samples, point=k.point,
                       eval_samples=k.eval_samples)
        p = math.prod(data.input_shape)
        if k.input == "x":
            return Engressor(widen_first_linear(model, p, k.noise_dim), k.noise_dim, **options)
        encoder = BaseFeatures(model, include_input=k.input == "base+x")
        width = data.num_outputs + (p if k.input == "base+x" else 0) + k.noise_dim
        head = resmlp((width,), data.num_outputs, hidden=k.head_hidden, blocks=k.head_blocks)
        return Engressor(head, k.noise_dim, encoder=encoder, **options)

    def compute_loss(self, run: Run, out: Tensor, y: Tensor, x: Tensor) -> Tensor:
        """The energy loss replaces the task's MSE (penalties of other techniques are added to it)."""
        return energy_loss(out.float(), y)

    def batch_metrics(self, run: Run, out: Tensor, y: Tensor, x: Tensor) -> dict[str, Tensor]:
        if not self.knobs.metrics:
            return {}
        draws = self._draws(run, x)  # (S, B, n, d)
        y = (y.unsqueeze(-1) if y.dim() == draws.dim() - 2 else y).to(draws.dtype)
        lo, hi = sample_interval(draws, self.knobs.level, dim=-2)
        inside = ((lo <= y) & (y <= hi)).to(draws.dtype).mean(-1)
        return {
            "crps": energy_score(draws, y).sum(-1),
            "coverage": inside.sum(-1),
            "width": (hi - lo).mean(-1).sum(-1),
        }

    @staticmethod
    def _draws(run: Run, x: Tensor) -> Tensor:
        """The models' draws at ``x`` (the Engressor's eval output switched to samples for one call)."""
        engressors = [m for m in run.model.template.modules() if isinstance(m, Engressor)]
        for m in engressors:
            m.eval_output = "samples"
        try:
            with torch.no_grad():
                return run.model(x, shared=True).float()
        finally:
            for m in engressors:
                m.eval_output = "point"
