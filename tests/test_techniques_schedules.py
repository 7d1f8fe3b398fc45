"""Optimizers and learning-rate schedules of the technique catalogue (issue 3).

Optimizers: one hand-computed step of each (coupled L2 versus decoupled weight decay told apart).
Schedules: the learning rate actually used at every optimizer step is recorded by a callback whose
``after_backward`` runs after warmup's (hooks run by increasing ``order``; warmup has order 5) and
compared with the schedule's formula.
"""
import math

import pytest
import torch

from reglab.engine.callbacks import Callback
from reglab.errors import ReglabError
from reglab.techniques import make
from reglab.engine.loop import fit
from reglab.engine.run import build_run

from conftest import image_data, mlp_config

DATA = image_data(n_train=96, n_val=32, n_test=32)  # batch 16 -> 6 optimizer steps per epoch
SPE = 6


def config(techniques, **kw):
    return mlp_config(techniques, **{"batch_size": 16, **kw})


class LRLog(Callback):
    """Records the learning rate (and momentum) of every optimizer step, after warmup has applied its
    multiplier (warmup's before_step has order 5) and before the step is taken."""

    order = 60

    def __init__(self):
        self.lrs, self.momenta = [], []

    def before_step(self, run):
        group = run.optimizer.param_groups[0]
        self.lrs.append(group["lr"])
        self.momenta.append(group.get("momentum", group.get("betas", (None,))[0]))


def train_logged(techniques, **kw):
    log = LRLog()
    result = fit(config(techniques, **kw), data=DATA, callbacks=(log,), progress=False)[0]
    return log, result


# ---- optimizers -------------------------------------------------------------------------------
def steps(name, knobs, theta, grad, n=1):
    """``theta`` after ``n`` steps of technique ``name``'s optimizer with a constant gradient."""
    p = torch.nn.Parameter(torch.tensor(theta, dtype=torch.float64))
    opt = make(name, **knobs).make_optimizer([p], None)
    for _ in range(n):
        opt.zero_grad()
        p.grad = torch.tensor(grad, dtype=torch.float64)
        opt.step()
    return p.detach()


def test_sgd_plain_momentum_nesterov_and_coupled_l2():
    theta, g, lr = [1.0, -2.0], [0.5, 0.25], 0.5
    # plain SGD with coupled L2: theta - lr * (g + wd * theta) = [1 - .5*(.5+.1), -2 - .5*(.25-.2)]
    out = steps("sgd", dict(lr=lr, momentum=0.0, weight_decay=0.1), theta, g)
    assert torch.allclose(out, torch.tensor([0.7, -2.025], dtype=torch.float64))
    # heavy ball, two steps of the same g: buf1 = g, buf2 = 0.9 g + g = 1.9 g -> theta - lr * 2.9 g
    out = steps("sgd", dict(lr=lr, momentum=0.9), theta, g, n=2)
    assert torch.allclose(out, torch.tensor(theta, dtype=torch.float64) - lr * 2.9 * torch.tensor(g, dtype=torch.float64))
    # Nesterov: update = g + 0.9 buf; step 1: 1.9 g; step 2: buf = 1.9 g, g + 0.9*1.9 g = 2.71 g -> 4.61 g
    out = steps("sgd", dict(lr=lr, momentum=0.9, nesterov=True), theta, g, n=2)
    assert torch.allclose(out, torch.tensor(theta, dtype=torch.float64) - lr * 4.61 * torch.tensor(g, dtype=torch.float64))
    with pytest.raises(ReglabError, match="nesterov"):
        make("sgd", momentum=0.0, nesterov=True)


def test_adam_coupled_l2_differs_from_adamw_decoupled_decay():
    theta, zero, lr, wd = [4.0, -1.0], [0.0, 0.0], 0.1, 0.5
    # Adam + L2: the gradient becomes wd*theta; the first Adam step is lr * m_hat / sqrt(v_hat) = lr * sign
    adam = steps("adam", dict(lr=lr, weight_decay=wd), theta, zero)
    assert torch.allclose(adam, torch.tensor([3.9, -0.9], dtype=torch.float64), atol=1e-6)
    # AdamW: theta * (1 - lr * wd) and no gradient step: [4 * .95, -1 * .95]
    adamw = steps("adamw", dict(lr=lr, weight_decay=wd), theta, zero)
    assert torch.allclose(adamw, torch.tensor([3.8, -0.95], dtype=torch.float64), atol=1e-12)
    # plain Adam: first step is lr * sign(g) whatever the gradient's size
    out = steps("adam", dict(lr=lr, beta1=0.8, beta2=0.99), theta, [1e-3, -50.0])
    assert torch.allclose(out, torch.tensor([3.9, -0.9], dtype=torch.float64), atol=1e-5)
    opt = make("adam", lr=lr, beta1=0.8, beta2=0.99, eps=1e-6).make_optimizer([torch.nn.Parameter(torch.zeros(1))], None)
    assert opt.defaults["betas"] == (0.8, 0.99) and opt.defaults["eps"] == 1e-6


def test_adadelta_first_step():
    theta, g, rho, eps, lr = [1.0, 1.0], [1.0, -2.0], 0.9, 1e-6, 1.0
    # E[g^2] = (1 - rho) g^2; delta = sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g with E[dx^2] = 0
    g_t = torch.tensor(g, dtype=torch.float64)
    delta = math.sqrt(eps) / torch.sqrt((1 - rho) * g_t**2 + eps) * g_t
    out = steps("adadelta", dict(lr=lr, rho=rho, eps=eps), theta, g)
    assert torch.allclose(out, torch.tensor(theta, dtype=torch.float64) - lr * delta)


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                       ("adamw", torch.optim.AdamW), ("adadelta", torch.optim.Adadelta)])
def test_optimizer_technique_drives_the_run(name, cls):
    run = build_run(config([{"name": name, "lr": 0.05}]), [0], data=DATA)
    assert type(run.optimizer) is cls and run.lr == 0.05
    assert {id(p) for p in run.optimizer.param_groups[0]["params"]} == {id(p) for p in run.model.parameters()}


# ---- warmup -----------------------------------------------------------------------------------
def test_linear_and_constant_warmup_learning_rates():
    # sgd lr 0.1, warmup over 1 epoch = 6 steps from factor 0.1: w(t) = 0.1 + 0.9 * t / 6 for t < 6
    # t = 0..5 -> w = .1, .25, .4, .55, .7, .85 -> lr = .01, .025, .04, .055, .07, .085; then 0.1
    log, result = train_logged([{"name": "sgd", "lr": 0.1}, {"name": "warmup", "epochs": 1, "mode": "linear", "factor": 0.1}])
    expected = [0.01, 0.025, 0.04, 0.055, 0.07, 0.085] + [0.1] * 6
    assert log.lrs == pytest.approx(expected, rel=1e-12)
    assert [r["lr"] for r in result.history] == [0.1, 0.1]  # the multiplier is removed after each step
    # constant: 0.1 * 0.1 for the first 6 steps, then 0.1
    log, _ = train_logged([{"name": "sgd", "lr": 0.1}, {"name": "warmup", "epochs": 1, "mode": "constant", "factor": 0.1}])
    assert log.lrs == pytest.approx([0.01] * 6 + [0.1] * 6, rel=1e-12)


def test_warmup_multiplies_a_per_step_cosine_schedule_without_disturbing_it():
    # lr(t) = cos(t) * w(t), cos(t) = (0.1 - 0.01) * (1 + cos(pi t / 18)) / 2 + 0.01 over 3 epochs x 6 steps,
    # w(t) = 0.5 + 0.5 * t / 12 for t < 12 (2 warmup epochs), 1 after
    log, _ = train_logged([{"name": "sgd", "lr": 0.1}, {"name": "cosine", "eta_min": 0.01},
                           {"name": "warmup", "epochs": 2, "factor": 0.5}], epochs=3)
    T = 18
    cos = [0.01 + 0.09 * (1 + math.cos(math.pi * t / T)) / 2 for t in range(T)]
    w = [0.5 + 0.5 * t / 12 if t < 12 else 1.0 for t in range(T)]
    assert log.lrs == pytest.approx([c * f for c, f in zip(cos, w)], rel=1e-9)


# ---- per-step schedules -----------------------------------------------------------------------
def test_cosine_learning_rate_per_step_and_at_epoch_ends():
    # T = 3 epochs * 6 steps = 18; lr(t) = 0.001 + (0.1 - 0.001) * (1 + cos(pi t / 18)) / 2
    log, result = train_logged([{"name": "sgd", "lr": 0.1}, {"name": "cosine", "eta_min": 0.001}], epochs=3)
    formula = lambda t: 0.001 + 0.099 * (1 + math.cos(math.pi * t / 18)) / 2  # noqa: E731
    assert log.lrs == pytest.approx([formula(t) for t in range(18)], rel=1e-9)
    # recorded at the end of epoch e: the lr after e*6 steps; t = 6 -> .001 + .099*.75 = .07525, t=12 -> .02575
    assert [r["lr"] for r in result.history] == pytest.approx([0.07525, 0.02575, 0.001], rel=1e-9)


def test_onecycle_learning_rate_and_momentum_per_step():
    # T = 2 * 6 = 12 steps, max_lr 0.1, div 25 -> initial 0.004, final 0.004 / 1e4 = 4e-7.
    # Phase 1 ends at step pct_start * T - 1 = 0.3 * 12 - 1 = 2.6; cosine annealing in both phases:
    # t <= 2.6: lr = 0.1 + (0.004 - 0.1) * (1 + cos(pi t / 2.6)) / 2
    # t >  2.6: lr = 4e-7 + (0.1 - 4e-7) * (1 + cos(pi (t - 2.6) / (11 - 2.6))) / 2
    log, result = train_logged([{"name": "sgd", "lr": 0.1, "momentum": 0.9}, {"name": "onecycle", "max_lr": 0.1}])

    def lr(t):
        if t <= 2.6:
            return 0.1 + (0.004 - 0.1) * (1 + math.cos(math.pi * t / 2.6)) / 2
        return 4e-7 + (0.1 - 4e-7) * (1 + math.cos(math.pi * (t - 2.6) / 8.4)) / 2

    assert log.lrs == pytest.approx([lr(t) for t in range(12)], rel=1e-9)
    assert log.lrs[0] == pytest.approx(0.004) and log.lrs[-1] == pytest.approx(4e-7)
    # momentum moves inversely between 0.95 and 0.85 with the same cosine: at t=0 0.95, at the peak 0.85
    assert log.momenta[0] == pytest.approx(0.95)
    for t in range(12):
        frac = (log.lrs[t] - 0.004) / 0.096 if t <= 2.6 else (log.lrs[t] - 4e-7) / (0.1 - 4e-7)
        assert log.momenta[t] == pytest.approx(0.95 - 0.1 * frac, abs=1e-9)
    # max_lr defaults to the optimizer's lr
    run = build_run(config([{"name": "sgd", "lr": 0.3}, {"name": "onecycle"}]), [0], data=DATA)
    assert run.lr == pytest.approx(0.3 / 25)


def test_onecycle_leaves_momentum_alone_when_the_optimizer_has_none():
    log, _ = train_logged([{"name": "sgd", "lr": 0.1, "momentum": 0.0}, {"name": "onecycle"}])
    assert set(log.momenta) == {0.0}
    log, _ = train_logged([{"name": "adadelta"}, {"name": "onecycle"}])
    assert len(log.lrs) == 12


# ---- per-epoch schedules ----------------------------------------------------------------------
def test_step_lr_at_given_epochs():
    # step_size 2, gamma 0.5: epochs 1,2 -> 0.1; 3,4 -> 0.05; 5 -> 0.025 (lr used during the epoch)
    log, result = train_logged([{"name": "sgd", "lr": 0.1}, {"name": "step_lr", "step_size": 2, "gamma": 0.5}], epochs=5)
    per_epoch = [0.1, 0.1, 0.05, 0.05, 0.025]
    assert [r["lr"] for r in result.history] == pytest.approx(per_epoch, rel=1e-12)
    assert log.lrs == pytest.approx([lr for lr in per_epoch for _ in range(SPE)], rel=1e-12)


def test_multistep_at_given_epochs():
    # milestones [1, 3], gamma 0.1: epoch 1 -> 0.1; after epoch 1 -> 0.01 (epochs 2, 3); after 3 -> 0.001
    log, result = train_logged([{"name": "sgd", "lr": 0.1}, {"name": "multistep", "milestones": [1, 3], "gamma": 0.1}],
                               epochs=5)
    per_epoch = [0.1, 0.01, 0.01, 0.001, 0.001]
    assert [r["lr"] for r in result.history] == pytest.approx(per_epoch, rel=1e-9)
    assert log.lrs == pytest.approx([lr for lr in per_epoch for _ in range(SPE)], rel=1e-9)


class ScriptedMetric(Callback):
    """Overwrites the recorded validation accuracy before the plateau schedule (order 50) reads it."""

    order = 1

    def __init__(self, values):
        self.values = values

    def on_epoch_end(self, run):
        run.history[0][-1]["val_accuracy"] = self.values[run.epoch - 1]


def test_plateau_reduces_after_patience_epochs_without_improvement():
    # mode max (val_accuracy), patience 2, factor 0.5. torch counts bad epochs and reduces when the count
    # exceeds patience: e1 0.5 best; e2 0.6 best (bad 0); e3, e4: bad 1, 2; e5: bad 3 > 2 -> lr 0.05
    # from epoch 6 on; e6, e7: bad 1, 2 (no second reduction before epoch 8).
    scripted = [0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
    result = fit(config([{"name": "sgd", "lr": 0.1}, {"name": "plateau", "patience": 2, "factor": 0.5}], epochs=7),
                 data=DATA, callbacks=(ScriptedMetric(scripted),), progress=False)[0]
    assert [r["lr"] for r in result.history] == pytest.approx([0.1] * 5 + [0.05] * 2)
    # an improvement resets the count: 0.5, 0.6, 0.6, 0.7, 0.7, 0.7 -> no reduction in 6 epochs
    result = fit(config([{"name": "sgd", "lr": 0.1}, {"name": "plateau", "patience": 2, "factor": 0.5}], epochs=6),
                 data=DATA, callbacks=(ScriptedMetric([0.5, 0.6, 0.6, 0.7, 0.7, 0.7]),), progress=False)[0]
    assert [r["lr"] for r in result.history] == [0.1] * 6


class ScriptedPerSeed(Callback):
    """Per seed s, overwrites the recorded validation accuracy with values[s][epoch - 1]."""

    order = 1

    def __init__(self, values):
        self.values = values

    def on_epoch_end(self, run):
        for s in range(run.size):
            run.history[s][-1]["val_accuracy"] = self.values[s][run.epoch - 1]
        self.last = [run.model.member(s).state_dict() for s in range(run.size)]  # the weights after each epoch


def test_plateau_gives_each_stacked_seed_its_own_learning_rate():
    """Two seeds stacked in one optimizer: seed 0 plateaus (its LR halves after epoch 3), seed 1 keeps
    improving (its LR stays); each seed's weights equal those of the seed trained alone on its curve."""
    curves = [[0.5, 0.5, 0.5, 0.5, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]]
    cfg = config([{"name": "sgd", "lr": 0.1, "momentum": 0.9}, {"name": "plateau", "patience": 1, "factor": 0.5}], epochs=5)
    scripted = ScriptedPerSeed(curves)
    group = fit(cfg, seeds=[0, 1], data=DATA, callbacks=(scripted,), progress=False)
    assert [r["lr"] for r in group[0].history] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05])
    assert [r["lr"] for r in group[1].history] == pytest.approx([0.1] * 5)
    # the reference: each seed alone with the same learning rates set on its optimizer directly
    sgd = {"name": "sgd", "lr": 0.1, "momentum": 0.9}
    references = [[sgd, {"name": "multistep", "milestones": [3], "gamma": 0.5}], [sgd]]
    for s in (0, 1):
        ref = config(references[s], epochs=5, seed=s)
        reference = ScriptedPerSeed([curves[s]])
        [alone] = fit(ref, data=DATA, callbacks=(reference,), progress=False)
        assert [r["lr"] for r in alone.history] == pytest.approx([r["lr"] for r in group[s].history])
        for name, a in reference.last[0].items():  # the last epoch's weights, after the cut
            torch.testing.assert_close(a, scripted.last[s][name], rtol=1e-4, atol=1e-5)
