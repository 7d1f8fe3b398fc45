"""Several seeds of one architecture trained at once, stacked in one module.

:class:`Stacked` holds S independently initialized copies of a model (independent seeds, not an
ensemble: nothing is averaged). With S = 1 it simply wraps
the model; with S > 1 it stacks every parameter and buffer along a new leading dimension
(``torch.func.stack_module_state``) and evaluates all copies in one call with
``torch.func.vmap(functional_call(...))``, which turns S small matrix products into one batched
product. Optimizers act elementwise, so one optimizer over the stacked tensors updates every seed
exactly as it would alone. Inputs and outputs carry the seed dimension first: ``(S, B, ...)``.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap


def _key(name: str) -> str:
    return name.replace(".", "__")


class Stacked(nn.Module):
    """S copies of one architecture; ``forward(x)`` maps ``(S, B, ...)`` to ``(S, B, ...)``."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("Stacked needs at least one member")
        self.size = len(members)
        if self.size == 1:
            self.single = members[0]
            object.__setattr__(self, "_template", members[0])  # same module, not registered twice
            return
        params, buffers = stack_module_state(members)
        # the template keeps the architecture without storage; it is not a registered submodule
        object.__setattr__(self, "_template", copy.deepcopy(members[0]).to("meta"))
        self._names = list(params)
        self._buffer_names = list(buffers)
        linear = {f"{m}.weight" if m else "weight" for m, mod in members[0].named_modules() if isinstance(mod, nn.Linear)}
        for name, value in params.items():
            value = value.detach().clone()
            if name in linear:  # column-major per seed: the layout vmap's backward gives the gradient in,
                value = value.transpose(-1, -2).contiguous().transpose(-1, -2)  # so no copy per step
            self.register_parameter(_key(name), nn.Parameter(value))
        for name, value in buffers.items():
            self.register_buffer(_key(name), value.detach().clone())

    @property
    def template(self) -> nn.Module:
        """The architecture (module types and names); real weights only when S = 1."""
        return self._template

    def train(self, mode: bool = True) -> Stacked:
        super().train(mode)
        self._template.train(mode)
        return self

    def _tensors(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        p = {n: getattr(self, _key(n)) for n in self._names}
        b = {n: getattr(self, _key(n)) for n in self._buffer_names}
        return p, b

    def forward(self, x: Tensor, shared: bool = False) -> Tensor:
        """``x``: ``(S, B, ...)``, or ``(B, ...)`` fed to every member when ``shared``."""
        if self.size == 1:
            return self.single(x if shared else x[0]).unsqueeze(0)
        params, buffers = self._tensors()

        def call(p: dict[str, Tensor], b: dict[str, Tensor], xs: Tensor) -> Tensor:
            return functional_call(self._template, (p, b), (xs,))

        return vmap(call, in_dims=(0, 0, None if shared else 0), randomness="different")(params, buffers, x)

    # ---- per-seed views --------------------------------------------------------------------
    def stacked(self) -> dict[str, Tensor]:
        """Every parameter as an ``(S, ...)`` tensor (views: in-place edits change the model)."""
        if self.size == 1:
            return {n: p.unsqueeze(0) for n, p in self.single.named_parameters()}
        return self._tensors()[0]

    def stacked_grads(self) -> dict[str, Tensor]:
        """The gradient of every parameter that has one, as ``(S, ...)``."""
        if self.size == 1:
            return {n: p.grad.unsqueeze(0) for n, p in self.single.named_parameters() if p.grad is not None}
        return {n: p.grad for n, p in self._tensors()[0].items() if p.grad is not None}

    def stacked_of(self, kind: type[nn.Module] | tuple[type[nn.Module], ...], attr: str = "weight") -> Iterator[tuple[str, Tensor]]:
        """``(name, (S, ...) tensor)`` of attribute ``attr`` of every submodule of type ``kind``."""
        stacked = self.stacked()
        for mod_name, module in self._template.named_modules():
            name = f"{mod_name}.{attr}" if mod_name else attr
            if isinstance(module, kind) and name in stacked:
                yield name, stacked[name]

    def snapshot(self) -> dict[str, Tensor]:
        """A copy of all parameters and buffers as ``(S, ...)`` tensors."""
        if self.size == 1:
            return {n: t.detach().clone().unsqueeze(0) for n, t in self.single.state_dict().items()}
        p, b = self._tensors()
        return {n: t.detach().clone() for n, t in {**p, **b}.items()}

    @torch.no_grad()
    def copy_members(self, dst: dict[str, Tensor], src: dict[str, Tensor], members: list[int]) -> None:
        """``dst[name][s] = src[name][s]`` for the seeds ``members`` (snapshots or :meth:`live`)."""
        if not members:
            return
        idx = torch.tensor(members, device=next(iter(dst.values())).device)
        for name, t in dst.items():
            t.index_copy_(0, idx, src[name].detach().index_select(0, idx).to(t.dtype))

    def live(self) -> dict[str, Tensor]:
        """The model's own parameters and buffers as ``(S, ...)`` views (writable)."""
        if self.size == 1:
            return {n: t.unsqueeze(0) for n, t in self.single.state_dict(keep_vars=True).items()}
        p, b = self._tensors()
        return {**p, **b}

    def restore(self, snap: dict[str, Tensor], members: list[int] | None = None) -> None:
        """Load seeds ``members`` (default all) from a :meth:`snapshot`."""
        self.copy_members(self.live(), snap, list(range(self.size)) if members is None else members)

    def member_state_dict(self, s: int) -> dict[str, Tensor]:
        """State dict of seed ``s`` alone, loadable into the plain (unstacked) model."""
        return {n: t[s].detach().clone() for n, t in self.snapshot().items()}

    def member(self, s: int) -> nn.Module:
        """A plain module holding seed ``s``'s weights (a copy)."""
        if self.size == 1:
            return copy.deepcopy(self.single)
        module = copy.deepcopy(self._template).to_empty(device=next(self.parameters()).device)
        module.load_state_dict(self.member_state_dict(s))
        return module
