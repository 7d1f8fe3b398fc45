"""Technique registry: every module in this package defines one :class:`Technique` subclass.

``make("dropout", p=0.2)`` builds one with validated knobs; ``TECHNIQUES`` maps names to classes.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pydantic

from ..errors import ReglabError, unknown
from ..options import format_validation_error
from .base import Knobs, Technique

__all__ = ["Technique", "Knobs", "TECHNIQUES", "make", "technique_class"]

TECHNIQUES: dict[str, type[Technique]] = {}


def _discover() -> None:
    if TECHNIQUES:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
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
