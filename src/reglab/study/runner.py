"""Run a study: plan its configurations, train what the store lacks, write the report.

The driver (this module, in the calling process) alone writes the store. Work goes out as *jobs*
(one configuration, the seeds it still needs) to an executor:

- ``sequential``: in this process, one job after the other (default);
- ``processes``: a pool of local worker processes (one per GPU when there are several, else
  ``workers`` CPU processes sharing the cores); records stream back through a queue;
- ``ray``: Ray tasks on a local Ray instance or the cluster at ``ray_address`` (``pip install
  reglab[ray]``); each task returns its records when it ends.

Interrupted studies resume: finished (configuration, seed) runs are skipped, and an unfinished job
continues from its checkpoint folder ``<out>/checkpoints/<label>-<config key>/``.
"""
from __future__ import annotations

import os
import queue
import re
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..engine.callbacks import Callback
from ..engine.grouping import fit_seeds
from ..engine.progress import progress_bar
from ..engine.tensorboard import TensorBoard, require_tensorboard
from ..errors import ReglabError
from .plan import Planned, plan
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
    """Train one job, emitting events; safe to call in a worker process."""
    config = RunConfig(**job.config)
    for seed in job.seeds:
        emit(("start", job.key, seed))
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


def _init_worker(q: Any, devices: list[str], counter: Any, threads: int) -> None:
    global _worker_queue
    import torch

    _worker_queue = q
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if devices:
        os.environ["REGLAB_DEVICE"] = devices[index % len(devices)]
    torch.set_num_threads(max(1, threads))


def _execute_in_worker(job: Job) -> None:
    device = os.environ.get("REGLAB_DEVICE")
    if device:
        job.config = {**job.config, "device": device}
    execute(job, _worker_queue.put)


def run_processes(jobs: list[Job], handle: Callable[[Event], None], workers: int | None = None, **_: Any) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import torch

    ctx = mp.get_context("spawn")
    gpus = torch.cuda.device_count()
    devices = [f"cuda:{i}" for i in range(gpus)]
    workers = workers or max(1, gpus) or 1
    threads = max(1, (os.cpu_count() or 1) // workers)
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
                                 initargs=(q, devices, counter, threads)) as pool:
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

    def __init__(self, spec: StudySpec, store: Store, planned: dict[str, Planned], jobs: list[Job], progress: bool):
        self.spec, self.store, self.planned = spec, store, planned
        self.labels = {j.key: j.label for j in jobs}
        self.errors: list[str] = []
        self.decisions: dict[str, tuple[bool, str]] = {}
        self.runs_total = len(spec.seed_list) * len(planned)
        self.runs_done = self.runs_total - sum(len(j.seeds) for j in jobs)
        self.bar = None
        if progress:  # a bar on a terminal, one line per epoch in a log
            units = sum(len(j.seeds) * RunConfig(**j.config).epochs for j in jobs)
            self.bar = progress_bar(units, f"study {spec.name}", "epoch")
            self._postfix("")

    def _postfix(self, current: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"runs {self.runs_done}/{self.runs_total} {current}")

    def handle(self, event: Event) -> None:
        kind, key = event[0], event[1]
        label = self.labels.get(key, key)
        config = self.planned[key].config
        if kind == "start":
            self.store.start_run(self.spec.name, key, event[2], label, config.model_dump(), config.device)
        elif kind == "epoch":
            seed, record = event[2], event[3]
            self.store.add_epoch(self.spec.name, key, seed, record)
            if self.bar is not None:
                self.bar.update(1)
                self._postfix(f"| {label} seed {seed} epoch {record['epoch']}/{config.epochs}")
        elif kind == "result":
            result = event[2]
            self.store.finish_run(self.spec.name, key, result)
            self.runs_done += 1
            if self.bar is not None:
                self.bar.update(max(0, config.epochs - len(result.history)))  # stopped early
                self._postfix(f"| {label} seed {result.seed} done")
        elif kind == "decision":
            self.decisions[key] = (event[2], event[3])
        elif kind == "error":
            seeds, message = event[2], event[3]
            for seed in seeds:
                self.store.fail_run(self.spec.name, key, seed, message)
            self.errors.append(f"{label} seeds {seeds}: {message.splitlines()[0]}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
    progress: bool = True,
    tensorboard: str | Path | None = None,
) -> dict[str, Any]:
    """Train every (configuration, seed) of ``spec`` the store in ``out`` lacks; return the
    driver's summary (errors, grouping decisions). The report is built by :mod:`.report`.
    ``tensorboard``: a folder for event files, ``<tensorboard>/<study>/<label>-<key>/seed-<seed>/``."""
    if executor not in EXECUTORS:
        raise ReglabError(f"unknown executor '{executor}' (allowed: {', '.join(EXECUTORS)})")
    if tensorboard is not None:
        require_tensorboard()
    out = Path(out)
    store = Store(out / "results.sqlite")
    previous = store.study_spec(spec.name)
    if previous is not None and previous != spec.model_dump():
        raise ReglabError(f"{out}: holds study '{spec.name}' with a different definition; use another --out")
    store.save_study(spec.name, spec.model_dump())
    planned = plan(spec)
    if device is not None:
        for p in planned:
            p.config = p.config.model_copy(update={"device": device})
    done = store.done(spec.name)
    jobs = []
    for p in planned:
        todo = [s for s in spec.seed_list if (p.key, s) not in done]
        if todo:
            folder = folder_name(p.label, p.key)
            board = str(Path(tensorboard) / spec.name / folder) if tensorboard is not None else None
            jobs.append(Job(p.key, p.label, p.config.model_dump(), todo, str(out / "checkpoints" / folder), grouping, board))
    driver = _Driver(spec, store, {p.key: p for p in planned}, jobs, progress)
    started = time.perf_counter()
    try:
        EXECUTORS[executor](jobs, driver.handle, workers=workers, ray_address=ray_address)
    finally:
        driver.close()
    return {"errors": driver.errors, "decisions": driver.decisions, "seconds": time.perf_counter() - started,
            "jobs": len(jobs)}
