"""Quantile regression (Koenker & Bassett, "Regression Quantiles", Econometrica 46, 1978): the
training loss of a regression model becomes the pinball loss at level q,

    L_q(y, f) = mean max(q (y - f), (q - 1) (y - f)),

minimized in expectation by the conditional q-quantile of y. At q = 0.5 it is half the absolute
error: median ("L1") regression, the baseline engression is compared with (Shen & Meinshausen 2024).
It replaces the task's MSE (``compute_loss``); penalties of other techniques are added to it, and
evaluation metrics (RMSE, MAE) are unchanged. Knobs: q=0.5.
"""
from __future__ import annotations

from pydantic import Field

from ..errors import ReglabError
from ..metrics.regression import pinball_loss
from .base import Knobs, Technique


class Quantile(Technique):
    name = "quantile"
    kind = "loss"
    source = "Koenker & Bassett 1978, Regression Quantiles (Econometrica)"

    class Knobs(Knobs):
        q: float = Field(0.5, gt=0, lt=1, description="quantile level (0.5: median / L1 regression)")

    def on_fit_start(self, run):  # noqa: ANN001, ANN201
        if run.data.task != "regression":
            raise ReglabError(f"technique quantile: needs a regression dataset ('{run.data.name}' is {run.data.task})")

    def compute_loss(self, run, out, y, x):  # noqa: ANN001, ANN201
        size = out.shape[0]
        pred = out.float().reshape(size, y.shape[1], -1)
        return pinball_loss(pred, y.reshape(size, y.shape[1], -1).to(pred.dtype), self.knobs.q, dim=(1, 2))
