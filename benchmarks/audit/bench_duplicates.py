"""CIFAR-10 near-duplicate audit: LSH train-vs-test and within-train, recall against exact search.

Run from the repository root (REGLAB_DATA must point at the offline datasets):

    OMP_NUM_THREADS=1 python benchmarks/audit/bench_duplicates.py [--full-exact]

Inputs: the uint8 images flattened to 3072 floats and mean-centred per image (cosine of the centred
pixels, i.e. Pearson correlation between two images). Train = the loader's train + validation splits
(all 50,000 images). Prints markdown tables and writes ``cifar10_top_pairs.png`` and
``cifar10_within_train_top_pairs.png`` next to this script, and ``duplicates_results.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cifar_arrays import CLASSES, cifar10  # noqa: E402

from reglab.audit import exact_duplicates, find_duplicates, recall, save_pair_grid  # noqa: E402


def row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full-exact", action="store_true", help="also run the exact search on all 50,000 x 10,000 "
                    "pairs and on all within-train pairs (about 1 and 2.5 minutes on one core)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    xa, ya, xb, yb, source = cifar10()
    load_s = time.perf_counter() - t0
    out: dict = {"date": str(date.today()), "machine": f"{platform.processor() or platform.machine()}, "
                 f"{os.cpu_count()} cores", "threads": os.environ.get("OMP_NUM_THREADS"), "source": source,
                 "load_seconds": round(load_s, 1), "n_train": len(xa), "n_test": len(xb)}
    print(f"# CIFAR-10 (JPEG copy) near-duplicates, {out['date']}, OMP_NUM_THREADS={out['threads']}, "
          f"loaded {len(xa)} + {len(xb)} images from {source} in {load_s:.1f}s\n")

    # 1. train vs test at several thresholds, default knobs
    print(row(["threshold", "pairs", "test images with a train near-duplicate", "same label", "seconds",
               "CPU seconds", "candidates verified", "sketch limit"]))
    print(row(["---"] * 8))
    main_res = None
    out["between"] = []
    for th in (0.90, 0.95, 0.98):
        c0 = time.process_time()
        r = find_duplicates(xa, xb, threshold=th)
        cpu = time.process_time() - c0
        same = float((ya[r.i] == yb[r.j]).mean()) if len(r) else float("nan")
        s = r.summary()
        out["between"].append({**s, "same_label": same, "cpu_seconds": cpu})
        print(row([th, len(r), s["rows_b_with_duplicate"], f"{same:.3f}", f"{r.seconds['total']:.2f}", f"{cpu:.2f}",
                   r.stats["verified"], r.config["sketch_limit"]]))
        if th == 0.95:
            main_res = r
    assert main_res is not None
    save_pair_grid(xa, xb, main_res, HERE / "cifar10_top_pairs.png", k=24, labels=("train ", "test "))
    print(f"\nstage seconds at 0.95: {main_res.seconds}\n")

    # 2. recall against exact search on a 5,000-image train subset (vs all 10,000 test images, and within)
    rng = np.random.default_rng(0)
    sub = np.sort(rng.choice(len(xa), 5000, replace=False))
    print(row(["comparison", "threshold", "exact pairs", "LSH pairs", "recall", "exact s", "LSH s"]))
    print(row(["---"] * 7))
    out["recall"] = []
    cases = [("5,000 train subset vs 10,000 test", xa[sub], xb), ("within the 5,000 train subset", xa[sub], None)]
    for name, a, b in cases:
        for th in (0.90, 0.95):
            ex = exact_duplicates(a, b, threshold=th)
            r = find_duplicates(a, b, threshold=th)
            rec = recall(r, ex)
            out["recall"].append({"case": name, "threshold": th, "exact": len(ex), "lsh": len(r), "recall": rec,
                                  "exact_s": ex.seconds["total"], "lsh_s": r.seconds["total"]})
            print(row([name, th, len(ex), len(r), f"{rec:.4f}", f"{ex.seconds['total']:.2f}", f"{r.seconds['total']:.2f}"]))

    # 3. knobs: train vs test at 0.95, recall against the full exact search when it is run
    exact_full = exact_duplicates(xa, xb, threshold=0.95) if args.full_exact else None
    if exact_full is not None:
        out["exact_full"] = {"pairs": len(exact_full), "seconds": exact_full.seconds["total"]}
        print(f"\nexact search, all 50,000 x 10,000 pairs at 0.95: {len(exact_full)} pairs in "
              f"{exact_full.seconds['total']:.1f}s\n")
    print(row(["bits", "tables", "probe", "pairs", "recall vs exact" if exact_full else "-", "seconds",
               "candidates", "after sketch filter", "verified"]))
    print(row(["---"] * 9))
    out["knobs"] = []
    for bits, tables, probe in [(16, 8, 1), (16, 8, 0), (16, 8, 2), (16, 4, 1), (16, 2, 1), (20, 8, 1), (12, 8, 1)]:
        r = find_duplicates(xa, xb, bits=bits, tables=tables, probe=probe, threshold=0.95)
        rec = recall(r, exact_full) if exact_full is not None else float("nan")
        out["knobs"].append({"bits": bits, "tables": tables, "probe": probe, "pairs": len(r), "recall": rec,
                             "seconds": r.seconds["total"], **r.stats})
        print(row([bits, tables, probe, len(r), f"{rec:.4f}", f"{r.seconds['total']:.2f}", r.stats["candidates"],
                   r.stats["after_sketch_filter"], r.stats["verified"]]))

    # 4. within train
    print()
    c0 = time.process_time()
    r = find_duplicates(xa, threshold=0.95)
    cpu = time.process_time() - c0
    s = r.summary()
    same = float((ya[r.i] == ya[r.j]).mean()) if len(r) else float("nan")
    out["within"] = {**s, "same_label": same, "cpu_seconds": cpu}
    print(f"within train (50,000) at 0.95: {len(r)} pairs, {s['rows_in_some_pair']} images in some pair, "
          f"same label {same:.3f}, {r.seconds['total']:.2f}s ({cpu:.2f}s CPU), {r.stats['verified']} verified")
    save_pair_grid(xa, None, r, HERE / "cifar10_within_train_top_pairs.png", k=24)
    if args.full_exact:
        ex = exact_duplicates(xa, threshold=0.95)
        out["within"]["exact_pairs"], out["within"]["recall"] = len(ex), recall(r, ex)
        out["within"]["exact_seconds"] = ex.seconds["total"]
        print(f"exact within-train: {len(ex)} pairs in {ex.seconds['total']:.1f}s; LSH recall {recall(r, ex):.4f}")
    pairs = [(int(i), int(j), CLASSES[ya[i]], CLASSES[yb[j]], round(float(c), 4))
             for i, j, c in zip(main_res.i[:10], main_res.j[:10], main_res.cosine[:10])]
    out["top_between"] = pairs
    print("\ntop train-test pairs (train index, test index, labels, cosine):", pairs)
    (HERE / "duplicates_results.json").write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
