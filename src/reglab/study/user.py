"""An ablation study of your own model and data in one call: ``reglab.study(model, data, steps=[...])``.

A thin layer over the study file's path: the arguments become a study dict (``name``, ``mode``,
``seeds``, ``metric``, ``base``, ``baseline``, ``steps``) validated by
:func:`~reglab.study.spec.parse_spec`, trained by :func:`~reglab.study.runner.run_study` into the
results store of ``out`` (default ``reglab-runs/<name>/``; a second call resumes and reuses every
finished run) and reported by :func:`~reglab.study.report.render` (``<out>/report/``), exactly as
``reglab study FILE`` does. A user's module and in-memory data are registered for the duration of
the call (:mod:`reglab.models.custom`, :mod:`reglab.data.tensors`); worker processes and Ray tasks
cannot see them, so they train with the sequential executor.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from torch import nn

from ..data.tensors import registered
from ..engine.user import ModelLike, model_name, prepare_data, seed_list, technique_spec
from ..errors import ReglabError
from ..techniques import Technique
from .report import render
from .runner import run_study
from .spec import parse_spec
from .store import Store

StepLike = dict[str, Any] | str | Technique


def step_table(step: StepLike) -> dict[str, Any]:
    """A study step: a ``{"name", "techniques", "set"}`` table as in study files, or one technique
    (a name, a ``{"name": ..., knob: value}`` table or a technique object), named after itself."""
    if isinstance(step, dict) and ("techniques" in step or "set" in step):
        return {**step, "techniques": [technique_spec(t) for t in step.get("techniques", [])]}
    spec = technique_spec(step)
    return {"name": spec["name"], "techniques": [spec]}


def study(
    model: ModelLike,
    data: Any,
    steps: Sequence[StepLike],
    *,
    baseline: Sequence[str | dict[str, Any] | Technique] = (),
    name: str = "study",
    mode: str = "incremental",
    seeds: int | Sequence[int] = 3,
    metric: str | None = None,
    out: str | Path | None = None,
    executor: str = "sequential",
    workers: int | None = None,
    grouping: str = "auto",
    progress: bool = True,
    tensorboard: str | Path | None = None,
    init: Callable[[nn.Module], object] | None = None,
    task: str | None = None,
    val: Any = None,
    test: Any = None,
    test_fraction: float = 0.2,
    **base: Any,
) -> dict[str, Any]:
    """Run the study of ``steps`` on ``model`` and ``data`` and write its report; returns the report
    table (what ``reglab study --json`` prints; ``table["errors"]`` lists runs that failed).

    ``model``, ``data``, ``init``, ``task``, ``val``, ``test``, ``test_fraction`` as in
    :func:`reglab.fit`; ``steps``: study steps or single techniques; ``baseline``: the techniques
    every configuration starts from; ``base``: RunConfig settings shared by every run (``epochs``,
    ``batch_size``, ...); ``mode``: incremental, isolated, leave-one-out or orders; ``tensorboard``: a
    folder for TensorBoard event files (:mod:`reglab.engine.tensorboard`).
    """
    prepared = prepare_data(data, base, task=task, val=val, test=test, test_fraction=test_fraction)
    in_memory = not isinstance(data, str) or not isinstance(model, str)
    if in_memory and executor != "sequential":
        raise ReglabError(f"reglab.study: executor '{executor}' runs in other processes, which cannot see an in-memory "
                          "model or data; use executor='sequential' (or a registered model and dataset name)")
    with model_name(model, init) as model_key, (nullcontext(prepared.name) if isinstance(data, str)
                                                else registered(prepared)) as dataset:
        raw = {"name": name, "mode": mode, "seeds": seed_list(seeds) if not isinstance(seeds, int) else seeds,
               "base": {**base, "model": model_key, "dataset": dataset},
               "baseline": [technique_spec(t) for t in baseline], "steps": [step_table(s) for s in steps]}
        if metric is not None:
            raw["metric"] = metric
        spec = parse_spec(raw, "reglab.study")
        folder = Path(out) if out is not None else Path("reglab-runs") / spec.name
        summary = run_study(spec, folder, executor=executor, workers=workers, grouping=grouping, progress=progress,
                            tensorboard=tensorboard)
        table = render(spec, Store(folder / "results.sqlite"), folder / "report")
    table["errors"] = summary["errors"]
    table["folder"] = str(folder)
    return table
