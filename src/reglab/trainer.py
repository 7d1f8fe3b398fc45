"""The training loop.

``fit(config, seeds)`` trains one configuration for one or several seeds at once and returns one
:class:`RunResult` per seed. Read it top to bottom: build the data, the models and the techniques;
then per epoch shuffle, transform, step, evaluate, checkpoint. Techniques act only through the hooks
of :class:`reglab.techniques.base.Technique`.

Seeds: a seed fixes the model initialization (``torch.manual_seed(seed)`` before building), the data
order and the augmentation draws (``run.generators[s]``); the train/validation split is fixed by
``config.split_seed``. A seed trained in a group of seeds follows the same data order, augmentation
and initialization as when trained alone (dropout masks are drawn from the global generator and
differ). Per-seed generators live on the CPU, so a seed draws the same data order and augmentation
on every device. Everything random is checkpointed, so a resumed run ends exactly like an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import checkpoint as ckpt
from .config import RunConfig, resolve_techniques
from .data import Data, Split, load
from .ensemble import Ensemble
from .errors import ReglabError
from .models import build_model
from .techniques.base import Technique, group_blockers

CHECKPOINT_VERSION = 1


@dataclass
class RunResult:
    """The outcome of one seed: its per-epoch history, final metrics and optional trajectory."""

    seed: int
    config: dict[str, Any]
    history: list[dict[str, float]]
    metrics: dict[str, float]
    trajectory: dict[str, list[float]] = field(default_factory=dict)
    checkpoint: str | None = None


@dataclass
class Run:
    """The state of a training run that hooks read and change."""

    config: RunConfig
    data: Data
    seeds: list[int]
    model: Ensemble
    techniques: list[Any]
    device: torch.device
    generators: list[torch.Generator]  # one CPU generator per seed; draw on the CPU, then move
    metric: str
    maximize: bool
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer | None = None
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    history: list[list[dict[str, float]]] = field(default_factory=list)
    stopped: list[bool] = field(default_factory=list)
    best_value: list[float] = field(default_factory=list)
    best_epoch: list[int] = field(default_factory=list)
    best_state: dict[str, Tensor] = field(default_factory=dict)
    loss_options: dict[str, Any] = field(default_factory=dict)
    trajectory: dict[str, list[list[float]]] = field(default_factory=dict)
    batch_rows: Tensor | None = None  # (S, B) indices into the train split of the current batch
    channels_last: bool = False  # model and image batches in channels_last memory format
    improved: list[int] = field(default_factory=list)  # seeds whose selection metric improved this epoch
    elapsed: float = 0.0

    @property
    def size(self) -> int:
        return len(self.seeds)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer else float("nan")

    def record(self, s: int) -> dict[str, float]:
        """Seed ``s``'s record of the latest epoch it trained."""
        return self.history[s][-1]


# ---- small pieces -------------------------------------------------------------------------------
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
    return device


def default_metric(task: str) -> str:
    return {"classification": "val_accuracy", "multilabel": "val_f1_micro", "regression": "val_rmse"}[task]


def metric_maximized(metric: str) -> bool:
    return not any(word in metric for word in ("loss", "rmse", "mae", "error", "crps"))


def criterion(run: Run, out: Tensor, y: Tensor, training: bool = True) -> Tensor:
    """Per-seed mean loss ``(S,)`` of outputs ``(S, B, ..., C)`` against targets ``(S, B, ...)``.

    Classification: cross-entropy with optional class weights and label smoothing (training only;
    soft targets from mixup/cutmix are accepted); multilabel: BCE with logits and optional
    ``pos_weight``; regression: mean squared error. Matches torch's ``mean`` reductions per seed.
    """
    size = out.shape[0]
    opts = run.loss_options if training else {}
    task = run.data.task
    if task == "classification":
        classes = out.shape[-1]
        soft = y.is_floating_point()
        target = y.reshape(-1, classes) if soft else y.reshape(-1)
        weight = opts.get("weight")
        per = F.cross_entropy(
            out.reshape(-1, classes).float(), target, weight=weight,
            label_smoothing=opts.get("label_smoothing", 0.0), reduction="none",
        ).view(size, -1)
        if weight is not None and not soft:
            return per.sum(1) / weight[y.reshape(size, -1)].sum(1)
        return per.mean(1)
    if task == "multilabel":
        per = F.binary_cross_entropy_with_logits(out.float(), y, pos_weight=opts.get("pos_weight"), reduction="none")
        return per.reshape(size, -1).mean(1)
    diff = out.float().reshape(size, y.shape[1], -1) - y.reshape(size, y.shape[1], -1)
    return diff.pow(2).reshape(size, -1).mean(1)


def _hooks(run: Run, name: str) -> list:
    """Bound hooks ``name`` of the run's techniques and callbacks, by increasing ``order``."""
    ordered = sorted(run.techniques, key=lambda t: getattr(t, "order", 50))
    return [h for t in ordered if (h := getattr(t, name, None)) is not None]


def _autocast(run: Run) -> contextlib.AbstractContextManager:
    """bf16 autocast: ``amp="bf16"`` on any device, ``"auto"`` on CUDA only, ``"off"`` never."""
    amp = run.config.amp
    on = amp == "bf16" or (amp == "auto" and run.device.type == "cuda")
    return torch.autocast(device_type=run.device.type, dtype=torch.bfloat16, enabled=on)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 matrix products natively on this CPU (AVX512-BF16 or AMX): only there
    does ``amp="bf16"`` speed up CPU training (about 3x for the CIFAR-10 MLP on an AVX512-BF16 EPYC);
    elsewhere bf16 is emulated and slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# ---- building a run -----------------------------------------------------------------------------
def build_run(config: RunConfig, seeds: list[int], data: Data | None = None, callbacks: tuple = ()) -> Run:
    techniques = resolve_techniques(config.techniques)
    if len(seeds) > 1 and (reasons := group_blockers(techniques)):
        raise ReglabError(f"cannot train several seeds in one group ({'; '.join(reasons)}); "
                          "fit the seeds one at a time (reglab.seeds.fit_seeds does this)")
    device = select_device(config.device)
    if data is None:
        data = load(config.dataset, val_fraction=config.val_fraction, split_seed=config.split_seed, **config.dataset_options)
    data = data.to(device)
    if config.amp == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("amp='bf16' on a CPU without native bf16 (AVX512-BF16/AMX): bf16 is emulated there and "
                      "slower than float32; consider amp='off'", stacklevel=2)
    model_options = {**model_defaults(config.model, data), **config.model_options}
    members = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = build_model(config.model, data.input_shape, data.num_outputs, **model_options)
        for t in techniques:
            model = t.apply_model(model, data)
        members.append(model)
    model = Ensemble(members).to(device)
    use_cl = config.channels_last == "on" or (config.channels_last == "auto" and device.type == "cuda")
    use_cl = use_cl and len(seeds) == 1 and len(data.input_shape) == 3
    if use_cl:
        model = model.to(memory_format=torch.channels_last)
    if config.compile and len(seeds) == 1:
        model.single.compile()  # in place: parameter names and checkpoints are unchanged
    generators = [torch.Generator().manual_seed(_mix(seed)) for seed in seeds]
    n, batch = len(data.train), config.batch_size
    metric = config.metric or default_metric(data.task)
    run = Run(
        config=config, data=data, seeds=list(seeds), model=model, techniques=[*techniques, *callbacks],
        device=device, generators=generators, metric=metric, maximize=metric_maximized(metric),
        steps_per_epoch=max(1, n // batch), history=[[] for _ in seeds], stopped=[False] * len(seeds),
        best_value=[-math.inf if metric_maximized(metric) else math.inf] * len(seeds),
        best_epoch=[0] * len(seeds), channels_last=use_cl,
    )
    params = list(model.parameters())
    for t in techniques:
        if (opt := t.make_optimizer(params, run)) is not None:
            run.optimizer = opt
    for t in techniques:
        t.make_scheduler(run.optimizer, run)
    run.best_state = model.snapshot()
    torch.manual_seed(_mix(seeds[0]) + 1)  # global generator: dropout masks
    return run


def model_defaults(model: str, data: Data) -> dict[str, Any]:
    """Options a dataset suggests for the model (e.g. a text dataset's ``vocab_size``), kept to
    those the model's builder accepts; the configuration's own options override them."""
    from .models import MODELS, _import_builders
    from .options import option_table

    _import_builders()
    suggested = data.info.get("model_options", {})
    if not suggested or model not in MODELS:
        return {}
    accepted = {name for name, _, _ in option_table(MODELS[model].builder)}
    return {k: v for k, v in suggested.items() if k in accepted}


def _mix(seed: int) -> int:
    """Decorrelate the data-order generator from the initialization seed."""
    return (seed * 0x9E3779B1 + 0x7F4A7C15) % (2**63 - 1)


# ---- the loop ----------------------------------------------------------------------------------
def train_epoch(run: Run, bar: Any = None) -> list[dict[str, float]]:
    """One epoch over the training split; returns per-seed running train loss/accuracy."""
    data, size, batch = run.data, run.size, run.config.batch_size
    run.model.train()
    n = len(data.train)
    order = torch.stack([torch.randperm(n, generator=g) for g in run.generators]).to(run.device)
    transforms = _hooks(run, "transform_batch")
    steppers = _hooks(run, "train_step")
    loss_sum = torch.zeros(size, device=run.device)
    correct = torch.zeros(size, device=run.device)
    seen = scored = 0  # examples trained on; of those, examples the default step scored
    for i in range(run.steps_per_epoch):
        rows = order[:, i * batch : (i + 1) * batch]
        run.batch_rows = rows
        x = data.to_input(data.train.inputs(rows))
        y = data.train.y[rows]
        for transform in transforms:
            x, y = transform(run, x, y)
        x = _layout(run, data.normalize(x))
        losses = None
        for hook in steppers:
            if (losses := hook(run, x, y)) is not None:
                break
        if losses is None:
            losses, out = _default_step(run, x, y)
            if data.task == "classification":
                target = y.argmax(-1) if y.is_floating_point() else y
                correct += (out.argmax(-1) == target).reshape(size, -1).float().mean(1) * rows.shape[1]
                scored += rows.shape[1]
        for hook in _hooks(run, "after_step"):
            hook(run)
        loss_sum += losses.detach() * rows.shape[1]
        seen += rows.shape[1]
        if bar is not None:
            bar.update(1)
    records = [{"train_loss": v} for v in (loss_sum / seen).tolist()]
    if data.task == "classification" and scored:  # a train_step hook reports its own metrics
        for rec, acc in zip(records, (correct / scored).tolist()):
            rec["train_accuracy"] = acc
    return records


def _layout(run: Run, x: Tensor) -> Tensor:
    """Image batches in channels_last when the model is (``(S, B, C, H, W)`` or ``(B, C, H, W)``)."""
    if run.channels_last and x.dim() >= 4:
        return x.flatten(0, x.dim() - 4).contiguous(memory_format=torch.channels_last).reshape(x.shape)
    return x


def _default_step(run: Run, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    with _autocast(run):
        out = run.model(x)
    losses = criterion(run, out, y)
    for hook in _hooks(run, "loss"):
        losses = hook(run, losses, out, y, x)
    run.optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()  # a sum, so that each seed's gradient equals its solo gradient
    for hook in _hooks(run, "after_backward"):
        hook(run)
    run.optimizer.step()
    run.step += 1
    return losses.detach(), out.detach()


@torch.no_grad()
def evaluate(run: Run, split: Split, prefix: str) -> list[dict[str, float]]:
    """Per-seed metrics of the current models on ``split`` (eval mode, no augmentation)."""
    data, size = run.data, run.size
    run.model.eval()
    sums: dict[str, Tensor] = {}

    def add(name: str, value: Tensor) -> None:
        sums[name] = sums.get(name, 0) + value

    n = len(split)
    extra_hooks = _hooks(run, "batch_metrics")
    for start in range(0, n, run.config.eval_batch_size):
        rows = torch.arange(start, min(n, start + run.config.eval_batch_size), device=run.device)
        x = _layout(run, data.normalize(data.to_input(split.inputs(rows))))
        y = split.y[rows]
        with _autocast(run):
            out = run.model(x, shared=True).float()
        ys = y.unsqueeze(0).expand(size, *y.shape)
        count = len(rows)
        add("loss", criterion(run, out, ys, training=False) * count)
        if data.task == "classification":
            add("accuracy", (out.argmax(-1) == ys).reshape(size, count, -1).float().mean(2).sum(1))
        elif data.task == "regression":
            err = (out.reshape(size, count, -1) - ys.reshape(size, count, -1)).reshape(size, count, -1)
            add("se", err.pow(2).mean(2).sum(1))
            add("mae", err.abs().mean(2).sum(1))
        else:
            pred = out > 0
            truth = ys > 0.5
            add("tp", (pred & truth).sum(1).float())
            add("fp", (pred & ~truth).sum(1).float())
            add("fn", (~pred & truth).sum(1).float())
        for hook in extra_hooks:
            for name, value in hook(run, out, ys, x).items():
                add(name, value)
    records: list[dict[str, float]] = [{} for _ in range(size)]
    for name, value in sums.items():
        if name in ("tp", "fp", "fn"):
            continue
        for s, v in enumerate((value / n).tolist()):
            records[s][f"{prefix}_{'rmse' if name == 'se' else name}"] = math.sqrt(v) if name == "se" else v
    if data.task == "multilabel":
        tp, fp, fn = sums["tp"], sums["fp"], sums["fn"]  # (S, labels)
        micro = 2 * tp.sum(1) / (2 * tp.sum(1) + fp.sum(1) + fn.sum(1)).clamp_min(1)
        macro = (2 * tp / (2 * tp + fp + fn).clamp_min(1)).mean(1)
        for s in range(size):
            records[s][f"{prefix}_f1_micro"] = micro[s].item()
            records[s][f"{prefix}_f1_macro"] = macro[s].item()
    return records


def end_of_epoch(run: Run, train_records: list[dict[str, float]], seconds: float) -> None:
    """Evaluate on validation, append each active seed's record, track each seed's best state."""
    val = evaluate(run, run.data.val, "val")
    improved = []
    for s in range(run.size):
        if run.stopped[s]:
            continue
        record = {"epoch": run.epoch, **train_records[s], **val[s], "lr": run.lr, "seconds": seconds}
        run.history[s].append(record)
        if run.metric not in record:
            raise ReglabError(f"metric '{run.metric}' is not recorded (recorded: {', '.join(record)})")
        value = record[run.metric]
        better = value > run.best_value[s] if run.maximize else value < run.best_value[s]
        if better or run.best_epoch[s] == 0:
            run.best_value[s], run.best_epoch[s] = value, run.epoch
            improved.append(s)
    run.model.copy_members(run.best_state, run.model.live(), improved)
    run.improved = improved


def fit(
    config: RunConfig,
    seeds: list[int] | None = None,
    *,
    data: Data | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: tuple = (),
    progress: bool = True,
) -> list[RunResult]:
    """Train ``config`` for every seed in ``seeds`` (default ``[config.seed]``) at once.

    With ``run_dir``, ``last.pt`` is written after every epoch and ``best.pt`` whenever a seed
    improves on the selection metric; ``resume=True`` continues from ``last.pt``.
    """
    seeds = list(seeds) if seeds is not None else [config.seed]
    if len(set(seeds)) != len(seeds):
        raise ReglabError(f"seeds must be distinct, got {seeds}")
    run = build_run(config, seeds, data, callbacks)
    run_dir = Path(run_dir) if run_dir is not None else None
    for hook in _hooks(run, "on_fit_start"):
        hook(run)
    if resume and run_dir is not None and (run_dir / "last.pt").exists():
        load_checkpoint(run, run_dir / "last.pt")
    bar = _progress_bar(run, progress)
    started = time.perf_counter() - run.elapsed
    while run.epoch < config.epochs and not all(run.stopped):
        t0 = time.perf_counter()
        for hook in _hooks(run, "on_epoch_start"):
            hook(run)
        train_records = train_epoch(run, bar)
        run.epoch += 1
        end_of_epoch(run, train_records, time.perf_counter() - t0)
        for hook in _hooks(run, "on_epoch_end"):
            hook(run)
        run.elapsed = time.perf_counter() - started
        if run_dir is not None:
            save_checkpoint(run, run_dir / "last.pt")
            if run.improved:
                shutil.copyfile(run_dir / "last.pt", run_dir / "best.pt")
        if bar is not None:
            bar.set_postfix_str(_summary(run))
    if bar is not None:
        bar.close()
    for hook in _hooks(run, "on_fit_end"):
        hook(run)
    return _results(run, run_dir, time.perf_counter() - started)


def _results(run: Run, run_dir: Path | None, seconds: float) -> list[RunResult]:
    finals = [evaluate(run, split, name) for name, split in
              (("train", run.data.train), ("val", run.data.val), ("test", run.data.test))]
    results = []
    for s, seed in enumerate(run.seeds):
        metrics = {k: v for final in finals for k, v in final[s].items()}
        metrics.update(
            epochs=len(run.history[s]), best_epoch=run.best_epoch[s], seconds=seconds / run.size,
            group_seconds=seconds, group_size=run.size,
        )
        metrics[f"best_{run.metric}"] = run.best_value[s]
        trajectory = {name: per_seed[s] for name, per_seed in run.trajectory.items()}
        checkpoint = str(run_dir / "last.pt") if run_dir is not None else None
        config = run.config.model_copy(update={"seed": seed}).model_dump()  # each result names its own seed
        results.append(RunResult(seed, config, run.history[s], metrics, trajectory, checkpoint))
    return results


def _summary(run: Run) -> str:
    rec = run.history[0][-1] if run.history[0] else {}
    keys = [k for k in ("train_loss", "val_loss", run.metric) if k in rec]
    return " ".join(f"{k}={rec[k]:.4g}" for k in dict.fromkeys(keys))


def _progress_bar(run: Run, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    total = run.config.epochs * run.steps_per_epoch
    label = f"{run.config.dataset}/{run.config.model}"
    if run.size > 1:
        label += f" x{run.size} seeds"
    return tqdm(total=total, initial=run.epoch * run.steps_per_epoch, desc=label, unit="step", leave=False,
                dynamic_ncols=True)


# ---- checkpoints --------------------------------------------------------------------------------
def save_checkpoint(run: Run, path: Path) -> None:
    state = {
        "version": CHECKPOINT_VERSION,
        "config": run.config.model_dump(),
        "seeds": run.seeds,
        "epoch": run.epoch,
        "step": run.step,
        "elapsed": run.elapsed,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict() if run.optimizer else None,
        "techniques": [t.state_dict() if hasattr(t, "state_dict") else {} for t in run.techniques],
        "generators": [g.get_state() for g in run.generators],
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if run.device.type == "cuda" else [],
        "history": run.history,
        "stopped": run.stopped,
        "best_value": run.best_value,
        "best_epoch": run.best_epoch,
        "best_state": run.best_state,
        "trajectory": run.trajectory,
    }
    ckpt.save(state, path)


def load_checkpoint(run: Run, path: Path) -> None:
    state = ckpt.load(path, map_location=run.device)
    if state.get("version") != CHECKPOINT_VERSION:
        raise ReglabError(f"{path}: checkpoint version {state.get('version')} is not {CHECKPOINT_VERSION}")
    if state["config"] != run.config.model_dump() or state["seeds"] != run.seeds:
        raise ReglabError(f"{path}: checkpoint was written for another configuration or seeds; use a new run folder")
    run.epoch, run.step, run.elapsed = state["epoch"], state["step"], state["elapsed"]
    run.model.load_state_dict(state["model"])
    if run.optimizer is not None:
        run.optimizer.load_state_dict(state["optimizer"])
    for t, t_state in zip(run.techniques, state["techniques"]):
        if hasattr(t, "load_state_dict"):
            t.load_state_dict(t_state)
    for g, g_state in zip(run.generators, state["generators"]):
        g.set_state(g_state.cpu())
    torch.set_rng_state(state["torch_rng"].cpu())
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    run.history, run.stopped = state["history"], state["stopped"]
    run.best_value, run.best_epoch = state["best_value"], state["best_epoch"]
    run.best_state = state["best_state"]
    run.trajectory = state["trajectory"]
