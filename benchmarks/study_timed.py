"""``reglab study ARGS...`` with clocks around its phases, for ``study_speed.py`` (way (c)).

Runs reglab's own command-line entry point in this process, unchanged, after wrapping a few of
reglab's functions with a timer (one ``time.perf_counter()`` pair per call, no change to what they
compute): ``train_epoch`` (training), ``evaluate`` (every evaluation: validation each epoch and the
final ones), ``save_checkpoint`` (last.pt / best.pt each epoch), ``load_data``, the grouping decision,
the study validation before training and the report. A call inside another timed call counts for the
outer one (the decision's one trial step is part of the decision). What the clocks leave out of
the command's time is the rest of reglab's bookkeeping (study planning, model building, the results
store, the command line).

Run: ``python benchmarks/study_timed.py TIMINGS.json study FILE -o OUT ...`` (the arguments after
TIMINGS.json are those of ``reglab``). Writes TIMINGS.json: the seconds of each phase, the process's
start time, when imports were done and when the command ended (``time.time()``).
"""
from __future__ import annotations

import time

STARTED = time.time()

import functools
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from reglab.engine import grouping, loop, run

cli = importlib.import_module("reglab.cli.app")  # (reglab.cli.app is also the name of the Typer app)

#: (module, function name, phase)
TIMED = (
    (loop, "train_epoch", "training"),
    (loop, "evaluate", "evaluation"),
    (loop, "save_checkpoint", "checkpoints"),
    (run, "load_data", "data loading"),
    (grouping, "load_data", "data loading"),
    (grouping, "decide", "grouping decision"),
    (cli, "validate_study", "study validation"),
    (cli, "_report", "report"),
)


class Phases:
    """Seconds per phase; a timed call inside a timed call counts for the outer one."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.depth = 0

    def wrap(self, fn: Callable, phase: str) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0
                self.calls[phase] = self.calls.get(phase, 0) + 1

        return timed

    def install(self) -> None:
        for module, name, phase in TIMED:
            setattr(module, name, self.wrap(getattr(module, name), phase))


def main(argv: list[str]) -> int:
    timings_path, args = Path(argv[0]), argv[1:]
    phases = Phases()
    phases.install()
    imported = time.time()
    sys.argv = ["reglab", *args]
    code = 0
    try:
        cli.main()
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
    ended = time.time()
    timings_path.write_text(json.dumps({"started": STARTED, "imported": imported, "ended": ended, "exit": code,
                                        "phases": phases.seconds, "calls": phases.calls}))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
