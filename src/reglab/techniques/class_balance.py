"""Class balancing by loss weights (King & Zeng 2001; scikit-learn's ``class_weight="balanced"``).

Single-label: ``weight_c = N / (K * N_c)`` in the cross-entropy. Multilabel: ``pos_weight_l =
N_neg / N_pos`` per label in BCE-with-logits (labels without positives get weight 1). Counts come from
the training split. No knobs.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ReglabError
from ..metrics.multilabel import pos_weight
from .base import Technique


def class_weights(y: Tensor, classes: int) -> Tensor:
    """``N / (K * N_c)`` (classes absent from ``y`` get weight 0)."""
    counts = torch.bincount(y.reshape(-1), minlength=classes).float()
    return torch.where(counts > 0, counts.sum() / (classes * counts.clamp_min(1)), torch.zeros_like(counts))


class ClassBalance(Technique):
    name = "class_balance"
    kind = "loss"
    source = "King & Zeng 2001; sklearn class_weight='balanced'"

    def on_fit_start(self, run):  # noqa: ANN001, ANN201
        y = run.data.train.y
        if run.data.task == "classification":
            run.loss.class_weight = class_weights(y, len(run.data.classes))
        elif run.data.task == "multilabel":
            run.loss.pos_weight = pos_weight(y)
        else:
            raise ReglabError("technique class_balance: needs a classification or multilabel task")
