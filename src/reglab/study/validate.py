"""Validate a run or a whole study before anything is created.

:func:`parse_spec` checks a study file's fields and techniques on their own; :func:`validate_config`
then builds a configuration as the training loop would, without training it: the device, the dataset
and its options, the model and its options (a batch larger than the training split is a warning), the
techniques' model transforms and their start-of-fit checks (``on_fit_start``). It evaluates the
freshly built model on a few validation rows to learn the metric names the configuration records
(the loop's ``evaluate`` plus the techniques' ``batch_metrics``), so that a selection ``metric`` or
a ``report_metric`` that would never be recorded is refused too. :func:`validate_study` does this for
every planned configuration of a study (each distinct dataset loaded once): a study that fails here
leaves no folder, no store and no file behind.

Errors name the file and the field that set the failing value, e.g.
``study.toml: base.model: unknown model 'mlpx' (...)``,
``study.toml: steps[2] (wide).set.model_options: model mlp.hidden.0: ...`` or, for ``reglab train``,
``--metric: 'val_acc' is never recorded (recorded: ...)``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable

import torch

from ..config import RunConfig
from ..data import DATASETS, Data, _import_loaders, load, subset
from ..engine.loop import evaluate
from ..engine.run import Run, build_run, select_device
from ..errors import ReglabError
from ..metrics import on_split
from ..models import MODELS, _import_builders
from ..techniques import build_member
from .plan import Planned, plan
from .spec import StudySpec

#: validation rows evaluated per configuration to learn its metric names
PROBE_ROWS = 8


def _at(field: str, err: ReglabError) -> ReglabError:
    """``err`` prefixed with ``field`` (a message that starts with the field's own name, like
    ``device: ...``, does not repeat it)."""
    name = re.split(r"[.: ]", field)[-1].lstrip("-").replace("-", "_")
    return ReglabError(f"{field}: {str(err).removeprefix(f'{name}: ')}")


def validate_config(
    config: RunConfig,
    seed: int,
    field: Callable[[str], str],
    where: str,
    *,
    report_metric: str | None = None,
    datasets: dict[str, Data] | None = None,
) -> Data:
    """Build ``config`` once for ``seed`` (no training) and check the metrics it records; returns
    its dataset. A problem raises a one-line :class:`ReglabError` starting with ``field(name)`` for
    the RunConfig field ``name`` that set the failing value, or with ``where`` for a problem of the
    configuration as a whole (a technique that does not fit the task). ``report_metric``: the metric
    a study compares (default: the test twin of the selection metric). ``datasets`` caches loaded
    datasets across calls. Creates no file; the global random state is left as it was."""
    _import_loaders()
    _import_builders()
    datasets = {} if datasets is None else datasets
    config = config.model_copy(update={"compile": False})  # nothing is trained: no compilation
    try:
        target = select_device(config.device)
    except ReglabError as err:
        raise _at(field("device"), err) from None
    key = json.dumps([config.dataset, config.dataset_options, config.val_fraction, config.split_seed, str(target)],
                     sort_keys=True, default=str)
    if key not in datasets:
        known = config.dataset.partition(":")[0] in DATASETS
        try:
            datasets[key] = load(config.dataset, val_fraction=config.val_fraction, split_seed=config.split_seed,
                                 **config.dataset_options).to(target)
        except ReglabError as err:
            raise _at(field("dataset_options" if known and config.dataset_options else "dataset"), err) from None
    data = datasets[key]
    with torch.random.fork_rng():
        try:
            build_member(config, data, [])
        except ReglabError as err:
            raise _at(field("model_options" if config.model in MODELS and config.model_options else "model"), err) from None
        try:
            run = build_run(config, [seed], data)
            for hook in run.hooks["on_fit_start"]:
                hook(run)
            names = _recorded(run)
        except ReglabError as err:
            raise ReglabError(f"{where}: {err}") from None
    _check_metrics(run, names, field("metric"), report_metric, field("report_metric"))
    return data


def _recorded(run: Run) -> set[str]:
    """The metric names (without split) that ``evaluate`` records for ``run``, from a few rows."""
    split = run.data.val if len(run.data.val) else run.data.test
    probe = subset(run.data, n_val=min(PROBE_ROWS, len(split))).val if split is run.data.val else split
    return {name.split("_", 1)[1] for name in evaluate(run, probe, "val")[0]}


def _check_metrics(run: Run, names: set[str], metric_field: str, report_metric: str | None, report_field: str) -> None:
    """The selection metric must be in each epoch's record, the report metric in the final metrics."""
    selectable = {"train_loss", *(f"val_{n}" for n in names)}
    if run.data.task == "classification" and not run.hooks["train_step"]:
        selectable.add("train_accuracy")
    if run.metric not in selectable:
        raise ReglabError(f"{metric_field}: '{run.metric}' is never recorded (recorded: {', '.join(sorted(selectable))})")
    splits = ["val", "test"] + (["train"] if run.config.eval_train else [])
    final = {f"{s}_{n}" for s in splits for n in names}
    compared = report_metric or on_split(run.metric, "test")
    if compared not in final:
        what = report_field if report_metric else f"{metric_field} (its test twin)"
        raise ReglabError(f"{what}: '{compared}' is never recorded (recorded: {', '.join(sorted(final))})")


def _field(spec: StudySpec, planned: Planned, name: str, device: str | None) -> str:
    """Where the value of RunConfig field ``name`` of a configuration comes from: ``--device``, the
    last step that sets it, the study's ``metric`` / ``report_metric``, or ``base``."""
    if name == "device" and device is not None:
        return "--device"
    index = {step.name: i for i, step in enumerate(spec.steps)}
    for step in reversed(planned.steps):
        if name in spec.steps[index[step]].set:
            return f"steps[{index[step]}] ({step}).set.{name}"
    if name == "report_metric" or (name == "metric" and spec.metric is not None and "metric" not in spec.base):
        return name
    return f"base.{name}"


def validate_study(spec: StudySpec, where: str, device: str | None = None) -> None:
    """:func:`validate_config` for every planned configuration of ``spec`` (its first seed), errors
    naming ``where`` (the study file) and the field; ``device`` overrides every configuration's
    device (the CLI's ``--device``)."""
    datasets: dict[str, Data] = {}
    for p in plan(spec):
        config = p.config if device is None else p.config.model_copy(update={"device": device})
        validate_config(config, spec.seed_list[0], lambda name, p=p: f"{where}: {_field(spec, p, name, device)}",
                        f"{where}: configuration '{p.label}'", report_metric=spec.report_metric, datasets=datasets)
