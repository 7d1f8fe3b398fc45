"""Built-in studies: the TOML files beside this module, runnable by name (``reglab study quickstart``).
A study file's ``description`` first sentence is its summary."""
from __future__ import annotations

from pathlib import Path

from ...config import load_file
from ...errors import ReglabError, unknown

FOLDER = Path(__file__).resolve().parent


def _summary(path: Path) -> str:
    text = str(load_file(path).get("description", ""))
    return text.split(". ")[0].strip().rstrip(".")


BUILTIN: dict[str, tuple[Path, str]] = {p.stem: (p, _summary(p)) for p in sorted(FOLDER.glob("*.toml"))}


def resolve(name_or_path: str) -> Path:
    """A study file: an existing path, or the name of a built-in study."""
    path = Path(name_or_path)
    if path.suffix in (".toml", ".yaml", ".yml", ".json") or path.exists():
        if not path.exists():
            raise ReglabError(f"study file not found: {path}")
        return path
    if name_or_path not in BUILTIN:
        raise unknown("study", name_or_path, BUILTIN)
    return BUILTIN[name_or_path][0]
