"""What a figure was measured on: the CPU model and the flags that decide its speed (AVX2, AVX-512,
native bf16: AVX512-BF16 or AMX), the cores, torch's version and thread count, the GPU if any, and
the date. Every committed result states it (a speed figure means little without it: the same
benchmark ran 2.3x slower on an AVX2 EPYC than on a Zen 4 with native bf16)."""
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


def describe() -> dict[str, Any]:
    """The machine as data (JSON-safe)."""
    model, flags = cpu()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": model, "cpu_flags": flags, "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(), "gpu": gpu,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def line(info: dict[str, Any] | None = None) -> str:
    """One sentence: ``AMD EPYC (avx2), 2 CPUs, no GPU, torch 2.14.1, 2 threads, 2026-12-01 22:10 UTC``."""
    info = info or describe()
    flags = ", ".join(info["cpu_flags"]) or "no AVX2/AVX-512 flags"
    gpu = f"GPU {info['gpu']}" if info.get("gpu") else "no GPU"
    return (f"{info['cpu']} ({flags}), {info['cpus']} CPUs, {gpu}, torch {info['torch']}, {info['threads']} "
            f"torch thread(s), {info['date']}")
