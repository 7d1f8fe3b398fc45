"""The technique interface: a small unit with validated knobs and hooks into the training loop.

A technique subclasses :class:`Technique`, names itself, declares its knobs as a pydantic model
(defaults, ranges, descriptions: ``reglab list techniques`` prints them) and overrides the hooks
it needs. The trainer calls the hooks in this order (see :func:`reglab.trainer.fit`)::

    apply_model -> make_optimizer / make_scheduler -> on_fit_start
    per epoch:  on_epoch_start
        per batch:  transform_batch (train only) -> [train_step, or: forward -> loss -> backward
                    -> after_backward -> optimizer step] -> after_step
        evaluate (batch_metrics) -> on_epoch_end
    on_fit_end

Every tensor a hook sees has a leading *seed* dimension S: the trainer trains S seeds of one
configuration at once (S = 1 for a single run). Batches are ``x: (S, B, ...)``, ``y: (S, B, ...)``;
per-seed losses are ``(S,)``; ``run.model.stacked()`` gives every parameter as ``(S, ...)``.
Random draws use ``run.generators[s]``, one CPU generator per seed (draw on the CPU, then move the
small tensor to ``run.device``), so a seed's randomness is the same whether it trains alone or in a
group and on any device; the trainer checkpoints these generators. A technique's own state goes
through ``state_dict``/``load_state_dict``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

if TYPE_CHECKING:
    from ..data import Data
    from ..trainer import Run


class Knobs(BaseModel):
    """Base of every technique's knobs: unknown knobs are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Technique:
    """Base class. Subclasses set ``name``, ``kind``, ``source`` and ``Knobs``, and override hooks."""

    name: ClassVar[str] = ""
    #: optimizer | schedule | normalization | regularizer | augmentation | loss | diagnostic | ...
    kind: ClassVar[str] = "regularizer"
    #: the paper or documentation the technique follows (shown by ``reglab list techniques``)
    source: ClassVar[str] = ""
    #: at most one technique of an exclusive kind per run; a later one replaces the earlier one
    exclusive: ClassVar[bool] = False
    #: hooks of several techniques run in increasing ``order`` (geometric augmentation before mixup;
    #: warmup's LR multiplier is removed before a per-step schedule steps)
    order: ClassVar[int] = 50
    #: ``True`` when the technique can train several seeds at once; otherwise the reason it can't
    group_ok: ClassVar[bool | str] = True
    Knobs: ClassVar[type[Knobs]] = Knobs

    def __init__(self, **knobs: Any) -> None:
        self.knobs = self.Knobs(**knobs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.knobs.model_dump().items())
        return f"{self.name}({args})"

    @property
    def slot(self) -> str:
        """Key under which a configuration holds this technique (its kind when exclusive)."""
        return self.kind if self.exclusive else self.name

    # ---- hooks (all optional) -------------------------------------------------------------
    def apply_model(self, model: nn.Module, data: Data) -> nn.Module:
        """Transform the freshly built single-seed model (before seeds are stacked)."""
        return model

    def make_optimizer(self, params: list[Tensor], run: Run) -> torch.optim.Optimizer | None:
        """Optimizers return the optimizer for ``params``."""
        return None

    def make_scheduler(self, optimizer: torch.optim.Optimizer, run: Run) -> Any:
        """Schedules return a torch LR scheduler (stepped by the technique itself)."""
        return None

    def on_fit_start(self, run: Run) -> None: ...

    def on_epoch_start(self, run: Run) -> None: ...

    def transform_batch(self, run: Run, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Training batches only: ``x`` float (S, B, ...) before normalization, ``y`` (S, B, ...)."""
        return x, y

    def train_step(self, run: Run, x: Tensor, y: Tensor) -> Tensor | None:
        """Replace the default forward/loss/backward/step: do the step(s) and return the detached
        per-seed training loss ``(S,)``; ``None`` keeps the default (e.g. deep supervision)."""
        return None

    def loss(self, run: Run, loss: Tensor, out: Tensor, y: Tensor, x: Tensor) -> Tensor:
        """Return the per-seed training loss ``(S,)``, e.g. with a penalty added."""
        return loss

    def batch_metrics(self, run: Run, out: Tensor, y: Tensor, x: Tensor) -> dict[str, Tensor]:
        """Extra evaluation metrics: per-seed *sums* over the batch's examples ``(S,)``; the trainer
        divides by the number of examples (e.g. exact-puzzle accuracy)."""
        return {}

    def after_backward(self, run: Run) -> None: ...

    def after_step(self, run: Run) -> None: ...

    def on_epoch_end(self, run: Run) -> None:
        """After evaluation; ``run.history[s][-1]`` holds seed ``s``'s record of this epoch."""

    def on_fit_end(self, run: Run) -> None: ...

    # ---- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (tensors, numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def group_blockers(techniques: list[Any]) -> list[str]:
    """``"name: reason"`` for each technique that cannot train stacked seeds (empty when all can)."""
    return [f"{t.name}: {t.group_ok}" for t in techniques if t.group_ok is not True]


def per_seed(run: Run, draw: Any) -> Tensor:
    """``stack([draw(g) for g in run.generators])`` moved to ``run.device``: per-seed random draws
    (shape ``(S, ...)``) made on the CPU from each seed's own generator."""
    return torch.stack([draw(g) for g in run.generators]).to(run.device)


class Schedule(Technique):
    """A learning-rate schedule backed by a ``torch.optim.lr_scheduler`` object in
    ``self.scheduler``, whose state goes into the run's checkpoints. One schedule per run."""

    kind = "schedule"
    exclusive = True
    scheduler: Any = None

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)
