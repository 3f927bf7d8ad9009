"""Structure groups: which weight slices and activations belong to each prunable structure.

A `Group` is one kind of structure in one place (the FFN neurons of layer 3, the heads of layer 0, the hidden
channels of the whole model). Each of its `slices` is a parameter, the dim that indexes structures, and a map from
each index along that dim to a structure (-1: not this group's, e.g. the key rows of a fused q/k/v weight in the
query-dims group). `sites` are the activations of the group's structures, mapped the same way. Importance metrics
turn either into one score per structure by summing over each structure, as in the paper. Groups are rebuilt after
every physical pruning step, so they always describe the current tensors.

Kinds: 'hidden' (channels of the residual stream), 'ffn' (neurons), 'heads' (query heads, with their keys and
values in multi-head attention), 'kv' (key/value heads under grouped-query attention, with every query head of the
group), 'qk' and 'v' (per-head dims, [heads, head_dim]; only where head dims may be pruned).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..arch import ArchAdapter, get_adapter
from ..arch.modules import channel_slices, in_features, in_slices, out_features, out_slices


@dataclass
class Group:
    """One prunable structure kind in one place; scores come out shaped `view`."""

    name: str
    kind: str
    layer: int | None
    slices: list[tuple[nn.Parameter, int, torch.Tensor]]  # (param, dim, structure id of each index along dim)
    sites: list[tuple[nn.Module, str, torch.Tensor]] = field(default_factory=list)  # (module, 'input'|'output', ids)
    view: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return int(torch.tensor(self.view).prod())

    def collect(self, rows: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Sum per-index values into per-structure scores: `rows` holds (values along a dim, structure ids)."""
        device = rows[0][0].device if rows else None
        total = torch.zeros(self.size, dtype=torch.float32, device=device)
        for values, ids in rows:
            self.accumulate(total, values, ids)
        return total.reshape(self.view)

    @staticmethod
    def accumulate(total: torch.Tensor, values: torch.Tensor, ids: torch.Tensor) -> None:
        """Add per-index `values` into the flat per-structure `total` (ids -1: not this group's)."""
        ids = ids.to(values.device)
        keep = ids >= 0
        total.index_add_(0, ids[keep], values.float()[keep])

    def row_scores(self, element_scores: dict[nn.Parameter, torch.Tensor]) -> torch.Tensor:
        """Elementwise scores summed over each structure's weights (each (param, dim) once, so a tied weight counts
        once; a hidden -> hidden projection counts on both sides)."""
        rows = []
        for param, dim, ids in self.slices:
            if param not in element_scores:
                continue
            score = element_scores[param]
            other = [d for d in range(score.dim()) if d != dim]
            rows.append((score.sum(dim=other) if other else score, ids))
        return self.collect(rows)


def _ids_for(slices: list[tuple[nn.Parameter, int]], ids: torch.Tensor) -> list[tuple[nn.Parameter, int, torch.Tensor]]:
    return [(p, d, ids) for p, d in slices]


def _block(total: int, offset: int, ids: torch.Tensor) -> torch.Tensor:
    """Structure ids for a module's `total` features, `ids` placed at `offset`, -1 elsewhere."""
    out = torch.full((total,), -1, dtype=torch.long)
    out[offset:offset + len(ids)] = ids
    return out


def _merge(entries: list[tuple[nn.Parameter, int, torch.Tensor]]) -> list[tuple[nn.Parameter, int, torch.Tensor]]:
    """One entry per (param, dim): the parts of a fused weight combined (ids of different parts never overlap)."""
    merged: dict[tuple[int, int], list] = {}
    for param, dim, ids in entries:
        key = (id(param), dim)
        if key in merged:
            old = merged[key][2]
            merged[key][2] = torch.where(ids >= 0, ids, old)
        else:
            merged[key] = [param, dim, ids.clone()]
    return [tuple(v) for v in merged.values()]


def layer_groups(adapter, parts, index: int) -> list[Group]:
    """The groups of one transformer layer."""
    heads, kv_heads, head_dim = adapter.attention_dims(parts)
    size = heads * head_dim
    kv_size = kv_heads * head_dim
    group = heads // kv_heads
    dim_ids = torch.arange(size)  # (head, dim) pairs of query heads, head-major
    head_of_row = dim_ids // head_dim
    kv_dim_ids = torch.arange(kv_size)
    kv_of_row = kv_dim_ids // head_dim

    def out_entries(proj, ids):
        total = out_features(proj.module)
        return _ids_for(out_slices(proj.module), _block(total, proj.offset, ids))

    q, k, v = parts.q, parts.k, parts.v
    o_in = in_slices(parts.o)
    groups = []
    grouped = kv_heads != heads
    if grouped:
        # Query heads score on their own rows; a key/value head on its rows and those of every query head it serves.
        heads_slices = out_entries(q, head_of_row) + _ids_for(o_in, head_of_row)
        kv_slices = (out_entries(q, head_of_row // group) + _ids_for(o_in, head_of_row // group)
                     + out_entries(k, kv_of_row) + out_entries(v, kv_of_row))
        groups.append(Group(f"layer{index}.kv", "kv", index, _merge(kv_slices),
                            [(q.module, "output", _block(out_features(q.module), q.offset, head_of_row // group)),
                             (parts.o, "input", head_of_row // group)], (kv_heads,)))
    else:
        heads_slices = (out_entries(q, head_of_row) + out_entries(k, head_of_row) + out_entries(v, head_of_row)
                        + _ids_for(o_in, head_of_row))
    groups.append(Group(f"layer{index}.heads", "heads", index, _merge(heads_slices),
                        [(q.module, "output", _block(out_features(q.module), q.offset, head_of_row)),
                         (parts.o, "input", head_of_row)], (heads,)))
    if adapter.prunes_head_dim and not grouped:
        qk_slices = out_entries(q, dim_ids) + out_entries(k, dim_ids)
        v_slices = out_entries(v, dim_ids) + _ids_for(o_in, dim_ids)
        groups += [
            Group(f"layer{index}.qk", "qk", index, _merge(qk_slices),
                  [(q.module, "output", _block(out_features(q.module), q.offset, dim_ids)),
                   (k.module, "output", _block(out_features(k.module), k.offset, dim_ids))], (heads, head_dim)),
            Group(f"layer{index}.v", "v", index, _merge(v_slices), [(parts.o, "input", dim_ids)], (heads, head_dim)),
        ]
    n = in_features(parts.ffn_out)  # the neurons (a fused gate/up projection holds two sets of rows)
    ffn_ids = torch.arange(n)
    ffn_slices = [e for p in parts.ffn_in for e in out_entries(p, ffn_ids)] + _ids_for(in_slices(parts.ffn_out), ffn_ids)
    groups.append(Group(f"layer{index}.ffn", "ffn", index, _merge(ffn_slices),
                        [(parts.ffn_out, "input", ffn_ids)], (n,)))
    return groups


def build_groups(model: nn.Module, adapter: ArchAdapter | None = None, layer_ids: list[int] | None = None
                 ) -> list[Group]:
    """All structure groups of `model` in its current shape. Layer groups are named by `layer_ids` (the teacher
    layer each current layer came from, when layers were removed; default: their positions), so names and
    statistics keyed by them stay in teacher coordinates."""
    adapter = adapter or get_adapter(model)
    groups = []
    for i, parts in enumerate(adapter.layers(model)):
        groups += layer_groups(adapter, parts, i if layer_ids is None else int(layer_ids[i]))
    hidden = adapter.hidden_parts(model)
    width = model.config.hidden_size
    ids = torch.arange(width)
    entries = []
    for m in hidden.embeddings + hidden.norms:
        entries += _ids_for(channel_slices(m), ids)
    for m in hidden.outputs:
        entries += _ids_for(out_slices(m), ids)
    for m in hidden.inputs:
        entries += _ids_for(in_slices(m), ids)
    sites = [(n, "output", ids) for n in hidden.norms]
    groups.append(Group("hidden", "hidden", None, _merge(entries), sites, (width,)))
    return groups


def prunable_parameters(groups: list[Group]) -> list[nn.Parameter]:
    """Every parameter some group scores (each once)."""
    out, seen = [], set()
    for g in groups:
        for param, _, _ in g.slices:
            if id(param) not in seen:
                seen.add(id(param))
                out.append(param)
    return out
