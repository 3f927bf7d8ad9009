"""Pruning by masks: full-size tensors, pruned structures masked, computing exactly what the physically pruned model
computes (tested to 1e-5 against `surgery.prune_model` over random shapes).

Used where weights cannot be re-shaped during training (DDP, FSDP, DeepSpeed) and for `--pruning_mode masks`.
What exactness takes, per structure:
- FFN neurons: the FFN output projection's input is masked.
- Heads and value dims: the attention output projection's input (the per-head context) is masked.
- Query/key dims: the query is masked, so masked dims add nothing to q . k; the softmax scale stays the teacher's,
  as in physical training (the export folds the scale into the query weights).
- Hidden channels: every LayerNorm on the residual stream normalises over the kept channels only and writes zeros
  elsewhere, and every Linear writing the residual stream has its masked output rows zeroed, so masked channels are
  zero wherever they are read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arch import get_adapter
from .state import PruningState


def _dense_mask(kept: torch.Tensor, size: int, like: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(size, dtype=like.dtype, device=like.device)
    mask[kept.to(like.device)] = 1
    return mask


def _head_mask(heads: torch.Tensor, dims: torch.Tensor, num_heads: int, head_dim: int, like: torch.Tensor):
    rows = (heads[:, None] * head_dim + dims).reshape(-1)
    return _dense_mask(rows, num_heads * head_dim, like)


class Masker:
    """Installs forward hooks that mask a model to a `PruningState` (teacher coordinates = the model's)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.adapter = get_adapter(model)
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.state: PruningState | None = None

    def apply(self, state: PruningState) -> None:
        """Mask the model to `state` (replacing any previous masks)."""
        self.remove()
        self.state = state
        layers = self.adapter.layers(self.model)
        config = self.model.config
        full_hidden = config.hidden_size
        like = next(self.model.parameters())
        for parts, keep in zip(layers, state.layers, strict=True):
            num_heads, head_dim = parts.attention.num_attention_heads, parts.attention.attention_head_size
            if len(keep.ffn) < parts.ffn_in.out_features:
                self._mask_input(parts.ffn_out, _dense_mask(keep.ffn, parts.ffn_in.out_features, like))
            ctx = _head_mask(keep.heads, keep.v, num_heads, head_dim, like)
            if ctx.sum() < ctx.numel():
                self._mask_input(parts.attn_out, ctx)
            q = _head_mask(keep.heads, keep.qk, num_heads, head_dim, like)
            if q.sum() < q.numel():
                self._mask_output(parts.query, q)
        if len(state.hidden) < full_hidden:
            hidden = self.adapter.hidden_parts(self.model)
            mask = _dense_mask(state.hidden, full_hidden, like)
            kept = state.hidden.to(like.device)
            for norm in hidden.norms:
                self.handles.append(norm.register_forward_hook(_masked_norm_hook(kept)))
            seen = set()
            for linear in hidden.out_linears:
                if id(linear) not in seen:
                    seen.add(id(linear))
                    self._mask_output(linear, mask)

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
    """LayerNorm over the kept channels only, zeros elsewhere: what the sliced LayerNorm computes."""

    def hook(norm: nn.LayerNorm, args, output):
        x = args[0]
        idx = kept.to(x.device)
        sub = F.layer_norm(x.index_select(-1, idx), (len(idx),), norm.weight.index_select(0, idx),
                           norm.bias.index_select(0, idx) if norm.bias is not None else None, norm.eps)
        return torch.zeros_like(output).index_copy(-1, idx, sub)

    return hook
