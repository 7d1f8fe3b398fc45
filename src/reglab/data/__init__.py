"""Dataset registry: ``load("mnist1d")``, ``load("csv:path.csv", target="price")``.

Every loader returns a :class:`~reglab.data.base.Data` with train/validation/test tensors. The
validation split is carved from train with ``split_seed`` (fixed, independent of the run seed) unless
the dataset ships its own; the test split is never used for selection.

Offline copies are found under ``$REGLAB_DATA`` (e.g. ``../shared/datasets``); decoded images and
generated data are cached under ``$REGLAB_CACHE`` (default ``~/.cache/reglab``).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import options as _options
from ..errors import ReglabError, unknown
from .base import Data, Split, Task, carve_validation, channel_stats, subset

__all__ = ["Data", "Split", "Task", "load", "DATASETS", "register", "data_root", "cache_dir",
           "carve_validation", "channel_stats", "subset"]


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    loader: Callable[..., Data]
    summary: str
    takes_path: bool = False
    argument: str = "PATH"  # what follows ``name:`` (a path, or another dataset's NAME)


DATASETS: dict[str, DatasetEntry] = {}


def register(name: str, summary: str, takes_path: bool = False, argument: str = "PATH") -> Callable:
    """Register ``loader(path_or_None, *, val_fraction, split_seed, **options) -> Data``."""

    def deco(fn: Callable[..., Data]) -> Callable[..., Data]:
        DATASETS[name] = DatasetEntry(name, fn, summary, takes_path, argument)
        return fn

    return deco


def data_root() -> Path | None:
    """Folder of offline dataset copies (``$REGLAB_DATA``), or None when unset."""
    root = os.environ.get("REGLAB_DATA")
    return Path(root).expanduser() if root else None


def cache_dir(*parts: str) -> Path:
    """A folder under ``$REGLAB_CACHE`` (default ``~/.cache/reglab``), created on demand."""
    base = Path(os.environ.get("REGLAB_CACHE", Path.home() / ".cache" / "reglab")).expanduser()
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def load(spec: str, *, val_fraction: float = 0.1, split_seed: int = 0, **options: Any) -> Data:
    """Load a dataset by registry name, or ``name:PATH`` for path-taking loaders."""
    _import_loaders()
    name, _, path = spec.partition(":")
    entry = DATASETS.get(name)
    if entry is None:
        raise unknown("dataset", name, DATASETS)
    if entry.takes_path and not path:
        raise ReglabError(f"dataset '{name}' needs a {'path' if entry.argument == 'PATH' else 'dataset name'}: "
                          f"'{name}:{entry.argument}'")
    if path and not entry.takes_path:
        raise ReglabError(f"dataset '{name}' takes no path (got '{spec}')")
    return _options.call(
        entry.loader, f"dataset {name}", path or None, val_fraction=val_fraction, split_seed=split_seed, **options
    )


def _import_loaders() -> None:
    """Import every module of this package once, so that their ``@register`` calls run."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("base", "text", "corruptions", "synonyms"):  # helpers, not loaders
            importlib.import_module(f"{__name__}.{info.name}")
