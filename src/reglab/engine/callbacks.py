"""The hook protocol: everything that takes part in a training run is a :class:`Callback`.

Techniques (:class:`reglab.techniques.base.Technique`) are callbacks with knobs; a user's or a
study's own observers (progress events, recorders) subclass :class:`Callback` directly. The loop
(:func:`reglab.engine.loop.fit`) fires the hooks in this order::

    [techniques only: apply_model -> make_optimizer -> make_scheduler]     build_run
    on_fit_start
    per epoch:  on_epoch_start
        per batch:  transform_batch (training batches only)
                    train_step, or the default step:
                        forward -> compute_loss (replaces the task's criterion) -> loss (adds to it)
                        -> backward -> after_backward -> before_step -> optimizer step
                    after_step
        evaluate (batch_metrics on every evaluation batch) -> on_epoch_end
    on_fit_end

A hook runs only on the participants whose class overrides it, in increasing ``order`` (ties:
techniques in configuration order, then callbacks in the order given). Every public method of a
subclass must be a hook or part of the base API: a misspelt hook name (``on_epoch_ends``) is a
``TypeError`` when the class is defined, not a hook that silently never runs. State that a resumed
run needs goes through ``state_dict`` / ``load_state_dict`` and is checkpointed under the
participant's ``state_key`` (a technique's name, a callback's class name), never by position.

Every tensor a hook sees has a leading *seed* dimension S (S seeds of one configuration train at
once; S = 1 for a single run): batches ``x: (S, B, ...)``, ``y: (S, B, ...)``, per-seed losses ``(S,)``.
"""
from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor

if TYPE_CHECKING:
    from .run import Run

#: hook name -> where it fires (the contract above, one line each)
HOOKS: dict[str, str] = {
    "on_fit_start": "once, after the run is built (and before a checkpoint is loaded)",
    "on_epoch_start": "before each epoch's first batch",
    "transform_batch": "each training batch, before normalization: (run, x, y) -> (x, y)",
    "train_step": "replaces the default step: (run, x, y) -> detached per-seed loss (S,), or None to keep it",
    "compute_loss": "replaces the task's criterion: (run, out, y, x) -> per-seed loss (S,), or None to keep it",
    "loss": "adds to the per-seed loss: (run, loss, out, y, x) -> loss (S,)",
    "after_backward": "after loss.backward(), before the optimizer step (gradients are set)",
    "before_step": "just before optimizer.step() (e.g. scale the learning rate for this step)",
    "after_step": "after each batch's optimizer step(s)",
    "batch_metrics": "each evaluation batch: (run, out, y, x) -> {name: per-seed sum over the batch (S,)}",
    "on_epoch_end": "after the epoch's validation record is appended (run.history[s][-1])",
    "on_fit_end": "once, after the last epoch, with each seed's best-epoch weights loaded (before the final evaluation)",
}


class Callback:
    """Base of every participant in a run: override the hooks you need (see the module docstring)."""

    #: hooks of several participants run in increasing ``order``
    order: ClassVar[int] = 50
    #: public methods of subclasses that are not hooks (extended by :class:`Technique`)
    API: ClassVar[frozenset[str]] = frozenset({"state_dict", "load_state_dict", "state_key"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr, value in vars(cls).items():
            if attr.startswith("_") or not callable(value) or isinstance(value, type):
                continue
            if attr not in HOOKS and attr not in cls.API:
                close = difflib.get_close_matches(attr, [*HOOKS, *cls.API], n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise TypeError(f"{cls.__name__}.{attr} is not a hook (hooks: {', '.join(HOOKS)}){hint}; "
                                "name helper methods with a leading underscore")

    @property
    def state_key(self) -> str:
        """The key of this participant's state in checkpoints."""
        return type(self).__name__

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (tensors, numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    # ---- hooks (each runs only where a subclass overrides it) ---------------------------------
    def on_fit_start(self, run: Run) -> None:
        """Once, after the run is built (and before a checkpoint is loaded)."""

    def on_epoch_start(self, run: Run) -> None:
        """Before each epoch's first batch."""

    def transform_batch(self, run: Run, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Training batches only: ``x`` float (S, B, ...) before normalization, ``y`` (S, B, ...)."""
        return x, y

    def train_step(self, run: Run, x: Tensor, y: Tensor) -> Tensor | None:
        """Replace the default forward/loss/backward/step: do the step(s) and return the detached
        per-seed training loss ``(S,)``; ``None`` keeps the default (e.g. deep supervision)."""
        return None

    def compute_loss(self, run: Run, out: Tensor, y: Tensor, x: Tensor) -> Tensor | None:
        """Replace the task's criterion (cross-entropy, BCE, MSE) by another per-seed loss ``(S,)``;
        at most one participant of a run may return a loss here (e.g. engression's energy loss)."""
        return None

    def loss(self, run: Run, loss: Tensor, out: Tensor, y: Tensor, x: Tensor) -> Tensor:
        """Return the per-seed training loss ``(S,)``, e.g. with a penalty added."""
        return loss

    def after_backward(self, run: Run) -> None:
        """After ``backward()``: the gradients are set, the optimizer has not stepped."""

    def before_step(self, run: Run) -> None:
        """Just before ``optimizer.step()`` (e.g. warmup scales the learning rate for one step)."""

    def after_step(self, run: Run) -> None:
        """After each batch's optimizer step(s)."""

    def batch_metrics(self, run: Run, out: Tensor, y: Tensor, x: Tensor) -> dict[str, Tensor]:
        """Extra evaluation metrics: per-seed *sums* over the batch's examples ``(S,)``; the loop
        divides by the number of examples (e.g. exact-puzzle accuracy)."""
        return {}

    def on_epoch_end(self, run: Run) -> None:
        """After evaluation; ``run.history[s][-1]`` holds seed ``s``'s record of this epoch."""

    def on_fit_end(self, run: Run) -> None:
        """Once, after the last epoch, with each seed's best-epoch weights loaded, before the final
        evaluation."""


def overrides(participant: Callback, hook: str) -> bool:
    """Whether ``participant``'s class implements ``hook`` (the base's no-op does not count)."""
    return getattr(type(participant), hook) is not getattr(Callback, hook)


def hook_table(participants: list[Callback]) -> dict[str, list[Any]]:
    """For every hook, the bound methods of the participants that implement it, by increasing
    ``order`` (a stable sort: ties keep the participants' order)."""
    for p in participants:
        if not isinstance(p, Callback):
            raise TypeError(f"{type(p).__name__} is not a reglab Callback (subclass reglab.engine.callbacks.Callback)")
    ordered = sorted(participants, key=lambda p: p.order)
    return {hook: [getattr(p, hook) for p in ordered if overrides(p, hook)] for hook in HOOKS}


def state_keys(participants: list[Callback]) -> list[str]:
    """Checkpoint keys of ``participants``: their ``state_key``, made unique with ``#2``, ``#3``..."""
    seen: dict[str, int] = {}
    keys = []
    for p in participants:
        n = seen[p.state_key] = seen.get(p.state_key, 0) + 1
        keys.append(p.state_key if n == 1 else f"{p.state_key}#{n}")
    return keys
