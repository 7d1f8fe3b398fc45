"""Technique registry: every module in this package defines one :class:`Technique` subclass
(``augment.py`` holds helpers shared by the image augmentations).

``make("dropout", p=0.2)`` builds one with validated knobs; ``TECHNIQUES`` maps names to classes;
:func:`resolve_techniques` turns a configuration's list of ``{"name": ..., knob: value}`` tables into
technique objects and applies the composition rule: an exclusive kind (the optimizer, the main LR
schedule) holds one technique, so a later ``adamw`` replaces an earlier ``sgd``; any other technique
given twice keeps its last knobs.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

import pydantic

from torch import nn

from ..config import RunConfig
from ..errors import ReglabError, unknown
from ..models import build_model, model_defaults
from ..options import format_validation_error
from .base import Knobs, Technique, stack_blockers

if TYPE_CHECKING:
    from ..data import Data

#: the optimizer used when a configuration names none
DEFAULT_OPTIMIZER: dict[str, Any] = {"name": "adam", "lr": 1e-3}

__all__ = ["Technique", "Knobs", "TECHNIQUES", "make", "technique_class", "resolve_techniques", "stack_blockers",
           "build_member"]

TECHNIQUES: dict[str, type[Technique]] = {}


def _discover() -> None:
    if TECHNIQUES:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name in ("base", "augment"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Technique) and obj.name and obj.__module__ == module.__name__:
                TECHNIQUES[obj.name] = obj


def technique_class(name: str) -> type[Technique]:
    _discover()
    if name not in TECHNIQUES:
        raise unknown("technique", name, TECHNIQUES)
    return TECHNIQUES[name]


def make(name: str, **knobs: Any) -> Technique:
    """Build technique ``name`` with validated knobs (one-line error on a bad knob)."""
    cls = technique_class(name)
    try:
        return cls(**knobs)
    except pydantic.ValidationError as err:
        msg = format_validation_error(err, f"technique {name}")
        if "Extra inputs are not permitted" in msg:
            bad = err.errors()[0]["loc"][0]
            allowed = ", ".join(cls.Knobs.model_fields) or "none"
            msg = f"technique {name}: unknown knob '{bad}' (allowed: {allowed})"
        raise ReglabError(msg) from None


def resolve_techniques(specs: list[dict[str, Any]], default_optimizer: bool = True) -> list[Technique]:
    """Validated :class:`Technique` objects, one per slot, in order.

    A technique that takes the slot of an earlier one replaces it at the later position.
    """
    slots: dict[str, Technique] = {}
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or "name" not in spec:
            raise ReglabError(f"techniques[{i}]: expected a table with a 'name' (got {spec!r})")
        knobs = {k: v for k, v in spec.items() if k != "name"}
        technique = make(str(spec["name"]), **knobs)
        slots.pop(technique.slot, None)
        slots[technique.slot] = technique
    if default_optimizer and "optimizer" not in slots:
        spec = dict(DEFAULT_OPTIMIZER)
        slots = {"optimizer": make(spec.pop("name"), **spec), **slots}
    return list(slots.values())


def build_member(config: RunConfig, data: Data, techniques: list[Technique]) -> nn.Module:
    """One model of ``config`` for ``data`` (the dataset's suggested options under the configuration's
    own), transformed by every technique's ``apply_model``; initialized from torch's global generator."""
    options = {**model_defaults(config.model, data), **config.model_options}
    model = build_model(config.model, data.input_shape, data.num_outputs, **options)
    for t in techniques:
        model = t.apply_model(model, data)
    return model
