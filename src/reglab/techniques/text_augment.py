"""Text augmentation on token ids: random word deletion, insertion and adjacent swap.

After EDA (Wei & Zou, "EDA: Easy Data Augmentation Techniques for Boosting Performance on Text
Classification Tasks", EMNLP 2019), applied online to whole right-padded batches ``(B, L)`` on the
device, with no per-example Python:

1. deletion: every token is deleted with probability ``p_delete`` (a text that would lose all its
   tokens keeps one at random, as in EDA); the survivors are packed to the left.
2. insertion: after every token, a random vocabulary token (uniform over the ids >= 2, never
   ``<pad>``/``<unk>``; EDA inserts synonyms, which a plain vocabulary does not have) is inserted with
   probability ``p_insert``; tokens pushed past ``L`` are cut, as the tokenizer truncates.
3. swap: every adjacent pair of tokens is swapped with probability ``p_swap``, the pairs starting at
   even positions first, then those starting at odd positions (so a token can move two places).

Padding (id 0) stays at the end and is never moved into a text. Randomness comes from one generator
per seed (its stream ``run.stream("text_augment")[s]``), with the same number of draws for every batch, so a seed's
augmentation is the same whether it trains alone or in a group, and after a resume.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import Field
from torch import Tensor, nn

from ..errors import ReglabError
from .base import Knobs, Technique

if TYPE_CHECKING:
    from ..data import Data
    from ..engine.run import Run


def augment_tokens(
    ids: Tensor, p_delete: float, p_insert: float, p_swap: float, generator: torch.Generator | None, vocab_size: int
) -> Tensor:
    """Augmented copy of right-padded token ids ``ids`` (B, L) (0 = padding), same shape and dtype."""
    b, n = ids.shape
    device = ids.device
    u = torch.rand(4, b, n, generator=generator, device=device)
    new_tokens = torch.randint(2, max(vocab_size, 3), (b, n), generator=generator, device=device, dtype=ids.dtype)
    positions = torch.arange(n, device=device).expand(b, n)

    # 1. deletion
    real = ids != 0
    keep = real & (u[0] >= p_delete)
    lost_all = real.any(1) & ~keep.any(1)
    rescue = (u[3, :, 0] * real.sum(1)).long().clamp_max(n - 1)  # a random token of the row
    keep |= lost_all.unsqueeze(1) & (positions == rescue.unsqueeze(1))
    order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)
    out = ids.gather(1, order) * keep.gather(1, order)

    # 2. insertion after each token; every target index is distinct, so the scatter is deterministic
    if vocab_size > 2 and p_insert > 0:
        real = out != 0
        ins = real & (u[1] < p_insert)
        after = ins.long().cumsum(1)  # insertions at or before each position
        orig_at = positions + after - ins.long()
        ins_at = torch.where(ins, positions + after, 2 * n + positions)  # unused slots go past 2n
        wide = torch.zeros(b, 3 * n, dtype=ids.dtype, device=device)
        wide.scatter_(1, torch.cat([orig_at, ins_at], 1), torch.cat([out, new_tokens], 1))
        out = wide[:, :n].contiguous()

    # 3. adjacent swaps, even-started pairs then odd-started pairs (disjoint within a pass)
    if p_swap > 0:
        length = (out != 0).sum(1, keepdim=True)
        chosen = (positions + 1 < length) & (u[2] < p_swap)
        for parity in (0, 1):
            f = (chosen & (positions % 2 == parity)).long()
            src = positions + f - torch.nn.functional.pad(f[:, :-1], (1, 0))
            out = out.gather(1, src)
    return out


class TextAugment(Technique):
    name = "text_augment"
    kind = "augmentation"
    source = "Wei & Zou 2019, EDA (random deletion, insertion, swap), on token ids"
    order = 10

    class Knobs(Knobs):
        p_delete: float = Field(0.1, ge=0.0, lt=1.0, description="probability of deleting each token")
        p_insert: float = Field(0.05, ge=0.0, le=1.0, description="probability of inserting a random token after each token")
        p_swap: float = Field(0.05, ge=0.0, le=1.0, description="probability of swapping each adjacent pair of tokens")

    def apply_model(self, model: nn.Module, data: Data) -> nn.Module:
        if data.kind != "text":
            raise ReglabError(f"technique text_augment: needs a text dataset of token ids; '{data.name}' is {data.kind} data")
        if "vocab_size" not in data.info:
            raise ReglabError(f"technique text_augment: dataset '{data.name}' does not report its vocab_size")
        return model

    def transform_batch(self, run: Run, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if x.dtype != torch.int64:
            raise ReglabError(f"technique text_augment: needs int64 token ids, got {x.dtype}")
        k = self.knobs
        vocab_size = int(run.data.info["vocab_size"])
        out = torch.stack([
            augment_tokens(x[s], k.p_delete, k.p_insert, k.p_swap, run.stream(self.name)[s], vocab_size)
            for s in range(x.shape[0])
        ])
        return out, y
