"""Engression (Shen & Meinshausen, "Engression: Extrapolation through the Lens of Distributional
Regression", JRSS-B 2024, arXiv:2307.00835): the figures beside Figure 4 that the reference experiment
lacks.

1. **Samples per example.** The energy loss with ``m`` draws per example,
   ``mean_j ||y - yhat_j|| - 1/(2 m (m-1)) sum_{j != k} ||yhat_j - yhat_k||``, for m = 2, 4, 8, 16, on
   Figure 4's pre-additive setting (``Y = g*(X + eta)``): the extrapolation error of the estimated
   conditional median (mean |median_hat(x) - g*(x)| over the test grid outside the training range),
   per seed, for each m. Larger m lowers the variance of the loss's gradient at more cost per step.
2. **Noise scale.** The same error for the noise input's standard deviation 0.25, 1 and 4 (m = 2):
   the scale the network must map onto the conditional distribution.
3. **Engression as a head on a base model, on real data.** scikit-learn's diabetes data (442 patients,
   shipped; ``reglab.data.diabetes``): an MLP trained on the MSE (the base alone) versus the same MLP with
   an engression head g([base(x), x, eps]) trained jointly on the energy loss (``engression`` with
   ``input="base+x"``), and engression on the input alone (``input="x"``). Test RMSE of the mean of 512
   draws (in the target's units), and the engression models' CRPS and 80 % interval coverage.

Every run trains through ``reglab.engine.loop.fit``; parts 1-2 reuse the Figure-4 reproduction's
setting (:mod:`reglab.repro.engression_fig4`: residual MLP, standardized x and y, Adam + cosine, best
validation inside the training range; each seed draws its own sample). Writes ``samples_noise.png``,
``diabetes.png``, ``results.json``, ``summary.json`` and ``RESULTS.md``.

Run: ``reglab repro engression-ablations [-o folder] [--quick]``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..analysis.plots import plt, save_figure
from ..config import RunConfig, dumps
from ..data import load
from ..engine.loop import fit
from ..engine.progress import progress_bar
from . import engression_fig4 as F4
from ..study.statistics import holm, mean_se, paired_differences, t_test
from .provenance import Clock, headline, provenance, provenance_line, write_summary

NAME = "engression-ablations"
SUMMARY = "Shen & Meinshausen 2024: samples per example m = 2..16 and noise scale vs extrapolation; engression head on a base MLP (diabetes)"

SAMPLES = [2, 4, 8, 16]
SCALES = [0.25, 1.0, 4.0]
#: the full budget is sized for this 2-core CPU: Figure 4's quick nets (width 64, 1 block, 16 noise inputs)
#: trained 1,000 steps instead of 300, two functions, 4 seeds; the diabetes part on 5 seeds
FULL = dict(F4.QUICK, seeds=4, steps=1000, eval_every=100, functions=["softplus", "square"], diabetes_seeds=5,
            diabetes_epochs=150)
QUICK = dict(F4.QUICK, seeds=3, functions=["softplus"], diabetes_seeds=3, diabetes_epochs=60)
#: part 3's networks and training (every diabetes configuration)
DIABETES_NETS = {"mlp": {"hidden": [64, 64]}, "resmlp": {"hidden": 64, "blocks": 2}}
DIABETES_TRAIN = dict(lr=1e-3, batch=32, noise_dim=10, head_hidden=64, head_blocks=1, draws=512, level=0.8)
_HEAD = dict(name="engression", noise_dim=DIABETES_TRAIN["noise_dim"], point="mean", level=DIABETES_TRAIN["level"],
             eval_samples=DIABETES_TRAIN["draws"])
DIABETES = {
    "MLP (MSE)": [],
    "MLP + engression head": [dict(_HEAD, input="base+x", head_hidden=DIABETES_TRAIN["head_hidden"],
                                   head_blocks=DIABETES_TRAIN["head_blocks"])],
    "engression on x (resmlp)": [dict(_HEAD, input="x")],
}


def extrapolation(function: str, cfg: dict, seed: int, samples: int, noise_scale: float) -> float:
    """One seed's extrapolation error of engression (pre-additive noise) with ``samples`` draws per
    example and noise scale ``noise_scale``: mean |median_hat - g*| outside the training range (NaN
    when the training loss stopped being finite)."""
    config = F4._config("engression", function, "pre", cfg, seed)
    techniques = [dict(t) for t in config.techniques]
    techniques[-1].update(samples=samples, noise_scale=noise_scale)
    config = config.model_copy(update={"techniques": techniques})
    data, scale, shift = F4.standardized_targets(load(config.dataset, **config.dataset_options))
    [result] = fit(config, [seed], data=data, progress=False)
    if result.metrics.get("diverged"):
        return math.nan  # counted as diverged in RESULTS.md, left out of the means
    model = result.model.eval()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pred = model(data.batch(data.test, torch.arange(len(data.test)))).squeeze(-1) * scale + shift
    outside, _ = F4.extrapolation_error(pred.unsqueeze(0), data.test.x, function)
    return float(outside[0])


def diabetes_runs(cfg: dict, progress: bool) -> dict[str, list[dict[str, float]]]:
    """Each diabetes configuration's per-seed test metrics (RMSE in the target's units)."""
    out = {}
    seeds = list(range(cfg["diabetes_seeds"]))
    for label, extra in DIABETES.items():
        model = "resmlp" if "resmlp" in label else "mlp"
        config = RunConfig(dataset="diabetes", model=model, model_options=DIABETES_NETS[model],
                           epochs=cfg["diabetes_epochs"], batch_size=DIABETES_TRAIN["batch"], metric="val_rmse",
                           eval_train=False, device="cpu", techniques=[{"name": "adam", "lr": DIABETES_TRAIN["lr"]}, *extra])
        results = fit(config, seeds, progress=progress)
        unit = load("diabetes").info["target_std"]
        out[label] = [{"test_rmse": r.metrics["test_rmse"] * unit, "val_rmse": r.metrics["val_rmse"] * unit,
                       **({"test_crps": r.metrics["test_crps"] * unit, "test_coverage": r.metrics["test_coverage"]}
                          if "test_crps" in r.metrics else {}), "best_epoch": r.metrics["best_epoch"]} for r in results]
    return out


def run(out: Path, *, quick: bool = False, progress: bool = True) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock()
    cfg = QUICK if quick else FULL
    seeds = list(range(cfg["seeds"]))
    todo = [(f, "samples", m) for f in cfg["functions"] for m in SAMPLES] + \
           [(f, "noise_scale", s) for f in cfg["functions"] for s in SCALES if s != 1.0]
    bar = progress_bar(len(todo), f"[{NAME}]", "setting") if progress else None
    errors: dict[str, dict[str, dict[str, list[float]]]] = {f: {"samples": {}, "noise_scale": {}} for f in cfg["functions"]}
    for function, what, value in todo:
        m, s = (value, 1.0) if what == "samples" else (2, value)
        errors[function][what][f"{value:g}"] = [extrapolation(function, cfg, seed, m, s) for seed in seeds]
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{function} {what}={value:g}")
    if bar is not None:
        bar.close()
    for function in cfg["functions"]:  # noise scale 1 is the m = 2 run
        errors[function]["noise_scale"]["1"] = errors[function]["samples"]["2"]
    diabetes = diabetes_runs(cfg, progress)
    command = f"reglab repro {NAME}{' --quick' if quick else ''} -o {out}"
    prov = provenance(clock, command)
    (out / "results.json").write_text(dumps({"config": cfg, "quick": quick, "errors": errors, "diabetes": diabetes,
                                             "provenance": prov}, indent=1))
    return write_results(out, cfg, errors, diabetes, prov, quick)


def write_results(out: Path, cfg: dict, errors: dict, diabetes: dict, prov: dict, quick: bool) -> Path:
    """The figures, ``summary.json`` and ``RESULTS.md`` from the per-seed numbers."""
    out = Path(out)
    _plot(errors, out / "samples_noise.png")
    _plot_diabetes(diabetes, out / "diabetes.png")
    heads = [headline(f"extrapolation error, {f}, m={m}", errors[f]["samples"][str(m)], unit="mean |median - g*| outside")
             for f in errors for m in SAMPLES]
    heads += [headline(f"extrapolation error, {f}, noise scale {s:g}", errors[f]["noise_scale"][f"{s:g}"],
                       unit="mean |median - g*| outside") for f in errors for s in SCALES]
    heads += [headline(f"diabetes test RMSE, {label}", [r["test_rmse"] for r in rs], unit="target units")
              for label, rs in diabetes.items()]
    write_summary(out, NAME, prov, heads, quick)
    path = out / "RESULTS.md"
    path.write_text(_markdown(cfg, errors, diabetes, prov, quick))
    return path


def render(out: Path) -> Path:
    """Re-draw the figures and re-write summary.json and RESULTS.md from ``out/results.json`` (no training)."""
    saved = json.loads((Path(out) / "results.json").read_text())
    return write_results(Path(out), saved["config"], saved["errors"], saved["diabetes"], saved["provenance"],
                         saved["quick"])


def _plot(errors: dict, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for function, parts in errors.items():
        for ax, what in zip(axes, ("samples", "noise_scale")):
            keys = sorted(parts[what], key=float)
            stats = [mean_se(_finite(parts[what][k])) for k in keys]
            xs = [float(k) for k in keys]
            bars = ax.errorbar(xs, [m for m, _ in stats], yerr=[0 if se != se else se for _, se in stats], marker="o",
                               capsize=3, label=f"{function}: mean ± SE (points: seeds)")
            for x, k in zip(xs, keys):
                ax.scatter([x] * len(parts[what][k]), parts[what][k], s=8, alpha=0.4, color=bars.lines[0].get_color())
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("draws per example in the energy loss (m)")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("noise scale (sd of eps), m = 2")
    for ax in axes:
        ax.set_ylabel("extrapolation error of the median")
        ax.legend()
    axes[0].set_title("pre-additive noise: error outside the training range")
    axes[1].set_title("pre-additive noise: effect of the noise scale")
    return save_figure(fig, path)


def _plot_diabetes(diabetes: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, rs) in enumerate(diabetes.items()):
        values = _finite([r["test_rmse"] for r in rs])
        ax.scatter([i] * len(values), values, alpha=0.6)
        m, se = mean_se(values)
        ax.errorbar([i + 0.15], [m], yerr=[0 if se != se else se], fmt="ks", capsize=4)
    ax.set_xticks(range(len(diabetes)), [k.replace(" (", "\n(").replace(" + ", "\n+ ") for k in diabetes], fontsize=8)
    ax.set_ylabel("test RMSE (disease-progression units)")
    ax.set_title("diabetes: per-seed test RMSE (points) and mean +- SE (squares)")
    return save_figure(fig, path)


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _fmt(values: list[float], digits: int = 3) -> str:
    """Mean ± SE over the finite values, and how many seeds diverged (NaN) if any."""
    finite = _finite(values)
    m, se = mean_se(finite)
    text = f"{m:.{digits}f} ± {se:.{digits}f}" if se == se else f"{m:.{digits}f}"
    lost = len(values) - len(finite)
    return text + (f" ({lost} of {len(values)} diverged)" if lost else "")


def _paired(a: list[float], b: list[float]) -> tuple[float, float, tuple[float, float], float, int]:
    """Mean and SE of the per-seed differences ``a - b`` (same seed: same data and initialization),
    their 95 % t interval, the paired t-test's p-value and the number of pairs."""
    d = paired_differences(a, b)
    m, se = mean_se(d)
    p, ci = t_test(d)
    return m, se, ci, p, len(d)


def conclusions(errors: dict, diabetes: dict) -> list[str]:
    """The conclusions the numbers support, computed from the per-seed results (paired by seed):
    each comparison's mean difference, SE, 95 % t interval, and its p-value after Holm's correction
    over all the comparisons of this file; a final line counts those that remain below 0.05."""
    pairs: list[tuple[str, list[float], list[float], int]] = []
    for f, parts in errors.items():
        for m in SAMPLES[1:]:
            pairs.append((f"{f}, error at m = {m} minus m = 2", parts["samples"][str(m)], parts["samples"]["2"], 3))
        for s in SCALES:
            if s != 1.0:
                pairs.append((f"{f}, error at noise scale {s:g} minus scale 1", parts["noise_scale"][f"{s:g}"],
                              parts["noise_scale"]["1"], 3))
    base = [r["test_rmse"] for r in diabetes["MLP (MSE)"]]
    for label in list(diabetes)[1:]:
        pairs.append((f"diabetes test RMSE, {label} minus MLP (MSE)", [r["test_rmse"] for r in diabetes[label]], base, 1))
    stats = [_paired(a, b) for _, a, b, _ in pairs]
    adjusted = holm([p for _, _, _, p, _ in stats])
    lines, shown = [], []
    for (label, _, _, k), (m, se, (lo, hi), _, n), q in zip(pairs, stats, adjusted):
        if q < 0.05:
            said = f"{'higher' if m > 0 else 'lower'} than the reference (Holm-adjusted p = {q:.3f})"
            shown.append(label)
        elif lo == lo and (lo > 0 or hi < 0):
            said = f"the interval excludes 0, but not after Holm's correction (adjusted p = {q:.2f})"
        else:
            said = "not resolved at this number of seeds (the interval contains 0)"
        lines.append(f"- {label}: {m:+.{k}f} ± {se:.{k}f} (95 % t interval [{lo:+.{k}f}, {hi:+.{k}f}], {n} paired "
                     f"seeds): {said}.")
    lines.append(f"- Over these {len(pairs)} comparisons, {len(shown)} differ from their reference after Holm's correction "
                 f"at 5 %" + (f": {'; '.join(shown)}." if shown else
                              ": at this budget the data do not show an effect of m, of the noise scale, or of the "
                              "engression head on diabetes."))
    return lines


def _markdown(cfg: dict, errors: dict, diabetes: dict, prov: dict, quick: bool) -> str:
    n = cfg["seeds"]
    rows_m = "\n".join(f"| {f} | " + " | ".join(_fmt(errors[f]["samples"][str(m)]) for m in SAMPLES) + " |"
                       for f in errors)
    rows_s = "\n".join(f"| {f} | " + " | ".join(_fmt(errors[f]["noise_scale"][f"{s:g}"]) for s in SCALES) + " |"
                       for f in errors)
    best_m = {f: min(SAMPLES, key=lambda m: mean_se(_finite(errors[f]["samples"][str(m)]))[0]) for f in errors}
    rows_d = "\n".join(
        f"| {label} | {_fmt([r['test_rmse'] for r in rs], 1)} | "
        + (f"{_fmt([r['test_crps'] for r in rs], 1)} | {_fmt([100 * r['test_coverage'] for r in rs], 1)} |"
           if "test_crps" in rs[0] else "- | - |") + f" {', '.join(str(int(r['best_epoch'])) for r in rs)} |"
        for label, rs in diabetes.items())
    t, mlp, res = DIABETES_TRAIN, DIABETES_NETS["mlp"], DIABETES_NETS["resmlp"]
    budget = "QUICK budget (a first look: fewer steps, smaller nets, fewer seeds)" if quick else "full budget"
    return f"""# Engression: samples per example, noise scale, and engression as a head (Shen & Meinshausen 2024)

{provenance_line(prov)}
Budget: {budget}. Seeds 0..{n - 1} for parts 1-2 (each seed draws its own training sample), 0..{cfg['diabetes_seeds'] - 1}
for part 3 (paired: same split, seed-specific initialization and data order).

## 1. Draws per example m in the energy loss (pre-additive noise)

Setting of the Figure-4 reproduction (`reglab repro engression-fig4`): residual MLP width {cfg['hidden']}, {cfg['blocks']}
block(s), {cfg['noise_dim']} noise inputs, n = {cfg['n']} training points, {cfg['steps']} Adam steps (cosine), batch {cfg['batch']}; the
engression median from {cfg['draws']} draws. Extrapolation error = mean |median_hat(x) - g*(x)| over the grid
points outside the training range, mean ± SE over {n} seeds:

| function | m = 2 | m = 4 | m = 8 | m = 16 |
|---|---|---|---|---|
{rows_m}

Lowest mean error at m = {', '.join(f'{best_m[f]} ({f})' for f in errors)} (the paired differences are in the
conclusions below).

## 2. Noise scale (sd of the noise input), m = 2

| function | scale 0.25 | scale 1 | scale 4 |
|---|---|---|---|
{rows_s}

![samples and noise scale](samples_noise.png)

## 3. Engression as a head on a base model: diabetes (scikit-learn, shipped)

442 patients, 10 standardized features; 20 % test (fixed), 10 % of the rest for validation (best epoch on
validation RMSE); MLP 10-{'-'.join(str(h) for h in mlp['hidden'])}-1, Adam lr {t['lr']:g}, batch {t['batch']}, {cfg['diabetes_epochs']} epochs.
The head: g([base(x), x, eps]), a residual MLP of width {t['head_hidden']} with {t['head_blocks']} block(s) and {t['noise_dim']} noise
inputs, trained jointly with the base on the energy loss (m = 2). Engression on x: a residual MLP (width
{res['hidden']}, {res['blocks']} blocks) on [x, eps]. Predictions: the mean of {t['draws']} draws; the {100 * t['level']:g} % interval
from their quantiles. Test metrics in the target's units, mean ± SE over seeds:

| model | test RMSE | test CRPS | {100 * t['level']:g} % interval coverage (%) | best epochs |
|---|---|---|---|---|
{rows_d}

![diabetes](diabetes.png)

## Conclusions (computed from the per-seed numbers)
Each line: a setting minus its reference, paired by seed, mean ± SE and the 95 % t interval of the
mean difference (unadjusted); lower error / RMSE is better. What counts as shown is the paired t-test
after Holm's correction over all the comparisons below.

{chr(10).join(conclusions(errors, diabetes))}

## Beside the paper
The Figure-4 reproduction trains with m = 2 draws per example, the smallest m for which the energy loss's
pair term is defined; parts 1-2 vary m and the noise scale around that setting. No copy of the paper is at
hand here to check whether it reports such sweeps, so these tables carry no published anchor
(summary.json: `published: null`) and are read as the paired comparisons above. The diabetes data
(Efron et al. 2004, shipped with scikit-learn) is not one of the paper's data sets: it is a small real
regression problem available offline, on which engression is stacked as a head on a base model.
"""


__all__ = ["NAME", "SUMMARY", "run", "extrapolation", "diabetes_runs"]
