"""Train several seeds of one configuration: all at once when it pays, one by one otherwise.

Training S seeds in one process with stacked parameters (:class:`reglab.engine.stacked.Stacked`) turns
S small matrix products into one batched product. It pays for small models, whose steps are bound by
per-operation overhead, and on GPUs; on a CPU a large model is bound by arithmetic and the batched
product can be slower than S separate ones. :func:`fit_seeds` therefore

1. trains one by one when a technique cannot train stacked seeds (it says why, e.g. ``plateau``: one
   learning rate per optimizer) or the model fails under ``torch.func.vmap``;
2. otherwise times a few real training steps both ways on the actual device and picks the faster
   (grouped only when it is at least ``margin`` faster than S single steps). Steps are timed in
   alternating blocks of wall-clock time (batch gathering included, blocks of several steps when a
   step takes under ~10 ms), medians over blocks. Wall-clock is what a user waits for; process CPU
   time, tried first, misjudged multi-threaded steps (it bills OpenMP threads' spin-waits to whichever
   step is running and so picked one-by-one for 8 MNIST-1D MLPs that train 2x faster stacked). On a
   machine shared with other jobs the timings, and so the choice, are as noisy as the machine.

Either way each seed gets the same initialization, data order and augmentation draws.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig
from ..data import Data, load
from ..errors import first_line
from ..techniques import resolve_techniques, stack_blockers
from .loop import fit
from .run import RunResult, build_run
from .step import default_step


@dataclass
class Decision:
    grouped: bool
    reason: str
    group_step: float | None = None  # seconds per step, S seeds stacked
    single_step: float | None = None  # seconds per step, one seed


def blockers(config: RunConfig) -> list[str]:
    """Why the techniques of ``config`` cannot train stacked seeds (empty when they can)."""
    return stack_blockers(resolve_techniques(config.techniques))


def _clock(device: torch.device) -> float:
    """Wall-clock seconds, after synchronizing CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _stepper(config: RunConfig, seeds: list[int], data: Data) -> Callable[[int, int], float]:
    """A function ``step(i, k)`` that runs training steps ``i .. i+k-1`` of a fresh run of ``seeds``
    (batch gathering included) and returns their seconds."""
    run = build_run(config, seeds, data)
    run.model.train()
    n, batch = len(data.train), config.batch_size
    order = torch.stack([torch.randperm(n, generator=g) for g in run.generators]).to(run.device)

    def step(i: int, k: int = 1) -> float:
        t0 = _clock(run.device)
        for j in range(i, i + k):
            rows = order[:, (j * batch) % max(1, n - batch):][:, :batch]
            x = data.batch(data.train, rows)
            run.batch_rows = rows
            default_step(run, x, data.train.y[rows])
        return _clock(run.device) - t0

    return step


BLOCK_SECONDS = 0.01  # shorter steps are timed in blocks of about this length


def _per_block(step_seconds: float) -> int:
    """Steps per timed block for a step of ``step_seconds`` (1 to 50)."""
    return max(1, min(50, math.ceil(BLOCK_SECONDS / max(step_seconds, 1e-6))))


def decide(config: RunConfig, seeds: list[int], data: Data, steps: int = 7, margin: float = 0.9) -> Decision:
    """Group or not, and why (see the module docstring). The two paths are timed in alternating
    blocks (``steps`` blocks each, after warm-up), so that a machine whose load changes meanwhile
    affects both alike; per-step medians."""
    if len(seeds) == 1:
        return Decision(False, "one seed")
    if reasons := blockers(config):
        return Decision(False, "; ".join(reasons))
    try:
        group_step = _stepper(config, seeds, data)
        group_step(0)
    except Exception as err:  # noqa: BLE001 - any model that vmap cannot run falls back
        return Decision(False, f"the model does not run under torch.func.vmap ({type(err).__name__}: {first_line(err)[:120]})")
    single_step = _stepper(config, seeds[:1], data)
    single_step(0)
    k_group, k_single = _per_block(group_step(1)), _per_block(single_step(1))
    times = []
    for b in range(steps):
        i = 2 + b * max(k_group, k_single)
        times.append((group_step(i, k_group) / k_group, single_step(i, k_single) / k_single))
    group = statistics.median(g for g, _ in times)
    single = statistics.median(s for _, s in times)
    grouped = group <= margin * len(seeds) * single
    ratio = group / (len(seeds) * single)
    reason = f"{len(seeds)} seeds stacked take {ratio:.2f}x the time of {len(seeds)} single steps"
    return Decision(grouped, reason, group, single)


def fit_seeds(
    config: RunConfig,
    seeds: list[int],
    *,
    data: Data | None = None,
    run_dir: str | Path | None = None,
    grouping: str = "auto",
    callbacks: tuple = (),
    progress: bool = False,
    on_result: Callable[[RunResult], None] | None = None,
    on_decision: Callable[[Decision], None] | None = None,
    keep_models: bool = True,
) -> list[RunResult]:
    """Train ``seeds`` of ``config`` (resuming from ``run_dir`` when it holds checkpoints).

    ``grouping``: ``auto`` (decide by :func:`decide`), ``group`` (stack whenever the techniques
    allow it) or ``single`` (one seed at a time). Results are returned in the order of ``seeds``;
    ``on_result`` is called as each seed (or group) finishes.
    """
    if data is None:
        data = load(config.dataset, val_fraction=config.val_fraction, split_seed=config.split_seed,
                    **config.dataset_options)
    run_dir = Path(run_dir) if run_dir is not None else None
    group_dir = run_dir / ("seeds-" + "-".join(map(str, seeds))) if run_dir is not None else None
    if group_dir is not None and (group_dir / "last.pt").exists():
        decision = Decision(True, "resuming a grouped run")
    elif grouping == "single" or len(seeds) == 1:
        decision = Decision(False, "one seed" if len(seeds) == 1 else "grouping disabled")
    elif grouping == "group":
        reasons = blockers(config)
        decision = Decision(not reasons, "; ".join(reasons) or "grouping forced")
    else:
        decision = decide(config, seeds, data)
    if on_decision is not None:
        on_decision(decision)
    if decision.grouped:
        results = fit(config, seeds, data=data, run_dir=group_dir, resume=True, callbacks=callbacks, progress=progress,
                      keep_models=keep_models)
        for r in results:
            if on_result is not None:
                on_result(r)
        return results
    results = []
    for seed in seeds:
        seed_dir = run_dir / f"seed-{seed}" if run_dir is not None else None
        [r] = fit(config, [seed], data=data, run_dir=seed_dir, resume=True, callbacks=callbacks, progress=progress,
                      keep_models=keep_models)
        if on_result is not None:
            on_result(r)
        results.append(r)
    return results
