"""Class balancing by loss weights (King & Zeng 2001; scikit-learn's ``class_weight="balanced"``).

Single-label: ``weight_c = N / (K * N_c)`` in the cross-entropy. Multilabel: ``pos_weight_l =
N_neg / N_pos`` per label in BCE-with-logits (labels without positives get weight 1). Counts come from
the training split. No knobs.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Technique


def class_weights(y: Tensor, classes: int) -> Tensor:
    """``N / (K * N_c)`` (classes absent from ``y`` get weight 0)."""
    counts = torch.bincount(y.reshape(-1), minlength=classes).float()
    return torch.where(counts > 0, counts.sum() / (classes * counts.clamp_min(1)), torch.zeros_like(counts))


def pos_weights(y: Tensor) -> Tensor:
    """``N_neg / N_pos`` per label of a 0/1 matrix ``(N, L)``."""
    pos = y.sum(0)
    return torch.where(pos > 0, (len(y) - pos) / pos.clamp_min(1), torch.ones_like(pos))


class ClassBalance(Technique):
    name = "class_balance"
    kind = "loss"
    source = "King & Zeng 2001; sklearn class_weight='balanced'"

    def on_fit_start(self, run):  # noqa: ANN001, ANN201
        y = run.data.train.y
        if run.data.task == "classification":
            run.loss_options["weight"] = class_weights(y, len(run.data.classes))
        elif run.data.task == "multilabel":
            run.loss_options["pos_weight"] = pos_weights(y.float())
        else:
            from ..errors import ReglabError

            raise ReglabError("technique class_balance: needs a classification or multilabel task")
