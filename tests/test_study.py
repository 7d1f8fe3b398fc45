"""Studies: spec validation, the four modes' plans, paired seeds, the store, the report, growing a
study in place, the same numbers on every run, a study killed with SIGKILL and resumed, executors."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from reglab.techniques import resolve_techniques
from reglab.errors import ReglabError
from reglab.study.builtin import BUILTIN, resolve
from reglab.study.plan import order_paths, plan
from reglab.engine import checkpoint as ckpt
from reglab.engine.run import RunResult
from reglab.study import statistics as st
from reglab.study.report import build_table, render
from reglab.study.runner import run_study
from reglab.study.spec import load_spec, parse_spec
from reglab.study.store import Store

# digits (scikit-learn, 1,797 images 8x8) is offline and trains in a fraction of a second per epoch
BASE = {"dataset": "digits", "model": "mlp", "model_options": {"hidden": [32]}, "epochs": 3, "batch_size": 64}


def spec(**kw):
    raw = {
        "name": "tiny", "mode": "incremental", "seeds": 2, "metric": "val_accuracy", "base": BASE,
        "baseline": [{"name": "sgd", "lr": 0.01, "momentum": 0.0}],
        "steps": [{"name": "adam", "techniques": [{"name": "adam", "lr": 3e-3}]},
                  {"name": "dropout", "techniques": [{"name": "dropout", "p": 0.1}]},
                  {"name": "smoothing", "techniques": [{"name": "label_smoothing", "eps": 0.1}]}],
    }
    raw.update(kw)
    return parse_spec(raw)


def names(planned):
    """The effective techniques of each configuration (a later optimizer replaces an earlier one)."""
    return [[t.name for t in resolve_techniques(p.config.techniques)] for p in planned]


# ---- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"modee": "isolated"}, "unknown field 'modee'"),
    ({"mode": "random"}, "mode"),
    ({"seeds": 0}, "seeds"),
    ({"base": {**BASE, "epochs": -1}}, "epochs"),
    ({"base": {**BASE, "seed": 3}}, "seed"),
    ({"steps": [{"name": "x", "techniques": [{"name": "adamm"}]}]}, r"steps\[0\] \(x\).techniques\[0\].*did you mean 'adam'"),
    ({"steps": [{"name": "x", "techniques": [{"name": "dropout", "p": 1.5}]}]}, r"steps\[0\] \(x\).*p"),
    ({"steps": [{"name": "x", "set": {"batch_sise": 3}}]}, r"steps\[0\] \(x\).set.*batch_sise"),
    ({"steps": [{"name": "x"}]}, "adds no technique"),
    ({"steps": [{"name": "x", "techniques": [{"name": "adam"}, {"name": "sgd"}]}]},
     r"steps\[0\] \(x\).techniques: techniques 'adam' and 'sgd': both optimizers"),
    ({"baseline": [{"name": "batchnorm"}, {"name": "layernorm"}]}, "baseline: .*'batchnorm' and 'layernorm'"),
    ({"seeds": {"min": 5, "max": 3}}, "max"),
])
def test_bad_study_files_get_one_line_errors_naming_the_field(change, message):
    with pytest.raises(ReglabError, match=message) as err:
        spec(**change)
    assert "\n" not in str(err.value)


def test_builtin_studies_are_valid_and_resolvable(tmp_path):
    assert "quickstart" in BUILTIN
    for name, (path, summary) in BUILTIN.items():
        assert load_spec(path).name == name and summary
    assert resolve("quickstart") == BUILTIN["quickstart"][0]
    with pytest.raises(ReglabError, match="did you mean 'quickstart'"):
        resolve("quikstart")
    with pytest.raises(ReglabError, match="not found"):
        resolve(str(tmp_path / "missing.toml"))


# ---- modes -------------------------------------------------------------------------------------
def test_incremental_adds_steps_cumulatively_in_order():
    planned = plan(spec())
    assert [p.label for p in planned] == ["baseline", "+ adam", "+ dropout", "+ smoothing"]
    # adam replaces the baseline's sgd (one optimizer slot); the others accumulate
    assert names(planned) == [["sgd"], ["adam"], ["adam", "dropout"], ["adam", "dropout", "label_smoothing"]]
    assert [p.compare_to for p in planned[1:]] == [p.key for p in planned[:-1]]


def test_isolated_and_leave_one_out():
    iso = plan(spec(mode="isolated"))
    assert names(iso) == [["sgd"], ["adam"], ["sgd", "dropout"], ["sgd", "label_smoothing"]]
    assert {p.compare_to for p in iso[1:]} == {iso[0].key}
    loo = plan(spec(mode="leave-one-out"))
    assert [p.label for p in loo] == ["baseline", "all steps", "all - adam", "all - dropout", "all - smoothing"]
    assert names(loo)[2] == ["sgd", "dropout", "label_smoothing"]
    assert all(p.compare_to == loo[1].key for p in loo[2:])


def test_orders_share_prefixes_and_cover_every_permutation_path():
    s = spec(mode="orders", orders=4, orders_seed=1)
    planned = plan(s)
    keys = {p.key for p in planned}
    paths = order_paths(s)
    assert len(paths) == 4
    for path in paths:
        assert [step for step, _, _ in path] != [] and sorted(step for step, _, _ in path) == ["adam", "dropout", "smoothing"]
        assert all(before in keys and after in keys for _, before, after in path)
    assert len(keys) == len(planned)  # deduplicated: a shared prefix is trained once
    assert len(planned) < 1 + 4 * 3


def test_seeds_are_paired_across_configurations(tmp_path):
    """Same seed, same split and initialization: the baseline and a configuration whose only step is
    a no-op (label smoothing eps 0) give identical results per seed, and differ between seeds."""
    s = spec(seeds=2, steps=[{"name": "noop", "techniques": [{"name": "label_smoothing", "eps": 0.0}]}])
    run_study(s, tmp_path, progress=False, grouping="single")
    runs = Store(tmp_path / "results.sqlite").runs()
    by = {(r.label, r.seed): r.metrics["test_accuracy"] for r in runs}
    for seed in (0, 1):
        assert by[("baseline", seed)] == by[("+ noop", seed)]
    assert by[("baseline", 0)] != by[("baseline", 1)]


# ---- report ------------------------------------------------------------------------------------
def test_study_report_table_matches_the_store(tmp_path):
    s = spec()
    summary = run_study(s, tmp_path, progress=False)
    assert summary["errors"] == []
    store = Store(tmp_path / "results.sqlite")
    table = render(s, store, tmp_path / "report")
    rows = {r["label"]: r for r in table["rows"]}
    runs = store.runs()
    assert len(runs) == 4 * 2 and all(r.status == "done" for r in runs)
    for label, row in rows.items():
        vals = [r.metrics["test_accuracy"] for r in runs if r.label == label]
        assert row["report_mean"] == pytest.approx(sum(vals) / 2)
        assert row["seeds"] == 2
    # every comparison is statistics.compare of the stored per-seed values, Holm over the family
    values = {label: {r.seed: r.metrics["test_accuracy"] for r in runs if r.label == label} for label in rows}
    comps = {c["name"]: c for c in table["comparisons"]}
    assert set(comps) == {"adam", "dropout", "smoothing", "+ smoothing vs baseline"}
    for c in comps.values():
        ref = st.compare(values[c["a"]], values[c["b"]], higher_is_better=True)
        assert c["mean"] == pytest.approx(ref.mean) and c["p_t"] == (pytest.approx(ref.p_t) if ref.p_t == ref.p_t else None)
    assert [c["p_holm"] for c in table["comparisons"]] == pytest.approx(
        [x if x == x else None for x in st.holm([c["p_t"] if c["p_t"] is not None else float("nan") for c in table["comparisons"]])])
    for f in ("report.md", "report.html", "report.json", "timing.json", "learning_curves.png", "configurations.png",
              "comparisons.png"):
        assert (tmp_path / "report" / f).stat().st_size > 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Verdict" in md and "+ smoothing" in md
    html = (tmp_path / "report" / "report.html").read_text()
    assert "data:image/png;base64," in html  # self-contained
    # a second run trains nothing and the report is re-rendered from the store alone
    summary = run_study(s, tmp_path, progress=False)
    assert (summary["trained"], summary["reused"]) == (0, 8)
    render(s, Store(tmp_path / "results.sqlite"), tmp_path / "report2")
    a = json.loads((tmp_path / "report" / "report.json").read_text())
    b = json.loads((tmp_path / "report2" / "report.json").read_text())
    assert a["runs"]["last_invocation"] == {"planned": 8, "reused": 0, "trained": 8}
    assert b["runs"]["last_invocation"] == {"planned": 8, "reused": 8, "trained": 0}
    a.pop("runs"), b.pop("runs")
    assert a == b


def test_a_study_grows_in_place_training_only_what_is_new(tmp_path):
    s = spec(seeds=2, steps=spec().steps[:2])
    assert run_study(s, tmp_path, progress=False)["trained"] == 3 * 2
    store = Store(tmp_path / "results.sqlite")
    stamps = {(r.config_key, r.seed): r.metrics["test_loss"] for r in store.runs()}
    # more seeds: only the new seeds of every configuration train
    more = run_study(spec(seeds=3, steps=spec().steps[:2]), tmp_path, progress=False)
    assert (more["trained"], more["reused"]) == (3, 6)
    # a new step and a changed knob: only the configurations whose resolved definition changed
    edited = spec(seeds=3, steps=[spec().steps[0], {"name": "dropout", "techniques": [{"name": "dropout", "p": 0.2}]},
                                  spec().steps[2]])
    again = run_study(edited, tmp_path, progress=False)
    assert (again["trained"], again["reused"]) == (2 * 3, 2 * 3)  # baseline and + adam reused
    assert {(r.config_key, r.seed): r.metrics["test_loss"] for r in store.runs() if (r.config_key, r.seed) in stamps} == stamps
    assert store.definitions() == 3
    # the same configuration spelled with its default knobs is the same run
    spelled = spec(seeds=3, steps=[{"name": "adam", "techniques": [{"name": "adam", "lr": 3e-3, "beta1": 0.9}]},
                                   *edited.steps[1:]])
    assert run_study(spelled, tmp_path, progress=False)["trained"] == 0
    # one folder holds one study
    with pytest.raises(ReglabError, match="holds study 'tiny'"):
        run_study(spec(name="other"), tmp_path, progress=False)


def test_cli_seeds_extends_a_study_in_place(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(STUDY_TOML.replace("epochs = 30", "epochs = 2"))
    out = str(tmp_path / "o")
    subprocess.run(_cli("study", str(path), "-o", out, "--no-progress"), check=True, capture_output=True)
    grown = subprocess.run(_cli("study", str(path), "-o", out, "--no-progress", "--seeds", "3"), check=True,
                           capture_output=True, text=True)
    assert "runs: 6 planned, 4 found finished" in grown.stderr and "2 trained" in grown.stderr
    md = (tmp_path / "o" / "report" / "report.md").read_text()
    assert "found 4 of 6 runs finished and trained 2" in md


def _result(seed: int, **metrics: float) -> RunResult:
    return RunResult(seed, {}, [{"epoch": 1, **metrics}], {"epochs": 1, "best_epoch": 1, **metrics})


@pytest.mark.parametrize("mode", ["incremental", "isolated", "leave-one-out", "orders"])
def test_the_best_configuration_is_chosen_on_validation_never_on_test(mode, tmp_path):
    """A store where each configuration's test accuracy ranks it the opposite way of its validation
    accuracy: the report's best configuration is the validation one, in every mode."""
    s = spec(mode=mode, orders=2)
    store = Store(tmp_path / "results.sqlite")
    store.save_definition(s.name, s.model_dump())
    planned = plan(s)
    for i, p in enumerate(planned):
        for seed in s.seed_list:
            store.start_run(p.key, seed, p.label, p.config.model_dump(), "cpu", 1)
            store.finish_run(p.key, _result(seed, val_accuracy=0.5 + 0.01 * i + 0.001 * seed,
                                            test_accuracy=0.9 - 0.01 * i - 0.001 * seed))
    table = build_table(s, store)
    assert table["best_configuration"]["label"] == planned[-1].label  # the highest validation accuracy
    assert table["best_configuration"]["chosen_on"] == "validation"
    worst_on_test = min(table["rows"], key=lambda r: r["report_mean"])
    assert table["best_configuration"]["key"] == worst_on_test["key"]


def test_diverged_runs_are_shown_and_left_out_of_the_means(tmp_path):
    s = spec(seeds=3, steps=[{"name": "huge lr", "techniques": [{"name": "sgd", "lr": 1e12, "momentum": 0.0}]}])
    run_study(s, tmp_path, progress=False, grouping="single")
    store = Store(tmp_path / "results.sqlite")
    table = render(s, store, tmp_path / "report")
    row = table["rows"][1]
    assert row["diverged"] == 3 and all(v is None for v in row["per_seed"].values())
    assert row["report_mean"] is None or row["report_mean"] != row["report_mean"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "diverged, left out" in md
    raw = (tmp_path / "report" / "report.json").read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    json.loads(raw)  # strict JSON


# ---- crash and resume --------------------------------------------------------------------------
STUDY_TOML = """
name = "killme"
mode = "incremental"
seeds = 2
metric = "val_loss"
baseline = [{ name = "adam", lr = 3e-3 }, { name = "plateau", patience = 1, factor = 0.5 },
            { name = "early_stopping", patience = 4 }]

[base]
dataset = "digits"
model = "mlp"
model_options = { hidden = [64] }
epochs = 30
batch_size = 16

[[steps]]
name = "dropout"
techniques = [{ name = "dropout", p = 0.2 }]
"""


def _cli(*args):
    return [sys.executable, "-m", "reglab.cli", *args]


def _status(db):
    with sqlite3.connect(db) as con:
        return {(k, s): (st, fin) for k, s, st, fin in con.execute("SELECT config_key, seed, status, finished FROM runs")}


def _epochs(db):
    with sqlite3.connect(db) as con:
        return {(k, s, e): json.loads(m) for k, s, e, m in con.execute("SELECT config_key, seed, epoch, metrics FROM epochs")}


def _table(folder):
    """report.json without what differs by construction between two folders' histories: the last
    invocation's reused / trained counts."""
    table = json.loads((folder / "report" / "report.json").read_text())
    table.pop("runs")
    return json.dumps(table, sort_keys=True)


def test_two_fresh_runs_of_a_study_give_the_same_report_json(tmp_path):
    s = spec(seeds=2, steps=[*spec().steps[:2], {"name": "crop", "techniques": [{"name": "crop", "padding": 1}]}])
    for name in ("a", "b"):
        run_study(s, tmp_path / name, progress=False)  # default flags: the grouping rule decides
        render(s, Store(tmp_path / name / "results.sqlite"), tmp_path / name / "report")
    a, b = ((tmp_path / n / "report" / "report.json").read_text() for n in ("a", "b"))
    assert a == b
    assert any(r["stacked"] for r in json.loads(a)["rows"])  # the stacked path was part of it


def test_sigkill_mid_study_then_rerun_resumes_from_the_checkpoint_to_the_same_report(tmp_path):
    """Default flags. The run killed part-way continues from its last checkpoint (its epochs before the
    kill are kept, not recomputed: their recorded wall times are unchanged), its plateau then cuts the
    learning rate and its early stopping fires before the last epoch, both after the kill, and the
    report equals a clean run's."""
    path = tmp_path / "killme.toml"
    path.write_text(STUDY_TOML)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    args = ("--no-progress",)
    subprocess.run(_cli("study", str(path), "-o", str(clean), *args), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(_cli("study", str(path), "-o", str(crashed), *args), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = crashed / "results.sqlite"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once a run is done and another is 2 epochs into its training
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    done = con.execute("SELECT COUNT(*) FROM runs WHERE status = 'done'").fetchone()[0]
                    running = con.execute("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM epochs e JOIN runs r "
                                          "USING (config_key, seed) WHERE r.status = 'running' GROUP BY config_key, seed)"
                                          ).fetchone()[0]
            except sqlite3.OperationalError:  # the store is being created
                done = running = 0
            if done >= 1 and (running or 0) >= 2:
                break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before, epochs_before = _status(db), _epochs(db)
    finished_before = {k: fin for k, (st, fin) in before.items() if st == "done"}
    assert 1 <= len(finished_before) < 4, "the kill must land mid-study"
    killed = [k for k, (st, _) in before.items() if st == "running"]
    assert killed and len({key for key, _ in killed}) == 1  # one configuration, its seeds stacked or not
    seeds = {seed for _, seed in killed}
    states = [ckpt.load(p) for p in (crashed / "checkpoints").glob(f"*{killed[0][0]}*/*/last.pt")]
    [state] = [st for st in states if seeds <= set(st["seeds"])]  # the checkpoint the killed run continues
    checkpointed = state["epoch"]  # the store may hold one epoch more than the checkpoint
    assert checkpointed >= 1

    subprocess.run(_cli("study", str(path), "-o", str(crashed), *args), check=True, env=env, capture_output=True)
    after = _status(db)
    assert all(st == "done" for st, _ in after.values()) and len(after) == 4, (before, after)
    for key, fin in finished_before.items():
        assert after[key][1] == fin  # finished runs were not recomputed
    for run in (r for r in Store(db).runs() if (r.config_key, r.seed) in killed):
        history = run.history
        for e in range(1, checkpointed + 1):  # the epochs before the kill came back from the checkpoint
            assert history[e - 1]["seconds"] == epochs_before[(run.config_key, run.seed, e)]["seconds"], e
        lrs = [h["lr"] for h in history]
        assert any(lrs[e] < lrs[e - 1] for e in range(checkpointed, len(lrs))), "plateau must cut the LR after the kill"
        assert checkpointed < len(history) < 30, "early stopping must fire after the kill, before the last epoch"
    assert _table(crashed) == _table(clean)


# ---- executors ---------------------------------------------------------------------------------
def timeless_rows(table):
    """The table without the last invocation's counts (report tables hold no wall times)."""
    return {k: v for k, v in table.items() if k != "runs"}


def test_process_executor_gives_the_sequential_table(tmp_path):
    s = spec(seeds=2)
    run_study(s, tmp_path / "seq", progress=False, grouping="single")
    run_study(s, tmp_path / "proc", executor="processes", workers=2, progress=False, grouping="single")
    a = build_table(s, Store(tmp_path / "seq" / "results.sqlite"))
    b = build_table(s, Store(tmp_path / "proc" / "results.sqlite"))
    assert timeless_rows(a) == timeless_rows(b)


def test_ray_executor_gives_the_sequential_table(tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'reglab[ray]'")
    s = spec(seeds=2, steps=spec().steps[:1])
    run_study(s, tmp_path / "seq", progress=False, grouping="single")
    run_study(s, tmp_path / "ray", executor="ray", progress=False, grouping="single")
    a = build_table(s, Store(tmp_path / "seq" / "results.sqlite"))
    b = build_table(s, Store(tmp_path / "ray" / "results.sqlite"))
    assert timeless_rows(a) == timeless_rows(b)


def test_unknown_executor(tmp_path):
    with pytest.raises(ReglabError, match="unknown executor 'gpu'"):
        run_study(spec(), tmp_path, executor="gpu", progress=False)


# ---- CLI ---------------------------------------------------------------------------------------
def test_cli_study_json_last_line_and_report_rerender(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(STUDY_TOML.replace("epochs = 30", "epochs = 2").replace("seeds = 2", "seeds = 1"))
    out = subprocess.run(_cli("study", str(path), "-o", str(tmp_path / "o"), "--json", "--no-progress"),
                         check=True, capture_output=True, text=True)
    table = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["label"] for r in table["rows"]] == ["baseline", "+ dropout"]
    (tmp_path / "o" / "report" / "report.md").unlink()
    subprocess.run(_cli("report", str(tmp_path / "o")), check=True, capture_output=True)
    assert (tmp_path / "o" / "report" / "report.md").exists()
    bad = subprocess.run(_cli("study", "quikstart"), capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "did you mean 'quickstart'" in bad.stderr


def test_configurations_list_the_settings_a_step_changes():
    from reglab.study.report import describe

    planned = plan(spec(steps=[{"name": "longer", "set": {"epochs": 5}}]))
    assert describe(planned[0].config, planned[0].config) == "sgd(momentum=0.0)"
    assert describe(planned[1].config, planned[0].config) == "sgd(momentum=0.0), epochs=5"


# ---- adaptive seeds ------------------------------------------------------------------------------
def adaptive_spec(**kw):
    """Isolated steps on a tiny baseline: a large effect (adam instead of a near-still SGD) and a null
    step (reseeding the data order changes randomness only)."""
    return spec(mode="isolated", seeds={"min": 3, "max": 7, "step": 2},
                base={**BASE, "epochs": 2}, baseline=[{"name": "sgd", "lr": 1e-4, "momentum": 0.0}],
                steps=[{"name": "adam", "techniques": [{"name": "adam", "lr": 1e-2}]},
                       {"name": "null", "techniques": [{"name": "reseed", "stream": "order", "salt": 1}]}], **kw)


def test_adaptive_seeds_go_only_to_undecided_comparisons_up_to_the_maximum(tmp_path):
    s = adaptive_spec()
    assert s.looks == (3, 5, 7)
    summary = run_study(s, tmp_path, progress=False)
    table = build_table(s, Store(tmp_path / "results.sqlite"))
    seeds = {r["label"]: r["seeds"] for r in table["rows"]}
    states = {c["name"]: c["state"] for c in table["comparisons"]}
    assert states["adam"] == "helped" and states["null"] == "not shown"  # decided at once / never
    assert seeds == {"baseline": 7, "baseline + adam": 3, "baseline + null": 7}  # more seeds only where undecided
    assert summary["trained"] == 17
    adam = next(c for c in table["comparisons"] if c["name"] == "adam")
    assert adam["n"] == 3 and adam["p_looks"] == pytest.approx(min(1.0, 3 * adam["p_t"]))  # Bonferroni over 3 looks


def test_a_resumed_adaptive_study_ends_identical_to_an_uninterrupted_one(tmp_path, monkeypatch):
    from reglab.study import runner

    s = adaptive_spec()
    run_study(s, tmp_path / "whole", progress=False)
    handle, seen = runner._Driver.handle, []

    def interrupted(self, event):
        handle(self, event)
        if event[0] == "result":
            seen.append(event)
            if len(seen) == 11:  # after the first look, part-way through the second
                raise KeyboardInterrupt

    monkeypatch.setattr(runner._Driver, "handle", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(s, tmp_path / "cut", progress=False)
    monkeypatch.setattr(runner._Driver, "handle", handle)
    run_study(s, tmp_path / "cut", progress=False)
    for name in ("whole", "cut"):
        render(s, Store(tmp_path / name / "results.sqlite"), tmp_path / name / "report")
    assert _table(tmp_path / "whole") == _table(tmp_path / "cut")
