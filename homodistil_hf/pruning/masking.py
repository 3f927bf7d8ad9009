"""Pruning by masks: full-size tensors, pruned structures masked, computing exactly what the physically pruned model
computes (tested to 1e-5 against `surgery.prune_model` over random shapes and families).

Used where weights cannot be re-shaped during training (DDP, FSDP) and for `--pruning_mode masks`.
What exactness takes, per structure:
- FFN neurons: the FFN output projection's input is masked.
- Heads, key/value heads and value dims: the attention output projection's input (the per-head context) is masked.
- Query/key dims: the query is masked, so masked dims add nothing to q . k; the softmax scale stays the teacher's,
  as in physical training (the export folds the scale into the query weights).
- Hidden channels: every norm on the residual stream normalises over the kept channels only and writes zeros
  elsewhere, and every module writing the residual stream (embeddings included) has its masked channels zeroed, so
  masked channels are zero wherever they are read.
"""

from __future__ import annotations

import torch
from torch import nn

from ..arch import ArchAdapter, get_adapter
from ..arch.modules import head_rows, in_features, norm_over, out_features
from .sharding import is_sharded
from .state import PruningState


def _dense_mask(kept: torch.Tensor, size: int, like: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(size, dtype=like.dtype, device=like.device)
    mask[kept.to(like.device)] = 1
    return mask


class Masker:
    """Installs forward hooks that mask a model to a `PruningState` (teacher coordinates = the model's)."""

    def __init__(self, model: nn.Module, adapter: ArchAdapter | None = None):
        self.model = model
        self.adapter = adapter or get_adapter(model)
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.state: PruningState | None = None

    def apply(self, state: PruningState) -> None:
        """Mask the model to `state` (replacing any previous masks)."""
        self.remove()
        self.state = state
        like = next(self.model.parameters())
        for parts, keep in zip(self.adapter.layers(self.model), state.layers, strict=True):
            heads, _, head_dim = self.adapter.attention_dims(parts)
            width = heads * head_dim
            neurons = in_features(parts.ffn_out)
            if len(keep.ffn) < neurons:
                self._mask_input(parts.ffn_out, _dense_mask(keep.ffn, neurons, like))
            ctx = _dense_mask(head_rows(keep.heads, keep.v, head_dim), width, like)
            if ctx.sum() < ctx.numel():
                self._mask_input(parts.o, ctx)
            q = _dense_mask(head_rows(keep.heads, keep.qk, head_dim), width, like)
            if q.sum() < q.numel():
                # A fused projection's other parts (keys, values) pass through unmasked.
                full = torch.ones(out_features(parts.q.module), dtype=like.dtype, device=like.device)
                full[parts.q.offset:parts.q.offset + width] = q
                self._mask_output(parts.q.module, full)
        hidden = self.adapter.hidden_parts(self.model)
        full_hidden = self.model.config.hidden_size
        if len(state.hidden) < full_hidden:
            mask = _dense_mask(state.hidden, full_hidden, like)
            kept = state.hidden.to(like.device)
            for norm in hidden.norms:
                self.handles.append(norm.register_forward_hook(_masked_norm_hook(kept)))
            seen = set()
            for module in hidden.outputs + hidden.embeddings:
                if id(module) not in seen:
                    seen.add(id(module))
                    self._mask_output(module, mask)

    def _mask_input(self, module: nn.Module, mask: torch.Tensor) -> None:
        def hook(mod, args):
            return (args[0] * mask.to(args[0].dtype),) + tuple(args[1:])

        self.handles.append(module.register_forward_pre_hook(hook))

    def _mask_output(self, module: nn.Module, mask: torch.Tensor) -> None:
        def hook(mod, args, output):
            return output * mask.to(output.dtype)

        self.handles.append(module.register_forward_hook(hook))

    def remove(self) -> None:
        """Remove all hooks (the model computes its full function again)."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _masked_norm_hook(kept: torch.Tensor):
    """The norm over the kept channels only, zeros elsewhere: what the sliced norm computes."""

    def hook(norm: nn.Module, args, output):
        x = args[0]
        idx = kept.to(x.device)
        return torch.zeros_like(output).index_copy(-1, idx, norm_over(_plain(norm), x, idx).to(output.dtype))

    return hook


def _plain(norm: nn.Module) -> nn.Module:
    """`norm` as `norm_over` can use it when FSDP2 wrapped it as a module of its own (accelerate puts the final norm
    in a group of its own): `fully_shard` swaps the class for `FSDP<Class>`, whose `__new__` re-runs `__init__`, so
    the shallow copy `norm_over` makes would fail. A view of the original class over the same state is used instead,
    with full parameters (a resharded DTensor parameter is gathered; every rank runs the same forward)."""
    cls = type(norm)
    if not cls.__name__.startswith("FSDP"):
        return norm
    orig = next(c for c in cls.__mro__ if not c.__name__.startswith("FSDP"))
    view = orig.__new__(orig)
    view.__dict__.update(norm.__dict__)
    view.__dict__["_parameters"] = {k: v.full_tensor() if is_sharded(v) else v for k, v in norm._parameters.items()}
    return view
