"""Test-time adaptation (source / norm / TENT) on tiny BatchNorm models."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reglab.errors import ReglabError
from reglab.analysis.tta import Adapter, bn_layers, evaluate_tta, softmax_entropy


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )
    # give the BN layers non-trivial running statistics and affine parameters, as after training
    with torch.no_grad():
        for bn in bn_layers(model):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    return model.eval()


def data(n: int = 48, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 5, (n,), generator=g)
    return x, y


def norm_fn(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.45) / 0.25


def inputs(x: torch.Tensor) -> torch.Tensor:
    return norm_fn(x.float() / 255)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def manual_batch_norm_forward(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The tiny model with every BN normalizing by the batch mean and biased batch variance."""
    h = x
    for layer in model:
        if isinstance(layer, nn.BatchNorm2d):
            mean = h.mean((0, 2, 3), keepdim=True)
            var = h.var((0, 2, 3), unbiased=False, keepdim=True)
            h = (h - mean) / torch.sqrt(var + layer.eps) * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
        else:
            h = layer(h)
    return h


def test_softmax_entropy():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    ent = softmax_entropy(logits)
    assert ent[0].item() == pytest.approx(torch.log(torch.tensor(4.0)).item(), abs=1e-6)
    assert ent[1].item() == pytest.approx(0.0, abs=1e-6)


def test_source_equals_plain_eval_and_leaves_model_untouched():
    model, (x, y) = tiny_model(), data()
    before = state(model)
    out = evaluate_tta(model, x, y, "source", batch_size=16, normalize=norm_fn)
    with torch.no_grad():
        logits = model(inputs(x))
    assert torch.equal(out["prediction"], logits.argmax(1))
    assert torch.allclose(out["entropy"], softmax_entropy(logits), atol=1e-6)
    assert out["error"] == pytest.approx(1 - (logits.argmax(1) == y).float().mean().item())
    assert torch.equal(out["correct"], logits.argmax(1) == y)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


def test_norm_uses_batch_statistics_only():
    model, (x, y) = tiny_model(), data()
    out = evaluate_tta(model, x, y, "norm", batch_size=16, normalize=norm_fn, order_seed=None)
    with torch.no_grad():
        manual = torch.cat([manual_batch_norm_forward(model, inputs(x[i:i + 16])) for i in range(0, 48, 16)])
    assert torch.equal(out["prediction"], manual.argmax(1))
    assert torch.allclose(out["entropy"], softmax_entropy(manual), atol=1e-5)
    # the same batch predicted alone, or after other batches, gives the same logits: no state carried
    adapter = Adapter(model, "norm")
    first = adapter(inputs(x[:16]))
    adapter(inputs(x[16:32]))
    assert torch.allclose(adapter(inputs(x[:16])), first, atol=1e-6)
    # and the logits differ from source mode (running statistics are not used)
    with torch.no_grad():
        assert not torch.allclose(first, model(inputs(x[:16])), atol=1e-3)
    assert all(layer.running_mean is None for layer in bn_layers(adapter.model))


def test_results_are_returned_in_the_callers_order():
    model, (x, y) = tiny_model(), data()
    shuffled = evaluate_tta(model, x, y, "norm", batch_size=16, normalize=norm_fn, order_seed=3)
    order = torch.randperm(48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        manual = torch.empty(48, 5)
        for b in range(3):
            rows = order[b * 16:(b + 1) * 16]
            manual[rows] = manual_batch_norm_forward(model, inputs(x[rows]))
    assert torch.equal(shuffled["prediction"], manual.argmax(1))
    assert torch.equal(shuffled["batch"][order], torch.arange(48) // 16)


def test_tent_changes_only_bn_affine_parameters():
    model, (x, _) = tiny_model(), data()
    before = state(model)
    adapter = Adapter(model, "tent", lr=1e-2)
    for i in range(0, 48, 16):
        adapter(inputs(x[i:i + 16]))
    after = dict(adapter.model.named_parameters())
    affine = {f"{name}.{p}" for name, m in adapter.model.named_modules() if isinstance(m, nn.BatchNorm2d)
              for p in ("weight", "bias")}
    assert affine == {"1.weight", "1.bias", "4.weight", "4.bias"}
    for name, p in after.items():
        if name in affine:
            assert not torch.equal(p.detach(), before[name]), name
            assert p.requires_grad
        else:
            assert torch.equal(p.detach(), before[name]), name
            assert not p.requires_grad
    # the caller's model is untouched (parameters, buffers, flags, mode)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    assert all(bn.running_mean is not None for bn in bn_layers(model))


def test_entropy_decreases_after_one_step():
    model, (x, _) = tiny_model(), data(64)
    xb = inputs(x)
    for optimizer, lr in (("adam", 1e-2), ("sgd", 0.5)):
        adapter = Adapter(model, "tent", lr=lr, optimizer=optimizer)
        before = softmax_entropy(adapter(xb)).mean()  # forward, then one update
        after = softmax_entropy(adapter.predict(xb)).mean()
        assert after < before - 1e-3, optimizer


def test_online_predictions_are_the_pre_update_forward():
    model, (x, y) = tiny_model(), data()
    out = evaluate_tta(model, x, y, "tent", batch_size=16, lr=5e-3, normalize=norm_fn, order_seed=None)
    # replay by hand: forward with batch statistics, report, then one Adam step on the BN affine params
    ref = copy.deepcopy(model)
    params = [p for bn in bn_layers(ref) for p in (bn.weight, bn.bias)]
    opt = torch.optim.Adam(params, lr=5e-3)
    logits = []
    for i in range(0, 48, 16):
        z = manual_batch_norm_forward(ref, inputs(x[i:i + 16]))
        logits.append(z.detach())
        opt.zero_grad()
        softmax_entropy(z).mean().backward()
        opt.step()
    logits = torch.cat(logits)
    assert torch.equal(out["prediction"], logits.argmax(1))
    assert torch.allclose(out["entropy"], softmax_entropy(logits), atol=1e-5)
    # the first batch is predicted before any update: identical to norm mode there, not after
    norm = evaluate_tta(model, x, y, "norm", batch_size=16, normalize=norm_fn, order_seed=None)
    assert torch.allclose(out["entropy"][:16], norm["entropy"][:16], atol=1e-6)
    assert not torch.allclose(out["entropy"][16:], norm["entropy"][16:], atol=1e-4)


def test_episodic_resets_before_every_batch():
    model, (x, y) = tiny_model(), data()
    episodic = evaluate_tta(model, x, y, "tent", batch_size=16, lr=5e-2, normalize=norm_fn, episodic=True)
    norm = evaluate_tta(model, x, y, "norm", batch_size=16, normalize=norm_fn)
    # with a reset before each batch and one step, every reported forward is the unadapted one
    assert torch.allclose(episodic["entropy"], norm["entropy"], atol=1e-6)
    online = evaluate_tta(model, x, y, "tent", batch_size=16, lr=5e-2, normalize=norm_fn)
    assert not torch.allclose(online["entropy"], norm["entropy"], atol=1e-4)


def test_steps_and_reset():
    model, (x, _) = tiny_model(), data()
    xb = inputs(x[:16])
    one, three = Adapter(model, "tent", lr=1e-2), Adapter(model, "tent", lr=1e-2, steps=3)
    first = one(xb)
    one(xb)
    third = one(xb)
    # three steps on one batch report the third forward (before the third update), as three
    # single-step calls on that batch do, and leave the same parameters
    assert not torch.allclose(third, first, atol=1e-4)
    assert torch.allclose(three(xb), third, atol=1e-5)
    assert torch.allclose(three.predict(xb), one.predict(xb), atol=1e-5)
    one.reset()
    assert torch.allclose(one(xb), first, atol=1e-6)


def test_bad_arguments():
    model, (x, y) = tiny_model(), data()
    with pytest.raises(ReglabError, match="did you mean 'tent'"):
        evaluate_tta(model, x, y, "tnet", batch_size=16)
    with pytest.raises(ReglabError, match="BatchNorm"):
        evaluate_tta(nn.Sequential(nn.Flatten(), nn.Linear(192, 5)), x, y, "norm", batch_size=16)
    with pytest.raises(ReglabError, match="batch_size"):
        evaluate_tta(model, x, y, "tent", batch_size=0)
    with pytest.raises(ReglabError, match="lr"):
        evaluate_tta(model, x, y, "tent", batch_size=16, lr=0.0)
    with pytest.raises(ReglabError, match="optimizer"):
        evaluate_tta(model, x, y, "tent", batch_size=16, optimizer="rmsprop")
    with pytest.raises(ReglabError, match="steps"):
        evaluate_tta(model, x, y, "tent", batch_size=16, steps=0)
    with pytest.raises(ReglabError, match="same number"):
        evaluate_tta(model, x, y[:3], "source", batch_size=16)


def test_single_example_tail_joins_the_last_batch():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x, y = torch.randn(33, 4), torch.randint(0, 3, (33,))
    out = evaluate_tta(mlp, x, y, "tent", batch_size=16, order_seed=None)
    assert torch.equal(out["batch"], torch.tensor([0] * 16 + [1] * 17))
    assert evaluate_tta(mlp, x, y, "source", batch_size=16, order_seed=None)["batch"][-1] == 2


def test_tta_recovers_from_a_shift_in_feature_statistics():
    """A model trained on clean data, tested on data with shifted scale and offset: norm and TENT
    re-normalize with the test batch and recover most of the accuracy that source loses."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 3, 1, 1, generator=g) * 1.5

    def make(n: int, shift: bool) -> tuple[torch.Tensor, torch.Tensor]:
        yy = torch.randint(0, 4, (n,), generator=g)
        xx = centers[yy] + 0.8 * torch.randn(n, 3, 6, 6, generator=g)
        return (xx * 2.5 + 3.0 if shift else xx), yy

    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        xb, yb = make(64, False)
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    model.eval()
    xt, yt = make(1000, True)
    err = {m: evaluate_tta(model, xt, yt, m, batch_size=100, lr=1e-3)["error"] for m in ("source", "norm", "tent")}
    assert err["norm"] < err["source"] - 0.2 and err["tent"] < err["source"] - 0.2, err
