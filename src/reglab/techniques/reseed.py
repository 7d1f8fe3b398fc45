"""Reseed one random stream: a change of randomness only, with no change to what is expected.

The engine draws each seed's data order from its stream ``"order"`` and each technique's draws from
its own stream (:meth:`reglab.engine.run.Run.stream`). ``reseed`` replaces the stream ``stream`` of
every seed by an independent one (seeded from (seed, ``stream#salt``)) before training starts. A step
made of ``reseed`` alone is a *null* step: the configurations before and after it differ only in
their random draws, so any difference a comparison finds is seed noise. The verdict calibration
(``benchmarks/verdict_calibration.py``) measures the report's false-positive rate on such steps,
following Bouthillier et al. 2021 ("Accounting for Variance in Machine Learning Benchmarks"), who
assess a comparison procedure by its error rates on cases with a known answer.

Knobs: stream="order" (a stream name: "order" or a technique's name), salt=1.
"""
from __future__ import annotations

from pydantic import Field

from .base import Knobs, Technique


class Reseed(Technique):
    name = "reseed"
    kind = "data"
    order = 0  # before any technique draws from its stream
    source = "Bouthillier et al. 2021, Accounting for Variance in Machine Learning Benchmarks (a null step)"

    class Knobs(Knobs):
        stream: str = Field("order", min_length=1, description="the random stream to replace ('order' or a technique's name)")
        salt: int = Field(1, ge=1, description="which independent replacement stream")

    def on_fit_start(self, run):  # noqa: ANN001, ANN201
        run.reseed(self.knobs.stream, self.knobs.salt)  # a resumed run's checkpoint then restores the streams
