"""Sharded parameters (FSDP2's `fully_shard`: DTensor parameters and gradients, each rank holding a slice).

Per-structure statistics are sums, so each rank sums what its shard holds and one all-reduce gives every rank the
full, identical scores: no rank ever materialises a full weight or gradient for importance. Masks act on
activations, which FSDP all-gathers parameters to compute, so masking needs nothing here. Export gathers a full
state dict (every rank takes part) and builds the compact model on one process.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn

try:  # torch >= 2.4
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
except ImportError:  # pragma: no cover - builds without distributed support
    DTensor = None


def is_sharded(tensor: torch.Tensor | None) -> bool:
    return DTensor is not None and isinstance(tensor, DTensor)


def any_sharded(model: nn.Module) -> bool:
    return any(is_sharded(p) for p in model.parameters())


def local(param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, ...]]:
    """(this rank's slice of the weight, of its gradient, the slice's offset along each dim)."""
    grad = param.grad
    if not is_sharded(param):
        return param.detach(), grad, (0,) * param.dim()
    _, offset = compute_local_shape_and_global_offset(param.shape, param.device_mesh, param.placements)
    local_grad = grad.to_local() if is_sharded(grad) else grad
    return param.to_local().detach(), local_grad, tuple(offset)


def narrow_to(full: torch.Tensor, dim: int, offset: int, size: int) -> torch.Tensor:
    """A full-size vector (or a broadcastable mask) cut to a shard's slice along `dim`."""
    if full.dim() == 1:
        return full[offset:offset + size]
    return full.narrow(dim, offset, size) if full.shape[dim] != 1 else full


def all_reduce_sum(tensors: list[torch.Tensor]) -> None:
    """Sum each tensor over all ranks, in place (one flat all-reduce)."""
    if not tensors or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
        t.copy_(part.view_as(t))


def full_copy(model: nn.Module, keep: bool = True) -> nn.Module | None:
    """A plain (unsharded) copy of a model whose parameters may be DTensors: every rank must call it (the
    gathers are collective); the ranks that `keep` it get the copy, on the CPU, the others None (they hold one
    gathered tensor at a time, never the full model)."""
    if not any_sharded(model):
        return copy.deepcopy(model) if keep else None
    state = {}
    for name, tensor in model.state_dict().items():
        full = tensor.full_tensor() if is_sharded(tensor) else tensor
        if keep:
            state[name] = full.detach().cpu()
        del full
    if not keep:
        return None
    # fully_shard swaps the class for a subclass (FSDP<Name>): build the model's own class, for real on the CPU (a
    # meta build would leave non-persistent buffers such as rotary frequencies empty).
    cls = next(c for c in type(model).__mro__ if not c.__name__.startswith("FSDP"))
    plain = cls(copy.deepcopy(model.config))
    plain.load_state_dict(state, strict=False)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    for name, p in plain.named_parameters():
        p.requires_grad_(name not in frozen)  # (a fresh model trains everything)
    return plain.to(dtype=next(iter(state.values())).dtype)
