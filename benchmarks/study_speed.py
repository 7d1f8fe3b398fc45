"""A whole small study, three ways, side by side in one run: by hand, with Lightning, with ``reglab study``.

Studies (each reduced from reglab's built-in study of that name: the baseline and the first steps,
every tuning grid replaced by its middle value, so nothing is tuned):

- ``quickstart``: MNIST-1D MLP 40-256-256-10, batch 64, 20 epochs (the study has 120:
  ``--quickstart-epochs 120``; 20 keeps the whole benchmark within the time of one session); baseline SGD
  (lr 0.05, momentum 0.9), + AdamW (lr 1e-2, weight decay 0.05), + BatchNorm; 3 seeds.
- ``pimp-my-model``: CIFAR-10 (JPEG copy) MLP 3072-1024-512-256-10, batch 128, 2 epochs; baseline SGD
  (lr 0.01 of the grid 0.003/0.01/0.03, momentum 0.9), + Adam (lr 1e-3 of 3e-4/1e-3/3e-3), + BatchNorm; 3 seeds.

Ways:

(a) by hand: ``benchmarks/study_by_hand.py`` run as one Python process per configuration and seed
    (a ``Dataset`` over the split arrays, PIL images through torchvision transforms for CIFAR-10,
    ``DataLoader(num_workers=0)``, a plain loop), one JSON line per run collected into a table;
(b) Lightning: one ``Trainer`` per configuration and seed, all in this process (the same Datasets and
    DataLoaders as (a), ``ModelCheckpoint`` on validation accuracy, ``trainer.validate/test``);
(c) reglab: the ``reglab study`` command on the study file, in one process
    (``benchmarks/study_timed.py``: the command unchanged, with clocks around its phases).

All three train the same models with the same optimizers, epochs, batch size and train/val/test
splits (the arrays of (a) and (b) are reglab's splits), with the same torch threads and
``OMP_WAIT_POLICY``, and evaluate alike: validation after every epoch; at the end validation and test
of the last weights and of the best-validation weights (reglab with ``eval_train = false``: no
final pass over the training split). The Markdown lists what still differs.

Run: ``REGLAB_DATA=/work/shared/datasets python benchmarks/study_speed.py [--quick]``; writes
``benchmarks/study_speed.md`` and ``benchmarks/study_speed.json`` (see benchmarks/README.md).
"""
from __future__ import annotations

import reglab  # noqa: F401  (first: it sets OMP_WAIT_POLICY on a busy CPU before torch starts its threads)

# isort: split
import argparse
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reglab.config import RunConfig, load_file
from reglab.data import load
from reglab.engine import machine
from reglab.study.builtin import resolve
from reglab.study.plan import plan
from reglab.study.spec import parse_spec
from reglab.study.store import Store
from reglab.techniques import resolve_techniques

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import study_by_hand
from speed import lightning_version

BY_HAND = HERE / "study_by_hand.py"
TIMED = HERE / "study_timed.py"

#: per study: configurations (baseline + steps), seeds, epochs (None: the study's), training batches per epoch (None: all)
FULL = {"quickstart": dict(configs=3, seeds=3, epochs=20, batches=None),
        "pimp-my-model": dict(configs=3, seeds=3, epochs=2, batches=None)}
QUICK = {"quickstart": dict(configs=2, seeds=2, epochs=3, batches=None),
         "pimp-my-model": dict(configs=2, seeds=1, epochs=1, batches=40)}
SUPPORTED = {"sgd", "adam", "adamw", "batchnorm"}


# ---- the study ------------------------------------------------------------------------------------------
def middle(value: Any) -> Any:
    """A tuning grid ``{"grid": [...]}`` -> its middle value; anything else unchanged (recursively)."""
    if isinstance(value, dict):
        if set(value) == {"grid"}:
            return value["grid"][(len(value["grid"]) - 1) // 2]
        return {k: middle(v) for k, v in value.items()}
    if isinstance(value, list):
        return [middle(v) for v in value]
    return value


def reduced_study(name: str, configs: int, seeds: int, epochs: int | None, batches: int | None) -> dict[str, Any]:
    """The built-in study ``name`` as a dict: baseline + the first ``configs - 1`` steps, grids replaced
    by their middle values (no tuning), ``seeds`` seeds, ``epochs`` (None: the study's), no final
    train-split evaluation; ``batches``: training batches per epoch instead of the whole split."""
    raw = load_file(resolve(name))
    raw = {k: v for k, v in raw.items() if k not in ("tune_seeds", "description")}
    raw["steps"] = raw["steps"][: configs - 1]
    raw = middle(raw)
    raw["name"] = f"{name}-speed"
    raw["seeds"] = seeds
    base = raw.setdefault("base", {})
    if epochs is not None:
        base["epochs"] = epochs
    base["eval_train"] = False
    if batches is not None:
        base["steps"] = batches * base["epochs"]
        base["eval_every"] = batches
    return raw


def by_hand_config(config: RunConfig, batches: int | None) -> dict[str, Any]:
    """What the by-hand script and the Lightning module need of a reglab configuration (same knobs)."""
    techniques = resolve_techniques(config.techniques)
    unsupported = [t.name for t in techniques if t.name not in SUPPORTED]
    if unsupported or config.model != "mlp" or set(config.model_options) - {"hidden"}:
        raise ValueError(f"the by-hand script has no {unsupported or config.model_options}")
    [opt] = [t for t in techniques if t.kind == "optimizer"]
    if any(t.name == "batchnorm" and t.knobs.model_dump() != {"momentum": 0.1, "eps": 1e-5, "placement": "before",
                                                               "skip_first": False} for t in techniques):
        raise ValueError("the by-hand script has only torch's default BatchNorm before the activation")
    return {"hidden": list(config.model_options["hidden"]), "batchnorm": any(t.name == "batchnorm" for t in techniques),
            "optimizer": {"name": opt.name, **opt.knobs.model_dump()}, "epochs": config.epochs,
            "batch_size": config.batch_size, "eval_batch_size": config.eval_batch_size, "batches": batches}


# ---- machine state ---------------------------------------------------------------------------------------
def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---- (a) by hand --------------------------------------------------------------------------------------------
def way_by_hand(configs: list[tuple[str, dict]], seeds: int, data_dir: Path, threads: int) -> dict[str, Any]:
    """One ``study_by_hand.py`` process per configuration and seed, one after another; the table of results."""
    runs, started = [], time.perf_counter()
    for label, cfg in configs:
        for seed in range(seeds):
            launched = time.time()
            done = subprocess.run([sys.executable, str(BY_HAND), "--data", str(data_dir), "--config", json.dumps(cfg),
                                   "--seed", str(seed), "--threads", str(threads)],
                                  capture_output=True, text=True, check=False)
            if done.returncode:
                raise RuntimeError(f"by-hand run {label} seed {seed} failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["seconds"]["start-up"] += result.pop("started") - launched  # the interpreter's own start
            result["seconds"]["process"] = time.time() - launched
            runs.append({"label": label, **result})
    wall = time.perf_counter() - started
    return {"wall": wall, "runs": runs}


# ---- (b) Lightning -------------------------------------------------------------------------------------------
def lightning_run(cfg: dict, seed: int, meta: dict, data: dict, folder: Path, threads: int) -> dict[str, Any]:
    """One ``Trainer`` for one configuration and seed: fit (validation each epoch, best checkpoint on
    validation accuracy), then validate/test the last weights and the best checkpoint."""
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = study_by_hand.mlp(meta["input_shape"], meta["classes"], cfg["hidden"], cfg["batchnorm"])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def _metrics(self, batch: tuple, split: str, **kw: Any) -> torch.Tensor:
            x, y = batch
            out = self(x)
            loss = nn.functional.cross_entropy(out, y)
            self.log(f"{split}_loss", loss, batch_size=len(y), **kw)
            self.log(f"{split}_accuracy", (out.argmax(1) == y).float().mean(), batch_size=len(y), **kw)
            return loss

        def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
            return self._metrics(batch, "train", on_step=False, on_epoch=True)

        def validation_step(self, batch: tuple, batch_idx: int) -> None:
            self._metrics(batch, "val")

        def test_step(self, batch: tuple, batch_idx: int) -> None:
            self._metrics(batch, "test")

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return study_by_hand.optimizer(self.parameters(), dict(cfg["optimizer"]))

    class History(L.Callback):
        def __init__(self) -> None:
            self.records: list[dict[str, float]] = []
            self.val_seconds, self.batches = 0.0, 0

        def on_validation_epoch_start(self, trainer, module) -> None:
            self.t0 = time.perf_counter()

        def on_validation_epoch_end(self, trainer, module) -> None:
            self.val_seconds += time.perf_counter() - self.t0

        def on_train_epoch_end(self, trainer, module) -> None:
            m = {k: float(v) for k, v in trainer.callback_metrics.items()}
            self.records.append({"epoch": trainer.current_epoch + 1, "batches": trainer.global_step - self.batches, **m})
            self.batches = trainer.global_step

    torch.set_num_threads(threads)
    L.seed_everything(seed, verbose=False)
    loader = torch.utils.data.DataLoader(data["train"], batch_size=cfg["batch_size"], shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    val, test = (torch.utils.data.DataLoader(data[s], batch_size=cfg["eval_batch_size"]) for s in ("val", "test"))
    history = History()
    best = L.pytorch.callbacks.ModelCheckpoint(dirpath=folder, monitor="val_accuracy", mode="max", save_top_k=1)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=cfg["epochs"], logger=False, callbacks=[history, best],
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_train_batches=cfg["batches"] or 1.0, default_root_dir=folder)
    module = Module()
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=val)
    t1 = time.perf_counter()
    final = {f"last_{k}": v for k, v in (trainer.validate(module, val, verbose=False)[0]
                                         | trainer.test(module, test, verbose=False)[0]).items()}
    final |= trainer.validate(module, val, ckpt_path="best", verbose=False)[0]
    final |= trainer.test(module, test, ckpt_path="best", verbose=False)[0]
    t2 = time.perf_counter()
    seconds = {"training": t1 - t0 - history.val_seconds, "evaluation": history.val_seconds + t2 - t1}
    return {"seed": seed, "history": history.records, "final": final, "seconds": seconds}


def way_lightning(configs: list[tuple[str, dict]], seeds: int, data_dir: Path, work: Path, threads: int) -> dict[str, Any]:
    started = time.perf_counter()
    lightning_version()  # imports lightning (counted) and quiets its logging
    meta, data = study_by_hand.datasets(data_dir)
    prepared = time.perf_counter()
    runs = []
    for i, (label, cfg) in enumerate(configs):
        for seed in range(seeds):
            runs.append({"label": label, **lightning_run(cfg, seed, meta, data, work / f"lightning-{i}-seed{seed}", threads)})
    return {"wall": time.perf_counter() - started, "import and data": prepared - started, "runs": runs}


# ---- (c) reglab ------------------------------------------------------------------------------------------------
def way_reglab(study_file: Path, out: Path, threads: int) -> dict[str, Any]:
    """``reglab study`` in one process (with clocks around its phases); its runs read back from the store."""
    timings = out.with_suffix(".timings.json")
    cmd = [sys.executable, str(TIMED), str(timings), "study", str(study_file), "-o", str(out), "--threads", str(threads),
           "--no-progress"]
    launched, started = time.time(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    ended = time.time()
    if done.returncode:
        raise RuntimeError(f"reglab study failed:\n{done.stderr[-3000:]}")
    t = json.loads(timings.read_text())
    store = Store(out / "results.sqlite")
    runs = [{"label": r.label, "seed": r.seed, "history": r.history, "final": r.metrics, "group_size": r.group_size}
            for r in store.runs()]
    phases = dict(t["phases"])
    command = t["ended"] - t["imported"]
    breakdown = {"start-up (interpreter, imports)": t["imported"] - launched, **phases,
                 "other bookkeeping (planning, models, store)": command - sum(phases.values()),
                 "exit": ended - t["ended"]}
    return {"wall": wall, "runs": runs, "breakdown": breakdown, "calls": t["calls"],
            "invocation_seconds": store.invocations()[-1]["seconds"],
            "decisions": {k: v for k, v in store.decisions().items()}, "stderr_tail": done.stderr[-600:]}


# ---- one study, three ways ------------------------------------------------------------------------------------
def run_study_three_ways(name: str, budget: dict, work: Path, threads: int, lightning: bool,
                         log: Any = print) -> dict[str, Any]:
    raw = reduced_study(name, **budget)
    study_file = work / f"{name}.json"
    study_file.write_text(json.dumps(raw, indent=1))
    planned = plan(parse_spec(raw, str(study_file)))
    configs = [(p.label, by_hand_config(p.config, budget["batches"])) for p in planned]
    first = planned[0].config
    data = load(first.dataset, val_fraction=first.val_fraction, split_seed=first.split_seed)
    data_dir = study_by_hand.write_arrays(data, work / f"{name}-arrays")
    sizes = {s: len(getattr(data, s)) for s in ("train", "val", "test")}
    seeds = raw["seeds"]
    log(f"{name}: {len(configs)} configurations x {seeds} seeds x {first.epochs} epochs"
        + (f" of {budget['batches']} batches" if budget["batches"] else "") + f"; splits {sizes}", flush=True)
    ways: dict[str, Any] = {}
    order = [("by hand", lambda: way_by_hand(configs, seeds, data_dir, threads))]
    if lightning:
        order.append(("Lightning", lambda: way_lightning(configs, seeds, data_dir, work / f"{name}-lightning", threads)))
    order.append(("reglab", lambda: way_reglab(study_file, work / f"{name}-reglab", threads)))
    for way, fn in order:
        before = loadavg()
        result = fn()
        result["load_before"], result["load_after"] = before, loadavg()
        ways[way] = result
        log(f"  {way}: {result['wall']:.1f} s (load average {before} -> {result['load_after']})", flush=True)
    return {"name": name, "study": raw, "configs": configs, "splits": sizes, "seeds": seeds, "epochs": first.epochs,
            "batches": budget["batches"], "ways": ways}


def accuracies(result: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """way -> configuration label -> mean best-weights val/test accuracy and epochs recorded, over seeds."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for way, w in result["ways"].items():
        table = out.setdefault(way, {})
        for label, _ in result["configs"]:
            runs = [r for r in w["runs"] if r["label"] == label]
            table[label] = {"runs": len(runs),
                            "val_accuracy": statistics.mean(r["final"]["val_accuracy"] for r in runs),
                            "test_accuracy": statistics.mean(r["final"]["test_accuracy"] for r in runs),
                            "epochs": statistics.mean(len(r["history"]) for r in runs)}
    return out


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Wall times per study and over all studies, and the ratios (way's time / reglab's time)."""
    ways = list(results[0]["ways"])
    walls = {r["name"]: {w: r["ways"][w]["wall"] for w in ways} for r in results}
    walls["all studies"] = {w: sum(v[w] for v in walls.values()) for w in ways}
    ratios = {study: {f"{w}/reglab": v[w] / v["reglab"] for w in ways if w != "reglab"} for study, v in walls.items()}
    return {"walls": walls, "ratios": ratios}


# ---- the report ------------------------------------------------------------------------------------------------
TARGETS = {"by hand/reglab": 3.0, "Lightning/reglab": 2.0}


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        "# Study speed: a whole small study by hand, with Lightning, with `reglab study`",
        "",
        f"Generated by `benchmarks/study_speed.py` on {report['date']} (total {report['total_seconds']:.0f} s). "
        "Every number below comes from that run"
        + (f" (this text rewritten from its JSON by `--render` on {report['rendered']})." if report.get("rendered") else ".")
        + (" **Partial: the run was stopped before its last study.**" if report.get("partial") else ""),
        "",
        f"- command: `{report['command']}`",
        f"- machine: {report['machine']}",
        f"- torch threads on every way: {report['threads']}; `OMP_WAIT_POLICY`: {report['omp_wait_policy']}; "
        f"Lightning {report['lightning'] or 'not installed'}",
        f"- load average (1, 5, 15 min): {report['load_before']} before, {report['load_after']} after"
        + (" (`--quick`: a reduced budget, see below)" if report["quick"] else ""),
        "",
        "## Wall time",
        "",
        "| study | by hand | Lightning | reglab | by hand / reglab | Lightning / reglab |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for study, w in s["walls"].items():
        r = s["ratios"][study]
        lightning = f"{w['Lightning']:.1f} s" if "Lightning" in w else "-"
        lratio = f"{r['Lightning/reglab']:.2f}x" if "Lightning/reglab" in r else "-"
        lines.append(f"| {study} | {w['by hand']:.1f} s | {lightning} | {w['reglab']:.1f} s | "
                     f"**{r['by hand/reglab']:.2f}x** | **{lratio}** |")
    overall = s["ratios"]["all studies"]
    lines += ["", "Acceptance target of issue 19 (reglab at least 3x faster than by hand and 2x faster than Lightning "
              "on the whole small study):"]
    for key, target in TARGETS.items():
        if key in overall:
            got = overall[key]
            verdict = "met" if got >= target else f"not met: {got / target:.0%} of the target"
            per_study = ", ".join(f"{st} {s['ratios'][st][key]:.2f}x" for st in s["walls"] if st != "all studies")
            lines.append(f"- {key} = {got:.2f}x over all studies (target {target:.0f}x): {verdict} ({per_study})")
    for r in report["studies"]:
        lines += study_section(r)
    lines += ["", "## What is the same, what differs", "", *DIFFERENCES]
    return "\n".join(lines) + "\n"


def study_section(r: dict[str, Any]) -> list[str]:
    ways = r["ways"]
    budget = f"{len(r['configs'])} configurations x {r['seeds']} seeds x {r['epochs']} epochs" + (
        f" of {r['batches']} training batches ({r['batches'] * r['configs'][0][1]['batch_size'] / r['splits']['train']:.0%} "
        "of the training split)" if r["batches"] else " (whole training split)")
    out = ["", f"## {r['name']}: {budget}", "",
           f"Splits (train/val/test): {r['splits']['train']}/{r['splits']['val']}/{r['splits']['test']}. "
           "Configurations: " + "; ".join(f"{label}: {cfg['optimizer']} {'+ BatchNorm ' if cfg['batchnorm'] else ''}"
                                          f"hidden {cfg['hidden']}" for label, cfg in r["configs"]) + ".", "",
           "| way | wall s | load average before -> after |", "|---|---:|---|"]
    for way, w in ways.items():
        out.append(f"| {way} | {w['wall']:.1f} | {w['load_before']} -> {w['load_after']} |")
    # where reglab's time goes
    c = ways["reglab"]
    total = c["wall"]
    out += ["", f"Where reglab's {total:.1f} s go (measured: clocks around reglab's functions in the `reglab study` "
            f"process, `benchmarks/study_timed.py`; the store's own invocation record says {c['invocation_seconds']:.1f} s "
            "for planning + training + bookkeeping):", "",
            "| phase | s | share | calls |", "|---|---:|---:|---:|"]
    for phase, sec in c["breakdown"].items():
        out.append(f"| {phase} | {sec:.2f} | {sec / total:.0%} | {c['calls'].get(phase, '')} |")
    stacked = sorted({f"{label}: {r2['group_size']} seed(s) per run" for label, r2 in
                      ((x["label"], x) for x in c["runs"])})
    out += ["", "Seeds: " + "; ".join(stacked) + "."]
    # the by-hand and Lightning breakdowns
    a = ways["by hand"]
    parts = {k: sum(run["seconds"][k] for run in a["runs"]) for k in ("start-up", "data", "train", "evaluate")}
    processes = sum(run["seconds"]["process"] for run in a["runs"])
    split = {"by hand": (parts["train"], parts["evaluate"])}
    if "Lightning" in ways:
        b = ways["Lightning"]
        split["Lightning"] = tuple(sum(run["seconds"][k] for run in b["runs"]) for k in ("training", "evaluation"))
    split["reglab"] = (c["breakdown"]["training"], c["breakdown"]["evaluation"])
    out += ["", "The same parts side by side (training: the epochs' optimizer steps, with the data path; evaluation: "
            "every validation and test pass; the rest: process start-up, data loading, set-up, checkpoints, "
            "bookkeeping, exit):", "",
            "| part | " + " | ".join(f"{w} s" for w in split) + " | "
            + " | ".join(f"{w} / reglab" for w in split if w != "reglab") + " |",
            "|---|" + "---:|" * (2 * len(split) - 1)]
    for i, part in enumerate(("training", "evaluation", "the rest")):
        values = {w: (v[i] if i < 2 else ways[w]["wall"] - sum(v)) for w, v in split.items()}
        out.append(f"| {part} | " + " | ".join(f"{v:.1f}" for v in values.values()) + " | " + " | ".join(
            f"{values[w] / values['reglab']:.2f}x" if values["reglab"] > 0 else "-" for w in values if w != "reglab") + " |")
    out += ["", f"By hand, summed over its {len(a['runs'])} processes ({processes:.1f} s): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items())
            + f", process exit and the rest {processes - sum(parts.values()):.1f} s."]
    if "Lightning" in ways:
        out.append(f"Lightning: importing it and reading the arrays {b['import and data']:.1f} s once; the rest is "
                   "Trainer set-up and its checkpoints.")
    # results table
    acc = accuracies(r)
    out += ["", "Results (mean over seeds, best-validation weights; epochs recorded per run):", "",
            "| configuration | " + " | ".join(f"{w} val / test acc" for w in acc) + " |",
            "|---|" + "---:|" * len(acc)]
    for label, _ in r["configs"]:
        out.append(f"| {label} | " + " | ".join(
            f"{acc[w][label]['val_accuracy']:.3f} / {acc[w][label]['test_accuracy']:.3f} ({acc[w][label]['epochs']:.0f} ep)"
            for w in acc) + " |")
    return out


DIFFERENCES = [
    "- Same: model (MLP, ReLU, the BatchNorm configurations with BatchNorm before the activation and no bias in "
    "the Linear before it), optimizer and its knobs (read from reglab's resolved configuration), epochs, "
    "batch size, evaluation batch size (1024), train/val/test splits (reglab's, written to `.npy` for (a) and (b)), "
    "torch threads, `OMP_WAIT_POLICY`, and the evaluations: validation after every epoch, then validation and "
    "test of the last weights and of the best-validation weights.",
    "- reglab runs with `eval_train = false` (its default also evaluates the whole training split at the end; "
    "the by-hand and Lightning ways do not).",
    "- Data path: (a) and (b) feed PIL images through `ToTensor` + `Normalize` (CIFAR-10) or one tensor per "
    "item (MNIST-1D) through a `DataLoader` with `num_workers=0` (faster than 2 workers on this 2-core CPU, see "
    "`speed_results.md`); reglab keeps the splits as tensors and indexes whole batches.",
    "- Optimizers: reglab uses torch's fused SGD/Adam/AdamW kernels, (a) and (b) torch's default implementation "
    "(the same update to float rounding).",
    "- Seeds: reglab trains the seeds of a configuration stacked in one model where its grouping decision says so "
    "(the table above says which); (a) and (b) train one seed at a time. Initial weights and batch order differ "
    "between the ways (different random streams), so accuracies agree within seed noise, not exactly.",
    "- Process start-up: (a) starts one Python process per configuration and seed (interpreter, torch, "
    "torchvision, reading the arrays), counted in its time; (b) runs in this already started process (its "
    "time counts importing Lightning and reading the arrays once); (c) starts one process for the study.",
    "- Checkpoints: reglab writes last.pt every epoch and best.pt on improvement; Lightning's ModelCheckpoint "
    "writes the best checkpoint; the by-hand script keeps the best weights in memory.",
    "- Lightning runs with `num_sanity_val_steps=0`, no logger, no progress bar and no model summary.",
    "- A study run with training batches per epoch (`--quick`: 40 for CIFAR-10; `--budget STUDY:batches=N`) trains "
    "on that many batches of the training split per epoch, in all three ways alike, while every evaluation stays "
    "full-size, so evaluation weighs more than in a study over whole epochs. `--quick` also uses fewer "
    "seeds/configurations/epochs; its figures say little about the acceptance target.",
]


def write(report: dict[str, Any], out: Path, started: float, done: bool) -> str:
    """Write STEM.md and STEM.json from what has been measured so far (after each study: a run stopped
    half-way leaves the studies it finished, marked partial)."""
    report["partial"] = not done
    report["load_after"] = loadavg()
    report["summary"] = summarize(report["studies"])
    report["total_seconds"] = time.perf_counter() - started
    for r in report["studies"]:
        r["accuracies"] = accuracies(r)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    return text


# ---- main -----------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a reduced budget, under 3 minutes on the idle 2-core CPU")
    p.add_argument("--studies", nargs="+", choices=list(FULL), default=list(FULL), help="which studies")
    p.add_argument("--configs", type=int, help="configurations per study (baseline + steps) for every study")
    p.add_argument("--seeds", type=int, help="seeds for every study")
    p.add_argument("--epochs", type=int, help="epochs for every study")
    p.add_argument("--quickstart-epochs", type=int, help="epochs of the quickstart study only (its own: 120)")
    p.add_argument("--budget", action="append", default=[], metavar="STUDY:KEY=N",
                   help="one study's budget, e.g. pimp-my-model:batches=50 (KEY: configs, seeds, epochs, batches; repeat)")
    p.add_argument("--batches", type=int, help="training batches per epoch for every study (default: the whole split)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of every way (default: reglab's default)")
    p.add_argument("--no-lightning", action="store_true", help="skip (b)")
    p.add_argument("--out", type=Path, default=HERE / "study_speed", help="output stem: STEM.md and STEM.json")
    p.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="measure nothing: rewrite the Markdown beside JSON (a study_speed.json) from its numbers")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.render is not None:
        report = json.loads(args.render.read_text())
        report["rendered"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        args.render.with_suffix(".md").write_text(markdown(report))
        print(f"wrote {args.render.with_suffix('.md')} from {args.render}")
        return report
    started_at, started = datetime.now(UTC), time.perf_counter()
    threads = args.threads or machine.default_threads()
    torch.set_num_threads(threads)
    lightning = None if args.no_lightning or importlib.util.find_spec("lightning") is None else version("lightning")
    budgets = {}
    for name in args.studies:
        b = dict((QUICK if args.quick else FULL)[name])
        for key in ("configs", "seeds", "epochs", "batches"):
            if getattr(args, key) is not None:
                b[key] = getattr(args, key)
        if name == "quickstart" and args.quickstart_epochs is not None:
            b["epochs"] = args.quickstart_epochs
        for item in args.budget:
            study, _, assignment = item.partition(":")
            key, _, value = assignment.partition("=")
            if study not in FULL or key not in b or not value.isdigit():
                raise SystemExit(f"--budget {item}: expected STUDY:KEY=N with STUDY in {list(FULL)}, KEY in {list(b)}")
            if study == name:
                b[key] = int(value)
        budgets[name] = b
    info = machine.describe()
    report: dict[str, Any] = {
        "date": started_at.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine.line(info), "machine_info": info,
        "threads": threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (OpenMP's default)"),
        "lightning": lightning, "quick": args.quick, "budgets": budgets, "load_before": loadavg(),
        "command": "python benchmarks/study_speed.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
    }
    print(f"study speed {report['date']}: {report['machine']}; OMP_WAIT_POLICY={report['omp_wait_policy']}; "
          f"load average {report['load_before']}", flush=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="study_speed-"))
    work.mkdir(parents=True, exist_ok=True)
    report["studies"] = []
    try:
        for name in args.studies:
            report["studies"].append(run_study_three_ways(name, budgets[name], work, threads, lightning is not None))
            text = write(report, args.out, started, done=len(report["studies"]) == len(args.studies))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(text.split("## quickstart")[0].split("## pimp")[0])
    print(f"wrote {args.out.with_suffix('.md')} and {args.out.with_suffix('.json')}")
    return report


if __name__ == "__main__":
    main()
