"""Tuned steps: a knob of a study's baseline or step given as a search space (:mod:`.search`) is
chosen on validation, inside the study.

Each layer with spaces (the baseline, then each step in order) is tuned on its own, in the context
the study gives it: the baseline alone; a step in incremental mode on the baseline and the steps
before it (at their chosen values); a step in the other modes on the baseline alone. Its candidates
are ordinary runs in the store on the *tuning seeds* (``tune_seeds``, disjoint from the study's
seeds), so they resume, stack and are reused like any run. The candidate with the best mean
validation metric (each run's best epoch, on the study's ``metric``) is chosen: the test split is
never read for it. The study then trains the chosen configuration on its own, fresh seeds, paired
with the other configurations, so the test numbers it reports are not the maximum of many noisy
trials.

A layer whose spaces are all grids is searched exhaustively (their product). With a range, Optuna's
TPE sampler (Bergstra et al. 2011, "Algorithms for Hyper-Parameter Optimization"; seeded, so the
same study asks the same trials; the optional extra ``reglab[tune]``) proposes ``trials`` candidates,
grids as categorical choices. No
pruner: every trial trains its full budget (a trial stopped early would not be an ordinary,
reusable run).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import RunConfig
from ..errors import ReglabError
from ..metrics import metric_maximized
from .plan import config_key, context
from .search import Grid, Knob, Range, knobs_of, with_values
from .spec import StudySpec
from .statistics import mean_se
from .store import Store


@dataclass
class Trial:
    values: dict[str, Any]  # knob id -> value
    config: RunConfig
    key: str
    val: dict[int, float]  # tuning seed -> selection metric at the run's best epoch

    @property
    def mean(self) -> float:
        return mean_se(list(self.val.values()))[0]


@dataclass
class Tuned:
    """One tuned layer: its knobs, its trials and the chosen values."""

    layer: int | None
    label: str
    knobs: list[Knob]
    trials: list[Trial]
    chosen: dict[Knob, Any] | None  # None while trials are missing


#: trains these (key, label, config) on the tuning seeds (their results go to the store)
Trainer = Callable[[list[tuple[str, str, RunConfig]]], None]


def tune(spec: StudySpec, store: Store, train: Trainer | None = None) -> tuple[StudySpec, list[Tuned]]:
    """Tune every layer with searched knobs, in order: ``train`` (None: read the store only, as the
    report does) trains the candidates the store lacks on the tuning seeds. Returns the spec with the
    chosen values (a layer not tuned yet keeps its first candidate) and what was tuned."""
    knobs = knobs_of(spec)
    if not knobs:
        return spec, []
    maximize = metric_maximized(spec.metric)
    seeds = set(spec.tune_seed_list)

    def lookup(key: str) -> dict[int, float]:
        return {r.seed: r.metrics.get(spec.metric, math.nan) for r in store.runs({key}) if r.seed in seeds}

    chosen: dict[Knob, Any] = {}
    out = []
    for layer in dict.fromkeys(k.layer for k in knobs):
        mine = [k for k in knobs if k.layer == layer]
        label = "baseline" if layer is None else spec.steps[layer].name

        def trial(values: dict[Knob, Any]) -> Trial:
            config = context(with_values(spec, {**chosen, **values}), layer)
            return Trial({k.id: v for k, v in values.items()}, config, config_key(config), {})

        def measure(trials: list[Trial]) -> None:
            missing = [t for t in trials if len(lookup(t.key)) < len(spec.tune_seed_list)]
            if missing and train is not None:
                train([(t.key, f"tune {label}: " + ", ".join(f"{k.rsplit('.', 1)[1]}={v}" for k, v in t.values.items()),
                        t.config) for t in missing])
            for t in trials:
                t.val = lookup(t.key)

        if all(isinstance(k.space, Grid) for k in mine):
            trials = [trial(dict(zip(mine, combo))) for combo in itertools.product(*(k.space.grid for k in mine))]
            measure(trials)
        else:
            trials = _optuna(mine, trial, measure, maximize)
        complete = trials and all(len(t.val) == len(spec.tune_seed_list) for t in trials)
        best = None
        if complete:
            best = max(trials, key=lambda t: t.mean if maximize else -t.mean)
            chosen.update({k: best.values[k.id] for k in mine})
        out.append(Tuned(layer, label, mine, trials, {k: chosen[k] for k in mine} if best else None))
        if not complete:
            break  # later layers are tuned in the context of this one's choice
    return with_values(spec, chosen), out


def _optuna(knobs: list[Knob], trial: Callable[[dict[Knob, Any]], Trial], measure: Callable[[list[Trial]], None],
            maximize: bool) -> list[Trial]:
    """Ask Optuna's seeded TPE sampler for the layer's trials one at a time, telling it each trial's
    mean validation metric (trained, or read from the store). Optuna is an optional extra (``pip
    install 'reglab[tune]'``), imported here so that grids and every other study need it not."""
    try:
        import optuna
    except ImportError:
        raise ReglabError("a searched range needs Optuna: pip install 'reglab[tune]' (grids need nothing)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if maximize else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=0))
    budget = max(k.space.trials for k in knobs if isinstance(k.space, Range))
    trials = []
    for _ in range(budget):
        asked = study.ask()
        values = {}
        for k in knobs:
            if isinstance(k.space, Grid):
                values[k] = asked.suggest_categorical(k.id, k.space.grid)
            elif k.space.integer:
                values[k] = asked.suggest_int(k.id, int(k.space.range[0]), int(k.space.range[1]), log=k.space.scale == "log")
            else:
                values[k] = asked.suggest_float(k.id, *k.space.range, log=k.space.scale == "log")
        t = trial(values)
        measure([t])
        trials.append(t)
        if len(t.val) == 0 or not math.isfinite(t.mean):
            if len(t.val) == 0:
                break  # not trained (read-only): the sequence stops here
            study.tell(asked, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(asked, t.mean)
    return trials
