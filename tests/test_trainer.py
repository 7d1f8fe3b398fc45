"""The training loop: determinism, resume equals uninterrupted, seeds in a group equal seeds alone."""
import math

import pytest
import torch

from reglab.config import RunConfig
from reglab.engine.callbacks import Callback
from reglab.engine.loop import fit

from conftest import image_data


def config(**kw):
    base = dict(dataset="mnist1d", model="mlp", model_options={"hidden": [32, 32]}, epochs=4, batch_size=128,
                progress=None)
    base.pop("progress")
    base.update(kw)
    return RunConfig(**base)


def timeless(history):
    """A history without its wall-clock fields (the only thing allowed to differ between runs)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def metrics_equal(a, b, tol=0.0):
    for key, value in a.metrics.items():
        if "seconds" in key or key == "group_size":
            continue
        assert math.isclose(value, b.metrics[key], rel_tol=tol, abs_tol=tol), (key, value, b.metrics[key])


def test_default_run_learns_mnist1d():
    result = fit(config(epochs=8, batch_size=64, model_options={"hidden": [128, 128]}), progress=False)[0]
    assert result.metrics["test_accuracy"] > 0.35  # chance is 0.10
    assert len(result.history) == 8
    assert all("test_loss" not in r for r in result.history), "the test split must not be evaluated per epoch"
    assert result.metrics["best_epoch"] == max(range(8), key=lambda e: result.history[e]["val_accuracy"]) + 1


def test_same_seed_same_run_different_seed_different_run():
    cfg = config(techniques=[{"name": "dropout", "p": 0.2}, {"name": "crop", "padding": 2}])
    a, b = fit(cfg, progress=False)[0], fit(cfg, progress=False)[0]
    assert timeless(a.history) == timeless(b.history)
    c = fit(cfg.model_copy(update={"seed": 1}), progress=False)[0]
    assert timeless(c.history) != timeless(a.history)


def test_metrics_are_those_of_the_best_validation_epoch_and_the_last_epoch_is_kept_beside():
    """A run that overfits (60% random training labels) peaks on validation before its last epoch:
    its reported validation and test metrics are those of the peak epoch's weights, which the result's
    model holds; the last epoch's are reported as last_*."""
    data = image_data(n_train=96, n_val=64, n_test=64, noise=0.6)
    cfg = RunConfig(model="mlp", model_options={"hidden": [64]}, epochs=25, batch_size=16, device="cpu",
                    techniques=[{"name": "adam", "lr": 1e-2}])
    [result] = fit(cfg, data=data, progress=False)
    h, m = result.history, result.metrics
    best = max(range(len(h)), key=lambda e: (h[e]["val_accuracy"], -e)) + 1  # the first epoch at the peak
    assert best < len(h), "the validation accuracy must peak before the last epoch for this test"
    assert m["best_epoch"] == best and m["val_accuracy"] == pytest.approx(h[best - 1]["val_accuracy"], abs=1e-6)
    assert m["val_accuracy"] == m["best_val_accuracy"]
    assert m["last_val_accuracy"] == pytest.approx(h[-1]["val_accuracy"], abs=1e-6) and m["last_val_accuracy"] < m["val_accuracy"]
    with torch.no_grad():  # the test metric is that of the model the result holds: the best epoch's
        logits = result.model.eval()(data.batch(data.test, torch.arange(len(data.test))))
    assert m["test_accuracy"] == pytest.approx((logits.argmax(-1) == data.test.y).float().mean().item(), abs=1e-6)


def test_a_non_finite_training_loss_stops_the_seed_and_marks_it_diverged():
    cfg = config(techniques=[{"name": "sgd", "lr": 1e12, "momentum": 0.0}], epochs=5)
    with pytest.warns(UserWarning, match="diverged"):
        results = fit(cfg, [0, 1], progress=False)
    for r in results:
        assert r.metrics["diverged"] == 1 and len(r.history) < 5
        assert not math.isfinite(r.history[-1]["train_loss"])
    ok = fit(config(), progress=False)[0]
    assert ok.metrics["diverged"] == 0


def test_two_techniques_of_one_exclusive_kind_are_an_error_naming_both():
    from reglab.errors import ReglabError

    for pair, words in [(("sgd", "adam"), "both optimizers"), (("cosine", "onecycle"), "both schedules"),
                        (("batchnorm", "layernorm"), "both normalizations"), (("dropout", "dropout"), "the same technique twice")]:
        cfg = config(techniques=[{"name": n} for n in pair])
        with pytest.raises(ReglabError, match=f"'{pair[0]}' and '{pair[1]}': {words}"):
            fit(cfg, progress=False)
    fit(config(techniques=[{"name": "cosine"}, {"name": "warmup", "epochs": 1}], epochs=2), progress=False)  # a modifier


class Interrupt(Exception):
    pass


class CrashAt(Callback):
    """A callback that kills the run during epoch ``epoch``'s end (before its checkpoint)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, run):
        if run.epoch == self.epoch:
            raise Interrupt


@pytest.mark.parametrize("techniques", [
    [{"name": "sgd", "lr": 0.05}, {"name": "dropout", "p": 0.3}, {"name": "crop", "padding": 3},
     {"name": "mixup", "alpha": 0.4}, {"name": "onecycle"}, {"name": "trajectory"}],
    [{"name": "adam", "lr": 3e-3}, {"name": "batchnorm"}, {"name": "plateau", "patience": 0, "factor": 0.5},
     {"name": "early_stopping", "patience": 2}, {"name": "warmup", "epochs": 1}],
])
def test_resume_equals_uninterrupted(tmp_path, techniques):
    cfg = config(epochs=6, techniques=techniques)
    whole = fit(cfg, run_dir=tmp_path / "whole", progress=False)[0]
    with pytest.raises(Interrupt):
        fit(cfg, run_dir=tmp_path / "cut", callbacks=(CrashAt(3),), progress=False)
    resumed = fit(cfg, run_dir=tmp_path / "cut", resume=True, progress=False)[0]
    assert timeless(resumed.history) == timeless(whole.history)  # same epochs, same numbers, same stopping epoch
    assert resumed.trajectory == whole.trajectory
    metrics_equal(resumed, whole)


def test_resume_of_a_finished_run_recomputes_nothing(tmp_path):
    cfg = config(epochs=2)
    first = fit(cfg, run_dir=tmp_path, progress=False)[0]
    again = fit(cfg, run_dir=tmp_path, resume=True, progress=False)[0]
    assert timeless(again.history) == timeless(first.history)
    metrics_equal(again, first)


def test_resume_refuses_another_configuration(tmp_path):
    from reglab.errors import ReglabError

    fit(config(epochs=1), run_dir=tmp_path, progress=False)
    with pytest.raises(ReglabError, match="another configuration"):
        fit(config(epochs=1, batch_size=64), run_dir=tmp_path, resume=True, progress=False)


@pytest.mark.parametrize("techniques", [
    [{"name": "sgd", "lr": 0.05}],
    [{"name": "adamw", "lr": 2e-3}, {"name": "batchnorm"}, {"name": "crop", "padding": 1}, {"name": "flip"},
     {"name": "mixup"}, {"name": "label_smoothing"}, {"name": "max_norm", "c": 1.0}, {"name": "l1", "lam": 1e-5},
     {"name": "cosine"}, {"name": "early_stopping", "patience": 1}],
])
def test_seed_in_group_equals_seed_alone(techniques):
    data = image_data()
    cfg = RunConfig(model="mlp", model_options={"hidden": [32]}, epochs=5, batch_size=32, techniques=techniques)
    group = fit(cfg, seeds=[3, 7, 11], data=data, progress=False)
    alone = fit(cfg, seeds=[7], data=data, progress=False)[0]
    assert group[1].seed == 7 and group[1].config["seed"] == 7  # each result's config names its own seed
    assert len(group[1].history) == len(alone.history)
    for rg, ra in zip(group[1].history, alone.history):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert rg[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5), key
    metrics_equal(group[1], alone, tol=1e-4)
    assert group[0].history != group[1].history  # seeds differ from each other


def test_bad_seeds_and_metric():
    from reglab.errors import ReglabError

    with pytest.raises(ReglabError, match="distinct"):
        fit(config(epochs=1), seeds=[1, 1], progress=False)
    with pytest.raises(ReglabError, match="not recorded"):
        fit(config(epochs=1, metric="val_f1"), progress=False)


def test_channels_last_feeds_channels_last_batches_and_changes_nothing_else():
    data = image_data()
    seen = []
    cfg = lambda cl: RunConfig(model="convnet", epochs=2, batch_size=32, channels_last=cl,  # noqa: E731
                               techniques=[{"name": "sgd", "lr": 0.05}])

    class Probe(Callback):
        def on_fit_start(self, run):
            run.model.single[0].register_forward_pre_hook(
                lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))

    on = fit(cfg("on"), data=data, callbacks=(Probe(),), progress=False)[0]
    assert seen and all(seen)
    seen.clear()
    off = fit(cfg("off"), data=data, callbacks=(Probe(),), progress=False)[0]
    assert not any(seen)
    for key in ("val_loss", "test_loss"):
        assert on.metrics[key] == pytest.approx(off.metrics[key], rel=1e-4)


@pytest.mark.parametrize("seeds", [[0], [0, 1]])
def test_amp_bf16_runs_matmuls_in_bf16_on_the_cpu_and_auto_does_not(seeds):
    """amp='bf16' autocasts training and evaluation on any device (the CPU too); 'auto' only on
    CUDA, so a CPU run stays float32. bf16 rounding changes the losses a little, not the learning.
    (Stacked seeds: under vmap a Linear's bias add promotes the bf16 product back to float32, so
    the probe looks at the first layer's product only for one seed; the losses show it for both.)"""
    data = image_data()
    dtypes = []

    class Probe(Callback):
        def on_fit_start(self, run):
            if len(seeds) == 1:
                first = next(m for m in run.model.single.modules() if isinstance(m, torch.nn.Linear))
                first.register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))

    cfg = lambda amp: RunConfig(model="mlp", model_options={"hidden": [32]}, epochs=3, batch_size=32, amp=amp,  # noqa: E731
                                device="cpu", techniques=[{"name": "sgd", "lr": 0.01}])
    bf16 = fit(cfg("bf16"), seeds=seeds, data=data, callbacks=(Probe(),), progress=False)
    assert set(dtypes) == ({torch.bfloat16} if len(seeds) == 1 else set())
    dtypes.clear()
    fp32 = fit(cfg("auto"), seeds=seeds, data=data, callbacks=(Probe(),), progress=False)
    assert set(dtypes) == ({torch.float32} if len(seeds) == 1 else set())
    for a, b in zip(bf16, fp32):
        assert a.metrics["val_loss"] != b.metrics["val_loss"]  # bf16 really rounded something
        assert a.metrics["val_loss"] == pytest.approx(b.metrics["val_loss"], rel=0.05, abs=0.02)
