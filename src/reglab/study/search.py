"""Search spaces: a knob of a study's baseline or step given as a grid or a range (tuned by :mod:`.tune`).

In a study file a knob's value may be a search space instead of a value::

    techniques = [{ name = "dropout", p = { grid = [0.1, 0.2, 0.3, 0.5] } }]
    baseline = [{ name = "sgd", lr = { range = [1e-3, 0.3], scale = "log", trials = 8 } }]

What is done with them is :mod:`reglab.study.tune`'s docstring.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


SEARCH_KEYS = ("grid", "range")


class Grid(BaseModel):
    """Every value in ``grid``."""

    model_config = ConfigDict(extra="forbid")
    grid: list[Any] = Field(min_length=1)


class Range(BaseModel):
    """``trials`` values between the ``range`` bounds, proposed by Optuna's TPE sampler."""

    model_config = ConfigDict(extra="forbid")
    range: tuple[float, float]
    scale: Literal["log", "linear"] = "log"
    trials: int = Field(8, ge=2, le=200)
    integer: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> Range:
        lo, hi = self.range
        if not lo < hi:
            raise ValueError(f"range: the low bound must be below the high one, got {list(self.range)}")
        if self.scale == "log" and lo <= 0:
            raise ValueError(f"range: a log scale needs positive bounds, got {list(self.range)}")
        return self


Space = Grid | Range


def is_space(value: Any) -> bool:
    return isinstance(value, dict) and any(k in value for k in SEARCH_KEYS)


def parse_space(value: dict[str, Any]) -> Space:
    return Grid(**value) if "grid" in value else Range(**value)


@dataclass(frozen=True)
class Knob:
    """One searched knob: ``layer`` None for the baseline, else the step's index."""

    layer: int | None
    technique: int  # index in that layer's technique list
    name: str
    space: Space = field(compare=False)

    @property
    def id(self) -> str:
        return f"{'baseline' if self.layer is None else f'steps[{self.layer}]'}.techniques[{self.technique}].{self.name}"


def knobs_of(spec: Any) -> list[Knob]:
    """Every searched knob of a study spec, in layer order (baseline first)."""
    layers = [(None, spec.baseline)] + [(i, s.techniques) for i, s in enumerate(spec.steps)]
    return [Knob(layer, t, name, parse_space(value))
            for layer, techniques in layers for t, table in enumerate(techniques)
            for name, value in table.items() if is_space(value)]


def candidates(space: Space) -> list[Any]:
    """The values a grid holds, or a range's bounds (what validation checks before anything trains)."""
    if isinstance(space, Grid):
        return list(space.grid)
    lo, hi = space.range
    return [int(lo), int(hi)] if space.integer else [lo, hi]


def with_values(spec: Any, values: dict[Knob, Any]) -> Any:
    """A copy of ``spec`` whose searched knobs hold ``values`` (the first candidate where none is given);
    ``spec`` itself when it has none."""
    knobs = knobs_of(spec)
    if not knobs:
        return spec
    raw = copy.deepcopy(spec.model_dump())
    for knob in knobs:
        layer = raw["baseline"] if knob.layer is None else raw["steps"][knob.layer]["techniques"]
        layer[knob.technique][knob.name] = values[knob] if knob in values else candidates(knob.space)[0]
    return type(spec)(**raw)


