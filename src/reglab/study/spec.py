"""Study files: a baseline, an ordered list of steps, a mode, seeds and the deciding metric.

A study file (TOML or YAML) reads like this::

    name = "quickstart"
    description = "MNIST-1D MLP: from plain SGD to a regularized model"
    mode = "incremental"          # incremental | isolated | leave-one-out | orders
    seeds = 3                     # a count (seeds 0..n-1) or an explicit list
    metric = "val_accuracy"       # validation metric that selects each run's best epoch
    report_metric = "test_accuracy"  # metric compared across configurations in the report

    [base]                        # any RunConfig field except techniques/seed
    dataset = "mnist1d"
    model = "mlp"
    epochs = 30

    baseline = [{ name = "sgd", lr = 0.05 }]

    [[steps]]
    name = "Adam"
    techniques = [{ name = "adam", lr = 1e-3 }]
    [[steps]]
    name = "longer training"
    set = { epochs = 60 }         # RunConfig overrides instead of (or besides) techniques

Everything is validated up front; an error names the field (``steps[2].techniques[0].p: ...``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import RunConfig, load_file, parse_config
from ..techniques import resolve_techniques
from ..errors import ReglabError
from ..options import format_validation_error

Mode = Literal["incremental", "isolated", "leave-one-out", "orders"]
_NOT_IN_BASE = ("techniques", "seed")
#: longest study name: the name is a folder name, and file systems allow 255 bytes per name (POSIX NAME_MAX)
NAME_MAX = 255
#: the splits a recorded metric is named after (``val_accuracy``, ``test_rmse``; :mod:`reglab.metrics`)
SPLITS = ("train", "val", "test")


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="label of the step in the report")
    techniques: list[dict[str, Any]] = Field(default_factory=list, description="techniques the step adds")
    set: dict[str, Any] = Field(default_factory=dict, description="RunConfig fields the step overrides")

    @model_validator(mode="after")
    def _not_empty(self) -> Step:
        if not self.techniques and not self.set:
            raise ValueError(f"step '{self.name}' adds no technique and sets nothing")
        return self


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=NAME_MAX, description="study name (folder name)")
    description: str = ""
    mode: Mode = "incremental"
    seeds: int | list[int] = Field(3, description="number of seeds (0..n-1) or the list of seeds")
    metric: str | None = Field(None, description="validation metric selecting each run's best epoch")
    report_metric: str | None = Field(None, description="metric compared in the report (default: test_ twin of metric)")
    orders: int = Field(3, ge=1, description="number of random step orders (mode = orders)")
    orders_seed: int = Field(0, description="seed of the random step orders")
    base: dict[str, Any] = Field(default_factory=dict, description="RunConfig fields shared by all runs")
    baseline: list[dict[str, Any]] = Field(default_factory=list, description="techniques of the baseline")
    steps: list[Step] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be >= 1")
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("must be a non-empty list of distinct seeds")
        return v

    @field_validator("metric", "report_metric")
    @classmethod
    def _metric_name(cls, v: str | None) -> str | None:
        split, _, metric = (v or "").partition("_")
        if v is not None and (split not in SPLITS or not metric):
            raise ValueError(f"must name a split and a metric, like val_accuracy or test_rmse (split: {', '.join(SPLITS)})")
        return v

    @field_validator("steps")
    @classmethod
    def _unique_steps(cls, v: list[Step]) -> list[Step]:
        names = [step.name for step in v]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"step names must be distinct (repeated: {', '.join(repr(n) for n in repeated)})")
        return v

    @field_validator("base")
    @classmethod
    def _base(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in _NOT_IN_BASE:
            if key in v:
                raise ValueError(f"'{key}' cannot be set in base (use baseline / seeds)")
        return v

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def run_config(self, techniques: list[dict[str, Any]], overrides: dict[str, Any], where: str | None = None) -> RunConfig:
        """The RunConfig of one configuration (validated, its techniques included); errors start
        with ``where`` (default: ``study NAME``)."""
        raw = {**self.base, **overrides, "techniques": techniques}
        if self.metric and "metric" not in raw:
            raw["metric"] = self.metric
        config = parse_config(raw, where or f"study {self.name}")
        resolve_techniques(config.techniques)
        return config


def parse_spec(raw: dict[str, Any], where: str = "study") -> StudySpec:
    """Validate a study dict, including every technique and config field of every step."""
    try:
        spec = StudySpec(**raw)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        if first["type"] == "extra_forbidden":
            field = ".".join(map(str, first["loc"]))
            raise ReglabError(f"{where}: unknown field '{field}'") from None
        raise ReglabError(format_validation_error(err, where, sep=": ")) from None
    try:
        resolve_techniques(spec.baseline)
    except ReglabError as err:
        raise ReglabError(f"{where}: baseline: {err}") from None
    spec.run_config(spec.baseline, {}, f"{where}: base")  # base + baseline
    for i, step in enumerate(spec.steps):
        for j, t in enumerate(step.techniques):
            try:
                resolve_techniques([t], default_optimizer=False)
            except ReglabError as err:
                raise ReglabError(f"{where}: steps[{i}] ({step.name}).techniques[{j}]: {err}") from None
        spec.run_config(spec.baseline, step.set, f"{where}: steps[{i}] ({step.name}).set")
    return spec


def load_spec(path: str | Path) -> StudySpec:
    path = Path(path)
    return parse_spec(load_file(path), str(path))
