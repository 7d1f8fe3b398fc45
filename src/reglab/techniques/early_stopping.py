"""Early stopping on the run's validation metric.

Criteria (Prechelt, "Early Stopping -- But When?", Neural Networks: Tricks of the Trade, 1998),
with ``E_va(t)`` the validation error after epoch t, ``E_opt(t) = min_{t' <= t} E_va(t')`` and
``E_tr`` the training error:

- ``patience``: stop when the validation error has not improved by more than ``min_delta`` for
  ``patience`` epochs.
- ``GL``: generalization loss ``GL(t) = 100 * (E_va(t) / E_opt(t) - 1)``; stop when ``GL(t) > alpha``.
- ``PQ``: at the end of each strip of ``k`` epochs, training progress
  ``P_k(t) = 1000 * (sum_{t'=t-k+1..t} E_tr(t') / (k * min_{t'} E_tr(t')) - 1)``; stop when
  ``GL(t) / P_k(t) > alpha``. A strip whose minimum training error is 0 (e.g. 100% training
  accuracy) has ``P_k = inf`` (the ratio's denominator is 0), so ``PQ = 0`` and PQ does not stop
  there; a strip with ``P_k = 0`` (a constant positive training error: no progress) has
  ``PQ = inf`` and stops as soon as ``GL > 0``.
- ``UP``: stop at the end of a strip when the validation error rose over each of the last ``s``
  strips: ``E_va(t) > E_va(t-k) > ... `` i.e. ``E_va(t - j k) > E_va(t - (j+1) k)`` for j < s.

The error is the run's selection metric (``config.metric``) when it is minimized (a loss, an RMSE), and
``1 - metric`` when it is maximized (an accuracy); E_tr is the same measure on the training batches,
the matching ``train_`` metric of the epoch's record (``train_accuracy``; ``train_rmse``, which the
loop records for regression), so GL and P_k use one error measure. Without it E_tr is the training
loss, or for an RMSE metric its square root (the RMSE of a squared-error loss). Whatever the criterion, the run reports the weights of its best epoch (Prechelt's E_opt):
the engine selects every run's best epoch on its validation metric, with or without early stopping.
The stopper keeps no state of its own: every decision is a function of the recorded history, which
the checkpoint holds.

Knobs: criterion="patience", patience=10, min_delta=0, alpha=5 (GL, PQ), strip=5 (k), successive=3 (s).
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from .base import Knobs, Technique


def should_stop(
    criterion: str,
    val_error: list[float],
    train_error: list[float],
    *,
    patience: int = 10,
    min_delta: float = 0.0,
    alpha: float = 5.0,
    strip: int = 5,
    successive: int = 3,
) -> bool:
    """Whether to stop after the last epoch of ``val_error`` (errors per epoch, lower is better)."""
    t = len(val_error)
    if t == 0:
        return False
    if criterion == "patience":
        best, last_improvement = math.inf, 0
        for epoch, err in enumerate(val_error, start=1):
            if err < best - min_delta:
                best, last_improvement = err, epoch
        return t - last_improvement >= patience
    e_opt = min(val_error)
    gl = _generalization_loss(val_error[-1], e_opt)
    if criterion == "GL":
        return gl > alpha
    if t % strip != 0:  # PQ and UP are evaluated at the end of strips only
        return False
    if criterion == "PQ":
        window = train_error[-strip:]
        if min(window) <= 0:  # P_k = inf: PQ = GL / P_k = 0, never above alpha
            return False
        progress = 1000.0 * (sum(window) / (strip * min(window)) - 1.0)
        return gl > 0 and (progress <= 0 or gl / progress > alpha)
    if criterion == "UP":
        if t - successive * strip < strip:
            return False
        return all(val_error[t - 1 - j * strip] > val_error[t - 1 - (j + 1) * strip] for j in range(successive))
    raise ValueError(f"unknown criterion {criterion}")


def _generalization_loss(e_va: float, e_opt: float) -> float:
    if e_opt <= 0:
        return math.inf if e_va > 0 else 0.0
    return 100.0 * (e_va / e_opt - 1.0)


class EarlyStopping(Technique):
    name = "early_stopping"
    kind = "stopping"
    exclusive = True
    source = "Prechelt 1998, Early Stopping -- But When?"

    class Knobs(Knobs):
        criterion: Literal["patience", "GL", "PQ", "UP"] = Field("patience", description="stopping rule")
        patience: int = Field(10, ge=1, description="epochs without improvement (patience)")
        min_delta: float = Field(0.0, ge=0, description="smallest improvement that counts (patience)")
        alpha: float = Field(5.0, gt=0, description="threshold of GL_alpha and PQ_alpha")
        strip: int = Field(5, ge=1, description="strip length k of PQ and UP")
        successive: int = Field(3, ge=1, description="number s of successive rising strips (UP)")

    def _errors(self, run, s: int) -> tuple[list[float], list[float]]:  # noqa: ANN001
        """(validation errors, training errors) of seed ``s`` so far."""
        history = run.history[s]
        sign = (lambda v: 1.0 - v) if run.maximize else (lambda v: v)
        train_key = "train_" + run.metric.removeprefix("val_")
        if all(train_key in r for r in history):
            train = [sign(r[train_key]) for r in history]
        elif run.metric.endswith("rmse"):  # the root of a squared-error training loss
            train = [math.sqrt(max(r["train_loss"], 0.0)) for r in history]
        else:
            train = [r["train_loss"] for r in history]
        return [sign(r[run.metric]) for r in history], train

    def on_epoch_end(self, run):  # noqa: ANN001, ANN201
        k = self.knobs
        for s in range(run.size):
            if run.stopped[s]:
                continue
            val_error, train_error = self._errors(run, s)
            if should_stop(k.criterion, val_error, train_error, patience=k.patience, min_delta=k.min_delta,
                           alpha=k.alpha, strip=k.strip, successive=k.successive):
                run.stopped[s] = True
