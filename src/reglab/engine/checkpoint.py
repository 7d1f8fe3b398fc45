"""Checkpoints: a run's whole state, written atomically, read without executing code.

``save`` writes to a temporary file in the same folder and renames it over the target, so a crash
never leaves a half-written checkpoint. ``load`` uses ``torch.load(weights_only=True)``: only tensors
and plain Python containers/numbers/strings are accepted, never pickled code.
:func:`save_checkpoint` / :func:`load_checkpoint` hold everything a resumed run needs (model,
optimizer, epoch and step, every random stream, history, best states, and each technique's and
callback's state under its ``state_key``), so it ends exactly like an uninterrupted one, and the
dataset's :func:`~reglab.data.signature.signature` (task, classes, shapes, normalization), so that
:func:`reglab.load` rebuilds the trained model without the dataset.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..data.signature import signature
from ..errors import ReglabError
from .callbacks import state_keys

if TYPE_CHECKING:
    from .run import Run

#: bump when the checkpoint layout changes; older files are refused with a one-line error
CHECKPOINT_VERSION = 4  # 3: random streams by name, lr_scale, stop_state; 4: the dataset's signature (reglab.load)


def save(state: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ReglabError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user-facing error
        raise ReglabError(f"cannot read checkpoint {path}: {str(err).splitlines()[0]}") from None


def save_checkpoint(run: Run, path: Path) -> None:
    state = {
        "version": CHECKPOINT_VERSION,
        "config": run.config.model_dump(),
        "seeds": run.seeds,
        "epoch": run.epoch,
        "step": run.step,
        "batches": run.batches,
        "order_state": run.order_state,
        "cursor": run.cursor,
        "elapsed": run.elapsed,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict() if run.optimizer else None,
        "states": dict(zip(state_keys(run.participants), (p.state_dict() for p in run.participants))),
        "streams": {name: [g.get_state() for g in gens] for name, gens in run.streams.items()},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if run.device.type == "cuda" else [],
        "history": run.history,
        "stopped": run.stopped,
        "diverged": run.diverged,
        "lr_scale": run.lr_scale,
        "stop_state": run.stop_state,
        "best_value": run.best_value,
        "best_epoch": run.best_epoch,
        "best_state": run.best_state,
        "trajectory": run.trajectory,
        "data": signature(run.data),
    }
    save(state, path)


def load_checkpoint(run: Run, path: Path) -> None:
    state = load(path, map_location=run.device)
    if state.get("version") != CHECKPOINT_VERSION:
        raise ReglabError(f"{path}: checkpoint format {state.get('version')} is not this reglab's ({CHECKPOINT_VERSION}); "
                          "delete the run folder to retrain it")
    if state["config"] != run.config.model_dump() or state["seeds"] != run.seeds:
        raise ReglabError(f"{path}: checkpoint was written for another configuration or seeds; use a new run folder")
    run.epoch, run.step, run.batches, run.elapsed = state["epoch"], state["step"], state["batches"], state["elapsed"]
    run.order_state, run.cursor = state["order_state"], state["cursor"]
    run.model.load_state_dict(state["model"])
    if run.optimizer is not None:
        run.optimizer.load_state_dict(state["optimizer"])
    states = state["states"]
    for key, p in zip(state_keys(run.participants), run.participants):
        if key in states:
            p.load_state_dict(states[key])
    run.streams = {name: [torch.Generator().set_state(g.cpu()) for g in states] for name, states in state["streams"].items()}
    torch.set_rng_state(state["torch_rng"].cpu())
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    run.history, run.stopped, run.diverged = state["history"], state["stopped"], state["diverged"]
    run.stop_state, run.lr_scale = state["stop_state"], state["lr_scale"]
    run.best_value, run.best_epoch = state["best_value"], state["best_epoch"]
    run.best_state = state["best_state"]
    run.trajectory = state["trajectory"]
