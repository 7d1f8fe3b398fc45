"""Regression metrics: point errors, quantile loss, sample-based proper scores, intervals.

Torch functions on tensors of any leading shape (a seed dimension S included). Point metrics take a
``dim`` to average over (``None``: every element); sample-based scores return one value per example
and leave the averaging to the caller.

- RMSE ``sqrt(mean (yhat - y)^2)`` and MAE ``mean |yhat - y|``.
- Quantile (pinball) loss at level q (Koenker & Bassett 1978): ``mean max(q (y - yhat), (q - 1)(y - yhat))``;
  minimized in expectation by the q-quantile of y; at q = 0.5 it is half the MAE.
- CRPS from m samples X_1..X_m of the forecast (Gneiting & Raftery 2007, eq. 21, the energy form):
  ``CRPS(F, y) = E|X - y| - 1/2 E|X - X'|``. The *unbiased* (fair) estimator divides the pair sum by
  m (m - 1) (pairs j != k only); the plain one by m^2 (it treats the empirical distribution of the
  samples as the forecast). Computed from the sorted samples in O(m log m):
  ``sum_{j,k} |x_j - x_k| = 2 sum_i (2 i - m - 1) x_(i)`` (1-based ranks).
- Energy score for d-dimensional y (Gneiting & Raftery 2007, eq. 22) with power beta in (0, 2):
  ``ES = E||X - y||^beta - 1/2 E||X - X'||^beta``; for d = 1, beta = 1 it is the CRPS.
- The energy loss of engression (Shen & Meinshausen 2024): the energy score (beta = 1) of each
  example averaged over the batch, differentiable, for training a generative regression model.
- Central intervals from samples (the (1 - level)/2 and (1 + level)/2 sample quantiles), their
  empirical coverage ``mean 1{lo <= y <= hi}`` and mean width ``mean (hi - lo)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "rmse", "mae", "pinball_loss", "crps_samples", "crps_gaussian", "energy_score",
    "sample_quantile", "sample_interval", "interval_coverage", "interval_width", "energy_loss",
]


def _mean(t: Tensor, dim: int | tuple[int, ...] | None) -> Tensor:
    return t.mean() if dim is None else t.mean(dim)


def rmse(pred: Tensor, y: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Root mean squared error ``sqrt(mean (pred - y)^2)`` over ``dim`` (all elements by default)."""
    return _mean((pred - y).pow(2), dim).sqrt()


def mae(pred: Tensor, y: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Mean absolute error ``mean |pred - y|`` over ``dim``."""
    return _mean((pred - y).abs(), dim)


def pinball_loss(pred: Tensor, y: Tensor, q: float | Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Quantile loss of the predicted q-quantile ``pred``: ``mean max(q r, (q - 1) r)``, ``r = y - pred``.

    ``q`` is a level in (0, 1) or a tensor broadcastable against ``pred`` (several levels at once).
    """
    q = torch.as_tensor(q, dtype=pred.dtype, device=pred.device)
    if ((q <= 0) | (q >= 1)).any():
        raise ValueError(f"quantile level must be in (0, 1), got {q.tolist()}")
    r = y - pred
    return _mean(torch.maximum(q * r, (q - 1) * r), dim)


def crps_samples(samples: Tensor, y: Tensor, unbiased: bool = True) -> Tensor:
    """CRPS of the forecast given by ``samples`` (..., m) for observations ``y`` (...): one value per example.

    ``E|X - y| - 1/2 E|X - X'|`` with the pair term over j != k divided by m (m - 1) (``unbiased``)
    or over all pairs divided by m^2.
    """
    m = samples.shape[-1]
    if m < 2 and unbiased:
        raise ValueError("the unbiased CRPS needs at least 2 samples")
    first = (samples - y.unsqueeze(-1)).abs().mean(-1)
    ranks = torch.arange(1, m + 1, device=samples.device, dtype=samples.dtype)
    pair_sum = 2 * (samples.sort(-1).values * (2 * ranks - m - 1)).sum(-1)  # sum over all ordered pairs
    pairs = m * (m - 1) if unbiased else m * m
    return first - 0.5 * pair_sum / pairs


def crps_gaussian(mu: Tensor, sigma: Tensor, y: Tensor) -> Tensor:
    """Closed-form CRPS of N(mu, sigma^2): ``sigma [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)]``, ``z = (y - mu)/sigma``."""
    z = (y - mu) / sigma
    normal = torch.distributions.Normal(torch.zeros_like(z), torch.ones_like(z))
    return sigma * (z * (2 * normal.cdf(z) - 1) + 2 * normal.log_prob(z).exp() - 1 / torch.pi**0.5)


def energy_score(samples: Tensor, y: Tensor, beta: float = 1.0, unbiased: bool = True) -> Tensor:
    """Energy score of ``samples`` (..., m, d) for observations ``y`` (..., d): one value per example (...).

    ``mean_j ||x_j - y||^beta - 1/(2 m (m-1)) sum_{j != k} ||x_j - x_k||^beta`` (``unbiased``; else
    the pair sum over m^2). Differentiable in ``samples`` (the engression loss is its batch mean).
    """
    if not 0 < beta < 2:
        raise ValueError(f"beta must be in (0, 2), got {beta}")
    m = samples.shape[-2]
    if m < 2 and unbiased:
        raise ValueError("the unbiased energy score needs at least 2 samples per example")
    if samples.shape[-1] == 1 and beta == 1.0:  # the CRPS: O(m log m) memory-light form
        return crps_samples(samples.squeeze(-1), y.squeeze(-1), unbiased)
    first = _norm(samples - y.unsqueeze(-2), beta).mean(-1)
    diff = samples.unsqueeze(-2) - samples.unsqueeze(-3)  # (..., m, m, d); the diagonal is 0
    pair_sum = _norm(diff, beta).sum((-1, -2))
    pairs = m * (m - 1) if unbiased else m * m
    return first - 0.5 * pair_sum / pairs


def _norm(diff: Tensor, beta: float) -> Tensor:
    """``||diff||^beta`` over the last dimension with a zero (not NaN) gradient at diff = 0."""
    if diff.shape[-1] == 1:
        dist = diff.squeeze(-1).abs()
    else:
        sq = diff.pow(2).sum(-1)
        zero = sq == 0
        dist = torch.where(zero, 0.0, sq.masked_fill(zero, 1.0).sqrt())
    return dist if beta == 1.0 else dist.pow(beta)


def sample_quantile(samples: Tensor, q: float | Sequence[float], dim: int = -1) -> Tensor:
    """Sample quantile(s) along ``dim`` with linear interpolation (``torch.quantile``'s default).

    Sort-based, so it also runs under ``torch.func.vmap``. A sequence of levels adds a last dimension.
    """
    levels = torch.as_tensor(q, dtype=torch.float64)
    if ((levels < 0) | (levels > 1)).any():
        raise ValueError(f"quantile levels must be in [0, 1], got {levels.tolist()}")
    x = samples.movedim(dim, -1).sort(-1).values
    pos = levels.reshape(-1) * (x.shape[-1] - 1)
    lo, hi = pos.floor().long().to(x.device), pos.ceil().long().to(x.device)
    frac = (pos - pos.floor()).to(device=x.device, dtype=x.dtype)
    out = x[..., lo] + (x[..., hi] - x[..., lo]) * frac
    return out[..., 0] if levels.dim() == 0 else out


def sample_interval(samples: Tensor, level: float = 0.9, dim: int = -1) -> tuple[Tensor, Tensor]:
    """Central interval ``(lo, hi)`` holding ``level`` of the samples along ``dim`` (sample quantiles)."""
    if not 0 < level < 1:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    both = sample_quantile(samples, [(1 - level) / 2, (1 + level) / 2], dim)
    return both[..., 0], both[..., 1]


def interval_coverage(lo: Tensor, hi: Tensor, y: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Fraction of observations inside their interval, ``mean 1{lo <= y <= hi}``."""
    return _mean(((lo <= y) & (y <= hi)).to(lo.dtype), dim)


def interval_width(lo: Tensor, hi: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Mean interval width ``mean (hi - lo)``."""
    return _mean(hi - lo, dim)


def energy_loss(samples: Tensor, y: Tensor, beta: float = 1.0) -> Tensor:
    """Engression loss: the energy score of each example, averaged over the batch.

    ``samples``: ``(..., B, m, d)`` with m >= 2 draws per example; ``y``: ``(..., B, d)`` or, for
    d = 1, ``(..., B)``. Returns ``(...)`` -- a scalar for one model, ``(S,)`` for S stacked seeds.
    Per example: ``mean_j ||y - x_j||^beta - 1/(2 m (m-1)) sum_{j != k} ||x_j - x_k||^beta``.
    """
    if y.dim() == samples.dim() - 2:
        y = y.unsqueeze(-1)
    if samples.shape[-2] < 2:
        raise ValueError(f"the energy loss needs m >= 2 samples per example, got {samples.shape[-2]}")
    return energy_score(samples, y.to(samples.dtype), beta=beta).mean(-1)
