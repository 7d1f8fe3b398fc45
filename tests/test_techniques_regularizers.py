"""Penalties, constraints, early stopping, normalization surgery, dropout, loss techniques and the
trajectory recorder of the technique catalogue (issue 3)."""
import math

import pytest
import torch
from scipy import stats
import torch.nn.functional as F
from torch import nn

from reglab.config import RunConfig
from reglab.engine.callbacks import Callback
from reglab.data import Data, Split
from reglab.errors import ReglabError
from reglab.metrics.multilabel import pos_weight as pos_weights
from reglab.techniques.class_balance import class_weights
from reglab.models.seeded import SeedDropout, hash_uniform
from reglab.techniques.early_stopping import should_stop
from reglab.engine.loop import fit
from reglab.engine.run import build_run
from reglab.engine.step import criterion

from conftest import image_data, mlp_config, technique

DATA = image_data(n_train=64, n_val=32, n_test=32)


config = mlp_config


def start(run):
    """Run the techniques' on_fit_start hooks (what fit does before the first epoch)."""
    for t in run.techniques:
        t.on_fit_start(run)
    return run


# ---- L1 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seeds", [[0], [0, 1]])
def test_l1_gradient_is_lambda_times_sign(seeds):
    lam = 0.01
    run = build_run(config([{"name": "l1", "lam": lam}]), seeds, data=DATA)
    zero = torch.zeros(run.size)
    loss = technique(run, "l1").loss(run, zero, None, None, None)
    for s in range(run.size):  # the penalty value: lam * sum |theta| of seed s alone
        direct = sum(p.abs().sum() for p in run.model.member(s).parameters())
        assert loss[s].item() == pytest.approx(lam * direct.item(), rel=1e-5)
    loss.sum().backward()
    for p in run.model.parameters():
        assert torch.allclose(p.grad, lam * torch.sign(p.detach()), rtol=0, atol=1e-9)


def test_l1_without_biases_leaves_biases_alone():
    run = build_run(config([{"name": "l1", "lam": 0.1, "biases": False}]), [0], data=DATA)
    technique(run, "l1").loss(run, torch.zeros(1), None, None, None).sum().backward()
    for name, p in run.model.named_parameters():
        expected = torch.zeros_like(p) if name.endswith("bias") else 0.1 * torch.sign(p.detach())
        assert torch.allclose(p.grad if p.grad is not None else torch.zeros_like(p), expected), name


def test_l1_without_biases_leaves_normalization_parameters_alone():
    run = build_run(config([{"name": "batchnorm"}, {"name": "l1", "lam": 0.1, "biases": False}]), [0], data=DATA)
    technique(run, "l1").loss(run, torch.zeros(1), None, None, None).sum().backward()
    bn = run.model.single[2]
    assert isinstance(bn, nn.BatchNorm1d)
    assert bn.weight.grad is None or not bn.weight.grad.any()


def test_l1_shrinks_the_weights_in_training():
    def total_abs(techniques):
        grab = {}

        class Grab(Callback):  # the weights after the last epoch (on_fit_end sees the best epoch's)
            def on_epoch_end(self, run):
                grab["l1"] = sum(p.abs().sum().item() for p in run.model.parameters())

        fit(config([{"name": "adam", "lr": 1e-2}, *techniques], epochs=15), data=DATA, callbacks=(Grab(),), progress=False)
        return grab["l1"]

    assert total_abs([{"name": "l1", "lam": 1e-2}]) < 0.8 * total_abs([])


# ---- max-norm --------------------------------------------------------------------------------
def test_max_norm_rescales_long_rows_and_leaves_short_rows_unchanged():
    c = 0.5
    run = build_run(config([{"name": "max_norm", "c": c}]), [0, 1], data=DATA)
    layers = list(run.model.stacked_of(nn.Linear, "weight"))
    assert len(layers) == 2  # hidden and output Linear
    with torch.no_grad():
        for _, w in layers:  # even rows far above c, odd rows far below
            w[:, 0::2] *= 10
            w[:, 1::2] *= 0.1
    before = {name: w.detach().clone() for name, w in layers}
    technique(run, "max_norm").after_step(run)
    for name, w in run.model.stacked_of(nn.Linear, "weight"):
        old, norms = before[name], before[name].norm(dim=-1)
        assert (w.norm(dim=-1) <= c * (1 + 1e-6)).all()
        short = norms <= c
        assert short.any() and (~short).any()
        assert torch.equal(w[short], old[short])  # untouched, bit for bit
        assert torch.allclose(w[~short], old[~short] * (c / norms[~short]).unsqueeze(-1))  # same direction, norm c
        assert torch.allclose(w[~short].norm(dim=-1), torch.full_like(norms[~short], c))


def test_max_norm_holds_after_every_training_step():
    c, seen = 0.3, []

    class Check(Callback):
        order = 95  # after max_norm's after_step

        def after_step(self, run):
            norms = torch.cat([w.norm(dim=-1).flatten() for _, w in run.model.stacked_of(nn.Linear, "weight")])
            seen.append(norms.max().item())

    fit(config([{"name": "sgd", "lr": 0.5}, {"name": "max_norm", "c": c}]), seeds=[0, 1], data=DATA,
        callbacks=(Check(),), progress=False)
    assert len(seen) == 4 and max(seen) <= c * (1 + 1e-6)
    assert min(seen) == pytest.approx(c)  # the constraint is active (initial rows are longer than 0.3)


# ---- early stopping: Prechelt's criteria on hand-written error sequences ------------------------
def stop_epoch(criterion, val, train=None, **knobs):
    """The first epoch t (1-based) after which ``should_stop`` says stop, or None."""
    train = train if train is not None else val
    for t in range(1, len(val) + 1):
        if should_stop(criterion, val[:t], train[:t], **knobs):
            return t
    return None


def test_gl_stops_when_generalization_loss_exceeds_alpha():
    val = [0.50, 0.40, 0.40, 0.41, 0.30, 0.31, 0.32, 0.33]
    # E_opt: .5 .4 .4 .4 .3 .3 .3 .3; GL = 100 (E_va / E_opt - 1):
    #   t1..3: 0; t4: 100*(.41/.40-1) = 2.5; t5: 0 (new best); t6: 3.33; t7: 6.67; t8: 10
    assert stop_epoch("GL", val, alpha=5) == 7  # first GL > 5
    assert stop_epoch("GL", val, alpha=2) == 4  # 2.5 > 2
    assert stop_epoch("GL", val, alpha=20) is None


def test_pq_evaluates_only_at_strip_ends_and_divides_by_training_progress():
    # strip k = 3 (strip ends at t = 3, 6, 9), alpha = 0.5
    train = [0.50, 0.40, 0.30, 0.25, 0.24, 0.23, 0.225, 0.2225, 0.22]
    val = [0.40, 0.30, 0.33, 0.28, 0.29, 0.30, 0.29, 0.31, 0.30]
    # P_k(t) = 1000 (sum of the strip's train errors / (k * min over the strip) - 1):
    #   t3: 1000 (1.2 / 0.9 - 1) = 333.33;  t6: 1000 (.72 / .69 - 1) = 43.48;  t9: 1000 (.6675 / .66 - 1) = 11.36
    # GL: t3: 100 (.33/.30 - 1) = 10 -> PQ = 0.03;  t6: 100 (.30/.28 - 1) = 7.14 -> PQ = 0.164
    #     t9: 7.14 -> PQ = 0.629 > 0.5 -> stop at 9.
    # Off the strip ends nothing is evaluated: at t8, GL = 100 (.31/.28 - 1) = 10.7 and
    # P(t8) = 1000 (.6775 / .6675 - 1) = 14.98, so PQ = 0.715 > 0.5, yet t8 is not a strip end.
    assert stop_epoch("PQ", val, train, alpha=0.5, strip=3) == 9
    # GL_5 alone would have stopped at t3 (GL = 10): PQ waits because training still progresses fast
    assert stop_epoch("GL", val, alpha=5) == 3
    # alpha = 0.1: t3 0.03 no; t6 0.164 > 0.1 -> stop at 6
    assert stop_epoch("PQ", val, train, alpha=0.1, strip=3) == 6
    # with strip 1 every epoch is a strip end; the window is one epoch, so P = 0 and any GL > 0 stops:
    # t3 (GL = 10) is the first epoch with GL > 0
    assert stop_epoch("PQ", val, train, alpha=0.5, strip=1) == 3


def test_up_needs_s_successive_rising_strips():
    # strip k = 2: strip ends t = 2, 4, 6, 8, 10, 12
    val = [0.50, 0.40, 0.45, 0.42, 0.30, 0.35, 0.36, 0.36, 0.20, 0.37, 0.40, 0.38]
    # E at strip ends: E2 .40, E4 .42, E6 .35, E8 .36, E10 .37, E12 .38 (the dip to .20 at t9 is off-strip)
    # rises: t4 (.42 > .40), t8 (.36 > .35), t10 (.37 > .36), t12 (.38 > .37); t6 falls (.35 < .42)
    # UP_1 needs E(t) > E(t-2) and t - 2 a strip end: first at t4
    assert stop_epoch("UP", val, strip=2, successive=1) == 4
    # UP_2 needs rises at t and t-2: t4 has no strip before t2; t6 falls; t8's predecessor t6 fell;
    # t10: .37 > .36 and .36 > .35 -> stop at 10
    assert stop_epoch("UP", val, strip=2, successive=2) == 10
    # UP_3: t12: .38 > .37 > .36 > .35
    assert stop_epoch("UP", val, strip=2, successive=3) == 12
    # a rise that is not at a strip end does not count: with k = 3 the ends are t3 .45, t6 .35, t9 .20,
    # t12 .38: UP_1 stops at t12 (.38 > .20) only
    assert stop_epoch("UP", val, strip=3, successive=1) == 12


def test_patience_with_and_without_min_delta():
    val = [0.50, 0.45, 0.445, 0.442, 0.435, 0.43, 0.44, 0.45]
    # min_delta .01, patience 3: an improvement must beat best - .01.
    #   t1 .5 (best .5); t2 .45 < .49 (best .45, last=2); t3 .445 !< .44; t4 .442 !< .44;
    #   t5 .435 < .44 (best .435, last=5); t6 .43 !< .425; t7 .44; t8 .45 -> 8 - 5 = 3 >= 3 -> stop at 8
    assert stop_epoch("patience", val, patience=3, min_delta=0.01) == 8
    # min_delta 0: t3, t4, t5, t6 all improve (last = 6); t7, t8 are 1 and 2 epochs after -> no stop
    assert stop_epoch("patience", val, patience=3, min_delta=0.0) is None
    assert stop_epoch("patience", val + [0.46], patience=3) == 9
    # patience 1 stops at the first epoch without improvement
    assert stop_epoch("patience", val, patience=1) == 7


# ---- early stopping in training ----------------------------------------------------------------
STOP_DATA = image_data(n_train=64, n_val=64, n_test=32)
NOISY_DATA = image_data(n_train=64, n_val=64, n_test=32, noise=0.6)  # 60% random training labels: overfits


class Snapshots(Callback):
    """Weights at every epoch end (after the early stopper decided) and at the very end of fit."""

    order = 99

    def __init__(self):
        self.by_epoch = {}

    def on_epoch_end(self, run):
        self.by_epoch[run.epoch] = run.model.snapshot()

    def on_fit_end(self, run):  # the weights the run reports: each seed's best epoch's
        self.final = run.model.snapshot()


def stop_config(**knobs):
    return RunConfig(model="mlp", model_options={"hidden": [32]}, epochs=20, batch_size=16, metric="val_loss",
                     techniques=[{"name": "adam", "lr": 1e-2}, {"name": "early_stopping", "patience": 2, **knobs}])


def same_member(a, b, s):
    return all(torch.equal(a[name][s], b[name][s]) for name in a)


def test_early_stopping_restores_the_best_epoch_and_stops_patience_later():
    snaps = Snapshots()
    result = fit(stop_config(), data=STOP_DATA, callbacks=(snaps,), progress=False)[0]
    losses = [r["val_loss"] for r in result.history]
    best = result.metrics["best_epoch"]
    assert losses[best - 1] == min(losses) and losses.index(min(losses)) == best - 1
    assert len(result.history) == best + 2 < 20  # stopped patience = 2 epochs after the best one
    assert same_member(snaps.final, snaps.by_epoch[best], 0)
    assert not same_member(snaps.final, snaps.by_epoch[len(result.history)], 0)
    assert result.metrics["val_loss"] == pytest.approx(losses[best - 1], rel=1e-6)


def test_early_stopping_with_several_seeds_stopping_at_different_epochs():
    snaps = Snapshots()
    results = fit(stop_config(), seeds=[1, 3, 7], data=STOP_DATA, callbacks=(snaps,), progress=False)
    stops = [len(r.history) for r in results]
    assert len(set(stops)) == 3 and max(stops) < 20  # three different stopping epochs
    assert len(snaps.by_epoch) == max(stops)  # the group trains until its last seed stops
    for s, r in enumerate(results):
        best = r.metrics["best_epoch"]
        assert stops[s] == best + 2
        assert [h["epoch"] for h in r.history] == list(range(1, stops[s] + 1))
        assert same_member(snaps.final, snaps.by_epoch[best], s)
        assert r.metrics["val_loss"] == pytest.approx(r.history[best - 1]["val_loss"], rel=1e-5)


def test_a_stopped_seeds_last_metrics_are_those_of_its_stop_while_its_group_trains_on():
    # on noisy labels the validation loss keeps moving after a seed stops: its last weights must be its stop's
    cfg = RunConfig(model="mlp", model_options={"hidden": [32]}, epochs=20, batch_size=16, metric="val_loss",
                    techniques=[{"name": "adam", "lr": 1e-3}, {"name": "early_stopping", "patience": 2}])
    results = fit(cfg, seeds=[0, 2, 3], data=NOISY_DATA, progress=False)
    assert len({len(r.history) for r in results}) == 3
    for r in results:  # the seeds that stopped first kept their weights of that epoch
        assert r.metrics["last_val_loss"] == pytest.approx(r.history[-1]["val_loss"], rel=1e-5)
        assert r.metrics["val_loss"] == pytest.approx(r.history[r.metrics["best_epoch"] - 1]["val_loss"], rel=1e-5)


@pytest.mark.parametrize("knobs", [dict(criterion="GL", alpha=2.0), dict(criterion="PQ", alpha=0.1, strip=2),
                                   dict(criterion="UP", strip=2, successive=1)])
def test_trainer_stops_where_the_criterion_says_on_its_own_history(knobs):
    # the selection metric is val_loss: E_va = val_loss, E_tr = train_loss
    cfg = RunConfig(model="mlp", model_options={"hidden": [32]}, epochs=12, batch_size=16, metric="val_loss",
                    techniques=[{"name": "adam", "lr": 1e-2}, {"name": "early_stopping", **knobs}])
    result = fit(cfg, data=NOISY_DATA, progress=False)[0]
    h = result.history
    val = [r["val_loss"] for r in h]
    train = [r["train_loss"] for r in h]
    expected = stop_epoch(knobs["criterion"], val, train, **{k: v for k, v in knobs.items() if k != "criterion"})
    assert len(h) == (expected if expected is not None else 12)
    assert expected is not None  # this configuration does overfit within 12 epochs


def test_pq_does_not_stop_on_a_strip_whose_minimum_training_error_is_zero():
    # Prechelt's P_k = 1000 (sum / (k min) - 1) is infinite when min = 0, so PQ = GL / P_k = 0 <= alpha
    val = [0.40, 0.30, 0.35, 0.36, 0.40, 0.45]
    train = [0.20, 0.05, 0.00, 0.00, 0.01, 0.00]  # training accuracy reaches 100%
    assert stop_epoch("GL", val, alpha=5) == 3  # GL > 0 from t3 on ...
    assert stop_epoch("PQ", val, train, alpha=0.5, strip=3) is None  # ... but every strip's minimum is 0
    # strip 1: t3 and t4 have E_tr = 0 (no stop although GL > 0); t5 has E_tr = .01 > 0, so
    # P = 1000 (.01 / .01 - 1) = 0, PQ = inf -> the first stop is at t5
    assert stop_epoch("PQ", val, train, alpha=0.5, strip=1) == 5
    # a positive minimum: the usual quotient (t3 with k = 3: P = 1000 (.3 / (3 * .05) - 1) = 1000, GL = 16.7)
    train_pos = [0.20, 0.05, 0.05]
    assert not should_stop("PQ", val[:3], train_pos, alpha=0.5, strip=3)  # 16.7 / 1000 = 0.0167
    assert should_stop("PQ", val[:3], train_pos, alpha=0.01, strip=3)


class _Regression(Callback):
    """Records what the early stopper sees: E_va and E_tr of seed 0 at every epoch end."""

    order = 99

    def __init__(self):
        self.seen = []

    def on_epoch_end(self, run):
        stopper = technique(run, "early_stopping")
        self.seen.append(stopper._errors(run, 0))


def regression_data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3 * n, 6, generator=g)
    y = x[:, :1] * 2 - x[:, 1:2] + 0.3 * torch.randn(3 * n, 1, generator=g)
    parts = [Split(x[i * n:(i + 1) * n], y[i * n:(i + 1) * n]) for i in range(3)]
    return Data("reg", "regression", *parts, (6,), [], kind="tabular")


def test_train_rmse_is_the_rmse_of_the_training_batches_as_trained():
    data = regression_data()
    cfg = RunConfig(model="mlp", model_options={"hidden": [8]}, epochs=1, batch_size=16, metric="val_rmse",
                    techniques=[{"name": "sgd", "lr": 1e-30}])  # weights do not move: the epoch sees one model
    result = fit(cfg, data=data, progress=False)[0]
    model = result.model.eval()
    with torch.no_grad():
        pred = model(data.normalize(data.train.x))
    expected = (pred - data.train.y).pow(2).mean().sqrt().item()  # 64 rows = 4 full batches: every row once
    assert result.history[0]["train_rmse"] == pytest.approx(expected, rel=1e-5)


def test_gl_and_pq_use_the_rmse_on_both_splits_when_the_metric_is_rmse():
    data = regression_data()
    seen = _Regression()
    cfg = RunConfig(model="mlp", model_options={"hidden": [8]}, epochs=4, batch_size=16, metric="val_rmse",
                    techniques=[{"name": "adam", "lr": 1e-2}, {"name": "early_stopping", "criterion": "PQ", "alpha": 1e6}])
    result = fit(cfg, data=data, callbacks=(seen,), progress=False)[0]
    val, train = seen.seen[-1]
    assert val == [r["val_rmse"] for r in result.history]
    assert train == [r["train_rmse"] for r in result.history]  # not the training MSE (train_loss)
    assert all(abs(t - math.sqrt(r["train_loss"])) < 1e-4 for t, r in zip(train, result.history))


# ---- normalization surgery ---------------------------------------------------------------------
def model_of(cfg, data=DATA, seed=0):
    return build_run(cfg, [seed], data=data).model.single


def test_batchnorm_in_mlp_linear_without_bias_then_bn_then_activation_same_weights():
    mlp = dict(model_options={"hidden": [16, 8]})
    plain = model_of(config([], **mlp))
    bn = model_of(config([{"name": "batchnorm", "momentum": 0.2, "eps": 1e-3}], **mlp))
    assert [type(m) for m in bn] == [nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d,
                                     nn.ReLU, nn.Linear]
    assert bn[1].bias is None and bn[4].bias is None and bn[7].bias is not None
    assert (bn[2].num_features, bn[5].num_features) == (16, 8)
    assert bn[2].momentum == 0.2 and bn[2].eps == 1e-3
    # every other weight is the one the model without BN gets from the same seed
    for i, j in ((1, 1), (4, 3), (7, 5)):
        assert torch.equal(bn[i].weight, plain[j].weight)
    assert torch.equal(bn[7].bias, plain[5].bias)
    # in train mode the BN output is standardized over the batch
    captured = {}
    bn[2].register_forward_hook(lambda m, i, o: captured.setdefault("z", o.detach()))
    bn.train()(DATA.normalize(DATA.to_input(DATA.train.x[:32])))
    z = captured["z"]
    assert torch.allclose(z.mean(0), torch.zeros(16), atol=1e-5)
    assert torch.allclose(z.var(0, unbiased=False), torch.ones(16), atol=1e-2)


LAB_MLP = dict(model_options={"hidden": [16, 32, 24]})


def test_batchnorm_after_the_activation_skipping_the_first_layer_is_the_labs_placement():
    plain = model_of(config([], **LAB_MLP))
    bn = model_of(config([{"name": "batchnorm", "placement": "after", "skip_first": True}], **LAB_MLP))
    assert [type(m) for m in bn] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Linear,
                                     nn.ReLU, nn.BatchNorm1d, nn.Linear]
    assert all(m.bias is not None for m in bn if isinstance(m, nn.Linear))  # the activation separates bias and shift
    assert (bn[5].num_features, bn[8].num_features) == (32, 24)
    for i, j in ((1, 1), (3, 3), (6, 5), (9, 7)):  # the same weights and biases as without BN
        assert torch.equal(bn[i].weight, plain[j].weight) and torch.equal(bn[i].bias, plain[j].bias)
    # the forward pass by hand, train mode: BN(h) = (h - mean_batch) / sqrt(var_batch + eps) * gamma + beta
    with torch.no_grad():
        bn[5].weight.uniform_(0.5, 1.5), bn[5].bias.uniform_(-0.5, 0.5)
    x = DATA.normalize(DATA.to_input(DATA.train.x[:32]))
    norm = lambda h, m: (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + m.eps) * m.weight + m.bias  # noqa: E731
    lin = lambda h, m: h @ m.weight.T + m.bias  # noqa: E731
    h = torch.relu(lin(x.flatten(1), bn[1]))
    h = norm(torch.relu(lin(h, bn[3])), bn[5])
    h = norm(torch.relu(lin(h, bn[6])), bn[8])
    assert torch.allclose(bn.train()(x), lin(h, bn[9]), atol=1e-5)


def test_batchnorm_placements_before_and_skip_first_and_with_dropout():
    before_skip = model_of(config([{"name": "batchnorm", "skip_first": True}], **LAB_MLP))
    assert [type(m) for m in before_skip] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU,
                                              nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert before_skip[1].bias is not None and before_skip[3].bias is None and before_skip[6].bias is None
    after = model_of(config([{"name": "batchnorm", "placement": "after"}], **LAB_MLP))
    assert [type(m) for m in after][:4] == [nn.Flatten, nn.Linear, nn.ReLU, nn.BatchNorm1d]
    # dropout after the BN that follows an activation, whichever technique comes first
    bn = {"name": "batchnorm", "placement": "after", "skip_first": True}
    for techniques in ([bn, {"name": "dropout", "p": 0.2}], [{"name": "dropout", "p": 0.2}, bn]):
        kinds = [type(m) for m in model_of(config(techniques, **LAB_MLP))]
        assert kinds == [nn.Flatten, nn.Linear, nn.ReLU, SeedDropout, nn.Linear, nn.ReLU, nn.BatchNorm1d, SeedDropout,
                         nn.Linear, nn.ReLU, nn.BatchNorm1d, SeedDropout, nn.Linear], techniques
    conv = model_of(config([{"name": "batchnorm", "placement": "after"}], model="convnet", model_options={"channels": [4, 8]}))
    assert [type(m) for m in conv][:4] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d, nn.MaxPool2d]
    with pytest.raises(ReglabError, match="batchnorm"):
        model_of(config([{"name": "batchnorm", "skip_first": True}], model_options={"hidden": []}))


def test_batchnorm_in_convnet_on_images():
    conv = dict(model="convnet", model_options={"channels": [4, 8]})
    plain = model_of(config([], **conv))
    bn = model_of(config([{"name": "batchnorm"}], **conv))
    assert [type(m) for m in bn] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d, nn.BatchNorm2d,
                                     nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear]
    assert bn[0].bias is None and bn[4].bias is None
    assert torch.equal(bn[0].weight, plain[0].weight) and torch.equal(bn[4].weight, plain[3].weight)
    assert torch.equal(bn[9].weight, plain[7].weight)


def test_layernorm_and_groupnorm_insert_the_right_modules():
    ln = model_of(config([{"name": "layernorm"}], model_options={"hidden": [16, 8]}))
    assert [type(m) for m in ln] == [nn.Flatten, nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear, nn.LayerNorm, nn.ReLU,
                                     nn.Linear]
    assert ln[1].bias is not None and ln[2].normalized_shape == (16,) and ln[5].normalized_shape == (8,)
    conv = dict(model="convnet", model_options={"channels": [12, 16]})
    ln_conv = model_of(config([{"name": "layernorm"}], **conv))
    gns = [m for m in ln_conv if isinstance(m, nn.GroupNorm)]
    assert [(g.num_groups, g.num_channels) for g in gns] == [(1, 12), (1, 16)]  # layer norm over (C, H, W)
    gn = model_of(config([{"name": "groupnorm", "groups": 8}], **conv))
    assert [type(m) for m in gn][:3] == [nn.Conv2d, nn.GroupNorm, nn.ReLU]
    # 8 groups, reduced to a divisor of the channel count: gcd(8, 12) = 4, gcd(8, 16) = 8
    assert [(g.num_groups, g.num_channels) for g in gn if isinstance(g, nn.GroupNorm)] == [(4, 12), (8, 16)]
    gn_mlp = model_of(config([{"name": "groupnorm"}]))
    assert [type(m) for m in gn_mlp] == [nn.Flatten, nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear]


def test_no_batchnorm_removes_every_bn_from_a_resnet():
    res = dict(model="resnet", model_options={"width": 4, "depth": 1})
    with_bn = model_of(config([], **res))
    without = model_of(config([{"name": "no_batchnorm"}], **res))
    is_bn = lambda m: isinstance(m, nn.modules.batchnorm._BatchNorm)  # noqa: E731
    n_bn = sum(map(is_bn, with_bn.modules()))
    assert n_bn >= 5  # stem + two per residual block
    assert not any(map(is_bn, without.modules()))
    assert sum(isinstance(m, nn.Identity) for m in without.modules()) >= n_bn
    convs = lambda m: [c.weight for c in m.modules() if isinstance(c, nn.Conv2d)]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(convs(with_bn), convs(without)))
    assert without.eval()(torch.rand(2, 3, 8, 8)).shape == (2, 4)


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_normalization_composes_with_dropout_in_either_order(norm):
    first = model_of(config([{"name": norm}, {"name": "dropout", "p": 0.1}]))
    second = model_of(config([{"name": "dropout", "p": 0.1}, {"name": norm}]))
    assert [type(m) for m in first.modules()] == [type(m) for m in second.modules()]


# ---- dropout -----------------------------------------------------------------------------------
def flat_leaves(model):
    return [m for m in model.modules() if not list(m.children())]


def test_hash_uniform_is_uniform_and_depends_on_key_and_call():
    u = hash_uniform(torch.tensor(7), torch.tensor(1), torch.Size([200, 500]), torch.device("cpu"))
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert (hist - 0.1).abs().max() < 0.005
    assert torch.equal(u, hash_uniform(torch.tensor(7), torch.tensor(1), torch.Size([200, 500]), torch.device("cpu")))
    for key, call in ((8, 1), (7, 2)):
        other = hash_uniform(torch.tensor(key), torch.tensor(call), torch.Size([200, 500]), torch.device("cpu"))
        assert abs(torch.corrcoef(torch.stack([u.flatten(), other.flatten()]))[0, 1].item()) < 0.01


def test_hash_uniform_never_rounds_up_to_one_and_hash_normal_stays_finite():
    # key 7, call 0: the hash at position 667387 is within 128 of 2**32, which a float32 rounds to 1.0
    # (Box-Muller then drew an infinite noise value: engression's training loss became NaN)
    from reglab.models.seeded import hash_normal

    key, shape, cpu = torch.tensor(7), torch.Size([667388]), torch.device("cpu")
    u = hash_uniform(key, torch.tensor(0), shape, cpu)
    assert u[-1] > 1 - 2**-23 and u.max() < 1  # the top value, kept below 1
    assert torch.isfinite(hash_normal(key, torch.tensor(0), shape, cpu)).all()  # u1 is call 2 * 0


def test_dropout_sits_after_every_activation_and_acts_only_in_training():
    cfg = config([{"name": "dropout", "p": 0.25}], model_options={"hidden": [64, 32]})
    model = model_of(cfg)
    leaves = flat_leaves(model)
    kinds = [type(m) for m in leaves]
    assert kinds == [nn.Flatten, nn.Linear, nn.ReLU, SeedDropout, nn.Linear, nn.ReLU, SeedDropout, nn.Linear]
    assert all(m.p == 0.25 for m in leaves if isinstance(m, SeedDropout))
    plain = model_of(config([], model_options={"hidden": [64, 32]}))
    x = DATA.normalize(DATA.to_input(DATA.train.x))
    model.eval()
    assert torch.equal(model(x), model(x)) and torch.allclose(model(x), plain.eval()(x))
    # train mode: about a quarter of the positive activations are zeroed, survivors scaled by 1 / 0.75
    seen = {}
    leaves[3].register_forward_hook(lambda m, i, o: seen.update(inp=i[0].detach(), out=o.detach()))
    model.train()
    assert not torch.equal(model(x), model(x))
    inp, out = seen["inp"], seen["out"]
    alive = inp > 0
    dropped = (out[alive] == 0).float().mean().item()
    assert abs(dropped - 0.25) < 0.04, dropped
    kept = out[alive] != 0
    assert torch.allclose(out[alive][kept], inp[alive][kept] / 0.75)


def test_dropout_masks_differ_between_seeds_of_a_group():
    run = build_run(config([{"name": "dropout", "p": 0.5}]), [0, 1], data=DATA)
    x = DATA.normalize(DATA.to_input(DATA.train.x[:16]))
    run.model.eval()
    ev = run.model(x, shared=True)
    assert torch.equal(ev, run.model(x, shared=True))
    run.model.train()
    assert not torch.equal(run.model(x, shared=True), run.model(x, shared=True))


# ---- label smoothing ---------------------------------------------------------------------------
def random_batch(size=2, batch=12, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(size, batch, classes, generator=g) * 3, torch.randint(classes, (size, batch), generator=g)


def test_label_smoothing_criterion_equals_torch_cross_entropy():
    eps = 0.2
    run = start(build_run(config([{"name": "label_smoothing", "eps": eps}]), [0, 1], data=DATA))
    assert run.loss.label_smoothing == eps
    out, y = random_batch()
    got = criterion(run, out, y)
    for s in range(2):
        assert got[s].item() == pytest.approx(F.cross_entropy(out[s], y[s], label_smoothing=eps).item(), rel=1e-6)
        # the definition: (1 - eps) * CE(one-hot) + eps * mean over the K classes of -log p
        logp = out[s].log_softmax(-1)
        by_hand = ((1 - eps) * -logp.gather(1, y[s, :, None]).squeeze(1) - eps * logp.mean(-1)).mean()
        assert got[s].item() == pytest.approx(by_hand.item(), rel=1e-6)
    # evaluation losses stay plain cross-entropy
    plain = criterion(run, out, y, training=False)
    assert plain[0].item() == pytest.approx(F.cross_entropy(out[0], y[0]).item(), rel=1e-6)
    # soft (mixup) targets are smoothed too, as in torch
    soft = torch.softmax(torch.randn(2, 12, 4), -1)
    got = criterion(run, out, soft)
    assert got[1].item() == pytest.approx(F.cross_entropy(out[1], soft[1], label_smoothing=eps).item(), rel=1e-6)


def test_label_smoothing_needs_classification():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randn(40, generator=g)
    reg = Data("reg", "regression", Split(x, y), Split(x, y), Split(x, y), (5,))
    with pytest.raises(ReglabError, match="label_smoothing"):
        fit(config([{"name": "label_smoothing"}], epochs=1, batch_size=8), data=reg, progress=False)


# ---- class balancing ---------------------------------------------------------------------------
def imbalanced_data():
    y = torch.tensor([0] * 12 + [1] * 36 + [2] * 24 + [3] * 24)
    x = torch.randn(len(y), 6, generator=torch.Generator().manual_seed(0))
    return Data("imb", "classification", Split(x, y), Split(x[:16], y[:16]), Split(x[:16], y[:16]), (6,),
                ["a", "b", "c", "d"])


def test_class_weights_are_n_over_k_nc_and_match_torch_weighted_ce():
    data = imbalanced_data()
    # N = 96, K = 4: 96 / (4 * 12) = 2, 96 / (4 * 36) = 2/3, 96 / (4 * 24) = 1, 1
    expected = torch.tensor([2.0, 2 / 3, 1.0, 1.0])
    assert torch.allclose(class_weights(data.train.y, 4), expected)
    assert torch.allclose(class_weights(torch.tensor([0, 0, 1]), 3), torch.tensor([0.5, 1.0, 0.0]))  # K = 3; absent: 0
    run = start(build_run(config([{"name": "class_balance"}]), [0, 1], data=data))
    assert torch.allclose(run.loss.class_weight, expected)
    out, y = random_batch()
    got = criterion(run, out, y)
    for s in range(2):
        torch_mean = F.cross_entropy(out[s], y[s], weight=expected)  # sum_i w_yi CE_i / sum_i w_yi
        w = expected[y[s]]
        by_hand = (w * F.cross_entropy(out[s], y[s], reduction="none")).sum() / w.sum()
        assert got[s].item() == pytest.approx(torch_mean.item(), rel=1e-6)
        assert got[s].item() == pytest.approx(by_hand.item(), rel=1e-6)
    # with label smoothing too, still torch's weighted mean
    run.loss.label_smoothing = 0.1
    got = criterion(run, out, y)
    ref = F.cross_entropy(out[0], y[0], weight=expected, label_smoothing=0.1)
    assert got[0].item() == pytest.approx(ref.item(), rel=1e-6)
    # and with soft targets (torch divides by the batch size there)
    soft = torch.softmax(torch.randn(2, 12, 4), -1)
    got = criterion(run, out, soft)
    ref = F.cross_entropy(out[1], soft[1], weight=expected, label_smoothing=0.1)
    assert got[1].item() == pytest.approx(ref.item(), rel=1e-6)


def test_pos_weight_is_n_neg_over_n_pos_for_multilabel():
    n = 40
    y = torch.zeros(n, 3)
    y[:10, 0] = 1  # 10 positives: 30 / 10 = 3
    y[:20, 1] = 1  # 20 positives: 20 / 20 = 1;   label 2 has none: weight 1
    y[35:, 1] = 1  # 25 positives: 15 / 25 = 0.6
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(1))
    data = Data("ml", "multilabel", Split(x, y), Split(x, y), Split(x, y), (5,), ["a", "b", "c"])
    expected = torch.tensor([3.0, 0.6, 1.0])
    assert torch.allclose(pos_weights(y), expected)
    run = start(build_run(config([{"name": "class_balance"}]), [0], data=data))
    assert torch.allclose(run.loss.pos_weight, expected)
    out = torch.randn(1, n, 3)
    ref = F.binary_cross_entropy_with_logits(out[0], y, pos_weight=expected)
    assert criterion(run, out, y[None]).item() == pytest.approx(ref.item(), rel=1e-6)


# ---- trajectory --------------------------------------------------------------------------------
def test_trajectory_records_one_norm_per_iteration_per_seed():
    direct = {"grad": [], "param": []}

    class Direct(Callback):
        order = 95  # after trajectory (90): the same moment of the step

        def after_backward(self, run):
            direct["grad"].append(seed_norms(run, lambda p: p.grad))

        def after_step(self, run):
            direct["param"].append(seed_norms(run, lambda p: p))

        def on_epoch_end(self, run):  # after the last epoch: the final weights
            direct["final"] = [math.sqrt(sum(p.detach().pow(2).sum().item() for p in run.model.member(s).parameters()))
                               for s in range(run.size)]

    def seed_norms(run, get):
        """Per-seed L2 norm over all parameters (stacked (S, ...) when S > 1), computed here directly."""
        tensors = [get(p) if run.size > 1 else get(p).unsqueeze(0) for p in run.model.parameters()]
        return [math.sqrt(sum(t[s].double().pow(2).sum().item() for t in tensors)) for s in range(run.size)]

    cfg = config([{"name": "sgd", "lr": 0.1}, {"name": "trajectory"}], epochs=3)
    results = fit(cfg, seeds=[0, 1], data=DATA, callbacks=(Direct(),), progress=False)
    steps = 3 * (64 // 32)
    for s, r in enumerate(results):
        assert set(r.trajectory) == {"param_norm", "grad_norm"}
        assert len(r.trajectory["param_norm"]) == len(r.trajectory["grad_norm"]) == steps
        assert r.trajectory["grad_norm"] == pytest.approx([g[s] for g in direct["grad"]], rel=1e-5)
        assert r.trajectory["param_norm"] == pytest.approx([p[s] for p in direct["param"]], rel=1e-5)
        assert r.trajectory["param_norm"][-1] == pytest.approx(direct["final"][s], rel=1e-5)
        assert all(g > 0 for g in r.trajectory["grad_norm"])
    assert results[0].trajectory != results[1].trajectory


# ---- initialization schemes ---------------------------------------------------------------------
WIDE = dict(model_options={"hidden": [512, 256]})


def linears(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_kaiming_init_draws_normal_weights_with_variance_two_over_fan_in_and_zero_biases():
    model = model_of(config([{"name": "init", "scheme": "kaiming"}], **WIDE))
    for layer in linears(model):
        fan_in = layer.in_features
        w = layer.weight.detach().flatten().double()
        assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
        assert abs(w.mean().item()) < 4 * math.sqrt(2 / fan_in) / math.sqrt(len(w))
        if len(w) > 10000:  # normal, not uniform: the standardized weights pass a KS test against N(0, 1)
            assert stats.kstest((w / math.sqrt(2 / fan_in)).numpy(), "norm").pvalue > 1e-3
        assert not layer.bias.any()


def test_xavier_init_is_uniform_on_plus_minus_sqrt_six_over_fan_in_plus_fan_out():
    model = model_of(config([{"name": "init", "scheme": "xavier"}], **WIDE))
    for layer in linears(model):
        a = math.sqrt(6 / (layer.in_features + layer.out_features))
        w = layer.weight.detach().double()
        assert w.abs().max().item() <= a and w.abs().max().item() > 0.97 * a
        assert w.std().item() == pytest.approx(a / math.sqrt(3), rel=0.03)  # U[-a, a] has sd a / sqrt(3)
        assert not layer.bias.any()


def test_init_scale_multiplies_the_weights_and_default_keeps_pytorchs():
    plain = model_of(config([], **WIDE))
    default = model_of(config([{"name": "init", "scheme": "default"}], **WIDE))
    big = model_of(config([{"name": "init", "scheme": "default", "scale": 10.0}], **WIDE))
    kaiming = model_of(config([{"name": "init", "scheme": "kaiming"}], **WIDE))
    kaiming4 = model_of(config([{"name": "init", "scheme": "kaiming", "scale": 4.0}], **WIDE))
    for p, d, b, k, k4 in zip(*map(linears, (plain, default, big, kaiming, kaiming4))):
        assert torch.equal(p.weight, d.weight) and torch.equal(p.bias, d.bias)
        assert torch.allclose(b.weight, 10 * p.weight) and torch.equal(b.bias, p.bias)
        assert torch.allclose(k4.weight, 4 * k.weight)


def test_init_is_per_seed_and_the_same_alone_or_stacked():
    cfg = config([{"name": "init", "scheme": "kaiming"}], **WIDE)
    stacked = build_run(cfg, [0, 1], data=DATA).model
    alone = build_run(cfg, [1], data=DATA).model
    w = lambda m: linears(m)[0].weight  # noqa: E731
    assert torch.equal(w(stacked.member(1)), w(alone.member(0)))
    assert not torch.equal(w(stacked.member(0)), w(stacked.member(1)))
    with pytest.raises(ReglabError, match="initialization"):  # one scheme per configuration
        build_run(config([{"name": "init"}, {"name": "init", "scheme": "xavier"}]), [0], data=DATA)
