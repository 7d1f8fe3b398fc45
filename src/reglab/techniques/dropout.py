"""Dropout after every activation (Srivastava et al., "Dropout: A Simple Way to Prevent Neural
Networks from Overfitting", JMLR 15, 2014). Knobs: p=0.5 (probability of zeroing a unit).

Masks are drawn per seed (:class:`reglab.models.seeded.SeedDropout`): each dropout layer holds a key
derived from the seed the model was built under and the layer's position, and a call counter; a mask
element is a counter-based hash of (key, call, position). So a seed gets the same masks whether it
trains alone or stacked with other seeds under ``torch.func.vmap``, adding dropout draws nothing from
any other random stream, and the counter, a buffer, goes into checkpoints for exact resume. Models'
own ``dropout=`` options use the same layer.
"""
from __future__ import annotations

import itertools

from pydantic import Field

from ..errors import ReglabError
from ..models.seeded import SeedDropout, layer_key
from ..models.surgery import wrap_activations
from .base import Knobs, Technique

class Dropout(Technique):
    name = "dropout"
    source = "Srivastava et al. 2014"

    class Knobs(Knobs):
        p: float = Field(0.5, ge=0, lt=1, description="drop probability")

    def apply_model(self, model, data):  # noqa: ANN001, ANN201
        count = itertools.count()
        make = lambda: SeedDropout(self.knobs.p, layer_key(f"dropout technique/{next(count)}"))  # noqa: E731
        if wrap_activations(model, make) == 0:
            raise ReglabError("technique dropout: the model has no activation module to put dropout after")
        return model
