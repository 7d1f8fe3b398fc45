"""The output folder of a command: checked before anything is created, and locked while in use.

:func:`check_folder` refuses, before any file exists, an output path that cannot become a folder: an
existing file, a part of the path that is a file, or a name longer than its file system allows
(``os.pathconf(..., "PC_NAME_MAX")``, 255 bytes on most).

:func:`folder_lock` holds an exclusive lock on ``<folder>/.reglab.lock`` (the ``filelock`` package:
``flock(2)`` on POSIX) while a command writes the folder, so that a second ``reglab study`` or
``reglab report`` on the same folder is refused at once with one line naming the holder (process id,
host and start time, written to ``<folder>/.reglab.lock.json`` beside the lock). The operating system
releases an ``flock`` when its process dies, however it dies, so a lock left by a killed process is
never stale: the next command takes it over and says whose it was.
"""
from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

from ..errors import ReglabError, warn

LOCK = ".reglab.lock"
HOLDER = ".reglab.lock.json"


def check_folder(path: Path, flag: str) -> None:
    """Refuse ``path`` as an output folder (given by option ``flag``) when it cannot be one; creates nothing."""
    anchored = path.is_absolute()
    current = Path(path.anchor) if anchored else Path(".")
    limit = _name_max(current)
    for part in path.parts[1:] if anchored else path.parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise ReglabError(f"{flag}: the folder name '{part[:40]}...' is {size} bytes long; the file system "
                              f"allows {limit} (choose a shorter path)")
        current = current / part
        if current.is_dir():
            limit = _name_max(current)
        elif current.exists():
            what = "is a file, not a folder" if current == path else f"{current} is a file, not a folder"
            raise ReglabError(f"{flag} {path}: {what} (choose a folder)")


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` allows (255 where it cannot say)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or the file system does not say
        return 255


def _holder(folder: Path) -> dict[str, object] | None:
    try:
        return json.loads((folder / HOLDER).read_text())
    except (OSError, ValueError):
        return None


def _describe(holder: dict[str, object] | None) -> str:
    if not holder:
        return "holder unknown"
    return f"pid {holder.get('pid')} on {holder.get('host')}, `reglab {holder.get('command')}` started {holder.get('started')}"


@contextmanager
def folder_lock(folder: Path, command: str) -> Iterator[None]:
    """Hold the lock of ``folder`` (created if missing) while the block runs, for ``command``
    (``study``, ``report``); a one-line error naming the holder if another process has it."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(folder / LOCK, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise ReglabError(f"{folder}: in use by another reglab process ({_describe(_holder(folder))}); "
                          "wait for it to finish, or use another folder") from None
    try:
        if (left := _holder(folder)) is not None:
            warn(f"{folder}: taking over from a reglab process that ended without releasing the folder "
                 f"({_describe(left)})")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        (folder / HOLDER).write_text(json.dumps(record))
        yield
    finally:
        (folder / HOLDER).unlink(missing_ok=True)
        lock.release()
