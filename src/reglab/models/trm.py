"""Tiny Recursive Model (TRM): one small network applied recursively to an answer latent and a reasoning latent.

Follows "Less is More: Recursive Reasoning with Tiny Networks" (Jolicoeur-Martineau, 2025,
arXiv:2510.04871), its pseudocode (Figure 3) and reference code:

* the puzzle ``x`` (L cells, tokens 0..V-1) is embedded (token + learned position embedding);
  the answer latent ``y`` and the reasoning latent ``z`` are (B, L, D);
* one network ``net`` (``layers`` post-norm MLP-mixer blocks over the L tokens, as the paper uses
  on Sudoku, or self-attention blocks) is used for both updates. A *latent recursion* is
  ``z <- net(x + y + z)`` ``n`` times, then ``y <- net(y + z)`` once;
* a *deep recursion* runs ``T - 1`` latent recursions under ``torch.no_grad`` and one with
  gradients (``backprop="all"``: all ``T`` with gradients, i.e. backpropagation through the whole
  recursion), then decodes ``y`` with the output head (D -> classes per cell) and the halting head
  (mean-pooled ``y`` -> one logit: "is my current answer correct");
* deep supervision (the ``deep_supervision`` technique, :mod:`reglab.techniques.deep_supervision`)
  repeats deep recursions up to ``n_sup`` times on a batch, with a loss, an optimizer step and
  detached latents after each; with ACT an example stops once its halting probability exceeds
  ``halt_threshold`` (the paper halts at logit > 0, i.e. 0.5).
  At test time every example runs ``n_sup_test`` deep recursions.

Latent initialization: ``"learned"``: learned vectors (D,) broadcast over cells (the reference code
uses fixed random buffers); ``"random"``: fresh N(0, ``init_std``) latents at every forward pass,
which makes :func:`best_of_k` (k random starts, keep each example's answer with the most confident
halting head) meaningful. In eval mode a random-init model draws its starts from a generator seeded
with ``eval_seed`` at every call (evaluation is deterministic and leaves the global RNG alone) and,
with ``test_k > 1``, its ``forward`` returns the best-of-``test_k`` answer.

Variants for ablations (``VARIANTS``): ``single`` (the network applied in one latent recursion with
n=1, T=1, one supervision step) and ``bptt`` (T latent recursions all with gradients, one
supervision step, so an ordinary training step).
"""
from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ..errors import ReglabError
from . import register

Block = Literal["mixer", "attention"]
Norm = Literal["rms", "layer"]
Positive = Annotated[int, Field(ge=1)]

VARIANTS: dict[str, dict] = {
    "trm": {},
    "single": {"n": 1, "T": 1, "n_sup": 1, "n_sup_test": 1},
    "bptt": {"backprop": "all", "n_sup": 1, "n_sup_test": 1},
}


def _norm(kind: Norm, dim: int) -> nn.Module:
    return nn.RMSNorm(dim, elementwise_affine=False) if kind == "rms" else nn.LayerNorm(dim, elementwise_affine=False)


class MLP(nn.Sequential):
    def __init__(self, width: int, hidden: int):
        super().__init__(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))


class MixerBlock(nn.Module):
    """Post-norm MLP-mixer block (as TRM's ``mlp_t`` variant): token mixing over the L cells, then a channel MLP."""

    def __init__(self, length: int, dim: int, token_hidden: int, channel_hidden: int, norm: Norm):
        super().__init__()
        self.token_mlp = MLP(length, token_hidden)
        self.channel_mlp = MLP(dim, channel_hidden)
        self.norm1, self.norm2 = _norm(norm, dim), _norm(norm, dim)

    def forward(self, h: Tensor) -> Tensor:
        h = self.norm1(h + self.token_mlp(h.transpose(1, 2)).transpose(1, 2))
        return self.norm2(h + self.channel_mlp(h))


class AttentionBlock(nn.Module):
    """Post-norm transformer block: self-attention over the L cells, then a channel MLP."""

    def __init__(self, dim: int, heads: int, channel_hidden: int, norm: Norm):
        super().__init__()
        if dim % heads:
            raise ReglabError(f"model trm: dim ({dim}) must be divisible by heads ({heads})")
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.channel_mlp = MLP(dim, channel_hidden)
        self.norm1, self.norm2 = _norm(norm, dim), _norm(norm, dim)

    def forward(self, h: Tensor) -> Tensor:
        h = self.norm1(h + self.attn(h, h, h, need_weights=False)[0])
        return self.norm2(h + self.channel_mlp(h))


class TRM(nn.Module):
    """Tiny Recursive Model over ``length`` cells with tokens 0..``vocab``-1 and ``classes`` outputs per cell."""

    def __init__(
        self,
        length: int = 81,
        vocab: int = 10,
        classes: int = 9,
        *,
        dim: int = 64,
        layers: int = 2,
        block: Block = "mixer",
        token_hidden: int = 128,
        channel_hidden: int = 256,
        heads: int = 4,
        norm: Norm = "rms",
        n: int = 6,
        T: int = 3,
        n_sup: int = 16,
        n_sup_test: int = 16,
        backprop: Literal["last", "all"] = "last",
        latent_init: Literal["learned", "random"] = "learned",
        init_std: float = 1.0,
        halt_threshold: float = 0.5,
        act: bool = True,
        test_k: int = 1,
        eval_seed: int = 0,
    ):
        super().__init__()
        self.length, self.vocab, self.classes, self.dim = length, vocab, classes, dim
        self.n, self.T, self.n_sup, self.n_sup_test = n, T, n_sup, n_sup_test
        self.backprop, self.latent_init, self.init_std = backprop, latent_init, init_std
        self.halt_threshold, self.act = halt_threshold, act
        self.test_k, self.eval_seed = test_k, eval_seed
        self.token_emb = nn.Embedding(vocab, dim)
        self.pos_emb = nn.Parameter(torch.randn(length, dim))
        if block == "mixer":
            blocks = [MixerBlock(length, dim, token_hidden, channel_hidden, norm) for _ in range(layers)]
        else:
            blocks = [AttentionBlock(dim, heads, channel_hidden, norm) for _ in range(layers)]
        self.net = nn.Sequential(*blocks)
        self.head = nn.Linear(dim, classes)
        self.halt_head = nn.Linear(dim, 1)
        nn.init.zeros_(self.halt_head.weight)
        nn.init.constant_(self.halt_head.bias, -5.0)  # start by not halting (as the reference code)
        if latent_init == "learned":
            self.y_init = nn.Parameter(torch.randn(dim))
            self.z_init = nn.Parameter(torch.randn(dim))

    # ---- pieces ---------------------------------------------------------------------------
    def embed(self, x: Tensor) -> Tensor:
        """(B, L) int tokens -> (B, L, D)."""
        return self.token_emb(x) + self.pos_emb

    def init_latents(self, batch: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Initial (y, z), each (batch, L, D)."""
        shape = (batch, self.length, self.dim)
        if self.latent_init == "learned":
            return self.y_init.expand(shape), self.z_init.expand(shape)
        device = self.pos_emb.device
        y = torch.randn(shape, generator=generator, device=device) * self.init_std
        z = torch.randn(shape, generator=generator, device=device) * self.init_std
        return y, z

    def latent_recursion(self, x_emb: Tensor, y: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        for _ in range(self.n):
            z = self.net(x_emb + y + z)
        y = self.net(y + z)
        return y, z

    def decode(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """(logits (B, L, classes), halting logit (B,)) from the answer latent."""
        return self.head(y), self.halt_head(y.mean(1)).squeeze(-1)

    def deep_recursion(self, x_emb: Tensor, y: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """T latent recursions (the first T-1 without gradients unless ``backprop="all"``).

        Returns (y, z) detached for the next supervision step, the logits and the halting logit.
        """
        if self.backprop == "last":
            with torch.no_grad():
                for _ in range(self.T - 1):
                    y, z = self.latent_recursion(x_emb, y, z)
            y, z = self.latent_recursion(x_emb, y, z)
        else:
            for _ in range(self.T):
                y, z = self.latent_recursion(x_emb, y, z)
        logits, halt = self.decode(y)
        return y.detach(), z.detach(), logits, halt

    # ---- inference ------------------------------------------------------------------------
    def run(self, x: Tensor, n_sup: int | None = None, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n_sup`` deep recursions (default: ``n_sup`` in training mode, ``n_sup_test`` in eval mode)
        on puzzles ``x`` (..., L); returns (logits (..., L, classes), halting logit (...)) of the last one.
        Gradients reach only the last deep recursion."""
        if n_sup is None:
            n_sup = self.n_sup if self.training else self.n_sup_test
        lead = x.shape[:-1]
        x = x.reshape(-1, self.length)
        x_emb = self.embed(x)
        y, z = self.init_latents(len(x), generator)
        with torch.no_grad():
            for _ in range(n_sup - 1):
                y, z, _, _ = self.deep_recursion(x_emb, y, z)
        y, z, logits, halt = self.deep_recursion(x_emb, y, z)
        return logits.reshape(*lead, self.length, self.classes), halt.reshape(lead)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and self.latent_init == "random":
            gen = torch.Generator(device=self.pos_emb.device).manual_seed(self.eval_seed)
            if self.test_k > 1:
                return best_of_k(self, x, self.test_k, generator=gen)[0]
            return self.run(x, generator=gen)[0]
        return self.run(x)[0]


@torch.no_grad()
def best_of_k(
    model: TRM, x: Tensor, k: int, *, n_sup: int | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Test-time best-of-k: run ``k`` random latent initializations and keep, per example, the logits
    of the run whose halting head is most confident its answer is right. Returns (logits, halt logit)."""
    if model.latent_init != "random":
        raise ReglabError("best_of_k: needs a model with latent_init='random' (all starts are equal otherwise)")
    if k < 1:
        raise ReglabError(f"best_of_k: k must be >= 1, got {k}")
    best_logits, best_halt = model.run(x, n_sup, generator)
    for _ in range(k - 1):
        logits, halt = model.run(x, n_sup, generator)
        better = halt > best_halt
        best_logits = torch.where(better[..., None, None], logits, best_logits)
        best_halt = torch.maximum(halt, best_halt)
    return best_logits, best_halt


@register("trm", "Tiny Recursive Model (Jolicoeur-Martineau 2025): one small mixer/attention net applied recursively, with a halting head")
def trm(
    input_shape: tuple[int, ...],
    num_outputs: int,
    *,
    dim: Positive = 64,
    layers: Positive = 2,
    block: Block = "mixer",
    token_hidden: Positive = 128,
    channel_hidden: Positive = 256,
    heads: Positive = 4,
    norm: Norm = "rms",
    n: Positive = 6,
    T: Positive = 3,
    n_sup: Positive = 16,
    n_sup_test: Positive = 16,
    backprop: Literal["last", "all"] = "last",
    latent_init: Literal["learned", "random"] = "learned",
    init_std: Annotated[float, Field(gt=0)] = 1.0,
    halt_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5,
    act: bool = True,
    test_k: Positive = 1,
    vocab: Annotated[int, Field(ge=2)] | None = None,
) -> TRM:
    """Inputs are (L,) integer tokens (0 = blank); ``vocab`` defaults to ``num_outputs + 1``."""
    if test_k > 1 and latent_init != "random":
        raise ReglabError("model trm: test_k > 1 (best-of-k at test time) needs latent_init='random'")
    if len(input_shape) != 1:
        raise ReglabError(f"model trm: input_shape must be (cells,), got {input_shape}")
    return TRM(
        input_shape[0], vocab or num_outputs + 1, num_outputs,
        dim=dim, layers=layers, block=block, token_hidden=token_hidden, channel_hidden=channel_hidden,
        heads=heads, norm=norm, n=n, T=T, n_sup=n_sup, n_sup_test=n_sup_test, backprop=backprop,
        latent_init=latent_init, init_std=init_std, halt_threshold=halt_threshold, act=act,
        test_k=test_k,
    )
