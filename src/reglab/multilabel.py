"""Multilabel classification: sigmoid outputs, decision thresholds, per-label balancing and reports.

A multilabel model emits one logit per label and is trained with ``BCEWithLogitsLoss``; a label is
predicted when its sigmoid probability reaches a threshold, either one global value (0.5, or the
value maximizing micro-F1 on validation) or one per label tuned on the validation split to maximize
that label's F1 (as in the GoEmotions paper's per-emotion evaluation; Lipton et al., "Thresholding
Classifiers to Maximize F1 Score", 2014). Thresholds are never tuned on the test split. Class
balancing follows ``BCEWithLogitsLoss(pos_weight=...)`` with ``pos_weight = N_neg / N_pos`` per label.
The per-class report uses scikit-learn's ``precision_recall_fscore_support`` (micro and macro
averages); :func:`f1_scores` is a torch version for per-epoch metrics over stacked seeds.

From stored runs: :func:`checkpoint_probabilities` rebuilds a run from its checkpoint file (the model
as the run ended, early stopping's restored best epoch included) and returns its sigmoid outputs;
:func:`study_class_report` picks a study's best configuration *by the validation metric* and writes
its per-class report on the test split, averaged over seeds, at 0.5 and with per-label thresholds
tuned on validation (``python -m reglab.multilabel STUDY_FOLDER [-o OUT]``).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import ReglabError


def probabilities(logits: Tensor) -> Tensor:
    """Sigmoid outputs: the probability of each label, independently."""
    return torch.sigmoid(logits.float())


def pos_weight(y: Tensor, *, max_weight: float | None = None) -> Tensor:
    """``N_neg / N_pos`` per label of 0/1 targets ``y`` (N, K), for ``BCEWithLogitsLoss(pos_weight=)``.

    A label without positives gets weight 1 (nothing to balance); ``max_weight`` caps rare labels.
    """
    y = y.float()
    pos = y.sum(0)
    neg = len(y) - pos
    w = torch.where(pos > 0, neg / pos.clamp_min(1), torch.ones_like(pos))
    return w if max_weight is None else w.clamp(max=max_weight)


def predict(probs: Tensor, thresholds: float | Tensor) -> Tensor:
    """0/1 decisions: ``probs >= threshold`` (a float, or one threshold per label)."""
    return probs >= (thresholds if isinstance(thresholds, float | int) else thresholds.to(probs))


def tune_thresholds(probs: Tensor, y: Tensor, *, per_label: bool = True, default: float = 0.5) -> Tensor:
    """Thresholds maximizing F1 on (validation) probabilities ``probs`` and 0/1 targets ``y`` (N, K).

    ``per_label``: one threshold per label maximizing that label's F1; otherwise a single threshold
    (returned for every label) maximizing micro-F1. Each threshold lies halfway between the lowest
    probability predicted positive and the next lower one, so it is not glued to one validation
    example; a label without validation positives keeps ``default``. Exact (every distinct
    probability is a candidate) and vectorized: one sort per label.
    """
    if probs.shape != y.shape or probs.ndim != 2:
        raise ReglabError(f"tune_thresholds: probs and y must both be (N, K), got {tuple(probs.shape)} and {tuple(y.shape)}")
    probs, y = probs.detach().double().cpu(), y.detach().double().cpu()
    k = probs.shape[1]
    if not per_label:
        best = _best_threshold(probs.reshape(-1, 1), y.reshape(-1, 1), default)
        return best.expand(k).float().clone()
    return _best_threshold(probs, y, default).float()


def _best_threshold(probs: Tensor, y: Tensor, default: float) -> Tensor:
    n = probs.shape[0]
    p_sorted, order = probs.sort(0, descending=True)
    tp = y.gather(0, order).cumsum(0)  # predicting the top i+1 examples positive
    predicted = torch.arange(1, n + 1, dtype=probs.dtype).unsqueeze(1)
    positives = y.sum(0, keepdim=True)
    f1 = 2 * tp / (predicted + positives)
    # a cut is only possible where the next probability is strictly lower (ties go together)
    nxt = torch.cat([p_sorted[1:], torch.full_like(p_sorted[:1], -1.0)])
    f1 = torch.where(p_sorted > nxt, f1, torch.full_like(f1, -1.0))
    i = f1.argmax(0, keepdim=True)
    lo = nxt.gather(0, i).clamp_min(0.0)
    thr = ((p_sorted.gather(0, i) + lo) / 2).squeeze(0)
    useful = (positives.squeeze(0) > 0) & (f1.gather(0, i).squeeze(0) > 0)
    return torch.where(useful, thr, torch.full_like(thr, default))


def f1_scores(logits: Tensor, y: Tensor, threshold: float | Tensor = 0.5) -> dict[str, Tensor]:
    """Micro- and macro-F1 of ``logits >= logit(threshold)`` against 0/1 ``y``, over the last two
    dimensions ``(..., N, K)`` (e.g. stacked seeds ``(S, N, K)`` give ``(S,)`` values). Labels with no
    positives and no predictions count as F1 = 0 in the macro average (scikit-learn's
    ``zero_division=0``)."""
    pred = predict(probabilities(logits), threshold).to(torch.float64)
    y = y.to(torch.float64).expand_as(pred)
    tp = (pred * y).sum(-2)
    fp = (pred * (1 - y)).sum(-2)
    fn = ((1 - pred) * y).sum(-2)
    per_label = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
    micro = 2 * tp.sum(-1) / (2 * tp.sum(-1) + fp.sum(-1) + fn.sum(-1)).clamp_min(1)
    return {"micro_f1": micro, "macro_f1": per_label.mean(-1)}


@dataclass
class Report:
    """Per-class precision/recall/F1/support plus micro and macro averages."""

    classes: list[str]
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    thresholds: np.ndarray
    micro: dict[str, float]
    macro: dict[str, float]

    def to_dict(self) -> dict:
        return {
            "classes": {
                c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s), "threshold": float(t)}
                for c, p, r, f, s, t in zip(
                    self.classes, self.precision, self.recall, self.f1, self.support, self.thresholds, strict=True
                )
            },
            "micro": self.micro,
            "macro": self.macro,
        }

    def markdown(self, digits: int = 3) -> str:
        """The report as a Markdown table, one row per class, then the micro and macro averages."""
        fmt = f"{{:.{digits}f}}"
        lines = ["| class | precision | recall | F1 | support | threshold |", "|---|---:|---:|---:|---:|---:|"]
        for c, p, r, f, s, t in zip(self.classes, self.precision, self.recall, self.f1, self.support, self.thresholds, strict=True):
            lines.append(f"| {c} | {fmt.format(p)} | {fmt.format(r)} | {fmt.format(f)} | {int(s)} | {fmt.format(t)} |")
        total = int(self.support.sum())
        for name, avg in (("micro avg", self.micro), ("macro avg", self.macro)):
            lines.append(
                f"| **{name}** | {fmt.format(avg['precision'])} | {fmt.format(avg['recall'])} | "
                f"{fmt.format(avg['f1'])} | {total} |  |"
            )
        return "\n".join(lines)


def report(
    probs: Tensor, y: Tensor, classes: Sequence[str], thresholds: float | Tensor = 0.5
) -> Report:
    """Per-class report of the decisions ``probs >= thresholds`` against 0/1 targets ``y`` (N, K)."""
    from sklearn.metrics import precision_recall_fscore_support

    if probs.shape != y.shape or probs.shape[1] != len(classes):
        raise ReglabError(f"report: probs {tuple(probs.shape)}, y {tuple(y.shape)} and {len(classes)} classes do not match")
    pred = predict(probs, thresholds).cpu().numpy().astype(np.int8)
    true = y.detach().cpu().numpy().astype(np.int8)
    p, r, f, s = precision_recall_fscore_support(true, pred, average=None, zero_division=0)
    averages = {}
    for avg in ("micro", "macro"):
        ap, ar, af, _ = precision_recall_fscore_support(true, pred, average=avg, zero_division=0)
        averages[avg] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}
    thr = np.full(len(classes), float(thresholds)) if isinstance(thresholds, float | int) else thresholds.cpu().numpy()
    return Report(list(classes), p, r, f, s, thr.astype(np.float64), averages["micro"], averages["macro"])


# ---- reports of stored runs ----------------------------------------------------------------------
def checkpoint_probabilities(
    checkpoint: str | Path, splits: Sequence[str] = ("val", "test"), *, data: Any = None
) -> tuple[dict[str, Tensor], list[int], Any]:
    """Sigmoid outputs ``{split: (S, N, K)}`` of the models in a trainer checkpoint (``last.pt``), for
    its seeds ``S``, and the dataset. The run is rebuilt from the checkpoint's own configuration, its
    state loaded, and the techniques' end-of-training hooks applied, so the model is the one the run
    ended with (early stopping's restored best epoch included) and the outputs reproduce the run's
    final metrics. ``data``: the dataset, when already loaded (default: loaded from the configuration).
    """
    from .checkpoint import load as load_state
    from .config import RunConfig
    from .data import load
    from .trainer import _hooks, build_run, load_checkpoint

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
    for hook in _hooks(run, "on_fit_end"):
        hook(run)
    run.model.eval()
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for name in splits:
            split = getattr(run.data, name)
            parts = []
            for start in range(0, len(split), config.eval_batch_size):
                rows = torch.arange(start, min(len(split), start + config.eval_batch_size))
                x = run.data.normalize(run.data.to_input(split.inputs(rows)))
                parts.append(probabilities(run.model(x, shared=True)))
            out[name] = torch.cat(parts, 1)
    return out, list(state["seeds"]), run.data


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else math.nan


def _pm(values: Sequence[float], digits: int = 3) -> str:
    m, se = _mean_se(values)
    return f"{m:.{digits}f}" if math.isnan(se) else f"{m:.{digits}f} ± {se:.{digits}f}"


def study_f1_table(folder: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """Micro/macro F1 on validation and test (threshold 0.5, as recorded by the trainer) per
    configuration of the study stored in ``folder``, mean ± SE over seeds: ``(markdown, rows)``."""
    from .study.plan import plan
    from .study.spec import parse_spec
    from .study.store import Store

    db = Path(folder) / "results.sqlite"
    if not db.is_file():
        raise ReglabError(f"{folder}: no results.sqlite (run `reglab study ... -o {folder}` first)")
    store = Store(db)
    raw = store.study_spec()
    if raw is None:
        raise ReglabError(f"{db} holds no study")
    spec = parse_spec(raw, raw.get("name", "study"))
    runs = store.runs(spec.name)
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
    (out / "classes.json").write_text(json.dumps(payload, indent=1, default=float))
    return md


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m reglab.multilabel STUDY_FOLDER [-o OUT]``: write the per-class report of a study."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m reglab.multilabel", description=main.__doc__)
    parser.add_argument("folder", type=Path, help="study folder (holding results.sqlite and checkpoints/)")
    parser.add_argument("-o", "--out", type=Path, default=None, help="output folder [default: FOLDER/report]")
    args = parser.parse_args(argv)
    try:
        path = study_class_report(args.folder, args.out)
    except ReglabError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(path.read_text())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
