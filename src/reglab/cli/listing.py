"""Text listings for ``reglab list``: datasets, models, techniques and studies with their options."""
from __future__ import annotations

from typing import Any

from pydantic.fields import FieldInfo

from .. import options
from ..data import DATASETS, _import_loaders
from ..models import MODELS, _import_builders
from ..repro import REPROS
from ..repro.provenance import full_run_time
from ..study.builtin import BUILTIN
from ..techniques import TECHNIQUES, _discover


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _type(info: FieldInfo) -> str:
    """A technique knob's type with its bounds, e.g. ``float in [0, 1)``."""
    return options.type_label(info.annotation, info.metadata)


def datasets() -> str:
    _import_loaders()
    lines = ["DATASETS  (reglab train --dataset NAME --data-opt key=value)"]
    for name, entry in sorted(DATASETS.items()):
        shown = f"{name}:{entry.argument}" if entry.takes_path else name
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
            lines.append(f"      {knob}: {_type(info)} {default}{desc}")
    return "\n".join(lines) + "\n"


def studies() -> str:
    lines = ["STUDIES  (reglab study NAME)"]
    for name, (path, summary) in sorted(BUILTIN.items()):
        lines.append(f"  {name:<22} {summary}")
    return "\n".join(lines) + "\n"


def repros() -> str:
    """Each reproduction, its summary, and how long its committed full run took (measured, from the
    run's own record in ``results/<name>/``), or "not measured"."""
    lines = ["REPRODUCTIONS  (reglab repro NAME [--quick]; full-run times as measured on the machine that ran them)"]
    for name, module in sorted(REPROS.items()):
        lines.append(f"  {name:<22} {module.SUMMARY}")
        lines.append(f"  {'':<22} full run: {full_run_text(name, module)}")
    return "\n".join(lines) + "\n"


def full_run_text(name: str, module: object) -> str:
    found = full_run_time(name, module)
    if found is None:
        return f"not measured (no full run's time recorded in results/{name}/)"
    seconds, what = found
    return f"{seconds / 60:.1f} min ({what})"
