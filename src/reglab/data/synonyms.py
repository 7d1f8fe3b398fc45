"""A synonym table shipped with reglab and its mapping onto a dataset's vocabulary, for synonym
replacement (the "SR" operation of EDA: Wei & Zou, "EDA: Easy Data Augmentation Techniques for
Boosting Performance on Text Classification Tasks", EMNLP 2019).

``synonyms.txt`` beside this module holds one group of interchangeable words per line, comma
separated (like a WordNet synset); a word's synonyms are the other members of every group it is in.
EDA draws synonyms from WordNet, which needs a download; the shipped table is short (about 200
groups of common English words, many of them emotion and opinion words) and nothing is fetched at run
time. A user's own table in the same format can replace it (``read_table(path)``).
"""
from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ReglabError
from .text import PAD_ID, UNK_ID, Vocab

TABLE = Path(__file__).resolve().parent / "synonyms.txt"
_WORD = re.compile(r"\w+(?:'\w+)*")


@cache
def read_table(path: str | Path = TABLE) -> dict[str, tuple[str, ...]]:
    """``word -> its synonyms`` (sorted, the word itself excluded) from a table file; a line that is
    not a comment must list single lowercase words (as :func:`reglab.data.text.tokenize` makes them)."""
    path = Path(path)
    if not path.is_file():
        raise ReglabError(f"synonym table: file not found: {path}")
    groups: dict[str, set[str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = [w.strip() for w in line.split(",") if w.strip()]
        for w in words:
            if not _WORD.fullmatch(w) or w != w.lower():
                raise ReglabError(f"synonym table {path.name}, line {number}: '{w}' is not one lowercase word")
        for w in words:
            groups.setdefault(w, set()).update(words)
    return {w: tuple(sorted(g - {w})) for w, g in groups.items() if len(g) > 1}


def synonym_ids(vocab: Vocab, table: dict[str, tuple[str, ...]]) -> tuple[Tensor, Tensor]:
    """The table on token ids: ``(choices, counts)`` with ``choices`` ``(V, K)`` int64 (row ``i``: the
    ids of token ``i``'s synonyms that are in the vocabulary, padded with ``i``) and ``counts`` ``(V,)``
    (how many; 0 for tokens without one, ``<pad>`` and ``<unk>``)."""
    rows: list[list[int]] = []
    for i, token in enumerate(vocab.tokens):
        ids = [] if i in (PAD_ID, UNK_ID) else [vocab.index[s] for s in table.get(token, ()) if s in vocab.index]
        rows.append(ids)
    width = max(1, max(map(len, rows)))
    choices = torch.tensor([ids + [i] * (width - len(ids)) for i, ids in enumerate(rows)], dtype=torch.int64)
    return choices, torch.tensor([len(ids) for ids in rows], dtype=torch.int64)


def replace_synonyms(ids: Tensor, choices: Tensor, counts: Tensor, p: float, u: Tensor, v: Tensor) -> Tensor:
    """Each token of ``ids`` (B, L) that has a synonym is replaced, where ``u < p``, by its synonym
    number ``floor(v * count)`` (so uniformly among its synonyms); ``u``, ``v`` uniform [0, 1) of ids' shape."""
    count = counts[ids]
    pick = (v * count).long().clamp_max((count - 1).clamp_min(0))
    replaced = choices[ids, pick]
    return torch.where((count > 0) & (u < p), replaced, ids)
