"""Physical pruning: slice weights, biases, LayerNorms and (tied) embeddings in place, keeping dtype and device, and
update module attributes and the config in the same pass.

Parameters stay the same `nn.Parameter` objects (only `.data` and `.grad` change), so an optimizer built over them
keeps working; listeners (`on_slice`) let the optimizer state and importance buffers follow each slice. A weight
shared by two modules (the tied MLM decoder) is sliced once.

During training the attention keeps the teacher's softmax scale: pruned query/key dims simply stop contributing.
`finalize_attention_scale` folds the scale change into the query weights at export, where a stock config implies
`head_dim ** -0.5`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .arch import get_adapter
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


def _slice_linear(slicer: _Slicer, linear: nn.Linear, rows: torch.Tensor | None = None,
                  cols: torch.Tensor | None = None) -> None:
    if rows is not None:
        slicer(linear.weight, 0, rows)
        slicer(linear.bias, 0, rows)
        linear.out_features = len(rows)
    if cols is not None:
        slicer(linear.weight, 1, cols)
        linear.in_features = len(cols)


def _slice_norm(slicer: _Slicer, norm: nn.LayerNorm, index: torch.Tensor) -> None:
    slicer(norm.weight, 0, index)
    slicer(norm.bias, 0, index)
    norm.normalized_shape = (len(index),)


def _slice_embedding(slicer: _Slicer, emb: nn.Embedding, index: torch.Tensor) -> None:
    slicer(emb.weight, 1, index)
    emb.embedding_dim = len(index)


def _head_rows(heads: torch.Tensor, dims: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Row indices of q/k/v weights for the kept (head, dim) pairs; rows are laid out head-major."""
    return (heads[:, None] * head_dim + dims).reshape(-1)


def prune_model(model: nn.Module, selection: Selection, listeners: Iterable[SliceListener] = ()) -> None:
    """Keep only the selected structures of `model`, in place; the config's widths follow.

    `selection` holds positions in the model's current tensors (see `state.selection_between`).
    """
    adapter = get_adapter(model)
    slicer = _Slicer(listeners)
    layers = adapter.layers(model)
    if len(layers) != len(selection.layers):
        raise ValueError(f"selection has {len(selection.layers)} layers, the model {len(layers)}")

    for parts, sel in zip(layers, selection.layers, strict=True):
        attn = parts.attention
        head_dim = attn.attention_head_size
        qk_rows = _head_rows(sel.heads, sel.qk, head_dim)
        v_rows = _head_rows(sel.heads, sel.v, head_dim)
        _slice_linear(slicer, parts.query, rows=qk_rows)
        _slice_linear(slicer, parts.key, rows=qk_rows)
        _slice_linear(slicer, parts.value, rows=v_rows)
        _slice_linear(slicer, parts.attn_out, cols=v_rows)
        attn.num_attention_heads = len(sel.heads)
        attn.attention_head_size = sel.qk.shape[1]
        attn.all_head_size = attn.num_attention_heads * attn.attention_head_size
        _slice_linear(slicer, parts.ffn_in, rows=sel.ffn)
        _slice_linear(slicer, parts.ffn_out, cols=sel.ffn)

    hidden = adapter.hidden_parts(model)
    for emb in hidden.embeddings:
        _slice_embedding(slicer, emb, selection.hidden)
    for norm in hidden.norms:
        _slice_norm(slicer, norm, selection.hidden)
    for linear in hidden.out_linears:
        _slice_linear(slicer, linear, rows=selection.hidden)
    for linear in hidden.in_linears:
        _slice_linear(slicer, linear, cols=selection.hidden)

    first = selection.layers[0] if selection.layers else None
    adapter.write_config(
        model.config,
        hidden=len(selection.hidden),
        heads=len(first.heads) if first is not None else model.config.num_attention_heads,
        intermediate=len(first.ffn) if first is not None else model.config.intermediate_size,
    )


@torch.no_grad()
def finalize_attention_scale(model: nn.Module) -> None:
    """Give every attention layer the stock scale `head_dim ** -0.5`, folding the difference into the query weights
    so that the function is unchanged: q' . k * s_new == q . k * s_old with q' = q * s_old / s_new."""
    for parts in get_adapter(model).layers(model):
        attn = parts.attention
        stock = attn.attention_head_size**-0.5
        if attn.scaling != stock:
            factor = attn.scaling / stock
            parts.query.weight.mul_(factor)
            if parts.query.bias is not None:
                parts.query.bias.mul_(factor)
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
