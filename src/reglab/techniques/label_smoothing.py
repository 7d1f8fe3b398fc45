"""Label smoothing (Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016): the target
distribution becomes ``(1 - eps) * onehot + eps / K``; implemented by ``F.cross_entropy``'s
``label_smoothing``. Training loss only; validation and test losses stay plain cross-entropy.
Knobs: eps=0.1.
"""
from __future__ import annotations

from pydantic import Field

from ..errors import ReglabError
from .base import Knobs, Technique


class LabelSmoothing(Technique):
    name = "label_smoothing"
    kind = "loss"
    source = "Szegedy et al. 2016"

    class Knobs(Knobs):
        eps: float = Field(0.1, ge=0, lt=1, description="smoothing mass spread over all classes")

    def on_fit_start(self, run):  # noqa: ANN001, ANN201
        if run.data.task != "classification":
            raise ReglabError(f"technique label_smoothing: needs a classification task, not {run.data.task}")
        run.loss.label_smoothing = self.knobs.eps
