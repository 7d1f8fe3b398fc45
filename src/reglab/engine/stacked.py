"""Several seeds of one architecture trained at once, stacked in one module.

:class:`Stacked` holds S independently initialized copies of a model (independent seeds, not an
ensemble: nothing is averaged). With S = 1 it simply wraps
the model; with S > 1 it stacks every parameter and buffer along a new leading dimension
(``torch.func.stack_module_state``) and evaluates all copies in one call with
``torch.func.vmap(functional_call(...))``, which turns S small matrix products into one batched
product. Optimizers act elementwise, so one optimizer over the stacked tensors updates every seed
exactly as it would alone. Inputs and outputs carry the seed dimension first: ``(S, B, ...)``.

Direct path: vmap and functional_call cost Python work per call (tree flattening, swapping each
parameter in and out of the template), which for a small MLP on the CPU costs more than its matrix
products. A model that is an ``nn.Sequential`` of Flatten, Linear, BatchNorm1d, LayerNorm, elementwise
activations and :class:`~reglab.models.seeded.SeedDropout` layers (reglab's ``mlp`` with any of the
normalization and dropout techniques) is run instead layer by layer on the stacked tensors: a
batched product (``torch.baddbmm``) per Linear, BatchNorm as one ``F.batch_norm`` over the S x C
channels (per seed and channel, as alone), SeedDropout's masks from the same counter-based hash of
(key, call, position). The numbers are those of the vmap path to float rounding; any other model
runs under vmap.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from ..models.seeded import SeedDropout, hash_uniform

#: parameter-free elementwise modules the direct path applies to whole stacks as they are
ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Identity)


def _key(name: str) -> str:
    return name.replace(".", "__")


def direct_layers(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """``model``'s layers in order as ``(name, module)`` when the direct path can run it (an
    ``nn.Sequential``, nested ones flattened, of the layers the module docstring lists), else None."""
    if not isinstance(model, nn.Sequential):
        return None
    layers: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, nn.Sequential):
            continue
        if "." in name and not isinstance(model.get_submodule(name.rsplit(".", 1)[0]), nn.Sequential):
            return None  # a layer inside another kind of module
        ok = (
            (isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1)
            or isinstance(module, (nn.Linear, SeedDropout))
            or (type(module) in ELEMENTWISE)
            or (type(module) is nn.BatchNorm1d and module.affine and module.track_running_stats
                and module.momentum is not None)
            or (type(module) is nn.LayerNorm and len(module.normalized_shape) == 1 and module.elementwise_affine
                and module.bias is not None)
        )
        if not ok:
            return None
        layers.append((name, module))
    return layers


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
        layers = direct_layers(members[0])
        self._direct = None if layers is None else [(name, self._template.get_submodule(name)) for name, _ in layers]
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
        if self._direct is not None:
            return self._forward_direct(params, buffers, x, shared)

        def call(p: dict[str, Tensor], b: dict[str, Tensor], xs: Tensor) -> Tensor:
            return functional_call(self._template, (p, b), (xs,))

        return vmap(call, in_dims=(0, 0, None if shared else 0), randomness="different")(params, buffers, x)

    def _forward_direct(self, p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, shared: bool) -> Tensor:
        """The direct path (module docstring): the template's layers on whole ``(S, B, ...)`` stacks."""
        size = self.size
        h, stacked = x, not shared
        for name, layer in self._direct:
            if isinstance(layer, ELEMENTWISE):
                h = layer(h)
                continue
            if isinstance(layer, nn.Flatten):
                h = h.flatten(2 if stacked else 1)
                continue
            if not stacked:  # a per-seed layer: from here on every seed has its own activations
                h, stacked = h.expand(size, *h.shape), True
            if isinstance(layer, nn.Linear):
                w, bias = p[f"{name}.weight"].transpose(1, 2), p.get(f"{name}.bias")  # (S, in, out)
                flat = h.reshape(size, -1, h.shape[-1])
                out = torch.bmm(flat, w) if bias is None else torch.baddbmm(bias.unsqueeze(1), flat, w)
                h = out.reshape(*h.shape[:-1], out.shape[-1])
            elif isinstance(layer, nn.BatchNorm1d):  # per (seed, channel): one batch norm over S x C channels
                channels, rest = h.shape[2], h.shape[3:]
                flat = h.transpose(0, 1).reshape(h.shape[1], size * channels, *rest)
                if layer.training:
                    b[f"{name}.num_batches_tracked"].add_(1)
                out = F.batch_norm(flat, b[f"{name}.running_mean"].view(-1), b[f"{name}.running_var"].view(-1),
                                   p[f"{name}.weight"].reshape(-1), p[f"{name}.bias"].reshape(-1), layer.training,
                                   layer.momentum, layer.eps)
                h = out.reshape(h.shape[1], size, channels, *rest).transpose(0, 1)
            elif isinstance(layer, nn.LayerNorm):
                shape = (size,) + (1,) * (h.dim() - 2) + (h.shape[-1],)
                h = F.layer_norm(h, layer.normalized_shape, None, None, layer.eps)
                h = h * p[f"{name}.weight"].view(shape) + p[f"{name}.bias"].view(shape)
            elif layer.training and layer.p > 0:  # SeedDropout: each seed's own (key, call) hash
                calls = b[f"{name}.calls"]
                calls.add_(1)
                view = (size,) + (1,) * (h.dim() - 1)
                keep = hash_uniform(b[f"{name}.key"].view(view), calls.view(view), h.shape[1:], h.device) >= layer.p
                h = h * keep.to(h.dtype) / (1 - layer.p)
        return h if stacked else h.expand(size, *h.shape)

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
