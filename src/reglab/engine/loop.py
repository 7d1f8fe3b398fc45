"""The training loop: ``fit(config, seeds)`` trains one configuration for one or several seeds at
once and returns one :class:`~reglab.engine.run.RunResult` per seed.

Read it top to bottom: build the run (:mod:`.run`); then per epoch shuffle, transform, step
(:mod:`.step`), evaluate, checkpoint (:mod:`.checkpoint`). Techniques and callbacks act only through
the hooks of :class:`reglab.engine.callbacks.Callback`. Everything random is checkpointed, so a
resumed run ends exactly like an uninterrupted one.

Selection: after every epoch each seed's validation ``metric`` is compared with its best so far; the
best epoch's weights are kept (``run.best_state``). The metrics a result reports (``train_*``,
``val_*``, ``test_*``) are those of the best epoch's weights, and ``result.model`` holds them; the
last epoch's validation and test metrics are kept beside them as ``last_val_*`` and ``last_test_*``.
The test split is evaluated only at the end, never to choose anything. A seed whose training loss is
not finite stops there and is marked diverged (``diverged`` = 1 in its metrics).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import Tensor

from ..config import RunConfig
from ..data import Data, Split
from ..errors import ReglabError, warn
from .checkpoint import remove_temporary, resume_checkpoint, save_checkpoint
from .progress import Progress
from .run import Run, RunResult, build_run
from .step import autocast, criterion, default_step


# ---- the loop ----------------------------------------------------------------------------------
def next_rows(run: Run) -> Tensor:
    """The next batch's rows ``(S, B)`` of the training split: consecutive slices of one random
    permutation per seed, a fresh permutation when the current pass has no full batch left."""
    batch = run.config.batch_size
    if run.order is None or run.cursor + batch > run.steps_per_epoch * batch:
        order = run.stream("order")
        run.order_state = [g.get_state() for g in order]
        run.order = _permutations(run, order)
        run.cursor = 0
    rows = run.order[:, run.cursor : run.cursor + batch]
    run.cursor += batch
    return rows


def _permutations(run: Run, generators: list[torch.Generator]) -> Tensor:
    n = len(run.data.train)
    return torch.stack([torch.randperm(n, generator=g) for g in generators]).to(run.device)


def period(run: Run) -> int:
    """Batches in the next "epoch" of the loop: a pass over the training split, or ``eval_every``
    batches, and never past the budget."""
    per = run.config.eval_every or run.steps_per_epoch
    return min(per, run.total_batches - run.batches)


def train_epoch(run: Run, batches: int | None = None) -> list[dict[str, float]]:
    """One "epoch" of training (:func:`period` batches, or ``batches``); returns per-seed running
    train loss and, measured on the training batches as they are trained, accuracy (classification)
    or RMSE (regression, when the model makes one prediction per target)."""
    data, size = run.data, run.size
    run.model.train()
    transforms = run.hooks["transform_batch"]
    steppers = run.hooks["train_step"]
    loss_sum = torch.zeros(size, device=run.device)
    correct = torch.zeros(size, device=run.device)
    squared = torch.zeros(size, device=run.device)  # regression: per-seed sum of per-example mean squared errors
    seen = scored = 0  # examples trained on; of those, examples the default step scored
    for _ in range(period(run) if batches is None else batches):
        rows = next_rows(run)
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
            losses, out = default_step(run, x, y)
            if data.task == "classification":
                target = y.argmax(-1) if y.is_floating_point() else y
                correct += (out.argmax(-1) == target).reshape(size, -1).float().mean(1) * rows.shape[1]
                scored += rows.shape[1]
            elif data.task == "regression" and out.numel() == y.numel():  # one prediction per target
                err = out.float().reshape(size, rows.shape[1], -1) - y.float().reshape(size, rows.shape[1], -1)
                squared += err.pow(2).mean(2).sum(1)
                scored += rows.shape[1]
        for hook in run.hooks["after_step"]:
            hook(run)
        run.batches += 1
        loss_sum += losses.detach() * rows.shape[1]
        seen += rows.shape[1]
    records = [{"train_loss": v} for v in (loss_sum / seen).tolist()]
    if data.task == "classification" and scored:  # a train_step hook reports its own metrics
        for rec, acc in zip(records, (correct / scored).tolist()):
            rec["train_accuracy"] = acc
    if data.task == "regression" and scored and scored == seen:  # the validation RMSE's measure on the training batches
        for rec, se in zip(records, (squared / scored).tolist()):
            rec["train_rmse"] = math.sqrt(se)
    return records


def _layout(run: Run, x: Tensor) -> Tensor:
    """Image batches in channels_last when the model is (``(S, B, C, H, W)`` or ``(B, C, H, W)``)."""
    if run.channels_last and x.dim() >= 4:
        return x.flatten(0, x.dim() - 4).contiguous(memory_format=torch.channels_last).reshape(x.shape)
    return x


@torch.no_grad()
def evaluate(run: Run, split: Split, prefix: str) -> list[dict[str, float]]:
    """Per-seed metrics of the current models on ``split`` (eval mode, no augmentation)."""
    data, size = run.data, run.size
    run.model.eval()
    sums: dict[str, Tensor] = {}

    def add(name: str, value: Tensor) -> None:
        sums[name] = sums.get(name, 0) + value

    n = len(split)
    extra_hooks = run.hooks["batch_metrics"]
    for start in range(0, n, run.config.eval_batch_size):
        rows = torch.arange(start, min(n, start + run.config.eval_batch_size), device=run.device)
        x = _layout(run, data.batch(split, rows))
        y = split.y[rows]
        with autocast(run):
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
    """Evaluate on validation, append each active seed's record, track each seed's best state; a
    seed whose training loss is not finite is stopped and marked diverged."""
    val = evaluate(run, run.data.val, "val")
    improved = []
    for s in range(run.size):
        if run.stopped[s]:
            continue
        record = {"epoch": run.epoch, "step": run.batches, **train_records[s], **val[s], "lr": run.lr * run.lr_scale[s],
                  "seconds": seconds}
        run.history[s].append(record)
        if run.metric not in record:
            raise ReglabError(f"metric '{run.metric}' is not recorded (recorded: {', '.join(record)})")
        if not math.isfinite(record["train_loss"]):
            run.stopped[s] = run.diverged[s] = True
            warn(f"{run.config.dataset}/{run.config.model} seed {run.seeds[s]} diverged at epoch {run.epoch} (training "
                 f"loss {record['train_loss']}): it is stopped and marked diverged (try a lower learning rate)")
            continue
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
    keep_models: bool = True,
) -> list[RunResult]:
    """Train ``config`` for every seed in ``seeds`` (default ``[config.seed]``) at once.

    With ``run_dir``, ``last.pt`` is written after every epoch (the one before kept as
    ``last.prev.pt``) and ``best.pt`` whenever a seed improves on the selection metric;
    ``resume=True`` continues from ``last.pt``, or from ``last.prev.pt`` when ``last.pt`` is
    corrupted. Each result holds its seed's trained model (``result.model``, a plain module on the
    CPU) unless ``keep_models`` is off. ``progress``: a bar over the epochs on a terminal, one line
    per epoch otherwise (:mod:`.progress`).
    """
    seeds = list(seeds) if seeds is not None else [config.seed]
    if len(set(seeds)) != len(seeds):
        raise ReglabError(f"seeds must be distinct, got {seeds}")
    run = build_run(config, seeds, data, (*callbacks, Progress()) if progress else callbacks)
    run_dir = Path(run_dir) if run_dir is not None else None
    for hook in run.hooks["on_fit_start"]:
        hook(run)
    if run_dir is not None:
        remove_temporary(run_dir)  # left by a process killed while writing a checkpoint
    if resume and run_dir is not None and resume_checkpoint(run, run_dir):
        if run.order_state is not None and run.cursor < run.steps_per_epoch * config.batch_size:
            run.order = _permutations(run, [torch.Generator().set_state(s.cpu()) for s in run.order_state])
    started = time.perf_counter() - run.elapsed
    while run.batches < run.total_batches and not all(run.stopped):
        t0 = time.perf_counter()
        for hook in run.hooks["on_epoch_start"]:
            hook(run)
        train_records = train_epoch(run)
        run.epoch += 1
        active = [s for s in range(run.size) if not run.stopped[s]]
        end_of_epoch(run, train_records, time.perf_counter() - t0)
        for hook in run.hooks["on_epoch_end"]:
            hook(run)
        _keep_stopped(run, [s for s in active if run.stopped[s]])
        run.elapsed = time.perf_counter() - started
        if run_dir is not None:
            save_checkpoint(run, run_dir, best=bool(run.improved))
    last = _last_metrics(run)
    run.model.restore(run.best_state)
    for hook in run.hooks["on_fit_end"]:
        hook(run)
    return _results(run, run_dir, time.perf_counter() - started, last, keep_models)


def _keep_stopped(run: Run, newly: list[int]) -> None:
    """Keep the weights of seeds that stopped this epoch: in a group the other seeds train on, and
    the stopped ones' last weights are those of their stop."""
    if newly and run.size > 1:
        if run.stop_state is None:
            run.stop_state = run.model.snapshot()
        run.model.copy_members(run.stop_state, run.model.live(), newly)


def _last_metrics(run: Run) -> list[list[dict[str, float]]]:
    """Validation and test metrics of each seed's last weights (a stopped seed's at its stop)."""
    if run.stop_state is not None:
        run.model.restore(run.stop_state, [s for s in range(run.size) if run.stopped[s]])
    splits = (("val", run.data.val), ("test", run.data.test))
    return [evaluate(run, split, f"last_{name}") for name, split in splits if name != "test" or run.config.eval_test]


def _results(run: Run, run_dir: Path | None, seconds: float, last: list, keep_models: bool) -> list[RunResult]:
    """Each seed's metrics from its best epoch's weights (loaded), beside its ``last`` metrics."""
    splits = (("train", run.data.train), ("val", run.data.val), ("test", run.data.test))
    wanted = {"train": run.config.eval_train, "val": True, "test": run.config.eval_test}
    finals = [evaluate(run, split, name) for name, split in splits if wanted[name]]
    results = []
    for s, seed in enumerate(run.seeds):
        metrics = {k: v for final in [*finals, *last] for k, v in final[s].items()}
        metrics.update(
            epochs=len(run.history[s]), best_epoch=run.best_epoch[s], seconds=seconds / run.size,
            group_seconds=seconds, group_size=run.size, diverged=int(run.diverged[s]),
        )
        metrics[f"best_{run.metric}"] = run.best_value[s]
        trajectory = {name: per_seed[s] for name, per_seed in run.trajectory.items()}
        checkpoint = str(run_dir / "last.pt") if run_dir is not None else None
        config = run.config.model_copy(update={"seed": seed, "metric": run.metric}).model_dump()  # its own seed, the metric used
        model = run.model.member(s).cpu() if keep_models else None
        results.append(RunResult(seed, config, run.history[s], metrics, trajectory, checkpoint, model))
    return results
