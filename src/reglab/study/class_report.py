"""Per-class report of a multilabel study from its stored runs (``reglab report FOLDER --per-class``).

:func:`checkpoint_probabilities` rebuilds a run from its checkpoint file (the model as the run
reported: each seed's best epoch on validation) and returns its sigmoid outputs;
:func:`study_class_report` picks a study's best configuration *by the validation metric* and writes
its per-class report on the test split, averaged over seeds, at 0.5 and with per-label thresholds
tuned on validation (:func:`reglab.metrics.multilabel.tune_thresholds`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import RunConfig, dumps
from ..data import load
from ..engine.checkpoint import load as load_state
from ..engine.checkpoint import load_checkpoint
from ..engine.run import build_run
from ..errors import ReglabError
from ..metrics.multilabel import Report, probabilities, report, tune_thresholds
from .plan import plan
from .spec import parse_spec
from .statistics import mean_se
from .store import Store


def checkpoint_probabilities(
    checkpoint: str | Path, splits: Sequence[str] = ("val", "test"), *, data: Any = None
) -> tuple[dict[str, Tensor], list[int], Any]:
    """Sigmoid outputs ``{split: (S, N, K)}`` of the models in a trainer checkpoint (``last.pt``), for
    its seeds ``S``, and the dataset. The run is rebuilt from the checkpoint's own configuration, its
    state loaded, each seed's best epoch's weights restored and the techniques' end-of-training hooks
    applied, so the model is the one the run reported and the outputs reproduce its metrics. ``data``: the dataset, when already loaded (default: loaded from the configuration).
    """
    state = load_state(checkpoint)
    if "config" not in state or "seeds" not in state:
        raise ReglabError(f"{checkpoint}: not a reglab trainer checkpoint (no config/seeds)")
    config = RunConfig(**state["config"]).model_copy(update={"device": "cpu"})
    if data is None:
        data = load(config.dataset, val_fraction=config.val_fraction, split_seed=config.split_seed,
                    **config.dataset_options)
    if data.task != "multilabel":
        raise ReglabError(f"{checkpoint}: dataset '{data.name}' is {data.task}, not multilabel")
    run = build_run(config, list(state["seeds"]), data)
    run.config = RunConfig(**state["config"])  # the saved config (its device) is what the checkpoint matches
    load_checkpoint(run, Path(checkpoint))
    run.model.restore(run.best_state)  # each seed's selected (best validation) epoch, as the run reported
    for hook in run.hooks["on_fit_end"]:
        hook(run)
    run.model.eval()
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for name in splits:
            split = getattr(run.data, name)
            parts = []
            for start in range(0, len(split), config.eval_batch_size):
                rows = torch.arange(start, min(len(split), start + config.eval_batch_size))
                parts.append(probabilities(run.model(run.data.batch(split, rows), shared=True)))
            out[name] = torch.cat(parts, 1)
    return out, list(state["seeds"]), run.data


def _pm(values: Sequence[float], digits: int = 3) -> str:
    m, se = mean_se(values)
    return f"{m:.{digits}f}" if math.isnan(se) else f"{m:.{digits}f} ± {se:.{digits}f}"


def study_f1_table(folder: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """Micro/macro F1 on validation and test (threshold 0.5, as recorded by the trainer) per
    configuration of the study stored in ``folder``, mean ± SE over seeds: ``(markdown, rows)``."""
    db = Path(folder) / "results.sqlite"
    if not db.is_file():
        raise ReglabError(f"{folder}: no results.sqlite (run `reglab study ... -o {folder}` first)")
    store = Store(db)
    raw = store.definition()
    if raw is None:
        raise ReglabError(f"{db} holds no study")
    spec = parse_spec(raw, raw.get("name", "study"))
    runs = [r for r in store.runs() if not r.diverged]
    names = ("val_f1_micro", "val_f1_macro", "test_f1_micro", "test_f1_macro")
    rows = []
    for p in plan(spec):
        mine = [r for r in runs if r.config_key == p.key]
        if not mine or any(n not in mine[0].metrics for n in names):
            continue
        row: dict[str, Any] = {"label": p.label, "key": p.key, "seeds": [r.seed for r in mine],
                               "checkpoints": {r.seed: r.checkpoint for r in mine},
                               "epochs": [r.metrics.get("epochs", math.nan) for r in mine],
                               "seconds": [r.metrics.get("seconds", math.nan) for r in mine]}
        for n in names:
            row[n] = [r.metrics[n] for r in mine]
        rows.append(row)
    if not rows:
        raise ReglabError(f"{folder}: study '{spec.name}' has no finished multilabel runs (val/test F1 metrics)")
    lines = ["| configuration | seeds | val micro-F1 | val macro-F1 | test micro-F1 | test macro-F1 | epochs | s/run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {len(r['seeds'])} | " + " | ".join(_pm(r[n]) for n in names)
                     + f" | {np.mean(r['epochs']):.1f} | {np.mean(r['seconds']):.0f} |")
    return "\n".join(lines), rows


def study_class_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Per-class test report of the best configuration of the multilabel study in ``folder``.

    The best configuration has the highest mean validation micro-F1 (the test split selects
    nothing). For each of its seeds the checkpoint is loaded (:func:`checkpoint_probabilities`), and
    the test decisions are scored at 0.5 and at per-label thresholds tuned on validation
    (:func:`tune_thresholds`); per-class precision/recall/F1 are averaged over seeds. Writes
    ``classes.md`` and ``classes.json`` into ``out`` (default: ``<folder>/report``); returns the
    Markdown path.
    """
    table, rows = study_f1_table(folder)
    best = max(rows, key=lambda r: np.mean(r["val_f1_micro"]))
    reports: dict[str, list[Report]] = {"0.5": [], "tuned": []}
    cache: dict[str, tuple[dict[str, Tensor], list[int]]] = {}
    data = None
    for seed in best["seeds"]:
        path = best["checkpoints"][seed]
        if path is None or not Path(path).is_file():
            raise ReglabError(f"{folder}: no checkpoint for {best['label']} seed {seed} (looked for {path})")
        if path not in cache:
            probs, seeds, data = checkpoint_probabilities(path, data=data)
            cache[path] = (probs, seeds)
        probs, seeds = cache[path]
        s = seeds.index(seed)
        val, test = probs["val"][s], probs["test"][s]
        thresholds = tune_thresholds(val, data.val.y, per_label=True)
        reports["0.5"].append(report(test, data.test.y, data.classes, 0.5))
        reports["tuned"].append(report(test, data.test.y, data.classes, thresholds))

    def per_class(name: str, attr: str) -> np.ndarray:
        return np.stack([getattr(r, attr) for r in reports[name]])  # (seeds, classes)

    lines = [f"Best configuration by validation micro-F1: **{best['label']}** ({len(best['seeds'])} seeds: "
             f"{', '.join(map(str, best['seeds']))}). Test split; per-class values are means over seeds "
             "(F1 ± standard error); thresholds tuned per label on the validation split (mean over seeds).", "",
             "| class | support | P @0.5 | R @0.5 | F1 @0.5 | threshold | P tuned | R tuned | F1 tuned |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    classes = reports["0.5"][0].classes
    for c, cls in enumerate(classes):
        cells = [cls, str(int(reports["0.5"][0].support[c]))]
        for name in ("0.5", "tuned"):
            if name == "tuned":
                cells.append(f"{per_class(name, 'thresholds')[:, c].mean():.3f}")
            cells += [f"{per_class(name, 'precision')[:, c].mean():.3f}", f"{per_class(name, 'recall')[:, c].mean():.3f}",
                      _pm(per_class(name, "f1")[:, c])]
        lines.append("| " + " | ".join(cells) + " |")
    for avg in ("micro", "macro"):
        cells = [f"**{avg} avg**", str(int(reports["0.5"][0].support.sum()))]
        for name in ("0.5", "tuned"):
            if name == "tuned":
                cells.append("")
            vals = [getattr(r, avg) for r in reports[name]]
            cells += [f"{np.mean([v['precision'] for v in vals]):.3f}", f"{np.mean([v['recall'] for v in vals]):.3f}",
                      _pm([v["f1"] for v in vals])]
        lines.append("| " + " | ".join(cells) + " |")
    out = Path(out) if out is not None else Path(folder) / "report"
    out.mkdir(parents=True, exist_ok=True)
    text = "## F1 per configuration (threshold 0.5, mean ± SE over seeds)\n\n" + table + \
        "\n\n## Per-class report of the best configuration\n\n" + "\n".join(lines) + "\n"
    md = out / "classes.md"
    md.write_text(text)
    payload = {"best": {k: v for k, v in best.items() if k != "checkpoints"},
               "configurations": [{k: v for k, v in r.items() if k != "checkpoints"} for r in rows],
               "per_seed": {name: [r.to_dict() for r in reps] for name, reps in reports.items()}}
    (out / "classes.json").write_text(dumps(payload, indent=1))
    return md
