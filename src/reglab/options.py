"""Validated keyword options for registered callables (dataset loaders, model builders).

Each registered function declares its options as keyword-only parameters with type hints and
defaults; :func:`call` validates a user's dict against that signature with pydantic and turns any
problem into a one-line :class:`~reglab.errors.ReglabError` naming the option.
"""
from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import pydantic

from .errors import ReglabError


def format_validation_error(err: pydantic.ValidationError, prefix: str, sep: str = ".") -> str:
    """First problem of a pydantic error as ``prefix.field: message (got value)`` (``sep`` joins the
    prefix and the field: ``"."`` for an object, ``": "`` for a file), or ``prefix: field 'name' is
    required`` for a missing field."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"] if p not in ("kwargs",))
    more = f" [+{len(err.errors()) - 1} more]" if len(err.errors()) > 1 else ""
    if e["type"] == "missing" and loc:
        return f"{prefix}: field '{loc}' is required{more}"
    where = f"{prefix}{sep}{loc}" if loc else prefix
    msg = str(e["ctx"]["error"]) if e["type"] == "value_error" and "error" in e.get("ctx", {}) else e["msg"]
    got = e.get("input")
    got = "" if isinstance(got, (dict, list)) or got is None else f" (got {_short_repr(got)})"
    hint = ""
    if e["type"] in ("list_type", "tuple_type", "set_type") and isinstance(e.get("input"), str) and "," in e["input"]:
        name = str([p for p in e["loc"] if isinstance(p, str) and p != "kwargs"][-1:] or ["value"])
        name = name.strip("[]'")
        hint = f"; a list is written in brackets: {name}=[{e['input']}]"
    return f"{where}: {msg}{got}{more}{hint}"


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def bounds(metadata: Any) -> str:
    """``>= 1``, ``in [0, 1)``, ... from pydantic / annotated-types constraints (``Field(ge=1)``)."""
    found: dict[str, Any] = {}
    for meta in metadata:
        for inner in [meta, *getattr(meta, "metadata", [])]:
            for attr in ("ge", "gt", "le", "lt"):
                if (v := getattr(inner, attr, None)) is not None:
                    found[attr] = v
    low = next(((a, found[a]) for a in ("ge", "gt") if a in found), None)
    high = next(((a, found[a]) for a in ("le", "lt") if a in found), None)
    if low and high:
        return f"in {'[' if low[0] == 'ge' else '('}{low[1]}, {high[1]}{']' if high[0] == 'le' else ')'}"
    symbol = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " ".join(f"{symbol[b[0]]} {b[1]}" for b in (low, high) if b)


def type_label(ann: Any, metadata: Any = ()) -> str:
    """A type as a person reads it: ``int >= 1``, ``list[int >= 1]``, ``float in [0, 1)``,
    ``none|batch|layer`` for a Literal, ``str | None``."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return type_label(args[0], [*args[1:], *metadata])
    if origin is typing.Literal:
        text = "|".join(map(str, args))
    elif origin in (typing.Union, types.UnionType):  # bounds belong to the non-None members
        return " | ".join(type_label(a, () if a is type(None) else metadata) for a in args)
    elif origin is not None:
        text = f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_label(a) for a in args)}]"
    else:
        text = "None" if ann is type(None) else getattr(ann, "__name__", str(ann)).replace("typing.", "")
    limit = bounds(metadata)
    return f"{text} {limit}" if limit else text


def option_table(fn: Callable[..., Any]) -> list[tuple[str, str, Any]]:
    """(name, human type (:func:`type_label`), default) of the keyword-only options of ``fn``."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except (NameError, TypeError):  # an annotation that does not resolve: show it as written
        hints = {}
    rows = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.KEYWORD_ONLY:
            ann = hints.get(p.name, p.annotation)
            label = ann if isinstance(ann, str) else type_label(ann)
            rows.append((p.name, label, None if p.default is p.empty else p.default))
    return rows


def call(fn: Callable[..., Any], what: str, /, *args: Any, **options: Any) -> Any:
    """Call ``fn(*args, **options)`` after checking ``options`` against its keyword-only options."""
    allowed = {name for name, _, _ in option_table(fn)}
    for key in options:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            listed = ", ".join(sorted(allowed)) or "none"
            raise ReglabError(f"{what}: unknown option '{key}' (allowed: {listed}{hint})")
    validated = pydantic.validate_call(fn, config={"arbitrary_types_allowed": True})
    try:
        return validated(*args, **options)
    except pydantic.ValidationError as err:
        raise ReglabError(format_validation_error(err, what)) from None


@contextmanager
def registered_while(registry: MutableMapping[str, Any], name: str, entry: Any) -> Iterator[str]:
    """``registry[name] = entry`` while the block runs (yields ``name``); afterwards the previous entry
    is back, or the name is gone if it had none (a user's model or data registered for one call)."""
    previous = registry.get(name)
    registry[name] = entry
    try:
        yield name
    finally:
        if previous is None:
            registry.pop(name, None)
        else:
            registry[name] = previous
