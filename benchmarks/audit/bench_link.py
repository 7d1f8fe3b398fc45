"""Record linkage benchmark: pairwise classifier + one-to-one matching vs the Levenshtein baseline.

    OMP_NUM_THREADS=1 python benchmarks/audit/bench_link.py

Tables from :func:`reglab.audit.link.make_tables` (1,000 people in A, 80% of them in B written as a
second site would, plus 150 people only in B), three generator seeds, 5-fold cross-validation over the
true match pairs. Prints markdown tables and writes ``link_results.json`` next to this script.
"""
from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

from reglab.audit.link import LinkScore, cross_validate, make_tables

HERE = Path(__file__).resolve().parent
COLUMNS = ["name", "department"]
SEEDS = (0, 1, 2)


def row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main() -> None:
    variants = {
        "classifier (k=5 random negatives, threshold 0.5)": dict(),
        "classifier, half of the negatives hard": dict(hard_fraction=0.5),
        "classifier, threshold 0.2": dict(threshold=0.2),
        "classifier, threshold 0.9": dict(threshold=0.9),
        "classifier, k=1 negative": dict(negatives=1),
    }
    totals: dict[str, LinkScore] = {}
    thresholds: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    example = make_tables(1000, seed=0)
    print(f"# record linkage, {date.today()}, tables: A {len(example[0])} rows, B {len(example[1])} rows, "
          f"{len(example[2])} true matches per seed; seeds {SEEDS}; 5-fold CV\n")
    print("sample true matches (seed 0):\n")
    print(row(["A name", "A department", "B name", "B department"]))
    print(row(["---"] * 4))
    a0, b0, t0_ = example
    for a_id, b_id in zip(t0_["a_id"][:10], t0_["b_id"][:10]):
        ra, rb = a0[a0["id"] == a_id].iloc[0], b0[b0["id"] == b_id].iloc[0]
        print(row([ra["name"], ra["department"], rb["name"], rb["department"]]))
    for seed in SEEDS:
        a, b, truth = make_tables(1000, seed=seed)
        for name, kw in variants.items():
            t0 = time.perf_counter()
            cv = cross_validate(a, b, truth, COLUMNS, folds=5, seed=seed, **kw)
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
            totals[name] = totals.get(name, LinkScore()) + cv["classifier"].total
            if not kw:
                base = "Levenshtein first match, name + department"
                totals[base] = totals.get(base, LinkScore()) + cv["levenshtein"].total
                thresholds.setdefault(base, []).extend(cv["levenshtein"].thresholds)
        t0 = time.perf_counter()
        cv = cross_validate(a, b, truth, COLUMNS, folds=5, seed=seed, baseline_columns=["name"])
        base = "Levenshtein first match, name only"
        seconds[base] = seconds.get(base, 0.0) + time.perf_counter() - t0
        totals[base] = totals.get(base, LinkScore()) + cv["levenshtein"].total
        thresholds.setdefault(base, []).extend(cv["levenshtein"].thresholds)

    print("\n" + row(["method", "A records", "correct", "wrong", "missed", "correct abstain", "baseline thresholds"]))
    print(row(["---"] * 7))
    out = {"date": str(date.today()), "seeds": SEEDS, "rows": []}
    for name, s in totals.items():
        r = s.rates()
        th = thresholds.get(name)
        th_txt = f"{min(th):.3f}..{max(th):.3f}" if th else "-"
        print(row([name, s.n, f"{r['correct']:.3f}", f"{r['wrong']:.3f}", f"{r['missed']:.3f}", f"{r['abstained']:.3f}", th_txt]))
        out["rows"].append({"method": name, "counts": vars(s), "rates": r, "thresholds": th})
    print("\nseconds per 3 seeds (features + CV of both methods):", {k: round(v, 1) for k, v in seconds.items()})
    out["seconds"] = seconds
    (HERE / "link_results.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
