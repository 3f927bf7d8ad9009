"""Structure groups: which weight slices and activations belong to each prunable structure.

A `Group` is one kind of structure in one place (the FFN neurons of layer 3, the heads of layer 0, the hidden
channels of the whole model). Its `slices` say where each structure's weights are (a parameter and the dim that
indexes structures), its `sites` where its activations are. Importance metrics turn either into one vector over
the group's "rows" and `Group.reduce` turns that into one score per structure: summed over each structure, as in
the paper. Groups are rebuilt after every physical pruning step, so they always describe the current tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .arch import get_adapter


@dataclass
class Group:
    """One prunable structure kind in one place.

    `kind` is 'hidden', 'heads', 'qk', 'v' or 'ffn'. Rows are laid out as `view`; for 'heads' the per-row scores
    of a head's dims are summed into one score per head.
    """

    name: str
    kind: str
    layer: int | None
    slices: list[tuple[nn.Parameter, int]]  # (param, dim indexing the rows)
    sites: list[tuple[nn.Module, str]] = field(default_factory=list)  # (module, 'input' | 'output'): last dim = rows
    view: tuple[int, ...] = ()

    def reduce(self, rows: torch.Tensor) -> torch.Tensor:
        """Per-row scores -> per-structure scores ([n] for hidden/ffn/heads, [heads, head_dim] for qk/v)."""
        rows = rows.reshape(self.view)
        return rows.sum(-1) if self.kind == "heads" else rows

    def row_scores(self, element_scores: dict[nn.Parameter, torch.Tensor]) -> torch.Tensor:
        """Sum elementwise scores over every slice, keeping the row dim (slices are unique (param, dim) pairs, so a
        tied weight counts once; a hidden -> hidden Linear counts on both sides)."""
        total = None
        for param, dim in self.slices:
            if param not in element_scores:
                continue
            score = element_scores[param]
            other = [d for d in range(score.dim()) if d != dim]
            score = score.sum(dim=other) if other else score
            total = score if total is None else total + score
        return total


def _unique(slices: list[tuple[nn.Parameter | None, int]]) -> list[tuple[nn.Parameter, int]]:
    out, seen = [], set()
    for param, dim in slices:
        if param is not None and (id(param), dim) not in seen:
            seen.add((id(param), dim))
            out.append((param, dim))
    return out


def build_groups(model: nn.Module) -> list[Group]:
    """All structure groups of `model` in its current shape."""
    adapter = get_adapter(model)
    groups = []
    for i, p in enumerate(adapter.layers(model)):
        heads, head_dim = p.attention.num_attention_heads, p.attention.attention_head_size
        qk = [(p.query.weight, 0), (p.query.bias, 0), (p.key.weight, 0), (p.key.bias, 0)]
        v = [(p.value.weight, 0), (p.value.bias, 0), (p.attn_out.weight, 1)]
        groups += [
            Group(f"layer{i}.heads", "heads", i, _unique(qk + v), [(p.query, "output"), (p.key, "output"),
                                                                  (p.attn_out, "input")], (heads, head_dim)),
            Group(f"layer{i}.qk", "qk", i, _unique(qk), [(p.query, "output"), (p.key, "output")], (heads, head_dim)),
            Group(f"layer{i}.v", "v", i, _unique(v), [(p.attn_out, "input")], (heads, head_dim)),
            Group(f"layer{i}.ffn", "ffn", i,
                  _unique([(p.ffn_in.weight, 0), (p.ffn_in.bias, 0), (p.ffn_out.weight, 1)]),
                  [(p.ffn_out, "input")], (p.ffn_in.out_features,)),
        ]
    hidden = adapter.hidden_parts(model)
    slices: list[tuple[nn.Parameter | None, int]] = []
    slices += [(e.weight, 1) for e in hidden.embeddings]
    slices += [(n.weight, 0) for n in hidden.norms] + [(n.bias, 0) for n in hidden.norms]
    slices += [(lin.weight, 0) for lin in hidden.out_linears] + [(lin.bias, 0) for lin in hidden.out_linears]
    slices += [(lin.weight, 1) for lin in hidden.in_linears]
    sites = [(n, "output") for n in hidden.norms]
    groups.append(Group("hidden", "hidden", None, _unique(slices), sites, (model.config.hidden_size,)))
    return groups


def prunable_parameters(groups: list[Group]) -> list[nn.Parameter]:
    """Every parameter some group scores (each once)."""
    out, seen = [], set()
    for g in groups:
        for param, _ in g.slices:
            if id(param) not in seen:
                seen.add(id(param))
                out.append(param)
    return out
