"""Batch-norm diagnostics (Bjorck et al. 2018): activation statistics, logit gradients, relative loss
probes with exact state restoration, first-layer filters."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reglab.analysis import batchnorm as D
from reglab.errors import ReglabError
from reglab.models import build_model


def _net(bn: bool, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1), *([nn.BatchNorm2d(8)] if bn else []), nn.ReLU(),
              nn.Flatten(), nn.Dropout(dropout), nn.Linear(8 * 8 * 8, 5)]
    return nn.Sequential(*layers)


def _state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
            [m.training for m in model.modules()])


def _same(a, b):
    (sa, ga, ma), (sb, gb, mb) = a, b
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all((ga[n] is None and gb[n] is None) or torch.equal(ga[n], gb[n]) for n in ga)
    assert ma == mb


def test_activation_stats_match_hand_computation_and_leave_bn_buffers_alone():
    model = _net(bn=True)
    x = torch.randn(16, 3, 8, 8)
    before = _state(model)
    stats = D.activation_stats(model, x, layers=["0", "1"])
    _same(before, _state(model))  # running statistics untouched
    conv = model[0](x)
    assert stats[0].name == "0" and stats[0].mean == pytest.approx(conv.mean().item(), rel=1e-5)
    assert stats[0].std == pytest.approx(conv.std().item(), rel=1e-5)
    # BatchNorm output in train mode: every channel has mean 0 and std 1
    assert stats[1].channel_mean < 1e-5 and stats[1].channel_std == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ReglabError, match="layers"):
        D.activation_stats(model, x, layers=["nope"])


def test_activations_grow_with_depth_without_bn_in_a_he_initialized_resnet():
    def he(model):
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        return model

    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    plain = D.activation_stats(he(build_model("resnet", (3, 32, 32), 10, width=4, depth=3, norm="none")), x)
    bn = D.activation_stats(he(build_model("resnet", (3, 32, 32), 10, width=4, depth=3, norm="batch")), x)
    assert len(plain) == len(bn) == 9  # the residual blocks
    assert plain[-1].channel_std > 8 * plain[0].channel_std  # variance about doubles per block
    assert bn[-1].channel_std < 5 * bn[0].channel_std


def test_logit_gradient_is_softmax_minus_onehot_over_batch():
    model = _net(bn=True)
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    before = _state(model)
    g = D.logit_gradient(model, x, y)
    _same(before, _state(model))
    with torch.no_grad():
        logits = copy.deepcopy(model).train()(x)
    expected = (logits.softmax(-1) - F.one_hot(y, 5)) / len(y)
    assert g.shape == (6, 5) and torch.allclose(g, expected, atol=1e-6)


@pytest.mark.parametrize("bn", [True, False])
def test_relative_loss_restores_the_model_bit_for_bit(bn):
    model = _net(bn=bn, dropout=0.3)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(5, (16,))
    model.train()
    F.cross_entropy(model(x), y).backward()  # gradients present: they must survive the probe
    model.eval()
    before = _state(model)
    rng = torch.get_rng_state()
    lrs, ratios = D.relative_loss(model, x, y, lrs=[1e-4, 1e-2, 1.0, 1e4])
    _same(before, _state(model))
    assert torch.equal(rng, torch.get_rng_state())
    assert lrs.tolist() == [1e-4, 1e-2, 1.0, 1e4]
    # a tiny step lowers the loss a little, a huge one raises it
    assert 0.9 < ratios[0] < 1.0 and ratios[-1] > 1.0
    # each probe starts from the same state: the ratio equals one fresh step on a copy
    plain = _net(bn=bn)
    twin = copy.deepcopy(plain).train()
    base = F.cross_entropy(twin(x), y)
    grads = torch.autograd.grad(base, list(twin.parameters()))
    expected = []
    for lr in (1e-2, 1.0):
        with D.preserved(twin), torch.no_grad():
            for p, g in zip(twin.parameters(), grads):
                p.sub_(lr * g)
            expected.append(F.cross_entropy(twin(x), y).item() / base.item())
    _, got = D.relative_loss(plain, x, y, lrs=[1e-2, 1.0])
    assert got.tolist() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ReglabError, match="lrs"):
        D.relative_loss(model, x, y, lrs=[0.0])


def test_first_layer_filters_and_grid():
    model = _net(bn=False)
    w = D.first_layer_filters(model)
    assert torch.equal(w, model[0].weight.detach())
    grid = D.filter_grid(w, columns=4)
    assert grid.shape == (2 * 4, 4 * 4, 3) and grid.min() >= 0 and grid.max() <= 1
    mlp = build_model("mlp", (1, 4, 4), 3, hidden=[6])
    assert D.first_layer_filters(mlp, (1, 4, 4)).shape == (6, 1, 4, 4)
    with pytest.raises(ReglabError, match="input_shape"):
        D.first_layer_filters(mlp)


def test_plots_write_pngs(tmp_path):
    model = _net(bn=True)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(5, (8,))
    paths = [
        D.plot_activation_stats({"bn": D.activation_stats(model, x)}, tmp_path / "a.png"),
        D.plot_logit_gradient({"bn": D.logit_gradient(model, x, y)}, tmp_path / "g.png"),
        D.plot_relative_loss({"bn": D.relative_loss(model, x, y, lrs=[1e-3, 1e-1])}, tmp_path / "r.png"),
        D.plot_filters({"bn": D.first_layer_filters(model)}, tmp_path / "f.png"),
    ]
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)
