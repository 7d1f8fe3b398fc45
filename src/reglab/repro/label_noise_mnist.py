"""Robustness to massive label noise on MNIST (Rolnick, Veit, Belongie & Shavit 2017, "Deep Learning is
Robust to Massive Label Noise", arXiv:1705.10694, Figure 1), on a CPU budget.

Each clean training example is joined by ``alpha`` copies with uniformly random labels
(``noisy:mnist`` with ``mode="noisy_labels"``, index-mapped: no input is copied). For every alpha in
{0, 5, 20, 50, 100} we train a perceptron, MLPs with 1, 2 and 4 hidden layers of 256 ReLU units and
a 4-layer convnet (3 conv layers of 16/32/32 3x3 filters with max-pooling, then a linear layer) with
Adadelta at two learning rates. The training budget grows with alpha (the clean signal is one example
in 1 + alpha): every run sees ``CLEAN_PASSES`` passes' worth of the clean examples, i.e.
``CLEAN_PASSES * (1 + alpha)`` clean training-set sizes of (mostly noisy) examples. The clean
validation split (5,000 images, never noisy) is evaluated ``EVALS`` times per run; training stops after ``PATIENCE`` evaluations without
improvement and the best evaluation's weights are kept. For each (model, alpha) the learning rate
with the best validation accuracy is selected and its test accuracy reported and plotted against alpha.

Batch 1024 instead of the paper's 128 (CPU budget: 8x fewer steps for the same examples; the paper's
batch-size experiments find larger batches *help* under noise, so say so beside the comparison). bf16 autocast
where the device runs it natively (CUDA; CPUs with AVX512-BF16/AMX).

The full budget then runs the batch-size figure (the paper's Section 5, "the effective batch size"):
:data:`SWEEP`'s model at a fixed alpha, each batch size shown the same number of examples, on 3 paired
seeds (:func:`batch_sweep`, recorded in ``batch.json``; RESULTS.md gives the paired differences).

Run: ``reglab repro label-noise-mnist [-o folder] [--quick]`` (``REGLAB_DATA`` must hold MNIST);
:func:`extend` trains one cell of the grid for longer.
Runs already recorded in ``runs.json`` of the output folder are skipped, so an interrupted run
continues, and several processes can split the work (``run(out, models=[...], lrs=[...], alphas=[...])``) and be merged
by copying their ``runs.json`` entries into one folder and calling ``run`` once more.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch


from ..config import RunConfig, dumps
from ..data import load
from ..data.label_noise import with_label_noise
from ..engine.loop import fit
from ..engine.progress import progress_bar
from ..engine.run import select_device
from ..engine.step import cpu_has_native_bf16
from ..study.statistics import mean_se, paired_differences, t_test

NAME = "label-noise-mnist"
SUMMARY = "Rolnick et al. 2017: test accuracy vs alpha noisy labels per clean label, 5 models, Adadelta"

ALPHAS = [0, 5, 20, 50, 100]
LRS = [0.1, 1.0]
BATCH, CLEAN_PASSES, MIN_STEPS, EVALS, PATIENCE, VAL_FRACTION = 1024, 2, 500, 40, 10, 1 / 12
#: model name -> (reglab model, options)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "perceptron": ("mlp", {"hidden": []}),
    "MLP1": ("mlp", {"hidden": [256]}),
    "MLP2": ("mlp", {"hidden": [256, 256]}),
    "MLP4": ("mlp", {"hidden": [256] * 4}),
    "conv4": ("convnet", {"channels": [16, 32, 32], "kernel_size": 3}),
}
#: the batch-size figure (Rolnick et al. 2017, Section 5, "the effective batch size"): one model at a fixed
#: alpha and learning rate, each batch size trained on the same number of examples (``CLEAN_PASSES``
#: clean passes' worth), paired seeds (same noisy set; seed-specific initialization and order)
SWEEP: dict[str, Any] = dict(model="MLP1", alpha=20, lr=1.0, batches=[128, 512, 2048], seeds=[0, 1, 2])
#: Rolnick et al. 2017 (abstract, Figure 1): the conv net's MNIST test accuracy at alpha = 100, "above 90 percent"
PUBLISHED_CONV_ALPHA100 = 91.0


def budget(alpha: int, n_clean: int, clean_passes: float = CLEAN_PASSES) -> int:
    """Training steps for ``alpha``: ``clean_passes`` passes over the clean examples, which make up one
    in ``1 + alpha`` of the noisy set (at least ``MIN_STEPS``)."""
    return max(MIN_STEPS, math.ceil(clean_passes * n_clean * (1 + alpha) / BATCH))


def _amp() -> str:
    return "bf16" if torch.cuda.is_available() or cpu_has_native_bf16() else "off"


def train_one(data: Any, model: str, options: dict[str, Any], lr: float, steps: int, seed: int = 0) -> dict[str, Any]:
    """Train for ``steps`` batches through ``reglab.engine.loop.fit``, validating on the clean split
    every ``steps // EVALS`` batches, early stopping after ``PATIENCE`` validations without improvement;
    the test accuracy of the best validation's weights."""
    config = RunConfig(dataset=data.name, model=model, model_options=options, batch_size=BATCH, seed=seed,
                       amp=_amp(), steps=steps, eval_every=max(1, steps // EVALS), eval_train=False,
                       techniques=[{"name": "adadelta", "lr": lr}, {"name": "early_stopping", "patience": PATIENCE}])
    t0 = time.perf_counter()
    [result] = fit(config, [seed], data=data, progress=False, keep_models=False)
    m, history = result.metrics, result.history
    return {"val_accuracy": m["best_val_accuracy"], "test_accuracy": m["test_accuracy"],
            "best_step": history[int(m["best_epoch"]) - 1]["step"], "steps": history[-1]["step"], "budget": steps,
            "seconds": time.perf_counter() - t0, "amp": config.amp, "device": str(select_device(config.device)),
            "curve": [r["val_accuracy"] for r in history]}


def train_seeds(data: Any, model: str, options: dict[str, Any], lr: float, steps: int, batch: int,
                seeds: list[int]) -> list[dict[str, Any]]:
    """Like :func:`train_one` with batch ``batch``, for several seeds stacked in one
    ``reglab.engine.loop.fit`` call; one record per seed (``seconds`` is the whole group's)."""
    config = RunConfig(dataset=data.name, model=model, model_options=options, batch_size=batch, seed=seeds[0],
                       amp=_amp(), steps=steps, eval_every=max(1, steps // EVALS), eval_train=False,
                       techniques=[{"name": "adadelta", "lr": lr}, {"name": "early_stopping", "patience": PATIENCE}])
    t0 = time.perf_counter()
    results = fit(config, seeds, data=data, progress=False, keep_models=False)
    seconds = time.perf_counter() - t0
    return [{"seed": seed, "val_accuracy": r.metrics["best_val_accuracy"], "test_accuracy": r.metrics["test_accuracy"],
             "best_step": r.history[int(r.metrics["best_epoch"]) - 1]["step"], "steps": r.history[-1]["step"],
             "budget": steps, "seconds": seconds, "threads": torch.get_num_threads()} for seed, r in zip(seeds, results)]


def sweep_steps(batch: int, alpha: int, n_clean: int, clean_passes: float = CLEAN_PASSES) -> int:
    """Steps of batch ``batch`` that show the examples of :func:`budget` (at least ``MIN_STEPS``)."""
    return max(MIN_STEPS, math.ceil(clean_passes * n_clean * (1 + alpha) / batch))


def batch_sweep(out: Path, clean: Any, sweep: dict[str, Any] = SWEEP, clean_passes: float = CLEAN_PASSES,
                progress: bool = True) -> list[dict[str, Any]]:
    """Test accuracy against the batch size at ``sweep["alpha"]``: every batch size in ``sweep["batches"]``
    on the seeds ``sweep["seeds"]``, recorded in ``out/batch.json`` (seeds already recorded there are
    skipped, so an interrupted sweep continues)."""
    saved = Path(out) / "batch.json"
    rows: list[dict[str, Any]] = json.loads(saved.read_text()) if saved.exists() else []
    data = with_label_noise(clean, "noisy_labels", alpha=sweep["alpha"], seed=0)
    name, options = MODELS[sweep["model"]]
    for batch in sweep["batches"]:
        cell = (sweep["model"], sweep["alpha"], sweep["lr"], batch, clean_passes)
        done = {r["seed"] for r in rows if (r["model"], r["alpha"], r["lr"], r["batch"], r["clean_passes"]) == cell}
        seeds = [s for s in sweep["seeds"] if s not in done]
        if not seeds:
            continue
        steps = sweep_steps(batch, sweep["alpha"], len(clean.train), clean_passes)
        new = train_seeds(data, name, options, sweep["lr"], steps, batch, seeds)
        rows += [{"model": sweep["model"], "alpha": sweep["alpha"], "lr": sweep["lr"], "batch": batch,
                  "clean_passes": clean_passes, **r} for r in new]
        saved.write_text(dumps(rows, indent=1))
        if progress:
            print(f"[{NAME}] batch sweep: batch {batch}, {steps} steps, seeds {seeds}: test accuracy "
                  + ", ".join(f"{100 * r['test_accuracy']:.2f}" for r in new) + f" ({new[0]['seconds']:.0f} s)", flush=True)
    return rows


def run(out: Path, *, quick: bool = False, progress: bool = True, models: list[str] | None = None,
        lrs: list[float] | None = None, alphas: list[int] | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(models or []) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown} (allowed: {', '.join(MODELS)})")
    clean = load("mnist", val_fraction=VAL_FRACTION, split_seed=0)
    alphas = alphas or ([0, 100] if quick else ALPHAS)
    passes = CLEAN_PASSES / 20 if quick else CLEAN_PASSES
    lrs = lrs or ([0.1] if quick else LRS)
    names = models or list(MODELS)
    saved = out / "runs.json"
    runs: list[dict[str, Any]] = json.loads(saved.read_text()) if saved.exists() else []
    done = {(r["model"], r["alpha"], r["lr"]) for r in runs}
    t0 = time.perf_counter()
    todo = [(a, n, lr) for a in alphas for n in names for lr in lrs]
    bar = progress_bar(len(todo), f"[{NAME}]", "run", initial=sum(key in done for key in todo)) if progress else None
    for alpha in alphas:
        data = with_label_noise(clean, "noisy_labels", alpha=alpha, seed=0)
        steps = budget(alpha, len(clean.train), passes)
        for name in names:
            model, options = MODELS[name]
            for lr in lrs:
                if (name, alpha, lr) in done:
                    continue
                r = train_one(data, model, options, lr, steps)
                runs.append({"model": name, "alpha": alpha, "lr": lr, **r})
                saved.write_text(dumps(runs, indent=1))  # progress, kept if interrupted
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"alpha={alpha} {name} lr={lr} val={100 * r['val_accuracy']:.2f} "
                                        f"test={100 * r['test_accuracy']:.2f} steps={r['steps']}/{steps} {r['seconds']:.0f}s")
    if bar is not None:
        bar.close()
    if not quick:
        batch_sweep(out, clean, progress=progress)
    total = time.perf_counter() - t0
    best = select(runs)
    (out / "results.json").write_text(dumps({"runs": runs, "selected": best, "seconds": total}, indent=1))
    _plot(best, out / "label_noise_mnist.png")
    if (out / "batch.json").exists():
        _plot_batch(json.loads((out / "batch.json").read_text()), out / "label_noise_batch.png")
    path = out / "RESULTS.md"
    path.write_text(_markdown(runs, best, quick, passes, len(clean.train), out))
    return path


def extend(out: Path, model: str = "conv4", alpha: int = 100, lr: float = 0.1, clean_passes: float = 4) -> dict[str, Any]:
    """One run of the grid with a larger budget (``clean_passes`` instead of ``CLEAN_PASSES``), recorded
    in ``out/longer.json`` and shown in RESULTS.md's "Longer training" table by the next :func:`run`:
    does the accuracy keep rising with training? Not used to select anything."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean = load("mnist", val_fraction=VAL_FRACTION, split_seed=0)
    data = with_label_noise(clean, "noisy_labels", alpha=alpha, seed=0)
    name, options = MODELS[model]
    r = train_one(data, name, options, lr, budget(alpha, len(clean.train), clean_passes))
    r.update(model=model, alpha=alpha, lr=lr, clean_passes=clean_passes, threads=torch.get_num_threads())
    saved = out / "longer.json"
    longer = json.loads(saved.read_text()) if saved.exists() else []
    saved.write_text(dumps([*longer, r], indent=1))
    return r


def _longer(out: Path, runs: list[dict[str, Any]]) -> str:
    """The "Longer training" section from ``out/longer.json`` (empty when there is none)."""
    saved = Path(out) / "longer.json"
    if not saved.exists():
        return ""
    rows = []
    for r in json.loads(saved.read_text()):
        base = next((b for b in runs if (b["model"], b["alpha"], b["lr"]) == (r["model"], r["alpha"], r["lr"])), None)
        before = f"{100 * base['test_accuracy']:.2f}" if base else "-"
        rows.append(f"| {r['model']} | {r['alpha']} | {r['lr']} | {before} | {r['clean_passes']:g} | {100 * r['val_accuracy']:.2f} | "
                    f"{100 * r['test_accuracy']:.2f} | {r['best_step']} / {r['steps']} | {r['seconds'] / 60:.0f} min, {r['threads']} thread(s) |")
    return f"""## Longer training (not used for selection)

`python -c "from reglab.repro.label_noise_mnist import extend; extend('{out}', 'conv4', 100, 0.1, clean_passes=4)"`,
then `reglab repro label-noise-mnist -o {out}` (nothing retrained) to re-render this file.

| model | alpha | lr | test acc, {CLEAN_PASSES:g} clean passes (%) | clean passes | val acc (%) | test acc (%) | best step / steps | time |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
"""


def _by_batch(rows: list[dict[str, Any]]) -> dict[int, dict[int, dict[str, Any]]]:
    """batch -> seed -> record, for the sweep setting of the first record."""
    cell = lambda r: (r["model"], r["alpha"], r["lr"], r["clean_passes"])  # noqa: E731
    out: dict[int, dict[int, dict[str, Any]]] = {}
    for r in rows:
        if cell(r) == cell(rows[0]):
            out.setdefault(r["batch"], {})[r["seed"]] = r
    return dict(sorted(out.items()))


def _plot_batch(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = _by_batch(rows)
    first = rows[0]
    fig, ax = plt.subplots(figsize=(6, 4))
    for batch, seeds in per.items():
        acc = [100 * r["test_accuracy"] for r in seeds.values()]
        ax.scatter([batch] * len(acc), acc, color="tab:blue", alpha=0.5, s=15)
    stats = [mean_se([100 * r["test_accuracy"] for r in seeds.values()]) for seeds in per.values()]
    ax.errorbar(list(per), [m for m, _ in stats], yerr=[0 if se != se else se for _, se in stats], color="k", marker="s",
                capsize=4, label="mean ± SE over seeds (points: seeds)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (the same number of training examples for each)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{first['model']}, alpha = {first['alpha']}, Adadelta lr {first['lr']:g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _batch_section(out: Path, n_clean: int) -> str:
    """The "Batch size at a fixed alpha" section from ``out/batch.json`` (empty when there is none),
    with the paired comparison of each batch size with the smallest, computed from the seeds."""
    saved = Path(out) / "batch.json"
    if not saved.exists():
        return ""
    rows = json.loads(saved.read_text())
    per = _by_batch(rows)
    first = rows[0]
    table = []
    for batch, seeds in per.items():
        acc = [100 * r["test_accuracy"] for r in seeds.values()]
        m, se = mean_se(acc)
        one = next(iter(seeds.values()))
        table.append(f"| {batch} | {one['budget']:,} | {m:.2f} ± {se:.2f} | {', '.join(f'{a:.2f}' for a in acc)} | "
                     f"{', '.join(str(r['best_step']) for r in seeds.values())} | {one['seconds']:.0f} |")
    small = min(per)
    lines = []
    for batch in list(per)[1:]:
        common = sorted(set(per[batch]) & set(per[small]))
        d = paired_differences([100 * per[batch][s]["test_accuracy"] for s in common],
                               [100 * per[small][s]["test_accuracy"] for s in common])
        m, se = mean_se(d)
        lo, hi = t_test(d)[1]
        if lo == lo and (lo > 0 or hi < 0):
            said = f"batch {batch} is {'more' if m > 0 else 'less'} accurate than batch {small} (the interval excludes 0)"
        else:
            said = f"not resolved from batch {small} at {len(d)} seeds (the interval contains 0)"
        lines.append(f"- batch {batch} minus batch {small}: {m:+.2f} ± {se:.2f} points (95 % t interval "
                     f"[{lo:+.2f}, {hi:+.2f}], {len(d)} paired seeds): {said}.")
    seeds_used = sorted({s for v in per.values() for s in v})
    passes, alpha = first["clean_passes"], first["alpha"]
    return f"""## Batch size at a fixed alpha (the effective batch size)

Rolnick et al. (Section 5) argue that the noisy labels' gradients largely cancel within a batch, so a larger
batch is effectively less noisy and training more robust to label noise. Here: {first['model']} at alpha = {alpha},
Adadelta lr {first['lr']:g}; every batch size is shown the same {passes:g} clean passes' worth of examples
({passes:g} x {1 + alpha} x {n_clean:,}, so smaller batches take more steps), with validation and early stopping as
above; seeds {', '.join(map(str, seeds_used))} (paired: the same noisy set, noise seed 0; seed-specific initialization and
data order). Produced by `reglab repro {NAME} -o {out}` (the full budget runs this sweep after the grid and
records it in batch.json; recorded batch sizes are not retrained).

| batch | steps | test acc (%), mean ± SE | per seed | best step per seed | seconds (seeds stacked) |
|---|---|---|---|---|---|
{chr(10).join(table)}

{chr(10).join(lines)}

![test accuracy vs batch size](label_noise_batch.png)

"""


def select(runs: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """Per model and alpha, the run (learning rate) with the best clean validation accuracy."""
    best: dict[str, dict[int, dict[str, Any]]] = {}
    for r in runs:
        cur = best.setdefault(r["model"], {}).get(r["alpha"])
        if cur is None or r["val_accuracy"] > cur["val_accuracy"]:
            best[r["model"]][r["alpha"]] = r
    return best


def _plot(best: dict[str, dict[int, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, per_alpha in best.items():
        alphas = sorted(per_alpha)
        ax.plot(alphas, [100 * per_alpha[a]["test_accuracy"] for a in alphas], marker="o", label=f"{name} (ours)")
    ax.plot([100], [PUBLISHED_CONV_ALPHA100], marker="*", ms=16, ls="none", color="k",
            label="Rolnick et al.: conv net at alpha=100 (~91%)")
    ax.set_xlabel("alpha (noisy labels per clean label)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("MNIST with uniform label noise (reglab, CPU budget)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _verdict(best: dict[str, dict[int, dict[str, Any]]]) -> str:
    """Ours beside the paper, computed from the selected runs (no hand-written claims)."""
    order = [m for m in MODELS if m in best]
    top = max(a for m in order for a in best[m])
    at_top = {m: 100 * best[m][top]["test_accuracy"] for m in order if top in best[m]}
    ranked = sorted(at_top, key=at_top.get)
    lines = [f"At alpha = {top}, from least to most robust: " + " < ".join(f"{m} {at_top[m]:.2f}" for m in ranked) + "."]
    if ranked == [m for m in order if m in at_top]:
        lines.append("Larger models are more robust, in the paper's order (perceptron < MLP1 < MLP2 < MLP4 < conv4).")
    else:
        lines.append("The order differs from the paper's (perceptron < MLP1 < MLP2 < MLP4 < conv4).")
    if "conv4" in at_top:
        lines.append(f"conv4 at alpha = {top}: {at_top['conv4']:.2f} % (paper: about {PUBLISHED_CONV_ALPHA100:.0f} %).")
    return " ".join(lines)


def _markdown(runs: list[dict[str, Any]], best: dict[str, Any], quick: bool, passes: float, n_clean: int,
              out: Path) -> str:
    alphas = sorted({r["alpha"] for r in runs})
    head = "| model | " + " | ".join(f"alpha={a}" for a in alphas) + " |\n|---|" + "---|" * len(alphas)
    rows = [f"| {m} | " + " | ".join(f"{100 * best[m][a]['test_accuracy']:.2f} (lr {best[m][a]['lr']})" if a in best[m] else "-"
                                     for a in alphas) + " |" for m in best]
    all_rows = [f"| {r['model']} | {r['alpha']} | {r['lr']} | {100 * r['val_accuracy']:.2f} | {100 * r['test_accuracy']:.2f} | "
                f"{r['best_step']} / {r['steps']} / {r['budget']} | {r['seconds']:.0f} |" for r in runs]
    budgets = ", ".join(f"alpha={a}: {budget(a, n_clean, passes):,}" for a in alphas)
    seconds = sum(r["seconds"] for r in runs)
    amp = sorted({r.get("amp", "off") for r in runs})
    return f"""# Robustness to massive label noise on MNIST (Rolnick et al. 2017)

Rendered {date.today()} on {platform.machine()} ({os.cpu_count()} CPU cores{', ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ', no GPU'}),
torch {torch.__version__}. Command: `REGLAB_DATA=../shared/datasets reglab repro label-noise-mnist{' --quick' if quick else ''} -o {out}`
(the folder also holds results.json with every run's validation curve, and runs.json, from which an
interrupted run continues). Sum of the runs' training times: {seconds / 60:.1f} min
(devices: {', '.join(sorted({r.get('device', 'cpu') for r in runs}))}; autocast: {', '.join(amp)}){' -- QUICK budget: a first look only' if quick else ''}.
One seed (0), noise seed 0.

## Test accuracy (%) against alpha (learning rate chosen on the clean validation split)

{head}
{chr(10).join(rows)}

Published (Rolnick et al. 2017, Figure 1 and text): at alpha = 100 the conv net still reaches above
90 % (about 91 %) test accuracy on MNIST; all models degrade as alpha grows, the perceptron and shallow
MLPs fastest, deeper MLPs and the conv net least.

{_verdict(best)}

![test accuracy vs alpha](label_noise_mnist.png)

## Configuration

- Data: MNIST (offline IDX copy); {n_clean:,} clean training images, 5,000 clean validation images (split seed 0,
  never noisy), the 10,000 test images. `noisy:mnist` with `mode=noisy_labels, alpha=A, noise_seed=0`: each
  clean example plus A copies with uniformly random labels (index-mapped; at alpha = 100 the training set has
  {101 * n_clean:,} examples).
- Models: perceptron (`mlp hidden=[]`), MLP1/2/4 (`mlp hidden=[256]*k`, ReLU), conv4 (`convnet channels=[16,32,32],
  kernel_size=3`: three conv + max-pool stages and a linear layer).
- Optimizer: Adadelta (rho 0.9), batch {BATCH}, learning rates {sorted({r['lr'] for r in runs})}.
- Budget: {passes:g} passes' worth of clean examples, i.e. {passes:g} x (1 + alpha) x {n_clean:,}
  examples (at least {MIN_STEPS} steps): {budgets} steps.
- Early stopping: the clean validation accuracy is evaluated {EVALS} times per budget; stop after {PATIENCE}
  evaluations without improvement; the best evaluation's weights give the test accuracy.

## What differs from the paper

- Batch {BATCH} instead of 128: 8x fewer optimizer steps for the same examples, which the CPU needs. The
  paper's batch-size experiments find that larger batches make training *more* robust to label noise,
  so at equal training our high-alpha figures are, if anything, favourable compared with batch 128.
- Training length: {passes:g} clean passes' worth of examples instead of training until the validation
  accuracy stops improving: runs whose best step is their last (see "Every run") were still improving.
- alpha in {{{', '.join(map(str, alphas))}}} instead of every value from 0 to 100; learning rates
  {sorted({r['lr'] for r in runs})} only; one seed; hidden widths 256 and a small conv net (16/32/32 filters) chosen for the CPU.

{_longer(out, runs)}
{_batch_section(out, n_clean)}## Every run

| model | alpha | lr | val acc (%) | test acc (%) | best step / steps / budget | seconds |
|---|---|---|---|---|---|---|
{chr(10).join(all_rows)}
"""


def full_run_time(folder: Path) -> tuple[float, str] | None:
    """For ``reglab repro --list``: the sum of the runs' training times when ``runs.json`` holds the
    full grid (every model, alpha and learning rate). The run resumes from ``runs.json`` when
    interrupted, so its last invocation's wall time is not the full run's."""
    runs = json.loads((Path(folder) / "runs.json").read_text())
    if not {(m, a, lr) for m in MODELS for a in ALPHAS for lr in LRS} <= {(r["model"], r["alpha"], r["lr"]) for r in runs}:
        return None
    name = Path(folder).name
    seconds, what = sum(r["seconds"] for r in runs), f"the sum of the {len(runs)} runs' training times, from results/{name}/runs.json"
    sweep = Path(folder) / "batch.json"
    if sweep.exists():  # one group time per batch size (its seeds train stacked)
        groups = {(r["batch"], r["clean_passes"]): r["seconds"] for r in json.loads(sweep.read_text())}
        seconds += sum(groups.values())
        what += f", and of the batch sweep's {len(groups)} groups, from batch.json"
    return seconds, what
