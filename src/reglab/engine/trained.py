"""Trained models back from their runs: :func:`load`, :func:`predict`, :func:`export`.

A run's checkpoint (``last.pt``) holds its configuration, each seed's selected weights (the best
epoch on the run's metric, ``best_state``) and the dataset's signature (task, classes, input shape,
normalization; :mod:`reglab.data.signature`). :func:`load` rebuilds the architecture from the
configuration, applies every technique's model transformation (BatchNorm insertion, dropout, extra
heads) to it, loads the weights and wraps the network in :class:`Trained`, which prepares raw inputs
as the run did (uint8 images scaled to [0, 1], then standardized with the training statistics).
The dataset is never loaded. A run of a user's own module (``model = "custom:..."``) needs that
module (or its factory) back: ``load(path, model=MyNet())``, since its code is not in the checkpoint.

:func:`export` writes a :class:`Trained` model as a ``torch.export`` ExportedProgram (``.pt2``,
https://pytorch.org/docs/stable/export.html), ONNX (``torch.onnx.export`` with the dynamo exporter;
needs the ``onnx`` extra) or TorchScript (``torch.jit.trace``), with a dynamic batch dimension.
"""
from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import RunConfig
from ..data.signature import placeholder
from ..data.tensors import as_tensor
from ..errors import ReglabError
from ..models import custom
from ..techniques import build_member, resolve_techniques
from . import checkpoint as ckpt

FORMATS = {"exported-program": ".pt2", "onnx": ".onnx", "torchscript": ".ts"}


class Trained(nn.Module):
    """A trained network with its run's input preparation: ``forward(x) = net(normalize(x))``.

    ``x`` is a batch ``(B, *input_shape)`` as the dataset stores it (uint8 images, float features,
    int64 token ids). Attributes: ``task``, ``classes``, ``input_shape``, ``seed``, ``config`` (the
    run's configuration as a dict).
    """

    def __init__(self, net: nn.Module, signature: dict[str, Any], *, seed: int | None = None,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.net = net
        self.task: str = signature["task"]
        self.classes: list[str] = list(signature["classes"])
        self.input_shape: tuple[int, ...] = tuple(signature["input_shape"])
        self.signature = signature
        self.seed = seed
        self.config = config or {}
        mean, std = signature["mean"], signature["std"]
        self.register_buffer("mean", None if mean is None else mean.clone().float())
        self.register_buffer("std", None if std is None else std.clone().float())

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255
        elif x.dtype != torch.int64:
            x = x.float()
        if self.mean is not None:
            shape = (-1,) + (1,) * (len(self.input_shape) - 1)
            x = (x - self.mean.view(shape)) / self.std.view(shape)
        return self.net(x)

    def example(self, batch: int = 4) -> Tensor:
        """A batch of inputs of the stored dtype and shape (for tracing and export)."""
        shape = (batch, *self.signature["x_shape"])
        dtype = getattr(torch, self.signature["x_dtype"])
        g = torch.Generator().manual_seed(0)
        if dtype.is_floating_point:
            return torch.randn(shape, generator=g).to(dtype)
        high = 256 if dtype == torch.uint8 else 2
        return torch.randint(0, high, shape, generator=g).to(dtype)


def _keep(module: nn.Module) -> None:
    """An ``init`` that leaves a module as it is."""


def _seeds_in(name: str) -> list[int] | None:
    m = re.fullmatch(r"seeds?-(\d+(?:-\d+)*)", name)
    return [int(s) for s in m.group(1).split("-")] if m else None


def find_checkpoint(path: str | Path, seed: int | None = None) -> Path:
    """The checkpoint of ``path``: the file itself, ``<folder>/last.pt``, or the ``last.pt`` of the
    ``seed-N`` / ``seeds-A-B-...`` subfolder that holds ``seed`` (default: the smallest seed)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ReglabError(f"run not found: {path}")
    if (path / "last.pt").is_file():
        return path / "last.pt"
    found = {sub: seeds for sub in sorted(path.iterdir())
             if sub.is_dir() and (seeds := _seeds_in(sub.name)) and (sub / "last.pt").is_file()}
    if not found:
        raise ReglabError(f"{path}: no checkpoint (last.pt) here or in seed-N/ seeds-A-B/ subfolders")
    if seed is None:
        seed = min(s for seeds in found.values() for s in seeds)
    for sub, seeds in found.items():
        if seed in seeds:
            return sub / "last.pt"
    have = sorted(s for seeds in found.values() for s in seeds)
    raise ReglabError(f"{path}: no checkpoint of seed {seed} (seeds: {', '.join(map(str, have))})")


def load(
    path: str | Path,
    *,
    seed: int | None = None,
    model: nn.Module | Callable[[], nn.Module] | None = None,
    device: str | torch.device = "cpu",
) -> Trained:
    """The trained model of a run folder or checkpoint, in eval mode (see the module docstring).

    ``seed``: which seed of the run (default: the smallest). ``model``: the user's module or factory
    for a run trained on one (``reglab.fit(MyNet(), ...)``).
    """
    file = find_checkpoint(path, seed)
    state = ckpt.load(file)
    if not isinstance(state, dict) or "config" not in state or "best_state" not in state:
        raise ReglabError(f"{file}: not a reglab run checkpoint")
    if state.get("version") != ckpt.CHECKPOINT_VERSION:
        raise ReglabError(f"{file}: checkpoint format {state.get('version')} is not this reglab's "
                          f"({ckpt.CHECKPOINT_VERSION}); retrain the run to load it")
    config = RunConfig(**state["config"])
    seeds = list(state["seeds"])
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise ReglabError(f"{file}: holds seeds {seeds}, not seed {seed}")
    data = placeholder(state["data"])
    techniques = resolve_techniques(config.techniques)
    rng = torch.get_rng_state()
    try:
        if config.model.startswith(custom.PREFIX):
            if model is None:
                shown = config.model.removeprefix(custom.PREFIX).split("@")[0]
                raise ReglabError(f"{file}: the run trained your own model {shown}, whose code is not in the "
                                  f"checkpoint; pass it back: reglab.load(path, model={shown}(...))")
            with custom.registered(model, init=_keep) as name:  # the weights come from the checkpoint
                net = build_member(config.model_copy(update={"model": name}), data, techniques)
        else:
            if model is not None:
                raise ReglabError(f"{file}: the run trained the registered model '{config.model}', which load "
                                  "rebuilds itself; drop model=")
            net = build_member(config, data, techniques)
    finally:
        torch.set_rng_state(rng)
    s = seeds.index(seed)
    weights = {k: v[s] for k, v in state["best_state"].items()}
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise ReglabError(f"{file}: the weights do not fit the model ({str(err).splitlines()[0]})") from None
    trained = Trained(net, state["data"], seed=seed, config=state["config"])
    return trained.to(device).eval()


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor | np.ndarray, *, batch_size: int = 1024) -> Tensor:
    """Outputs of ``model`` on ``inputs`` ``(N, ...)`` in eval mode, in batches, on the CPU (logits
    for a classification). A :class:`Trained` model (from :func:`load` or ``reglab.fit``'s results)
    prepares the inputs as its run did; a plain module gets them as they are. The module's
    train/eval mode is restored afterwards."""
    x = as_tensor(inputs, "inputs")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        outs = [model(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def export(model: Trained, path: str | Path, format: str = "exported-program") -> Path:
    """Write ``model`` (on the CPU, eval mode) to ``path`` in ``format``: ``exported-program``
    (load with ``torch.export.load(path).module()``), ``onnx`` (onnxruntime, ...) or
    ``torchscript`` (``torch.jit.load``; deprecated by PyTorch in favour of torch.export); the batch
    dimension stays dynamic."""
    if format not in FORMATS:
        raise ReglabError(f"unknown export format '{format}' (allowed: {', '.join(FORMATS)})")
    path = Path(path)
    if format == "exported-program" and path.suffix != ".pt2":
        raise ReglabError(f"export exported-program: the file name must end in .pt2 (got {path.name})")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    example = model.example()
    batch = torch.export.Dim("batch", min=1)
    try:
        if format == "exported-program":
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, path)
        elif format == "onnx":
            missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
            if missing:
                raise ReglabError(f"export format onnx needs {' and '.join(missing)}: pip install 'reglab[onnx]'")
            torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},),
                              input_names=["x"], output_names=["y"], external_data=False, verbose=False)
        else:
            torch.jit.save(torch.jit.trace(model, example), str(path))
    except ReglabError:
        raise
    except Exception as err:  # noqa: BLE001 - an exporter's failure on a model is a one-line error
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ReglabError(f"export {format}: {type(err).__name__}: {first}") from None
    return path


@torch.no_grad()
def verify(model: Trained, path: str | Path, format: str) -> float | None:
    """The largest absolute difference between ``model`` and the file :func:`export` wrote, on a
    batch of its example inputs; ``None`` when the runtime of ``format`` (onnxruntime) is missing."""
    model = model.cpu().eval()
    x = model.example(batch=5)
    expected = model(x)
    if format == "exported-program":
        got = torch.export.load(str(path)).module()(x)
    elif format == "torchscript":
        got = torch.jit.load(str(path))(x)
    else:
        if importlib.util.find_spec("onnxruntime") is None:
            return None
        import onnxruntime  # the optional extra, off the import path

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    return float((got.float() - expected.float()).abs().max())
