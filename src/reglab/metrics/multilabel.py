"""Multilabel classification: sigmoid outputs, decision thresholds, per-label balancing and reports.

A multilabel model emits one logit per label and is trained with ``BCEWithLogitsLoss``; a label is
predicted when its sigmoid probability reaches a threshold, either one global value (0.5, or the
value maximizing micro-F1 on validation) or one per label tuned on the validation split to maximize
that label's F1 (as in the GoEmotions paper's per-emotion evaluation; Lipton et al., "Thresholding
Classifiers to Maximize F1 Score", 2014). Thresholds are never tuned on the test split. Class
balancing follows ``BCEWithLogitsLoss(pos_weight=...)`` with ``pos_weight = N_neg / N_pos`` per label.
The per-class report uses scikit-learn's ``precision_recall_fscore_support`` (micro and macro
averages); :func:`f1_scores` is a torch version for per-epoch metrics over stacked seeds.

The per-class report of a study's stored runs is :mod:`reglab.study.class_report`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import ReglabError


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
