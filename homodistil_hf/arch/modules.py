"""Per-module-type facts that surgery, masking and importance share: which (parameter, dim) pairs index a module's
output features, its input features or its channels, how to write the new sizes into the module's attributes, and
how a norm computes over a subset of its channels.

Chosen by type, so the pruning code stays generic over `nn.Linear` ([out, in] weights), transformers' `Conv1D`
([in, out] weights, GPT-2), `nn.LayerNorm` (with or without bias), RMSNorm-style norms (a weight only; Llama, Mistral,
Qwen) and `nn.Embedding`. A fused projection (GPT-2's `c_attn` holds q, k and v) is one module whose output features
several structures share, each at an offset (`Proj`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D


@dataclass
class Proj:
    """The output features [offset, offset + size) of `module` that one structure kind owns (all of them for an
    unfused projection)."""

    module: nn.Module
    offset: int = 0


def head_rows(heads: torch.Tensor, dims: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Row indices into a head-major q / k / v weight ([heads x head_dim] rows) of the kept (head, dim) pairs:
    `heads` [a] kept head indices, `dims` [a, d] kept dims of each, -> [a * d] rows."""
    return (heads[:, None] * head_dim + dims).reshape(-1)


def is_rms_norm(module: nn.Module) -> bool:
    """RMSNorm-style: a scale `weight`, no bias, normalising over the last dim (LlamaRMSNorm, Qwen3RMSNorm, ...)."""
    return type(module).__name__.endswith("RMSNorm") and isinstance(getattr(module, "weight", None), nn.Parameter)


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or is_rms_norm(module)


def out_slices(module: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """(parameter, dim) pairs indexed by the module's output features."""
    if isinstance(module, nn.Linear):
        return [(module.weight, 0)] + ([(module.bias, 0)] if module.bias is not None else [])
    if isinstance(module, Conv1D):
        return [(module.weight, 1), (module.bias, 0)]
    raise TypeError(f"{type(module).__name__} is not a projection this package can slice (Linear, Conv1D)")


def in_slices(module: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """(parameter, dim) pairs indexed by the module's input features."""
    if isinstance(module, nn.Linear):
        return [(module.weight, 1)]
    if isinstance(module, Conv1D):
        return [(module.weight, 0)]
    raise TypeError(f"{type(module).__name__} is not a projection this package can slice (Linear, Conv1D)")


def channel_slices(module: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """(parameter, dim) pairs of a norm's or an embedding's channels (the hidden width)."""
    if isinstance(module, nn.Embedding):
        return [(module.weight, 1)]
    if is_norm(module):
        bias = getattr(module, "bias", None)
        return [(module.weight, 0)] + ([(bias, 0)] if isinstance(bias, nn.Parameter) else [])
    raise TypeError(f"{type(module).__name__} has no channel dimension this package can slice")


def out_features(module: nn.Module) -> int:
    return module.weight.shape[0] if isinstance(module, nn.Linear) else module.weight.shape[1]


def in_features(module: nn.Module) -> int:
    return module.weight.shape[1] if isinstance(module, nn.Linear) else module.weight.shape[0]


def set_sizes(module: nn.Module) -> None:
    """Write the (already sliced) weight shapes into the module's size attributes."""
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, Conv1D):
        module.nx, module.nf = module.weight.shape
    elif isinstance(module, nn.Embedding):
        module.embedding_dim = module.weight.shape[1]
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = (module.weight.shape[0],)
    # RMSNorm-style norms read their size from the weight itself.


def norm_over(norm: nn.Module, x: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """What `norm` sliced to the channels `kept` computes on `x[..., kept]` (the masked form of a sliced norm)."""
    sub = x.index_select(-1, kept)
    weight = norm.weight.index_select(0, kept)
    if isinstance(norm, nn.LayerNorm):
        bias = norm.bias.index_select(0, kept) if norm.bias is not None else None
        return F.layer_norm(sub, (len(kept),), weight, bias, norm.eps)
    # RMSNorm: the module's own forward on the sub-tensor with the sub-weight, so any variant (offset, dtype casts)
    # computes exactly what the sliced module would. A shallow copy holds the sub-weight, and `forward` is called
    # directly, so this module's hooks (the mask itself) do not run again.
    clone = copy.copy(norm)
    clone._parameters = {**norm._parameters, "weight": weight}
    return clone.forward(sub)
