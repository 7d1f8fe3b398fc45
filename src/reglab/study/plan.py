"""Turn a study into its configurations, per mode.

- ``incremental``: baseline, then baseline + steps[:1], + steps[:2], ... (cumulative, in order);
  each configuration is compared with the one before it.
- ``isolated``: baseline, then baseline + each step alone; each is compared with the baseline.
- ``leave-one-out``: baseline, all steps, then all steps but one for each step; each "minus"
  configuration is compared with "all steps".
- ``orders``: ``orders`` random permutations of the steps (seeded), each applied incrementally;
  identical configurations reached along several orders are trained once.

A configuration's identity (``key``) is a hash of its resolved RunConfig (every technique with all
its knobs, defaults included, and the default optimizer made explicit; the seed excluded), so
re-running a study, editing it, or reaching the same configuration by two routes or by two spellings
of the same knobs finds the runs already stored.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field

from ..config import RunConfig
from ..techniques import compose, resolve_techniques
from .search import with_values
from .spec import StudySpec


@dataclass
class Planned:
    label: str
    config: RunConfig
    key: str
    steps: list[str]  # the step names it contains
    compare_to: str | None = None  # key of the configuration it is compared with
    added: str | None = None  # step whose effect the comparison measures
    orders: list[int] = field(default_factory=list)  # orders (mode=orders) that pass through it


def resolved(config: RunConfig) -> dict:
    """``config`` as data with its techniques resolved (names and every knob) and without the seed."""
    dump = config.model_dump(exclude={"seed"})
    dump["techniques"] = [{"name": t.name, **t.knobs.model_dump()} for t in resolve_techniques(config.techniques)]
    return dump


def config_key(config: RunConfig) -> str:
    payload = json.dumps(resolved(config), sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def _configuration(spec: StudySpec, step_idx: list[int], label: str) -> Planned:
    """The baseline with the steps ``step_idx`` composed on it in that order (a step's optimizer
    replaces the baseline's, and so on: :func:`reglab.techniques.compose`)."""
    techniques = compose([spec.baseline, *(spec.steps[i].techniques for i in step_idx)])
    overrides: dict = {}
    for i in step_idx:
        overrides.update(spec.steps[i].set)
    config = spec.run_config(techniques, overrides)
    return Planned(label, config, config_key(config), [spec.steps[i].name for i in step_idx])


def context(spec: StudySpec, layer: int | None) -> RunConfig:
    """The configuration a searched layer is tuned in (:mod:`.tune`): the baseline alone (``layer``
    None); a step on the baseline and, in incremental mode, the steps before it."""
    steps = [] if layer is None else list(range(layer + 1)) if spec.mode == "incremental" else [layer]
    return _configuration(spec, steps, "").config.model_copy(update={"eval_test": False})  # selection reads no test


def plan(spec: StudySpec) -> list[Planned]:
    """The configurations of ``spec`` in report order (duplicates merged). Searched knobs must hold
    values (:func:`reglab.study.tune.tune` returns the spec with its chosen ones); any still a space
    plan with their first candidate."""
    spec = with_values(spec, {})
    base = _configuration(spec, [], "baseline")
    out = [base]
    n = len(spec.steps)
    if spec.mode == "incremental":
        prev = base
        for i in range(n):
            p = _configuration(spec, list(range(i + 1)), f"+ {spec.steps[i].name}")
            p.compare_to, p.added = prev.key, spec.steps[i].name
            out.append(p)
            prev = p
    elif spec.mode == "isolated":
        for i in range(n):
            p = _configuration(spec, [i], f"baseline + {spec.steps[i].name}")
            p.compare_to, p.added = base.key, spec.steps[i].name
            out.append(p)
    elif spec.mode == "leave-one-out":
        full = _configuration(spec, list(range(n)), "all steps")
        full.compare_to, full.added = base.key, "all steps"
        out.append(full)
        for i in range(n):
            p = _configuration(spec, [j for j in range(n) if j != i], f"all - {spec.steps[i].name}")
            p.compare_to, p.added = full.key, f"- {spec.steps[i].name}"
            out.append(p)
    else:  # orders: compared along each order by order_paths()
        for k, order in enumerate(_orders(spec)):
            for depth in range(1, n + 1):
                p = _configuration(spec, order[:depth], " + ".join(spec.steps[i].name for i in order[:depth]))
                p.orders.append(k)
                out.append(p)
    return _dedupe(out)


def _orders(spec: StudySpec) -> list[list[int]]:
    rng = random.Random(spec.orders_seed)
    orders = []
    for _ in range(spec.orders):
        order = list(range(len(spec.steps)))
        rng.shuffle(order)
        orders.append(order)
    return orders


def order_paths(spec: StudySpec) -> list[list[tuple[str, str, str]]]:
    """For mode = orders: per order, the (step name, key before, key after) of each added step."""
    spec = with_values(spec, {})
    paths = []
    for order in _orders(spec):
        before = _configuration(spec, [], "").key
        path = []
        for depth in range(1, len(order) + 1):
            after = _configuration(spec, order[:depth], "").key
            path.append((spec.steps[order[depth - 1]].name, before, after))
            before = after
        paths.append(path)
    return paths


def _dedupe(planned: list[Planned]) -> list[Planned]:
    out: dict[str, Planned] = {}
    for p in planned:
        if p.key in out:
            out[p.key].orders += p.orders
        else:
            out[p.key] = p
    return list(out.values())
