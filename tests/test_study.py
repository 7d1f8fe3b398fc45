"""Studies: spec validation, the four modes' plans, paired seeds, the store, the report, a study
killed with SIGKILL and resumed, and the Ray executor (issue 4)."""
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
from reglab.study.report import build_table, paired, render
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
    runs = Store(tmp_path / "results.sqlite").runs("tiny")
    by = {(r.label, r.seed): r.metrics["test_accuracy"] for r in runs}
    for seed in (0, 1):
        assert by[("baseline", seed)] == by[("+ noop", seed)]
    assert by[("baseline", 0)] != by[("baseline", 1)]


# ---- report ------------------------------------------------------------------------------------
def test_paired_statistics():
    a = {0: 0.50, 1: 0.60, 2: 0.55}
    b = {0: 0.52, 1: 0.63, 2: 0.56}
    out = paired(b, a)
    assert out["mean"] == pytest.approx(0.02)
    assert out["se"] == pytest.approx(0.01 / 3 ** 0.5, rel=1e-6)  # differences 0.02, 0.03, 0.01: sd 0.01
    from scipy import stats

    assert out["p_t"] == pytest.approx(stats.ttest_rel([0.52, 0.63, 0.56], [0.50, 0.60, 0.55]).pvalue)


def test_study_report_table_matches_the_store(tmp_path):
    s = spec()
    summary = run_study(s, tmp_path, progress=False)
    assert summary["errors"] == []
    store = Store(tmp_path / "results.sqlite")
    table = render(s, store, tmp_path / "report")
    rows = {r["label"]: r for r in table["rows"]}
    runs = store.runs("tiny")
    assert len(runs) == 4 * 2 and all(r.status == "done" for r in runs)
    for label, row in rows.items():
        vals = [r.metrics["test_accuracy"] for r in runs if r.label == label]
        assert row["report_mean"] == pytest.approx(sum(vals) / 2)
        assert row["seeds"] == 2
    base = {r.seed: r.metrics["test_accuracy"] for r in runs if r.label == "baseline"}
    adam = {r.seed: r.metrics["test_accuracy"] for r in runs if r.label == "+ adam"}
    assert rows["+ adam"]["vs_baseline"]["mean"] == pytest.approx(sum(adam[k] - base[k] for k in base) / 2)
    for f in ("report.md", "report.html", "report.json", "learning_curves.png", "configurations.png"):
        assert (tmp_path / "report" / f).stat().st_size > 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Verdict" in md and "+ smoothing" in md
    html = (tmp_path / "report" / "report.html").read_text()
    assert "data:image/png;base64," in html  # self-contained
    # a second run trains nothing and the report is re-rendered identically from the store alone
    assert run_study(s, tmp_path, progress=False)["jobs"] == 0
    again = render(s, Store(tmp_path / "results.sqlite"), tmp_path / "report2")
    assert json.dumps(again, default=float) == json.dumps(table, default=float)


def test_a_changed_study_definition_is_refused_in_the_same_folder(tmp_path):
    run_study(spec(seeds=1), tmp_path, progress=False)
    with pytest.raises(ReglabError, match="different definition"):
        run_study(spec(seeds=1, base={**BASE, "epochs": 4}), tmp_path, progress=False)


# ---- crash and resume --------------------------------------------------------------------------
STUDY_TOML = """
name = "killme"
mode = "incremental"
seeds = 2
metric = "val_accuracy"
baseline = [{ name = "sgd", lr = 0.05 }]

[base]
dataset = "digits"
model = "mlp"
model_options = { hidden = [64] }
epochs = 12
batch_size = 16

[[steps]]
name = "adam"
techniques = [{ name = "adam", lr = 2e-3 }]

[[steps]]
name = "dropout"
techniques = [{ name = "dropout", p = 0.2 }]
"""


def _cli(*args):
    return [sys.executable, "-m", "reglab.cli", *args]


def _status(db):
    with sqlite3.connect(db) as con:
        return {(k, s): (st, fin) for k, s, st, fin in con.execute("SELECT config_key, seed, status, finished FROM runs")}


def _table(folder):
    table = json.loads((folder / "report" / "report.json").read_text())
    for row in table["rows"]:
        row.pop("seconds", None)
    return json.dumps(table["rows"], sort_keys=True, default=float)


def test_sigkill_mid_study_then_rerun_gives_the_same_table_without_recomputing(tmp_path):
    path = tmp_path / "killme.toml"
    path.write_text(STUDY_TOML)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    args = ("--grouping", "single", "--no-progress")
    subprocess.run(_cli("study", str(path), "-o", str(clean), *args), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(_cli("study", str(path), "-o", str(crashed), *args), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = crashed / "results.sqlite"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once 2 runs are done and a third is part-way through its epochs
        if db.exists():
            with sqlite3.connect(db) as con:
                done = con.execute("SELECT COUNT(*) FROM runs WHERE status = 'done'").fetchone()[0]
                running = con.execute("SELECT COUNT(*) FROM epochs e JOIN runs r USING (study, config_key, seed) "
                                      "WHERE r.status = 'running'").fetchone()[0]
            if done >= 2 and running >= 2:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _status(db)
    finished_before = {k: fin for k, (st, fin) in before.items() if st == "done"}
    assert 2 <= len(finished_before) < 6, "the kill must land mid-study"
    assert any(st == "running" for st, _ in before.values())

    subprocess.run(_cli("study", str(path), "-o", str(crashed), *args), check=True, env=env, capture_output=True)
    after = _status(db)
    assert all(st == "done" for st, _ in after.values()) and len(after) == 6
    for key, fin in finished_before.items():
        assert after[key][1] == fin  # finished runs were not recomputed
    assert _table(crashed) == _table(clean)


# ---- executors ---------------------------------------------------------------------------------
def timeless_rows(table):
    """The table's rows without wall times (which differ between executors)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in table["rows"]]


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
    path.write_text(STUDY_TOML.replace("epochs = 12", "epochs = 2").replace("seeds = 2", "seeds = 1"))
    out = subprocess.run(_cli("study", str(path), "-o", str(tmp_path / "o"), "--json", "--no-progress"),
                         check=True, capture_output=True, text=True)
    table = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["label"] for r in table["rows"]] == ["baseline", "+ adam", "+ dropout"]
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
