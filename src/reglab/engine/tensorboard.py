"""TensorBoard event files of a run (``reglab train --tensorboard DIR``, ``reglab study --tensorboard DIR``
or ``tensorboard = "DIR"`` in a study file), written with ``torch.utils.tensorboard.SummaryWriter``
(https://pytorch.org/docs/stable/tensorboard.html; needs the ``tensorboard`` package: ``pip install
'reglab[tensorboard]'``).

:class:`TensorBoard` is a callback. Each seed writes to ``<folder>/seed-<seed>/``: every number of its
epoch records as a scalar at step = epoch (``train_loss`` as ``train/loss``, ``val_accuracy`` as
``val/accuracy``, ``lr``, ``seconds``, ...), and at the end the run's hyperparameters (model,
dataset, techniques and their knobs, budget, seed, and the study and configuration label when the
study runner gives them) with the seed's best selection metric, for TensorBoard's HPARAMS tab
(``SummaryWriter.add_hparams``). A study writes ``<DIR>/<study>/<label>-<key>/seed-<seed>/``, so
TensorBoard groups runs by study and configuration. A resumed run appends to the same folders.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ReglabError
from .callbacks import Callback
from .progress import short_name

if TYPE_CHECKING:
    from .run import Run

_NOT_SCALARS = {"epoch", "step"}


def tag(key: str) -> str:
    """``train_loss`` -> ``train/loss`` (TensorBoard groups tags by the part before ``/``)."""
    for split in ("train_", "val_", "test_"):
        if key.startswith(split):
            return f"{split[:-1]}/{key[len(split):]}"
    return key


def hparams(config: dict[str, Any], seed: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run's hyperparameters as flat ``name: str | int | float | bool`` pairs."""
    flat: dict[str, Any] = {"model": short_name(config["model"]), "dataset": short_name(config["dataset"]),
                            "seed": seed}
    for field in ("epochs", "steps", "batch_size", "val_fraction", "split_seed", "metric", "amp"):
        if config.get(field) is not None:
            flat[field] = config[field]
    flat["techniques"] = " + ".join(t["name"] for t in config["techniques"]) or "(default)"
    for t in config["techniques"]:
        for knob, value in t.items():
            if knob != "name":
                flat[f"{t['name']}.{knob}"] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    for option, value in config.get("model_options", {}).items():
        flat[f"model_options.{option}"] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    flat.update(extra or {})
    return flat


def require_tensorboard() -> None:
    """A one-line error when the ``tensorboard`` package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ReglabError("TensorBoard logging needs the tensorboard package: pip install 'reglab[tensorboard]'")


class TensorBoard(Callback):
    """Event files of every seed of the run under ``folder`` (see the module docstring); ``extra``:
    hyperparameters to add (e.g. the study and the configuration's label)."""

    order = 95

    def __init__(self, folder: str | Path, extra: dict[str, Any] | None = None) -> None:
        require_tensorboard()
        self.folder = Path(folder)
        self.extra = dict(extra or {})
        self.writers: dict[int, Any] = {}

    def on_fit_start(self, run: Run) -> None:
        from torch.utils.tensorboard import SummaryWriter  # the optional extra, off the import path

        for seed in run.seeds:
            self.writers[seed] = SummaryWriter(str(self.folder / f"seed-{seed}"))

    def on_epoch_end(self, run: Run) -> None:
        for s, seed in enumerate(run.seeds):
            history = run.history[s]
            if not history or history[-1]["epoch"] != run.epoch:  # a stopped seed records no new epoch
                continue
            record = history[-1]
            for key, value in record.items():
                if key not in _NOT_SCALARS and isinstance(value, (int, float)):
                    self.writers[seed].add_scalar(tag(key), value, global_step=int(record["epoch"]))
            self.writers[seed].flush()

    def on_fit_end(self, run: Run) -> None:
        config = run.config.model_dump()
        for s, seed in enumerate(run.seeds):
            writer = self.writers.pop(seed)
            metrics = {f"best/{run.metric}": float(run.best_value[s]), "best/epoch": float(run.best_epoch[s])}
            writer.add_hparams(hparams(config, seed, self.extra), metrics, run_name=".")
            writer.close()
