"""Checkpoints: a run's whole state, written atomically, verified on load, read without executing code.

File layout: ``MAGIC`` (8 bytes), the SHA-256 digest (32 bytes) of the rest, then the bytes of
``torch.save(state)``. The digest lives inside the file rather than in a sidecar so that one atomic
rename publishes a checkpoint and its digest together: there is no moment at which a file and its
digest disagree. ``torch.save`` writes a zip archive whose CRC-32s ``torch.load`` does not check
(4 KB of random bytes in a ``last.pt`` used to load silently with wrong weights); the digest catches
that, a truncated or empty file, and a file that is not a reglab checkpoint. Such a file is never
used: :func:`load` raises :class:`CorruptCheckpoint`.

:func:`save` writes to a temporary file ``.<name>.<random>.tmp`` in the same folder, fsyncs it and
renames it over the target (``os.replace``, atomic on POSIX), so a crash never leaves a half-written
checkpoint under its real name; a killed writer leaves only the temporary file, which
:func:`remove_temporary` deletes when the run starts again. :func:`load` reads with
``torch.load(weights_only=True)``: only tensors and plain Python containers/numbers/strings are
accepted, never pickled code.

:func:`save_checkpoint` / :func:`load_checkpoint` hold everything a resumed run needs (model,
optimizer, epoch and step, every random stream, history, best states, and each technique's and
callback's state under its ``state_key``), so it ends exactly like an uninterrupted one, and the
dataset's :func:`~reglab.data.signature.signature` (task, classes, shapes, normalization), so that
:func:`reglab.load` rebuilds the trained model without the dataset. A run folder holds ``last.pt``
(the latest epoch), ``last.prev.pt`` (the epoch before, kept for when ``last.pt`` is unusable) and
``best.pt`` (the latest epoch at which a seed improved); :func:`resume_checkpoint` falls back from
``last.pt`` to ``last.prev.pt`` and then to a fresh start, saying so in one warning.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..data.signature import signature
from ..errors import ReglabError, first_line, os_advice, warn
from .callbacks import state_keys

if TYPE_CHECKING:
    from .run import Run

#: bump when the checkpoint layout changes; older files are refused with a one-line error
CHECKPOINT_VERSION = 5  # 3: random streams by name, lr_scale, stop_state; 4: the dataset's signature; 5: digest header
#: the first bytes of every reglab checkpoint file, followed by the SHA-256 digest of the payload
MAGIC = b"RGLBCKPT"
_HEADER = len(MAGIC) + hashlib.sha256().digest_size
LAST, PREVIOUS, BEST = "last.pt", "last.prev.pt", "best.pt"


class CorruptCheckpoint(ReglabError):
    """A checkpoint file that must not be used: empty, truncated, altered, or not written by reglab."""


def _encode(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    return MAGIC + hashlib.sha256(payload).digest() + payload


def _write(blob: bytes, path: Path) -> None:
    """Write ``blob`` to ``path`` atomically: a temporary file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _keep_previous(last: Path) -> None:
    """Publish the current ``last.pt`` as ``last.prev.pt`` atomically (a hard link renamed into
    place, or a copy where the file system has no hard links); ``last.pt`` itself stays in place."""
    tmp = last.with_name(f".{PREVIOUS}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(last, tmp)
    except OSError:
        shutil.copyfile(last, tmp)
    os.replace(tmp, last.with_name(PREVIOUS))


def save(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically, with its digest (one-line error when the disk refuses)."""
    path = Path(path)
    blob = _encode(state)
    try:
        _write(blob, path)
    except OSError as err:
        raise ReglabError(f"cannot write checkpoint {path}: {os_advice(err)}") from err


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save` after checking its digest; raises
    :class:`CorruptCheckpoint` for a file that is empty, truncated, altered or not reglab's."""
    path = Path(path)
    if not path.is_file():
        raise ReglabError(f"checkpoint not found: {path}")
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise ReglabError(f"cannot read checkpoint {path}: {os_advice(err)}") from err
    if not blob:
        raise CorruptCheckpoint(f"{path}: empty checkpoint file")
    if not blob.startswith(MAGIC):
        raise CorruptCheckpoint(f"{path}: not a reglab checkpoint (no digest header: written by another program, "
                                "an older reglab, or its first bytes were overwritten)")
    payload = blob[_HEADER:]
    if hashlib.sha256(payload).digest() != blob[len(MAGIC):_HEADER]:
        raise CorruptCheckpoint(f"{path}: corrupted checkpoint (its SHA-256 digest does not match: truncated or altered)")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - an intact file torch refuses (e.g. pickled code) is still one line
        raise ReglabError(f"cannot read checkpoint {path}: {first_line(err)}") from None


def remove_temporary(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files that a killed :func:`save` left in ``run_dir``; returns them."""
    leftovers = sorted(Path(run_dir).glob(".*.pt.*.tmp"))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


def save_checkpoint(run: Run, run_dir: Path, best: bool = False) -> None:
    """Write the run's state to ``run_dir/last.pt`` (the previous one kept as ``last.prev.pt``) and,
    when ``best``, to ``run_dir/best.pt``: serialized once, each file written atomically."""
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
    blob = _encode(state)
    last = run_dir / LAST
    try:
        if last.exists():
            _keep_previous(last)
        _write(blob, last)
        if best:
            _write(blob, run_dir / BEST)
    except OSError as err:
        raise ReglabError(f"cannot write checkpoint in {run_dir}: {os_advice(err)}") from err


def load_checkpoint(run: Run, path: Path) -> None:
    """Restore ``run`` from the checkpoint ``path`` (verified first; nothing changes if it is unusable)."""
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


def resume_checkpoint(run: Run, run_dir: Path) -> bool:
    """Restore ``run`` from the newest usable checkpoint in ``run_dir``: ``last.pt``, else
    ``last.prev.pt``. A corrupted file is renamed ``<name>.corrupt`` and never used; one warning says
    which file was used instead. Returns False when none is usable (the run starts from scratch)."""
    problems = []
    for name in (LAST, PREVIOUS):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            load_checkpoint(run, path)
        except CorruptCheckpoint as err:
            path.replace(path.with_name(f"{name}.corrupt"))
            problems.append(f"{err} (moved aside as {name}.corrupt)")
            continue
        if problems:
            warn(f"{'; '.join(problems)}; resuming from {path} (epoch {run.epoch})")
        return True
    if problems:
        warn(f"{'; '.join(problems)}; no usable checkpoint left: training this run from the start")
    return False
