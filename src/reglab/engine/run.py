"""A training run's state and how it is built: data on the device, S seeds of the model stacked,
the techniques resolved and hooked in, the optimizer and schedule made.

Seeds: a seed fixes the model initialization (``torch.manual_seed(seed)`` before building), the data
order and the augmentation draws (``run.generators[s]``); the train/validation split is fixed by
``config.split_seed``. Per-seed generators live on the CPU, so a seed draws the same data order and
augmentation on every device, and a seed trained in a group follows the same initialization, data
order, augmentation and dropout masks (the ``dropout`` technique's counter-based masks) as alone.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..config import RunConfig
from ..data import Data, load
from ..errors import ReglabError, warn
from ..metrics import default_metric, metric_maximized
from ..techniques import Technique, build_member, resolve_techniques, stack_blockers
from .callbacks import Callback, hook_table
from .stacked import Stacked
from .step import LossSettings, cpu_has_native_bf16


@dataclass
class RunResult:
    """The outcome of one seed: its per-epoch history, final metrics and optional trajectory."""

    seed: int
    config: dict[str, Any]
    history: list[dict[str, float]]
    metrics: dict[str, float]
    trajectory: dict[str, list[float]] = field(default_factory=dict)
    checkpoint: str | None = None
    model: torch.nn.Module | None = None  # the seed's trained network (CPU), when fit keeps models


@dataclass
class Run:
    """The state of a training run that hooks read and change."""

    config: RunConfig
    data: Data
    seeds: list[int]
    model: Stacked
    techniques: list[Technique]
    callbacks: list[Callback]
    hooks: dict[str, list[Any]]  # hook name -> bound methods of techniques and callbacks, in order
    device: torch.device
    generators: list[torch.Generator]  # one CPU generator per seed; draw on the CPU, then move
    metric: str
    maximize: bool
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer | None = None
    epoch: int = 0  # epochs completed (passes, or eval_every periods)
    step: int = 0  # optimizer steps taken
    batches: int = 0  # training batches taken
    order: Tensor | None = None  # (S, N) the current pass's permutation of the training split
    order_state: list[Tensor] | None = None  # the generators' states it was drawn from (checkpointed)
    cursor: int = 0  # rows of ``order`` consumed
    history: list[list[dict[str, float]]] = field(default_factory=list)
    stopped: list[bool] = field(default_factory=list)
    best_value: list[float] = field(default_factory=list)
    best_epoch: list[int] = field(default_factory=list)
    best_state: dict[str, Tensor] = field(default_factory=dict)
    loss: LossSettings = field(default_factory=LossSettings)
    trajectory: dict[str, list[list[float]]] = field(default_factory=dict)
    batch_rows: Tensor | None = None  # (S, B) indices into the train split of the current batch
    channels_last: bool = False  # model and image batches in channels_last memory format
    improved: list[int] = field(default_factory=list)  # seeds whose selection metric improved this epoch
    elapsed: float = 0.0

    @property
    def size(self) -> int:
        return len(self.seeds)

    @property
    def participants(self) -> list[Callback]:
        """Techniques then callbacks: everything whose hooks run."""
        return [*self.techniques, *self.callbacks]

    @property
    def total_batches(self) -> int:
        """Training batches in all: the ``steps`` budget, or ``epochs`` passes."""
        return self.config.steps or self.config.epochs * self.steps_per_epoch

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer else float("nan")

    def record(self, s: int) -> dict[str, float]:
        """Seed ``s``'s record of the latest epoch it trained."""
        return self.history[s][-1]


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ReglabError(f"device: unknown device '{name}' (allowed: auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ReglabError("device: cuda requested but no CUDA device is available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ReglabError(f"device: {name} requested but this machine has {torch.cuda.device_count()} CUDA device(s) "
                          f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return device


def warn_full_batch(config: RunConfig, rows: int) -> None:
    """Say so when the batch is larger than the training split (``rows`` examples): every epoch is
    then one full-batch step of ``rows`` examples. A warning, not an error: full-batch training of a
    tiny split is a legitimate choice (the Sudoku deep-supervision tests train 4-16 puzzles so)."""
    if config.batch_size > rows:
        warn(f"batch_size {config.batch_size} is larger than the training split of '{config.dataset}' ({rows} rows): "
             f"each epoch is one full-batch step of {rows} rows (set batch_size <= {rows} to silence this)")


def build_members(config: RunConfig, seeds: list[int], data: Data, techniques: list[Technique]) -> list[torch.nn.Module]:
    """One freshly initialized model per seed (``torch.manual_seed(seed)`` before building), with
    every technique's model transform applied."""
    members = []
    for seed in seeds:
        torch.manual_seed(seed)
        members.append(build_member(config, data, techniques))
    return members


def build_run(config: RunConfig, seeds: list[int], data: Data | None = None, callbacks: tuple = ()) -> Run:
    techniques = resolve_techniques(config.techniques)
    if len(seeds) > 1 and (reasons := stack_blockers(techniques)):
        raise ReglabError(f"cannot train several seeds in one group ({'; '.join(reasons)}); "
                          "fit the seeds one at a time (reglab.engine.grouping.fit_seeds does this)")
    device = select_device(config.device)
    if data is None:
        data = load(config.dataset, val_fraction=config.val_fraction, split_seed=config.split_seed, **config.dataset_options)
    data = data.to(device)
    warn_full_batch(config, len(data.train))
    if config.amp == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("amp='bf16' on a CPU without native bf16 (AVX512-BF16/AMX): bf16 is emulated there and "
                      "slower than float32; consider amp='off'", stacklevel=2)
    model = Stacked(build_members(config, seeds, data, techniques)).to(device)
    use_cl = config.channels_last == "on" or (config.channels_last == "auto" and device.type == "cuda")
    use_cl = use_cl and len(seeds) == 1 and len(data.input_shape) == 3
    if use_cl:
        model = model.to(memory_format=torch.channels_last)
    if config.compile and len(seeds) == 1:
        model.single.compile()  # in place: parameter names and checkpoints are unchanged
    generators = [torch.Generator().manual_seed(_mix(seed)) for seed in seeds]
    n, batch = len(data.train), config.batch_size
    metric = config.metric or default_metric(data.task)
    callbacks = list(callbacks)
    run = Run(
        config=config, data=data, seeds=list(seeds), model=model, techniques=techniques, callbacks=callbacks,
        hooks=hook_table([*techniques, *callbacks]), device=device, generators=generators, metric=metric,
        maximize=metric_maximized(metric), steps_per_epoch=max(1, n // batch), history=[[] for _ in seeds],
        stopped=[False] * len(seeds), best_value=[-math.inf if metric_maximized(metric) else math.inf] * len(seeds),
        best_epoch=[0] * len(seeds), channels_last=use_cl,
    )
    params = list(model.parameters())
    for t in techniques:
        if (opt := t.make_optimizer(params, run)) is not None:
            run.optimizer = opt
    for t in techniques:
        t.make_scheduler(run.optimizer, run)
    run.best_state = model.snapshot()
    torch.manual_seed(_mix(seeds[0]) + 1)  # global generator: any draw a model makes outside the seed's streams
    return run


def _mix(seed: int) -> int:
    """Decorrelate the data-order generator from the initialization seed."""
    return (seed * 0x9E3779B1 + 0x7F4A7C15) % (2**63 - 1)
