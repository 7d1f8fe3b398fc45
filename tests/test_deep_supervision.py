"""Deep supervision with ACT through the trainer: optimizer steps per batch, detached latents between
supervision steps, exact resume, ACT shortening supervision, the Sudoku metrics and knob errors."""
from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reglab.config import RunConfig
from reglab.engine.callbacks import Callback
from reglab.data import Data, Split
from reglab.data.sudoku import cell_accuracy, exact_accuracy, generate
from reglab.errors import ReglabError
from reglab.models.trm import best_of_k
from reglab.techniques import make
from reglab.techniques.deep_supervision import DeepSupervision
from reglab.engine.loop import evaluate, fit
from reglab.engine.run import build_run

SMALL = dict(dim=16, token_hidden=24, channel_hidden=32)


@functools.cache
def sudoku_data(n_train: int, clues: int, n_eval: int = 32, seed: int = 0) -> Data:
    p, s, _ = generate(n_train + 2 * n_eval, min_clues=clues, max_clues=clues, rng=np.random.default_rng(seed))
    x, y = torch.from_numpy(p), torch.from_numpy(s) - 1
    cut = [0, n_train, n_train + n_eval, n_train + 2 * n_eval]
    train, val, test = (Split(x[a:b], y[a:b]) for a, b in zip(cut, cut[1:]))
    return Data("sudoku", "classification", train, val, test, (81,), [str(d) for d in range(1, 10)])


def config(ds: dict, opts: dict | None = None, **kw) -> RunConfig:
    base = dict(dataset="sudoku", model="trm", model_options={**SMALL, "n": 1, "T": 2, **(opts or {})},
                techniques=[{"name": "adam", "lr": 3e-3}, {"name": "deep_supervision", **ds}],
                epochs=2, batch_size=32, eval_batch_size=64, metric="val_exact_accuracy")
    base.update(kw)
    return RunConfig(**base)


def technique(run) -> DeepSupervision:
    return next(t for t in run.techniques if isinstance(t, DeepSupervision))


def batch(data: Data, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    return data.train.x[:size].unsqueeze(0), data.train.y[:size].unsqueeze(0)


def count_optimizer_steps(run) -> list[int]:
    count = [0]
    step = run.optimizer.step

    def counted(*args, **kwargs):
        count[0] += 1
        return step(*args, **kwargs)

    run.optimizer.step = counted
    return count


def test_optimizer_steps_per_batch_with_and_without_halting():
    data = sudoku_data(16, 60)
    for bias, expected in [(-10.0, 3), (10.0, 1)]:  # nobody halts / everybody halts after step 1
        run = build_run(config({"n_sup": 3}), [0], data)
        model = run.model.single
        with torch.no_grad():
            model.halt_head.bias.fill_(bias)
        before = copy.deepcopy(model)
        count = count_optimizer_steps(run)
        x, y = batch(data)
        loss = technique(run).train_step(run, x, y)
        assert count[0] == expected and run.step == expected
        assert loss.shape == (1,) and not loss.requires_grad
        if expected == 1:  # the reported loss is the answer's cross-entropy + the halting BCE
            _, _, logits, halt = before.deep_recursion(before.embed(x[0]), *before.init_latents(16))
            right = (torch.where(x[0] > 0, x[0] - 1, logits.argmax(-1)) == y[0]).all(-1).float()
            ref = F.cross_entropy(logits.reshape(-1, 9), y[0].reshape(-1)) + F.binary_cross_entropy_with_logits(halt, right)
            assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    # without ACT nobody leaves, whatever the halting head says
    run = build_run(config({"n_sup": 3, "act": False}), [0], data)
    with torch.no_grad():
        run.model.single.halt_head.bias.fill_(10.0)
    count = count_optimizer_steps(run)
    technique(run).train_step(run, *batch(data))
    assert count[0] == 3


def test_latents_are_detached_between_supervision_steps():
    """T = 1: without the detach, step 2's gradient would reach step 1's recursion and the learned init."""
    data = sudoku_data(16, 60)
    cfg = config({"n_sup": 3, "act": False}, {"n": 1, "T": 1}, techniques=[
        {"name": "sgd", "lr": 1e-30}, {"name": "deep_supervision", "n_sup": 3, "act": False}])
    run = build_run(cfg, [0], data)
    model = run.model.single
    inputs, grads = [], []
    recursion = model.deep_recursion

    def recorded(x_emb, y, z):
        inputs.append((y, z))
        return recursion(x_emb, y, z)

    model.deep_recursion = recorded
    step = run.optimizer.step
    run.optimizer.step = lambda: (grads.append({n: p.grad for n, p in model.named_parameters()}), step())
    x, y = batch(data, 8)
    technique(run).train_step(run, x, y)
    assert len(inputs) == 3
    assert grads[0]["y_init"].abs().sum() > 0  # the first step reaches the learned initial latents ...
    for k in (1, 2):  # ... later ones start from detached latents
        assert all(t.grad_fn is None and not t.requires_grad for t in inputs[k])
        assert grads[k]["y_init"] is None and grads[k]["z_init"] is None
    # step 2's gradient equals that of a fresh recursion from the recorded latents (lr = 1e-30: the weights do not change)
    def step_loss(y_lat, z_lat):
        _, _, logits, halt = recursion(model.embed(x[0]), y_lat, z_lat)
        right = (torch.where(x[0] > 0, x[0] - 1, logits.argmax(-1)) == y[0]).all(-1).float()
        return F.cross_entropy(logits.reshape(-1, 9), y[0].reshape(-1)) + F.binary_cross_entropy_with_logits(halt, right)

    params = [p for n, p in model.named_parameters() if n not in ("y_init", "z_init")]
    names = [n for n, _ in model.named_parameters() if n not in ("y_init", "z_init")]
    fresh = torch.autograd.grad(step_loss(*inputs[1]), params)
    for name, g in zip(names, fresh):
        torch.testing.assert_close(grads[1][name], g, msg=name)
    # the counterfactual without the detach differs, so the comparison above can fail
    y1, z1 = model.latent_recursion(model.embed(x[0]), *model.init_latents(8))
    attached = torch.autograd.grad(step_loss(y1, z1), params)
    assert not torch.allclose(attached[names.index("net.0.channel_mlp.0.weight")], fresh[names.index("net.0.channel_mlp.0.weight")])


class Interrupt(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, run) -> None:
        if run.epoch == self.epoch:
            raise Interrupt


def timeless(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.mark.parametrize("ds", [{"n_sup": 3}, {"n_sup": 2, "latent_init": "random", "best_of_k": 2}])
def test_resume_equals_uninterrupted(tmp_path, ds):
    data = sudoku_data(64, 60)
    cfg = config(ds, epochs=3, techniques=[{"name": "adam", "lr": 3e-3}, {"name": "deep_supervision", **ds},
                                           {"name": "early_stopping", "patience": 5}])
    whole = fit(cfg, data=data, run_dir=tmp_path / "whole", progress=False)[0]
    with pytest.raises(Interrupt):
        fit(cfg, data=data, run_dir=tmp_path / "cut", callbacks=(CrashAt(2),), progress=False)
    resumed = fit(cfg, data=data, run_dir=tmp_path / "cut", resume=True, progress=False)[0]
    assert len(whole.history) == 3 and "train_sup_steps" in whole.history[-1]
    assert timeless(resumed.history) == timeless(whole.history)
    for key, value in whole.metrics.items():
        if "seconds" not in key:
            assert math.isclose(value, resumed.metrics[key], rel_tol=0, abs_tol=0), key


def test_act_reduces_supervision_steps_on_an_easy_task():
    """The easiest task: complete grids (81 clues), whose answer is right from the first supervision
    step on (given cells are trusted). The halting head learns that, and ACT stops after one step."""
    data = sudoku_data(128, 81, n_eval=16)
    techniques = [{"name": "adam", "lr": 1e-2}, {"name": "deep_supervision", "n_sup": 4}]
    act = fit(config({}, epochs=3, batch_size=16, techniques=techniques), data=data, progress=False)[0]
    steps = [r["train_sup_steps"] for r in act.history]
    print("ACT supervision steps per example by epoch:", [round(s, 2) for s in steps])
    assert steps[0] == 4 and steps[-1] < 1.5  # the head starts at P(halt) = sigmoid(-5) and learns to halt
    assert act.history[-1]["train_updates"] < 1.5
    techniques[1]["act"] = False
    full = fit(config({}, epochs=1, batch_size=16, techniques=techniques), data=data, progress=False)[0]
    assert full.history[0]["train_sup_steps"] == 4 and full.history[0]["train_updates"] == 4
    assert act.metrics["test_exact_accuracy"] == 1.0


def test_metrics_match_the_sudoku_functions_and_select_epochs():
    torch.manual_seed(0)
    data = sudoku_data(32, 60, n_eval=40)
    logits = torch.randn(2, 40, 81, 9)
    y = data.val.y.expand(2, -1, -1)
    logits[0, :5] = F.one_hot(y[0, :5], 9).float() * 10  # five puzzles fully right for seed 0
    out = DeepSupervision().batch_metrics(None, logits, y, data.val.x)
    exact, cells = out["exact_accuracy"], out["cell_accuracy"]
    torch.testing.assert_close(exact / 40, exact_accuracy(logits, y, data.val.x.expand(2, -1, -1)))
    # one clue count per puzzle here, so the mean over puzzles equals the pooled cell accuracy
    torch.testing.assert_close(cells / 40, cell_accuracy(logits, y, data.val.x.expand(2, -1, -1)))
    assert exact[0] >= 5
    result = fit(config({"n_sup": 2, "n_sup_test": 3, "eval_n_sup": [1, 3]}, epochs=2), data=data, progress=False)[0]
    m = result.metrics
    assert m["val_exact_accuracy_sup3"] == m["val_exact_accuracy"] and m["test_cell_accuracy_sup3"] == m["test_cell_accuracy"]
    assert m["test_cell_accuracy_sup1"] != m["test_cell_accuracy"]
    assert result.metrics["best_epoch"] == 1 + max(range(2), key=lambda e: result.history[e]["val_exact_accuracy"])


def test_best_of_k_at_evaluation_is_deterministic_and_picks_by_halting():
    data = sudoku_data(16, 60)
    run = build_run(config({"latent_init": "random", "best_of_k": 3, "n_sup_test": 2}), [0], data)
    model = run.model.single
    assert not hasattr(model, "y_init") and model.test_k == 3
    with torch.no_grad():
        model.halt_head.weight.normal_()
    a, b = evaluate(run, data.val, "val")[0], evaluate(run, data.val, "val")[0]
    assert a == b
    model.eval()
    with torch.no_grad():
        expected, _ = best_of_k(model, data.val.x, 3, generator=torch.Generator().manual_seed(model.eval_seed))
        single, _ = model.run(data.val.x, generator=torch.Generator().manual_seed(model.eval_seed))
    assert a["val_cell_accuracy"] == pytest.approx(cell_accuracy(expected, data.val.y, data.val.x).item())
    assert not torch.equal(expected, single)


def test_knob_overrides_and_errors():
    data = sudoku_data(16, 60)
    run = build_run(config({"n": 3, "T": 1, "n_sup": 5, "n_sup_test": 7, "halt_threshold": 0.7, "backprop": "all"}), [0], data)
    m = run.model.single
    assert (m.n, m.T, m.n_sup, m.n_sup_test, m.halt_threshold, m.backprop) == (3, 1, 5, 7, 0.7, "all")
    with pytest.raises(ReglabError, match="latent_init"):
        build_run(config({"best_of_k": 2}), [0], data)
    with pytest.raises(ReglabError, match="needs model 'trm'"):
        build_run(config({}, model="mlp", model_options={}), [0], data)
    with pytest.raises(ReglabError, match="several seeds"):
        build_run(config({}), [0, 1], data)
    with pytest.raises(ReglabError, match="n_sup"):
        make("deep_supervision", n_sup=0)
    with pytest.raises(ReglabError, match="eval_n_sup"):
        make("deep_supervision", eval_n_sup=[0])
