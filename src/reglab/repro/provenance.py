"""What produced a reproduction's numbers, taken from the run itself (never typed by hand), and its
machine-readable headline summary.

- :func:`provenance` is the machine (:func:`reglab.engine.machine.describe`: date, CPU model and its
  speed flags, CPUs, GPU, torch and its threads) plus the load average at the end, the wall and CPU
  time since the reproduction began (:class:`Clock`) and the command. :func:`provenance_line` renders
  it as the first lines of a RESULTS.md.
- :func:`headline` is one entry of ``summary.json``: per figure, ours (mean, standard error, seeds),
  the published anchor, the band used to judge agreement and whether ours lies inside it.
  :func:`write_summary` writes the file next to RESULTS.md.
- :func:`full_run_time` is how long a reproduction's full run took, read from what that run wrote
  into its committed folder ``results/<name>/`` (``reglab repro --list`` shows it); None where no
  full run's time was recorded.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import dumps
from ..engine import machine
from ..study.statistics import mean_se


class Clock:
    """Wall and CPU time since construction (one per reproduction run)."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    @property
    def wall(self) -> float:
        return time.perf_counter() - self.wall0

    @property
    def cpu(self) -> float:
        return time.process_time() - self.cpu0


def provenance(clock: Clock, command: str) -> dict[str, Any]:
    """The run's provenance: the machine, the load average now, wall/CPU seconds and the command."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {**machine.describe(), "load_average": [round(v, 2) for v in load], "wall_seconds": round(clock.wall, 1),
            "cpu_seconds": round(clock.cpu, 1), "command": command}


def provenance_line(p: dict[str, Any]) -> str:
    """Markdown lines: machine, load, wall/CPU time, command."""
    return (f"Machine: {machine.line(p)}; load average at the end {p['load_average'][0]:g} (other jobs shared "
            f"this CPU when it exceeds the CPUs).\n"
            f"Time: {p['wall_seconds'] / 60:.1f} min wall clock, {p['cpu_seconds'] / 60:.1f} min CPU.\n"
            f"Command: `{p['command']}`")


def recorded(saved: dict[str, Any]) -> str:
    """:func:`provenance_line` of a saved run's ``provenance``, or a line saying it was not recorded
    (results written before reglab recorded provenance)."""
    if isinstance(saved.get("provenance"), dict):
        return provenance_line(saved["provenance"])
    return "Machine, date and command: not recorded by this run (it predates reglab's provenance records)."


def headline(figure: str, values: Sequence[float], *, published: float | None = None, band: Sequence[float] | None = None,
             band_rule: str = "", unit: str = "") -> dict[str, Any]:
    """One headline of ``summary.json``: ours (mean, SE, seeds), the published anchor, the band that
    counts as agreement (``[low, high]``, how it was chosen) and whether our mean lies inside it."""
    m, se = mean_se(values)
    inside = None if band is None else bool(band[0] <= m <= band[1])
    return {"figure": figure, "unit": unit, "ours": {"mean": m, "se": se, "seeds": len(values), "values": list(values)},
            "published": published, "band": None if band is None else [float(band[0]), float(band[1])],
            "band_rule": band_rule, "inside": inside}


def write_summary(out: Path, name: str, prov: dict[str, Any], headlines: list[dict[str, Any]], quick: bool) -> Path:
    """``summary.json`` next to RESULTS.md: the reproduction, its budget, provenance and headlines."""
    path = Path(out) / "summary.json"
    path.write_text(dumps({"reproduction": name, "budget": "quick" if quick else "full", "provenance": prov,
                           "headlines": headlines}, indent=1))
    return path


RESULTS_ROOT = Path(__file__).resolve().parents[3] / "results"
"""The committed reproductions' folders (``results/<name>/`` at the repository root)."""


def full_run_time(name: str, module: Any = None, root: Path | None = None) -> tuple[float, str] | None:
    """Seconds of the committed full run of reproduction ``name`` and what they are (wall clock, from
    which file), or None when ``results/<name>/`` records no full run's time.

    A module may read its own folder (``full_run_time(folder) -> (seconds, source) | None``); the
    default, :func:`recorded_full_run`, reads the formats the reproductions write."""
    folder = (RESULTS_ROOT if root is None else Path(root)) / name
    if not folder.is_dir():
        return None
    reader = getattr(module, "full_run_time", None) or recorded_full_run
    try:
        found = reader(folder)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # an unreadable or older file: not measured
        return None
    if found is None or not (isinstance(found[0], (int, float)) and math.isfinite(found[0]) and found[0] > 0):
        return None
    return float(found[0]), found[1]


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def recorded_full_run(folder: Path) -> tuple[float, str] | None:
    """The full run's wall seconds from ``summary.json`` (``budget: full``, ``provenance.wall_seconds``)
    or ``results.json`` (``timing: {wall, quick: false}``, or ``seconds`` -- a number or
    ``{total}`` -- beside ``config.quick: false``); None when neither records a full run's time."""
    summary = _json(folder / "summary.json")
    if isinstance(summary, dict) and summary.get("budget") == "full":
        return summary["provenance"]["wall_seconds"], f"wall clock, from results/{folder.name}/summary.json"
    results = _json(folder / "results.json")
    if not isinstance(results, dict):
        return None
    timing = results.get("timing")
    if isinstance(timing, dict) and timing.get("quick") is False:
        return timing["wall"], f"wall clock, from results/{folder.name}/results.json"
    config = results.get("config")
    if isinstance(config, dict) and config.get("quick") is False and "seconds" in results:
        seconds = results["seconds"]
        return (seconds["total"] if isinstance(seconds, dict) else seconds), f"wall clock, from results/{folder.name}/results.json"
    return None
