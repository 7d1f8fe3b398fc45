"""One training step: bf16 autocast, the task's criterion and its settings, the loss hooks, backward
and the optimizer step. :func:`default_step` is what the loop runs for every batch unless a
``train_step`` hook replaces it; such a hook (deep supervision) builds its own steps from
:func:`training_loss` and :func:`optimizer_step`, so every technique's hooks still fire.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ReglabError

if TYPE_CHECKING:
    from .run import Run


@dataclass
class LossSettings:
    """Settings of the task's training criterion, set by techniques in ``on_fit_start``
    (evaluation losses never use them)."""

    class_weight: Tensor | None = None  # cross-entropy weight per class (class_balance)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (label_smoothing)
    pos_weight: Tensor | None = None  # BCE-with-logits weight of positives per label (class_balance)


def criterion(run: Run, out: Tensor, y: Tensor, training: bool = True) -> Tensor:
    """Per-seed mean loss ``(S,)`` of outputs ``(S, B, ..., C)`` against targets ``(S, B, ...)``.

    Classification: cross-entropy with optional class weights and label smoothing (training only;
    soft targets from mixup/cutmix are accepted); multilabel: BCE with logits and optional
    ``pos_weight``; regression: mean squared error. Matches torch's ``mean`` reductions per seed.
    """
    size = out.shape[0]
    opts = run.loss if training else LossSettings()
    task = run.data.task
    if task == "classification":
        classes = out.shape[-1]
        soft = y.is_floating_point()
        target = y.reshape(-1, classes) if soft else y.reshape(-1)
        weight = opts.class_weight
        per = F.cross_entropy(
            out.reshape(-1, classes).float(), target, weight=weight,
            label_smoothing=opts.label_smoothing, reduction="none",
        ).view(size, -1)
        if weight is not None and not soft:
            return per.sum(1) / weight[y.reshape(size, -1)].sum(1)
        return per.mean(1)
    if task == "multilabel":
        per = F.binary_cross_entropy_with_logits(out.float(), y, pos_weight=opts.pos_weight, reduction="none")
        return per.reshape(size, -1).mean(1)
    diff = out.float().reshape(size, y.shape[1], -1) - y.reshape(size, y.shape[1], -1)
    return diff.pow(2).reshape(size, -1).mean(1)


def autocast(run: Run) -> contextlib.AbstractContextManager:
    """bf16 autocast: ``amp="bf16"`` on any device, ``"auto"`` on CUDA only, ``"off"`` never."""
    amp = run.config.amp
    on = amp == "bf16" or (amp == "auto" and run.device.type == "cuda")
    return torch.autocast(device_type=run.device.type, dtype=torch.bfloat16, enabled=on)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 matrix products natively on this CPU (AVX512-BF16 or AMX): only there
    does ``amp="bf16"`` speed up CPU training (about 3x for the CIFAR-10 MLP on an AVX512-BF16 EPYC);
    elsewhere bf16 is emulated and slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def training_loss(run: Run, out: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """Per-seed training loss ``(S,)``: the task's criterion, or the one ``compute_loss`` hook that
    replaces it, then every ``loss`` hook (penalties, distillation) in order."""
    losses = None
    for hook in run.hooks["compute_loss"]:
        if (replaced := hook(run, out, y, x)) is not None:
            if losses is not None:
                raise ReglabError("two techniques replace the training loss (compute_loss); keep one of them")
            losses = replaced
    if losses is None:
        losses = criterion(run, out, y)
    for hook in run.hooks["loss"]:
        losses = hook(run, losses, out, y, x)
    return losses


def optimizer_step(run: Run, losses: Tensor) -> None:
    """Backward of the per-seed losses' sum (each seed's gradient equals its solo gradient), the
    ``after_backward`` and ``before_step`` hooks, one optimizer step.

    Per-seed learning rates: when ``run.lr_scale`` is not all ones, each seed's update is scaled by
    its factor after the step. The update of every optimizer here (SGD, Adam, AdamW, Adadelta) is
    linear in the learning rate given its state, and their state does not depend on it, so this is
    the step at learning rate ``lr * lr_scale[s]`` (to float rounding), for stacked seeds in one
    optimizer (e.g. ``plateau``'s per-seed reductions)."""
    run.optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
    for hook in run.hooks["after_backward"]:
        hook(run)
    for hook in run.hooks["before_step"]:
        hook(run)
    scaled = any(f != 1.0 for f in run.lr_scale)
    if scaled:
        params = list(run.model.parameters())
        before = [p.detach().clone() for p in params]
    run.optimizer.step()
    if scaled:
        scale = torch.tensor(run.lr_scale, device=run.device)
        with torch.no_grad():
            for p, old in zip(params, before):
                factor = scale.view(-1, *[1] * (p.dim() - 1)) if run.size > 1 else scale[0]
                p.copy_(old + (p - old) * factor.to(p.dtype))
    run.step += 1


def default_step(run: Run, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Forward (under autocast), training loss, backward and step; returns the detached per-seed
    losses ``(S,)`` and outputs."""
    with autocast(run):
        out = run.model(x)
    losses = training_loss(run, out, y, x)
    optimizer_step(run, losses)
    return losses.detach(), out.detach()
