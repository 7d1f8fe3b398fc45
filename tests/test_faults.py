"""Faults (issue 16): corrupted, empty and truncated checkpoints, interrupted checkpoint writes, a
corrupted results store, a read-only folder and a full disk (simulated: OSError / SQLite errors
injected with monkeypatch), two processes on one folder (the lock), SIGINT, and SIGKILL during a
checkpoint write and during a store write; with ``--runslow``, ten SIGKILLs at random moments."""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reglab import RunConfig
from reglab.engine.loop import fit
from reglab.cli.app import INTERRUPTED, app
from reglab.cli.output import HOLDER, folder_lock
from reglab.engine import checkpoint
from reglab.engine.callbacks import Callback
from reglab.errors import ReglabWarning
from reglab.study.store import Store

CONFIG = RunConfig(dataset="digits", model="mlp", model_options={"hidden": [16]}, epochs=4, batch_size=64,
                   techniques=[{"name": "adam", "lr": 3e-3}, {"name": "dropout", "p": 0.2}])

STUDY = {"name": "faulty", "seeds": 2, "metric": "val_accuracy",
         "base": {"dataset": "digits", "model": "mlp", "model_options": {"hidden": [16]}, "epochs": 3, "batch_size": 64},
         "steps": [{"name": "adam", "techniques": [{"name": "adam", "lr": 3e-3}]}]}
ARGS = ["--grouping", "single", "--no-progress"]


def timeless(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


class CrashAt(Callback):
    """Stops the run at the end of epoch ``epoch``, before that epoch's checkpoint is written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, run) -> None:  # noqa: ANN001
        if run.epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def whole() -> list[dict]:
    """The history of CONFIG trained without interruption (one thread, as every test here)."""
    torch.set_num_threads(1)
    return timeless(fit(CONFIG, progress=False)[0].history)


def _cut(folder: Path) -> None:
    """A run stopped during epoch 3: last.pt holds epoch 2, last.prev.pt epoch 1."""
    with pytest.raises(KeyboardInterrupt):
        fit(CONFIG, run_dir=folder, callbacks=(CrashAt(3),), progress=False)
    assert checkpoint.load(folder / "last.pt")["epoch"] == 2 and checkpoint.load(folder / "last.prev.pt")["epoch"] == 1


def _random_middle(path: Path) -> None:
    """4 KB of random bytes in the middle of the file, same size (the issue's experiment)."""
    data = bytearray(path.read_bytes())
    n = min(4096, len(data) // 4)
    data[len(data) // 2: len(data) // 2 + n] = os.urandom(n)
    path.write_bytes(bytes(data))


def _tensor_bytes(path: Path) -> None:
    """64 bytes inside the largest tensor's data: a zip archive that torch.load reads without
    complaint (it does not check the records' CRC-32), with wrong weights."""
    data = bytearray(path.read_bytes())
    start = len(checkpoint.MAGIC) + 32  # the payload after reglab's header: torch.save's zip archive
    archive = zipfile.ZipFile(io.BytesIO(bytes(data[start:])))
    record = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    offset = start + record.header_offset
    name, extra = struct.unpack("<HH", data[offset + 26: offset + 30])
    first = offset + 30 + name + extra
    data[first: first + 64] = os.urandom(64)
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "tensor-bytes": _tensor_bytes,
    "random-4k-in-the-middle": _random_middle,
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "first-bytes": lambda p: p.write_bytes(b"\0" * 16 + p.read_bytes()[16:]),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_a_corrupted_last_checkpoint_is_never_used_the_previous_one_is(corrupt, tmp_path: Path, whole: list[dict]) -> None:
    _cut(tmp_path)
    corrupt(tmp_path / "last.pt")
    with pytest.warns(ReglabWarning, match=r"last\.pt: .*moved aside as last\.pt\.corrupt.*resuming from .*last\.prev\.pt \(epoch 1\)"):
        resumed = fit(CONFIG, run_dir=tmp_path, resume=True, progress=False)[0]
    assert timeless(resumed.history) == whole  # the same run as without the fault
    assert (tmp_path / "last.pt.corrupt").exists()
    assert checkpoint.load(tmp_path / "last.pt")["epoch"] == 4 and checkpoint.load(tmp_path / "best.pt")["version"]


def test_with_no_usable_checkpoint_the_run_restarts_and_says_so(tmp_path: Path, whole: list[dict]) -> None:
    _cut(tmp_path)
    (tmp_path / "last.pt").write_bytes(b"")
    _random_middle(tmp_path / "last.prev.pt")
    with pytest.warns(ReglabWarning, match="empty checkpoint.*corrupted checkpoint.*training this run from the start"):
        resumed = fit(CONFIG, run_dir=tmp_path, resume=True, progress=False)[0]
    assert timeless(resumed.history) == whole


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted between writing the second best.pt's bytes and renaming them into place, the
    previous best.pt stays intact (no half-copy) and the temporary file is removed."""
    real, seen = os.replace, {}

    def interrupted(src: str, dst: str) -> None:
        if Path(dst).name == "best.pt" and Path(dst).exists():
            seen["old"] = Path(dst).read_bytes()
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(CONFIG, run_dir=tmp_path, progress=False)
    monkeypatch.undo()
    assert (tmp_path / "best.pt").read_bytes() == seen["old"] and checkpoint.load(tmp_path / "best.pt")["epoch"] >= 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_temporary_files_of_a_killed_writer_are_removed_on_the_next_start(tmp_path: Path) -> None:
    _cut(tmp_path)
    leftovers = [tmp_path / ".last.pt.k1ll3d.tmp", tmp_path / ".best.pt.x.tmp", tmp_path / ".last.prev.pt.123.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a checkpoint")
    fit(CONFIG, run_dir=tmp_path, resume=True, progress=False)
    assert not any(p.exists() for p in leftovers)


# ---- the study CLI under faults ----------------------------------------------------------------
def _study(folder: Path, *extra: str) -> object:
    path = folder.parent / "faulty.json"
    path.write_text(json.dumps(STUDY))
    return CliRunner().invoke(app, ["study", str(path), "-o", str(folder), *ARGS, *extra])


def _rows(folder: Path) -> list[dict]:
    table = json.loads((folder / "report" / "report.json").read_text())
    return [{k: v for k, v in r.items() if k not in ("seconds",)} for r in table["rows"]]


def _integrity(folder: Path) -> str:
    with sqlite3.connect(folder / "results.sqlite") as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def _one_error(result: object) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fault-free study folder."""
    folder = tmp_path_factory.mktemp("clean") / "out"
    assert _study(folder).exit_code == 0
    return folder


def test_a_full_disk_while_writing_best_pt_is_one_line_and_the_rerun_completes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean: Path) -> None:
    real, calls = checkpoint._write, []

    def full(blob: bytes, path: Path) -> None:
        calls.append(path.name)
        if calls.count("best.pt") == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(blob, path)

    monkeypatch.setattr(checkpoint, "_write", full)
    line = _one_error(_study(tmp_path / "out"))
    assert "cannot write checkpoint in" in line and "no space left on device" in line
    monkeypatch.undo()
    assert _integrity(tmp_path / "out") == "ok"
    assert _study(tmp_path / "out").exit_code == 0
    assert _rows(tmp_path / "out") == _rows(clean)


def test_a_full_disk_under_the_store_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean: Path) -> None:
    """Every store write fails once the disk is full ("database or disk is full"), as on a real disk."""
    writes = {"n": 0}

    def full(*_: object, **__: object) -> None:
        writes["n"] += 1
        if writes["n"] > 5:
            raise sqlite3.OperationalError("database or disk is full")

    for name in ("start_run", "add_epoch", "finish_run", "fail_run"):
        real = getattr(Store, name)
        monkeypatch.setattr(Store, name, lambda self, *a, _real=real, **k: (full(), _real(self, *a, **k))[1])
    line = _one_error(_study(tmp_path / "out"))
    assert "results.sqlite: disk full while writing the results store" in line
    monkeypatch.undo()
    assert _integrity(tmp_path / "out") == "ok"
    assert _study(tmp_path / "out").exit_code == 0 and _rows(tmp_path / "out") == _rows(clean)


@pytest.mark.parametrize("code, advice", [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")])
def test_a_read_only_or_forbidden_folder_is_one_line(code: int, advice: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated (the tests may run as root, whom permissions do not stop)."""
    def refuse(blob: bytes, path: Path) -> None:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(checkpoint, "_write", refuse)
    line = _one_error(_study(tmp_path / "out"))
    assert "cannot write checkpoint" in line and advice in line


def test_a_full_disk_while_writing_the_report_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean: Path) -> None:
    folder = tmp_path / "out"
    shutil.copytree(clean, folder)
    real = Path.write_text

    def full(self: Path, *a: object, **k: object) -> int:
        if self.name == "report.md":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    line = _one_error(CliRunner().invoke(app, ["report", str(folder)]))
    assert "report.md: no space left on device" in line


def test_a_store_corrupted_after_a_study_is_one_line_for_study_and_report(tmp_path: Path, clean: Path) -> None:
    folder = tmp_path / "out"
    shutil.copytree(clean, folder)
    data = bytearray((folder / "results.sqlite").read_bytes())
    data[4096:] = os.urandom(len(data) - 4096)
    (folder / "results.sqlite").write_bytes(bytes(data))
    for result in (_study(folder), CliRunner().invoke(app, ["report", str(folder)])):
        assert "results.sqlite: the results store is corrupted" in _one_error(result)


# ---- processes ---------------------------------------------------------------------------------
def _python(script: str, *args: str, cwd: Path, **kw: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], cwd=cwd, **kw)


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, "the child ended early"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_second_process_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path: Path) -> None:
    folder, ready = tmp_path / "out", tmp_path / "ready"
    holder = _python("""
        import sys, time
        from pathlib import Path
        from reglab.cli.output import folder_lock
        with folder_lock(Path(sys.argv[1]), "study"):
            Path(sys.argv[2]).touch()
            time.sleep(600)
    """, str(folder), str(ready), cwd=tmp_path)
    try:
        _wait_for(ready, holder)
        line = _one_error(_study(folder))
        assert f"in use by another reglab process (pid {holder.pid} on " in line and "`reglab study` started" in line
        assert not (folder / "results.sqlite").exists()  # refused before touching anything
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with pytest.warns(ReglabWarning, match=f"taking over from a reglab process .*pid {holder.pid} "):
        with folder_lock(folder, "study"):
            assert json.loads((folder / HOLDER).read_text())["pid"] == os.getpid()
    assert not (folder / HOLDER).exists()


def test_sigint_says_how_to_resume_exits_130_and_the_store_stays_consistent(tmp_path: Path) -> None:
    study = {**STUDY, "seeds": 1, "base": {**STUDY["base"], "epochs": 4, "batch_size": 32}}
    (tmp_path / "s.json").write_text(json.dumps(study))
    folder = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "reglab.cli", "study", str(tmp_path / "s.json"), "-o", str(folder), *ARGS],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # interrupt once an epoch is stored
        if (folder / "results.sqlite").exists():
            with sqlite3.connect(folder / "results.sqlite") as db:
                if db.execute("SELECT name FROM sqlite_master WHERE name = 'epochs'").fetchone() and \
                        db.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] >= 1:
                    break
        assert proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert lines and lines[-1] == INTERRUPTED and "Traceback" not in stderr, stderr
    assert _integrity(folder) == "ok"
    assert not (folder / ".reglab.lock.json").exists()  # the lock was released
    result = CliRunner().invoke(app, ["study", str(tmp_path / "s.json"), "-o", str(folder), *ARGS])
    assert result.exit_code == 0, result.output
    assert set(Store(folder / "results.sqlite").statuses().values()) == {"done"}


def test_sigkill_during_a_checkpoint_write_resumes_from_the_last_complete_one(tmp_path: Path, whole: list[dict]) -> None:
    """The child is killed inside the real write of epoch 3's last.pt (bytes written, not yet renamed)."""
    ready = tmp_path / "ready"
    child = _python("""
        import os, sys, time
        from pathlib import Path
        from reglab.config import RunConfig
        from reglab.engine import checkpoint
        from reglab.engine.loop import fit
        checkpoint.torch.set_num_threads(1)  # as in this process: the same floating-point sums
        real_write, real_fsync, lasts = checkpoint._write, os.fsync, []
        def write(blob, path):
            lasts.append(path.name == "last.pt")
            real_write(blob, path)
        def fsync(fd):
            if lasts[-1] and sum(lasts) == 3:  # inside epoch 3's write of last.pt, before its rename
                Path(sys.argv[2]).touch()
                time.sleep(600)
            real_fsync(fd)
        checkpoint._write, checkpoint.os.fsync = write, fsync
        fit(RunConfig.model_validate_json(sys.argv[3]), run_dir=sys.argv[1], progress=False)
    """, str(tmp_path / "run"), str(ready), CONFIG.model_dump_json(), cwd=tmp_path)
    try:
        _wait_for(ready, child)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert len(list((tmp_path / "run").glob(".last.pt.*.tmp"))) == 1  # the interrupted write
    resumed = fit(CONFIG, run_dir=tmp_path / "run", resume=True, progress=False)[0]
    assert timeless(resumed.history) == whole
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_sigkill_inside_a_store_transaction_leaves_a_consistent_store(tmp_path: Path, clean: Path) -> None:
    """The child is killed after a store write executed and before it committed; SQLite's journal
    rolls it back, and the rerun completes to the fault-free table."""
    (tmp_path / "faulty.json").write_text(json.dumps(STUDY))
    folder, ready = tmp_path / "out", tmp_path / "ready"
    child = _python("""
        import sys, time
        from contextlib import contextmanager
        from pathlib import Path
        from reglab.cli.app import main
        from reglab.study.store import Store
        real, calls, ready = Store._connect, [], Path(sys.argv[1])
        @contextmanager
        def connect(self):
            with real(self) as db:
                yield db
                calls.append(1)
                if len(calls) == 12:  # a few epochs in: inside the transaction, before its commit
                    ready.touch()
                    time.sleep(600)
        Store._connect = connect
        sys.argv = ["reglab", *sys.argv[2:]]
        main()
    """, str(ready), "study", str(tmp_path / "faulty.json"), "-o", str(folder), *ARGS, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(ready, child)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert (folder / "results.sqlite-journal").exists()  # the uncommitted transaction
    assert _integrity(folder) == "ok"
    assert _study(folder).exit_code == 0
    assert _rows(folder) == _rows(clean)


@pytest.mark.slow
def test_ten_sigkills_at_random_moments_each_rerun_gives_the_same_table(tmp_path: Path) -> None:
    """A small study killed with SIGKILL at 10 seeded random moments under the default flags (the
    grouping rule reads no clock); after each re-run the table equals the uninterrupted one and no
    run that had finished was trained again."""
    import random

    study = {**STUDY, "base": {**STUDY["base"], "epochs": 6, "batch_size": 32},
             "steps": [*STUDY["steps"], {"name": "dropout", "techniques": [{"name": "dropout", "p": 0.2}]}]}
    (tmp_path / "s.json").write_text(json.dumps(study))

    def command(folder: Path) -> list[str]:
        return [sys.executable, "-m", "reglab.cli", "study", str(tmp_path / "s.json"), "-o", str(folder), "--no-progress"]

    started = time.time()
    subprocess.run(command(tmp_path / "clean"), check=True, cwd=tmp_path, capture_output=True)
    duration = time.time() - started
    rng = random.Random(16)
    for trial in range(10):
        folder = tmp_path / f"killed-{trial}"
        proc = subprocess.Popen(command(folder), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 0.95) * duration)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        finished = {}
        if (folder / "results.sqlite").exists():
            assert _integrity(folder) == "ok"
            with sqlite3.connect(folder / "results.sqlite") as db:
                finished = dict(((k, s), f) for k, s, f in db.execute(
                    "SELECT config_key, seed, finished FROM runs WHERE status = 'done'"))
        subprocess.run(command(folder), check=True, cwd=tmp_path, capture_output=True)
        with sqlite3.connect(folder / "results.sqlite") as db:
            after = dict(((k, s), f) for k, s, f in db.execute("SELECT config_key, seed, finished FROM runs"))
        assert all(after[key] == stamp for key, stamp in finished.items()), f"trial {trial}: a finished run was retrained"
        assert _rows(folder) == _rows(tmp_path / "clean"), f"trial {trial}"
