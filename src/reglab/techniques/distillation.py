"""Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network",
arXiv:1503.02531, 2015), and the omission of classes from the transfer set ("mythical digit").

The student's training loss per example is

    a * T^2 * CE(softmax(z_s / T), softmax(z_t / T)) + (1 - a) * CE(z_s, y)

where ``z_s``/``z_t`` are the student's and teacher's logits, ``CE(q, p) = -sum_k p_k log q_k`` and
``CE(z_s, y)`` is the run's usual hard-label loss (with label smoothing or class weights if
configured). The soft term equals ``KL(p_t || p_s)`` plus the teacher's entropy, a constant, so its
gradient w.r.t. the student's logits is ``a * T * (softmax(z_s/T) - softmax(z_t/T))``; the ``T^2``
keeps the soft term's gradients on the scale of the hard term's when T changes (Section 2 of the
paper). ``a = 0`` is plain training.

The teacher is a reglab checkpoint (``last.pt``/``best.pt`` of a run folder: its configuration
rebuilds the architecture, its best weights are used, ``teacher_member`` picks the seed of a grouped
run) or a plain state dict saved by :mod:`reglab.engine.checkpoint` with ``teacher_model`` /
``teacher_model_options`` naming the architecture. It runs in eval mode without gradients on the
student's (normalized, augmented) batch; with no augmentation technique in the run its logits on
the training split are computed once and indexed per batch (``cache_logits``), which is exact and
costs one evaluation pass. Several seeds train in one group: the teacher is shared.

``drop_classes`` removes every training example of those classes from the transfer set before
training (the paper's "mythical 3": the student never sees a 3, neither as an input nor as a
label; it learns about 3s only from the teacher's soft targets on other digits). The examples are
removed, not masked, so batches stay full and an epoch is shorter. Validation and test keep all
classes. The ``drop_classes`` technique does the same without a teacher (the control run).

Knobs: teacher (path), temperature=4.0, a=0.5, teacher_model, teacher_model_options,
teacher_member=0, drop_classes=[], cache_logits=True.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..config import RunConfig
from ..data.base import Data, Split
from ..engine import checkpoint as ckpt
from ..errors import ReglabError
from ..models import build_model
from . import build_member, resolve_techniques
from .base import Knobs, Technique


def distillation_loss(student: Tensor, teacher: Tensor, y: Tensor | None, temperature: float, a: float,
                      hard: Tensor | None = None) -> Tensor:
    """Mean over the last-but-one dimension of ``a*T^2*CE(softmax(s/T), softmax(t/T)) + (1-a)*CE(s, y)``.

    ``student``/``teacher``: logits ``(..., B, K)``; ``y``: class ids ``(..., B)``, or ``hard``: the
    already computed hard-label loss ``(...)`` (the trainer's criterion). Returns shape ``(...)``.
    """
    t = temperature
    dtype = torch.promote_types(student.dtype, torch.float32)  # at least float32 (bf16 logits under AMP)
    student, teacher = student.to(dtype), teacher.to(dtype)
    soft_targets = F.softmax(teacher / t, dim=-1)
    soft = -(soft_targets * F.log_softmax(student / t, dim=-1)).sum(-1).mean(-1)
    if hard is None:
        if y is None:
            raise ValueError("distillation_loss needs y or hard")
        k = student.shape[-1]
        hard = F.cross_entropy(student.reshape(-1, k), y.reshape(-1), reduction="none").view(y.shape).mean(-1)
    return a * t * t * soft + (1 - a) * hard


def drop_classes_(run: Any, classes: list[int], who: str) -> None:
    """Remove the training examples of ``classes`` from ``run.data.train`` (inputs index-mapped, not
    copied) and shorten the epoch accordingly."""
    data: Data = run.data
    if data.task != "classification":
        raise ReglabError(f"technique {who}: drop_classes needs a classification task, not {data.task}")
    bad = [c for c in classes if not 0 <= c < data.num_outputs]
    if bad:
        raise ReglabError(f"technique {who}: drop_classes {bad} out of range (classes are 0..{data.num_outputs - 1})")
    train = data.train
    keep = ~torch.isin(train.y, torch.tensor(classes, dtype=train.y.dtype, device=train.y.device))
    rows = keep.nonzero().squeeze(1)
    if len(rows) == 0:
        raise ReglabError(f"technique {who}: drop_classes {classes} removes every training example")
    index = rows if train.index is None else train.index[rows]
    data.train = Split(train.x, train.y[rows], index, {k: v[rows] for k, v in train.extra.items()})
    run.steps_per_epoch = max(1, len(rows) // run.config.batch_size)


def load_teacher(path: str | Path, data: Data, *, model: str | None = None, model_options: dict[str, Any] | None = None,
                 member: int = 0, device: torch.device | str = "cpu") -> nn.Module:
    """The teacher network of checkpoint ``path`` for ``data``, in eval mode, frozen."""
    state = ckpt.load(path)
    if isinstance(state, dict) and "config" in state and "best_state" in state:  # a run checkpoint
        config = RunConfig(**state["config"])
        seeds = state.get("seeds", [0])
        if not 0 <= member < len(seeds):
            raise ReglabError(f"technique distillation: teacher_member {member} out of range (the checkpoint holds {len(seeds)} seeds)")
        update = {k: v for k, v in (("model", model), ("model_options", model_options)) if v is not None}
        config = config.model_copy(update=update)
        name = config.model
        net = build_member(config, data, resolve_techniques(config.techniques))
        weights = {k: v[member] for k, v in state["best_state"].items()}
    else:
        if model is None:
            raise ReglabError("technique distillation: teacher_model is required when the teacher checkpoint "
                              "is a plain state dict (not a reglab run checkpoint)")
        name = model
        net = build_model(name, data.input_shape, data.num_outputs, **(model_options or {}))
        weights = state.get("model", state) if isinstance(state, dict) else state
    try:
        net.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ReglabError(f"technique distillation: teacher checkpoint {path} does not fit model '{name}' ({first})") from None
    net = net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _augments(run: Any) -> bool:
    """Whether any technique or callback of the run transforms training batches."""
    return bool(run.hooks["transform_batch"])


class Distillation(Technique):
    name = "distillation"
    kind = "loss"
    order = 20  # mixes the hard loss before penalties (L1, ...) are added to it
    source = "Hinton, Vinyals & Dean 2015 (arXiv:1503.02531)"

    class Knobs(Knobs):
        teacher: str | None = Field(None, description="teacher checkpoint: a run folder's best.pt/last.pt, or a state dict")
        temperature: float = Field(4.0, gt=0, description="softmax temperature T of the soft targets")
        a: float = Field(0.5, ge=0, le=1, description="weight of the soft (T^2-scaled) term; 1-a weighs the hard labels")
        teacher_model: str | None = Field(None, description="teacher architecture (default: from the checkpoint's config)")
        teacher_model_options: dict[str, Any] | None = Field(None, description="teacher model options (default: the checkpoint's)")
        teacher_member: int = Field(0, ge=0, description="which seed of a grouped teacher checkpoint")
        drop_classes: list[int] = Field([], description="classes removed from the transfer set")
        cache_logits: bool = Field(True, description="compute the teacher's logits on the train split once (off when augmenting)")

    def __init__(self, **knobs: Any) -> None:
        super().__init__(**knobs)
        self.teacher: nn.Module | None = None
        self.cache: Tensor | None = None

    def on_fit_start(self, run):  # noqa: ANN001, ANN201
        k = self.knobs
        if run.data.task != "classification":
            raise ReglabError(f"technique distillation: needs a classification task, not {run.data.task}")
        if k.drop_classes:
            drop_classes_(run, k.drop_classes, self.name)
        if k.a == 0:
            return  # plain training: no teacher needed
        self._load_teacher(run)
        self.cache = self._logits_of_train(run) if k.cache_logits and not _augments(run) else None

    def _load_teacher(self, run) -> None:  # noqa: ANN001
        k = self.knobs
        if k.teacher is None:
            raise ReglabError("technique distillation: knob 'teacher' (a checkpoint path) is required when a > 0")
        self.teacher = load_teacher(k.teacher, run.data, model=k.teacher_model, model_options=k.teacher_model_options,
                                    member=k.teacher_member, device=run.device)

    @torch.no_grad()
    def _teacher_logits(self, x: Tensor, lead: int) -> Tensor:
        """Teacher logits of a batch ``(S, B, ...)`` (``lead`` = 2) or ``(B, ...)`` (``lead`` = 1)."""
        flat = x.reshape(-1, *x.shape[lead:])
        return self.teacher(flat).float().view(*x.shape[:lead], -1)

    @torch.no_grad()
    def _logits_of_train(self, run) -> Tensor:  # noqa: ANN001
        data, split = run.data, run.data.train
        chunks = []
        for start in range(0, len(split), run.config.eval_batch_size):
            rows = torch.arange(start, min(len(split), start + run.config.eval_batch_size), device=run.device)
            chunks.append(self._teacher_logits(data.batch(split, rows), 1))
        return torch.cat(chunks)

    def loss(self, run, loss, out, y, x):  # noqa: ANN001, ANN201
        k = self.knobs
        if k.a == 0:
            return loss
        if self.cache is not None and run.batch_rows is not None:
            teacher = self.cache[run.batch_rows]
        else:
            if self.teacher is None:  # a step outside fit (e.g. timing seed groups in reglab.engine.grouping)
                self._load_teacher(run)
            teacher = self._teacher_logits(x, 2)
        return distillation_loss(out, teacher, None, k.temperature, k.a, hard=loss)

    def state_dict(self) -> dict[str, Any]:
        return {}  # the teacher and its logits are rebuilt from the checkpoint path at fit start


class DropClasses(Technique):
    name = "drop_classes"
    kind = "data"
    order = 10
    source = "Hinton, Vinyals & Dean 2015, Section 3 (the 'mythical digit' transfer set)"

    class Knobs(Knobs):
        classes: list[int] = Field([], description="class ids whose training examples are removed")

    def on_fit_start(self, run):  # noqa: ANN001, ANN201
        if self.knobs.classes:
            drop_classes_(run, self.knobs.classes, self.name)
