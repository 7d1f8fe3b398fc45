"""A transformer encoder text classifier (Vaswani et al., "Attention Is All You Need", 2017).

token embedding (``padding_idx`` 0) + learned positional embedding (BERT-style, Devlin et al. 2019)
-> ``layers`` x encoder layer -> pooling over the non-padding positions (mean, max or both
concatenated) -> dropout -> linear head with ``num_outputs`` logits.

Each encoder layer is the standard post-norm layer of ``torch.nn.TransformerEncoderLayer``
(self-attention, residual, LayerNorm, feed-forward, residual, LayerNorm; ``norm_first`` for pre-norm),
written with plain tensor operations (numerically equal to it; a test checks) so that every op has a
batching rule under ``torch.func.vmap(functional_call(...))``, which reglab uses to train several
seeds at once. ``nn.TransformerEncoderLayer`` does give correct results under vmap (torch 2.14), but
in eval mode its fused fast path (``aten::_transformer_encoder_layer_fwd``) and, on the CPU,
``F.scaled_dot_product_attention`` have no batching rule: vmap warns and loops over the seeds one by
one. Padding (token id 0) is masked out of the attention keys (with the most negative finite value,
not -inf) and of the pooling, so the output does not depend on how much padding follows a text, and a
text with no tokens at all still gets a finite output (uniform attention, zero pooled vector) where
the eval fast path of ``nn.TransformerEncoderLayer`` returns NaN. Every dropout (attention weights,
residual branches, embeddings, head) is :class:`reglab.models.seeded.SeedDropout`: per-seed masks,
the same alone or stacked.
"""
from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..errors import ReglabError
from . import Activation, make_activation, register
from .mlp import Probability
from .seeded import SeedDropout, layer_key

Pooling = Literal["mean", "max", "mean+max"]


class SelfAttention(nn.Module):
    """Multi-head self-attention with a key-padding mask (softmax over the non-padding keys)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, tag: str = "attention") -> None:
        super().__init__()
        if dim % heads:
            raise ReglabError(f"model transformer: dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.drop = SeedDropout(dropout, layer_key(tag))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, h: Tensor, pad: Tensor) -> Tensor:
        """``h``: (B, L, D); ``pad``: (B, L) bool, True at padding positions."""
        b, n, d = h.shape
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // self.heads))
        # the most negative finite value, not -inf: exactly zero weight after softmax, yet no NaN
        # for a row whose keys are all padding
        scores = scores.masked_fill(pad[:, None, None, :], torch.finfo(scores.dtype).min)
        attn = self.drop(scores.softmax(-1))
        return self.out((attn @ v).transpose(1, 2).reshape(b, n, d))


class EncoderLayer(nn.Module):
    """The layer of ``nn.TransformerEncoderLayer`` (same sub-blocks and defaults) with plain ops."""

    def __init__(self, dim: int, heads: int, ff: int, dropout: float, activation: str, norm_first: bool,
                 tag: str = "layer") -> None:
        super().__init__()
        self.norm_first = norm_first
        self.attn = SelfAttention(dim, heads, dropout, f"{tag}/attention")
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2 = (SeedDropout(dropout, layer_key(f"{tag}/drop{i}")) for i in (1, 2))
        ff_layers: list[nn.Module] = [nn.Linear(dim, ff), make_activation(activation)]
        if dropout > 0:
            ff_layers.append(SeedDropout(dropout, layer_key(f"{tag}/ff")))
        ff_layers.append(nn.Linear(ff, dim))
        self.ff = nn.Sequential(*ff_layers)

    def forward(self, h: Tensor, pad: Tensor) -> Tensor:
        if self.norm_first:
            h = h + self.drop1(self.attn(self.norm1(h), pad))
            return h + self.drop2(self.ff(self.norm2(h)))
        h = self.norm1(h + self.drop1(self.attn(h, pad)))
        return self.norm2(h + self.drop2(self.ff(h)))


class TransformerClassifier(nn.Module):
    """Token ids ``(B, L)`` (int64, 0 = padding) -> logits ``(B, num_outputs)``."""

    def __init__(
        self, vocab_size: int, num_outputs: int, max_len: int, *, dim: int = 128, heads: int = 4, layers: int = 2,
        ff: int = 256, dropout: float = 0.1, pooling: Pooling = "mean+max", activation: str = "gelu",
        norm_first: bool = False,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.pooling = pooling
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.position = nn.Embedding(max_len, dim)
        self.embed_drop = SeedDropout(dropout, layer_key("embedding"))
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ff, dropout, activation, norm_first, f"layer{i}")
                                    for i in range(layers))
        self.final_norm = nn.LayerNorm(dim) if norm_first else nn.Identity()
        self.head_drop = SeedDropout(dropout, layer_key("head"))
        self.head = nn.Linear(dim * (2 if pooling == "mean+max" else 1), num_outputs)
        nn.init.normal_(self.embed.weight, std=dim**-0.5)
        nn.init.normal_(self.position.weight, std=0.02)
        with torch.no_grad():
            self.embed.weight[0].zero_()

    def forward(self, ids: Tensor) -> Tensor:
        n = ids.shape[-1]
        if n > self.max_len:
            raise ReglabError(f"model transformer: input length {n} exceeds max_len {self.max_len}")
        ids = ids.long()
        pad = ids == 0
        h = self.embed(ids) + self.position.weight[:n]
        h = self.embed_drop(h)
        for layer in self.layers:
            h = layer(h, pad)
        h = self.final_norm(h)
        return self.head(self.head_drop(pool(h, pad, self.pooling)))


def pool(h: Tensor, pad: Tensor, how: Pooling) -> Tensor:
    """Mean and/or max of ``h`` (B, L, D) over the positions where ``pad`` (B, L) is False."""
    keep = (~pad).unsqueeze(-1)
    parts = []
    if how in ("mean", "mean+max"):
        count = keep.sum(1).clamp_min(1).to(h.dtype)
        parts.append((h * keep).sum(1) / count)
    if how in ("max", "mean+max"):
        top = h.masked_fill(~keep, torch.finfo(h.dtype).min).amax(1)
        parts.append(torch.where(keep.any(1), top, torch.zeros_like(top)))
    return parts[0] if len(parts) == 1 else torch.cat(parts, -1)


@register("transformer", "transformer encoder text classifier: token+position embeddings, padding mask, pooled head")
def transformer(
    input_shape: tuple[int, ...],
    num_outputs: int,
    *,
    vocab_size: Annotated[int, Field(ge=3)] | None = None,
    max_len: Annotated[int, Field(ge=1)] | None = None,
    dim: Annotated[int, Field(ge=1)] = 128,
    heads: Annotated[int, Field(ge=1)] = 4,
    layers: Annotated[int, Field(ge=0)] = 2,
    ff: Annotated[int, Field(ge=1)] = 256,
    dropout: Probability = 0.1,
    pooling: Pooling = "mean+max",
    activation: Activation = "gelu",
    norm_first: bool = False,
) -> TransformerClassifier:
    """``vocab_size`` comes from the text dataset (``Data.info['model_options']``); ``max_len``
    (the positional table's size) defaults to the input length ``input_shape[0]``."""
    if len(input_shape) != 1:
        raise ReglabError(f"model transformer: input shape must be (L,) token ids, got {input_shape}")
    if vocab_size is None:
        raise ReglabError("model transformer: vocab_size is required (text datasets provide it; set model_options.vocab_size)")
    max_len = input_shape[0] if max_len is None else max_len
    if max_len < input_shape[0]:
        raise ReglabError(f"model transformer: max_len ({max_len}) must be >= the input length {input_shape[0]}")
    return TransformerClassifier(
        vocab_size, num_outputs, max_len, dim=dim, heads=heads, layers=layers, ff=ff, dropout=dropout,
        pooling=pooling, activation=activation, norm_first=norm_first,
    )
