"""Engression: distributional regression with a generative network g(x, eps) and the energy loss.

Shen & Meinshausen, "Engression: Extrapolation through the Lens of Distributional Regression",
JRSS-B 2024 (arXiv:2307.00835); reference implementation: the ``engression`` package
(github.com/xwshen51/engression). This module is an independent implementation.

The model draws Y-samples ``g([x, eps])`` with fresh noise ``eps`` (``noise_dim`` coordinates,
N(0, I) or uniform on [-sqrt 3, sqrt 3] -- unit variance -- times ``noise_scale``) concatenated to
the input. With m >= 2 samples per example it is fitted by the energy loss

    L = mean_j ||y - yhat_j|| - 1/(2 m (m-1)) sum_{j != k} ||yhat_j - yhat_k||,

per example and then averaged over the batch: a proper scoring rule (the energy score), so its
expectation is minimized when the samples follow the true conditional distribution of Y given x.
Predictions come from sampling (default 512 draws): the mean, the median, any quantile, central
intervals. Under *pre-additive* noise ``Y = g*(X + eta)`` with monotone g*, fitting the whole
conditional distribution pins g down beyond the training support, which is why engression
extrapolates where L1/L2 regression does not (the paper's Figure 4).

Pieces:
- the energy loss itself is :func:`reglab.metrics.regression.energy_loss`, and the ``engression``
  technique trains any of these models with it through the engine;
- :func:`resmlp`, a residual MLP (registered as model ``resmlp``; the paper finds residual
  networks extrapolate better than plain MLPs);
- :class:`Engressor`, wrapping any network (and optionally a base model whose prediction it takes
  as input: engression stacked as a head); :func:`engressor` builds one on a residual MLP;
- :class:`Affine`, a fixed per-feature ``x * scale + shift`` (standardizing inputs or outputs inside a model).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..metrics.regression import sample_interval, sample_quantile
from . import Activation, make_activation, register
from .seeded import hash_normal, hash_uniform, layer_key

__all__ = ["ResidualBlock", "resmlp", "Engressor", "BaseFeatures", "engressor", "stack_on", "Affine"]

Noise = Literal["normal", "uniform"]
Norm = Literal["none", "layer", "batch"]


# ---- networks ------------------------------------------------------------------------------------
def _norm(kind: Norm, width: int) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(width)
    return nn.BatchNorm1d(width) if kind == "batch" else nn.Identity()


class ResidualBlock(nn.Module):
    """``act(x + norm(W2 act(norm(W1 x))))`` (the block of the reference package, norm optional)."""

    def __init__(self, width: int, activation: str = "relu", norm: Norm = "none") -> None:
        super().__init__()
        self.fc1, self.norm1, self.act1 = nn.Linear(width, width), _norm(norm, width), make_activation(activation)
        self.fc2, self.norm2, self.act2 = nn.Linear(width, width), _norm(norm, width), make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act1(self.norm1(self.fc1(x)))
        return self.act2(x + self.norm2(self.fc2(h)))


@register("resmlp", "residual MLP: Linear -> blocks of act(x + W2 act(W1 x)) -> Linear (engression's network)")
def resmlp(
    input_shape: tuple[int, ...],
    num_outputs: int,
    *,
    hidden: Annotated[int, Field(ge=1)] = 100,
    blocks: Annotated[int, Field(ge=0)] = 2,
    activation: Activation = "relu",
    norm: Norm = "none",
) -> nn.Sequential:
    """Flatten -> Linear(p, hidden) -> norm -> act -> ``blocks`` residual blocks -> Linear(hidden, out)."""
    width = math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(width, hidden), _norm(norm, hidden), make_activation(activation)]
    layers += [ResidualBlock(hidden, activation, norm) for _ in range(blocks)]
    layers.append(nn.Linear(hidden, num_outputs))
    return nn.Sequential(*layers)


class BaseFeatures(nn.Module):
    """Input features of an engression head stacked on ``base``: ``base(x)`` or ``[base(x), x]``."""

    def __init__(self, base: nn.Module, include_input: bool = True) -> None:
        super().__init__()
        self.base, self.include_input = base, include_input

    def forward(self, x: Tensor) -> Tensor:
        out = self.base(x).flatten(1)
        return torch.cat([out, x.flatten(1).to(out.dtype)], 1) if self.include_input else out


class Engressor(nn.Module):
    """A generative regression model ``g([features(x), eps])``.

    ``net`` maps ``(rows, F + noise_dim)`` to ``(rows, d)``; ``features(x)`` is ``x`` flattened, or
    ``encoder(x)`` (e.g. :class:`BaseFeatures` to stack engression on a base model's prediction).

    ``forward(x)`` in training mode returns ``samples`` draws per example, ``(B, m, d)``, for
    the energy loss; in eval mode it returns the point prediction ``point`` ("mean", "median" or
    a quantile level) from ``eval_samples`` draws, ``(B, d)`` -- or the draws ``(B, n, d)`` when
    ``eval_output == "samples"``. The noise is counter-based (:func:`reglab.models.seeded.hash_normal`
    with a key derived from the seed the model was built under, and a call counter buffer), so a seed
    draws the same noise alone or stacked with other seeds under ``torch.func.vmap``.
    """

    def __init__(
        self,
        net: nn.Module,
        noise_dim: int = 100,
        *,
        noise: Noise = "normal",
        noise_scale: float = 1.0,
        samples: int = 2,
        encoder: nn.Module | None = None,
        point: str | float = "median",
        eval_samples: int = 512,
        chunk_rows: int = 1 << 18,
    ) -> None:
        super().__init__()
        if noise not in ("normal", "uniform"):
            raise ValueError(f"noise must be 'normal' or 'uniform', got {noise!r}")
        if samples < 2:
            raise ValueError(f"engression trains on m >= 2 samples per example, got {samples}")
        self.net, self.encoder = net, encoder
        self.noise_dim, self.noise, self.noise_scale = noise_dim, noise, noise_scale
        self.samples, self.point, self.eval_samples, self.chunk_rows = samples, point, eval_samples, chunk_rows
        self.eval_output = "point"
        self.register_buffer("key", torch.tensor(layer_key("engression noise"), dtype=torch.int64))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def features(self, x: Tensor) -> Tensor:
        return x.flatten(1) if self.encoder is None else self.encoder(x).flatten(1)

    def draw_noise(self, rows: int, like: Tensor) -> Tensor:
        self.calls += 1
        shape = torch.Size((rows, self.noise_dim))
        if self.noise == "normal":
            eps = hash_normal(self.key, self.calls, shape, like.device)
        else:
            eps = (hash_uniform(self.key, self.calls, shape, like.device) * 2 - 1) * math.sqrt(3)
        return eps.to(like.dtype) * self.noise_scale

    def generate(self, feats: Tensor, n: int) -> Tensor:
        """``n`` draws for each row of ``feats`` (B, F): ``(B, n, d)``, differentiable."""
        b = feats.shape[0]
        step = max(1, self.chunk_rows // n)
        outs = []
        for start in range(0, b, step):
            f = feats[start : start + step]
            rep = f.unsqueeze(1).expand(f.shape[0], n, f.shape[1]).reshape(-1, f.shape[1])
            out = self.net(torch.cat([rep, self.draw_noise(rep.shape[0], rep)], 1))
            outs.append(out.reshape(f.shape[0], n, -1))
        return torch.cat(outs, 0)

    def forward(self, x: Tensor) -> Tensor:
        feats = self.features(x)
        if self.training:
            return self.generate(feats, self.samples)
        draws = self.generate(feats, self.eval_samples)
        return draws if self.eval_output == "samples" else summarize(draws, self.point)

    @torch.no_grad()
    def sample(self, x: Tensor, n: int = 512) -> Tensor:
        """``n`` draws from the fitted conditional distribution at each ``x``: ``(B, n, d)``.

        Uses the current mode: call ``.eval()`` first when the network has batch norm or dropout.
        """
        return self.generate(self.features(x), n)

    def predict(self, x: Tensor, kind: str | float | Sequence[float] = "mean", n: int = 512) -> Tensor:
        """Point prediction from ``n`` draws: "mean", "median" or a quantile level in (0, 1) -> ``(B, d)``;
        a sequence of levels -> ``(B, d, len(levels))``."""
        return summarize(self.sample(x, n), kind)

    def interval(self, x: Tensor, level: float = 0.9, n: int = 512) -> tuple[Tensor, Tensor]:
        """Central ``level`` prediction interval ``(lo, hi)``, each ``(B, d)``."""
        return sample_interval(self.sample(x, n), level, dim=-2)


def summarize(draws: Tensor, kind: str | float | Sequence[float]) -> Tensor:
    """Reduce draws ``(..., n, d)`` over n: "mean", "median", or quantile level(s) (levels last)."""
    if kind == "mean":
        return draws.mean(-2)
    if kind == "median":
        kind = 0.5
    if isinstance(kind, str):
        raise ValueError(f"unknown prediction '{kind}' (allowed: mean, median, a quantile level in (0, 1))")
    return sample_quantile(draws, kind, dim=-2)


def engressor(
    in_features: int,
    out_features: int = 1,
    *,
    hidden: int = 100,
    blocks: int = 2,
    activation: Activation = "relu",
    norm: Norm = "none",
    noise_dim: int = 100,
    noise: Noise = "normal",
    noise_scale: float = 1.0,
    samples: int = 2,
    encoder: nn.Module | None = None,
    point: str | float = "median",
    eval_samples: int = 512,
) -> Engressor:
    """An :class:`Engressor` on a residual MLP taking ``in_features + noise_dim`` inputs."""
    net = resmlp((in_features + noise_dim,), out_features, hidden=hidden, blocks=blocks, activation=activation, norm=norm)
    return Engressor(
        net, noise_dim, noise=noise, noise_scale=noise_scale, samples=samples, encoder=encoder,
        point=point, eval_samples=eval_samples,
    )


def stack_on(
    base: nn.Module, base_outputs: int, in_features: int, out_features: int = 1, *,
    include_input: bool = True, freeze_base: bool = False, **options: object,
) -> Engressor:
    """Engression as a head on ``base``: g([base(x), x, eps]) (or g([base(x), eps]) without the input).

    ``base_outputs`` is the size of ``base(x)`` per example, ``in_features`` that of flattened x;
    ``freeze_base`` keeps a trained base fixed (only the head learns). ``options`` go to :func:`engressor`.
    """
    if freeze_base:
        base.requires_grad_(False)
    width = base_outputs + (in_features if include_input else 0)
    return engressor(width, out_features, encoder=BaseFeatures(base, include_input), **options)  # type: ignore[arg-type]


# ---- fixed standardization -----------------------------------------------------------------------
class Affine(nn.Module):
    """``x * scale + shift`` with fixed (buffer) ``scale`` and ``shift``, per feature."""

    def __init__(self, scale: Tensor, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift
