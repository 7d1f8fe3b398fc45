"""The command line's conventions: --version, shell completion, key=value overrides that reach nested
options (with a hint for lists without brackets), listings with human types and allowed values,
install hints, reglab-runs/<name>/ for every command, logs a person can read, and export."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import reglab
from reglab.cli import app
from reglab.repro import REPROS
from reglab.repro.provenance import full_run_time
from reglab.study.store import Store

runner = CliRunner()


def invoke(*args: str, **kw):
    return runner.invoke(app, list(args), prog_name="reglab", **kw)


def test_version_and_shell_completion(tmp_path) -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"reglab {reglab.__version__}"
    shown = invoke("--show-completion", "bash")
    assert shown.exit_code == 0 and "complete -o default -F _reglab_completion reglab" in shown.stdout
    installed = invoke("--install-completion", "bash", env={"HOME": str(tmp_path)})
    assert installed.exit_code == 0 and (tmp_path / ".bash_completions" / "reglab.sh").is_file()
    assert "reglab.sh" in (tmp_path / ".bashrc").read_text()
    # what the shell asks while a user types `reglab tr<TAB>` / `reglab study --te<TAB>`
    words = invoke(env={"_REGLAB_COMPLETE": "complete_bash", "COMP_WORDS": "reglab tr", "COMP_CWORD": "1"})
    assert words.stdout.split() == ["train"]
    options = invoke(env={"_REGLAB_COMPLETE": "complete_bash", "COMP_WORDS": "reglab study --tens", "COMP_CWORD": "2"})
    assert options.stdout.split() == ["--tensorboard"]


def test_train_takes_key_value_overrides_and_logs_one_line_per_epoch(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "epochs=3", "model_options.hidden=[64]", "--name", "small")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "reglab-runs" / "small" / "config.json").read_text())
    assert config["epochs"] == 3 and config["model_options"] == {"hidden": [64]}
    lines = [line for line in result.stderr.splitlines() if "epoch" in line]
    assert [re.search(r"epoch (\d+/\d+)", line).group(1) for line in lines] == ["1/3", "2/3", "3/3"]
    assert all("val_accuracy=" in line and "\r" not in line for line in lines)
    assert (tmp_path / "reglab-runs" / "small" / "last.pt").is_file()


def test_a_list_without_brackets_gets_a_hint() -> None:
    for args in (["-m", "hidden=512,256"], ["model_options.hidden=512,256"]):
        result = invoke("train", "--epochs", "1", *args)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1
        assert result.stderr.strip().endswith("a list is written in brackets: hidden=[512,256]")
    technique = invoke("train", "-t", "multistep:milestones=10,20")
    assert "a list is written in brackets: milestones=[10,20]" in technique.stderr
    typo = invoke("train", "epoch=3")
    assert "unknown field 'epoch'" in typo.stderr and "did you mean 'epochs'?" in typo.stderr
    nested = invoke("train", "epochs=3", "epochs.max=3")
    assert "'epochs' is not a table of options" in nested.stderr


def test_cli_errors_are_one_line_with_exit_code_2() -> None:
    bad = subprocess.run([sys.executable, "-m", "reglab.cli", "train", "-m", "hidden=512,256"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("error: --model-opt: model mlp.hidden: Input should be a valid list")


def test_listings_show_human_types_and_allowed_values() -> None:
    everything = invoke("list").stdout
    assert "Annotated" not in everything and "Field(" not in everything and "Literal[" not in everything
    models = invoke("list", "models").stdout
    assert "hidden: list[int >= 1] = [256, 256]" in models
    assert "activation: relu|gelu|tanh|sigmoid|silu|leaky_relu|elu|identity = 'relu'" in models
    assert "norm: none|batch|layer = 'none'" in models and "dropout: float in [0.0, 1.0) = 0.0" in models
    datasets = invoke("list", "datasets").stdout
    assert "noisy:NAME" in datasets and "noisy:PATH" not in datasets
    assert "mode: noisy_labels|rand_y|rand_x = 'noisy_labels'" in datasets
    techniques = invoke("list", "techniques").stdout
    assert re.search(r"p: float in \[0, 1\) = 0\.5", techniques)
    for listing in (invoke("list", "repro").stdout, invoke("repro", "--list").stdout):
        for name, module in REPROS.items():
            found = full_run_time(name, module)
            time = "not measured" if found is None else f"{found[0] / 60:.1f} min ({found[1]})"
            assert f"{name:<22} {module.SUMMARY}\n  {'':<22} full run: {time}" in listing
    # the committed runs whose records say they were full runs, read from their own files
    assert full_run_time("engression-fig4", REPROS["engression-fig4"])[0] == pytest.approx(1584.1, abs=0.1)
    assert full_run_time("memorization", REPROS["memorization"])[0] == pytest.approx(731.8, abs=0.1)


def test_full_run_time_reads_only_full_runs(tmp_path) -> None:
    import json

    from reglab.repro import provenance

    def write(name: str, file: str, content: dict) -> None:
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / file).write_text(json.dumps(content))

    write("full", "summary.json", {"budget": "full", "provenance": {"wall_seconds": 600.0}})
    write("quick", "summary.json", {"budget": "quick", "provenance": {"wall_seconds": 60.0}})
    write("timing", "results.json", {"timing": {"wall": 90.0, "cpu": 80.0, "quick": False}})
    write("timing-quick", "results.json", {"timing": {"wall": 9.0, "quick": True}})
    write("seconds", "results.json", {"config": {"quick": False}, "seconds": {"total": 120.0, "training": 100.0}})
    write("no-flag", "results.json", {"seconds": 0.07})  # a resumed run's last invocation: not the full run
    write("broken", "summary.json", {"budget": "full"})
    read = lambda name: provenance.full_run_time(name, root=tmp_path)  # noqa: E731
    assert read("full") == (600.0, "wall clock, from results/full/summary.json")
    assert read("timing") == (90.0, "wall clock, from results/timing/results.json")
    assert read("seconds")[0] == 120.0
    for name in ("quick", "timing-quick", "no-flag", "broken", "absent"):
        assert read(name) is None, name


def test_install_hints_and_defaults_survive_in_help_texts() -> None:
    flat = lambda text: re.sub(r"\s+", "", text)  # noqa: E731 - help texts wrap lines
    study = flat(invoke("study", "--help").stdout)
    for text in ("pip install 'reglab[ray]'", "pip install 'reglab[tensorboard]'", "[default: reglab-runs/<name>]",
                 "[default: one per GPU, else 2]"):
        assert flat(text) in study, text
    assert flat("pip install 'reglab[onnx]'") in flat(invoke("export", "--help").stdout)
    assert flat("[default: train-<time>]") in flat(invoke("train", "--help").stdout)


STUDY = """
name = "tiny"
seeds = 2
baseline = [{ name = "sgd", lr = 0.1 }]
tensorboard = true

[base]
dataset = "digits"
model = "mlp"
epochs = 4

[[steps]]
name = "AdamW"
techniques = [{ name = "adamw", lr = 3e-3 }]
"""


def test_study_set_reaches_study_fields_and_nested_base_options(tmp_path) -> None:
    (tmp_path / "tiny.toml").write_text(STUDY)
    out = tmp_path / "o"
    result = invoke("study", str(tmp_path / "tiny.toml"), "-o", str(out), "--set", "seeds=1", "--set", "epochs=1",
                    "--set", "model_options.hidden=[8]", "--grouping", "single", "--json")
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout.strip().splitlines()[-1])
    assert [row["label"] for row in table["rows"]] == ["baseline", "+ AdamW"]
    runs = Store(out / "results.sqlite").runs()
    assert {r.seed for r in runs} == {0} and all(len(r.history) == 1 for r in runs)
    assert sorted(p.name.rsplit("-", 1)[0] for p in (out / "checkpoints").iterdir()) == ["adamw", "baseline"]
    assert re.search(r"seeds of adamw-[0-9a-f]{12}: one by one", result.stderr)
    # tensorboard = true in the study file: event files under <out>/tensorboard/<study>/<label>-<key>/seed-<seed>
    assert sorted(p.parent.name.rsplit("-", 1)[0] for p in (out / "tensorboard" / "tiny").glob("*/seed-0")) == \
        ["adamw", "baseline"]
    bad = invoke("study", str(tmp_path / "tiny.toml"), "--set", "epochs.x=1")
    assert "'epochs' is not a table" in bad.stderr


@pytest.mark.parametrize("model, options, techniques", [
    ("mlp", "model_options.hidden=[16]", ["-t", "dropout:p=0.1", "-t", "batchnorm"]),
    ("convnet", "model_options.channels=[4,8]", ["-t", "batchnorm"]),
])
def test_export_round_trips_in_every_format(tmp_path, monkeypatch, model, options, techniques) -> None:
    onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'reglab[onnx]')")
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--dataset", "digits", "--model", model, *techniques, "epochs=1", options, "--name", "r",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    run = tmp_path / "reglab-runs" / "r"
    loaded = reglab.load(run)
    assert any(isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d) for m in loaded.modules())
    x = torch.randint(0, 256, (9, 1, 8, 8), dtype=torch.uint8)  # raw digits images: uint8 pixels
    expected = reglab.predict(loaded, x)
    for fmt, ext in (("exported-program", ".pt2"), ("torchscript", ".ts"), ("onnx", ".onnx")):
        done = invoke("export", str(run), "--format", fmt)
        assert done.exit_code == 0, done.output
        assert re.search(rf"exported {fmt}: .*model-seed0{ext} \(max \|difference\| [0-9.e+-]+ on 5 inputs\)", done.stdout)
        path = run / f"model-seed0{ext}"
        if fmt == "exported-program":
            got = torch.export.load(str(path)).module()(x)
        elif fmt == "torchscript":
            got = torch.jit.load(str(path))(x)
        else:
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        assert torch.allclose(got, expected, atol=1e-4), fmt
    unknown = invoke("export", str(run), "--format", "onnxx")
    assert "did you mean 'onnx'?" in unknown.stderr
    assert np.isfinite(expected.numpy()).all()


def test_progress_is_a_line_per_update_in_logs(capsys) -> None:
    from reglab.engine.progress import Lines, progress_bar

    bar = progress_bar(3, "[repro]", "panel")  # stderr is captured: not a terminal
    assert isinstance(bar, Lines)
    for name in ("a", "b", "c"):
        bar.update(1)
        bar.set_postfix_str(f"{name} done")
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["[repro]: panel 1/3 a done", "[repro]: panel 2/3 b done",
                                                       "[repro]: panel 3/3 c done"]
