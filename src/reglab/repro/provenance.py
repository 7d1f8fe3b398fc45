"""What produced a reproduction's numbers, taken from the run itself (never typed by hand), and its
machine-readable headline summary.

- :func:`provenance` collects the date (UTC), the CPU model and its flags that matter for speed
  (avx2, avx512_bf16, amx) from ``/proc/cpuinfo``, the core count, the GPU if one is used, the torch
  version and thread count, the load average, and the wall and CPU time since the reproduction began
  (``Clock``). :func:`provenance_line` renders it as the first lines of a RESULTS.md.
- :func:`headline` is one entry of ``summary.json``: per figure, ours (mean, standard error, seeds),
  the published anchor, the band used to judge agreement and whether ours lies inside it.
  :func:`write_summary` writes the file next to RESULTS.md.
"""
from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..config import dumps

FLAGS = ("avx2", "avx512_bf16", "amx_bf16", "amx_tile")


class Clock:
    """Wall and CPU time since construction (one per reproduction run)."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        self.started = datetime.now(timezone.utc)

    @property
    def wall(self) -> float:
        return time.perf_counter() - self.wall0

    @property
    def cpu(self) -> float:
        return time.process_time() - self.cpu0


def cpu_info(path: str | Path = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """(CPU model name, which of :data:`FLAGS` it has) from ``/proc/cpuinfo`` (platform's name elsewhere)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    model, flags = platform.machine(), set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == platform.machine():
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, [f for f in FLAGS if f in flags]


def provenance(clock: Clock, command: str) -> dict[str, Any]:
    """The run's provenance: date, machine, torch, threads, load, wall/CPU seconds and the command."""
    model, flags = cpu_info()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "date": clock.started.strftime("%Y-%m-%d"), "started_utc": clock.started.strftime("%Y-%m-%d %H:%M"),
        "cpu": model, "cpu_flags": flags, "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in load], "wall_seconds": round(clock.wall, 1),
        "cpu_seconds": round(clock.cpu, 1), "command": command,
    }


def provenance_line(p: dict[str, Any]) -> str:
    """Markdown lines: date, machine (CPU model, flags, cores, GPU), torch, threads, load, times, command."""
    flags = ", ".join(p["cpu_flags"]) or "none of avx2/avx512_bf16/amx"
    gpu = p["gpu"] or "no GPU"
    return (f"Date: {p['date']} (started {p['started_utc']} UTC). Machine: {p['cpu']} ({flags}), {p['cores']} cores, {gpu}; "
            f"torch {p['torch']}, {p['threads']} thread(s); load average at the end {p['load_average'][0]:g} "
            f"(other jobs share this CPU when it exceeds the cores).\n"
            f"Time: {p['wall_seconds'] / 60:.1f} min wall clock, {p['cpu_seconds'] / 60:.1f} min CPU.\n"
            f"Command: `{p['command']}`")


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (SD / sqrt(n); NaN for one value)."""
    v = [float(x) for x in values]
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v))


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
