"""Reproduction of Figure 4 of Shen & Meinshausen, "Engression: Extrapolation through the Lens of
Distributional Regression" (JRSS-B 2024, arXiv:2307.00835): engression versus L1 regression outside
the training range.

For each true function g* in {softplus, square, cubic, log} (``reglab.data.synthetic``: training
range, test range and noise level as there) and each noise model -- pre-additive ``Y = g*(X + eta)``
and post-additive ``Y = g*(X) + eta`` -- every seed draws its own training sample, then fits

- engression: g([x, eps]) on a residual MLP (the ``engression`` technique), energy loss with m = 2
  draws per example, the conditional median predicted from ``draws`` samples;
- L1 regression: the same residual MLP without the noise input, trained on the absolute error (the
  ``quantile`` technique at q = 0.5; it estimates the conditional median too, the quantity both are
  compared on).

Both see standardized x (the dataset's normalization) and y (standardized by the training targets,
predictions mapped back), and train with Adam (cosine-decayed learning rate) through
``reglab.engine.loop.fit``, one seed at a time (each seed has its own data), validated every
``eval_every`` batches on the seed's validation split (inside the training range; the weights of the
best validation are kept, the test grid is never looked at). The truth to compare with is the
conditional median, g*(x) under both noise models (g* is non-decreasing and eta symmetric). Outputs: ``fig4.png`` (median over
seeds and 10-90 % band of each method's predicted median, the truth, the training range),
``results.json`` (every seed's prediction on the grid) and ``RESULTS.md`` with the extrapolation
error table: per seed, the mean absolute error |median_hat(x) - g*(x)| over the grid points outside
the training range, summarized by its median and 10-90 % range over seeds.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from ..config import RunConfig, dumps
from ..data import Data, Split, load
from ..data.synthetic import NOISE_STD, TRAIN_RANGE, g_star
from ..analysis.plots import plt
from ..engine.loop import fit
from ..engine.progress import progress_bar
from .provenance import Clock, provenance, recorded

NAME = "engression-fig4"
SUMMARY = "engression vs L1 regression extrapolating four functions, pre- and post-additive noise (Shen & Meinshausen Fig. 4)"

FUNCTIONS = ("softplus", "square", "cubic", "log")
NOISES = ("pre", "post")
METHODS = ("engression", "L1")

#: the reference package's network size (width 100, 100 noise dimensions; 2 residual blocks), a CPU-sized
#: sample and training length
FULL = dict(seeds=20, n=2000, steps=3000, batch=256, lr=3e-3, hidden=100, blocks=2, noise_dim=100, samples=2,
            draws=256, grid=61, eval_every=100)
QUICK = dict(FULL, seeds=4, n=1000, steps=300, hidden=64, blocks=1, noise_dim=16, eval_every=50)


def _config(method: str, function: str, noise: str, cfg: dict, seed: int) -> RunConfig:
    """One seed's run: the residual MLP on standardized x and y, Adam with cosine decay for
    ``cfg["steps"]`` batches; engression's energy loss, or the L1 (median) loss."""
    loss = ({"name": "engression", "noise_dim": cfg["noise_dim"], "samples": cfg["samples"], "eval_samples": cfg["draws"],
             "point": "median", "metrics": False} if method == "engression" else {"name": "quantile", "q": 0.5})
    return RunConfig(
        dataset="synthetic", seed=seed, device="cpu", model="resmlp",
        dataset_options={"function": function, "noise": noise, "n_train": cfg["n"], "n_test": cfg["grid"], "seed": seed},
        model_options={"hidden": cfg["hidden"], "blocks": cfg["blocks"]}, batch_size=cfg["batch"],
        steps=cfg["steps"], eval_every=cfg["eval_every"], eval_train=False,
        techniques=[{"name": "adam", "lr": cfg["lr"]}, {"name": "cosine"}, loss],
    )


def standardized_targets(data: Data) -> tuple[Data, float, float]:
    """``data`` with every split's targets standardized by the training targets' mean and sd, and
    (scale, shift) to map predictions back (the inputs are standardized by ``Data.normalize``)."""
    shift, scale = float(data.train.y.mean()), float(data.train.y.std())

    def std(split: Split) -> Split:
        return replace(split, y=(split.y - shift) / scale)

    return replace(data, train=std(data.train), val=std(data.val), test=std(data.test)), scale, shift


def fit_and_predict(method: str, function: str, noise: str, cfg: dict, seed: int) -> tuple[Tensor, Tensor]:
    """Train one seed (its own training sample and initialization) through ``reglab.engine.loop.fit``
    and return its conditional median on the test grid and the grid: ``(G,)``, ``(G, 1)``."""
    config = _config(method, function, noise, cfg, seed)
    data, scale, shift = standardized_targets(load(config.dataset, **config.dataset_options))
    [result] = fit(config, [seed], data=data, progress=False)
    model = result.model.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # engression's prediction draws
        pred = model(data.batch(data.test, torch.arange(len(data.test)))).squeeze(-1)
    return pred * scale + shift, data.test.x


def extrapolation_error(pred: Tensor, grid: Tensor, function: str) -> tuple[Tensor, Tensor]:
    """Per seed: mean |pred - g*| outside the training range and inside it: two ``(S,)`` tensors."""
    lo, hi = TRAIN_RANGE[function]
    x = grid.squeeze(1)
    err = (pred - g_star(function, x)).abs()
    outside = (x < lo) | (x > hi)
    return err[:, outside].mean(1), err[:, ~outside].mean(1)


def _band(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    q = torch.quantile(t.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), dim=0)
    return q[1], q[0], q[2]


def plot(results: dict, cfg: dict, path: Path) -> Path:
    """2 x 4 panels (noise model x function): truth, and each method's median over seeds with its 10-90 % band."""
    colors = {"engression": "tab:blue", "L1": "tab:orange"}
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    for row, noise in enumerate(NOISES):
        for col, function in enumerate(FUNCTIONS):
            ax = axes[row, col]
            r = results[f"{function}/{noise}"]
            grid = torch.tensor(r["grid"])
            sample = load("synthetic", function=function, noise=noise, n_train=300, n_test=2, seed=0).train
            ax.scatter(sample.x.squeeze(1), sample.y, s=3, c="0.7", label="training data (seed 0)")
            ax.plot(grid, g_star(function, grid), "k--", lw=1.5, label="true median g*(x)")
            for method in METHODS:
                mid, lo, hi = _band(torch.tensor(r[method]))
                ax.plot(grid, mid, color=colors[method], lw=2, label=f"{method}: median over seeds")
                ax.fill_between(grid, lo, hi, color=colors[method], alpha=0.25, label=f"{method}: 10-90 % over seeds")
            a, b = TRAIN_RANGE[function]
            ax.axvspan(a, b, color="green", alpha=0.06)
            truth = g_star(function, grid)
            pad = 0.15 * float(truth.max() - truth.min())
            ax.set_ylim(float(truth.min()) - pad - 1, float(truth.max()) + pad)
            ax.set_title(f"{function}, {'pre' if noise == 'pre' else 'post'}-additive noise")
            ax.set_xlabel("x")
            if col == 0:
                ax.set_ylabel("conditional median of Y")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Engression vs L1 regression: estimated conditional median, {cfg['seeds']} seeds "
                 "(shaded green: training range)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _table(results: dict) -> list[str]:
    lines = [
        "| function | noise | engression, outside | L1, outside | engression better (seeds) | engression, inside | L1, inside |",
        "|---|---|---|---|---|---|---|",
    ]
    for noise in NOISES:
        for function in FUNCTIONS:
            r = results[f"{function}/{noise}"]
            grid = torch.tensor(r["grid"]).unsqueeze(1)
            errs = {m: extrapolation_error(torch.tensor(r[m]), grid, function) for m in METHODS}
            cells = []
            for part in (0, 1):
                for m in METHODS:
                    mid, lo, hi = (float(v) for v in _band(errs[m][part]))
                    cells.append(f"{mid:.2f} [{lo:.2f}, {hi:.2f}]")
            wins = int((errs["engression"][0] < errs["L1"][0]).sum())
            n = len(errs["L1"][0])
            lines.append(f"| {function} | {noise} | {cells[0]} | {cells[1]} | {wins}/{n} | {cells[2]} | {cells[3]} |")
    return lines


def run(out: Path, *, quick: bool = False, progress: bool = True) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = QUICK if quick else FULL
    seeds = list(range(cfg["seeds"]))
    results: dict[str, dict] = {}
    clock = Clock()
    started, cpu0 = time.time(), time.process_time()
    bar = progress_bar(len(NOISES) * len(FUNCTIONS), f"[{NAME}]", "panel") if progress else None
    for noise in NOISES:
        for function in FUNCTIONS:
            t0 = time.time()
            r: dict[str, list] = {}
            for method in METHODS:
                preds = [fit_and_predict(method, function, noise, cfg, seed) for seed in seeds]
                r[method] = torch.stack([p for p, _ in preds]).round(decimals=4).tolist()
                r["grid"] = preds[0][1].squeeze(1).tolist()
            results[f"{function}/{noise}"] = r
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{function}/{noise} {time.time() - t0:.0f} s")
    if bar is not None:
        bar.close()
    timing = {"wall": time.time() - started, "cpu": time.process_time() - cpu0, "quick": quick}
    prov = provenance(clock, f"reglab repro {NAME}{' --quick' if quick else ''} -o {out}")
    (out / "results.json").write_text(dumps({"config": cfg, "timing": timing, "results": results, "provenance": prov}))
    return write_results(out, cfg, results, timing, prov)


def write_results(out: Path, cfg: dict, results: dict, timing: dict, prov: dict | None = None) -> Path:
    """``fig4.png`` and ``RESULTS.md`` from the per-seed predictions (re-render: ``render(out)``)."""
    plot(results, cfg, out / "fig4.png")
    wall, cpu = timing["wall"], timing["cpu"]
    text = f"""# Engression, Figure 4: extrapolation of the conditional median

Paper: Shen & Meinshausen, *Engression: Extrapolation through the Lens of Distributional Regression*,
JRSS-B 2024 (arXiv:2307.00835), Figure 4. Wall time {wall / 60:.1f} min, CPU time {cpu / 60:.1f} min.

{recorded({"provenance": prov})}

## Setup
- True functions, training ranges (X uniform there) and test ranges: softplus [-2, 2] -> [-2, 8],
  square max(x,0)^2/2 [0, 2] -> [0, 6], cubic x^3/3 [-2, 2] -> [-2, 6], log (piecewise) [0, 2] -> [0, 10];
  noise eta ~ N(0, s^2), s = {NOISE_STD['softplus']:g} (cubic {NOISE_STD['cubic']:g}); pre-additive Y = g*(X + eta),
  post-additive Y = g*(X) + eta (`reglab.data.synthetic`, dataset `synthetic`).
- {cfg['seeds']} seeds; each seed draws its own n = {cfg['n']} training points and initializes its own models.
- Both methods: residual MLP (`resmlp`, width {cfg['hidden']}, {cfg['blocks']} residual block(s), ReLU), standardized x and y,
  Adam lr {cfg['lr']:g} with cosine decay, {cfg['steps']} steps of batch {cfg['batch']}.
  Engression adds {cfg['noise_dim']} N(0, 1) noise inputs and trains on the energy loss with m = {cfg['samples']} draws per
  example; its prediction is the median of {cfg['draws']} draws. L1 regression trains on |y - f(x)|.
- Error: per seed, the mean absolute difference between the predicted and the true conditional median
  g*(x) over the {cfg['grid']}-point test grid, outside and inside the training range.
- Relative to the paper and its reference package (github.com/xwshen51/engression): the package's
  network width and noise dimension (100, 100), but noise enters at the input only (the package
  concatenates fresh noise at every layer; ours is g(x, eps) = net([x, eps])) and no batch norm; smaller
  training samples and fewer steps than the package's example (10,000 points, 500 epochs of batch
  1,000) for the CPU budget. The figure's x-ranges follow the public Figure-4 reproduction in
  `engression-pytorch` (see `reglab/data/synthetic.py`).
- An earlier run with smaller, shorter-trained nets (width 64, 1 block, 16 noise dimensions, 1,000
  steps) found engression better than L1 under pre-additive noise for softplus, square and cubic
  (ratios 0.68 / 0.59 / 0.69) but not for log (1.13), whose fitted median stayed linear beyond the
  training range: that is why the nets and the training length were raised to the values above.

## Result

![engression vs L1](fig4.png)

Extrapolation error |estimated median - g*(x)|, mean over the grid points outside (and inside) the
training range; median over seeds [10 %, 90 % over seeds]; "engression better" counts the seeds on which
engression's outside error is below L1's (same data, same seed).

{chr(10).join(_table(results))}

## Beside the published figure
The published Figure 4 (not reproduced here as an image) shows, for the same four functions, engression's
estimated conditional median following the truth well beyond the training range under pre-additive noise,
while L1 (and L2) regression bend away from it just outside the training data; under post-additive noise
engression loses that edge and both methods extrapolate comparably (poorly). Read our table and
figure against that claim: see the summary below. Our models are trained on fewer points for fewer steps
than the paper's, so even engression can fall short of the truth far outside the range (see the figure):
the comparison that carries over is engression versus L1 on the same data and seeds.

SUMMARY_PLACEHOLDER
"""
    path = out / "RESULTS.md"
    path.write_text(text.replace("SUMMARY_PLACEHOLDER", _verdict(results)))
    return path


def render(out: Path) -> Path:
    """Re-draw the figure and re-write RESULTS.md from ``out/results.json`` (no training)."""
    saved = json.loads((Path(out) / "results.json").read_text())
    return write_results(Path(out), saved["config"], saved["results"], saved["timing"], saved.get("provenance"))


def _verdict(results: dict) -> str:
    """The summary, computed from the numbers (no hand-written claims)."""
    ratio, wins = {}, {}
    lines = ["## Summary (computed from the table)"]
    for noise in NOISES:
        parts = []
        for function in FUNCTIONS:
            r = results[f"{function}/{noise}"]
            grid = torch.tensor(r["grid"]).unsqueeze(1)
            e_all = extrapolation_error(torch.tensor(r["engression"]), grid, function)[0]
            l_all = extrapolation_error(torch.tensor(r["L1"]), grid, function)[0]
            e, l1 = float(_band(e_all)[0]), float(_band(l_all)[0])
            ratio[function, noise] = e / l1
            wins[function, noise] = (int((e_all < l_all).sum()), len(e_all))
            parts.append(f"{function} {e:.2f} vs {l1:.2f} (ratio {e / l1:.2f}, engression better on "
                         f"{wins[function, noise][0]}/{wins[function, noise][1]} seeds)")
        lines.append(f"- {noise}-additive noise, median extrapolation error engression vs L1: " + "; ".join(parts) + ".")
    better = [f for f in FUNCTIONS if ratio[f, "pre"] < 1 and wins[f, "pre"][0] >= 0.75 * wins[f, "pre"][1]]
    not_better = [f for f in FUNCTIONS if f not in better]
    lines.append(f"- Pre-additive noise: engression extrapolates the median better than L1 (ratio < 1 and on at least "
                 f"75 % of the seeds) for {', '.join(better) or 'none'}"
                 + (f"; not for {', '.join(not_better)}." if not_better else "."))
    shrinks = [f for f in better if ratio[f, "post"] > ratio[f, "pre"]]
    grows = [f for f in better if f not in shrinks]
    lines.append(f"- From pre- to post-additive noise the advantage (ratio engression/L1 moving towards 1 or above) "
                 f"shrinks for {', '.join(shrinks) or 'none'}"
                 + (f"; it does not for {', '.join(grows)}." if grows else ".")
                 + " Ratios pre -> post: " + ", ".join(f"{f} {ratio[f, 'pre']:.2f} -> {ratio[f, 'post']:.2f}" for f in FUNCTIONS) + ".")
    return "\n".join(lines)


__all__ = ["NAME", "SUMMARY", "run", "render", "write_results", "fit_and_predict", "extrapolation_error", "plot"]
