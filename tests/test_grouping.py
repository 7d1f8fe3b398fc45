"""Seeds of one configuration: stacked unless a technique or the model prevents it (a deterministic
rule), one by one otherwise; each seed's random streams are its own, so a seed in a group equals the
seed alone and adding a technique never changes another stream."""
import pytest
import torch

from reglab.engine.grouping import blockers, decide, fit_seeds

from conftest import image_data, mlp_config

DATA = image_data(n_train=128, n_val=32, n_test=32)


config = mlp_config


def test_techniques_that_cannot_stack_fall_back_and_say_why():
    assert blockers(config([{"name": "adam"}, {"name": "deep_supervision"}]))[0].startswith("deep_supervision: ACT halts")
    assert blockers(config([{"name": "adam"}, {"name": "plateau"}])) == []  # per-seed learning rates
    cfg = config([{"name": "adam"}], dataset="digits", vary_split=True)  # each seed its own split
    d = decide(cfg, [0, 1, 2], None)
    assert not d.grouped and "vary_split" in d.reason
    decisions = []
    results = fit_seeds(cfg, [0, 1], grouping="group", on_decision=decisions.append)
    assert not decisions[0].grouped and [r.seed for r in results] == [0, 1]


def test_the_decision_is_a_rule_not_a_timing():
    cfg = config([{"name": "adam"}])
    d = decide(cfg, [0, 1, 2, 3], DATA)
    assert d.grouped and "4 seeds stacked" in d.reason
    assert all(decide(cfg, [0, 1, 2, 3], DATA) == d for _ in range(3))  # the same answer every time
    assert decide(cfg, [0], DATA).grouped is False
    bf16 = config([{"name": "adam"}], amp="bf16", model_options={"hidden": [2048, 512]})
    with pytest.warns(UserWarning):  # this CPU may emulate bf16
        big = decide(bf16, [0, 1], DATA)
    assert not big.grouped and "bf16 on the CPU" in big.reason
    # the trajectory recorder's hooks run in the probe's step before on_fit_start: it stacks too
    assert decide(config([{"name": "adam"}, {"name": "trajectory"}]), [0, 1], DATA).grouped


@pytest.mark.parametrize("techniques,options", [
    ([{"name": "adamw", "lr": 3e-3}, {"name": "dropout", "p": 0.2}, {"name": "crop", "padding": 2}, {"name": "flip"},
      {"name": "cutmix"}], {}),
    ([{"name": "sgd", "lr": 0.05}, {"name": "batchnorm"}, {"name": "mixup"}], {}),
    ([{"name": "adam", "lr": 3e-3}, {"name": "affine", "degrees": 10.0}], {"hidden": [16], "dropout": 0.3}),  # model-option dropout
])
def test_grouped_and_one_by_one_give_the_same_metrics(techniques, options, tmp_path):
    cfg = config(techniques, **({"model_options": options} if options else {}))
    grouped = fit_seeds(cfg, [0, 1, 2], data=DATA, grouping="group", run_dir=tmp_path / "g")
    single = fit_seeds(cfg, [0, 1, 2], data=DATA, grouping="single", run_dir=tmp_path / "s")
    assert (tmp_path / "g" / "seeds-0-1-2" / "last.pt").exists() and (tmp_path / "s" / "seed-2" / "last.pt").exists()
    for g, s in zip(grouped, single):
        assert g.seed == s.seed
        for key in ("val_loss", "test_loss", "test_accuracy"):
            assert g.metrics[key] == pytest.approx(s.metrics[key], rel=1e-4, abs=1e-5), key
    # different seeds really differ (own initialization, data order and augmentation)
    assert len({round(r.metrics["val_loss"], 6) for r in grouped}) == 3


def test_dropout_masks_differ_between_the_seeds_of_a_group():
    """Each seed's dropout layers have their own keys: same weights, different masks; reproducible."""
    from reglab.engine.run import build_run

    run = build_run(config([{"name": "dropout", "p": 0.5}]), [0, 1], DATA)
    run.model.train()
    x = DATA.normalize(DATA.to_input(DATA.train.x[:8]))
    with torch.no_grad():  # both seeds get the same weights: differences come from the masks alone
        for name, p in run.model.stacked().items():
            p[1].copy_(p[0])
    out = run.model(x, shared=True)
    assert out.shape[0] == 2 and not torch.allclose(out[0], out[1])
    run2 = build_run(config([{"name": "dropout", "p": 0.5}]), [0, 1], DATA)
    with torch.no_grad():
        for name, p in run2.model.stacked().items():
            p[1].copy_(p[0])
    run2.model.train()
    assert torch.equal(run2.model(x, shared=True), out)  # reproducible


def test_a_finished_group_is_read_back_not_retrained(tmp_path):
    cfg = config([{"name": "adam"}])
    first = fit_seeds(cfg, [0, 1], data=DATA, grouping="group", run_dir=tmp_path)
    stamp = (tmp_path / "seeds-0-1" / "last.pt").stat().st_mtime_ns
    again = fit_seeds(cfg, [0, 1], data=DATA, grouping="auto", run_dir=tmp_path)  # resumes the group
    assert (tmp_path / "seeds-0-1" / "last.pt").stat().st_mtime_ns == stamp
    assert [r.metrics["test_loss"] for r in again] == [r.metrics["test_loss"] for r in first]
    assert all(r.metrics["epochs"] == 2 for r in again)


def test_adding_augmentation_or_dropout_leaves_the_data_order_unchanged():
    """Each random stream belongs to one seed and one purpose: the batches a seed sees are the same
    with and without crop, mixup or dropout."""
    from reglab.engine.callbacks import Callback

    class Rows(Callback):
        def __init__(self):
            self.rows = []

        def after_step(self, run):
            self.rows.append(run.batch_rows.clone())

    orders = {}
    for name, extra in [("plain", []), ("crop", [{"name": "crop", "padding": 2}]), ("mixup", [{"name": "mixup"}]),
                        ("dropout", [{"name": "dropout", "p": 0.3}]), ("all", [{"name": "flip"}, {"name": "cutmix"},
                                                                               {"name": "dropout", "p": 0.1}])]:
        rows = Rows()
        fit_seeds(config([{"name": "adam"}, *extra], epochs=3), [0, 1], data=DATA, grouping="group", callbacks=(rows,))
        orders[name] = torch.stack(rows.rows)
    for name, order in orders.items():
        assert torch.equal(order, orders["plain"]), name
    assert not torch.equal(orders["plain"][:, 0], orders["plain"][:, 1])  # the two seeds' orders differ


def test_model_option_dropout_masks_are_per_seed_and_reproducible():
    from reglab.engine.run import build_run

    cfg = config([{"name": "adam"}], model_options={"hidden": [32], "dropout": 0.5})
    run = build_run(cfg, [0, 1], DATA)
    assert not any(isinstance(m, torch.nn.Dropout) for m in run.model.template.modules())
    run.model.train()
    x = DATA.batch(DATA.train, torch.arange(8))
    with torch.no_grad():
        for p in run.model.stacked().values():
            p[1].copy_(p[0])
    out = run.model(x, shared=True)
    assert not torch.allclose(out[0], out[1])  # same weights, different masks


@pytest.mark.parametrize("techniques,options", [
    ([{"name": "sgd", "lr": 0.05}], {}),
    ([{"name": "adamw"}, {"name": "batchnorm"}, {"name": "dropout", "p": 0.3}, {"name": "crop", "padding": 2}], {}),
    ([{"name": "adam"}, {"name": "layernorm"}], {"activation": "gelu", "dropout": 0.2}),
])
def test_the_direct_stacked_path_equals_vmap(techniques, options):
    """An MLP's stacked seeds run layer by layer on whole stacks (no vmap): training and evaluation give
    vmap's numbers to float rounding, running statistics and dropout counters included."""
    from reglab.engine.loop import evaluate, train_epoch
    from reglab.engine.run import build_run

    cfg = config(techniques, **({"model_options": {"hidden": [16, 12], **options}}))
    runs = []
    for direct in (True, False):
        run = build_run(cfg, [0, 1, 2], DATA)
        assert run.model._direct is not None
        if not direct:
            run.model._direct = None  # the vmap path
        for hook in run.hooks["on_fit_start"]:
            hook(run)
        train_epoch(run, batches=6)
        runs.append((run, evaluate(run, DATA.val, "val")))
    (a, metrics_a), (b, metrics_b) = runs
    for name, value in a.model.live().items():
        assert torch.allclose(value.float(), b.model.live()[name].float(), atol=1e-5), name
    for ma, mb in zip(metrics_a, metrics_b):
        assert ma["val_loss"] == pytest.approx(mb["val_loss"], rel=1e-5)


def test_models_outside_the_direct_path_run_under_vmap():
    from reglab.engine.run import build_run

    run = build_run(config([{"name": "adam"}], model="convnet", model_options={}), [0, 1], DATA)
    assert run.model._direct is None
    out = run.model(DATA.batch(DATA.val, torch.arange(4)), shared=True)
    assert out.shape == (2, 4, 4)
