"""The technique interface: a small unit with validated knobs and hooks into the training loop.

A technique subclasses :class:`Technique` (a :class:`reglab.engine.callbacks.Callback` with knobs),
names itself, declares its kind (one of :data:`KINDS`), its source and its knobs as a pydantic model
(defaults, ranges, descriptions: ``reglab list techniques`` prints them) and overrides the hooks it
needs; the hook order is documented in :mod:`reglab.engine.callbacks`. Besides those hooks a technique
may transform the freshly built model (``apply_model``) and make the optimizer or the LR scheduler.

Every tensor a hook sees has a leading *seed* dimension S. Random draws use the technique's own
stream ``run.stream(self.name)``, one CPU generator per seed seeded from (seed, technique name)
(draw on the CPU, then move the small tensor to ``run.device``; see :func:`per_seed`), so a seed's
randomness is the same whether it trains alone or in a group and on any device, and adding another
technique never changes it; the loop checkpoints the streams. A technique's own state goes through
``state_dict``/``load_state_dict`` and is saved under its name.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from ..engine.callbacks import Callback

if TYPE_CHECKING:
    from ..data import Data
    from ..engine.run import Run

Kind = Literal["optimizer", "schedule", "schedule-modifier", "normalization", "initialization", "regularizer",
               "augmentation", "loss", "training", "stopping", "data", "diagnostic"]
#: every technique's kind is one of these (``reglab list techniques`` groups by kind). "initialization"
#: (how the weights start) is its own kind because it is exclusive (one scheme per run) and no other
#: kind describes it: an exclusive technique of kind "training" would displace deep supervision.
KINDS: tuple[str, ...] = get_args(Kind)


class Knobs(BaseModel):
    """Base of every technique's knobs: unknown knobs are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Technique(Callback):
    """Base class. Subclasses set ``name``, ``kind``, ``source`` and ``Knobs``, and override hooks."""

    API = Callback.API | {"apply_model", "make_optimizer", "make_scheduler", "slot"}
    name: ClassVar[str] = ""
    kind: ClassVar[Kind] = "regularizer"
    #: the paper or documentation the technique follows (shown by ``reglab list techniques``)
    source: ClassVar[str] = ""
    #: at most one technique of an exclusive kind per run; a later one replaces the earlier one
    exclusive: ClassVar[bool] = False
    #: hooks of several techniques run in increasing ``order`` (geometric augmentation before mixup;
    #: warmup's LR multiplier is removed before a per-step schedule steps)
    order: ClassVar[int] = 50
    #: why the technique cannot train several seeds stacked in one model (``None``: it can)
    stack_blocker: ClassVar[str | None] = None
    Knobs: ClassVar[type[Knobs]] = Knobs

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind not in KINDS:
            raise TypeError(f"technique {cls.name or cls.__name__}: unknown kind '{cls.kind}' (allowed: {', '.join(KINDS)})")

    def __init__(self, **knobs: Any) -> None:
        self.knobs = self.Knobs(**knobs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.knobs.model_dump().items())
        return f"{self.name}({args})"

    @property
    def slot(self) -> str:
        """Key under which a configuration holds this technique (its kind when exclusive)."""
        return self.kind if self.exclusive else self.name

    @property
    def state_key(self) -> str:
        return self.name

    # ---- model and optimizer (techniques only; the run's hooks are those of Callback) ----------
    def apply_model(self, model: nn.Module, data: Data) -> nn.Module:
        """Transform the freshly built single-seed model (before seeds are stacked)."""
        return model

    def make_optimizer(self, params: list[Tensor], run: Run) -> torch.optim.Optimizer | None:
        """Optimizers return the optimizer for ``params``."""
        return None

    def make_scheduler(self, optimizer: torch.optim.Optimizer, run: Run) -> Any:
        """Schedules return a torch LR scheduler (stepped by the technique itself)."""
        return None


def stack_blockers(techniques: list[Technique]) -> list[str]:
    """``"name: reason"`` for each technique that cannot train stacked seeds (empty when all can)."""
    return [f"{t.name}: {t.stack_blocker}" for t in techniques if t.stack_blocker is not None]


def fused(params: list[Tensor]) -> bool:
    """Whether torch's fused optimizer kernels can update ``params`` (floating-point tensors on the CPU or
    CUDA). One fused kernel per parameter replaces the ten or so elementwise passes over parameter and
    state of the default implementation, several times faster for Adam on the CPU, where that memory
    traffic rivals the matrix products of an MLP (``benchmarks/scaling.py`` measures both). The update
    is the same to float rounding."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def per_seed(run: Run, stream: str, draw: Any) -> Tensor:
    """``stack([draw(g) for g in run.stream(stream)])`` moved to ``run.device``: per-seed random draws
    (shape ``(S, ...)``) made on the CPU from each seed's generator of ``stream``."""
    return torch.stack([draw(g) for g in run.stream(stream)]).to(run.device)


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
