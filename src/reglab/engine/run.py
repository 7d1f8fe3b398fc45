"""A training run's state and how it is built: data on the device, S seeds of the model stacked,
the techniques resolved and hooked in, the optimizer and schedule made.

Seeds: a seed fixes the model initialization (``torch.manual_seed(seed)`` before building) and every
random stream of the run: ``run.stream(purpose)`` is one CPU generator per seed, seeded from (seed,
purpose) (:func:`reglab.models.seeded.purpose_seed`): ``"order"`` for the data order, a technique's
name for its own draws (crop offsets, mixup's lambda, ...). Streams are independent, so adding or
removing a technique never changes the data order or another technique's draws; they live on the
CPU, so a seed draws the same on every device; a seed trained in a group follows the same
initialization, data order, augmentation, dropout masks and noise (counter-based inside the model,
:mod:`reglab.models.seeded`) as alone. The train/validation split is fixed by ``config.split_seed``,
or, with ``config.vary_split``, drawn per seed (:func:`split_seed`), which Bouthillier et al. 2021
("Accounting for Variance in Machine Learning Benchmarks") recommend randomizing too.
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
from ..models.seeded import purpose_seed
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
    metric: str
    maximize: bool
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer | None = None
    epoch: int = 0  # epochs completed (passes, or eval_every periods)
    step: int = 0  # optimizer steps taken
    batches: int = 0  # training batches taken
    streams: dict[str, list[torch.Generator]] = field(default_factory=dict)  # purpose -> one generator per seed
    order: Tensor | None = None  # (S, N) the current pass's permutation of the training split
    order_state: list[Tensor] | None = None  # the "order" stream's states it was drawn from (checkpointed)
    cursor: int = 0  # rows of ``order`` consumed
    diverged: list[bool] = field(default_factory=list)  # seeds stopped by a non-finite training loss
    lr_scale: list[float] = field(default_factory=list)  # per-seed multiplier of the optimizer's learning rate
    stop_state: dict[str, Tensor] | None = None  # weights of seeds at the epoch they stopped (groups)
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
        """The optimizer's learning rate (each seed's is this times ``lr_scale[s]``)."""
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer else float("nan")

    def record(self, s: int) -> dict[str, float]:
        """Seed ``s``'s record of the latest epoch it trained."""
        return self.history[s][-1]

    def stream(self, purpose: str) -> list[torch.Generator]:
        """The random stream ``purpose``: one CPU generator per seed, seeded from (seed, purpose) when
        first used. Draw on the CPU, then move the (small) tensor to ``run.device``."""
        if purpose not in self.streams:
            self.streams[purpose] = [torch.Generator().manual_seed(purpose_seed(s, purpose)) for s in self.seeds]
        return self.streams[purpose]

    def reseed(self, purpose: str, salt: int) -> None:
        """Replace stream ``purpose`` by an independent one (seeded from (seed, purpose#salt)): a
        change of randomness only, e.g. the null steps of the verdict calibration."""
        self.streams[purpose] = [torch.Generator().manual_seed(purpose_seed(s, f"{purpose}#{salt}")) for s in self.seeds]


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


def split_seed(config: RunConfig, seed: int) -> int:
    """The train/validation split seed of run seed ``seed``: ``config.split_seed``, or with
    ``vary_split`` one drawn from the seed."""
    return purpose_seed(seed, "split") % 2**31 if config.vary_split else config.split_seed


def load_data(config: RunConfig, seed: int | None = None) -> Data:
    """The dataset of ``config`` with the split of run seed ``seed`` (default ``config.seed``)."""
    seed = config.seed if seed is None else seed
    return load(config.dataset, val_fraction=config.val_fraction, split_seed=split_seed(config, seed),
                **config.dataset_options)


def build_run(config: RunConfig, seeds: list[int], data: Data | None = None, callbacks: tuple = ()) -> Run:
    techniques = resolve_techniques(config.techniques)
    reasons = stack_blockers(techniques) + (["vary_split: each seed has its own split"] if config.vary_split else [])
    if len(seeds) > 1 and reasons:
        raise ReglabError(f"cannot train several seeds in one group ({'; '.join(reasons)}); "
                          "fit the seeds one at a time (reglab.engine.grouping.fit_seeds does this)")
    if data is not None and config.vary_split:
        raise ReglabError("vary_split: the split is drawn per seed, so the dataset must be loaded by reglab (pass no data)")
    device = select_device(config.device)
    if data is None:
        data = load_data(config, seeds[0])
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
    n, batch = len(data.train), config.batch_size
    metric = config.metric or default_metric(data.task)
    callbacks = list(callbacks)
    run = Run(
        config=config, data=data, seeds=list(seeds), model=model, techniques=techniques, callbacks=callbacks,
        hooks=hook_table([*techniques, *callbacks]), device=device, metric=metric,
        maximize=metric_maximized(metric), steps_per_epoch=max(1, n // batch), history=[[] for _ in seeds],
        stopped=[False] * len(seeds), best_value=[-math.inf if metric_maximized(metric) else math.inf] * len(seeds),
        best_epoch=[0] * len(seeds), channels_last=use_cl, diverged=[False] * len(seeds), lr_scale=[1.0] * len(seeds),
    )
    params = list(model.parameters())
    for t in techniques:
        if (opt := t.make_optimizer(params, run)) is not None:
            run.optimizer = opt
    for t in techniques:
        t.make_scheduler(run.optimizer, run)
    run.best_state = model.snapshot()
    torch.manual_seed(purpose_seed(seeds[0], "global"))  # any draw outside the seeds' streams is still reproducible
    return run
