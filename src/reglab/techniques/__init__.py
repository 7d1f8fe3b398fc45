"""Technique registry: every module in this package defines one :class:`Technique` subclass
(``augment.py`` holds helpers shared by the image augmentations).

``make("dropout", p=0.2)`` builds one with validated knobs; ``TECHNIQUES`` maps names to classes;
:func:`resolve_techniques` turns a configuration's list of ``{"name": ..., knob: value}`` tables into
technique objects. A configuration holds at most one technique of an exclusive kind (optimizer,
schedule, normalization, stopping), each technique once, and at most one technique that replaces
the training loss: two of them in one list is a one-line error naming both (warmup, a declared
schedule modifier, composes with a schedule). :func:`compose` stacks layers of techniques, as a
study puts its steps on its baseline: a later layer's technique replaces an earlier layer's of the
same exclusive kind (a step ``adamw`` replaces the baseline's ``sgd``) or of the same name (its
knobs win).
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


def _make(spec: Any, where: str) -> Technique:
    if not isinstance(spec, dict) or "name" not in spec:
        raise ReglabError(f"{where}: expected a table with a 'name' (got {spec!r})")
    return make(str(spec["name"]), **{k: v for k, v in spec.items() if k != "name"})


def _replaces_loss(t: Technique) -> bool:
    return type(t).compute_loss is not Technique.compute_loss


def resolve_techniques(specs: list[dict[str, Any]], default_optimizer: bool = True) -> list[Technique]:
    """Validated :class:`Technique` objects in order (the default optimizer first when none is
    given); two techniques of one exclusive kind, one technique twice, or two that replace the loss
    are an error naming both."""
    techniques = [_make(spec, f"techniques[{i}]") for i, spec in enumerate(specs)]
    for i, t in enumerate(techniques):
        for u in techniques[:i]:
            if u.slot == t.slot or (_replaces_loss(u) and _replaces_loss(t)):
                what = (f"both {t.kind}s, and a configuration holds one" if t.slot == t.kind and u.slot == t.slot
                        else "the same technique twice" if u.name == t.name else "both replace the training loss")
                raise ReglabError(f"techniques '{u.name}' and '{t.name}': {what}; keep one of them")
    if default_optimizer and not any(t.kind == "optimizer" for t in techniques):
        spec = dict(DEFAULT_OPTIMIZER)
        techniques.insert(0, make(spec.pop("name"), **spec))
    return techniques


def compose(layers: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The technique tables of ``layers`` stacked in order: each layer is checked on its own, and a
    technique replaces, at its own position, one of an earlier layer with the same slot (exclusive
    kind or name) or, when both replace the training loss, that one."""
    out: list[tuple[Technique, dict[str, Any]]] = []
    for layer in layers:
        resolve_techniques(layer, default_optimizer=False)  # conflicts inside one layer
        for spec in layer:
            t = _make(spec, "technique")
            out = [(u, s) for u, s in out if u.slot != t.slot and not (_replaces_loss(u) and _replaces_loss(t))]
            out.append((t, spec))
    return [s for _, s in out]


def build_member(config: RunConfig, data: Data, techniques: list[Technique]) -> nn.Module:
    """One model of ``config`` for ``data`` (the dataset's suggested options under the configuration's
    own), transformed by every technique's ``apply_model``; initialized from torch's global generator."""
    options = {**model_defaults(config.model, data), **config.model_options}
    model = build_model(config.model, data.input_shape, data.num_outputs, **options)
    for t in techniques:
        model = t.apply_model(model, data)
    return model
