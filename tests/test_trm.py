"""Tiny Recursive Model: shapes, which recursions carry gradients, halting (ACT), best-of-k, a short training
(the deep-supervision steps through the ``deep_supervision`` technique, as the engine runs them)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reglab.config import RunConfig
from reglab.data import Data, Split
from reglab.data.sudoku import generate
from reglab.engine.loop import evaluate, fit
from reglab.engine.run import build_run
from reglab.errors import ReglabError
from reglab.models import build_model
from reglab.models.trm import TRM, VARIANTS, best_of_k
from reglab.techniques.deep_supervision import DeepSupervision

SMALL = dict(dim=16, token_hidden=24, channel_hidden=32)


def puzzles(n: int, clues: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    p, s, _ = generate(n, min_clues=clues, max_clues=clues, rng=np.random.default_rng(seed))
    return torch.from_numpy(p), torch.from_numpy(s) - 1


def sudoku(x: torch.Tensor, y: torch.Tensor, n_eval: int = 0) -> Data:
    train = Split(x[: len(x) - n_eval], y[: len(y) - n_eval])
    held = Split(x[len(x) - n_eval:], y[len(y) - n_eval:]) if n_eval else train
    return Data("sudoku", "classification", train, held, held, (81,), [str(d) for d in range(1, 10)])


def supervised_run(data: Data, lr: float = 1e-3, act: bool = True, **opts: object):
    """A run of a TRM (``SMALL`` plus ``opts``) with the deep_supervision technique, and the technique."""
    config = RunConfig(dataset="sudoku", model="trm", model_options={**SMALL, **opts}, device="cpu",
                       techniques=[{"name": "sgd", "lr": lr, "momentum": 0.0}, {"name": "deep_supervision", "act": act}])
    run = build_run(config, [0], data)
    return run, next(t for t in run.techniques if isinstance(t, DeepSupervision))


def supervise(run, technique: DeepSupervision, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """One batch of deep supervision: mean supervision steps per example and optimizer steps."""
    technique.on_epoch_start(run)
    before = run.step
    technique.train_step(run, x.unsqueeze(0), y.unsqueeze(0))
    return {"steps": technique._steps / technique._examples, "updates": run.step - before}


def count_net_calls(model: TRM) -> list[tuple[bool, int]]:
    """Record (grad enabled, batch size) of every application of ``model.net``."""
    calls: list[tuple[bool, int]] = []
    model.net.register_forward_hook(lambda mod, inp, out: calls.append((torch.is_grad_enabled(), len(inp[0]))))
    return calls


def test_registry_shapes_and_knob_errors():
    torch.manual_seed(0)
    model = build_model("trm", (81,), 9, n=2, T=2, n_sup=2, n_sup_test=3, **SMALL)
    x, _ = puzzles(4, 40)
    assert model(x).shape == (4, 81, 9)
    assert model(torch.stack([x, x])).shape == (2, 4, 81, 9)  # leading seed dimension
    attn = build_model("trm", (81,), 9, block="attention", heads=2, n=1, T=1, n_sup=1, **SMALL)
    assert attn(x).shape == (4, 81, 9)
    with pytest.raises(ReglabError, match="input_shape"):
        build_model("trm", (9, 9), 9)
    with pytest.raises(ReglabError, match="latent_init"):
        build_model("trm", (81,), 9, latent_init="zeros")
    with pytest.raises(ReglabError, match="divisible"):
        build_model("trm", (81,), 9, block="attention", dim=10, heads=4)
    with pytest.raises(ReglabError, match="test_k"):
        build_model("trm", (81,), 9, test_k=3)  # best-of-k needs random starts


def test_eval_forward_with_random_init_is_deterministic_and_best_of_k():
    torch.manual_seed(0)
    model = build_model("trm", (81,), 9, n=1, T=1, n_sup_test=2, latent_init="random", test_k=3, **SMALL).eval()
    with torch.no_grad():
        model.halt_head.weight.normal_()
    x, _ = puzzles(5, 40)
    state = torch.get_rng_state()
    with torch.no_grad():
        a, b = model(x), model(x)
        expected, _ = best_of_k(model, x, 3, generator=torch.Generator().manual_seed(model.eval_seed))
    assert torch.equal(a, b) and torch.equal(a, expected)
    assert torch.equal(torch.get_rng_state(), state)  # evaluation leaves the global generator alone


def test_recursion_counts_train_and_test():
    torch.manual_seed(0)
    model = TRM(n=3, T=2, n_sup=2, n_sup_test=5, **SMALL)
    calls = count_net_calls(model)
    x, _ = puzzles(3, 40)
    model.train()
    model(x)
    assert len(calls) == 2 * 2 * (3 + 1)  # n_sup deep recursions of T latent recursions of n + 1 calls
    assert [g for g, _ in calls] == [False] * 12 + [True] * 4  # only the very last latent recursion has gradients
    calls.clear()
    model.eval()
    with torch.no_grad():
        model(x)
    assert len(calls) == 5 * 2 * (3 + 1)  # n_sup_test at test time


def test_deep_recursion_backpropagates_through_last_latent_recursion_only():
    torch.manual_seed(0)
    model = TRM(n=2, T=3, **SMALL)
    x, y = puzzles(4, 30)
    x_emb = model.embed(x)
    y0, z0 = model.init_latents(len(x))
    calls = count_net_calls(model)
    _, _, logits, halt = model.deep_recursion(x_emb, y0, z0)
    assert [g for g, _ in calls] == [False] * 6 + [True] * 3
    loss = F.cross_entropy(logits.reshape(-1, 9), y.reshape(-1)) + halt.sum()
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    # reference: the first T-1 recursions from the detached state, then one recursion with gradients
    with torch.no_grad():
        yr, zr = y0, z0
        for _ in range(2):
            yr, zr = model.latent_recursion(x_emb, yr, zr)
    yr, zr = model.latent_recursion(model.embed(x), yr, zr)
    ref_logits, ref_halt = model.decode(yr)
    ref_loss = F.cross_entropy(ref_logits.reshape(-1, 9), y.reshape(-1)) + ref_halt.sum()
    ref = torch.autograd.grad(ref_loss, list(model.parameters()), allow_unused=True)
    names = [name for name, _ in model.named_parameters()]
    for name, g, r in zip(names, grads, ref):
        if name in ("y_init", "z_init"):  # the initial latents are reached only through no-grad recursions
            assert g is None and r is None
        else:
            torch.testing.assert_close(g, r, msg=name)
    # backpropagation through all T recursions: every call carries gradients, the gradients differ
    model.backprop = "all"
    calls.clear()
    _, _, logits_all, halt_all = model.deep_recursion(model.embed(x), y0, z0)
    assert all(g for g, _ in calls) and len(calls) == 9
    loss_all = F.cross_entropy(logits_all.reshape(-1, 9), y.reshape(-1)) + halt_all.sum()
    grads_all = torch.autograd.grad(loss_all, list(model.parameters()))
    torch.testing.assert_close(loss_all, loss)  # same forward values ...
    net_index = names.index("net.0.channel_mlp.0.weight")
    assert not torch.allclose(grads_all[net_index], grads[net_index])  # ... different gradients
    assert grads_all[names.index("y_init")].abs().sum() > 0


def test_learned_init_gets_gradients_when_T_is_one():
    torch.manual_seed(0)
    model = TRM(n=1, T=1, **SMALL)
    x, y = puzzles(2, 40)
    _, _, logits, _ = model.deep_recursion(model.embed(x), *model.init_latents(2))
    F.cross_entropy(logits.reshape(-1, 9), y.reshape(-1)).backward()
    assert model.y_init.grad.abs().sum() > 0 and model.z_init.grad.abs().sum() > 0


def test_random_init_and_best_of_k():
    torch.manual_seed(0)
    model = TRM(n=1, T=1, n_sup_test=2, latent_init="random", **SMALL).eval()
    with torch.no_grad():
        model.halt_head.weight.normal_()  # make the halting logits depend on the latents
    x, _ = puzzles(6, 30)
    with torch.no_grad():
        a, _ = model.run(x, generator=torch.Generator().manual_seed(1))
        b, _ = model.run(x, generator=torch.Generator().manual_seed(1))
        c, _ = model.run(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    logits, halt = best_of_k(model, x, 4, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    runs = [model.run(x, generator=gen) for _ in range(4)]
    halts = torch.stack([h for _, h in runs])  # (k, B)
    pick = halts.argmax(0)
    assert len(set(pick.tolist())) > 1  # different examples pick different starts
    torch.testing.assert_close(halt, halts.max(0).values)
    expected = torch.stack([runs[int(k)][0][i] for i, k in enumerate(pick)])
    torch.testing.assert_close(logits, expected)
    with pytest.raises(ReglabError, match="random"):
        best_of_k(TRM(**SMALL), x, 2)


def test_act_stops_examples_whose_halting_probability_exceeds_the_threshold():
    torch.manual_seed(0)
    x, y = puzzles(8, 40)
    for bias, act, threshold, steps in [
        (10.0, True, 0.5, 1), (10.0, False, 0.5, 4), (-10.0, True, 0.5, 4),
        (0.0, True, 0.4, 1), (0.0, True, 0.6, 4),  # p = 0.5 (zero halting weights, a negligible lr)
    ]:
        run, tech = supervised_run(sudoku(x, y), lr=1e-12, act=act, n=1, T=1, n_sup=4, halt_threshold=threshold)
        with torch.no_grad():
            run.model.single.halt_head.bias.fill_(bias)
        out = supervise(run, tech, x, y)
        assert out["steps"] == steps and out["updates"] == steps, (bias, act, threshold)
    # halting per example: those whose first cell is blank halt after the first step
    run, tech = supervised_run(sudoku(x, y), lr=1e-12, n=1, T=1, n_sup=4)
    model = run.model.single
    original = model.deep_recursion
    blank_emb = model.token_emb.weight[0] + model.pos_emb[0]

    def halting_on_blank_first_cell(x_emb, y_lat, z_lat):
        y_lat, z_lat, logits, _ = original(x_emb, y_lat, z_lat)
        blank_first = torch.isclose(x_emb[:, 0], blank_emb).all(-1)
        return y_lat, z_lat, logits, torch.where(blank_first, 10.0, -10.0)

    model.deep_recursion = halting_on_blank_first_cell
    calls = count_net_calls(model)
    n_blank = int((x[:, 0] == 0).sum())
    assert 0 < n_blank < len(x)
    out = supervise(run, tech, x, y)
    assert out["steps"] == pytest.approx((n_blank * 1 + (len(x) - n_blank) * 4) / len(x))
    assert [b for _, b in calls] == [8, 8] + [8 - n_blank] * 6  # the batch shrinks after step 1


def test_variants_are_knob_presets():
    torch.manual_seed(0)
    x, y = puzzles(4, 40)
    for name, knobs in VARIANTS.items():
        run, tech = supervised_run(sudoku(x, y), act=False, **{"n": 2, "T": 2, "n_sup": 2, **knobs})
        model = run.model.single
        calls = count_net_calls(model)
        out = supervise(run, tech, x, y)
        per_recursion = model.T * (model.n + 1)
        assert out["updates"] == model.n_sup and len(calls) == model.n_sup * per_recursion
        grad_calls = sum(g for g, _ in calls)
        if name == "single":
            assert per_recursion == 2 and grad_calls == 2
        elif name == "bptt":
            assert out["updates"] == 1 and grad_calls == per_recursion
        else:
            assert grad_calls == model.n_sup * (model.n + 1)


def test_short_training_learns_easy_sudoku():
    """150 deep-supervision batches on 60-clue puzzles (21 blanks): blank-cell accuracy far above chance (1/9)."""
    x, y = puzzles(600, 60, seed=1)
    data = sudoku(x, y, n_eval=100)
    config = RunConfig(dataset="sudoku", model="trm", device="cpu", batch_size=64, steps=150, eval_every=50,
                       eval_train=False, model_options=dict(dim=32, token_hidden=64, channel_hidden=64, n=2, T=2,
                                                            n_sup=3, n_sup_test=3),
                       techniques=[{"name": "adam", "lr": 3e-3}, {"name": "deep_supervision"}],
                       metric="val_cell_accuracy")
    before = evaluate(build_run(config, [0], data), data.val, "val")[0]
    start = time.time()
    [result] = fit(config, data=data, progress=False)
    history, m = result.history, result.metrics
    print(f"blank-cell accuracy {before['val_cell_accuracy']:.3f} -> {m['val_cell_accuracy']:.3f}, exact "
          f"{before['val_exact_accuracy']:.3f} -> {m['val_exact_accuracy']:.3f}, steps/example "
          f"{history[-1]['train_sup_steps']:.2f}, {time.time() - start:.1f}s")
    assert before["val_cell_accuracy"] < 0.2 and m["val_cell_accuracy"] > 0.6 and m["val_exact_accuracy"] > 0.05
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["train_sup_steps"] < 3  # the halting head has learned to stop some
