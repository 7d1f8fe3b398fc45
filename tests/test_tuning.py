"""Tuned steps: searched knobs chosen on validation inside a study, on tuning seeds disjoint from the
study's, never reading the test split; trials are ordinary runs (resumable, reused)."""
from __future__ import annotations

import json

import pytest

from reglab.data import DATASETS, Data, Split, load, register
from reglab.errors import ReglabError
from reglab.study import runner
from reglab.study.report import build_table, render
from reglab.study.runner import run_study
from reglab.study.spec import parse_spec
from reglab.study.store import Store
from reglab.study.tune import tune

READING_TEST = {"forbidden": False, "reads": 0}


class GuardedSplit(Split):
    """A test split that counts its reads and fails while reading it is forbidden."""

    def inputs(self, rows):
        READING_TEST["reads"] += 1
        if READING_TEST["forbidden"]:
            raise AssertionError("the test split was read during tuning")
        return super().inputs(rows)

    def to(self, device):  # stays guarded on the training device
        moved = super().to(device)
        return GuardedSplit(moved.x, moved.y, moved.index, moved.extra)


@pytest.fixture(scope="module", autouse=True)
def guarded_digits():
    @register("guarded-digits", "digits whose test split fails on access during tuning (tests only)")
    def load_guarded(_path: None, *, val_fraction: float = 0.1, split_seed: int = 0) -> Data:
        d = load("digits", val_fraction=val_fraction, split_seed=split_seed)
        d.test = GuardedSplit(d.test.x, d.test.y)
        return d

    yield
    DATASETS.pop("guarded-digits")


BASE = {"dataset": "guarded-digits", "model": "mlp", "model_options": {"hidden": [32]}, "epochs": 2, "batch_size": 64,
        "device": "cpu"}


def spec(**kw):
    raw = {"name": "tuned", "mode": "incremental", "seeds": 2, "metric": "val_accuracy", "base": BASE,
           # lr 1e-5 barely moves in 2 epochs, lr 50 diverges: 0.05 is the known best
           "baseline": [{"name": "sgd", "lr": {"grid": [1e-5, 0.05, 50.0]}, "momentum": 0.9}],
           "steps": [{"name": "smoothing", "techniques": [{"name": "label_smoothing", "eps": {"grid": [0.0, 0.1]}}]}]}
    raw.update(kw)
    return parse_spec(raw)


def test_a_grid_picks_the_known_best_value_without_reading_the_test_split(tmp_path, monkeypatch):
    real = runner.tune

    def guarded(*args, **kwargs):
        READING_TEST["forbidden"] = True
        try:
            return real(*args, **kwargs)
        finally:
            READING_TEST["forbidden"] = False

    monkeypatch.setattr(runner, "tune", guarded)
    READING_TEST["reads"] = 0
    s = spec()
    summary = run_study(s, tmp_path, progress=False)
    assert summary["errors"] == []
    assert READING_TEST["reads"] > 0  # the study's own runs (after tuning) did read it
    store = Store(tmp_path / "results.sqlite")
    chosen, tuned = tune(s, store)
    assert [t.chosen is not None for t in tuned] == [True, True]
    assert tuned[0].chosen[tuned[0].knobs[0]] == 0.05
    assert len(tuned[0].trials) == 3 and len(tuned[1].trials) == 2
    # trials ran on the tuning seeds only, the study's configurations on its own seeds
    tune_seeds, study_seeds = set(s.tune_seed_list), set(s.seed_list)
    trial_keys = {t.key for layer in tuned for t in layer.trials}
    for r in store.runs():
        assert (r.seed in tune_seeds) == (r.config_key in trial_keys and r.seed not in study_seeds)
    table = build_table(s, store)
    assert [r["seeds"] for r in table["rows"]] == [2, 2]
    assert table["tuning"][0]["chosen"] == {"baseline.techniques[0].lr": 0.05}
    render(s, store, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Tuned steps" in md and "sgd(lr=0.05" in md
    assert list((tmp_path / "report").glob("sensitivity-*.png"))
    json.loads((tmp_path / "report" / "report.json").read_text())


def test_a_killed_tuning_study_resumes_without_rerunning_finished_trials(tmp_path, monkeypatch):
    s = spec(steps=spec().steps)
    handle, results = runner._Driver.handle, []

    def interrupted(self, event):
        handle(self, event)
        if event[0] == "result":
            results.append(event)
            if len(results) == 3:  # part-way through the baseline's trials
                raise KeyboardInterrupt

    monkeypatch.setattr(runner._Driver, "handle", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(s, tmp_path, progress=False)
    monkeypatch.setattr(runner._Driver, "handle", handle)
    store = Store(tmp_path / "results.sqlite")
    finished = {(r.config_key, r.seed): r.metrics["val_loss"] for r in store.runs()}
    assert len(finished) == 3
    summary = run_study(s, tmp_path, progress=False)
    assert summary["errors"] == []
    after = {(r.config_key, r.seed): r.metrics["val_loss"] for r in store.runs()}
    assert all(after[k] == v for k, v in finished.items())  # the finished trials were reused, not retrained
    again = run_study(s, tmp_path, progress=False)
    assert again["trained"] == 0


def test_ranges_use_optunas_seeded_sampler_and_bad_spaces_are_one_line_errors(tmp_path):
    s = spec(baseline=[{"name": "sgd", "lr": {"range": [1e-3, 0.3], "scale": "log", "trials": 3}, "momentum": 0.9}],
             steps=[{"name": "smoothing", "techniques": [{"name": "label_smoothing", "eps": 0.1}]}], seeds=1,
             tune_seeds=1)
    run_study(s, tmp_path / "a", progress=False)
    run_study(s, tmp_path / "b", progress=False)
    a = tune(s, Store(tmp_path / "a" / "results.sqlite"))[1][0]
    b = tune(s, Store(tmp_path / "b" / "results.sqlite"))[1][0]
    assert [t.values for t in a.trials] == [t.values for t in b.trials] and len(a.trials) == 3
    lrs = [t.values["baseline.techniques[0].lr"] for t in a.trials]
    assert all(1e-3 <= v <= 0.3 for v in lrs) and len(set(lrs)) == 3
    for change, message in [
        ({"baseline": [{"name": "sgd", "lr": {"grid": []}}]}, "grid"),
        ({"baseline": [{"name": "sgd", "lr": {"range": [0.0, 1.0]}}]}, "log scale needs positive"),
        ({"baseline": [{"name": "sgd", "lr": {"grid": [0.1, -1.0]}}]}, r"baseline.techniques\[0\].lr = -1.0"),
        ({"metric": None}, "names the validation metric"),
        ({"tune_seeds": [0, 5]}, "must not include the study's seeds"),  # (checked only where knobs are searched)
    ]:
        with pytest.raises(ReglabError, match=message) as err:
            spec(**change)
        assert "\n" not in str(err.value)
