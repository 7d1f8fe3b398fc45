"""What a figure was measured on: the CPU model and the flags that decide its speed (AVX2, AVX-512,
native bf16: AVX512-BF16 or AMX), the cores, torch's version and thread count, the GPU if any, and
the date. Every committed result states it (a speed figure means little without it: the same
benchmark ran 2.3x slower on an AVX2 EPYC than on a Zen 4 with native bf16).

Threads. Float results depend on the number of torch threads (a matrix product's sums are split
across them), so a study's default (:func:`default_threads`) follows the machine setup, never its
load: torch's setting, at most the CPUs this process may use (its affinity mask and the container's
CPU quota; torch counts the host's cores).

Waiting. On a CPU shared with other processes what costs is not the thread count but OpenMP's
waiting: an idle OpenMP thread busy-waits at every barrier before it sleeps, taking the core a busy
sibling needs. Measured on this project's 2-core AVX2 EPYC (torch 2.14.1, 2 threads, 100 SGD steps of
a 3072-512-512-10 MLP, batch 128, median of 5): alone, 1.28-1.39 s with the default policy vs
1.56-1.83 s with ``OMP_WAIT_POLICY=PASSIVE``; beside one busy process, 5.15 s vs 2.68 s. So ``import
reglab`` sets ``OMP_WAIT_POLICY=PASSIVE`` only when the 1-minute load average is already at least the
CPUs this process may use, and only when the variable is unset; it takes effect when reglab is
imported before torch (the ``reglab`` command always is) and changes no number."""
from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

#: the CPU flags reported (speed-relevant: vector width and native bf16)
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu() -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`FLAGS` it has (from ``/proc/cpuinfo`` on Linux)."""
    model, flags = "", []
    try:
        for entry in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = entry.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags":
                flags = [f for f in FLAGS if f in set(value.split())]
                break
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by the container's CPU quota (cgroup v2
    ``cpu.max`` or v1 ``cpu.cfs_quota_us``)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = None
    try:
        v2 = Path("/sys/fs/cgroup/cpu.max")
        if v2.is_file():
            limit, period = v2.read_text().split()[:2]
            quota = None if limit == "max" else int(limit) / int(period)
        elif Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").is_file():
            limit = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            quota = None if limit <= 0 else limit / int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        quota = None
    return max(1, min(cpus, int(quota))) if quota is not None else cpus


def default_threads() -> int:
    """The torch threads of a run when none are asked for: torch's setting, at most :func:`available_cpus`."""
    return max(1, min(torch.get_num_threads(), available_cpus()))


def describe() -> dict[str, Any]:
    """The machine as data (JSON-safe)."""
    model, flags = cpu()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": model, "cpu_flags": flags, "cpus": available_cpus(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "gpu": gpu, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def line(info: dict[str, Any] | None = None) -> str:
    """One sentence: ``AMD EPYC (avx2), 2 CPUs, no GPU, torch 2.14.1, 2 threads, 2026-12-01 22:10 UTC``."""
    info = info or describe()
    flags = ", ".join(info["cpu_flags"]) or "no AVX2/AVX-512 flags"
    gpu = f"GPU {info['gpu']}" if info.get("gpu") else "no GPU"
    return (f"{info['cpu']} ({flags}), {info['cpus']} CPUs, {gpu}, torch {info['torch']}, {info['threads']} "
            f"torch thread(s), {info['date']}")
