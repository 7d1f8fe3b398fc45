"""How often is the study report's verdict wrong? Error rates on cases with a known answer.

Bouthillier et al. 2021 ("Accounting for Variance in Machine Learning Benchmarks", MLSys) judge a
comparison procedure by its error rates on known cases. This script runs, through `reglab study`'s
own code (``parse_spec`` -> ``run_study`` -> ``build_table``), many small studies on scikit-learn's
digits (an MLP 64-32-10, a few epochs, seeds stacked):

- **null studies**: isolated mode, a baseline and ``--null-steps`` steps that only reseed the data
  order (the ``reseed`` technique): every difference is seed noise, so every "helped" or "hurt" is a
  false positive. Each study has its own seeds, so studies are independent.
- **known-effect studies**: the same baseline and one step whose effect was measured beforehand
  (``--pilot-seeds`` paired seeds, reported with its interval): the share of studies whose verdict
  says "helped" is the power.

Both with fixed seeds (``--seeds``) and with adaptive seeds (min 3, max ``--max-seeds``, step 2: seeds
added where a comparison is undecided, p-values corrected for the planned looks). The output gives
the false-positive rate per comparison and per study (family-wise) with Clopper-Pearson 95%
intervals, the power, and the seeds used on average, with the machine and the command; ``--out``
writes it as Markdown.

Run: ``python benchmarks/verdict_calibration.py [--quick] [--out benchmarks/verdict_calibration.md]``.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from reglab.study.report import build_table
from reglab.study.runner import run_study
from reglab.study.spec import parse_spec
from reglab.study.statistics import compare
from reglab.study.store import Store

BASE = {"dataset": "digits", "model": "mlp", "model_options": {"hidden": [32]}, "epochs": 3, "batch_size": 64,
        "device": "cpu", "eval_train": False}
BASELINE = [{"name": "sgd", "lr": 0.015, "momentum": 0.9}]
#: the known effect: a learning rate 3.3x larger for the same budget
EFFECT_STEP = {"name": "larger lr", "techniques": [{"name": "sgd", "lr": 0.05, "momentum": 0.9}]}


def _spec(name: str, seeds: Any, steps: list[dict[str, Any]]) -> Any:
    return parse_spec({"name": name, "mode": "isolated", "seeds": seeds, "metric": "val_accuracy", "base": BASE,
                       "baseline": BASELINE, "steps": steps})


def _null_steps(k: int) -> list[dict[str, Any]]:
    return [{"name": f"null {i}", "techniques": [{"name": "reseed", "stream": "order", "salt": i}]} for i in range(1, k + 1)]


def _seeds(study: int, fixed: int, adaptive: dict[str, int] | None) -> Any:
    """Study ``study``'s own seeds, disjoint from every other study's (independent studies)."""
    if adaptive:
        return {**adaptive, "first": study * adaptive["max"]}
    return list(range(study * fixed, (study + 1) * fixed))


def run_one(folder: Path, spec: Any) -> dict[str, Any]:
    run_study(spec, folder, progress=False)
    table = build_table(spec, Store(folder / "results.sqlite"))
    return table


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return float(ci.low), float(ci.high)


def calibrate(kind: str, studies: int, null_steps: int, fixed: int, adaptive: dict[str, int] | None,
              root: Path) -> dict[str, Any]:
    """``studies`` null or known-effect studies; the verdict counts."""
    comparisons = positives = families_with_error = 0
    seeds_used: list[float] = []
    for i in range(studies):
        steps = _null_steps(null_steps) if kind == "null" else [EFFECT_STEP]
        spec = _spec(f"{kind}-{i}", _seeds(i, fixed, adaptive), steps)
        table = run_one(root / f"{kind}-{'a' if adaptive else 'f'}-{i}", spec)
        states = [c["state"] for c in table["comparisons"]]
        comparisons += len(states)
        hits = sum(s in ("helped", "hurt") for s in states) if kind == "null" else sum(s == "helped" for s in states)
        positives += hits
        families_with_error += kind == "null" and hits > 0
        seeds_used.append(np.mean([r["seeds"] for r in table["rows"]]))
    out = {"kind": kind, "studies": studies, "comparisons": comparisons, "positives": positives,
           "rate": positives / comparisons, "rate_ci": clopper_pearson(positives, comparisons),
           "mean_seeds": float(np.mean(seeds_used))}
    if kind == "null":
        out.update(families=studies, family_errors=families_with_error, family_rate=families_with_error / studies,
                   family_rate_ci=clopper_pearson(families_with_error, studies))
    return out


def pilot(root: Path, seeds: int) -> dict[str, Any]:
    """The known effect, measured beforehand with ``seeds`` paired seeds."""
    spec = _spec("pilot", list(range(10_000, 10_000 + seeds)), [EFFECT_STEP])  # seeds no study uses
    table = run_one(root / "pilot", spec)
    rows = {r["label"]: r["per_seed"] for r in table["rows"]}
    c = compare(rows[f"baseline + {EFFECT_STEP['name']}"], rows["baseline"], name="effect")
    return {"seeds": seeds, "mean": c.mean, "ci": c.ci_t, "sd": c.se * np.sqrt(c.n)}


def machine() -> str:
    flags, model = "", platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not flags:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have)
                break
    except OSError:
        pass
    return f"{model} ({flags or 'no AVX flags read'}), {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer studies (a few minutes)")
    parser.add_argument("--null-studies", type=int, default=40)
    parser.add_argument("--null-steps", type=int, default=5)
    parser.add_argument("--effect-studies", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3, help="fixed seeds per configuration")
    parser.add_argument("--max-seeds", type=int, default=11, help="adaptive: at most this many seeds")
    parser.add_argument("--pilot-seeds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="write the results as Markdown here")
    args = parser.parse_args()
    if args.quick:
        args.null_studies, args.effect_studies, args.pilot_seeds, args.max_seeds = 12, 6, 10, 7
    started = time.perf_counter()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    adaptive = {"min": 3, "max": args.max_seeds, "step": 2}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        effect = pilot(root, args.pilot_seeds)
        results = []
        for seeds_mode, adapt in (("fixed", None), ("adaptive", adaptive)):
            for kind, n in (("null", args.null_studies), ("effect", args.effect_studies)):
                r = calibrate(kind, n, args.null_steps, args.seeds, adapt, root)
                r["seeds_mode"] = seeds_mode
                results.append(r)
                print(f"{seeds_mode:8s} {kind:6s} {r['positives']}/{r['comparisons']} = {r['rate']:.3f} "
                      f"[{r['rate_ci'][0]:.3f}, {r['rate_ci'][1]:.3f}], mean seeds {r['mean_seeds']:.1f}", flush=True)
    seconds = time.perf_counter() - started
    cmd = "python benchmarks/verdict_calibration.py" + (" --quick" if args.quick else "")
    lines = [
        "# Verdict calibration: false positives on null studies, power on a known effect", "",
        f"Generated by `{cmd}` on {stamp}; {machine()}; wall time {seconds / 60:.1f} min.", "",
        f"Studies on scikit-learn's digits: MLP 64-32-10, {BASE['epochs']} epochs of SGD (lr {BASELINE[0]['lr']}, momentum 0.9), "
        "batch 64, isolated mode, seeds stacked, each study with its own seeds. The verdict is the report's: "
        "\"helped\"/\"hurt\" only where the Holm-corrected paired t-test (with adaptive seeds: Holm over "
        "Bonferroni-over-looks p-values) is below 0.05.", "",
        f"- Null studies: a baseline and {args.null_steps} steps that only reseed the data order (a change of "
        "randomness only): every helped/hurt is a false positive.",
        f"- Known effect: the step '{EFFECT_STEP['name']}' (SGD lr 0.05 instead of {BASELINE[0]['lr']}), measured beforehand on "
        f"{effect['seeds']} paired seeds: +{100 * effect['mean']:.2f} test-accuracy points (the report metric), 95% CI "
        f"[{100 * effect['ci'][0]:+.2f}, {100 * effect['ci'][1]:+.2f}], SD of the paired differences "
        f"{100 * effect['sd']:.2f} points.",
        f"- Seeds: fixed {args.seeds}; adaptive min 3, step 2, max {args.max_seeds}.", "",
        "| seeds | studies | comparisons | verdict | rate [95% Clopper-Pearson] | per study (family-wise) | mean seeds per configuration |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        what = "false positives (helped or hurt)" if r["kind"] == "null" else "power (helped)"
        family = (f"{r['family_errors']}/{r['families']} = {r['family_rate']:.3f} [{r['family_rate_ci'][0]:.3f}, "
                  f"{r['family_rate_ci'][1]:.3f}]" if r["kind"] == "null" else "–")
        lines.append(f"| {r['seeds_mode']} | {r['studies']} | {r['comparisons']} | {what} | {r['positives']}/{r['comparisons']} "
                     f"= {r['rate']:.3f} [{r['rate_ci'][0]:.3f}, {r['rate_ci'][1]:.3f}] | {family} | {r['mean_seeds']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
