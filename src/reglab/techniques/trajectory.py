"""Training trajectory: the L2 norm of all parameters and of all gradients at every iteration,
per seed, saved with the run (``RunResult.trajectory``) and plotted by :mod:`reglab.analysis.plots`.

Norms are accumulated on the device and copied to the host once per epoch. No knobs.
"""
from __future__ import annotations

import torch

from .base import Technique


def stacked_norm(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-seed L2 norm over all ``(S, ...)`` tensors: ``(S,)``."""
    return torch.sqrt(sum(t.detach().float().pow(2).flatten(1).sum(1) for t in tensors.values()))


class Trajectory(Technique):
    name = "trajectory"
    kind = "diagnostic"
    order = 90  # after max-norm and other in-place edits of the step
    source = "reglab diagnostic: L2 norms of all parameters and gradients per step"

    def __init__(self, **knobs) -> None:  # noqa: ANN003
        super().__init__(**knobs)
        self._grads: list[torch.Tensor] = []  # set here too: a step can run before on_fit_start (grouping's probe)
        self._params: list[torch.Tensor] = []

    def on_fit_start(self, run):  # noqa: ANN001, ANN201
        for key in ("param_norm", "grad_norm"):
            run.trajectory.setdefault(key, [[] for _ in range(run.size)])
        self._grads, self._params = [], []

    def after_backward(self, run):  # noqa: ANN001, ANN201
        self._grads.append(stacked_norm(run.model.stacked_grads()))

    def after_step(self, run):  # noqa: ANN001, ANN201
        self._params.append(stacked_norm(run.model.stacked()))

    def on_epoch_end(self, run):  # noqa: ANN001, ANN201
        for key, chunk in (("grad_norm", self._grads), ("param_norm", self._params)):
            if chunk:
                for s, values in enumerate(torch.stack(chunk, 1).tolist()):
                    run.trajectory[key][s].extend(values)
        self._grads, self._params = [], []
