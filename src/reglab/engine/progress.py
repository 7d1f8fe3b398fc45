"""Progress that stays readable in logs: a tqdm bar on a terminal, one line per update otherwise.

:func:`progress_bar` returns a tqdm bar when stderr is a terminal and a :class:`Lines` printer with
the same small interface (``update``, ``set_postfix_str``, ``close``) when it is not (a log file, a
pipe, CI), so a log holds one readable line per epoch (or per run, per panel) instead of thousands
of carriage-return redraws. :class:`Progress` is the training loop's callback: one bar over the
run's epochs, or one line per epoch with the latest metrics.
"""
from __future__ import annotations

import math
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from .callbacks import Callback

if TYPE_CHECKING:
    from .run import Run


class Lines:
    """Progress as lines: ``desc: unit n/total postfix (elapsed)`` on every ``set_postfix_str``."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, stream: IO[str] | None = None) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str) -> None:
        elapsed = time.perf_counter() - self.started
        line = f"{self.desc}: {self.unit} {self.n}/{self.total} {text}".rstrip()
        print(f"{line} ({elapsed:.1f} s)", file=self.stream, flush=True)

    def close(self) -> None:
        """Nothing to clear: every line is already written."""


def is_terminal(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def progress_bar(total: int, desc: str, unit: str, initial: int = 0) -> Any:
    """A tqdm bar on a terminal (kept on screen at the end), else :class:`Lines`."""
    if not is_terminal(sys.stderr):
        return Lines(total, desc, unit, initial)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=True, dynamic_ncols=True, file=sys.stderr)


def short_name(name: str) -> str:
    """A model or dataset name without its fingerprint (``custom:Net@1f1c...`` -> ``Net``)."""
    return name.split("@")[0].removeprefix("custom:")


def summary(run: Run) -> str:
    """The first seed's latest losses and selection metric."""
    rec = run.history[0][-1] if run.history[0] else {}
    keys = [k for k in ("train_loss", "val_loss", run.metric) if k in rec]
    return " ".join(f"{k}={rec[k]:.4g}" for k in dict.fromkeys(keys))


class Progress(Callback):
    """The run's progress over epochs (see the module docstring); ``fit(progress=True)`` adds it."""

    order = 90

    def __init__(self) -> None:
        self.bar: Any = None

    def on_epoch_start(self, run: Run) -> None:
        if self.bar is None:  # first epoch of this process (a resumed run starts at its checkpoint's epoch)
            per = run.config.eval_every or run.steps_per_epoch
            label = f"{short_name(run.config.model)} on {short_name(run.config.dataset)}"
            if run.size > 1:
                label += f" x{run.size} seeds"
            self.bar = progress_bar(math.ceil(run.total_batches / per), label, "epoch", initial=run.epoch)

    def on_epoch_end(self, run: Run) -> None:
        self.bar.update(1)
        self.bar.set_postfix_str(summary(run))

    def on_fit_end(self, run: Run) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
