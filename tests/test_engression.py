"""Engression: the energy loss, the generative model, its predictions, the technique, the Figure-4 data,
and the regression metrics."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from reglab.config import RunConfig
from reglab.data import load
from reglab.data.synthetic import TEST_RANGE, TRAIN_RANGE, g_star, true_mean, true_quantile
from reglab.data import Data, Split
from reglab.models.engression import Engressor, engressor, resmlp, stack_on
from reglab.errors import ReglabError
from reglab.models import build_model
from reglab.metrics.regression import (
    crps_gaussian, crps_samples, energy_loss, energy_score, interval_coverage, interval_width, mae, pinball_loss,
    rmse, sample_interval, sample_quantile,
)
from reglab.techniques import make
from reglab.engine.loop import fit

Z90 = 1.2815515655446004  # the standard normal 0.9 quantile


# ---- the energy loss ------------------------------------------------------------------------------
def _loop_loss(samples: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Direct O(m^2) per example, then the batch mean: samples (B, m, d), y (B, d)."""
    per = []
    for b in range(samples.shape[0]):
        m = samples.shape[1]
        first = sum(torch.linalg.norm(y[b] - samples[b, j]) for j in range(m)) / m
        pairs = sum(torch.linalg.norm(samples[b, j] - samples[b, k]) for j in range(m) for k in range(m) if j != k)
        per.append(first - pairs / (2 * m * (m - 1)))
    return torch.stack(per).mean()


@pytest.mark.parametrize("d", [1, 3])
def test_energy_loss_equals_the_double_loop(d: int) -> None:
    g = torch.Generator().manual_seed(d)
    samples = torch.randn(2, 6, 5, d, generator=g, dtype=torch.float64)  # (S, B, m, d)
    y = torch.randn(2, 6, d, generator=g, dtype=torch.float64)
    loss = energy_loss(samples, y)
    assert loss.shape == (2,)
    for s in range(2):
        torch.testing.assert_close(loss[s], _loop_loss(samples[s], y[s]))
    if d == 1:  # (S, B) targets of a one-output model
        torch.testing.assert_close(energy_loss(samples, y.squeeze(-1)), loss)
    with pytest.raises(ValueError, match="m >= 2"):
        energy_loss(samples[:, :, :1], y)


def test_energy_loss_is_minimized_by_the_true_distribution() -> None:
    # y ~ N(0, 1); the model's draws are mu + s * z; common random numbers across the grid
    g = torch.Generator().manual_seed(0)
    n, m = 40_000, 8
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    z = torch.randn(n, m, 1, generator=g, dtype=torch.float64)
    grid_mu = [-0.5, -0.25, 0.0, 0.25, 0.5]
    grid_s = [0.5, 0.75, 1.0, 1.25, 1.5]
    losses = {(mu, s): energy_loss(mu + s * z, y).item() for mu, s in itertools.product(grid_mu, grid_s)}
    assert min(losses, key=losses.get) == (0.0, 1.0)
    # and its value is the expected CRPS of N(0, 1) for y ~ N(0, 1): E|X - Y| - E|X - X'|/2 = 2/sqrt(pi) - 1/sqrt(pi)
    assert losses[(0.0, 1.0)] == pytest.approx(1 / math.sqrt(math.pi), abs=0.01)


@pytest.mark.parametrize("d", [1, 2])
def test_gradients_flow_through_the_loss_and_the_model(d: int) -> None:
    torch.manual_seed(0)
    model = engressor(3, d, hidden=16, blocks=1, noise_dim=4, samples=4)
    x, y = torch.randn(10, 3), torch.randn(10, d)
    out = model.train()(x)
    assert out.shape == (10, 4, d)
    energy_loss(out, y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    # identical draws (zero pairwise distances) give finite gradients, not NaN
    samples = torch.zeros(4, 3, d, requires_grad=True)
    energy_loss(samples, torch.ones(4, d)).backward()
    assert torch.isfinite(samples.grad).all()


# ---- predictions from a known sampler --------------------------------------------------------------
def _known(noise: str, scale: float = 2.0) -> Engressor:
    """g([x, eps]) = x + eps_0: Y | x is x plus the (scaled) noise distribution."""
    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 1.0]]))
        net.bias.zero_()
    return Engressor(net, noise_dim=1, noise=noise, noise_scale=scale).eval()


def test_predictions_of_a_normal_sampler() -> None:
    torch.manual_seed(0)
    model = _known("normal")
    x = torch.tensor([[-1.0], [0.0], [3.0]])
    n = 40_000
    torch.testing.assert_close(model.predict(x, "mean", n), x, atol=0.05, rtol=0)
    torch.testing.assert_close(model.predict(x, "median", n), x, atol=0.05, rtol=0)
    q = model.predict(x, [0.1, 0.9], n)
    assert q.shape == (3, 1, 2)
    torch.testing.assert_close(q[..., 1], x + 2 * Z90, atol=0.08, rtol=0)
    lo, hi = model.interval(x, 0.8, n)
    torch.testing.assert_close(hi - lo, torch.full((3, 1), 4 * Z90), atol=0.1, rtol=0)
    assert model(x).shape == (3, 1)  # eval forward: the median point prediction
    assert model.sample(x, 7).shape == (3, 7, 1)


def test_predictions_of_a_uniform_sampler() -> None:
    torch.manual_seed(1)
    model = _known("uniform", scale=1.0)  # uniform on [-sqrt 3, sqrt 3]: unit variance
    x = torch.zeros(2, 1)
    draws = model.sample(x, 40_000)
    assert draws.abs().max() <= math.sqrt(3) + 1e-6
    assert draws.var().item() == pytest.approx(1.0, abs=0.02)
    torch.testing.assert_close(model.predict(x, 0.75, 40_000), torch.full((2, 1), math.sqrt(3) / 2), atol=0.03, rtol=0)
    with pytest.raises(ValueError, match="unknown prediction"):
        model.predict(x, "mode")


# ---- networks and stacking ----------------------------------------------------------------------------
def test_resmlp_is_registered_with_its_options() -> None:
    model = build_model("resmlp", (3,), 2, hidden=8, blocks=2, activation="elu", norm="layer")
    assert model(torch.randn(5, 3)).shape == (5, 2)
    kinds = {type(m) for m in model.modules()}
    assert nn.ELU in kinds and nn.LayerNorm in kinds and nn.ReLU not in kinds
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 2 + 2 * 2
    with pytest.raises(ReglabError, match="norm"):
        build_model("resmlp", (3,), 1, norm="group")


def test_residual_block_is_a_residual() -> None:
    torch.manual_seed(0)
    model = resmlp((2,), 1, hidden=4, blocks=1, activation="identity")
    block = model[4]
    for p in (block.fc2.weight, block.fc2.bias):
        nn.init.zeros_(p)
    h = torch.randn(6, 4)
    torch.testing.assert_close(block(h), h)  # with W2 = 0 the block passes its input through


def test_stacked_head_on_a_base_model() -> None:
    torch.manual_seed(0)
    base = build_model("mlp", (4,), 1, hidden=[8])
    model = stack_on(base, base_outputs=1, in_features=4, hidden=8, blocks=1, noise_dim=3, samples=3, freeze_base=True)
    x = torch.randn(5, 4)
    out = model.train()(x)
    assert out.shape == (5, 3, 1)
    energy_loss(out, torch.randn(5, 1)).backward()
    assert all(p.grad is None for p in base.parameters())
    assert all(p.grad is not None for p in model.net.parameters())
    without_x = stack_on(build_model("mlp", (4,), 1, hidden=[8]), 1, 4, include_input=False, noise_dim=3)
    assert without_x.net[1].in_features == 1 + 3


def _linear_data(n: int = 2000) -> Data:
    """y = 2 x + N(0, 0.5^2), x uniform on [-1, 1]; the median is 2 x, the central 80% interval 2 * 0.5 * 1.2816 wide."""
    g = torch.Generator().manual_seed(0)

    def split(m: int) -> Split:
        x = torch.rand(m, 1, generator=g) * 2 - 1
        return Split(x, 2 * x.squeeze(1) + 0.5 * torch.randn(m, generator=g))

    return Data("linear", "regression", split(n), split(400), split(400), (1,))


def _fit_model(loss: dict, data: Data, seed: int = 0, epochs: int = 40, **model: object) -> nn.Module:
    config = RunConfig(model="resmlp", model_options={"hidden": 32, "blocks": 1, **model}, epochs=epochs, batch_size=200,
                       seed=seed, device="cpu", eval_train=False, techniques=[{"name": "adam", "lr": 3e-3}, loss])
    [result] = fit(config, data=data, progress=False)
    return result.model.eval()


def test_engression_through_the_engine_learns_a_conditional_distribution() -> None:
    data = _linear_data()
    model = _fit_model({"name": "engression", "noise_dim": 4, "eval_samples": 64, "metrics": False}, data)
    assert isinstance(model, Engressor)
    grid = torch.linspace(-0.8, 0.8, 9).unsqueeze(1)
    torch.manual_seed(0)
    torch.testing.assert_close(model.predict(grid, "median", 2000), 2 * grid, atol=0.15, rtol=0)
    lo, hi = model.interval(grid, 0.8, 2000)
    assert (hi - lo).mean().item() == pytest.approx(2 * 0.5 * Z90, rel=0.25)
    # same seed, same model; the L1 (median) regression baseline finds the median too
    short = {"name": "engression", "noise_dim": 2, "eval_samples": 16, "metrics": False}
    again, twice = (_fit_model(short, data, seed=5, epochs=2, hidden=8, blocks=0) for _ in range(2))
    for a, b in zip(again.parameters(), twice.parameters()):
        torch.testing.assert_close(a, b)
    l1 = _fit_model({"name": "quantile", "q": 0.5}, data, epochs=20, hidden=16)
    torch.testing.assert_close(l1(grid), 2 * grid, atol=0.2, rtol=0)


def test_quantile_technique_is_the_pinball_loss() -> None:
    data = _linear_data(200)
    from reglab.engine.run import build_run
    from reglab.engine.step import training_loss

    run = build_run(RunConfig(model="resmlp", model_options={"hidden": 4, "blocks": 0}, device="cpu",
                              techniques=[{"name": "quantile", "q": 0.9}]), [0, 1], data)
    out = torch.randn(2, 8, 1)
    y = torch.randn(2, 8)
    expected = torch.stack([pinball_loss(out[s, :, 0], y[s], 0.9) for s in range(2)])
    torch.testing.assert_close(training_loss(run, out, y, torch.zeros(2, 8, 1)), expected)


# ---- the technique in the trainer -------------------------------------------------------------------
def _config(**knobs: object) -> RunConfig:
    return RunConfig(
        dataset="synthetic", dataset_options={"n_train": 600, "n_test": 100}, model="resmlp",
        model_options={"hidden": 16, "blocks": 1},
        techniques=[{"name": "adam", "lr": 3e-3}, {"name": "engression", "noise_dim": 4, "eval_samples": 64, **knobs}],
        epochs=2, batch_size=50, device="cpu",
    )


@pytest.mark.parametrize("input_", ["x", "base+x"])
def test_technique_trains_and_reports_distributional_metrics(input_: str) -> None:
    results = fit(_config(input=input_), [0, 1], progress=False)
    for r in results:
        m = r.metrics
        for key in ("val_rmse", "val_crps", "val_coverage", "val_width", "test_crps"):
            assert math.isfinite(m[key]), key
        assert 0 <= m["val_coverage"] <= 1 and m["val_width"] > 0
        assert m["val_crps"] < m["val_mae"]  # a spread forecast beats its own point error
        assert r.history[-1]["train_loss"] < r.history[0]["train_loss"] + 1e-9


def test_technique_errors() -> None:
    technique = make("engression")
    with pytest.raises(ReglabError, match="first layer"):
        technique.apply_model(nn.Sequential(nn.Linear(5, 3)), load("synthetic", n_train=50, n_test=10))
    with pytest.raises(ReglabError, match="regression"):
        technique.apply_model(build_model("mlp", (64,), 10, hidden=[4]), load("digits"))
    with pytest.raises(ReglabError, match="samples"):
        make("engression", samples=1)


# ---- the Figure-4 data ---------------------------------------------------------------------------------
@pytest.mark.parametrize("function", ["softplus", "square", "cubic", "log"])
def test_synthetic_splits_and_ranges(function: str) -> None:
    data = load("synthetic", function=function, n_train=500, n_test=201, seed=1)
    lo, hi = TRAIN_RANGE[function]
    x = torch.cat([data.train.x, data.val.x])
    assert x.min() >= lo and x.max() <= hi and len(x) == 500
    grid = data.test.x.squeeze(1)
    assert grid[0] == TEST_RANGE[function][0] and grid[-1] == pytest.approx(TEST_RANGE[function][1])
    inside = data.test.extra["in_support"]
    torch.testing.assert_close(inside, (grid >= lo) & (grid <= hi))
    torch.testing.assert_close(data.test.y, g_star(function, grid))  # default target: the median
    again = load("synthetic", function=function, n_train=500, n_test=201, seed=1)
    torch.testing.assert_close(again.train.y, data.train.y)


def test_synthetic_functions() -> None:
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0, 3.0])
    torch.testing.assert_close(g_star("softplus", x), torch.log1p(torch.exp(x)))
    torch.testing.assert_close(g_star("square", x), torch.tensor([0.0, 0.0, 0.5, 2.0, 4.5]))
    torch.testing.assert_close(g_star("cubic", x), x**3 / 3)
    # log: linear up to 2, log(1 + x) after, continuous and strictly increasing
    torch.testing.assert_close(g_star("log", torch.tensor([1.0, 4.0])), torch.tensor([1 / 3 + math.log(3) - 2 / 3, math.log(5)]))
    t = torch.linspace(0, 10, 10001)
    assert (g_star("log", t).diff() > 0).all() and g_star("log", t).diff().abs().max() < 1e-3


@pytest.mark.parametrize("function,noise", [("softplus", "pre"), ("cubic", "pre"), ("square", "post"), ("log", "pre")])
def test_truth_matches_monte_carlo(function: str, noise: str) -> None:
    from reglab.data.synthetic import NOISE_STD

    g = torch.Generator().manual_seed(0)
    x = torch.tensor([0.5, 3.0, 6.0], dtype=torch.float64)
    eta = NOISE_STD[function] * torch.randn(200_000, 1, generator=g, dtype=torch.float64)
    draws = g_star(function, x + eta) if noise == "pre" else g_star(function, x) + eta
    sd = draws.std(0)
    assert ((true_mean(function, noise, x) - draws.mean(0)).abs() < 5 * sd / math.sqrt(len(draws))).all()
    for q in (0.1, 0.5, 0.9):
        empirical = torch.quantile(draws[:100_000], q, dim=0)
        torch.testing.assert_close(true_quantile(function, noise, x, q), empirical, atol=0.02 * sd.max().item(), rtol=0.01)
    data = load("synthetic", function=function, noise=noise, n_train=200, n_test=11, test_target="mean")
    torch.testing.assert_close(data.test.y, data.test.extra["mean"])


def test_synthetic_bad_option() -> None:
    with pytest.raises(ReglabError, match="function"):
        load("synthetic", function="sine")
    with pytest.raises(ReglabError, match="unknown option"):
        load("synthetic", functions="log")


# ---- the regression metrics -------------------------------------------------------------------------------
def test_point_metrics() -> None:
    pred, y = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 1.0])
    assert rmse(pred, y).item() == pytest.approx(math.sqrt(13 / 3))
    assert mae(pred, y).item() == pytest.approx(5 / 3)
    assert pinball_loss(pred, y, 0.5).item() == pytest.approx(0.5 * 5 / 3)
    assert pinball_loss(torch.tensor([2.0]), torch.tensor([0.0]), 0.9).item() == pytest.approx(0.1 * 2)
    lo, hi = torch.tensor([0.0, 0.0, 2.0]), torch.tensor([1.0, 1.0, 3.0])
    assert interval_coverage(lo, hi, y).item() == pytest.approx(2 / 3)
    assert interval_width(lo, hi).item() == pytest.approx(1.0)


def test_pinball_loss_is_minimized_at_the_quantile() -> None:
    y = torch.randn(50_000, generator=torch.Generator().manual_seed(0))
    grid = torch.linspace(0.8, 1.8, 101)
    losses = torch.stack([pinball_loss(c.expand_as(y), y, 0.9) for c in grid])
    assert grid[losses.argmin()].item() == pytest.approx(Z90, abs=0.03)


def test_crps_from_samples() -> None:
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(4, 7, generator=g, dtype=torch.float64)
    y = torch.randn(4, generator=g, dtype=torch.float64)
    for unbiased, pairs in ((True, 7 * 6), (False, 49)):
        direct = (samples - y[:, None]).abs().mean(1) - 0.5 * (samples[:, :, None] - samples[:, None, :]).abs().sum((1, 2)) / pairs
        torch.testing.assert_close(crps_samples(samples, y, unbiased), direct)
    # the energy score in one dimension is the CRPS
    torch.testing.assert_close(energy_score(samples.unsqueeze(-1), y.unsqueeze(-1)), crps_samples(samples, y))
    torch.testing.assert_close(
        energy_score(samples.unsqueeze(-1), y.unsqueeze(-1), beta=1.0, unbiased=False), crps_samples(samples, y, False)
    )
    # many samples from N(mu, sigma) approach the closed form
    mu, sigma, obs = torch.tensor(0.3), torch.tensor(1.7), torch.tensor([-1.0, 0.5, 4.0])
    draws = mu + sigma * torch.randn(3, 20_000, generator=g)
    torch.testing.assert_close(crps_samples(draws, obs), crps_gaussian(mu, sigma, obs), atol=0.02, rtol=0)


def test_sample_quantile_and_interval() -> None:
    x = torch.randn(3, 101, 2, generator=torch.Generator().manual_seed(0))
    q = sample_quantile(x, [0.05, 0.5, 0.95], dim=1)
    torch.testing.assert_close(q, torch.quantile(x, torch.tensor([0.05, 0.5, 0.95]), dim=1).movedim(0, -1))
    lo, hi = sample_interval(x, 0.9, dim=1)
    torch.testing.assert_close(lo, q[..., 0])
    torch.testing.assert_close(hi, q[..., 2])


# ---- the Figure-4 reproduction's pieces ------------------------------------------------------------
def test_fig4_seeds_are_reproducible_and_differ() -> None:
    from reglab.repro.engression_fig4 import fit_and_predict

    cfg = dict(n=100, steps=15, batch=32, lr=3e-3, hidden=8, blocks=1, noise_dim=2, samples=2, draws=16, grid=7, eval_every=5)
    first, grid = fit_and_predict("L1", "square", "pre", cfg, 0)
    again, _ = fit_and_predict("L1", "square", "pre", cfg, 0)
    other, _ = fit_and_predict("L1", "square", "pre", cfg, 1)
    assert first.shape == (7,) and grid.shape == (7, 1)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other)  # different data and initialization per seed
    eng, _ = fit_and_predict("engression", "square", "pre", cfg, 0)
    assert eng.shape == (7,) and torch.isfinite(eng).all()


def test_fig4_extrapolation_error_splits_the_grid_at_the_training_range() -> None:
    from reglab.repro.engression_fig4 import extrapolation_error

    grid = torch.tensor([[0.0], [1.0], [2.0], [4.0], [6.0]])  # square: training range [0, 2]
    truth = g_star("square", grid.squeeze(1))
    pred = torch.stack([truth, truth + torch.tensor([0.0, 0.0, 0.0, 1.0, 3.0]), truth + 0.5])
    outside, inside = extrapolation_error(pred, grid, "square")
    torch.testing.assert_close(outside, torch.tensor([0.0, 2.0, 0.5]))
    torch.testing.assert_close(inside, torch.tensor([0.0, 0.0, 0.5]))


# ---- the ablations reproduction (draws per example, noise scale, a head on diabetes) ----------------
@pytest.mark.parametrize("m", [2, 16])
def test_samples_and_noise_scale_knobs_reach_the_model_and_the_loss(m: int) -> None:
    data = load("synthetic", n_train=50, n_test=10)
    torch.manual_seed(0)
    model = make("engression", noise_dim=3, samples=m, noise_scale=4.0).apply_model(resmlp((1,), 1, hidden=8, blocks=1), data)
    assert model.samples == m and model.noise_scale == 4.0
    out = model.train()(torch.randn(6, 1))
    assert out.shape == (6, m, 1)  # m draws per example for the energy loss
    y = torch.randn(6, 1)
    torch.testing.assert_close(energy_loss(out, y), _loop_loss(out, y))  # the docstring's formula with this m
    eps = model.draw_noise(20_000, out)
    assert eps.std().item() == pytest.approx(4.0, rel=0.03) and abs(eps.mean().item()) < 0.1


def test_engression_ablations_end_to_end(tmp_path, monkeypatch) -> None:
    import json

    from reglab.repro import REPROS
    from reglab.repro import engression_ablations as E

    assert REPROS["engression-ablations"] is E
    tiny = dict(seeds=2, n=120, batch=60, steps=10, hidden=8, blocks=1, noise_dim=2, draws=16, grid=13, eval_every=5,
                diabetes_seeds=2, diabetes_epochs=1)
    for key, value in tiny.items():
        monkeypatch.setitem(E.QUICK, key, value)
    path = E.run(tmp_path, quick=True, progress=False)
    for name in ("RESULTS.md", "summary.json", "results.json", "samples_noise.png", "diabetes.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    text = path.read_text()
    saved = json.loads((tmp_path / "results.json").read_text())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert f"Command: `reglab repro engression-ablations --quick -o {tmp_path}`" in text
    assert "Seeds 0..1 for parts 1-2" in text and "QUICK budget" in text
    errors = saved["errors"]["softplus"]
    assert sorted(errors["samples"], key=int) == ["2", "4", "8", "16"] and sorted(errors["noise_scale"]) == ["0.25", "1", "4"]
    assert errors["noise_scale"]["1"] == errors["samples"]["2"]  # scale 1 is the m = 2 run
    assert errors["samples"]["16"] != errors["samples"]["2"] and errors["noise_scale"]["4"] != errors["samples"]["2"]
    for m in (2, 16):  # the table's cells are the mean ± SE of the saved per-seed errors
        values = errors["samples"][str(m)]
        assert len(values) == 2 and all(math.isfinite(v) and v > 0 for v in values)
        mean, se = sum(values) / 2, abs(values[0] - values[1]) / 2
        assert f"{mean:.3f} ± {se:.3f}" in text
    d = [a - b for a, b in zip(errors["samples"]["16"], errors["samples"]["2"])]
    assert f"softplus, error at m = 16 minus m = 2: {sum(d) / 2:+.3f}" in text
    assert "Over these 7 comparisons" in text
    assert set(saved["diabetes"]) == set(E.DIABETES) and all(len(v) == 2 for v in saved["diabetes"].values())
    assert all(math.isfinite(r["test_rmse"]) and r["test_rmse"] > 1 for r in saved["diabetes"]["MLP (MSE)"])  # target units
    assert "test_crps" in saved["diabetes"]["MLP + engression head"][0]
    heads = {h["figure"]: h for h in summary["headlines"]}
    assert heads["extrapolation error, softplus, m=16"]["ours"]["values"] == errors["samples"]["16"]
    assert all(h["ours"]["seeds"] == 2 and h["published"] is None for h in heads.values())
    assert summary["budget"] == "quick" and summary["provenance"]["wall_seconds"] > 0
    assert E.render(tmp_path).read_text() == text  # RESULTS.md is a function of results.json


def test_engression_ablations_cells_count_diverged_seeds() -> None:
    from reglab.repro.engression_ablations import _fmt

    assert _fmt([1.0, math.nan, 3.0]) == "2.000 ± 1.000 (1 of 3 diverged)"
    assert _fmt([1.0, 3.0]) == "2.000 ± 1.000"
