"""Gaussian multi-target regularization: heads, sampled targets, loss, the technique and its dataset."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import nn

from reglab.config import RunConfig
from reglab.data import load
from reglab.errors import ReglabError
from reglab.models import build_model
from reglab.techniques import make
from reglab.techniques.gmtr import GaussianHeads, add_heads, gmtr_loss, gmtr_targets
from reglab.engine.loop import fit


# ---- the loss and the targets --------------------------------------------------------------------
def test_zero_standard_error_gives_the_mse_of_every_head() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 16, 5, generator=g)  # (S, B, K)
    y = torch.randn(3, 16, generator=g)
    loss = gmtr_loss(pred, y, torch.zeros(3, 16), torch.Generator().manual_seed(1))
    expected = torch.stack([((pred[s] - y[s, :, None]) ** 2).mean() for s in range(3)])
    assert loss.shape == (3,)
    torch.testing.assert_close(loss, expected)
    # (B, 1) targets of a one-output model and a single model without seed dimension
    torch.testing.assert_close(gmtr_loss(pred[0], y[0, :, None], torch.zeros(16, 1)), expected[0])


def test_multi_output_loss_with_zero_standard_error() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 8, 4, 3, generator=g)  # (S, B, K, D)
    y = torch.randn(2, 8, 3, generator=g)
    loss = gmtr_loss(pred, y, torch.zeros(2, 8, 3))
    torch.testing.assert_close(loss, ((pred - y[:, :, None, :]) ** 2).mean((1, 2, 3)))


def test_sampled_targets_have_the_right_mean_and_standard_deviation() -> None:
    y = torch.linspace(-5, 5, 200)
    se = torch.linspace(0.1, 3.0, 200)
    k = 4096
    t = gmtr_targets(y, se, k, torch.Generator().manual_seed(0))
    assert t.shape == (200, k)
    # per example: the mean within 4 standard errors of the mean, the sd within 4 se of the sd
    assert ((t.mean(1) - y).abs() < 4 * se / math.sqrt(k)).all()
    assert ((t.std(1) / se - 1).abs() < 4 / math.sqrt(2 * k)).all()
    # pooled standardized draws are N(0, 1)
    z = ((t - y[:, None]) / se[:, None]).flatten().double().numpy()
    assert stats.kstest(z[:100_000], "norm").pvalue > 0.01


def test_per_seed_generators_make_a_seed_independent_of_its_group() -> None:
    y, se = torch.zeros(3, 10), torch.ones(3, 10)
    group = gmtr_targets(y, se, 4, [torch.Generator().manual_seed(s) for s in (7, 8, 9)])
    alone = gmtr_targets(y[1], se[1], 4, torch.Generator().manual_seed(8))
    torch.testing.assert_close(group[1], alone)
    assert not torch.allclose(group[0], group[1])


def test_gradient_of_the_loss_reaches_every_head() -> None:
    heads = GaussianHeads(6, 1, heads=8)
    x, y, se = torch.randn(32, 6), torch.randn(32), torch.full((32,), 0.5)
    gmtr_loss(heads(x), y, se, torch.Generator().manual_seed(0)).backward()
    per_head = heads.linear.weight.grad.abs().sum(1)
    assert (per_head > 0).all()


# ---- the heads and the model transform -----------------------------------------------------------
def test_heads_in_training_and_eval_mode() -> None:
    layer = GaussianHeads(4, 1, heads=32)
    x = torch.randn(10, 4)
    train_out = layer.train()(x)
    assert train_out.shape == (10, 32)
    eval_out = layer.eval()(x)
    assert eval_out.shape == (10, 1)
    torch.testing.assert_close(eval_out, train_out.mean(1, keepdim=True))
    multi = GaussianHeads(4, 3, heads=5)
    assert multi.train()(x).shape == (10, 5, 3)
    torch.testing.assert_close(multi.eval()(x), multi.train()(x).mean(1))


def test_add_heads_keeps_the_rest_of_the_network() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", (7,), 1, hidden=[16, 16])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    old_out = model[-1]
    out_name = f"{len(model) - 1}"
    add_heads(model, 32, out_features=1)
    after = dict(model.named_parameters())
    trunk = [n for n in before if not n.startswith(out_name + ".")]
    for n in trunk:
        torch.testing.assert_close(after[n], before[n])
    assert set(after) == set(trunk) | {f"{out_name}.linear.weight", f"{out_name}.linear.bias"}
    assert isinstance(model[-1], GaussianHeads) and model[-1].linear.weight.shape == (32, 16)
    torch.testing.assert_close(model[-1].linear.weight[:1], old_out.weight)  # head 0 = the old layer
    x = torch.randn(5, 7)
    assert model.train()(x).shape == (5, 32)
    assert model.eval()(x).shape == (5, 1)


def test_add_heads_errors() -> None:
    with pytest.raises(ReglabError, match="no Linear"):
        add_heads(nn.Sequential(nn.ReLU()), 4)
    with pytest.raises(ReglabError, match="3 outputs, expected 1"):
        add_heads(nn.Sequential(nn.Linear(2, 3)), 4, out_features=1)


# ---- the technique --------------------------------------------------------------------------------
def test_knobs_are_validated() -> None:
    assert make("gmtr").knobs.heads == 32
    for bad in (0, 4097):
        with pytest.raises(ReglabError, match="heads"):
            make("gmtr", heads=bad)
    with pytest.raises(ReglabError, match="unknown knob"):
        make("gmtr", head=3)


def test_technique_needs_standard_errors() -> None:
    technique = make("gmtr")
    model = build_model("mlp", (1,), 1, hidden=[4])
    with pytest.raises(ReglabError, match="standard_error"):
        technique.apply_model(model, load("synthetic", n_train=50, n_test=10))
    with pytest.raises(ReglabError, match="regression"):
        technique.apply_model(build_model("mlp", (64,), 10, hidden=[4]), load("digits"))


def _config(epochs: int = 3, **techniques: object) -> RunConfig:
    return RunConfig(
        dataset="replicates", dataset_options={"n_train": 400, "n_test": 200}, model="mlp",
        model_options={"hidden": [32, 32]},
        techniques=[{"name": "adam", "lr": 0.01}, *([dict(techniques)] if techniques else [])],
        epochs=epochs, batch_size=10, device="cpu",
    )


def test_one_head_without_noise_is_the_plain_model() -> None:
    # one epoch: the target draws (zero here) come from the seed's generator, which also draws the
    # data order of later epochs
    plain = fit(_config(1), [0], progress=False)[0].metrics
    one = fit(_config(1, name="gmtr", heads=1, se_scale=0.0), [0], progress=False)[0].metrics
    assert plain["val_rmse"] < 10  # it learned something (the target sd is about 5)
    assert one["val_rmse"] == pytest.approx(plain["val_rmse"], rel=1e-5)
    assert one["test_rmse"] == pytest.approx(plain["test_rmse"], rel=1e-5)


def test_trainer_runs_gmtr_for_a_group_of_seeds_like_alone() -> None:
    config = _config(name="gmtr", heads=16)
    group = fit(config, [0, 1], progress=False)
    alone = fit(config, [1], progress=False)
    assert group[1].metrics["val_rmse"] == pytest.approx(alone[0].metrics["val_rmse"], rel=1e-4)
    # the training loss carries the noise floor mean(se^2) that the evaluation MSE does not
    data = load("replicates", n_train=400, n_test=200)
    floor = data.train.extra["standard_error"].pow(2).mean().item()
    for r in group:
        assert math.isfinite(r.metrics["val_rmse"])
        assert r.history[-1]["train_loss"] > floor


# ---- the dataset with standard errors ---------------------------------------------------------------
def test_replicates_dataset() -> None:
    data = load("replicates", n_train=3000, n_test=500, seed=3)
    assert data.task == "regression" and data.input_shape == (10,) and data.num_outputs == 1
    assert len(data.train) + len(data.val) == 3000 and len(data.test) == 500
    for split in (data.train, data.val, data.test):
        assert set(split.extra) == {"standard_error", "true_standard_error", "y_true", "replicates"}
        assert all(len(v) == len(split) for v in split.extra.values())
        assert (split.extra["standard_error"] > 0).all()
        assert ((split.extra["replicates"] >= 2) & (split.extra["replicates"] <= 6)).all()
    tr = data.train
    # observed means scatter around the truth with the stated standard errors
    z = (tr.y - tr.extra["y_true"]) / tr.extra["true_standard_error"]
    assert abs(z.mean().item()) < 0.1 and abs(z.std().item() - 1) < 0.05
    # the estimated se^2 is unbiased for the true se^2 (sample variance), and noise grows with the signal
    ratio = tr.extra["standard_error"].pow(2).mean() / tr.extra["true_standard_error"].pow(2).mean()
    assert abs(ratio.item() - 1) < 0.1
    assert stats.spearmanr(tr.extra["y_true"], tr.extra["true_standard_error"]).statistic > 0.2
    # deterministic, and the "true" test target is f(x)
    again = load("replicates", n_train=3000, n_test=500, seed=3, test_target="true")
    torch.testing.assert_close(again.train.y, data.train.y)
    torch.testing.assert_close(again.test.y, data.test.extra["y_true"])
    with pytest.raises(ReglabError, match="max_replicates"):
        load("replicates", min_replicates=5, max_replicates=3)
