"""Optimizers of the technique catalogue (issue 3) over several steps, against the update rules
written out from the papers (not from torch's code), in float64:

- SGD with heavy-ball or Nesterov momentum and coupled L2 (Polyak 1964; Sutskever et al. 2013, in
  torch's formulation: ``b <- mu b + g``, step ``g + mu b`` for Nesterov);
- Adam with coupled L2 (Kingma & Ba 2015, Algorithm 1; the penalty ``wd * theta`` enters the moments);
- AdamW with decoupled decay (Loshchilov & Hutter 2019, Algorithm 2 with the schedule multiplier
  folded into lr: ``theta <- theta - lr * wd * theta - lr * m_hat / (sqrt(v_hat) + eps)``);
- Adadelta (Zeiler 2012, Algorithm 1, with a step multiplier lr).

The gradient comes from a fixed quadratic ``0.5 theta^T A theta - b^T theta``, so it changes with
theta and the optimizer's state matters. Then the optimizers inside the trainer: one step of a
stacked group of seeds equals the formula per seed, and each optimizer learns the tiny task.
"""
import math

import pytest
import torch

from reglab.techniques import make
from reglab.engine.loop import fit
from reglab.engine.run import build_run
from reglab.engine.step import default_step as _default_step

from conftest import image_data, mlp_config

A = torch.tensor([[3.0, 0.5, 0.0], [0.5, 1.0, -0.2], [0.0, -0.2, 0.1]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
THETA0 = torch.tensor([0.5, 1.5, -3.0], dtype=torch.float64)
STEPS = 6


def grad(theta):
    return A @ theta - B


def with_torch(name, knobs, n=STEPS):
    p = torch.nn.Parameter(THETA0.clone())
    opt = make(name, **knobs).make_optimizer([p], None)
    out = []
    for _ in range(n):
        opt.zero_grad()
        p.grad = grad(p.detach())
        opt.step()
        out.append(p.detach().clone())
    return out


def sgd_reference(lr, mu, nesterov, wd, n=STEPS):
    theta, buf, out = THETA0.clone(), None, []
    for _ in range(n):
        g = grad(theta) + wd * theta
        buf = g.clone() if buf is None else mu * buf + g
        theta = theta - lr * ((g + mu * buf) if nesterov else buf)
        out.append(theta)
    return out


def adam_reference(lr, b1, b2, eps, wd, decoupled, n=STEPS):
    theta, m, v, out = THETA0.clone(), torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), []
    for t in range(1, n + 1):
        g = grad(theta)
        if decoupled:
            theta = theta * (1 - lr * wd)  # shrink first, the gradient was taken at the old theta
        else:
            g = g + wd * theta
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        theta = theta - lr * m_hat / (v_hat.sqrt() + eps)
        out.append(theta)
    return out


def adadelta_reference(lr, rho, eps, wd, n=STEPS):
    theta, eg, edx, out = THETA0.clone(), torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), []
    for _ in range(n):
        g = grad(theta) + wd * theta
        eg = rho * eg + (1 - rho) * g * g
        dx = (edx + eps).sqrt() / (eg + eps).sqrt() * g
        edx = rho * edx + (1 - rho) * dx * dx
        theta = theta - lr * dx
        out.append(theta)
    return out


def close(got, expected):
    for t, (a, b) in enumerate(zip(got, expected)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), f"step {t + 1}: {a} != {b}"


@pytest.mark.parametrize("mu, nesterov, wd", [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 0.0),
                                              (0.8, True, 0.1), (0.5, False, 0.3)])
def test_sgd_several_steps_equal_the_momentum_formulas(mu, nesterov, wd):
    knobs = dict(lr=0.05, momentum=mu, nesterov=nesterov, weight_decay=wd)
    close(with_torch("sgd", knobs), sgd_reference(0.05, mu, nesterov, wd))


def test_nesterov_differs_from_heavy_ball():
    heavy = with_torch("sgd", dict(lr=0.05, momentum=0.9))
    nest = with_torch("sgd", dict(lr=0.05, momentum=0.9, nesterov=True))
    assert not torch.allclose(heavy[-1], nest[-1])


@pytest.mark.parametrize("wd", [0.0, 0.2])
def test_adam_several_steps_with_coupled_l2(wd):
    knobs = dict(lr=0.1, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=wd)
    close(with_torch("adam", knobs), adam_reference(0.1, 0.8, 0.95, 1e-6, wd, decoupled=False))


@pytest.mark.parametrize("wd", [0.0, 0.2])
def test_adamw_several_steps_with_decoupled_decay(wd):
    knobs = dict(lr=0.1, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=wd)
    close(with_torch("adamw", knobs), adam_reference(0.1, 0.8, 0.95, 1e-6, wd, decoupled=True))


def test_coupled_and_decoupled_decay_are_different_things():
    knobs = dict(lr=0.1, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.2)
    coupled, decoupled = with_torch("adam", knobs)[-1], with_torch("adamw", knobs)[-1]
    assert (coupled - decoupled).abs().max() > 1e-3
    # and with weight_decay = 0 they are the same algorithm
    knobs["weight_decay"] = 0.0
    assert torch.allclose(with_torch("adam", knobs)[-1], with_torch("adamw", knobs)[-1], rtol=0, atol=1e-15)
    # adamw's default decay is on (0.01), adam's is off
    assert make("adamw").knobs.weight_decay == 0.01 and make("adam").knobs.weight_decay == 0.0


@pytest.mark.parametrize("lr, wd", [(1.0, 0.0), (0.5, 0.1)])
def test_adadelta_several_steps(lr, wd):
    close(with_torch("adadelta", dict(lr=lr, rho=0.9, eps=1e-6, weight_decay=wd)), adadelta_reference(lr, 0.9, 1e-6, wd))


# ---- inside the trainer ------------------------------------------------------------------------------
DATA = image_data(n_train=128, n_val=64, n_test=64)


config = mlp_config


def first_step(name, knobs, seeds):
    """Parameters before and after one trainer step, and the gradients of that step, all (S, ...)."""
    run = build_run(config([{"name": name, **knobs}]), seeds, data=DATA)
    rows = torch.stack([torch.arange(32) + 32 * s for s in range(len(seeds))])
    x, y = DATA.normalize(DATA.to_input(DATA.train.inputs(rows))), DATA.train.y[rows]
    before = {n: p.detach().clone() for n, p in run.model.stacked().items()}
    _default_step(run, x, y)
    grads = {n: g.detach().clone() for n, g in run.model.stacked_grads().items()}
    after = {n: p.detach().clone() for n, p in run.model.stacked().items()}
    return before, grads, after


def test_adamw_first_trainer_step_on_a_group_is_decay_plus_sign_step():
    lr, wd, eps = 0.01, 0.5, 1e-8
    before, grads, after = first_step("adamw", dict(lr=lr, weight_decay=wd, eps=eps), [0, 1])
    for n in before:  # m_hat = g, v_hat = g^2: the Adam part is lr * g / (|g| + eps), per element
        p, g = before[n], grads[n]
        expected = p - lr * wd * p - lr * g / (g.abs() + eps)
        assert torch.allclose(after[n], expected, atol=1e-7), n
        assert not torch.allclose(before[n][0], before[n][1])  # the seeds are different models


def test_adam_coupled_l2_first_trainer_step_is_a_sign_step_of_the_penalized_gradient():
    lr, wd, eps = 0.01, 0.5, 1e-8
    before, grads, after = first_step("adam", dict(lr=lr, weight_decay=wd, eps=eps), [0, 1])
    for n in before:
        p, g = before[n], grads[n] + wd * before[n]  # the penalty's gradient joins the loss's
        assert torch.allclose(after[n], p - lr * g / (g.abs() + eps), atol=1e-7), n


def test_sgd_nesterov_first_trainer_step_on_a_group():
    lr, mu, wd = 0.1, 0.9, 0.01
    before, grads, after = first_step("sgd", dict(lr=lr, momentum=mu, nesterov=True, weight_decay=wd), [0, 1])
    for n in before:  # first step: buffer = g' = g + wd p; update g' + mu g'
        gp = grads[n] + wd * before[n]
        assert torch.allclose(after[n], before[n] - lr * (1 + mu) * gp, atol=1e-7), n


@pytest.mark.parametrize("name, knobs", [("sgd", dict(lr=0.05)), ("sgd", dict(lr=0.05, nesterov=True)),
                                         ("adam", dict(lr=1e-2)), ("adamw", dict(lr=1e-2)),
                                         ("adadelta", dict(lr=1.0))])
def test_each_optimizer_learns_the_tiny_task(name, knobs):
    result = fit(config([{"name": name, **knobs}], epochs=8), data=DATA, progress=False)[0]
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.8 * losses[0]
    assert result.metrics["test_accuracy"] > 0.5  # 4 classes: chance is 0.25
    assert all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_the_fused_kernels_update_like_the_default_implementation(name):
    """On the CPU the optimizers use torch's fused kernels (one per parameter); a few steps give the
    default implementation's parameters to float rounding."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 40, 16)), torch.nn.Parameter(torch.randn(3, 16))]
    ours = make(name, lr=0.01).make_optimizer(params, None)
    assert ours.defaults["fused"] is True
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    kind = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    plain = kind(twins, **{k: v for k, v in ours.defaults.items() if k in ("lr", "momentum", "betas", "eps", "weight_decay", "nesterov")},
                 foreach=False)
    for step in range(5):
        for p, q in zip(params, twins):
            p.grad = torch.sin(p.detach() * (step + 1))
            q.grad = torch.sin(q.detach() * (step + 1))
        ours.step()
        plain.step()
    for p, q in zip(params, twins):
        assert torch.allclose(p, q, atol=1e-6) and not torch.equal(p, params[0].new_zeros(p.shape))
