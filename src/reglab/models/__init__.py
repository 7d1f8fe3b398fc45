"""Model registry: ``build_model("mlp", input_shape=(40,), num_outputs=10, hidden=[256, 256])``.

A builder is ``fn(input_shape, num_outputs, *, option=default, ...) -> nn.Module``; its keyword-only
options are validated (unknown option, wrong type -> one-line error) and listed by ``reglab list models``.
Builders produce plain ``nn.Sequential`` stacks where they can, so techniques can insert normalization
or dropout after each Linear/Conv + activation by module surgery (see :mod:`reglab.models.surgery`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from torch import nn

from .. import options as _options
from ..errors import ReglabError, unknown

if TYPE_CHECKING:
    from ..data import Data


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    summary: str


MODELS: dict[str, ModelEntry] = {}

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "identity": nn.Identity,
}
#: the activation option of builders (``reglab list models`` shows the allowed names)
Activation = Literal["relu", "gelu", "tanh", "sigmoid", "silu", "leaky_relu", "elu", "identity"]
assert set(get_args(Activation)) == set(ACTIVATIONS)


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise unknown("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def register(name: str, summary: str) -> Callable:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = ModelEntry(name, fn, summary)
        return fn

    return deco


def build_model(name: str, input_shape: tuple[int, ...], num_outputs: int, **options: Any) -> nn.Module:
    """Build a registered model for inputs of ``input_shape`` with ``num_outputs`` outputs."""
    _import_builders()
    if name not in MODELS:
        raise unknown("model", name, MODELS)
    if num_outputs < 1:
        raise ReglabError(f"model {name}: num_outputs must be >= 1, got {num_outputs}")
    return _options.call(MODELS[name].builder, f"model {name}", tuple(input_shape), num_outputs, **options)


def model_options(name: str) -> set[str]:
    """The option names model ``name``'s builder accepts (empty for an unknown model)."""
    _import_builders()
    entry = MODELS.get(name)
    return {opt for opt, _, _ in _options.option_table(entry.builder)} if entry else set()


def model_defaults(model: str, data: Data) -> dict[str, Any]:
    """Options a dataset suggests for the model (e.g. a text dataset's ``vocab_size``), kept to
    those the model's builder accepts; a configuration's own options override them."""
    suggested = data.info.get("model_options", {})
    accepted = model_options(model) if suggested else set()
    return {k: v for k, v in suggested.items() if k in accepted}


def _import_builders() -> None:
    """Import every module of this package once, so that their ``@register`` calls run."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
