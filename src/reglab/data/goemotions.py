"""GoEmotions "simplified" (Demszky et al., "GoEmotions: A Dataset of Fine-Grained Emotions", ACL 2020).

58k Reddit comments labelled with 27 emotions + ``neutral`` (28 labels, multilabel): 43,410 train /
5,426 dev / 5,427 test. The dev split is the validation split (nothing is carved from train, so
``val_fraction`` and ``split_seed`` are ignored). Read from the offline copy
``$REGLAB_DATA/goemotions/{train,dev,test}.tsv.gz`` + ``labels.txt`` (unquoted TSV
``text<TAB>label ids<TAB>comment id``; texts contain quote characters, so it is read with quoting
disabled), or else from the Hugging Face dataset ``go_emotions`` ("simplified") when the
``datasets`` package is installed and the machine is online.

``train_size`` keeps a random subset of that many training rows (drawn with ``split_seed``, before the
vocabulary is built, so the vocabulary comes from the rows actually trained on), for CPU budgets;
validation and test are always complete.

Texts are tokenized with :mod:`reglab.data.text` (vocabulary from the training split only, ``<pad>`` = 0,
``<unk>`` = 1) into ``(N, max_len)`` int64 ids; targets are ``(N, 28)`` float32 0/1 rows. The
tokenized tensors are cached under ``$REGLAB_CACHE/goemotions``.
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from ..errors import ReglabError
from .text import Vocab, encode_text_column, text_info
from . import cache_dir, data_root, register
from .base import Data, Split

NUM_LABELS = 28
SPLITS = {"train": "train", "val": "dev", "test": "test"}  # our name -> file stem
HF_NAME, HF_CONFIG = "go_emotions", "simplified"
CACHE_VERSION = 2


def offline_dir() -> Path | None:
    """``$REGLAB_DATA/goemotions`` when it holds the three TSV files and labels.txt."""
    root = data_root()
    if root is None:
        return None
    folder = root / "goemotions"
    needed = [folder / f"{stem}.tsv.gz" for stem in SPLITS.values()] + [folder / "labels.txt"]
    return folder if all(p.is_file() for p in needed) else None


def read_tsv(path: Path) -> pd.DataFrame:
    """One split of the offline copy: columns ``text``, ``labels`` (e.g. ``"2,14"``), ``id``."""
    return pd.read_csv(
        path, sep="\t", header=None, names=["text", "labels", "id"], quoting=csv.QUOTE_NONE,
        dtype=str, keep_default_na=False, na_filter=False, engine="c",
    )


def multi_hot(label_lists: pd.Series, num_labels: int = NUM_LABELS) -> torch.Tensor:
    """``"2,14"`` strings (or lists of ints) -> ``(N, num_labels)`` float32 0/1 rows."""
    label_lists = label_lists.reset_index(drop=True)
    if len(label_lists) and isinstance(label_lists.iloc[0], str):
        label_lists = label_lists.str.split(",")
    exploded = label_lists.explode()
    exploded = exploded[exploded.notna() & (exploded.astype(str) != "")]
    rows = np.asarray(exploded.index, dtype=np.int64)
    cols = exploded.astype(np.int64).to_numpy()
    if len(cols) and (cols.min() < 0 or cols.max() >= num_labels):
        raise ReglabError(f"dataset goemotions: label id out of range 0..{num_labels - 1} (got {cols.min()}..{cols.max()})")
    y = np.zeros((len(label_lists), num_labels), dtype=np.float32)
    y[rows, cols] = 1.0
    return torch.from_numpy(y)


def _read_offline(folder: Path) -> tuple[dict[str, pd.DataFrame], list[str]]:
    frames = {name: read_tsv(folder / f"{stem}.tsv.gz") for name, stem in SPLITS.items()}
    classes = (folder / "labels.txt").read_text(encoding="utf-8").split()
    if len(classes) != NUM_LABELS:
        raise ReglabError(f"dataset goemotions: {folder / 'labels.txt'} lists {len(classes)} labels, expected {NUM_LABELS}")
    return frames, classes


def _read_hf() -> tuple[dict[str, pd.DataFrame], list[str]]:
    try:
        import datasets
    except ImportError:
        raise ReglabError(
            "dataset goemotions: no offline copy ($REGLAB_DATA/goemotions with train/dev/test.tsv.gz and labels.txt) "
            "and the Hugging Face 'datasets' package is not installed (pip install datasets)"
        ) from None
    try:
        ds = datasets.load_dataset(HF_NAME, HF_CONFIG)
    except Exception as err:  # offline, hub errors: one line, not a traceback
        raise ReglabError(f"dataset goemotions: could not load Hugging Face '{HF_NAME}' ({HF_CONFIG}): {err}".splitlines()[0]) from None
    classes = list(ds["train"].features["labels"].feature.names)
    frames = {
        name: pd.DataFrame({"text": ds[hf]["text"], "labels": ds[hf]["labels"], "id": ds[hf]["id"]})
        for name, hf in {"train": "train", "val": "validation", "test": "test"}.items()
    }
    return frames, classes


def _cache_key(source: str, folder: Path | None, *settings: object) -> str:
    parts = [f"v{CACHE_VERSION}", source, *map(str, settings)]
    if folder is not None:  # a changed copy invalidates the cache
        for p in sorted(folder.iterdir()):
            if p.is_file():
                stat = p.stat()
                parts += [p.name, str(stat.st_size), str(stat.st_mtime_ns)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


@register("goemotions", "GoEmotions (simplified): 43,410/5,426/5,427 Reddit comments, 28 labels, multilabel text")
def load_goemotions(
    _path: None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    max_len: Annotated[int, Field(ge=1, le=4096)] = 64,
    min_count: Annotated[int, Field(ge=1)] = 2,
    max_vocab: Annotated[int, Field(ge=2)] | None = None,
    train_size: Annotated[int, Field(ge=1)] | None = None,
    cache: bool = True,
) -> Data:
    """``val_fraction`` is unused: the dev split is the validation split. ``split_seed`` draws the
    ``train_size`` subset (all 43,410 training rows when ``None``)."""
    folder = offline_dir()
    source = "offline" if folder is not None else "huggingface"
    key = _cache_key(source, folder, max_len, min_count, max_vocab, train_size, split_seed if train_size else None)
    path = cache_dir("goemotions") / f"{source}-{key}.pt"
    if cache and path.is_file():
        state = torch.load(path, weights_only=True)
    else:
        frames, classes = _read_offline(folder) if folder is not None else _read_hf()
        if train_size is not None and train_size < len(frames["train"]):
            rows = np.random.default_rng(split_seed).choice(len(frames["train"]), train_size, replace=False)
            frames["train"] = frames["train"].iloc[np.sort(rows)].reset_index(drop=True)
        ids, vocab, info = encode_text_column(
            {name: frames[name]["text"].tolist() for name in SPLITS},
            train="train", max_len=max_len, min_count=min_count, max_size=max_vocab,
        )
        state = {
            "x": ids,
            "y": {name: multi_hot(frames[name]["labels"]) for name in SPLITS},
            "classes": classes,
            "vocab": vocab.to_dict(),
            "truncated": info["truncated"],
            "unknown": info["unknown"],
        }
        if cache:
            tmp = path.with_suffix(".tmp")
            torch.save(state, tmp)
            tmp.replace(path)
    vocab = Vocab.from_dict(state["vocab"])
    info = text_info(vocab, max_len)
    info.update(source=source, truncated=state["truncated"], unknown=state["unknown"])
    splits = {name: Split(state["x"][name], state["y"][name]) for name in SPLITS}
    return Data(
        name="goemotions", task="multilabel", train=splits["train"], val=splits["val"], test=splits["test"],
        input_shape=(max_len,), classes=list(state["classes"]), mean=None, std=None, kind="text", info=info,
    )
