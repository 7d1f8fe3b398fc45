"""The run configuration: what to train, with which techniques, for how long.

A :class:`RunConfig` is plain data (it round-trips through JSON, TOML and YAML). Techniques are a list
of ``{"name": ..., knob: value}`` tables, resolved into technique objects by
:func:`reglab.techniques.resolve_techniques`. This module also reads config files, writes strict JSON
(:func:`dumps`: ``null`` for NaN and infinities, which strict parsers reject as bare ``NaN``) and
parses the command line's ``key=value`` and ``name:knob=value`` forms.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from .errors import ReglabError, first_line, os_error_message
from .options import format_validation_error

class RunConfig(BaseModel):
    """One training configuration (one seed or several seeds of it)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("mnist1d", description="dataset name, or name:PATH (csv:, imagefolder:)")
    dataset_options: dict[str, Any] = Field(default_factory=dict, description="loader options")
    model: str = Field("mlp", description="model name (reglab list models)")
    model_options: dict[str, Any] = Field(default_factory=dict, description="model builder options")
    techniques: list[dict[str, Any]] = Field(default_factory=list, description="[{name=..., knob=value}]")
    epochs: int = Field(30, ge=1, description="maximum number of epochs (passes over the training split)")
    steps: int | None = Field(None, ge=1, description="training budget in batches instead of epochs (None: epochs x batches per pass)")
    eval_every: int | None = Field(None, ge=1, description="batches between validations (None: once per pass); each validation ends an 'epoch' of the history")
    eval_train: bool = Field(True, description="evaluate the whole training split at the end (train_* final metrics)")
    eval_test: bool = Field(True, description="evaluate the test split at the end (off for tuning trials: nothing of the test split is read)")
    batch_size: int = Field(64, ge=1, description="training batch size")
    eval_batch_size: int = Field(1024, ge=1, description="evaluation batch size")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="fraction of train carved out for validation")
    split_seed: int = Field(0, description="seed of the train/validation split (fixed across run seeds)")
    vary_split: bool = Field(False, description="draw the train/validation split from the run seed instead (each seed its own split, still paired across configurations; seeds then train one by one)")
    seed: int = Field(0, description="run seed: initialization, data order, augmentation, dropout")
    metric: str | None = Field(None, description="validation metric that selects the best epoch")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    amp: Literal["auto", "off", "bf16"] = Field("auto", description="bf16 autocast: auto (on CUDA), bf16 (also on the CPU; fast where it has native bf16), off")
    compile: bool = Field(False, description="torch.compile the model (one-seed runs; pays off on CUDA)")
    channels_last: Literal["auto", "off", "on"] = Field("auto", description="channels_last for convnets on CUDA")


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: dataclasses (their ``to_json()`` when they have one), tuples,
    numpy arrays and scalars converted, non-finite floats as ``None``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return obj.to_json() if hasattr(obj, "to_json") else jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON of ``obj`` (see :func:`jsonable`): no bare NaN or Infinity."""
    return json.dumps(jsonable(obj), allow_nan=False, **kwargs)


def parse_config(raw: dict[str, Any], where: str = "config") -> RunConfig:
    """Validate a dict into a :class:`RunConfig` (one-line error naming the field). Technique names
    and knobs are checked by :func:`reglab.techniques.resolve_techniques`."""
    try:
        config = RunConfig(**raw)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        if first["type"] == "extra_forbidden":
            field = ".".join(map(str, first["loc"]))
            allowed = ", ".join(RunConfig.model_fields)
            close = difflib.get_close_matches(field, list(RunConfig.model_fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ReglabError(f"{where}: unknown field '{field}' (allowed: {allowed}){hint}") from None
        raise ReglabError(format_validation_error(err, where)) from None
    return config


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON file (UTF-8) into a dict (one-line error naming the file if it is
    missing, unreadable, not UTF-8 or malformed)."""
    path = Path(path)
    try:
        if not path.is_file():
            raise ReglabError(f"config file not found: {path}")
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ReglabError(f"cannot read {os_error_message(err, path)}") from None
    except UnicodeDecodeError as err:
        raise ReglabError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                          "save the file as UTF-8") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ReglabError(f"{path}: unknown config format '{path.suffix}' (allowed: .toml, .yaml, .yml, .json)")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as err:
        raise ReglabError(f"{path}: cannot parse: {first_line(err)}") from None
    if not isinstance(data, dict):
        raise ReglabError(f"{path}: expected a table of settings at the top level")
    return data


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"lr=1e-3"`` -> ``("lr", 0.001)``; values parsed as JSON when they can be, else strings."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ReglabError(f"expected key=value, got '{text}'")
    return key.strip(), parse_value(value.strip())


def set_path(raw: dict[str, Any], key: str, value: Any, where: str = "config") -> None:
    """``raw["model_options"]["hidden"] = value`` for the dotted ``key`` ``"model_options.hidden"``
    (tables on the way are created; a non-table on the way is an error)."""
    parts = key.split(".")
    if not all(parts):
        raise ReglabError(f"{where}: bad key '{key}' (dotted names such as model_options.hidden)")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ReglabError(f"{where}: '{'.'.join(parts[:i + 1])}' is not a table of options, so '{key}' cannot be set")
        node = child
    node[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], pairs: list[str], where: str = "override") -> dict[str, Any]:
    """Apply ``key=value`` overrides (dotted keys reach nested tables) to ``raw`` in place; returns it."""
    for pair in pairs:
        try:
            key, value = parse_assignment(pair)
        except ReglabError as err:
            raise ReglabError(f"{where}: {err}") from None
        set_path(raw, key, value, where)
    return raw


def parse_value(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        try:
            return float(value)
        except ValueError:
            return value


def parse_technique(text: str) -> dict[str, Any]:
    """CLI form ``"adamw:lr=1e-3,weight_decay=0.05"`` -> ``{"name": "adamw", "lr": 0.001, ...}``.

    Commas inside brackets belong to the value: ``"multistep:milestones=[10,20]"``.
    """
    name, _, rest = text.partition(":")
    spec: dict[str, Any] = {"name": name.strip()}
    depth, start = 0, 0
    parts = []
    for i, ch in enumerate(rest):
        depth += ch in "[{("
        depth -= ch in "]})"
        if ch == "," and depth == 0:
            parts.append(rest[start:i])
            start = i + 1
    parts.append(rest[start:])
    key = None
    for part in filter(None, (p.strip() for p in parts)):
        if "=" not in part and key is not None:  # "milestones=10,20": the list lost its brackets
            raise ReglabError(f"technique {name}: expected knob=value, got '{part}'; a list is written in brackets: "
                              f"{key}=[{spec[key]},{part}]")
        key, value = parse_assignment(part)
        spec[key] = value
    return spec
