"""Test-time adaptation of BatchNorm models: source, norm and TENT.

TENT is Wang et al., "Tent: Fully Test-Time Adaptation by Entropy Minimization" (ICLR 2021),
following the official code (github.com/DequanWang/tent, ``tent.py``, ``norm.py``, ``cifar10c.py``):

- ``source``: the trained model in eval mode, no adaptation.
- ``norm``: every BatchNorm layer normalizes with the statistics of the current test batch
  (running statistics neither used nor updated); no gradients. Predictions depend on the batch only.
- ``tent``: BatchNorm as in ``norm``; only the BN affine weight and bias are trainable, everything
  else is frozen. Each batch is forwarded, its mean softmax entropy is minimized by ``steps``
  optimizer steps (Adam, lr 1e-3, betas (0.9, 0.999) in the official CIFAR-10 config; or SGD with
  momentum), and the logits reported are those of the last forward *before* its update (the
  official ``forward_and_adapt`` returns the outputs of the forward that produced the loss). The
  parameters and optimizer state carry over from batch to batch (``episodic=False``, online
  adaptation); ``episodic=True`` resets both before every batch.

Work happens on a deep copy: the caller's model is never modified. One deviation from the official
code: it puts the whole model in train mode; here only BN layers are, so dropout stays off (identical
for models without dropout, such as the official WRN-28-10).

BN-based adaptation assumes each test batch is a sample of the test distribution: a stream sorted
by class (the ImageFolder test split is) breaks it. :func:`evaluate_tta` therefore streams the
examples in a fixed random order (``order_seed``; ``None`` keeps the given order) and returns every
per-example result in the caller's order.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ReglabError, unknown

Mode = Literal["source", "norm", "tent"]
MODES: tuple[str, ...] = ("source", "norm", "tent")
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")


def softmax_entropy(logits: Tensor) -> Tensor:
    """Entropy (nats) of the softmax of each row of ``logits`` (N, K) -> (N,)."""
    logp = logits.log_softmax(1)
    return -(logp.exp() * logp).sum(1)


def bn_layers(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers (1d, 2d, 3d, sync) of ``model``."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


class Adapter:
    """A deep copy of ``model`` set up for one test-time ``mode``; call it on batches in stream
    order: ``logits = adapter(x)`` (adapting first in ``tent`` mode, see the module docstring).

    ``adapter.model`` is the adapted copy; :meth:`reset` restores the state it started from."""

    def __init__(
        self,
        model: nn.Module,
        mode: Mode = "tent",
        *,
        lr: float = 1e-3,
        optimizer: str = "adam",
        momentum: float = 0.9,
        steps: int = 1,
        episodic: bool = False,
    ) -> None:
        if mode not in MODES:
            raise unknown("tta mode", str(mode), MODES)
        if optimizer not in OPTIMIZERS:
            raise unknown("tta optimizer", str(optimizer), OPTIMIZERS)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ReglabError(f"steps must be an integer >= 1, got {steps!r}")
        if not lr > 0:
            raise ReglabError(f"lr must be > 0, got {lr}")
        self.mode, self.steps, self.episodic = mode, steps, episodic
        self.model = copy.deepcopy(model)
        self.model.eval()
        self.model.requires_grad_(False)
        self.params: list[nn.Parameter] = []
        self.optimizer: torch.optim.Optimizer | None = None
        if mode != "source":
            layers = bn_layers(self.model)
            if not layers:
                raise ReglabError(f"tta mode '{mode}' needs a model with BatchNorm layers (this one has none)")
            for layer in layers:
                layer.train()  # normalize with the batch statistics ...
                layer.track_running_stats = False  # ... in train and eval mode, never updating them
                layer.running_mean = None
                layer.running_var = None
                if mode == "tent" and layer.affine:
                    layer.weight.requires_grad_(True)
                    layer.bias.requires_grad_(True)
                    self.params += [layer.weight, layer.bias]
        if mode == "tent":
            if not self.params:
                raise ReglabError("tta mode 'tent' needs BatchNorm layers with affine parameters (all have affine=False)")
            if optimizer == "adam":
                self.optimizer = torch.optim.Adam(self.params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
            else:
                self.optimizer = torch.optim.SGD(self.params, lr=lr, momentum=momentum, nesterov=momentum > 0)
        self._initial = copy.deepcopy(self.model.state_dict())
        self._initial_opt = copy.deepcopy(self.optimizer.state_dict()) if self.optimizer else None

    def reset(self) -> None:
        """Restore the model (and optimizer) to the state before any adaptation."""
        self.model.load_state_dict(self._initial)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(self._initial_opt)

    def __call__(self, x: Tensor) -> Tensor:
        """Logits for the batch ``x`` (model input, already normalized), adapting in ``tent`` mode."""
        if self.mode != "tent":
            with torch.no_grad():
                return self.model(x)
        if self.episodic:
            self.reset()
        assert self.optimizer is not None
        with torch.enable_grad():
            for _ in range(self.steps):
                logits = self.model(x)
                loss = softmax_entropy(logits).mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        return logits.detach()

    def predict(self, x: Tensor) -> Tensor:
        """Logits of the current (adapted) model for ``x`` without adapting."""
        with torch.no_grad():
            return self.model(x)


def evaluate_tta(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    mode: Mode,
    *,
    batch_size: int = 200,
    lr: float = 1e-3,
    normalize: Callable[[Tensor], Tensor] | None = None,
    steps: int = 1,
    episodic: bool = False,
    optimizer: str = "adam",
    momentum: float = 0.9,
    order_seed: int | None = 0,
    device: torch.device | str | None = None,
) -> dict:
    """Stream ``x`` through ``model`` in batches of ``batch_size`` with test-time ``mode``.

    ``x`` is uint8 images (scaled to [0, 1]) or float model inputs; ``normalize`` (e.g.
    ``Data.normalize``) is applied to each float batch. Examples are streamed in the order of a
    fixed permutation drawn with ``order_seed`` (None: the given order); in the norm and tent modes a
    final batch of one example joins the batch before it. Returns ``error`` (float),
    and per example, in the order of ``x``: ``correct`` (bool), ``entropy`` (nats, of the reported
    softmax), ``prediction`` (int64), plus ``batch`` (the index of the batch that predicted it)."""
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or len(x) != len(y):
        raise ReglabError("x and y must be tensors with the same number of examples")
    if len(x) == 0:
        raise ReglabError("x is empty: nothing to evaluate")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ReglabError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    adapter = Adapter(model, mode, lr=lr, optimizer=optimizer, momentum=momentum, steps=steps, episodic=episodic)
    if device is None:
        first = next(iter(adapter.model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    adapter.model.to(device)
    n = len(x)
    if order_seed is None:
        order = torch.arange(n)
    else:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(order_seed))
    starts = list(range(0, n, batch_size))
    if mode != "source" and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()  # batch statistics of a single example are undefined: fold it into the last batch
    ends = starts[1:] + [n]
    logits_all: list[Tensor] = []
    batch_of = torch.empty(n, dtype=torch.int64)
    for b, (start, end) in enumerate(zip(starts, ends)):
        rows = order[start:end]
        xb = x[rows.to(x.device)].to(device)
        xb = xb.float().div(255) if xb.dtype == torch.uint8 else xb.float()
        if normalize is not None:
            xb = normalize(xb)
        logits_all.append(adapter(xb).float().cpu())
        batch_of[rows] = b
    logits = torch.empty(n, logits_all[0].shape[1])
    logits[order] = torch.cat(logits_all)
    prediction = logits.argmax(1)
    correct = prediction == y.cpu()
    return {
        "error": 1.0 - correct.float().mean().item(),
        "correct": correct,
        "entropy": softmax_entropy(logits),
        "prediction": prediction,
        "batch": batch_of,
        "mode": mode,
    }
