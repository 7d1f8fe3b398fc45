"""Study files: a baseline, an ordered list of steps, a mode, seeds and the deciding metric.

A study file (TOML or YAML) reads like this::

    name = "quickstart"
    description = "MNIST-1D MLP: from plain SGD to a regularized model"
    mode = "incremental"          # incremental | isolated | leave-one-out | orders
    seeds = 3                     # a count (seeds 0..n-1), an explicit list, or adaptive:
    # seeds = { min = 3, max = 11, step = 2, target = 0.01 }   (see AdaptiveSeeds)
    min_effect = 0.01             # optional: the difference a power hint is computed for
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
from .statistics import planned_looks
from .search import Knob, candidates, is_space, knobs_of, parse_space, with_values

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


class AdaptiveSeeds(BaseModel):
    """Seeds added in batches where comparisons are still undecided: the study trains ``min`` seeds,
    then looks; while a comparison is undecided (not helped/hurt after correction, not precise
    enough) and fewer than ``max`` seeds are trained, ``step`` more seeds go to the configurations
    of the undecided comparisons. The looks (``min``, ``min + step``, ..., ``max``) are fixed in
    advance and the p-values corrected for them (Bonferroni over looks, then Holm), so stopping early
    does not inflate false positives. ``target``: stop adding seeds to a comparison once its 95% t
    interval's half-width is at most this (report-metric units, e.g. 0.01 = 1 accuracy point)."""

    model_config = ConfigDict(extra="forbid")

    min: int = Field(3, ge=2, description="seeds trained first")
    max: int = Field(11, ge=2, description="most seeds a configuration gets")
    step: int = Field(2, ge=1, description="seeds added per look")
    target: float | None = Field(None, gt=0, description="stop when the CI half-width is at most this")
    first: int = Field(0, ge=0, description="the seeds are first, first + 1, ...")

    @model_validator(mode="after")
    def _order(self) -> AdaptiveSeeds:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=NAME_MAX, description="study name (folder name)")
    description: str = ""
    mode: Mode = "incremental"
    seeds: int | list[int] | AdaptiveSeeds = Field(3, description="number of seeds (0..n-1), the list of seeds, or adaptive {min, max, step, target}")
    min_effect: float | None = Field(None, gt=0, description="difference (report-metric units) for the power hint")
    tune_seeds: int | list[int] = Field(2, description="seeds of the tuning trials of searched knobs: a count (10000, 10001, ...) or a list, none of them a study seed")
    metric: str | None = Field(None, description="validation metric selecting each run's best epoch")
    report_metric: str | None = Field(None, description="metric compared in the report (default: test_ twin of metric)")
    orders: int = Field(3, ge=1, description="number of random step orders (mode = orders)")
    orders_seed: int = Field(0, description="seed of the random step orders")
    base: dict[str, Any] = Field(default_factory=dict, description="RunConfig fields shared by all runs")
    baseline: list[dict[str, Any]] = Field(default_factory=list, description="techniques of the baseline")
    steps: list[Step] = Field(min_length=1)

    @field_validator("seeds", mode="before")
    @classmethod
    def _adaptive(cls, v: Any) -> Any:
        if isinstance(v, dict):  # validate the table as AdaptiveSeeds, with its own error messages
            try:
                return AdaptiveSeeds(**v)
            except pydantic.ValidationError as err:
                e = err.errors()[0]
                where = ".".join(str(x) for x in e["loc"])
                raise ValueError(f"{where + ': ' if where else ''}{e['msg']}") from None
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int] | AdaptiveSeeds) -> int | list[int] | AdaptiveSeeds:
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
        """Every seed the study may train (adaptive: up to ``max``)."""
        if isinstance(self.seeds, AdaptiveSeeds):
            return list(range(self.seeds.first, self.seeds.first + self.seeds.max))
        return list(range(self.seeds)) if isinstance(self.seeds, int) else sorted(self.seeds)

    @property
    def tune_seed_list(self) -> list[int]:
        """The seeds tuning trials train on (disjoint from :attr:`seed_list`)."""
        return list(range(10_000, 10_000 + self.tune_seeds)) if isinstance(self.tune_seeds, int) else sorted(self.tune_seeds)

    @property
    def adaptive(self) -> bool:
        return isinstance(self.seeds, AdaptiveSeeds)

    @property
    def looks(self) -> tuple[int, ...]:
        """The planned seed counts at which comparisons are tested (one look for fixed seeds)."""
        if isinstance(self.seeds, AdaptiveSeeds):
            return planned_looks(self.seeds.min, self.seeds.step, self.seeds.max)
        return (max(2, len(self.seed_list)),)

    @property
    def target_halfwidth(self) -> float | None:
        return self.seeds.target if isinstance(self.seeds, AdaptiveSeeds) else None

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
    searched_knobs = knobs_of_raw(spec, where)
    if searched_knobs and not spec.metric:
        raise ReglabError(f"{where}: a study with searched knobs names the validation metric that chooses them (metric = ...)")
    if searched_knobs and set(spec.tune_seed_list) & set(spec.seed_list):
        raise ReglabError(f"{where}: tune_seeds must not include the study's seeds (tuning seeds select, study seeds measure)")
    for knob in searched_knobs:
        layer = spec.baseline if knob.layer is None else spec.steps[knob.layer].techniques
        table = {k: (candidates(parse_space(v))[0] if is_space(v) else v) for k, v in layer[knob.technique].items()}
        for value in candidates(knob.space):
            try:
                resolve_techniques([{**table, knob.name: value}], default_optimizer=False)
            except ReglabError as err:
                raise ReglabError(f"{where}: {knob.id} = {value!r}: {err}") from None
    searched, spec = spec, with_values(spec, {})  # the rest is checked with the first candidates
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
        try:
            resolve_techniques(step.techniques, default_optimizer=False)
        except ReglabError as err:
            raise ReglabError(f"{where}: steps[{i}] ({step.name}).techniques: {err}") from None
        spec.run_config(spec.baseline, step.set, f"{where}: steps[{i}] ({step.name}).set")
    return searched


def knobs_of_raw(spec: StudySpec, where: str) -> list[Knob]:
    """The searched knobs, with a one-line error naming a malformed space."""
    layers = [("baseline", spec.baseline)] + [(f"steps[{i}]", s.techniques) for i, s in enumerate(spec.steps)]
    for name, techniques in layers:
        for t, table in enumerate(techniques):
            for knob, value in table.items():
                if is_space(value):
                    try:
                        parse_space(value)
                    except pydantic.ValidationError as err:
                        raise ReglabError(format_validation_error(err, f"{where}: {name}.techniques[{t}].{knob}")) from None
    return knobs_of(spec)


def load_spec(path: str | Path) -> StudySpec:
    path = Path(path)
    return parse_spec(load_file(path), str(path))
