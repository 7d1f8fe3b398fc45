"""Run a study: plan its configurations, train what the store lacks, write the report.

The driver (this module, in the calling process) alone writes the store. Work goes out as *jobs*
(one configuration, the seeds it still needs) to an executor:

- ``sequential``: in this process, one job after the other (default);
- ``processes``: a pool of local worker processes (one per GPU when there are several, else
  ``workers`` CPU processes sharing the cores); records stream back through a queue;
- ``ray``: Ray tasks on a local Ray instance or the cluster at ``ray_address`` (``pip install
  reglab[ray]``); each task returns its records when it ends.

Interrupted studies resume: finished (configuration, seed) runs are skipped, and an unfinished job
continues from its checkpoint folder ``<out>/checkpoints/<label>-<config key>/``. Studies grow: runs
are keyed by (resolved configuration, seed), so an edited study (a step added, a knob changed, more
seeds) run in the same folder trains only the (configuration, seed) pairs the store lacks.

Same study, same numbers: every executor trains with the same number of torch threads (``threads``,
default :func:`reglab.engine.machine.default_threads`: torch's setting in the calling process, at most
the CPUs it may use; float results depend on it), and whether a
configuration's seeds train stacked is a deterministic rule (:func:`reglab.engine.grouping.decide`),
recorded in the store.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import re
import threading
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..engine.callbacks import Callback
from ..engine import machine
from ..engine.grouping import fit_seeds
from ..engine.progress import progress_bar
from ..engine.tensorboard import TensorBoard, require_tensorboard
from ..errors import ReglabError
from .plan import Planned, plan
from .report import build_table
from .tune import tune
from .validate import validate_study
from .spec import StudySpec
from .store import Store

Event = tuple  # ("start" | "epoch" | "result" | "error" | "decision", job key, payload...)


@dataclass
class Job:
    key: str
    label: str
    config: dict[str, Any]  # RunConfig as a dict (picklable, JSON-able)
    seeds: list[int]
    run_dir: str
    grouping: str = "auto"
    threads: int = 1
    tensorboard: str | None = None  # this configuration's TensorBoard folder (one subfolder per seed)


class _EpochEvents(Callback):
    """Callback that emits each seed's new epoch record."""

    order = 100

    def __init__(self, key: str, emit: Callable[[Event], None]) -> None:
        self.key, self.emit = key, emit

    def on_epoch_end(self, run: Any) -> None:
        for s, seed in enumerate(run.seeds):
            history = run.history[s]
            if history and history[-1]["epoch"] == run.epoch:
                self.emit(("epoch", self.key, seed, history[-1]))


def execute(job: Job, emit: Callable[[Event], None]) -> None:
    """Train one job with ``job.threads`` torch threads, emitting events; safe to call in a worker process."""
    config = RunConfig(**job.config)
    for seed in job.seeds:
        emit(("start", job.key, seed))
    threads = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        fit_seeds(
            config, job.seeds, run_dir=job.run_dir, grouping=job.grouping,
            callbacks=(_EpochEvents(job.key, emit), *_logging(job)),
            on_result=lambda r: emit(("result", job.key, r)),
            on_decision=lambda d: emit(("decision", job.key, d.grouped, d.reason)), keep_models=False,
        )
    except ReglabError:
        raise
    except Exception as err:  # noqa: BLE001 - reported per job; the study goes on with other jobs
        emit(("error", job.key, job.seeds, f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=5)}"))
    finally:
        torch.set_num_threads(threads)


def _logging(job: Job) -> tuple[Callback, ...]:
    """The job's TensorBoard callback, when the study writes event files."""
    if job.tensorboard is None:
        return ()
    return (TensorBoard(job.tensorboard, {"label": job.label, "config_key": job.key}),)


# ---- executors ---------------------------------------------------------------------------------
def run_sequential(jobs: list[Job], handle: Callable[[Event], None], **_: Any) -> None:
    for job in jobs:
        execute(job, handle)


_worker_queue: Any = None


def _init_worker(q: Any, devices: list[str], counter: Any) -> None:
    global _worker_queue
    _worker_queue = q
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if devices:
        os.environ["REGLAB_DEVICE"] = devices[index % len(devices)]


def _execute_in_worker(job: Job) -> None:
    device = os.environ.get("REGLAB_DEVICE")
    if device:
        job.config = {**job.config, "device": device}
    execute(job, _worker_queue.put)


def run_processes(jobs: list[Job], handle: Callable[[Event], None], workers: int | None = None, **_: Any) -> None:
    ctx = mp.get_context("spawn")
    gpus = torch.cuda.device_count()
    devices = [f"cuda:{i}" for i in range(gpus)]
    workers = workers or max(1, gpus) or 1
    threads = max((j.threads for j in jobs), default=1)
    if not devices and workers * threads > (os.cpu_count() or 1):
        warnings.warn(f"{workers} workers x {threads} torch threads exceed the {os.cpu_count()} CPUs: training is "
                      "oversubscribed (each run keeps its thread count so that the numbers do not depend on the "
                      "executor; pass a smaller --threads for faster, different numbers)", stacklevel=2)
    manager = ctx.Manager()
    q = manager.Queue()
    counter = ctx.Value("i", 0)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set() or not q.empty():
            try:
                handle(q.get(timeout=0.1))
            except queue.Empty:
                continue

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(q, devices, counter)) as pool:
            for future in [pool.submit(_execute_in_worker, job) for job in jobs]:
                future.result()
    finally:
        stop.set()
        reader.join()
        manager.shutdown()


def run_ray(jobs: list[Job], handle: Callable[[Event], None], ray_address: str | None = None,
            gpus_per_job: float | None = None, **_: Any) -> None:
    try:
        import ray
    except ImportError:
        raise ReglabError("executor ray needs Ray: pip install 'reglab[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=ray_address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    if gpus_per_job is None:
        gpus_per_job = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0

    @ray.remote(num_gpus=gpus_per_job)
    def remote(job: Job) -> list[Event]:
        events: list[Event] = []
        execute(job, events.append)
        return events

    pending = {remote.remote(job): job for job in jobs}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            pending.pop(ref)
            for event in ray.get(ref):
                handle(event)


EXECUTORS: dict[str, Callable[..., None]] = {"sequential": run_sequential, "processes": run_processes, "ray": run_ray}


# ---- the driver --------------------------------------------------------------------------------
class _Driver:
    """Receives events, writes the store, shows progress."""

    def __init__(self, store: Store, planned: dict[str, Planned], jobs: list[Job], total: int, name: str,
                 progress: bool) -> None:
        self.store, self.planned = store, planned
        self.labels = {j.key: j.label for j in jobs}
        self.threads = {j.key: j.threads for j in jobs}
        self.sizes = {j.key: len(j.seeds) for j in jobs}
        self.errors: list[str] = []
        self.decisions: dict[str, tuple[bool, str]] = {}
        self.runs_total = total
        self.runs_done = total - sum(len(j.seeds) for j in jobs)
        self.bar = None
        if progress:  # a bar on a terminal, one line per epoch in a log
            units = sum(len(j.seeds) * RunConfig(**j.config).epochs for j in jobs)
            self.bar = progress_bar(units, f"study {name}", "epoch")
            self._postfix("")

    def _postfix(self, current: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"runs {self.runs_done}/{self.runs_total} {current}")

    def handle(self, event: Event) -> None:
        kind, key = event[0], event[1]
        label = self.labels.get(key, key)
        config = self.planned[key].config
        if kind == "start":
            self.store.start_run(key, event[2], label, config.model_dump(), config.device, self.threads[key])
        elif kind == "epoch":
            seed, record = event[2], event[3]
            self.store.add_epoch(key, seed, record)
            if self.bar is not None:
                self.bar.update(1)
                self._postfix(f"| {label} seed {seed} epoch {record['epoch']}/{config.epochs}")
        elif kind == "result":
            result = event[2]
            self.store.finish_run(key, result)
            self.runs_done += 1
            if self.bar is not None:
                self.bar.update(max(0, config.epochs - len(result.history)))  # stopped early
                self._postfix(f"| {label} seed {result.seed} done")
        elif kind == "decision":
            self.decisions[key] = (event[2], event[3])
            if self.sizes[key] > 1 or key not in self.store.decisions():  # a lone leftover seed says little
                self.store.record_decision(key, event[2], event[3])
        elif kind == "error":
            seeds, message = event[2], event[3]
            for seed in seeds:
                self.store.fail_run(key, seed, message)
            self.errors.append(f"{label} seeds {seeds}: {message.splitlines()[0]}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


GROUPINGS = ("auto", "group", "single")


def folder_name(label: str, key: str) -> str:
    """A configuration's checkpoint folder: its label as a slug, then its key (``adamw-1f1c3662bf18``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:48].rstrip("-")
    return f"{slug}-{key}" if slug else key


def run_study(
    spec: StudySpec,
    out: str | Path,
    *,
    executor: str = "sequential",
    workers: int | None = None,
    ray_address: str | None = None,
    device: str | None = None,
    grouping: str = "auto",
    threads: int | None = None,
    progress: bool = True,
    tensorboard: str | Path | None = None,
    validate: bool = True,
) -> dict[str, Any]:
    """Train every (configuration, seed) of ``spec`` the store in ``out`` lacks; return the
    driver's summary (errors, grouping decisions, runs planned, reused and trained). Everything is
    validated (the configurations are planned) before the folder or its store is created. With
    adaptive seeds, seeds are added look by look to the configurations of undecided comparisons
    (:class:`~reglab.study.spec.AdaptiveSeeds`). The report is built by :mod:`.report`.
    ``tensorboard``: a folder for event files, ``<tensorboard>/<study>/<label>-<key>/seed-<seed>/``.
    ``validate``: build and check every configuration first (:func:`~reglab.study.validate.validate_study`;
    the CLI does it before it locks the folder, and passes False)."""
    if executor not in EXECUTORS:
        raise ReglabError(f"unknown executor '{executor}' (allowed: {', '.join(EXECUTORS)})")
    if grouping not in GROUPINGS:
        raise ReglabError(f"unknown grouping '{grouping}' (allowed: {', '.join(GROUPINGS)})")
    if tensorboard is not None:
        require_tensorboard()
    threads = threads or machine.default_threads()
    if validate:  # every configuration built and checked before anything is created
        validate_study(spec, f"study {spec.name}", device=device)
    out = Path(out)
    store = Store(out / "results.sqlite")
    definition = store.save_definition(spec.name, spec.model_dump())
    before = store.finished()
    errors: list[str] = []
    decisions: dict[str, tuple[bool, str]] = {}
    trained, started = 0, time.perf_counter()

    def train(items: list[Planned], wanted: dict[str, list[int]]) -> None:
        nonlocal trained, errors
        finished = store.finished()
        jobs = []
        for p in items:
            if device is not None:
                p.config = p.config.model_copy(update={"device": device})
            todo = [s for s in wanted[p.key] if (p.key, s) not in finished]
            if todo:
                folder = folder_name(p.label, p.key)
                board = str(Path(tensorboard) / spec.name / folder) if tensorboard is not None else None
                jobs.append(Job(p.key, p.label, p.config.model_dump(), todo, str(out / "checkpoints" / folder), grouping,
                                threads, board))
        driver = _Driver(store, {p.key: p for p in items}, jobs, sum(len(v) for v in wanted.values()), spec.name,
                         progress)
        try:
            EXECUTORS[executor](jobs, driver.handle, workers=workers, ray_address=ray_address)
        finally:
            driver.close()
        trained += sum(len(j.seeds) for j in jobs)
        errors += driver.errors
        decisions.update(driver.decisions)
        if driver.errors:
            raise _Failed

    def train_trials(items: list[tuple[str, str, Any]]) -> None:  # tuning candidates on the tuning seeds
        train([Planned(label, config, key, []) for key, label, config in items], {key: spec.tune_seed_list for key, _, _ in items})

    wanted: dict[str, list[int]] = {}
    try:
        chosen, _ = tune(spec, store, train_trials)
        planned = plan(chosen)
        wanted.update({p.key: chosen.seed_list[: chosen.looks[0]] for p in planned})
        while True:
            train(planned, wanted)
            if not chosen.adaptive or not _more_seeds(chosen, store, wanted):
                break
    except _Failed:
        pass
    planned_runs = sum(len(v) for v in wanted.values())
    reused = sum((key, s) in before for key, seeds in wanted.items() for s in seeds)
    store.record_invocation(definition, planned_runs, reused, trained, machine.line(), time.perf_counter() - started)
    return {"errors": errors, "decisions": decisions, "seconds": time.perf_counter() - started,
            "planned": planned_runs, "reused": reused, "trained": trained}


class _Failed(Exception):
    """A job failed: the study stops after the round it was in (the errors are reported)."""


def _more_seeds(spec: StudySpec, store: Store, wanted: dict[str, list[int]]) -> bool:
    """After a look: give the next look's seeds to both configurations of every undecided
    comparison; whether any configuration got more."""
    table = build_table(spec, store)
    grown = False
    for c in table["comparisons"]:
        if c["state"] != "undecided":
            continue
        after = next((m for m in spec.looks if m > c["n"]), None)
        for key in (c["a_key"], c["b_key"]):
            if after is not None and len(wanted[key]) < after:
                wanted[key] = spec.seed_list[:after]
                grown = True
    return grown
