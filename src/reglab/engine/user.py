"""Your own model and data in one call: ``reglab.fit(model, data, techniques=[...], seeds=[...])``.

This turns a user's ``nn.Module`` (or factory, or registered model name) and tensors / arrays /
``Dataset`` into a :class:`~reglab.config.RunConfig` that says honestly what it trains
(``model="custom:<ClassName>@<fingerprint>"``, ``dataset="tensors@<fingerprint>"``; see
:mod:`reglab.models.custom` and :mod:`reglab.data.tensors`) and trains it with
:func:`reglab.engine.grouping.fit_seeds`: all seeds stacked in one model (torch.func) when that is
faster, one by one otherwise, each seed with its own initialization, data order, augmentation and
dropout masks. Each result's ``model`` is a :class:`~reglab.engine.trained.Trained` network that
prepares raw inputs as the run did (``reglab.predict(result.model, X)``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from torch import nn

from ..config import RunConfig, parse_config, parse_technique
from ..data import Data
from ..data import load as load_dataset
from ..data.signature import signature
from ..data.tensors import as_data
from ..errors import ReglabError
from ..models import custom
from ..techniques import Technique, resolve_techniques
from .callbacks import Callback
from .grouping import fit_seeds
from .run import RunResult
from .trained import Trained

#: RunConfig fields that ``fit``'s own arguments set
_ARGUMENTS = {"model": "model", "dataset": "data", "techniques": "techniques", "seed": "seeds"}

ModelLike = nn.Module | Callable[[], nn.Module] | str


def technique_spec(t: str | dict[str, Any] | Technique) -> dict[str, Any]:
    """``"adamw"``, ``"adamw:lr=1e-3"``, ``{"name": "adamw", "lr": 1e-3}`` or a technique object as a
    configuration's ``{"name": ..., knob: value}`` table."""
    if isinstance(t, Technique):
        return {"name": t.name, **t.knobs.model_dump()}
    if isinstance(t, str):
        return parse_technique(t)
    if isinstance(t, dict):
        return dict(t)
    raise ReglabError(f"techniques: expected a name, a {{'name': ...}} table or a technique (got {type(t).__name__})")


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """``3`` -> ``[0, 1, 2]``; a list of distinct seeds as it is."""
    if isinstance(seeds, int):
        if seeds < 1:
            raise ReglabError(f"seeds: a count must be >= 1, got {seeds}")
        return list(range(seeds))
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ReglabError(f"seeds: expected a non-empty list of distinct seeds, got {seeds}")
    return seeds


@contextmanager
def model_name(model: ModelLike, init: Callable[[nn.Module], object] | None = None) -> Iterator[str]:
    """The configuration's model name while the block runs: a registered name as it is, a user's
    module or factory registered under its ``custom:`` name."""
    if isinstance(model, str):
        if init is not None:
            raise ReglabError("init= re-initializes your own module; a registered model name is built by reglab")
        with nullcontext(model) as name:
            yield name
        return
    with custom.registered(model, init) as name:
        yield name


def settings_config(model: str, dataset: str, techniques: list[dict[str, Any]], settings: dict[str, Any],
                    where: str) -> RunConfig:
    """The validated RunConfig of a call's model, dataset, techniques and settings."""
    for field, argument in _ARGUMENTS.items():
        if field in settings:
            raise ReglabError(f"{where}: '{field}' is set by the {argument} argument, not as a setting")
    config = parse_config({**settings, "model": model, "dataset": dataset, "techniques": techniques}, where)
    resolve_techniques(config.techniques)
    return config


def prepare_data(data: Any, settings: dict[str, Any], *, task: str | None, val: Any, test: Any,
                 test_fraction: float) -> Data:
    """The user's data as a :class:`Data`: a dataset name is loaded (with the settings'
    ``dataset_options``), anything else converted by :func:`~reglab.data.tensors.as_data`; splits
    are carved with the settings' ``val_fraction`` and ``split_seed``."""
    defaults = RunConfig.model_fields
    val_fraction = settings.get("val_fraction", defaults["val_fraction"].default)
    split_seed = settings.get("split_seed", defaults["split_seed"].default)
    if isinstance(data, str):
        if val is not None or test is not None or task is not None:
            raise ReglabError(f"data: dataset '{data}' brings its own splits and task; val=/test=/task= go with (X, y) data")
        return load_dataset(data, val_fraction=val_fraction, split_seed=split_seed, **settings.get("dataset_options", {}))
    return as_data(data, val=val, test=test, task=task, test_fraction=test_fraction, val_fraction=val_fraction,
                   split_seed=split_seed)


def fit(
    model: ModelLike | RunConfig,
    data: Any = None,
    techniques: Sequence[str | dict[str, Any] | Technique] = (),
    seeds: int | Sequence[int] = (0,),
    *,
    init: Callable[[nn.Module], object] | None = None,
    task: str | None = None,
    val: Any = None,
    test: Any = None,
    test_fraction: float = 0.2,
    out: str | Path | None = None,
    grouping: str = "auto",
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
    **settings: Any,
) -> list[RunResult]:
    """Train ``model`` on ``data`` with ``techniques`` for every seed; one result per seed.

    ``model``: an ``nn.Module`` (copied and re-initialized per seed), a factory ``fn() -> nn.Module``
    or a registered model name (``"mlp"``, with ``model_options=``), or a whole
    :class:`~reglab.config.RunConfig` (then ``data`` defaults to its dataset, and ``settings``
    override its fields). ``data``: ``(X, y)`` tensors or arrays, a torch ``Dataset``,
    ``{"train": ..., "val": ..., "test": ...}``, a reglab ``Data`` or a dataset name;
    ``val=`` / ``test=`` give those splits, otherwise they are carved with ``val_fraction`` /
    ``test_fraction`` and ``split_seed``. ``task``: inferred from ``y`` unless given. ``settings``:
    any :class:`~reglab.config.RunConfig` field (``epochs``, ``batch_size``, ``metric``, ``device``, ...).
    ``out``: a folder for the checkpoints (``reglab.load(out)`` reads them back; a call whose ``out``
    already holds this configuration's checkpoints continues from them); ``grouping``: ``auto``,
    ``group`` or ``single`` (see :func:`~reglab.engine.grouping.fit_seeds`).
    """
    seeds = seed_list(seeds)
    if isinstance(model, RunConfig):
        if techniques or init is not None:
            raise ReglabError("reglab.fit: a RunConfig holds its techniques; pass them in the config, not as arguments")
        config = parse_config({**model.model_dump(), **settings}, "reglab.fit")
        resolve_techniques(config.techniques)
        base = config.model_dump(include={"val_fraction", "split_seed", "dataset_options"})
        prepared = prepare_data(config.dataset if data is None else data, base, task=task, val=val, test=test,
                                test_fraction=test_fraction)
        config = config.model_copy(update={"dataset": prepared.name})
        results = fit_seeds(config, seeds, data=prepared, run_dir=out, grouping=grouping, callbacks=tuple(callbacks),
                            progress=progress)
    else:
        if data is None:
            raise ReglabError("reglab.fit: data is missing: pass (X, y) tensors, a Dataset, a reglab Data or a dataset name")
        specs = [technique_spec(t) for t in techniques]
        prepared = prepare_data(data, settings, task=task, val=val, test=test, test_fraction=test_fraction)
        with model_name(model, init) as name:
            config = settings_config(name, prepared.name, specs, settings, "reglab.fit")
            results = fit_seeds(config, seeds, data=prepared, run_dir=out, grouping=grouping,
                                callbacks=tuple(callbacks), progress=progress)
    sig = signature(prepared)
    for r in results:
        if r.model is not None:
            r.model = Trained(r.model, sig, seed=r.seed, config=r.config).eval()
    return results
