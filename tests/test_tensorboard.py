"""TensorBoard event files: per-epoch scalars per seed, the hyperparameters, runs grouped by study and
configuration, read back with tensorboard's own EventAccumulator."""
from __future__ import annotations

import pytest
import torch

import reglab
from reglab.engine.loop import fit
from reglab.engine.tensorboard import TensorBoard, hparams, tag

from conftest import mlp_config

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is not installed (pip install 'reglab[tensorboard]')")


def read(folder):
    acc = event_accumulator.EventAccumulator(str(folder))
    acc.Reload()
    return acc


def test_a_grouped_run_writes_every_seeds_epochs_and_its_hyperparameters(tmp_path, tiny_images) -> None:
    config = mlp_config([{"name": "adamw", "lr": 3e-3}, {"name": "dropout", "p": 0.1}], epochs=3)
    results = fit(config, [0, 1], data=tiny_images, callbacks=(TensorBoard(tmp_path / "tb", {"label": "x"}),),
                  progress=False)
    for r in results:
        acc = read(tmp_path / "tb" / f"seed-{r.seed}")
        tags = acc.Tags()["scalars"]
        assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"} <= set(tags)
        assert [e.step for e in acc.Scalars("val/accuracy")] == [1, 2, 3]
        assert [e.value for e in acc.Scalars("val/accuracy")] == pytest.approx([h["val_accuracy"] for h in r.history])
        assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([h["train_loss"] for h in r.history])
    # the hyperparameters (add_hparams) with the seed's best value of the selection metric
    hp = read(tmp_path / "tb" / "seed-1")
    assert "_hparams_/experiment" in hp.summary_metadata and "_hparams_/session_start_info" in hp.summary_metadata
    start = hp.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    assert b"adamw + dropout" in start and b"label" in start
    assert hp.Scalars("best/val_accuracy")[0].value == pytest.approx(results[1].metrics["best_val_accuracy"])


def test_tags_and_flat_hyperparameters() -> None:
    assert [tag(k) for k in ("train_loss", "val_f1_micro", "lr")] == ["train/loss", "val/f1_micro", "lr"]
    flat = hparams(mlp_config([{"name": "multistep", "milestones": [1, 2]}]).model_dump(), 3, {"study": "s"})
    assert flat["multistep.milestones"] == "[1, 2]" and flat["model_options.hidden"] == "[16]"
    assert flat["seed"] == 3 and flat["study"] == "s"
    assert all(isinstance(v, (str, int, float, bool)) for v in flat.values())


def test_a_study_groups_runs_by_study_and_configuration(tmp_path) -> None:
    x = torch.randn(120, 5)
    y = (x[:, 0] > 0).long()
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    reglab.study(net, (x, y), steps=["batchnorm"], name="tb-study", seeds=[0], epochs=2, out=tmp_path / "s",
                 progress=False, grouping="single", tensorboard=tmp_path / "tb")
    runs = sorted(p.relative_to(tmp_path / "tb").as_posix() for p in (tmp_path / "tb").glob("*/*/seed-0"))
    assert [r.split("/")[0] for r in runs] == ["tb-study", "tb-study"]
    assert [r.split("/")[1].rsplit("-", 1)[0] for r in runs] == ["baseline", "batchnorm"]
    assert [e.step for e in read(tmp_path / "tb" / runs[1]).Scalars("val/loss")] == [1, 2]
