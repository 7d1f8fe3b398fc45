"""Bad input, as a new user would type it, across `train`, `study`, `report`, `repro`, `audit` and the
library API (issue 16). Every case must end with exit code 2 and exactly one line on stderr
(``error: ...``) that names the field or the file, without a traceback, and leave nothing behind in
the output folder. The CLI cases run in-process through typer's CliRunner; a few run through a real
``python -m reglab.cli`` subprocess to check the entry point itself."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import filelock
import numpy as np
import pytest
from typer.testing import CliRunner

from reglab import RunConfig, load_dataset as load
from reglab.engine.loop import fit
from reglab.cli.app import app
from reglab.cli.output import HOLDER, LOCK
from reglab.config import load_file, parse_config
from reglab.engine import checkpoint
from reglab.errors import ReglabError
from reglab.study.spec import parse_spec
from reglab.study.store import Store
from reglab.study.validate import validate_study

BASE = {"dataset": "digits", "model": "mlp", "model_options": {"hidden": [8]}, "epochs": 1, "batch_size": 64}
STEPS = [{"name": "adam", "techniques": [{"name": "adam", "lr": 3e-3}]}]
GOOD = {"name": "tiny", "seeds": 1, "metric": "val_accuracy", "base": BASE, "steps": STEPS}


def study(**change: object) -> str:
    """A study file (JSON) that differs from a good one by ``change`` (a value None drops the key)."""
    raw = {**GOOD, **change}
    return json.dumps({k: v for k, v in raw.items() if v is not None})


def base(**change: object) -> str:
    return study(base={**BASE, **change})


def step(**fields: object) -> str:
    return study(steps=[{"name": "s", **fields}])


LATIN1 = "name = 'caf\xe9'\n".encode("latin-1")  # not UTF-8
CSV_HEADER_ONLY = "x1,x2,y\n"
CSV_OK = "x1,x2,y\n" + "".join(f"{i % 7},{i % 3},{i % 2}\n" for i in range(40))
CSV_LATIN1 = "x1,caf\xe9,y\n1,2,0\n".encode("latin-1")
CONFIG_OK = "dataset = 'digits'\nepochs = 1\n"
CSV_DATA = {"dataset_options": {"target": "y"}}


@dataclass
class Case:
    """One bad input: CLI ``args`` (``{in}`` is the folder holding ``files``), the text the one
    error line must contain, and an optional ``prepare(work)`` that builds an existing folder."""

    id: str
    args: list[str]
    expect: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    prepare: Callable[[Path], None] | None = None


def _store(folder: Path, name: str = "other") -> None:
    """A valid results store in ``folder`` holding study ``name`` (no runs)."""
    Store(folder / "results.sqlite").save_definition(name, parse_spec({**GOOD, "name": name}).model_dump())


def _garbage_store(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "results.sqlite").write_bytes(os.urandom(4096))


def _malformed_store(folder: Path) -> None:
    """A store whose first page is intact and whose other pages are overwritten: SQLite opens it and
    reports "database disk image is malformed" on the first query."""
    _store(folder)
    with sqlite3.connect(folder / "results.sqlite") as db:
        db.executemany("INSERT INTO epochs VALUES (?, ?, ?, ?)", [("k", 0, i, "{}" * 100) for i in range(300)])
    data = bytearray((folder / "results.sqlite").read_bytes())
    data[4096:] = os.urandom(len(data) - 4096)
    (folder / "results.sqlite").write_bytes(bytes(data))


def _empty_store(folder: Path) -> None:
    Store(folder / "results.sqlite")


def _bad_spec_store(folder: Path) -> None:
    _store(folder)
    with sqlite3.connect(folder / "results.sqlite") as db:
        db.execute("UPDATE definitions SET spec = ?", (json.dumps({**GOOD, "name": "other", "mode": "random"}),))


def _run_folder(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "last.pt").write_bytes(b"")


LONG = "x" * 300  # longer than any file system's name limit (255 bytes)
S = "{in}/s.json"

STUDY_CASES = [
    Case("unknown-model", ["study", S], "base.model: unknown model 'mlpx'", {"s.json": base(model="mlpx")}),
    Case("hidden-0", ["study", S], "base.model_options", {"s.json": base(model_options={"hidden": [0]})}),
    Case("model-option-unknown", ["study", S], "base.model_options", {"s.json": base(model_options={"hiden": [8]})}),
    Case("unknown-dataset", ["study", S], "base.dataset: unknown dataset 'mnsit'", {"s.json": base(dataset="mnsit")}),
    Case("dataset-option-unknown", ["study", S], "base.dataset_options", {"s.json": base(dataset_options={"foo": 1})}),
    Case("dataset-option-type", ["study", S], "base.dataset_options", {"s.json": base(dataset_options={"test_fraction": "x"})}),
    Case("csv-missing", ["study", S], "base.dataset", {"s.json": base(dataset="csv:/nonexistent/d.csv")}),
    Case("csv-header-only", ["study", S], "no data rows", {"s.json": base(dataset="csv:{in}/h.csv", **CSV_DATA), "h.csv": CSV_HEADER_ONLY}),
    Case("csv-not-utf8", ["study", S], "base.dataset", {"s.json": base(dataset="csv:{in}/l.csv", **CSV_DATA), "l.csv": CSV_LATIN1}),
    Case("csv-target-missing", ["study", S], "base.dataset_options", {"s.json": base(dataset="csv:{in}/d.csv", dataset_options={"target": "z"}), "d.csv": CSV_OK}),
    Case("metric-not-recorded", ["study", S], "metric: 'val_acc' is never recorded", {"s.json": study(metric="val_acc")}),
    Case("metric-without-split", ["study", S], "metric", {"s.json": study(metric="accuracy")}),
    Case("report-metric-unknown", ["study", S], "report_metric: 'test_accurcy'", {"s.json": study(report_metric="test_accurcy")}),
    Case("report-metric-malformed", ["study", S], "report_metric", {"s.json": study(report_metric="accuracy")}),
    Case("device-no-such-gpu", ["study", S], "base.device", {"s.json": base(device="cuda:99")}),
    Case("device-unknown", ["study", S], "base.device: unknown device 'tpu'", {"s.json": base(device="tpu")}),
    Case("flag-device-no-such-gpu", ["study", S, "--device", "cuda:99"], "--device", {"s.json": study()}),
    Case("step-set-hidden-0", ["study", S], "steps[0] (s).set.model_options", {"s.json": step(set={"model_options": {"hidden": [0]}})}),
    Case("step-set-unknown-model", ["study", S], "steps[0] (s).set.model", {"s.json": step(set={"model": "mlpx"})}),
    Case("step-set-unknown-field", ["study", S], "steps[0] (s).set: unknown field 'batch_sise'", {"s.json": step(set={"batch_sise": 3})}),
    Case("step-unknown-technique", ["study", S], "steps[0] (s).techniques[0]", {"s.json": step(techniques=[{"name": "adamm"}])}),
    Case("step-bad-knob", ["study", S], "steps[0] (s).techniques[0]", {"s.json": step(techniques=[{"name": "dropout", "p": 1.5}])}),
    Case("step-empty", ["study", S], "adds no technique", {"s.json": step()}),
    Case("step-technique-wrong-task", ["study", S], "configuration '+ s'",
         {"s.json": study(base={"dataset": "synthetic", "model": "mlp", "epochs": 1}, metric=None,
                          steps=[{"name": "s", "techniques": [{"name": "label_smoothing"}]}])}),
    Case("teacher-missing", ["study", S], "checkpoint not found",
         {"s.json": step(techniques=[{"name": "distillation", "teacher": "{in}/nope.pt"}])}),
    Case("duplicate-steps", ["study", S], "step names must be distinct", {"s.json": study(steps=STEPS + STEPS)}),
    Case("unknown-field", ["study", S], "unknown field 'modee'", {"s.json": study(modee="isolated")}),
    Case("name-missing", ["study", S], "field 'name' is required", {"s.json": study(name=None)}),
    Case("steps-missing", ["study", S], "field 'steps' is required", {"s.json": study(steps=None)}),
    Case("name-too-long", ["study", S], "name: String should have at most 255", {"s.json": study(name=LONG)}),
    Case("name-bad-characters", ["study", S], "name", {"s.json": study(name="my study")}),
    Case("seeds-zero", ["study", S], "seeds", {"s.json": study(seeds=0)}),
    Case("seeds-repeated", ["study", S], "seeds", {"s.json": study(seeds=[1, 1])}),
    Case("mode-unknown", ["study", S], "mode", {"s.json": study(mode="random")}),
    Case("orders-zero", ["study", S], "orders", {"s.json": study(mode="orders", orders=0)}),
    Case("base-techniques", ["study", S], "base", {"s.json": base(techniques=[])}),
    Case("base-epochs-negative", ["study", S], "base.epochs", {"s.json": base(epochs=-1)}),
    Case("base-unknown-field", ["study", S], "base: unknown field 'batch_sise'", {"s.json": base(batch_sise=3)}),
    Case("baseline-unknown-technique", ["study", S], "baseline: unknown technique 'sgdd'", {"s.json": study(baseline=[{"name": "sgdd"}])}),
    Case("empty-toml", ["study", "{in}/empty.toml"], "empty.toml: field 'name' is required", {"empty.toml": ""}),
    Case("toml-not-utf8", ["study", "{in}/s.toml"], "s.toml: not UTF-8", {"s.toml": LATIN1}),
    Case("toml-malformed", ["study", "{in}/s.toml"], "s.toml: cannot parse", {"s.toml": "name = \n"}),
    Case("yaml-malformed", ["study", "{in}/s.yaml"], "s.yaml: cannot parse", {"s.yaml": "name: [unclosed\n"}),
    Case("yaml-list", ["study", "{in}/s.yaml"], "s.yaml: expected a table", {"s.yaml": "- a\n- b\n"}),
    Case("json-malformed", ["study", S], "s.json: cannot parse", {"s.json": "{"}),
    Case("unknown-format", ["study", "{in}/s.txt"], "unknown config format", {"s.txt": "name = 'x'"}),
    Case("file-missing", ["study", "{in}/missing.toml"], "missing.toml", {}),
    Case("builtin-typo", ["study", "quikstart"], "did you mean 'quickstart'", {}),
    Case("flag-workers-0", ["study", S, "--workers", "0"], "--workers", {"s.json": study()}),
    Case("flag-grouping", ["study", S, "--grouping", "foo"], "--grouping", {"s.json": study()}),
    Case("flag-executor", ["study", S, "--executor", "gpu"], "--executor", {"s.json": study()}),
    Case("flag-seeds-0", ["study", S, "--seeds", "0"], "--seeds", {"s.json": study()}),
    Case("flag-unknown", ["study", S, "--worker", "2"], "--worker", {"s.json": study()}),
    Case("out-is-a-file", ["study", S, "-o", "f.txt"], "--out f.txt: is a file", {"s.json": study()},
         lambda work: (work / "f.txt").write_text("x")),
    Case("out-parent-is-a-file", ["study", S, "-o", "f.txt/out"], "f.txt is a file", {"s.json": study()},
         lambda work: (work / "f.txt").write_text("x")),
    Case("out-name-too-long", ["study", S, "-o", f"a/{LONG}"], "--out: the folder name", {"s.json": study()}),
    Case("store-not-sqlite", ["study", S, "-o", "o"], "o/results.sqlite: not a SQLite database", {"s.json": study()},
         lambda work: _garbage_store(work / "o")),
    Case("store-malformed", ["study", S, "-o", "o"], "o/results.sqlite: the results store is corrupted", {"s.json": study()},
         lambda work: _malformed_store(work / "o")),
    Case("folder-holds-another-study", ["study", S, "-o", "o"], "holds study 'other'", {"s.json": study()},
         lambda work: _store(work / "o")),
]

TRAIN = ["train", "--dataset", "digits", "-m", "hidden=[8]", "--epochs", "1", "--no-progress", "-o", "run"]
TRAIN_CASES = [
    Case("train-unknown-model", [*TRAIN, "--model", "mlpx"], "--model: unknown model 'mlpx'"),
    Case("train-hidden-0", [*TRAIN, "-m", "hidden=[0]"], "--model-opt"),
    Case("train-model-opt-syntax", [*TRAIN, "-m", "hidden"], "--model-opt: expected key=value"),
    Case("train-unknown-dataset", [*TRAIN, "--dataset", "mnsit"], "--dataset: unknown dataset 'mnsit'"),
    Case("train-data-opt-unknown", [*TRAIN, "--data-opt", "foo=1"], "--data-opt"),
    Case("train-data-opt-syntax", [*TRAIN, "--data-opt", "foo"], "--data-opt: expected key=value"),
    Case("train-csv-missing", [*TRAIN, "--dataset", "csv:{in}/nope.csv"], "--dataset"),
    Case("train-csv-header-only", [*TRAIN, "--dataset", "csv:{in}/h.csv", "--data-opt", "target=y"], "no data rows",
         {"h.csv": CSV_HEADER_ONLY}),
    Case("train-csv-not-utf8", [*TRAIN, "--dataset", "csv:{in}/l.csv", "--data-opt", "target=y"], "l.csv", {"l.csv": CSV_LATIN1}),
    Case("train-csv-no-target", [*TRAIN, "--dataset", "csv:{in}/d.csv"], "option 'target' is required", {"d.csv": CSV_OK}),
    Case("train-csv-target-typo", [*TRAIN, "--dataset", "csv:{in}/d.csv", "--data-opt", "target=yy"], "--data-opt: csv: target 'yy'",
         {"d.csv": CSV_OK}),
    Case("train-metric", [*TRAIN, "--metric", "val_acc"], "--metric: 'val_acc' is never recorded"),
    Case("train-device-gpu", [*TRAIN, "--device", "cuda:99"], "--device"),
    Case("train-device-unknown", [*TRAIN, "--device", "tpu"], "--device: unknown device 'tpu'"),
    Case("train-technique-unknown", [*TRAIN, "-t", "adamm"], "unknown technique 'adamm'"),
    Case("train-technique-knob", [*TRAIN, "-t", "dropout:p=1.5"], "technique dropout.p"),
    Case("train-technique-syntax", [*TRAIN, "-t", "adam:lr"], "--technique: expected key=value"),
    Case("train-epochs-0", [*TRAIN, "--epochs", "0"], "config.epochs"),
    Case("train-amp", [*TRAIN, "--amp", "fast"], "config.amp"),
    Case("train-seed-not-int", [*TRAIN, "--seed", "abc"], "--seed"),
    Case("train-config-missing", [*TRAIN, "-c", "{in}/nope.toml"], "nope.toml"),
    Case("train-config-not-utf8", [*TRAIN, "-c", "{in}/c.toml"], "c.toml: not UTF-8", {"c.toml": LATIN1}),
    Case("train-config-unknown-field", [*TRAIN, "-c", "{in}/c.toml"], "c.toml: unknown field 'epoch'", {"c.toml": "epoch = 3\n"}),
    Case("train-config-model", ["train", "-c", "{in}/c.toml", "--no-progress", "-o", "run"], "c.toml: model: unknown model",
         {"c.toml": CONFIG_OK + "model = 'mlpx'\n"}),
    Case("train-config-yaml-list", [*TRAIN, "-c", "{in}/c.yaml"], "c.yaml: expected a table", {"c.yaml": "- 1\n"}),
    Case("train-out-is-a-file", [*TRAIN[:-1], "f.txt"], "--out f.txt: is a file", {}, lambda work: (work / "f.txt").write_text("x")),
    Case("train-out-name-too-long", [*TRAIN[:-1], LONG], "--out: the folder name"),
    Case("train-resume-without-out", ["train", "--resume"], "--resume needs --out"),
    Case("train-folder-holds-a-run", TRAIN, "already holds a run", {}, lambda work: _run_folder(work / "run")),
]

REPORT_CASES = [
    Case("report-no-store", ["report", "o"], "o: no results.sqlite"),
    Case("report-store-not-sqlite", ["report", "o"], "o/results.sqlite: not a SQLite database", {}, lambda w: _garbage_store(w / "o")),
    Case("report-store-malformed", ["report", "o"], "o/results.sqlite: the results store is corrupted", {},
         lambda w: _malformed_store(w / "o")),
    Case("report-store-empty", ["report", "o"], "holds no study", {}, lambda w: _empty_store(w / "o")),
    Case("report-stored-spec-invalid", ["report", "o"], "results.sqlite: mode", {}, lambda w: _bad_spec_store(w / "o")),
    Case("report-name-too-long", ["report", LONG], "name too long"),
    Case("report-flag-unknown", ["report", "o", "--jsn"], "--jsn"),
]

REPRO_CASES = [
    Case("repro-unknown", ["repro", "engression-fig5"], "unknown reproduction 'engression-fig5'"),
    Case("repro-out-is-a-file", ["repro", "engression-fig4", "--quick", "-o", "f.txt"], "--out f.txt: is a file", {},
         lambda work: (work / "f.txt").write_text("x")),
    Case("repro-out-name-too-long", ["repro", "engression-fig4", "--quick", "-o", LONG], "--out: the folder name"),
    Case("repro-missing-name", ["repro"], "name a reproduction"),
]

A_CSV = "id,name\n1,anna\n2,bert\n3,carl\n"
AUDIT_CASES = [
    Case("audit-npy-missing", ["audit", "duplicates", "{in}/a.npy"], "duplicates: file not found"),
    Case("audit-npy-objects", ["audit", "duplicates", "{in}/o.npy"], "o.npy is not a numeric .npy array", {"o.npy": "objects"}),
    Case("audit-npy-three", ["audit", "duplicates", "{in}/a.npy", "{in}/a.npy", "{in}/a.npy"], "give one dataset spec"),
    Case("audit-mixed-arguments", ["audit", "duplicates", "digits", "{in}/a.npy"], "must both be .npy files"),
    Case("audit-against", ["audit", "duplicates", "digits", "--against", "train"], "--against"),
    Case("audit-unknown-dataset", ["audit", "duplicates", "mnsit"], "unknown dataset 'mnsit'"),
    Case("audit-out-is-a-file", ["audit", "duplicates", "digits", "--out", "f.txt"], "--out f.txt: is a file", {},
         lambda work: (work / "f.txt").write_text("x")),
    Case("audit-link-a-missing", ["audit", "link", "{in}/a.csv", "{in}/b.csv", "-c", "name", "--truth", "id"], "table A file not found"),
    Case("audit-link-header-only", ["audit", "link", "{in}/a.csv", "{in}/b.csv", "-c", "name", "--truth", "id"], "a.csv has no data rows",
         {"a.csv": "id,name\n", "b.csv": A_CSV}),
    Case("audit-link-not-utf8", ["audit", "link", "{in}/a.csv", "{in}/b.csv", "-c", "name", "--truth", "id"], "cannot read table A",
         {"a.csv": CSV_LATIN1, "b.csv": A_CSV}),
    Case("audit-link-column", ["audit", "link", "{in}/a.csv", "{in}/b.csv", "-c", "nme", "--truth", "id", "--folds", "0"], "column 'nme'",
         {"a.csv": A_CSV, "b.csv": A_CSV}),
    Case("audit-link-truth", ["audit", "link", "{in}/a.csv", "{in}/b.csv", "-c", "name", "--truth", "zz"], "--truth 'zz'",
         {"a.csv": A_CSV, "b.csv": A_CSV}),
    Case("audit-link-no-column", ["audit", "link", "{in}/a.csv", "{in}/b.csv", "--truth", "id"], "--column",
         {"a.csv": A_CSV, "b.csv": A_CSV}),
]

CLI_CASES = STUDY_CASES + TRAIN_CASES + REPORT_CASES + REPRO_CASES + AUDIT_CASES


def _files(folder: Path) -> set[str]:
    """Every path under ``folder`` (relative), the lock file excluded."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != LOCK}


def _write_inputs(case: Case, inputs: Path) -> None:
    inputs.mkdir()
    for name, content in case.files.items():
        if name.endswith(".npy"):
            np.save(inputs / name, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        elif isinstance(content, bytes):
            (inputs / name).write_bytes(content)
        else:
            (inputs / name).write_text(content.replace("{in}", str(inputs)))


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_a_bad_input_is_one_line_exit_2_and_leaves_nothing(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inputs, work = tmp_path / "in", tmp_path / "work"
    _write_inputs(case, inputs)
    work.mkdir()
    if case.prepare is not None:
        case.prepare(work)
    before = _files(work)
    monkeypatch.chdir(work)
    monkeypatch.delenv("REGLAB_DEBUG", raising=False)
    result = CliRunner().invoke(app, [a.replace("{in}", str(inputs)) for a in case.args])
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert case.expect in lines[0], lines[0]
    assert _files(work) == before, f"left behind: {_files(work) - before}"
    assert not (work / HOLDER).exists() and not any(work.rglob(HOLDER))


def test_there_are_at_least_80_bad_inputs_across_every_command() -> None:
    commands = {c.args[0] for c in CLI_CASES}
    assert commands == {"study", "train", "report", "repro", "audit"}
    assert len(CLI_CASES) + len(LIBRARY_CASES) >= 80
    assert len({c.id for c in CLI_CASES}) == len(CLI_CASES)


def test_a_locked_folder_is_refused_naming_the_holder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock is held here on another file descriptor (flock conflicts between descriptors even in
    one process); the holder record names the process."""
    (tmp_path / "s.json").write_text(study())
    out = tmp_path / "o"
    _store(out, "tiny")
    (out / HOLDER).write_text(json.dumps({"pid": 4242, "host": "elsewhere", "command": "study", "started": "today"}))
    before = _files(out)
    with filelock.FileLock(out / LOCK, timeout=0):
        for args in (["study", str(tmp_path / "s.json"), "-o", str(out)], ["report", str(out)]):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
            assert "in use by another reglab process (pid 4242 on elsewhere, `reglab study` started today)" in result.stderr
    assert _files(out) == before


# ---- the library API: the same errors as exceptions ------------------------------------------
def _csv(tmp: Path, text: str | bytes) -> str:
    path = tmp / "d.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return f"csv:{path}"


def _fit(tmp: Path, **kw: object) -> None:
    fit(RunConfig(**{"dataset": "digits", "model_options": {"hidden": [8]}, "epochs": 1, **kw}), run_dir=tmp / "run",
        progress=False)


def _load_ckpt(tmp: Path, content: bytes) -> None:
    (tmp / "c.pt").write_bytes(content)
    checkpoint.load(tmp / "c.pt")


def _validate(tmp: Path, **change: object) -> None:
    validate_study(parse_spec(json.loads(study(**change)), "s.json"), "s.json")


LIBRARY_CASES = [
    ("fit-unknown-model", lambda t: _fit(t, model="mlpx"), "unknown model 'mlpx'"),
    ("fit-metric-not-recorded", lambda t: _fit(t, metric="val_acc"), "metric 'val_acc' is not recorded"),
    ("fit-device", lambda t: _fit(t, device="cuda:99"), "device"),
    ("fit-seeds-repeated", lambda t: fit(RunConfig(dataset="digits"), seeds=[0, 0], run_dir=t / "run"), "seeds must be distinct"),
    ("parse-config-epochs", lambda t: parse_config({"epochs": 0}), "config.epochs"),
    ("parse-config-unknown", lambda t: parse_config({"epoch": 3}), "unknown field 'epoch'"),
    ("load-unknown-dataset", lambda t: load("mnsit"), "unknown dataset 'mnsit'"),
    ("load-csv-header-only", lambda t: load(_csv(t, CSV_HEADER_ONLY), target="y"), "no data rows"),
    ("load-csv-not-utf8", lambda t: load(_csv(t, CSV_LATIN1), target="y"), "d.csv"),
    ("load-file-not-utf8", lambda t: (t / "c.toml").write_bytes(LATIN1) and load_file(t / "c.toml"), "c.toml: not UTF-8"),
    ("parse-spec-duplicate-steps", lambda t: parse_spec(json.loads(study(steps=STEPS + STEPS)), "s.json"), "s.json: steps"),
    ("checkpoint-empty", lambda t: _load_ckpt(t, b""), "c.pt: empty checkpoint"),
    ("checkpoint-random", lambda t: _load_ckpt(t, os.urandom(1000)), "c.pt: not a reglab checkpoint"),
    ("checkpoint-truncated", lambda t: _load_ckpt(t, checkpoint.MAGIC + os.urandom(20)), "c.pt: corrupted checkpoint"),
    ("validate-study-device", lambda t: _validate(t, base={**BASE, "device": "cuda:99"}), "s.json: base.device"),
    ("validate-study-report-metric", lambda t: _validate(t, report_metric="test_f1_micro"), "s.json: report_metric"),
]


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=lambda c: c[0])
def test_the_library_raises_one_line_errors_and_writes_nothing(case: tuple, tmp_path: Path) -> None:
    _, call, expect = case
    inputs = set(tmp_path.iterdir())
    with pytest.raises(ReglabError) as err:
        call(tmp_path)
    assert "\n" not in str(err.value) and expect in str(err.value), str(err.value)
    assert not (tmp_path / "run").exists()
    assert set(tmp_path.iterdir()) - inputs <= {tmp_path / "c.toml", tmp_path / "d.csv", tmp_path / "c.pt"}


# ---- the real entry point --------------------------------------------------------------------
def test_the_console_entry_point_prints_one_line(tmp_path: Path) -> None:
    """One case through a real `python -m reglab.cli` (test_faults runs the SIGINT and SIGKILL ones)."""
    args, expect = ["study", "{in}/s.json", "-o", "out"], "s.json: base.model: unknown model"
    inputs = tmp_path / "in"
    _write_inputs(Case("x", args, expect, {"s.json": base(model="mlpx")}), inputs)
    env = {k: v for k, v in os.environ.items() if k != "REGLAB_DEBUG"}
    proc = subprocess.run([sys.executable, "-m", "reglab.cli", *(a.replace("{in}", str(inputs)) for a in args)],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and expect in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "reglab-runs").exists()


def test_a_batch_larger_than_the_training_split_is_said_in_one_warning_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not an error (full-batch training of a tiny split is legitimate) but never silent."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*TRAIN, "--batch-size", "100000"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(lines) == 1 and "batch_size 100000 is larger than the training split of 'digits' (1293 rows)" in lines[0]
    assert "Warning" not in result.stderr.replace(lines[0], "")  # no Python-format warning beside it


# ---- text from users in the report -------------------------------------------------------------
def test_user_text_is_escaped_for_markdown_html_and_matplotlib(tmp_path: Path) -> None:
    """A step name with unbalanced mathtext (matplotlib used to parse `$...$` and crash on every
    `reglab report`), Markdown and HTML markup shows as written in every format."""
    name = r"lr $10^{-3$ | *bold* <script>x</script>"
    (tmp_path / "s.json").write_text(study(description="# not a heading\n- nor a list", steps=[
        {"name": name, "techniques": [{"name": "adam", "lr": 3e-3}]}]))
    result = CliRunner().invoke(app, ["study", str(tmp_path / "s.json"), "-o", str(tmp_path / "o"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(app, ["report", str(tmp_path / "o")]).exit_code == 0
    md = (tmp_path / "o" / "report" / "report.md").read_text()
    assert r"lr \$10^{-3\$ \| \*bold\* \<script\>x\</script\>" in md
    assert "\\# not a heading\n\\- nor a list" in md
    page = (tmp_path / "o" / "report" / "report.html").read_text()
    assert "lr $10^{-3$ | *bold* &lt;script&gt;x&lt;/script&gt;" in page and "<script>" not in page
    assert "<p># not a heading\n- nor a list</p>" in page
    assert (tmp_path / "o" / "report" / "configurations.png").stat().st_size > 0
