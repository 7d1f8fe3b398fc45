"""Reproduction of TENT on corrupted CIFAR-10 (Wang et al., "Tent: Fully Test-Time Adaptation by
Entropy Minimization", ICLR 2021; official code github.com/DequanWang/tent, ``cifar10c.py``).

1. Train a small BatchNorm convnet (``convnet``, ``norm="batch"``) on a subset of the CIFAR-10
   training split with the reglab trainer (SGD + cosine, random crop and flip); its checkpoints go
   to ``<out>/checkpoint/`` (``last.pt``, reused when present: a second run only evaluates).
2. Corrupt the test split (or a fixed random subset) with each of the 15 CIFAR-10-C corruptions at
   severity 5 (:mod:`reglab.data.corruptions`; generator seeded per corruption).
3. Evaluate the three test-time modes of :mod:`reglab.analysis.tta` on each corrupted set, streamed in
   batches in a fixed random order: ``source`` (no adaptation), ``norm`` (BN statistics of each test
   batch) and ``tent`` (one Adam step on the BN affine parameters per batch minimizing the mean
   softmax entropy; online predictions; lr 1e-3 and batch 200, the official CIFAR-10 settings; the
   adaptation restarts from the source model for every corruption, as the official script resets).
4. Entropy versus error: per corruption (mean entropy against error, each mode) and per example
   (error rate in entropy bins).
5. Sensitivity of TENT to its learning rate and batch size on one corruption (gaussian_noise), on a
   random subset of ``sens_subset`` images.

Writes ``errors.png``, ``entropy_error.png``, ``sensitivity.png``, ``results.json`` and ``RESULTS.md``.
"""
from __future__ import annotations

import time
import zlib
from pathlib import Path

import torch
from torch import nn

from ..config import RunConfig, dumps
from ..data.corruptions import CORRUPTIONS, corrupt
from ..data import Data, load, subset
from ..analysis.tta import MODES, evaluate_tta
from ..engine.loop import fit
from ..engine.progress import progress_bar
from .provenance import Clock, provenance, recorded

NAME = "tent-cifar10"
SUMMARY = "TENT vs norm vs source on CIFAR-10-C-style corruptions at severity 5, entropy vs error, lr x batch sensitivity"

FULL = dict(train_subset=20000, epochs=8, channels=[16, 32, 64], batch_size=128, lr=0.05, test_subset=10000,
            severity=5, sens_subset=2000, tent_lr=1e-3, tent_batch=200, sens_corruption="gaussian_noise",
            sens_lrs=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2], sens_batches=[16, 50, 200, 500])
QUICK = dict(FULL, train_subset=5000, epochs=2, test_subset=500, sens_subset=500, sens_lrs=[1e-4, 1e-3, 1e-2], sens_batches=[50, 200])

# the published anchor: official repository's example, WRN-28-10, CIFAR-10-C severity 5, mean over 15 corruptions
PAPER_MEAN = {"source": 43.5, "norm": 20.4, "tent": 18.6}


def train_source(out: Path, cfg: dict, progress: bool) -> tuple[nn.Module, Data, dict]:
    """Train (or reload from ``out/checkpoint/last.pt``) the BN convnet on a training subset."""
    data = load("cifar10")
    data = subset(data, n_train=cfg["train_subset"], seed=0)
    config = RunConfig(
        dataset="cifar10", model="convnet", model_options={"channels": cfg["channels"], "norm": "batch"},
        epochs=cfg["epochs"], batch_size=cfg["batch_size"], metric="val_accuracy", device="cpu",
        techniques=[
            {"name": "sgd", "lr": cfg["lr"], "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
            {"name": "cosine"}, {"name": "crop", "padding": 4}, {"name": "flip"},
        ],
    )
    reused = (out / "checkpoint" / "last.pt").exists()
    result = fit(config, seeds=[0], data=data, run_dir=out / "checkpoint", resume=True, progress=progress)[0]
    return result.model.eval(), data, {**result.metrics, "checkpoint_reused": reused}


def corrupted(x: torch.Tensor, name: str, severity: int) -> torch.Tensor:
    """The images ``x`` corrupted by ``name``, with a generator seeded from the corruption's name."""
    return corrupt(x, name, severity, torch.Generator().manual_seed(zlib.crc32(f"{name}/{severity}".encode())))


def _plot_errors(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(13, 4.5))
    width = 0.27
    names = list(table)
    for i, mode in enumerate(MODES):
        ax.bar([j + (i - 1) * width for j in range(len(names))], [100 * table[n][mode]["error"] for n in names],
               width, label=mode)
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_ylabel("test error (%)")
    ax.set_title("Error per corruption at severity 5: source vs norm vs TENT (our BN convnet)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def entropy_error_correlation(table: dict) -> dict[str, float]:
    """Pearson correlation, across corruptions, between a mode's mean entropy and its error."""
    out = {}
    for mode in MODES:
        pairs = torch.tensor([[table[n][mode]["entropy"], table[n][mode]["error"]] for n in table], dtype=torch.float64)
        out[mode] = float(torch.corrcoef(pairs.T)[0, 1])
    return out


def _plot_entropy(table: dict, per_example: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    r = entropy_error_correlation(table)
    for mode, marker in zip(MODES, "os^"):
        a.scatter([table[n][mode]["entropy"] for n in table], [100 * table[n][mode]["error"] for n in table],
                  marker=marker, label=f"{mode} (Pearson r = {r[mode]:.2f})")
    a.set_xlabel("mean prediction entropy (nats)")
    a.set_ylabel("error (%)")
    a.set_title("Per corruption: mean entropy vs error")
    a.legend()
    for mode in MODES:
        ent, wrong = per_example[mode]
        edges = torch.quantile(ent, torch.linspace(0, 1, 11))
        idx = torch.bucketize(ent, edges[1:-1])
        centers = [float(ent[idx == k].mean()) for k in range(10)]
        rates = [100 * float(wrong[idx == k].float().mean()) for k in range(10)]
        b.plot(centers, rates, "o-", label=mode)
    b.set_xlabel("prediction entropy (nats), decile bins over all corrupted test images")
    b.set_ylabel("error in the bin (%)")
    b.set_title("Per example: error rate by entropy decile")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_sensitivity(sens: dict, cfg: dict, reference: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for bs in cfg["sens_batches"]:
        ax.plot(cfg["sens_lrs"], [100 * sens[f"{lr:g}/{bs}"] for lr in cfg["sens_lrs"]], "o-", label=f"TENT, batch {bs}")
    ax.axhline(100 * reference["source"], color="k", ls="--", label="source")
    for bs in cfg["sens_batches"]:
        ax.scatter([cfg["sens_lrs"][0] / 2], [100 * reference[f"norm/{bs}"]], marker="x", color="0.3")
    ax.set_xscale("log")
    ax.set_xlabel("TENT learning rate (Adam)")
    ax.set_ylabel("error (%)")
    ax.set_title(f"TENT sensitivity on {cfg['sens_corruption']} (severity {cfg['severity']}); x: norm per batch size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(out: Path, *, quick: bool = False, progress: bool = True) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = QUICK if quick else FULL
    clock = Clock()
    started, cpu0 = time.time(), time.process_time()
    model, data, train_metrics = train_source(out, cfg, progress)
    t_train = time.time() - started

    gen = torch.Generator().manual_seed(1)
    rows = torch.randperm(len(data.test), generator=gen)[: cfg["test_subset"]]
    x_clean, y = data.test.inputs(rows), data.test.y[rows]
    norm = data.normalize
    clean = {m: evaluate_tta(model, x_clean, y, m, batch_size=cfg["tent_batch"], lr=cfg["tent_lr"], normalize=norm)["error"]
             for m in MODES}

    table: dict[str, dict] = {}
    per_example = {m: ([], []) for m in MODES}
    sens_x = None
    t0 = time.time()
    bar = progress_bar(len(CORRUPTIONS), f"[{NAME}]", "corruption") if progress else None
    for name in CORRUPTIONS:
        xc = corrupted(x_clean, name, cfg["severity"])
        if name == cfg["sens_corruption"]:
            sens_x = xc
        table[name] = {}
        for mode in MODES:
            r = evaluate_tta(model, xc, y, mode, batch_size=cfg["tent_batch"], lr=cfg["tent_lr"], normalize=norm)
            table[name][mode] = {"error": r["error"], "entropy": float(r["entropy"].mean())}
            per_example[mode][0].append(r["entropy"])
            per_example[mode][1].append(~r["correct"])
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{name}: " + ", ".join(f"{m} {100 * table[name][m]['error']:.1f}%" for m in MODES))
    if bar is not None:
        bar.close()
    t_eval = time.time() - t0
    pooled = {m: (torch.cat(e), torch.cat(w)) for m, (e, w) in per_example.items()}

    t0 = time.time()
    sens, reference = {}, {}
    assert sens_x is not None
    sens_x, sens_y = sens_x[: cfg["sens_subset"]], y[: cfg["sens_subset"]]  # rows are in random order already
    reference["source"] = evaluate_tta(model, sens_x, sens_y, "source", normalize=norm)["error"]
    for bs in cfg["sens_batches"]:
        reference[f"norm/{bs}"] = evaluate_tta(model, sens_x, sens_y, "norm", batch_size=bs, normalize=norm)["error"]
        for lr in cfg["sens_lrs"]:
            sens[f"{lr:g}/{bs}"] = evaluate_tta(model, sens_x, sens_y, "tent", batch_size=bs, lr=lr, normalize=norm)["error"]
    t_sens = time.time() - t0
    wall, cpu = time.time() - started, time.process_time() - cpu0
    prov = provenance(clock, f"reglab repro {NAME}{' --quick' if quick else ''} -o {out}")

    means = {m: 100 * sum(table[n][m]["error"] for n in table) / len(table) for m in MODES}
    _plot_errors(table, out / "errors.png")
    _plot_entropy(table, pooled, out / "entropy_error.png")
    _plot_sensitivity(sens, cfg, reference, out / "sensitivity.png")
    (out / "results.json").write_text(dumps(
        {"config": cfg, "train_metrics": train_metrics, "clean": clean, "table": table, "mean_error": means,
         "sensitivity": sens, "sensitivity_reference": reference, "provenance": prov,
         "timing": {"wall": wall, "cpu": cpu, "quick": quick}}, indent=1))
    (out / "RESULTS.md").write_text(_markdown(cfg, quick, out, train_metrics, clean, table, means, sens, reference,
                                              (wall, cpu, t_train, t_eval, t_sens), prov))
    return out / "RESULTS.md"


def _markdown(cfg, quick, out, train_metrics, clean, table, means, sens, reference, times, prov) -> str:  # noqa: ANN001
    wall, cpu, t_train, t_eval, t_sens = times
    rows = "\n".join(
        f"| {n} | " + " | ".join(f"{100 * table[n][m]['error']:.1f}" for m in MODES) + " | "
        + " | ".join(f"{table[n][m]['entropy']:.2f}" for m in MODES) + " |" for n in table)
    head = "| " + " | ".join(f"batch {b}" for b in cfg["sens_batches"]) + " |"
    sens_rows = "\n".join(f"| {lr:g} | " + " | ".join(f"{100 * sens[f'{lr:g}/{b}']:.1f}" for b in cfg["sens_batches"]) + " |"
                          for lr in cfg["sens_lrs"])
    norm_row = "| norm (no step) | " + " | ".join(f"{100 * reference[f'norm/{b}']:.1f}" for b in cfg["sens_batches"]) + " |"
    best = min(sens, key=sens.get)
    order_ok = means["tent"] < means["source"] and means["norm"] < means["source"]
    return f"""# TENT on CIFAR-10-C-style corruptions (severity 5)

Paper: Wang et al., *Tent: Fully Test-Time Adaptation by Entropy Minimization*, ICLR 2021 (official code
github.com/DequanWang/tent). Wall time {wall / 60:.1f} min
(training {t_train / 60:.1f}{' -- the source model was loaded from checkpoint/last.pt, written by an earlier run of this command' if train_metrics.get('checkpoint_reused') else ''}, corruptions + 45 evaluations {t_eval / 60:.1f}, sensitivity {t_sens / 60:.1f});
CPU time {cpu / 60:.1f} min.

{recorded({"provenance": prov})}

## Setup and what was cut
- Source model: `convnet` with channels {cfg['channels']} and BatchNorm after every conv (3 conv-BN-ReLU-maxpool
  stages, linear head), trained by `reglab.engine.loop.fit` on a random {cfg['train_subset']}-image subset of the
  CIFAR-10 (JPEG copy) training split for {cfg['epochs']} epochs: SGD (Nesterov momentum 0.9, lr {cfg['lr']},
  weight decay 5e-4) with cosine decay, random crop (padding 4) and horizontal flip, batch {cfg['batch_size']}.
  Checkpoint: `checkpoint/last.pt` under the output folder. Validation accuracy
  {100 * train_metrics['val_accuracy']:.1f} %, clean test error on the evaluation images: source
  {100 * clean['source']:.1f} %, norm {100 * clean['norm']:.1f} %, TENT {100 * clean['tent']:.1f} %.
  The paper's model is a WRN-28-10 (about 95 % clean accuracy); ours is far smaller, so absolute errors are
  much higher: compare directions and relative gains, not levels.
- Test data: {cfg['test_subset']} test images (a fixed random order of the 10,000; a subset when fewer), corrupted by each of the 15
  corruptions of `reglab.data.corruptions` at severity {cfg['severity']} (CIFAR-10-C parameters of Hendrycks &
  Dietterich; `frost` uses a procedural texture instead of the original photos).
- Modes (`reglab.analysis.tta.evaluate_tta`): source; norm (test-batch BN statistics); TENT (Adam lr {cfg['tent_lr']:g},
  one step per batch of {cfg['tent_batch']} on the BN affine parameters, online predictions). Each corruption
  starts from the source model; batches stream in a fixed random order.

## Error per corruption (%), and mean entropy (nats)

| corruption | source | norm | TENT | entropy source | entropy norm | entropy TENT |
|---|---|---|---|---|---|---|
{rows}
| **mean** | **{means['source']:.1f}** | **{means['norm']:.1f}** | **{means['tent']:.1f}** | | | |

Published anchor (official repository's example, WRN-28-10, full CIFAR-10-C severity 5, mean over the 15
corruptions): source {PAPER_MEAN['source']} %, norm {PAPER_MEAN['norm']} %, TENT {PAPER_MEAN['tent']} %.
Ours: source {means['source']:.1f} %, norm {means['norm']:.1f} %, TENT {means['tent']:.1f} %
(norm {means['norm'] - means['source']:+.1f} and TENT {means['tent'] - means['source']:+.1f} points vs source;
the paper: {PAPER_MEAN['norm'] - PAPER_MEAN['source']:+.1f} and {PAPER_MEAN['tent'] - PAPER_MEAN['source']:+.1f}).
The paper's direction (TENT and norm below source) {'holds' if order_ok else 'does NOT hold'} here; TENT minus
norm: {means['tent'] - means['norm']:+.2f} points on average (the paper: {PAPER_MEAN['tent'] - PAPER_MEAN['norm']:+.1f}),
TENT below norm on {sum(table[n]['tent']['error'] < table[n]['norm']['error'] for n in table)} of 15 corruptions.

![error per corruption](errors.png)

## Entropy versus error
The paper (Figure 1) motivates TENT by lower-entropy predictions being more accurate. Left: each point is one
corruption and mode; Pearson correlation of mean entropy and error across the 15 corruptions:
{', '.join(f'{m} {v:.2f}' for m, v in entropy_error_correlation(table).items())}. Right: all
{cfg['test_subset']} x 15 corrupted predictions of each mode binned by entropy decile (error rate per bin).

![entropy vs error](entropy_error.png)

## Sensitivity to learning rate and batch size ({cfg['sens_corruption']}, severity {cfg['severity']})
On the first {cfg['sens_subset']} of the corrupted test images (a random subset, to fit the CPU budget; fewer
images also means fewer TENT steps: {cfg['sens_subset']} / batch size).
Error (%) of TENT by Adam learning rate (rows) and test batch size (columns); source:
{100 * reference['source']:.1f} %. Best: lr {best.split('/')[0]}, batch {best.split('/')[1]}
({100 * sens[best]:.1f} %).

| lr | {head[2:]}
|---|{'---|' * len(cfg['sens_batches'])}
{sens_rows}
{norm_row}

![sensitivity](sensitivity.png)
"""


__all__ = ["NAME", "SUMMARY", "run", "train_source", "corrupted", "entropy_error_correlation"]
