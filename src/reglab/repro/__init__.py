"""Reproductions that are programs rather than ablation tables (figures, sweeps, diagnostics),
run by ``reglab repro NAME [--quick]``.

Each module here defines ``NAME`` (the command's argument), ``SUMMARY`` (one line), and
``run(out: Path, *, quick: bool = False, progress: bool = True) -> Path``, which writes its plots and
a ``RESULTS.md`` (our figures beside the published ones, with configuration and machine) into
``out`` and returns the path of ``RESULTS.md``. Every module in this package is imported on first
use of :data:`REPROS`.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def _discover() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            found[module.NAME] = module
    return found


REPROS: dict[str, ModuleType] = _discover()
