"""Deep supervision with adaptive halting (ACT) for the Tiny Recursive Model, as a trainer technique.

Jolicoeur-Martineau, "Less is More: Recursive Reasoning with Tiny Networks" (2025,
arXiv:2510.04871), Figure 3: for each batch, up to ``n_sup`` supervision steps, each one deep
recursion of the model (``T - 1`` latent recursions without gradients, one with), the loss on the
decoded answer (the trainer's per-cell cross-entropy, so label smoothing and ``loss`` hooks such as
``l1`` compose) plus ``halt_weight`` times the halting head's binary cross-entropy against "the
answer is fully right", one optimizer step, and the latents (y, z) detached before the next step.
With ``act`` an example leaves the batch once its halting probability exceeds ``halt_threshold``;
the batch is done when every example has halted. Evaluation runs ``n_sup_test`` deep recursions on
every example (no halting at test time, as in the paper), optionally best-of-``best_of_k`` random
latent starts picked by halting confidence, and records ``exact_accuracy`` (all 81 cells right,
given cells trusted) and ``cell_accuracy`` (blank cells right, mean over puzzles), e.g. as
``val_exact_accuracy`` for a study's metric. ``eval_n_sup`` adds the same two metrics for other
test-time N_sup values of the same trained model (``exact_accuracy_sup32``...).

The recursion knobs ``n``, ``T``, ``backprop``, ``latent_init``, ``n_sup``, ``n_sup_test``, ``act``
and ``halt_threshold`` override the ``trm`` model's options of the same name when set (``None``
keeps the model's). After each epoch the record gets ``train_sup_steps`` (mean supervision steps
per training example), ``train_updates`` (optimizer steps per batch), and ``train_accuracy`` /
``train_exact_accuracy`` of each example's last training answer (cells, whole puzzles). The loop's ``after_step``
hooks (per-batch schedules, EMA, max-norm) run once per batch, after the last supervision step;
``run.step`` counts optimizer steps, so ``warmup`` (measured in steps) ends ``n_sup`` times sooner.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ..data.sudoku import predict, trusted
from ..engine.step import autocast, training_loss, optimizer_step
from ..errors import ReglabError
from ..models.trm import TRM
from .base import Knobs, Technique

if TYPE_CHECKING:
    from ..data import Data
    from ..engine.run import Run


def sudoku_metrics(logits: Tensor, y: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-seed *sums* over the batch of (puzzle fully right, fraction of blank cells right).

    ``logits`` (S, B, L, C), ``y`` (S, B, L) class ids, ``x`` (S, B, L) or (B, L) puzzles (0 = blank)."""
    x = x.expand(y.shape)
    exact = (predict(logits, x) == y).all(-1).float().sum(-1)
    blank = (x == 0).float()
    right = (logits.argmax(-1) == y).float() * blank
    cells = (right.sum(-1) / blank.sum(-1).clamp_min(1)).sum(-1)
    return exact, cells


class DeepSupervision(Technique):
    name = "deep_supervision"
    kind = "training"
    source = "Jolicoeur-Martineau 2025, Less is More: Recursive Reasoning with Tiny Networks (arXiv:2510.04871)"
    stack_blocker = ("ACT halts each seed's examples, and so stops its optimizer steps, at a different supervision "
                "step; stacked seeds would have to step together")

    class Knobs(Knobs):
        n_sup: int | None = Field(None, ge=1, description="max supervision steps per training batch (None: model's)")
        n_sup_test: int | None = Field(None, ge=1, description="deep recursions at test time (None: model's)")
        act: bool | None = Field(None, description="halt examples during training (None: model's)")
        halt_threshold: float | None = Field(None, gt=0, lt=1, description="halt when P(correct) exceeds it")
        halt_weight: float = Field(1.0, ge=0, description="weight of the halting BCE in the loss")
        n: int | None = Field(None, ge=1, description="z updates per latent recursion (None: model's)")
        T: int | None = Field(None, ge=1, description="latent recursions per deep recursion (None: model's)")
        backprop: Literal["last", "all"] | None = Field(None, description="gradients through the last or all T")
        latent_init: Literal["learned", "random"] | None = Field(None, description="initial (y, z) (None: model's)")
        best_of_k: int = Field(1, ge=1, description="random starts at test time, best by halting confidence")
        eval_n_sup: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list, description="extra test-time N_sup values to report")

    def __init__(self, **knobs) -> None:
        super().__init__(**knobs)
        self._reset()

    def _reset(self) -> None:
        self._steps = self._examples = self._updates = self._batches = self._cells = self._exact = 0.0

    # ---- setup ----------------------------------------------------------------------------
    def apply_model(self, model: nn.Module, data: Data) -> nn.Module:
        if not isinstance(model, TRM):
            raise ReglabError(f"technique deep_supervision: needs model 'trm' (got {type(model).__name__})")
        if data.task != "classification" or data.train.y.ndim != 2:
            raise ReglabError("technique deep_supervision: needs a per-cell classification dataset such as 'sudoku'")
        k = self.knobs
        for knob in ("n_sup", "n_sup_test", "act", "halt_threshold", "n", "T", "backprop"):
            if (value := getattr(k, knob)) is not None:
                setattr(model, knob, value)
        if k.latent_init == "random" and model.latent_init == "learned":
            del model.y_init, model.z_init
        elif k.latent_init == "learned" and model.latent_init == "random":
            model.y_init = nn.Parameter(torch.randn(model.dim))
            model.z_init = nn.Parameter(torch.randn(model.dim))
        model.latent_init = k.latent_init or model.latent_init
        if k.best_of_k > 1 and model.latent_init != "random":
            raise ReglabError("technique deep_supervision: best_of_k > 1 needs latent_init='random'")
        model.test_k = k.best_of_k if k.best_of_k > 1 else model.test_k
        return model

    @staticmethod
    def _model(run: Run) -> TRM:
        if run.size != 1:
            raise ReglabError("technique deep_supervision: trains one seed at a time (fit the seeds one by one)")
        return run.model.single

    def _init_latents(self, run: Run, model: TRM, batch: int) -> tuple[Tensor, Tensor]:
        if model.latent_init == "learned":
            return model.init_latents(batch)
        y, z = (torch.randn(batch, model.length, model.dim, generator=run.stream(self.name)[0]) * model.init_std
                for _ in range(2))
        return y.to(run.device), z.to(run.device)

    # ---- training -------------------------------------------------------------------------
    def on_epoch_start(self, run: Run) -> None:
        self._reset()

    def train_step(self, run: Run, x: Tensor, y: Tensor) -> Tensor:
        model = self._model(run)
        x, y = x[0], y[0]
        batch = len(x)
        active = torch.arange(batch, device=x.device)
        steps = torch.zeros(batch, device=x.device)
        answer = torch.zeros_like(y)  # each example's latest prediction
        y_lat, z_lat = self._init_latents(run, model, batch)
        losses = []
        for _ in range(model.n_sup):
            xa, ya = x[active], y[active]
            with autocast(run):
                y_lat, z_lat, logits, halt = model.deep_recursion(model.embed(xa), y_lat, z_lat)
            loss = training_loss(run, logits.float().unsqueeze(0), ya.unsqueeze(0), xa.unsqueeze(0))  # (1,)
            answer[active] = logits.detach().argmax(-1)
            correct = (predict(logits.detach(), xa) == ya).all(-1).float()
            loss = loss + self.knobs.halt_weight * F.binary_cross_entropy_with_logits(halt.float(), correct)
            optimizer_step(run, loss)
            losses.append(loss.detach())
            steps[active] += 1
            if model.act:
                keep = torch.sigmoid(halt.detach().float()) <= model.halt_threshold
                active, y_lat, z_lat = active[keep], y_lat[keep], z_lat[keep]
                if len(active) == 0:
                    break
        self._steps += steps.sum().item()
        self._examples += batch
        self._updates += len(losses)
        self._batches += 1
        self._cells += (answer == y).float().mean(-1).sum().item()
        self._exact += (trusted(answer, x) == y).all(-1).sum().item()
        return torch.stack(losses).mean(0)

    def on_epoch_end(self, run: Run) -> None:
        if self._batches and run.history[0] and run.history[0][-1]["epoch"] == run.epoch:
            run.history[0][-1]["train_sup_steps"] = self._steps / self._examples
            run.history[0][-1]["train_updates"] = self._updates / self._batches
            run.history[0][-1]["train_accuracy"] = self._cells / self._examples
            run.history[0][-1]["train_exact_accuracy"] = self._exact / self._examples

    # ---- evaluation -----------------------------------------------------------------------
    def batch_metrics(self, run: Run, out: Tensor, y: Tensor, x: Tensor) -> dict[str, Tensor]:
        exact, cells = sudoku_metrics(out, y, x)
        metrics = {"exact_accuracy": exact, "cell_accuracy": cells}
        for n_sup in self.knobs.eval_n_sup:
            logits = self._predict(self._model(run), x, n_sup).unsqueeze(0)
            exact, cells = sudoku_metrics(logits, y, x)
            metrics[f"exact_accuracy_sup{n_sup}"] = exact
            metrics[f"cell_accuracy_sup{n_sup}"] = cells
        return metrics

    @staticmethod
    @torch.no_grad()
    def _predict(model: TRM, x: Tensor, n_sup: int) -> Tensor:
        """The eval-mode answer of ``model`` with ``n_sup`` deep recursions (best-of-k as configured)."""
        saved = model.n_sup_test
        model.n_sup_test = n_sup
        try:
            return model(x).float()
        finally:
            model.n_sup_test = saved
