"""Text listings for ``reglab list``: datasets, models, techniques and studies with their options."""
from __future__ import annotations

import types
import typing
from typing import Any

from pydantic.fields import FieldInfo

from .. import options
from ..data import DATASETS, _import_loaders
from ..models import MODELS, _import_builders
from ..repro import REPROS
from ..study.builtin import BUILTIN
from ..techniques import TECHNIQUES, _discover


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _constraints(info: FieldInfo) -> str:
    parts = []
    for meta in info.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if (v := getattr(meta, attr, None)) is not None:
                parts.append(f"{sym} {v}")
    return f" [{', '.join(parts)}]" if parts else ""


def _type(info: FieldInfo) -> str:
    return _type_name(info.annotation)


def _type_name(ann: Any) -> str:
    """``int``, ``list[int]``, ``float | None``, ``a|b|c`` for a Literal; Annotated metadata dropped."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return "|".join(map(str, args))
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    return "None" if ann is type(None) else getattr(ann, "__name__", str(ann))


def datasets() -> str:
    _import_loaders()
    lines = ["DATASETS  (reglab train --dataset NAME --data-opt key=value)"]
    for name, entry in sorted(DATASETS.items()):
        shown = f"{name}:PATH" if entry.takes_path else name
        lines.append(f"  {shown:<18} {entry.summary}")
        for opt, ann, default in options.option_table(entry.loader):
            lines.append(f"      {opt}: {ann} = {_fmt(default)}")
    return "\n".join(lines) + "\n"


def models() -> str:
    _import_builders()
    lines = ["MODELS  (reglab train --model NAME --model-opt key=value)"]
    for name, entry in sorted(MODELS.items()):
        lines.append(f"  {name:<18} {entry.summary}")
        for opt, ann, default in options.option_table(entry.builder):
            lines.append(f"      {opt}: {ann} = {_fmt(default)}")
    return "\n".join(lines) + "\n"


def techniques() -> str:
    _discover()
    lines = ["TECHNIQUES  (reglab train -t name:knob=value,...; one technique per exclusive kind)"]
    for name, cls in sorted(TECHNIQUES.items(), key=lambda kv: (kv[1].kind, kv[0])):
        flags = " (exclusive)" if cls.exclusive else ""
        group = "" if cls.stack_blocker is None else "  [one seed at a time]"
        lines.append(f"  {name:<18} {cls.kind}{flags} -- {cls.source}{group}")
        for knob, info in cls.Knobs.model_fields.items():
            desc = f"  {info.description}" if info.description else ""
            if info.is_required():
                default = "(required)"
            else:
                default = f"= {_fmt(info.default_factory() if info.default_factory else info.default)}"
            lines.append(f"      {knob}: {_type(info)} {default}{_constraints(info)}{desc}")
    return "\n".join(lines) + "\n"


def studies() -> str:
    lines = ["STUDIES  (reglab study NAME)"]
    for name, (path, summary) in sorted(BUILTIN.items()):
        lines.append(f"  {name:<22} {summary}")
    if REPROS:
        lines.append("REPRODUCTIONS  (reglab repro NAME [--quick])")
        for name, module in sorted(REPROS.items()):
            lines.append(f"  {name:<22} {module.SUMMARY}")
    return "\n".join(lines) + "\n"
