"""Physical pruning: slice weights, biases, norms and (tied) embeddings in place, keeping dtype and device, and
update module attributes and the config in the same pass. Generic over families: the adapter says which modules
hold which structures (`Proj` parts of fused projections included), `modules` how each module type is sliced.

Parameters stay the same `nn.Parameter` objects (only `.data` and `.grad` change), so an optimizer built over them
keeps working; listeners (`on_slice`) let the optimizer state and importance buffers follow each slice. A weight
shared by two modules (the tied MLM decoder) is sliced once.

During training the attention keeps the teacher's softmax scale: pruned query/key dims simply stop contributing.
`finalize_attention_scale` folds the scale change into the query weights at export, where a stock config implies
the family's scale for the new head size (`adapter.stock_scaling`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..arch import ArchAdapter, Shape, get_adapter
from ..arch.modules import Proj, channel_slices, head_rows, in_slices, out_slices, set_sizes
from .state import Selection

SliceListener = Callable[[nn.Parameter, int, torch.Tensor, torch.Size], None]


class _Slicer:
    """Slices each (parameter, dim) once and tells the listeners."""

    def __init__(self, listeners: Iterable[SliceListener]):
        self.listeners = list(listeners)
        self.done: set[tuple[int, int]] = set()

    @torch.no_grad()
    def __call__(self, param: nn.Parameter | None, dim: int, index: torch.Tensor) -> None:
        if param is None or (id(param), dim) in self.done:
            return
        self.done.add((id(param), dim))
        old_shape = param.shape
        if index.numel() == old_shape[dim] and torch.equal(index.cpu(), torch.arange(old_shape[dim])):
            return  # nothing to remove along this dim
        index = index.to(param.device)
        grad = param.grad
        param.grad = None  # a grad of the old shape cannot sit on the new data
        param.data = param.data.index_select(dim, index).contiguous()
        if grad is not None:
            param.grad = grad.index_select(dim, index).contiguous()
        for listener in self.listeners:
            listener(param, dim, index, old_shape)


def _slice_out(slicer: _Slicer, module: nn.Module, index: torch.Tensor) -> None:
    for param, dim in out_slices(module):
        slicer(param, dim, index)
    set_sizes(module)


def _slice_in(slicer: _Slicer, module: nn.Module, index: torch.Tensor) -> None:
    for param, dim in in_slices(module):
        slicer(param, dim, index)
    set_sizes(module)


def _slice_channels(slicer: _Slicer, module: nn.Module, index: torch.Tensor) -> None:
    for param, dim in channel_slices(module):
        slicer(param, dim, index)
    set_sizes(module)


def _slice_projections(slicer: _Slicer, parts: list[tuple[Proj, torch.Tensor]]) -> None:
    """Slice the output features of projections, each given as (its part of a module, the rows kept in that part);
    the parts of one fused module are sliced together, in offset order."""
    by_module: dict[int, list[tuple[Proj, torch.Tensor]]] = {}
    for proj, rows in parts:
        by_module.setdefault(id(proj.module), []).append((proj, rows))
    for entries in by_module.values():
        entries.sort(key=lambda e: e[0].offset)
        _slice_out(slicer, entries[0][0].module, torch.cat([rows + proj.offset for proj, rows in entries]))


def prune_model(model: nn.Module, selection: Selection, listeners: Iterable[SliceListener] = (),
                adapter: ArchAdapter | None = None) -> None:
    """Keep only the selected structures of `model`, in place; module attributes and the config's widths follow.

    `selection` holds positions in the model's current tensors and layers (see `state.selection_between`);
    removed layers' parameters simply leave the model (an optimizer over them must drop them:
    `depth.optimizer_dropper`).
    """
    adapter = adapter or get_adapter(model)
    slicer = _Slicer(listeners)
    if selection.depth is not None:  # whole layers first (faded to the identity by now, see depth.py)
        adapter.remove_layers(model, selection.depth.tolist())
    layers = adapter.layers(model)
    if len(layers) != len(selection.layers):
        raise ValueError(f"selection has {len(selection.layers)} layers, the model {len(layers)}")

    for parts, sel in zip(layers, selection.layers, strict=True):
        heads, kv_heads, head_dim = adapter.attention_dims(parts)
        q_rows = head_rows(sel.heads, sel.qk, head_dim)
        o_cols = head_rows(sel.heads, sel.v, head_dim)
        if kv_heads != heads:  # grouped-query attention: keys and values follow the kept groups, all their dims
            full = torch.arange(head_dim).repeat(len(sel.kv), 1)
            k_rows = v_rows = head_rows(sel.kv, full, head_dim)
        else:
            k_rows, v_rows = q_rows, o_cols
        _slice_projections(slicer, [(parts.q, q_rows), (parts.k, k_rows), (parts.v, v_rows)])
        _slice_in(slicer, parts.o, o_cols)
        adapter.set_attention(parts, heads=len(sel.heads), kv_heads=len(sel.kv), head_dim=sel.qk.shape[1])
        _slice_projections(slicer, [(proj, sel.ffn) for proj in parts.ffn_in])
        _slice_in(slicer, parts.ffn_out, sel.ffn)

    hidden = adapter.hidden_parts(model)
    for module in hidden.embeddings + hidden.norms:
        _slice_channels(slicer, module, selection.hidden)
    for module in hidden.outputs:
        _slice_out(slicer, module, selection.hidden)
    for module in hidden.inputs:
        _slice_in(slicer, module, selection.hidden)

    shape = adapter.shape_of(model.config)
    if selection.layers:
        first = selection.layers[0]
        shape = Shape(len(selection.hidden), len(first.heads), first.qk.shape[1], len(first.ffn), len(first.kv))
    else:
        shape = Shape(len(selection.hidden), shape.heads, shape.head_dim, shape.intermediate, shape.kv_heads)
    adapter.write_config(model.config, shape)


@torch.no_grad()
def finalize_attention_scale(model: nn.Module) -> None:
    """Give every attention layer the stock scale of its head size, folding the difference into the query weights
    so that the function is unchanged: q' . k * s_new == q . k * s_old with q' = q * s_old / s_new."""
    adapter = get_adapter(model)
    for parts in adapter.layers(model):
        stock = adapter.stock_scaling(parts)
        attn = parts.attention
        if stock is None or attn.scaling == stock:
            continue
        factor = attn.scaling / stock
        heads, _, head_dim = adapter.attention_dims(parts)
        for param, dim in out_slices(parts.q.module):  # the query rows only (a fused projection holds k, v too)
            param.data.narrow(dim, parts.q.offset, heads * head_dim).mul_(factor)
        attn.scaling = stock


def optimizer_slicer(optimizer: torch.optim.Optimizer) -> SliceListener:
    """A listener that slices the optimizer's per-parameter state (e.g. Adam moments) along with the parameter."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer

    def listener(param: nn.Parameter, dim: int, index: torch.Tensor, old_shape: torch.Size) -> None:
        state = inner.state.get(param)
        if not state:
            return
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == old_shape:
                state[key] = value.index_select(dim, index.to(value.device)).contiguous()

    return listener
