"""The whole-study benchmark (benchmarks/study_speed.py): the by-hand and Lightning ways train the models
reglab trains, its phase clocks count each call once, and a tiny run of the three ways does the same work
per run and writes a report whose figures are those it measured."""
import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import offline
from test_benchmark_quick import cifar_like

from reglab.data import load
from reglab.engine.run import build_run
from reglab.study.plan import plan
from reglab.study.spec import parse_spec

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def layout(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(type(m).__name__, tuple(t.shape)) for m in module.modules() for t in
            [*m.parameters(recurse=False), *m.buffers(recurse=False)] if t.dtype.is_floating_point]


@pytest.mark.parametrize("name", ["quickstart", "pimp-my-model"])
def test_by_hand_model_and_optimizer_are_reglabs(name):
    """Each configuration of the reduced study: the by-hand MLP has reglab's layers, parameter and buffer
    shapes in order, and its optimizer reglab's class and hyperparameters; grids take their middle value."""
    speed = load_module("study_speed")
    raw = speed.reduced_study(name, configs=3, seeds=3, epochs=2, batches=None)
    assert raw["base"]["eval_train"] is False and "tune_seeds" not in raw and raw["seeds"] == 3
    planned = plan(parse_spec(raw, name))
    assert len(planned) == 3
    data = load("mnist1d") if name == "quickstart" else cifar_like(n=8)
    if name == "pimp-my-model":
        assert planned[0].config.techniques[0]["lr"] == 0.01 and planned[1].config.techniques[0]["lr"] == 1e-3
    for p in planned:
        cfg = speed.by_hand_config(p.config, None)
        run = build_run(p.config, [0], data)
        ours = speed.study_by_hand.mlp(list(data.input_shape), len(data.classes), cfg["hidden"], cfg["batchnorm"])
        assert layout(ours) == layout(run.model.member(0)), p.label
        theirs = speed.study_by_hand.optimizer(ours.parameters(), dict(cfg["optimizer"]))
        assert type(theirs) is type(run.optimizer), p.label
        keys = ("lr", "momentum", "betas", "weight_decay", "eps", "nesterov")
        mine, reglabs = theirs.param_groups[0], run.optimizer.param_groups[0]
        assert {k: mine.get(k) for k in keys} == {k: reglabs.get(k) for k in keys}, p.label
        assert (cfg["epochs"], cfg["batch_size"], cfg["eval_batch_size"]) == (2, p.config.batch_size, p.config.eval_batch_size)


def test_by_hand_config_refuses_what_it_cannot_train():
    speed = load_module("study_speed")
    raw = {"name": "x", "baseline": [{"name": "sgd"}], "steps": [{"name": "d", "techniques": [{"name": "dropout", "p": 0.2}]}]}
    p = plan(parse_spec(raw, "x"))[1]
    with pytest.raises(ValueError, match="dropout"):
        speed.by_hand_config(p.config, None)


def test_phase_clock_counts_a_nested_call_once():
    timed = load_module("study_timed")
    phases = timed.Phases()

    def inner():
        time.sleep(0.05)

    inner_t = phases.wrap(inner, "evaluation")

    def outer():
        inner_t()
        time.sleep(0.05)

    outer_t = phases.wrap(outer, "training")
    outer_t()
    inner_t()
    assert phases.calls == {"training": 1, "evaluation": 1}
    assert 0.1 <= phases.seconds["training"] < 0.3 and 0.05 <= phases.seconds["evaluation"] < 0.2


def test_tiny_study_three_ways(tmp_path):
    """Two configurations x 1 seed x 1 epoch of 5 batches of the quickstart, all three ways (< 60 s)."""
    lightning = importlib.util.find_spec("lightning") is not None
    speed = load_module("study_speed")
    out = tmp_path / "report"
    argv = ["--studies", "quickstart", "--configs", "2", "--seeds", "1", "--epochs", "1", "--batches", "5",
            "--out", str(out), "--work", str(tmp_path / "work")] + ([] if lightning else ["--no-lightning"])
    report = speed.main(argv)
    [study] = report["studies"]
    ways = ["by hand", "Lightning", "reglab"] if lightning else ["by hand", "reglab"]
    assert list(study["ways"]) == ways
    for way, result in study["ways"].items():
        assert result["wall"] > 0 and sorted(r["label"] for r in result["runs"]) == ["+ AdamW", "baseline"], way
        for run in result["runs"]:
            assert len(run["history"]) == 1 and "val_accuracy" in run["history"][0], way
            assert {"val_accuracy", "test_accuracy", "last_val_accuracy", "last_test_accuracy"} <= set(run["final"]), way
            batches = run["history"][0].get("batches", run["history"][0].get("step"))
            assert batches == 5, (way, batches)
    c = study["ways"]["reglab"]
    assert c["calls"]["training"] == 2 and c["calls"]["evaluation"] >= 10  # per run: val each epoch + 4 final evaluations
    assert all(v >= 0 for v in c["breakdown"].values())
    assert sum(c["breakdown"].values()) == pytest.approx(c["wall"], abs=1.0)
    walls = report["summary"]["walls"]["quickstart"]
    assert report["summary"]["ratios"]["quickstart"]["by hand/reglab"] == pytest.approx(walls["by hand"] / walls["reglab"])
    text = out.with_suffix(".md").read_text()
    assert report["machine"] in text and "OMP_WAIT_POLICY" in text and "avx2" in report["machine"] + " avx2"
    assert f"{walls['reglab']:.1f} s" in text and f"{walls['by hand']:.1f} s" in text
    assert json.loads(out.with_suffix(".json").read_text())["summary"]["walls"]["quickstart"]["reglab"] == walls["reglab"]
    speed.main(["--render", str(out.with_suffix(".json"))])  # the Markdown again from the JSON alone: the same figures
    rendered = out.with_suffix(".md").read_text()
    assert "--render" in rendered and rendered.split("\n", 3)[3] == text.split("\n", 3)[3]


@pytest.mark.slow
def test_quick_run_under_three_minutes(tmp_path):
    offline("cifar10", "cifar10-jpeg.zip")
    import subprocess

    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(BENCH / "study_speed.py"), "--quick", "--out", str(tmp_path / "q")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "q.json").read_text())
    assert [s["name"] for s in report["studies"]] == ["quickstart", "pimp-my-model"]
    assert time.perf_counter() - t0 < 180 or max(report["load_before"][0], report["load_after"][0]) > 2, \
        "--quick took over 3 minutes on an idle machine"
