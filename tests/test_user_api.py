"""Your own model and data in one call (reglab.fit / reglab.study), trained models back (load,
predict, export), and the honest record of what was trained."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import reglab
from reglab.data.tensors import from_tensors
from reglab.engine.checkpoint import load as load_state
from reglab.engine.checkpoint import save as save_state
from reglab.engine.run import build_members
from reglab.engine.trained import Trained
from reglab.errors import ReglabError
from reglab.models import MODELS, custom
from reglab.techniques import resolve_techniques
from reglab.techniques.dropout import SeedDropout

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_library_example() -> str:
    section = README.read_text().split("### As a library", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_trains_loads_predicts_and_exports_a_users_module(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(readme_library_example(), "README.md", "exec"), ns)  # noqa: S102 - the README's own example
    results, model, Net, X, y = ns["results"], ns["model"], ns["Net"], ns["X"], ns["y"]
    # a user-defined module, not registered (before, during or after), trained for 3 seeds
    assert not any(isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == "reglab" for v in ns.values())
    assert not [name for name in MODELS if name.startswith("custom:")]
    assert [r.seed for r in results] == [0, 1, 2]
    config = results[0].config
    assert re.fullmatch(r"custom:Net@[0-9a-f]{12}", config["model"]) and re.fullmatch(r"tensors@[0-9a-f]{12}", config["dataset"])
    assert [t["name"] for t in config["techniques"]] == ["adamw", "batchnorm", "dropout", "crop"]
    assert all(isinstance(r.model, Trained) for r in results)
    # the loaded model has the techniques' transformations and the selected epoch's weights: it reproduces
    # the validation accuracy that selected the epoch, from raw inputs (normalization inside the model)
    assert isinstance(model, Trained) and model.seed == 0 and not model.training
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    assert any(isinstance(m, SeedDropout) for m in model.modules())
    val = from_tensors((X, y)).val
    accuracy = (reglab.predict(model, val.x).argmax(1) == val.y).float().mean().item()
    assert accuracy == pytest.approx(results[0].metrics["best_val_accuracy"], abs=1e-6)
    # the export round-trip gives the same outputs, for any batch size
    program = torch.export.load(tmp_path / "reglab-runs" / "net" / "model.pt2").module()
    for n in (1, 7, 300):
        assert torch.allclose(program(X[:n]), reglab.predict(model, X[:n]), atol=1e-5)
    # another seed of the run, and the error without the user's module
    other = reglab.load(tmp_path / "reglab-runs" / "net", seed=2, model=Net())
    assert other.seed == 2 and not torch.equal(reglab.predict(other, X[:5]), reglab.predict(model, X[:5]))
    with pytest.raises(ReglabError, match=r"your own model Net.*reglab.load\(path, model=Net"):
        reglab.load(tmp_path / "reglab-runs" / "net")


def test_each_seed_starts_from_its_own_initialization() -> None:
    net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 2))
    data = from_tensors((torch.randn(50, 1, 8), torch.arange(50) % 2))
    config = reglab.RunConfig(dataset=data.name, techniques=[{"name": "batchnorm"}])
    with custom.registered(net) as name:
        members = build_members(config.model_copy(update={"model": name}), [0, 1, 0], data,
                                resolve_techniques(config.techniques))
    weights = [m[0].weight for m in members]
    assert torch.equal(weights[0], weights[2]) and not torch.equal(weights[0], weights[1])  # per seed, reproducible
    assert not torch.equal(weights[0], net[0].weight) and not torch.equal(weights[1], net[0].weight)  # re-initialized
    assert isinstance(members[0][1], nn.BatchNorm1d) and not isinstance(net[1], nn.BatchNorm1d)  # the user's module untouched


def test_result_models_predict_from_raw_inputs_like_the_loaded_ones(tmp_path) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 6, generator=g) * 5 + 3  # far from standardized: the normalization matters
    y = x[:, :3].sum(1) - x[:, 3:].sum(1)  # float targets: a regression
    net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    [r] = reglab.fit(net, (x, y), ["adam"], seeds=[4], epochs=1, out=tmp_path / "run", progress=False)
    assert r.config["metric"] == "val_rmse"
    loaded = reglab.load(tmp_path / "run", model=net)
    assert loaded.task == "regression" and loaded.seed == 4
    # one epoch: the selected epoch is the last, so the result's model and the loaded one agree
    assert torch.allclose(reglab.predict(r.model, x[:10]), reglab.predict(loaded, x[:10]))
    # a plain module gets its inputs as they are
    assert not torch.allclose(reglab.predict(loaded.net, x[:10]), reglab.predict(loaded, x[:10]))
    rmse = (reglab.predict(loaded, from_tensors((x, y)).val.x).squeeze(1) - from_tensors((x, y)).val.y).pow(2).mean().sqrt()
    assert rmse.item() == pytest.approx(r.metrics["val_rmse"], rel=1e-5)


def test_a_factory_numpy_arrays_and_a_dataset_are_accepted(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 8))  # float64 arrays
    y = (x[:, 0] > 0).astype(np.int64)

    def make() -> nn.Module:
        return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))

    results = reglab.fit(make, (x, y), ["sgd:lr=0.1", "batchnorm"], seeds=2, epochs=1, grouping="single", progress=False)
    assert [r.seed for r in results] == [0, 1] and results[0].config["model"].startswith("custom:Sequential@")
    assert any(isinstance(m, nn.BatchNorm1d) for m in results[0].model.modules())
    dataset = torch.utils.data.TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(y))
    [r] = reglab.fit(make, dataset, seeds=[0], epochs=1, test=(x[:50], y[:50]), progress=False)
    assert 0 <= r.metrics["test_accuracy"] <= 1
    data = from_tensors((x, y), val=(x[:30], y[:30]), test=(x[:40], y[:40]))
    assert (len(data.train), len(data.val), len(data.test)) == (240, 30, 40) and data.classes == ["0", "1"]


def test_splits_and_tasks_are_inferred_and_fixed() -> None:
    x = torch.randn(100, 3)
    a, b = from_tensors((x, torch.arange(100) % 3)), from_tensors((x, torch.arange(100) % 3))
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.test.x, b.test.x)  # the fixed split seed
    assert (len(a.train), len(a.val), len(a.test)) == (72, 8, 20) and a.task == "classification"
    assert from_tensors((x, torch.randn(100))).task == "regression"
    assert from_tensors((x, torch.randn(100, 2))).num_outputs == 2
    labels = (torch.rand(100, 4) > 0.5).float()
    assert from_tensors((x, labels), task="multilabel").classes == ["0", "1", "2", "3"]
    assert a.name == b.name != from_tensors((x + 1, torch.arange(100) % 3)).name  # the name hashes the data
    assert torch.allclose(a.normalize(a.train.x).mean(0), torch.zeros(3), atol=1e-5)
    images = from_tensors((torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8), torch.arange(50) % 2))
    assert images.kind == "image" and images.mean.shape == (3,)


@pytest.mark.parametrize("bad, message", [
    ((torch.randn(10, 2), torch.arange(9)), "10 inputs but 9 targets"),
    ((torch.randn(10, 2), -torch.arange(10)), "negative class ids"),
    ((torch.randn(10, 2), torch.rand(10) * 3), None),  # floats: a regression, accepted
    ("not data", "unknown dataset 'not data'"),
])
def test_bad_data_is_a_one_line_error(bad, message) -> None:
    net = nn.Sequential(nn.Linear(2, 3))
    if message is None:
        reglab.fit(net, bad, seeds=[0], epochs=1, progress=False)
        return
    with pytest.raises(ReglabError, match=message):
        reglab.fit(net, bad, seeds=[0], epochs=1, progress=False)


def test_a_module_with_bare_parameters_needs_init() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(2))

        def forward(self, x):
            return x * self.scale

    x, y = torch.randn(60, 2), torch.randn(60, 2)
    with pytest.raises(ReglabError, match="no reset_parameters"):
        reglab.fit(Scaled(), (x, y), seeds=[0], epochs=1, progress=False)
    results = reglab.fit(Scaled(), (x, y), seeds=[0, 1], epochs=1, grouping="single", progress=False,
                         init=lambda m: nn.init.normal_(m.scale))
    assert not torch.equal(results[0].model.net.scale, results[1].model.net.scale)


def test_techniques_that_cannot_transform_a_model_say_why() -> None:
    class NoSequential(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    x, y = torch.randn(50, 4), torch.arange(50) % 2
    with pytest.raises(ReglabError, match="technique batchnorm: the model has no Linear/Conv followed by an activation"):
        reglab.fit(NoSequential(), (x, y), ["batchnorm"], seeds=[0], epochs=1, progress=False)
    with pytest.raises(ReglabError, match="technique dropout: the model has no activation module"):
        reglab.fit(NoSequential(), (x, y), ["dropout"], seeds=[0], epochs=1, progress=False)


def test_a_runconfig_and_registered_names_go_through_the_same_call(tmp_path) -> None:
    config = reglab.RunConfig(dataset="digits", model="mlp", model_options={"hidden": [16]}, epochs=1)
    [r] = reglab.fit(config, seeds=[0], progress=False, out=tmp_path / "cfg")
    assert r.config["dataset"] == "digits" and isinstance(r.model, Trained)
    [r2] = reglab.fit("mlp", "digits", ["adamw"], seeds=[0], epochs=1, model_options={"hidden": [16]}, progress=False)
    assert r2.config["model"] == "mlp" and r2.config["techniques"][0]["name"] == "adamw"
    loaded = reglab.load(tmp_path / "cfg")  # a registered model is rebuilt without model=
    assert loaded.classes == [str(i) for i in range(10)] and loaded.input_shape == (1, 8, 8)
    with pytest.raises(ReglabError, match="'seed' is set by the seeds argument"):
        reglab.fit(nn.Linear(2, 2), (torch.randn(20, 2), torch.arange(20) % 2), seed=3)
    with pytest.raises(ReglabError, match=r"reglab.fit: unknown field 'epoch' \(allowed: dataset"):
        reglab.fit(nn.Linear(2, 2), (torch.randn(20, 2), torch.arange(20) % 2), epoch=3)


def test_load_refuses_old_checkpoints_and_missing_runs(tmp_path) -> None:
    [r] = reglab.fit("mlp", "digits", seeds=[0], epochs=1, model_options={"hidden": [8]}, progress=False,
                     out=tmp_path / "run")
    path = tmp_path / "run" / "seed-0" / "last.pt"
    state = load_state(path)
    state["version"] = 2
    save_state(state, tmp_path / "old.pt")
    with pytest.raises(ReglabError, match="checkpoint format 2 is not this reglab's"):
        reglab.load(tmp_path / "old.pt")
    with pytest.raises(ReglabError, match="run not found"):
        reglab.load(tmp_path / "nowhere")
    with pytest.raises(ReglabError, match="no checkpoint of seed 5"):
        reglab.load(tmp_path / "run", seed=5)


def test_the_study_call_trains_a_users_module_and_reports(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 10, generator=g)
    y = (x[:, :5].sum(1) > 0).long()
    net = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 2))
    table = reglab.study(net, (x, y), steps=["batchnorm", {"name": "dropout", "p": 0.2}], baseline=["sgd:lr=0.05"],
                         seeds=2, epochs=2, out=tmp_path / "s", progress=False, grouping="single")
    assert table["errors"] == [] and [row["label"] for row in table["rows"]] == ["baseline", "+ batchnorm", "+ dropout"]
    assert all(row["n"] == 2 for row in table["rows"]) if "n" in table["rows"][0] else True
    assert (tmp_path / "s" / "report" / "report.md").is_file()
    folders = sorted(p.name for p in (tmp_path / "s" / "checkpoints").iterdir())
    assert [f.rsplit("-", 1)[0] for f in folders] == ["baseline", "batchnorm", "dropout"]
    loaded = reglab.load(next((tmp_path / "s" / "checkpoints").glob("dropout-*")), seed=1, model=net)
    assert any(isinstance(m, SeedDropout) for m in loaded.modules())
    again = reglab.study(net, (x, y), steps=["batchnorm", {"name": "dropout", "p": 0.2}], baseline=["sgd:lr=0.05"],
                         seeds=2, epochs=2, out=tmp_path / "s", progress=False, grouping="single")
    assert again["rows"] == table["rows"]  # the second call reuses every stored run
    with pytest.raises(ReglabError, match="cannot see an in-memory model"):
        reglab.study(net, (x, y), steps=["batchnorm"], executor="processes", out=tmp_path / "p")


def test_a_users_module_trains_stacked_and_alone_alike() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3))

        def forward(self, x):
            return self.body(x)

    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 1, 16, generator=g)
    y = torch.randint(0, 3, (200,), generator=g)
    techniques = ["adamw", "batchnorm", "dropout:p=0.2", "crop:padding=2"]
    grouped = reglab.fit(Net(), (x, y), techniques, seeds=[0, 1, 2], epochs=2, grouping="group", progress=False)
    single = reglab.fit(Net(), (x, y), techniques, seeds=[0, 1, 2], epochs=2, grouping="single", progress=False)
    assert grouped[0].metrics["group_size"] == 3 and single[0].metrics["group_size"] == 1
    for a, b in zip(grouped, single):
        for key in ("train_loss", "val_loss", "val_accuracy", "test_loss"):
            assert a.metrics[key] == pytest.approx(b.metrics[key], rel=1e-4, abs=1e-5), key
    assert len({round(r.metrics["val_loss"], 6) for r in grouped}) == 3  # three different seeds
