"""Label-noise wrappers: noisy_labels(alpha) (Rolnick et al. 2017), rand_y and rand_x (Zhang et al.
2017, Arpit et al. 2017) on the train split only, fixed by a seed, inputs index-mapped not copied."""
from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from conftest import offline
from reglab.config import RunConfig
from reglab.data import Data, Split, load
from reglab.data.label_noise import noisy_labels, rand_x, rand_y
from reglab.errors import ReglabError
from reglab.engine.run import build_run


@pytest.fixture(scope="module")
def clean() -> Data:
    return load("digits")


def test_noisy_labels_structure_and_distribution(clean: Data) -> None:
    alpha, n = 20, len(clean.train)
    noisy = load("noisy:digits", alpha=alpha, noise_seed=3)
    train = noisy.train
    assert len(train) == n * (1 + alpha)
    assert train.x.data_ptr() == clean.train.x.data_ptr() or torch.equal(train.x, clean.train.x)
    assert train.x.shape == clean.train.x.shape  # no copied inputs, only an index
    assert torch.equal(train.y[:n], clean.train.y)  # the clean examples come first, unchanged
    rows = torch.arange(len(train))
    assert torch.equal(train.inputs(rows), clean.train.x[rows % n])  # copy j of example i is row j*n + i
    extra_labels = train.y[n:]
    counts = torch.bincount(extra_labels, minlength=10)
    assert chisquare(counts.numpy()).pvalue > 1e-3  # uniform over the 10 classes
    agree = (extra_labels == clean.train.y.repeat(alpha)).float().mean().item()
    assert abs(agree - 0.1) < 0.01  # a noisy copy keeps its true label with probability 1/K
    assert noisy.info["label_noise"] == {"mode": "noisy_labels", "alpha": alpha, "noise_seed": 3, "clean_train": n}


def test_same_noise_every_load_and_clean_eval_splits(clean: Data) -> None:
    a = load("noisy:digits", alpha=5, noise_seed=1)
    b = load("noisy:digits", alpha=5, noise_seed=1)
    c = load("noisy:digits", alpha=5, noise_seed=2)
    assert torch.equal(a.train.y, b.train.y) and torch.equal(a.train.index, b.train.index)
    assert not torch.equal(a.train.y, c.train.y)
    for d in (a, c, load("noisy:digits", mode="rand_y", fraction=1.0), load("noisy:digits", mode="rand_x", fraction=1.0)):
        for split in ("val", "test"):
            assert torch.equal(getattr(d, split).x, getattr(clean, split).x)
            assert torch.equal(getattr(d, split).y, getattr(clean, split).y)
            assert getattr(d, split).index is None
        assert torch.equal(d.mean, clean.mean) and torch.equal(d.std, clean.std)


def test_alpha_zero_is_the_clean_dataset(clean: Data) -> None:
    d = load("noisy:digits", alpha=0)
    assert torch.equal(d.train.y, clean.train.y) and torch.equal(d.train.x, clean.train.x)


def test_rand_y_fraction() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(10, (20000,), generator=g)
    split = Split(torch.zeros(20000, 3), y)
    half = rand_y(split, 0.5, 10, seed=7)
    changed = (half.y != y).float().mean().item()
    assert abs(changed - 0.5 * 0.9) < 0.015  # half relabelled, 1/10 of those by chance to the truth
    assert torch.equal(rand_y(split, 0.0, 10).y, y)
    full = rand_y(split, 1.0, 10, seed=7)
    assert abs((full.y == y).float().mean().item() - 0.1) < 0.01
    assert chisquare(torch.bincount(full.y, minlength=10).numpy()).pvalue > 1e-3
    assert torch.equal(rand_y(split, 0.5, 10, seed=7).y, half.y)  # fixed by the seed
    assert torch.equal(split.y, y)  # the input split is not modified


def test_rand_x_float_inputs_match_moments() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 5, generator=g) * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0]) + torch.tensor([0.0, 5.0, -1.0, 2.0, 10.0])
    y = torch.randint(3, (4000,), generator=g)
    out = rand_x(Split(x, y), 0.25, seed=1)
    rows = torch.arange(4000)
    inputs = out.inputs(rows)
    replaced = (inputs != x).any(1)
    assert replaced.sum().item() == 1000
    assert torch.equal(out.y, y)  # labels kept
    assert out.x.shape == (5000, 5)  # only the 1000 noise inputs are stored in addition
    noise = inputs[replaced]
    assert torch.allclose(noise.mean(0), x.mean(0), atol=0.25)
    assert torch.allclose(noise.std(0), x.std(0), rtol=0.1)
    corr = torch.corrcoef(torch.stack([noise[:, 0], noise[:, 1]]))[0, 1]
    assert abs(corr.item()) < 0.1  # independent noise, not a transformed copy


def test_rand_x_uint8_images() -> None:
    d = load("noisy:digits", mode="rand_x", fraction=1.0, noise_seed=0)
    clean = load("digits")
    n = len(clean.train)
    inputs = d.train.inputs(torch.arange(n))
    assert inputs.dtype == torch.uint8 and inputs.shape == clean.train.x.shape
    assert not (inputs == clean.train.x).all(dim=(1, 2, 3)).any()  # every input replaced
    # rounded, clipped Gaussian: its mean lies above the clean mean (clipping at 0), same order of std
    mean, std = clean.train.x.float().mean(), clean.train.x.float().std()
    assert inputs.float().mean() > mean - 1 and abs(inputs.float().std() - std) < 0.3 * std


def test_trainer_sees_the_noisy_training_set() -> None:
    config = RunConfig(dataset="noisy:digits", dataset_options={"alpha": 3, "noise_seed": 0}, epochs=1, device="cpu")
    run = build_run(config, [0])
    n = len(load("digits").train)
    assert len(run.data.train) == 4 * n and run.steps_per_epoch == 4 * n // config.batch_size
    assert len(run.data.val) == len(load("digits").val)


def test_bad_options() -> None:
    with pytest.raises(ReglabError, match="alpha"):
        load("noisy:digits", alpha=-1)
    with pytest.raises(ReglabError, match="mode"):
        load("noisy:digits", mode="flip")
    with pytest.raises(ReglabError, match=r"needs a dataset name: .noisy:NAME."):
        load("noisy")
    with pytest.raises(ReglabError, match="classification"):
        noisy_labels(Split(torch.zeros(3, 2), torch.zeros(3, 1)), 1, 2)  # regression targets
    with pytest.raises(ReglabError, match="fraction"):
        rand_x(Split(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)), 1.5)


def test_mnist_noisy_labels_alpha_100() -> None:
    offline("mnist", "train-labels-idx1-ubyte.gz")
    clean = load("mnist")
    d = load("noisy:mnist", alpha=100)
    n = len(clean.train)
    assert len(d.train) == 101 * n and d.train.x.shape == clean.train.x.shape
    assert torch.equal(d.test.y, clean.test.y) and torch.equal(d.val.y, clean.val.y)
    counts = torch.bincount(d.train.y[n:], minlength=10).double()
    assert (counts / counts.sum() - 0.1).abs().max() < 0.002


# ---- the label-noise-mnist reproduction ----------------------------------------------------------
def test_repro_budget_grows_with_alpha_as_clean_passes() -> None:
    from reglab.repro.label_noise_mnist import BATCH, MIN_STEPS, budget

    assert budget(0, 55_000) == MIN_STEPS  # 2 clean passes = 108 steps: the floor applies
    assert budget(100, 55_000) == -(-2 * 55_000 * 101 // BATCH)  # ceil: 2 passes over the 101x noisy set
    assert budget(50, 55_000, clean_passes=4) == -(-4 * 55_000 * 51 // BATCH)


def test_repro_skips_recorded_runs_and_merges(tmp_path, monkeypatch) -> None:
    """A rerun (after an interruption, or to merge the runs.json of processes that split the models)
    trains nothing already recorded and writes the table from all recorded runs."""
    offline("mnist", "train-images-idx3-ubyte.gz")
    import json

    import reglab.repro.label_noise_mnist as repro

    trained = []

    def fake_train(data, model, options, lr, steps, seed=0):
        trained.append((model, options.get("hidden"), lr, steps))
        acc = 0.9 - 0.001 * steps / 10  # any numbers: the bookkeeping is under test
        return {"val_accuracy": acc, "test_accuracy": acc, "best_step": steps, "steps": steps, "budget": steps,
                "seconds": 1.0, "amp": "off", "device": "cpu", "curve": [acc]}

    monkeypatch.setattr(repro, "train_one", fake_train)
    repro.run(tmp_path, quick=True, progress=False, models=["perceptron"])
    assert len(trained) == 2  # alphas 0 and 100, lr 0.1
    repro.run(tmp_path, quick=True, progress=False, models=["perceptron", "MLP1"])
    assert len(trained) == 4  # only MLP1's two runs were new
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert sorted((r["model"], r["alpha"]) for r in runs) == [("MLP1", 0), ("MLP1", 100), ("perceptron", 0), ("perceptron", 100)]
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| perceptron |" in text and "| MLP1 |" in text
    with pytest.raises(ValueError, match="unknown model"):
        repro.run(tmp_path, quick=True, progress=False, models=["MLP3"])
    # a longer run of one cell is recorded apart, shown beside the grid's run, and never selected
    repro.extend(tmp_path, "perceptron", 100, 0.1, clean_passes=0.5)
    assert trained[-1] == ("mlp", [], 0.1, repro.budget(100, 55_000, 0.5))  # 55,000 clean training images
    repro.run(tmp_path, quick=True, progress=False, models=["perceptron"])
    assert len(trained) == 5
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Longer training" in text and "| perceptron | 100 | 0.1 |" in text
    assert len(json.loads((tmp_path / "runs.json").read_text())) == 4


def test_repro_batch_sweep_trains_equal_examples_per_batch_and_reports_paired_seeds(tmp_path, monkeypatch) -> None:
    """The batch-size figure: each batch size sees the same examples (more steps for smaller batches),
    seeds train stacked through fit, a rerun trains nothing recorded, and the section's numbers are the
    recorded ones."""
    offline("mnist", "train-images-idx3-ubyte.gz")
    import json
    from dataclasses import replace

    import reglab.repro.label_noise_mnist as repro
    from reglab.study.statistics import mean_se

    monkeypatch.setattr(repro, "MIN_STEPS", 1)
    clean = load("mnist", val_fraction=repro.VAL_FRACTION, split_seed=0)
    clean = replace(clean, train=Split(clean.train.x[:2000], clean.train.y[:2000]), val=Split(clean.val.x[:500], clean.val.y[:500]),
                    test=Split(clean.test.x[:500], clean.test.y[:500]))
    sweep = dict(model="perceptron", alpha=1, lr=1.0, batches=[64, 256], seeds=[0, 1, 2])
    rows = repro.batch_sweep(tmp_path, clean, sweep, clean_passes=2, progress=False)
    assert [(r["batch"], r["seed"]) for r in rows] == [(64, 0), (64, 1), (64, 2), (256, 0), (256, 1), (256, 2)]
    assert {r["batch"]: r["budget"] for r in rows} == {64: 125, 256: 32}  # ceil(2 x 2000 x 2 / batch)
    assert all(0.1 < r["test_accuracy"] <= 1 for r in rows)
    assert len({r["test_accuracy"] for r in rows if r["batch"] == 64}) == 3  # the seeds differ

    def no_training(*args, **kwargs):
        raise AssertionError("a recorded batch size was retrained")

    monkeypatch.setattr(repro, "train_seeds", no_training)
    assert repro.batch_sweep(tmp_path, clean, sweep, clean_passes=2, progress=False) == rows
    text = repro._batch_section(tmp_path, len(clean.train))
    acc = {b: [100 * r["test_accuracy"] for r in rows if r["batch"] == b] for b in (64, 256)}
    m, se = mean_se(acc[256])
    assert f"| 256 | 32 | {m:.2f} ± {se:.2f} |" in text
    d = [a - b for a, b in zip(acc[256], acc[64])]
    assert f"- batch 256 minus batch 64: {sum(d) / 3:+.2f} ± {mean_se(d)[1]:.2f} points" in text
    assert "seeds 0, 1, 2" in text and f"reglab repro label-noise-mnist -o {tmp_path}" in text
    repro._plot_batch(json.loads((tmp_path / "batch.json").read_text()), tmp_path / "batch.png")
    assert (tmp_path / "batch.png").stat().st_size > 0
