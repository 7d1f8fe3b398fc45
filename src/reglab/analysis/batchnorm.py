"""Batch-norm diagnostics for any ``nn.Module`` (Bjorck, Gomes, Selman & Weinberger, "Understanding
Batch Normalization", NeurIPS 2018).

- :func:`activation_stats`: mean and std of the output of chosen layers on one batch, via forward
  hooks (at initialization, without BN, they grow with depth in a He-initialized residual network).
- :func:`logit_gradient`: the gradient of the loss w.r.t. the output logits, examples x classes
  (without BN one class dominates: the network predicts it for every input, so one column lights up).
- :func:`relative_loss`: loss after one plain gradient step of size ``lr`` divided by the loss before,
  over a log-range of learning rates, on one batch; the model's parameters, buffers, gradients, mode
  and the RNG are restored after every probe (BN's running statistics change in a train-mode forward).
- :func:`first_layer_filters`: the first convolution's (or image-sized Linear's) weights as images.

Each has a matching ``plot_*`` that writes a PNG (matplotlib, Agg). Models take ``(B, ...)`` input;
for a stacked :class:`reglab.engine.stacked.Stacked` use ``ensemble.member(s)``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ReglabError
from .plots import plt, save_figure

Loss = Callable[[Tensor, Tensor], Tensor]


@dataclass
class LayerStats:
    name: str
    kind: str
    mean: float  # mean of the layer's output over the batch and all units
    std: float  # std of the layer's output over the batch and all units
    channel_mean: float  # mean over channels of |per-channel mean| (Bjorck et al.'s "channel means")
    channel_std: float  # mean over channels of the per-channel std


def _default_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Residual blocks (children of the top-level stack with their own submodules) when the model
    has them, otherwise every Conv/Linear."""
    top = list(model.named_children())
    blocks = [(n, m) for n, m in top if any(True for _ in m.children()) and not isinstance(m, nn.Sequential)]
    if len(blocks) >= 2:
        return blocks
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


@torch.no_grad()
def activation_stats(model: nn.Module, x: Tensor, layers: Sequence[str] | None = None,
                     train_mode: bool = True) -> list[LayerStats]:
    """Output statistics of ``layers`` (module names; default: residual blocks, else every
    Conv/Linear) on the batch ``x``, in forward order. ``train_mode``: BN normalizes with batch
    statistics, as in training (the model's mode and buffers are restored afterwards)."""
    named = dict(model.named_modules())
    if layers is None:
        chosen = _default_layers(model)
    else:
        missing = [n for n in layers if n not in named]
        if missing:
            raise ReglabError(f"layers: unknown module '{missing[0]}' (allowed: {', '.join(n for n in named if n)})")
        chosen = [(n, named[n]) for n in layers]
    stats: list[LayerStats] = []

    def hook(name: str, module: nn.Module) -> Callable:
        def fn(_m: nn.Module, _inp: tuple, out: Tensor) -> None:
            o = out.detach().float()
            per_channel = o.transpose(0, 1).reshape(o.shape[1], -1) if o.dim() > 1 else o.reshape(1, -1)
            stats.append(LayerStats(name, type(module).__name__, o.mean().item(), o.std().item(),
                                    per_channel.mean(1).abs().mean().item(), per_channel.std(1).mean().item()))
        return fn

    handles = [m.register_forward_hook(hook(n, m)) for n, m in chosen]
    try:
        with preserved(model):
            model.train(train_mode)
            model(x)
    finally:
        for h in handles:
            h.remove()
    return stats


def logit_gradient(model: nn.Module, x: Tensor, y: Tensor, loss: Loss = F.cross_entropy,
                   train_mode: bool = True) -> Tensor:
    """``d loss / d logits`` for the batch ``(x, y)``: a ``(B, C)`` tensor (mean-reduced loss, so each
    row of a cross-entropy gradient is ``(softmax - onehot) / B``). The model is left unchanged."""
    with preserved(model):
        model.train(train_mode)
        logits = model(x).detach().float().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(logits, y), logits)
    return grad


class preserved:  # noqa: N801 - used as a context manager
    """Save a model's parameters, buffers, gradients, train/eval mode and the torch RNG on entry and
    restore them bit for bit on exit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> preserved:
        m = self.model
        self.state = {k: v.detach().clone() for k, v in m.state_dict(keep_vars=True).items()}
        self.grads = {n: None if p.grad is None else p.grad.detach().clone() for n, p in m.named_parameters()}
        self.modes = {n: mod.training for n, mod in m.named_modules()}
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        return self

    @torch.no_grad()
    def __exit__(self, *exc: object) -> None:
        m = self.model
        live = m.state_dict(keep_vars=True)
        for k, v in self.state.items():
            live[k].data.copy_(v)
        for n, p in m.named_parameters():
            p.grad = None if self.grads[n] is None else self.grads[n].clone()
        for n, mod in m.named_modules():
            mod.training = self.modes[n]
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def relative_loss(model: nn.Module, x: Tensor, y: Tensor, lrs: Sequence[float] | None = None,
                  loss: Loss = F.cross_entropy, train_mode: bool = True) -> tuple[Tensor, Tensor]:
    """Relative loss ``L(theta - lr * g) / L(theta)`` on the batch ``(x, y)`` for each learning rate
    (default: 25 values from 1e-5 to 10, log-spaced), ``g`` the gradient at ``theta``. Every probe
    starts from the saved state and the model is restored exactly afterwards. Returns ``(lrs, ratios)``;
    a non-finite new loss gives ``inf``."""
    lrs_t = torch.logspace(-5, 1, 25, dtype=torch.float64) if lrs is None else torch.tensor(list(lrs), dtype=torch.float64)
    if len(lrs_t) == 0 or not (lrs_t > 0).all():
        raise ReglabError("lrs: must be a non-empty list of positive learning rates")
    ratios = []
    with preserved(model):
        model.train(train_mode)
        params = [p for p in model.parameters() if p.requires_grad]
        with preserved(model):  # the forward that takes the gradient may move BN's running statistics
            before = loss(model(x), y)
            grads = torch.autograd.grad(before, params)
        for lr in lrs_t.tolist():
            with preserved(model), torch.no_grad():
                for p, g in zip(params, grads):
                    p.sub_(lr * g)
                after = loss(model(x), y).item()
            ratios.append(after / before.item() if math.isfinite(after) else math.inf)
    return lrs_t, torch.tensor(ratios, dtype=torch.float64)


def first_layer_filters(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> Tensor:
    """Weights of the first Conv2d as ``(filters, C, k, k)``; or, for a model whose first layer is a
    Linear on flattened images, its rows reshaped to ``input_shape``."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight.detach().cpu().float().clone()
        if isinstance(module, nn.Linear):
            if input_shape is None or math.prod(input_shape) != module.in_features:
                raise ReglabError("first_layer_filters: the first layer is a Linear; pass the image input_shape (C, H, W)")
            return module.weight.detach().cpu().float().reshape(-1, *input_shape).clone()
    raise ReglabError("first_layer_filters: the model has no Conv2d or Linear layer")


# ---- plots -------------------------------------------------------------------------------------
def plot_activation_stats(curves: dict[str, list[LayerStats]], path: str | Path) -> Path:
    """Per-layer channel mean (absolute) and std against depth, one line per model, log scale."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, stats in curves.items():
        depth = range(1, len(stats) + 1)
        axes[0].plot(depth, [max(s.channel_mean, 1e-12) for s in stats], "o-", ms=3, label=label)
        axes[1].plot(depth, [max(s.channel_std, 1e-12) for s in stats], "o-", ms=3, label=label)
    for ax, what in zip(axes, ("mean |channel mean|", "mean channel std")):
        ax.set_yscale("log")
        ax.set_xlabel("layer (forward order)")
        ax.set_ylabel(what)
        ax.set_title(f"activations at initialization: {what}")
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_logit_gradient(grads: dict[str, Tensor], path: str | Path, classes: Sequence[str] | None = None) -> Path:
    """Heatmaps of ``d loss / d logits`` (examples x classes), one panel per model, each with its own
    symmetric colour scale."""
    fig, axes = plt.subplots(1, len(grads), figsize=(4.2 * len(grads), 5), squeeze=False)
    for ax, (label, g) in zip(axes[0], grads.items()):
        g = g.cpu().float()
        lim = max(g.abs().max().item(), 1e-12)
        im = ax.imshow(g.numpy(), aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("class")
        ax.set_ylabel("example")
        if classes is not None:
            ax.set_xticks(range(len(classes)))
            ax.set_xticklabels(classes, rotation=90, fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def plot_relative_loss(curves: dict[str, tuple[Tensor, Tensor]], path: str | Path, cap: float = 1e3) -> Path:
    """Relative loss after one step against the learning rate (log-log), one line per model; the
    dashed line at 1 separates steps that lower the loss from steps that raise it."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, (lrs, ratios) in curves.items():
        ax.plot(lrs.numpy(), ratios.clamp(max=cap).numpy(), "o-", ms=3, label=label)
    ax.axhline(1.0, color="k", ls="--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate (one gradient step)")
    ax.set_ylabel(f"loss after / loss before (capped at {cap:g})")
    ax.set_title("relative loss after one step along the gradient")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def filter_grid(weights: Tensor, columns: int = 8) -> Tensor:
    """Filters ``(F, C, k, k)`` as one ``(rows*(k+1), columns*(k+1), C)`` image in [0, 1], each filter
    min-max scaled on its own (C = 1 or 3)."""
    f, c, h, w = weights.shape
    if c not in (1, 3):
        weights = weights.mean(1, keepdim=True)
        c = 1
    lo = weights.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = weights.flatten(1).max(1).values.view(-1, 1, 1, 1)
    scaled = (weights - lo) / (hi - lo).clamp_min(1e-12)
    rows = math.ceil(f / columns)
    grid = torch.ones(rows * (h + 1), columns * (w + 1), c)
    for i in range(f):
        r, q = divmod(i, columns)
        grid[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = scaled[i].permute(1, 2, 0)
    return grid


def plot_filters(filters: dict[str, Tensor], path: str | Path, columns: int = 8) -> Path:
    """First-layer filters as image grids, one panel per model."""
    fig, axes = plt.subplots(1, len(filters), figsize=(3.6 * len(filters), 3.6), squeeze=False)
    for ax, (label, w) in zip(axes[0], filters.items()):
        grid = filter_grid(w, columns)
        ax.imshow(grid.squeeze(-1).numpy() if grid.shape[-1] == 1 else grid.numpy(),
                  cmap="gray" if grid.shape[-1] == 1 else None, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    return save_figure(fig, path)
