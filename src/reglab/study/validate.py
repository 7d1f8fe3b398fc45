"""Validate a whole study before anything is created.

:func:`parse_spec` checks a study file's fields and techniques on their own; :func:`validate_study`
then builds every planned configuration as the training loop would, without training it: the device,
the dataset and its options (each distinct dataset loaded once), the batch size against the training
split, the model and its options, the techniques' model transforms and their start-of-fit checks
(``on_fit_start``). It evaluates each freshly built model on a few validation rows to learn the
metric names that configuration records (the loop's ``evaluate`` plus the techniques'
``batch_metrics``), so that a selection ``metric`` or a ``report_metric`` that would never be
recorded is refused too. A study that fails here leaves no folder, no store and no file behind.

Errors name the study file and the field that set the failing value, e.g.
``study.toml: base.model: unknown model 'mlpx' (...)`` or
``study.toml: steps[2] (wide).set.model_options: model mlp.hidden.0: ...``.
"""
from __future__ import annotations

import json

import torch

from ..data import DATASETS, Data, _import_loaders, load, subset
from ..engine.loop import evaluate
from ..engine.run import Run, build_run, check_batch_size, select_device
from ..errors import ReglabError
from ..metrics import on_split
from ..models import MODELS, _import_builders
from ..techniques import build_member
from .plan import Planned, plan
from .spec import StudySpec

#: validation rows evaluated per configuration to learn its metric names
PROBE_ROWS = 8


def _field(spec: StudySpec, planned: Planned, name: str, device: str | None) -> str:
    """Where the value of RunConfig field ``name`` of a configuration comes from: ``--device``, the
    last step that sets it, the study's ``metric``, or ``base``."""
    if name == "device" and device is not None:
        return "--device"
    index = {step.name: i for i, step in enumerate(spec.steps)}
    for step in reversed(planned.steps):
        if name in spec.steps[index[step]].set:
            return f"steps[{index[step]}] ({step}).set.{name}"
    if name == "metric" and spec.metric is not None and "metric" not in spec.base:
        return "metric"
    return f"base.{name}"


def _at(where: str, field: str, err: ReglabError) -> ReglabError:
    """``err`` prefixed with the file and the field (a message that starts with the field's own
    name, like ``device: ...``, does not repeat it)."""
    message = str(err).removeprefix(f"{field.rsplit('.', 1)[-1]}: ")
    return ReglabError(f"{where}: {field}: {message}")


def validate_study(spec: StudySpec, where: str, device: str | None = None) -> None:
    """Build each planned configuration of ``spec`` once (one seed, no training) and check the
    metrics it records; raise a :class:`ReglabError` naming ``where`` and the field on the first
    problem. ``device`` overrides every configuration's device (the CLI's ``--device``). Creates no
    file; the global random state is left as it was."""
    _import_loaders()
    _import_builders()
    datasets: dict[str, Data] = {}
    with torch.random.fork_rng():
        for p in plan(spec):
            config = p.config.model_copy(update={"compile": False, **({"device": device} if device else {})})

            def field(name: str, p: Planned = p) -> str:
                return _field(spec, p, name, device)

            try:
                target = select_device(config.device)
            except ReglabError as err:
                raise _at(where, field("device"), err) from None
            key = json.dumps([config.dataset, config.dataset_options, config.val_fraction, config.split_seed],
                             sort_keys=True, default=str)
            if key not in datasets:
                known = config.dataset.partition(":")[0] in DATASETS
                try:
                    datasets[key] = load(config.dataset, val_fraction=config.val_fraction, split_seed=config.split_seed,
                                         **config.dataset_options).to(target)
                except ReglabError as err:
                    raise _at(where, field("dataset_options" if known and config.dataset_options else "dataset"), err) from None
            data = datasets[key]
            try:
                check_batch_size(config, len(data.train))
            except ReglabError as err:
                raise _at(where, field("batch_size"), err) from None
            try:
                build_member(config, data, [])
            except ReglabError as err:
                known = config.model in MODELS
                raise _at(where, field("model_options" if known and config.model_options else "model"), err) from None
            try:
                run = build_run(config, [spec.seed_list[0]], data)
                for hook in run.hooks["on_fit_start"]:
                    hook(run)
                names = _recorded(run)
            except ReglabError as err:
                raise ReglabError(f"{where}: configuration '{p.label}': {err}") from None
            _check_metrics(spec, p, run, names, where, field("metric"))


def _recorded(run: Run) -> set[str]:
    """The metric names (without split) that ``evaluate`` records for ``run``, from a few rows."""
    split = run.data.val if len(run.data.val) else run.data.test
    probe = subset(run.data, n_val=min(PROBE_ROWS, len(split))).val if split is run.data.val else split
    return {name.split("_", 1)[1] for name in evaluate(run, probe, "val")[0]}


def _check_metrics(spec: StudySpec, p: Planned, run: Run, names: set[str], where: str, metric_field: str) -> None:
    """The selection metric must be in each epoch's record, the report metric in the final metrics."""
    selectable = {"train_loss", *(f"val_{n}" for n in names)}
    if run.data.task == "classification" and not run.hooks["train_step"]:
        selectable.add("train_accuracy")
    if run.metric not in selectable:
        raise ReglabError(f"{where}: {metric_field}: metric '{run.metric}' is never recorded by configuration "
                          f"'{p.label}' (recorded: {', '.join(sorted(selectable))})")
    splits = ["val", "test"] + (["train"] if run.config.eval_train else [])
    final = {f"{s}_{n}" for s in splits for n in names}
    report_metric = spec.report_metric or on_split(run.metric, "test")
    if report_metric not in final:
        what = "report_metric" if spec.report_metric else metric_field
        raise ReglabError(f"{where}: {what}: report metric '{report_metric}' is never recorded by configuration "
                          f"'{p.label}' (recorded: {', '.join(sorted(final))})")
