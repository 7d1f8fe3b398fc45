"""Dropout after every activation (Srivastava et al., "Dropout: A Simple Way to Prevent Neural
Networks from Overfitting", JMLR 15, 2014). Knobs: p=0.5 (probability of zeroing a unit).
"""
from __future__ import annotations

from pydantic import Field
from torch import nn

from ..errors import ReglabError
from ..surgery import wrap_activations
from .base import Knobs, Technique


class Dropout(Technique):
    name = "dropout"
    source = "Srivastava et al. 2014"

    class Knobs(Knobs):
        p: float = Field(0.5, ge=0, lt=1, description="drop probability")

    def apply_model(self, model, data):  # noqa: ANN001, ANN201
        if wrap_activations(model, lambda: nn.Dropout(self.knobs.p)) == 0:
            raise ReglabError("technique dropout: the model has no activation module to put dropout after")
        return model
