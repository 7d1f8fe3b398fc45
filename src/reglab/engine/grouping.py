"""Train several seeds of one configuration: all at once when they can, one by one otherwise.

Training S seeds in one process with stacked parameters (:class:`reglab.engine.stacked.Stacked`) turns
S small matrix products into one batched product. A seed's numbers differ at float level between the
two paths (a batched product is not bit-identical to S separate ones, and the difference grows over
training into seed-sized differences of the final metrics), so the choice must never depend on the
machine's load: :func:`decide` is a deterministic rule, and a study records it per configuration.
Within the stacked path a seed's numbers do not depend on the other seeds of its group (a seed gives
the same numbers stacked with 2 or with 4 others), so a study that grows by seeds reuses its runs.

The rule (:func:`decide`): one by one when a technique cannot train stacked seeds (it says why, e.g.
deep supervision's per-seed halting) or the model fails under ``torch.func.vmap`` (a trial step
tells); one by one on the CPU under bf16 autocast for models above :data:`BF16_CPU_STACK_MAX_PARAMS`
parameters (stacked bf16 products measured 1.33x slower than sequential for 8 CIFAR-10 MLPs of 3.8 M
parameters on an AVX512-BF16 EPYC; benchmarks/speed_results.md); stacked otherwise (float32 stacking
measured 0.35-0.85x the sequential time on the benchmark's cases).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig
from ..data import Data
from ..errors import first_line
from ..techniques import resolve_techniques, stack_blockers
from .loop import fit, next_rows
from .run import RunResult, build_run, load_data
from .step import default_step

#: on the CPU under bf16 autocast, models with more parameters train their seeds one by one
BF16_CPU_STACK_MAX_PARAMS = 1_000_000


@dataclass
class Decision:
    grouped: bool
    reason: str


def blockers(config: RunConfig) -> list[str]:
    """Why ``config`` cannot train stacked seeds: its techniques, or a split per seed (empty when it can)."""
    split = ["vary_split: each seed has its own train/validation split"] if config.vary_split else []
    return stack_blockers(resolve_techniques(config.techniques)) + split


def decide(config: RunConfig, seeds: list[int], data: Data) -> Decision:
    """Stack the seeds or train them one by one, and why (the rule in the module docstring). It reads
    no clock: the same configuration gets the same decision on every run of the same machine setup."""
    if len(seeds) == 1:
        return Decision(False, "one seed")
    if reasons := blockers(config):
        return Decision(False, "; ".join(reasons))
    try:  # one real training step of two stacked seeds
        run = build_run(config, seeds[:2], data)
        run.model.train()
        rows = next_rows(run)
        default_step(run, run.data.batch(run.data.train, rows), run.data.train.y[rows])
    except Exception as err:  # noqa: BLE001 - any model that vmap cannot run falls back
        return Decision(False, f"the model does not run under torch.func.vmap ({type(err).__name__}: {first_line(err)[:120]})")
    params = sum(p.numel() for p in run.model.parameters()) // 2
    if run.device.type == "cpu" and config.amp == "bf16" and params > BF16_CPU_STACK_MAX_PARAMS:
        return Decision(False, f"bf16 on the CPU with {params:,} parameters per model (stacked bf16 products are "
                               f"slower there above {BF16_CPU_STACK_MAX_PARAMS:,})")
    return Decision(True, f"{len(seeds)} seeds stacked ({params:,} parameters per model)")


def _group_name(seeds: list[int]) -> str:
    return "seeds-" + "-".join(map(str, seeds))


def _stored_group(run_dir: Path | None, seeds: list[int]) -> list[int] | None:
    """The seeds of a stacked group checkpointed in ``run_dir`` that includes every seed of ``seeds``
    (a study killed between a group's per-seed results, or resumed mid-group), or None."""
    if run_dir is None or not run_dir.is_dir():
        return None
    for folder in sorted(run_dir.glob("seeds-*")):
        group = [int(s) for s in folder.name.removeprefix("seeds-").split("-") if s.isdigit()]
        if (folder / "last.pt").exists() and len(group) > 1 and set(seeds) <= set(group):
            return group
    return None


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
    if data is None and not config.vary_split:  # loaded once for every seed
        data = load_data(config)
    run_dir = Path(run_dir) if run_dir is not None else None
    group = _stored_group(run_dir, seeds)
    if group is not None:  # a group of these seeds (and maybe others) already started: continue it
        results = fit(config, group, data=data, run_dir=run_dir / _group_name(group), resume=True, callbacks=callbacks,
                      progress=progress, keep_models=keep_models)
        for r in (r for r in results if r.seed in seeds):
            if on_result is not None:
                on_result(r)
        return [r for r in results if r.seed in seeds]
    group_dir = run_dir / _group_name(seeds) if run_dir is not None else None
    if grouping == "single" or len(seeds) == 1:
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
