"""User-facing errors and warnings.

A :class:`ReglabError` is a failure the user can act on: bad input (an unknown name, a wrong type, a
missing file or column) or an environment that refuses (a full disk, a read-only folder). The CLI
prints its message as one line and exits with code 2; it never shows a traceback. A
:class:`ReglabWarning` is something the user should know that does not stop the work (a corrupted
checkpoint replaced by an older one, a loss that became NaN); the CLI prints it as one
``warning: ...`` line.
"""
from __future__ import annotations

import difflib
import errno
import warnings
from collections.abc import Iterable
from pathlib import Path


class ReglabError(ValueError):
    """Bad input: the message names the field and what is allowed."""


class ReglabWarning(UserWarning):
    """A one-line notice that does not stop the work."""


def warn(message: str) -> None:
    """Emit ``message`` as a :class:`ReglabWarning` (the CLI prints it as one ``warning:`` line)."""
    warnings.warn(message, ReglabWarning, stacklevel=2)


def unknown(what: str, name: str, allowed: Iterable[str]) -> ReglabError:
    """``unknown dataset 'mnsit' (allowed: cifar10, digits, ...; did you mean 'mnist'?)``."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ReglabError(f"unknown {what} '{name}' (allowed: {', '.join(allowed)}{hint})")


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name when it has none."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


#: what to do about an OS error, by errno
_OS_ADVICE = {
    errno.ENOSPC: "no space left on device (free some space, or write to another disk)",
    errno.EDQUOT: "disk quota exceeded (free some space, or write to another disk)",
    errno.EACCES: "permission denied (fix its permissions, or use another path)",
    errno.EPERM: "operation not permitted (fix its permissions, or use another path)",
    errno.EROFS: "read-only file system (use a writable folder)",
    errno.ENAMETOOLONG: "name too long for the file system (use a shorter name or path)",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EEXIST: "already exists",
}


def _short(path: str, limit: int = 120) -> str:
    return path if len(path) <= limit else f"{path[: limit // 2]}...{path[-limit // 2:]}"


def os_advice(err: OSError) -> str:
    """What an OS error means and what to do about it, by its errno."""
    return _OS_ADVICE.get(err.errno) or err.strerror or first_line(err)


def os_error_message(err: OSError, path: str | Path | None = None) -> str:
    """One line for an OS error: the file it concerns (``path`` when the error names none) and what
    to do (``/data/out/last.pt: no space left on device (free some space, ...)``)."""
    name = err.filename if err.filename is not None else path
    return f"{_short(str(name))}: {os_advice(err)}" if name is not None else os_advice(err)
