"""Validated keyword options for registered callables (dataset loaders, model builders).

Each registered function declares its options as keyword-only parameters with type hints and
defaults; :func:`call` validates a user's dict against that signature with pydantic and turns any
problem into a one-line :class:`~reglab.errors.ReglabError` naming the option.
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
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
    return f"{where}: {msg}{got}{more}"


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def option_table(fn: Callable[..., Any]) -> list[tuple[str, str, Any]]:
    """(name, type, default) of the keyword-only options of ``fn``."""
    rows = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.KEYWORD_ONLY:
            ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", str(p.annotation))
            ann = ann.replace("typing.", "")
            rows.append((p.name, str(ann), None if p.default is p.empty else p.default))
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
