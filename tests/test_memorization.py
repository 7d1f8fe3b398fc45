"""Memorization diagnostics (Arpit et al. 2017): P(correct), rand_x / rand_y, Langevin search, CSR."""
import pytest
import torch
from torch import nn

from reglab.analysis import memorization as M
from reglab.config import RunConfig
from reglab.errors import ReglabError


def test_p_correct_is_mean_over_models_of_correctness():
    # 3 models x 4 examples, hand-made
    correct = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert torch.allclose(M.p_correct(correct), torch.tensor([1.0, 1 / 3, 1 / 3, 0.0]))
    with pytest.raises(ReglabError, match="models, examples"):
        M.p_correct(torch.ones(3))


def test_population_correctness_matches_each_member_alone(tiny_images):
    config = RunConfig(model="mlp", model_options={"hidden": [16]}, epochs=1, batch_size=32, device="cpu",
                       techniques=[{"name": "sgd", "lr": 0.05}])
    pop = M.train_population(config, tiny_images, [3, 4, 5], grouping="group")
    assert pop.correct.shape == (3, len(tiny_images.train)) and pop.grouped
    # the recorded correctness of seed 4 equals that of seed 4 trained alone, evaluated by hand
    from reglab.engine.loop import train_epoch
    from reglab.engine.run import build_run

    run = build_run(config, [4], tiny_images)
    train_epoch(run)
    logits = M.population_predictions(run.model, tiny_images, tiny_images.train)[0]
    alone = logits.argmax(-1) == tiny_images.train.y
    assert (pop.correct[1] == alone).float().mean() > 0.97  # stacked vs single float rounding only
    assert torch.allclose(pop.p_correct, pop.correct.float().mean(0))
    assert ((pop.true_prob >= 0) & (pop.true_prob <= 1)).all()


class _Linear2(nn.Module):
    """Two classes split by the hyperplane w.x = 0 (logits [w.x, -w.x])."""

    def __init__(self, w: torch.Tensor, scale: float = 1.0) -> None:
        super().__init__()
        self.w, self.scale = w, scale

    def forward(self, x):
        s = self.scale * (x.flatten(-len(self.w.shape)) @ self.w.flatten())
        return torch.stack([s, -s], -1)


def test_langevin_search_stays_in_the_box_and_finds_a_flip_near_the_boundary():
    torch.manual_seed(0)
    d = 20
    w = torch.randn(d)
    x = torch.randn(64, d)
    x = x - ((x @ w) / (w @ w)).unsqueeze(1) * w  # on the boundary ...
    margin = 0.05 * w.abs().sum()  # ... moved so that the L-inf distance to it is 0.05
    x = x + (margin / (w @ w)) * w * torch.where(torch.arange(64) % 2 == 0, 1.0, -1.0).unsqueeze(1)
    f = _Linear2(w)
    r = 0.1
    x_adv, flipped = M.langevin_search(f, x, alpha=0.02, beta=0.01, r=r, max_iter=50,
                                       generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= r + 1e-6
    assert flipped.all()
    assert (f(x_adv).argmax(-1) != f(x).argmax(-1)).all()
    # a box too small to reach the boundary: no flip, still inside the box
    x_adv, flipped = M.langevin_search(f, x, alpha=0.02, beta=0.01, r=0.02, max_iter=50)
    assert not flipped.any() and (x_adv - x).abs().max() <= 0.02 + 1e-6


def test_langevin_search_finds_nothing_where_the_decision_is_constant():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.tensor([2.0, 0.0, 1.0]).expand(*x.shape[:-1], 3) + 0 * x.sum(-1, keepdim=True)

    x = torch.randn(32, 5)
    x_adv, flipped = M.langevin_search(Constant(), x, alpha=0.1, beta=0.1, r=0.5, max_iter=20)
    assert not flipped.any()
    assert (x_adv - x).abs().max() <= 0.5 + 1e-6
    assert (x_adv != x).any()  # the noise moved it, within the box
    with pytest.raises(ReglabError, match="max_iter"):
        M.langevin_search(Constant(), x, max_iter=0)


def test_critical_sample_ratio_callback_runs_per_seed_during_training(tiny_images):
    from reglab.engine.loop import fit

    config = RunConfig(model="mlp", model_options={"hidden": [16]}, epochs=2, batch_size=32, device="cpu")
    csr = M.CriticalSampleRatio(n=40, alpha=0.02, beta=0.01, r=0.3, max_iter=10)
    fit(config, [0, 1], data=tiny_images, callbacks=(csr,), progress=False)
    assert [e for e, _ in csr.history] == [0, 1, 2]
    assert all(len(v) == 2 and all(0.0 <= c <= 1.0 for c in v) for _, v in csr.history)
    # a box of radius r = 1 in [0, 1] pixel units reaches any image: every sample is critical
    big = M.CriticalSampleRatio(n=20, alpha=0.2, beta=0.0, r=1.0, max_iter=30)
    fit(config.model_copy(update={"epochs": 1}), [0], data=tiny_images, callbacks=(big,), progress=False)
    assert big.history[-1][1][0] > 0.9
