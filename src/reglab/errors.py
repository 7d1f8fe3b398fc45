"""User-facing errors.

A :class:`ReglabError` is bad input from the user (an unknown name, a wrong type, a missing file or
column). The CLI prints its message as one line and exits with code 2; it never shows a traceback.
"""
from __future__ import annotations

from collections.abc import Iterable


class ReglabError(ValueError):
    """Bad input: the message names the field and what is allowed."""


def unknown(what: str, name: str, allowed: Iterable[str]) -> ReglabError:
    """``unknown dataset 'mnsit' (allowed: cifar10, digits, ...; did you mean 'mnist'?)``."""
    import difflib

    allowed = sorted(allowed)
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ReglabError(f"unknown {what} '{name}' (allowed: {', '.join(allowed)}{hint})")
