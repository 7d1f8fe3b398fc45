"""``reglab audit``: near-duplicate search (LSH) and fuzzy record linkage from the command line.

``reglab audit duplicates cifar10 --against test --out audit/`` writes ``pairs.csv`` (and
``pairs.png`` for images); ``reglab audit link A.csv B.csv --column name --truth matches.csv``
cross-validates the linkage classifier against the Levenshtein baseline and writes ``matches.csv``.
Bad input raises :class:`~reglab.errors.ReglabError` (one line, no traceback).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import typer

from .. import data as rdata
from ..audit.duplicates import exact_duplicates, find_duplicates, recall, save_pair_grid
from ..audit.link import cross_validate, link_tables
from ..errors import ReglabError
from .output import check_folder

app = typer.Typer(
    help="Data audit: near-duplicates between or within splits (random-hyperplane LSH) and fuzzy record "
         "linkage between two tables (pairwise classifier + one-to-one matching).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # help texts verbatim (rich markup eats "[...]")
)


def _load_npy(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ReglabError(f"duplicates: file not found: {path}")
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as err:
        raise ReglabError(f"duplicates: {path} is not a numeric .npy array ({' '.join(str(err).split())})") from None


def _split_arrays(spec: str, against: str, val_fraction: float) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:

    d = rdata.load(spec, val_fraction=val_fraction)
    if d.kind == "text":
        raise ReglabError(f"duplicates: dataset '{spec}' holds token ids, not vectors; pass embeddings as .npy files")

    def arrays(split: Any) -> tuple[np.ndarray, np.ndarray]:
        return split.inputs(torch.arange(len(split))).numpy(), split.y.numpy()

    if against == "val":  # the loader's carve-out: train vs the validation split taken from it
        xa, ya = arrays(d.train)
        meta: dict[str, Any] = {"dataset": spec, "a": "train", "image": d.kind == "image", "y_a": ya}
        xb, yb = arrays(d.val)
        meta.update(b="val", y_b=yb)
        return xa, xb, meta
    # the whole original training set (train rows, then validation rows) against test, or within itself
    (xt, yt), (xv, yv) = arrays(d.train), arrays(d.val)
    xa, ya = np.concatenate([xt, xv]), np.concatenate([yt, yv])
    meta = {"dataset": spec, "a": "train", "image": d.kind == "image", "y_a": ya}
    if against == "none":
        return xa, None, meta
    xb, yb = arrays(d.test)
    meta.update(b="test", y_b=yb)
    return xa, xb, meta


@app.command()
def duplicates(
    data: list[str] = typer.Argument(..., help="a dataset spec (cifar10, mnist, digits, csv:PATH, ...) or one "
                                                "or two .npy files (rows = examples; two files = A vs B)"),
    against: str = typer.Option("test", help="test: train+validation (the whole original training set; indices "
                                              "count train rows then validation rows) vs test; none: within "
                                              "train+validation; val: train vs validation. Ignored for .npy files"),
    bits: int = typer.Option(16, help="hyperplanes per hash code"),
    tables: int = typer.Option(8, help="independent hash tables"),
    probe: int = typer.Option(1, help="multi-probe Hamming radius (0, 1 or 2)"),
    threshold: float = typer.Option(0.95, help="cosine at or above which a pair is a near-duplicate"),
    seed: int = typer.Option(0, help="seed of the random hyperplanes"),
    center: bool = typer.Option(True, "--center/--no-center", help="subtract each row's mean before the cosine"),
    val_fraction: float = typer.Option(0.1, help="validation fraction passed to the dataset loader"),
    top: int = typer.Option(16, help="pairs shown in the image grid"),
    exact: bool = typer.Option(False, "--exact", help="also run the quadratic exact search and report recall"),
    out: Optional[Path] = typer.Option(None, help="folder for pairs.csv (and pairs.png for images)"),
    json_output: bool = typer.Option(False, "--json", help="print a one-line JSON summary as the last line"),
) -> None:
    """Near-duplicate pairs (cosine >= threshold) between train and another split, or within one set."""
    if against not in ("test", "val", "none"):
        raise ReglabError(f"duplicates: --against must be test, val or none (got '{against}')")
    if len(data) > 2:
        raise ReglabError(f"duplicates: give one dataset spec or one/two .npy files (got {len(data)} arguments)")
    if all(s.endswith(".npy") for s in data):
        xa = _load_npy(data[0])
        xb = _load_npy(data[1]) if len(data) == 2 else None
        meta: dict[str, Any] = {"dataset": " ".join(data), "a": data[0], "image": xa.ndim in (3, 4)}
        if xb is not None:
            meta["b"] = data[1]
    elif len(data) == 1:
        xa, xb, meta = _split_arrays(data[0], against, val_fraction)
    else:
        raise ReglabError("duplicates: two arguments must both be .npy files")

    if out is not None:
        check_folder(out, "--out")
    res = find_duplicates(xa, xb, bits=bits, tables=tables, probe=probe, threshold=threshold, seed=seed, center=center)
    summary = {"dataset": meta["dataset"], "a": meta["a"], "b": meta.get("b", "within"), **res.summary()}
    mode = f"{meta['a']} vs {meta['b']}" if xb is not None else f"within {meta['a']}"
    typer.echo(f"{meta['dataset']}: {mode}: {len(res)} pairs with cosine >= {threshold} "
               f"({summary['rows_b_with_duplicate']} rows of {'B' if xb is not None else 'the set'} involved) "
               f"in {res.seconds['total']:.2f}s [{res.stats['verified']} candidates verified]")
    if exact:
        ex = exact_duplicates(xa, xb, threshold=threshold, center=center)
        summary["exact_pairs"], summary["recall"] = len(ex), recall(res, ex)
        summary["exact_seconds"] = round(ex.seconds["total"], 4)
        typer.echo(f"exact search: {len(ex)} pairs in {ex.seconds['total']:.2f}s; LSH recall {summary['recall']:.4f}")
    for n in range(min(5, len(res))):
        typer.echo(f"  {meta['a']}[{res.i[n]}] ~ {meta.get('b', meta['a'])}[{res.j[n]}]  cosine {res.cosine[n]:.4f}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        frame = res.to_frame()
        y_a, y_b = meta.get("y_a"), meta.get("y_b", meta.get("y_a"))
        if y_a is not None and y_a.ndim == 1 and y_b.ndim == 1:  # class ids: show whether labels agree
            frame["label_i"], frame["label_j"] = y_a[res.i], y_b[res.j]
        frame.to_csv(out / "pairs.csv", index=False)
        summary["pairs_csv"] = str(out / "pairs.csv")
        if meta["image"]:
            labels = (f"{meta['a']} ", f"{meta.get('b', '')} ")
            summary["grid_png"] = str(save_pair_grid(xa, xb, res, out / "pairs.png", k=top, labels=labels))
        typer.echo(f"wrote {', '.join(str(v) for k, v in summary.items() if k in ('pairs_csv', 'grid_png'))}")
    if json_output:
        typer.echo(json.dumps(summary, default=float))


def _read_csv(path: Path, what: str) -> Any:
    import pandas as pd

    if not path.is_file():
        raise ReglabError(f"link: {what} file not found: {path}")
    try:
        frame = pd.read_csv(path)
    except Exception as err:  # noqa: BLE001 - any parse failure becomes one line
        raise ReglabError(f"link: cannot read {what} {path} ({' '.join(str(err).split())})") from None
    if frame.empty:
        raise ReglabError(f"link: {what} {path} has no data rows (only a header: {', '.join(map(str, frame.columns))})")
    return frame


@app.command()
def link(
    a_csv: Path = typer.Argument(..., help="table A (CSV)"),
    b_csv: Path = typer.Argument(..., help="table B (CSV)"),
    column: list[str] = typer.Option(..., "--column", "-c", help="compared column, repeatable; NAME or A_NAME=B_NAME"),
    truth: str = typer.Option(..., help="labelled matches: a CSV with columns a_id,b_id, or a column present in both tables"),
    id_column: str = typer.Option("id", help="id column the truth CSV refers to (row numbers when absent)"),
    negatives: int = typer.Option(5, help="sampled non-matches per labelled match"),
    hard_fraction: float = typer.Option(0.0, help="share of the negatives that are the most similar non-partners"),
    threshold: float = typer.Option(0.5, help="match probability at or below which a record is left unmatched"),
    folds: int = typer.Option(5, help="cross-validation folds over the labelled matches (0 = skip evaluation)"),
    seed: int = typer.Option(0, help="seed of the folds and the negative sampling"),
    out: Optional[Path] = typer.Option(None, help="folder for matches.csv (all of A matched to all of B)"),
    json_output: bool = typer.Option(False, "--json", help="print a one-line JSON summary as the last line"),
) -> None:
    """Link records of A to records of B: cross-validated correct / wrong / missed rates, then matches."""
    if out is not None:
        check_folder(out, "--out")
    a, b = _read_csv(a_csv, "table A"), _read_csv(b_csv, "table B")
    columns: dict[str, str] = {}
    for spec in column:
        ca, _, cb = spec.partition("=")
        columns[ca] = cb or ca
    truth_path = Path(truth)
    if truth_path.suffix.lower() == ".csv" or truth_path.is_file():
        truth_arg: Any = _read_csv(truth_path, "truth")
    elif truth in a.columns and truth in b.columns:
        truth_arg = truth
    else:
        raise ReglabError(f"link: --truth '{truth}' is neither a CSV file nor a column present in both tables")
    ids = id_column if id_column in a.columns and id_column in b.columns else None
    summary: dict[str, Any] = {"a": str(a_csv), "b": str(b_csv), "rows_a": len(a), "rows_b": len(b),
                               "columns": columns}
    if folds:
        cv = cross_validate(a, b, truth_arg, columns, folds=folds, negatives=negatives, hard_fraction=hard_fraction,
                            threshold=threshold, seed=seed, id_column=ids)
        for name, r in cv.items():
            rates = r.total.rates()
            typer.echo(f"{name:12s} {folds}-fold CV over {r.total.n} A records: correct {rates['correct']:.3f}  "
                       f"wrong {rates['wrong']:.3f}  missed {rates['missed']:.3f}  abstained {rates['abstained']:.3f}")
            summary[name] = r.summary()
    matches = link_tables(a, b, truth_arg, columns, negatives=negatives, hard_fraction=hard_fraction,
                          threshold=threshold, seed=seed, id_column=ids)
    summary["matches"] = len(matches)
    typer.echo(f"matched {len(matches)} of {len(a)} A records (threshold {threshold})")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        matches.to_csv(out / "matches.csv", index=False)
        summary["matches_csv"] = str(out / "matches.csv")
        typer.echo(f"wrote {out / 'matches.csv'}")
    if json_output:
        typer.echo(json.dumps(summary, default=str))
