"""Synonym replacement on token ids: the "SR" operation of EDA (Wei & Zou, "EDA: Easy Data
Augmentation Techniques for Boosting Performance on Text Classification Tasks", EMNLP 2019).

Every token of a training text that has at least one synonym in the dataset's vocabulary is replaced,
with probability ``p``, by one of those synonyms chosen uniformly (``P(token -> s) = p / n_syn`` for
each of its ``n_syn`` in-vocabulary synonyms). Synonyms come from a table shipped with reglab
(:mod:`reglab.data.synonyms`, ``synonyms.txt``; or ``table``, a file in the same format), mapped onto
the vocabulary once per run, so a replacement is always a token the model has an embedding for.
EDA replaces ``n = alpha * l`` randomly chosen words of each sentence (and every occurrence of a
chosen word); here each token is a Bernoulli(``p``) trial, applied to whole padded batches on the
device, with no per-example Python (``p`` plays the role of EDA's ``alpha_sr``, 0.1 in the paper).
Padding, ``<unk>`` and words without synonyms are never changed.

Draws: two uniforms per token position of every batch from the seed's own stream
(``run.stream("synonym_replacement")``), on the CPU, the same number for every batch, so a seed's
replacements are the same alone or stacked and after a resume. Runs before ``text_augment``
(``order`` 9 < 10), as EDA lists SR first.

Knobs: p=0.1, table=None (the shipped list).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import Field
from torch import Tensor, nn

from ..data.synonyms import TABLE, read_table, replace_synonyms, synonym_ids
from ..data.text import Vocab
from ..errors import ReglabError
from .base import Knobs, Technique

if TYPE_CHECKING:
    from ..data import Data
    from ..engine.run import Run


class SynonymReplacement(Technique):
    name = "synonym_replacement"
    kind = "augmentation"
    source = "Wei & Zou 2019, EDA (synonym replacement), from a shipped synonym table, on token ids"
    order = 9

    class Knobs(Knobs):
        p: float = Field(0.1, ge=0.0, le=1.0, description="probability of replacing each token that has a synonym")
        table: str | None = Field(None, description="synonym table file, one comma-separated group per line (None: shipped list)")

    def apply_model(self, model: nn.Module, data: Data) -> nn.Module:
        if data.kind != "text":
            raise ReglabError(f"technique synonym_replacement: needs a text dataset of token ids; '{data.name}' is {data.kind} data")
        if not isinstance(data.info.get("vocab"), Vocab):
            raise ReglabError(f"technique synonym_replacement: dataset '{data.name}' does not carry its vocabulary")
        read_table(self.knobs.table or TABLE)  # a bad table is an error before training
        return model

    def on_fit_start(self, run: Run) -> None:
        choices, counts = synonym_ids(run.data.info["vocab"], read_table(self.knobs.table or TABLE))
        self._choices, self._counts = choices.to(run.device), counts.to(run.device)

    def transform_batch(self, run: Run, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if x.dtype != torch.int64:
            raise ReglabError(f"technique synonym_replacement: needs int64 token ids, got {x.dtype}")
        out = []
        for s, g in enumerate(run.stream(self.name)):
            u, v = torch.rand(2, *x.shape[1:], generator=g).to(x.device)
            out.append(replace_synonyms(x[s], self._choices, self._counts, self.knobs.p, u, v))
        return torch.stack(out), y
