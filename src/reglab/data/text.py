"""Text to fixed-length token ids: a regex word tokenizer and a vocabulary built on the training split.

The tokenizer lowercases and splits into words (letters, digits, underscores, with inner apostrophes:
``don't``), bracketed placeholders as one token (GoEmotions' ``[NAME]``, ``[RELIGION]``) and every
other non-space character as its own punctuation token, in the spirit of the basic tokenizers of
torchtext (``basic_english``) and Keras' ``TextVectorization``. A :class:`Vocab` keeps the tokens seen
at least ``min_count`` times in the *training* texts (most frequent first, ties alphabetically),
with ``<pad>`` = 0 and ``<unk>`` = 1, so validation and test words unseen in training map to
``<unk>`` and nothing leaks from them. :meth:`Vocab.encode` turns texts into an ``(N, L)`` int64
tensor, truncated to the first ``L`` tokens and right-padded with 0; the lookup and the placement run
as whole-array numpy/pandas operations, not per token.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..errors import ReglabError

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1

TOKEN_PATTERN = re.compile(r"\[\w+\]|\w+(?:'\w+)*|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """``"I didn't LOVE it, [NAME]!"`` -> ``['i', "didn't", 'love', 'it', ',', '[name]', '!']``."""
    return TOKEN_PATTERN.findall(text.lower())


def tokenize_all(texts: Iterable[str]) -> list[list[str]]:
    """:func:`tokenize` every text (one compiled regex call per text)."""
    findall = TOKEN_PATTERN.findall
    return [findall(t.lower()) for t in texts]


@dataclass
class Vocab:
    """Token list with ``<pad>`` at 0 and ``<unk>`` at 1; ``index`` maps a token to its id."""

    tokens: list[str]
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.tokens[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {self.tokens[:2]}")
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("a vocabulary's tokens must be distinct")
        self._lookup = pd.Index(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens: {', '.join(self.tokens[2:8])}, ...)"

    @classmethod
    def build(
        cls, texts: Iterable[str] | Iterable[Sequence[str]], *, min_count: int = 1, max_size: int | None = None
    ) -> Vocab:
        """Vocabulary of ``texts`` (raw strings, or already tokenized lists).

        Keeps tokens occurring at least ``min_count`` times, most frequent first (ties broken
        alphabetically, so the result does not depend on the order of the texts), at most
        ``max_size`` entries *including* ``<pad>`` and ``<unk>``.
        """
        if min_count < 1:
            raise ReglabError(f"min_count must be >= 1, got {min_count}")
        if max_size is not None and max_size < 2:
            raise ReglabError(f"max_size must be >= 2 (<pad> and <unk>), got {max_size}")
        token_lists = _as_token_lists(texts)
        counts = Counter(chain.from_iterable(token_lists))
        counts.pop(PAD, None)
        counts.pop(UNK, None)
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max_size - 2]
        return cls([PAD, UNK, *kept])

    def ids(self, tokens: Sequence[str]) -> np.ndarray:
        """Ids of a flat sequence of tokens (``<unk>`` for unknown ones), as one int64 array."""
        if len(tokens) == 0:
            return np.zeros(0, dtype=np.int64)
        found = self._lookup.get_indexer(np.asarray(tokens, dtype=object))
        return np.where(found < 0, UNK_ID, found).astype(np.int64)

    def encode(self, texts: Iterable[str] | Iterable[Sequence[str]], max_len: int) -> Tensor:
        """``(N, max_len)`` int64 ids: the first ``max_len`` tokens of each text, right-padded with 0."""
        if max_len < 1:
            raise ReglabError(f"max_len must be >= 1, got {max_len}")
        token_lists = _as_token_lists(texts)
        lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
        flat = self.ids(list(chain.from_iterable(token_lists)))
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        position = np.arange(len(flat), dtype=np.int64) - starts
        row = np.repeat(np.arange(len(token_lists), dtype=np.int64), lengths)
        keep = position < max_len
        out = np.zeros((len(token_lists), max_len), dtype=np.int64)
        out[row[keep], position[keep]] = flat[keep]
        return torch.from_numpy(out)

    def decode(self, ids: Tensor | Sequence[int]) -> list[str]:
        """Tokens of one row of ids, padding dropped."""
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return [self.tokens[i] for i in values if i != PAD_ID]

    # a plain dict survives torch.save(weights_only) and JSON
    def to_dict(self) -> dict[str, list[str]]:
        return {"tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, state: Mapping[str, list[str]]) -> Vocab:
        return cls(list(state["tokens"]))


def _as_token_lists(texts: Iterable[str] | Iterable[Sequence[str]]) -> list[Sequence[str]]:
    texts = list(texts)
    if texts and isinstance(texts[0], str):
        return tokenize_all(texts)
    return texts


def encode_text_column(
    splits: Mapping[str, Sequence[str]],
    *,
    train: str = "train",
    max_len: int = 64,
    min_count: int = 2,
    max_size: int | None = None,
) -> tuple[dict[str, Tensor], Vocab, dict]:
    """Tokenize the text column of every split with a vocabulary built on ``splits[train]`` only.

    Returns ``(ids, vocab, info)``: ``ids[name]`` is the ``(N, max_len)`` int64 tensor of split
    ``name``; ``info`` is what a text :class:`~reglab.data.base.Data` carries in ``Data.info``
    (the vocabulary, its size, ``max_len``, the pad id, per-split truncation and unknown-token rates,
    and ``model_options={"vocab_size": ...}`` for the model builder). A loader that carves
    validation out of train must carve *before* calling this, so the validation texts do not shape
    the vocabulary.
    """
    if train not in splits:
        raise ReglabError(f"encode_text_column: no split named '{train}' (got {', '.join(splits)})")
    tokens = {name: tokenize_all(texts) for name, texts in splits.items()}
    vocab = Vocab.build(tokens[train], min_count=min_count, max_size=max_size)
    ids = {name: vocab.encode(toks, max_len) for name, toks in tokens.items()}
    info = text_info(vocab, max_len)
    info["truncated"] = {n: _fraction(sum(len(t) > max_len for t in toks), len(toks)) for n, toks in tokens.items()}
    info["unknown"] = {n: _fraction(int((x == UNK_ID).sum()), int((x != PAD_ID).sum())) for n, x in ids.items()}
    return ids, vocab, info


def text_info(vocab: Vocab, max_len: int) -> dict:
    """The ``Data.info`` entries of a tokenized text dataset."""
    return {
        "vocab": vocab,
        "vocab_size": len(vocab),
        "max_len": max_len,
        "pad_id": PAD_ID,
        "unk_id": UNK_ID,
        "model_options": {"vocab_size": len(vocab)},
    }


def lengths(ids: Tensor) -> Tensor:
    """Number of non-padding tokens of each row of right-padded ids ``(..., L)``."""
    return (ids != PAD_ID).sum(-1)


def _fraction(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
