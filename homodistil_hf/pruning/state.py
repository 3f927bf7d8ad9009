"""`PruningState`: which structures of the teacher the student still has, in the teacher's coordinates.

The state is the single source of truth shared by both ways of pruning: physical surgery (the student's tensors hold
exactly these structures, in this order) and masks (full-size tensors, everything else masked). It is also what the
distillation losses use to pair each kept student channel and head with the teacher's original, and what a checkpoint
stores to resume.

Depth: `depth` lists the teacher layers the student still has (None: all of them) and `fading` those of them chosen
for removal whose residual branches are being faded out (see `depth.py`). `layers` always has one entry per teacher
layer; the entries of removed layers are left as they were at removal and mean nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from ..arch import Shape


@dataclass
class LayerKeep:
    """Kept structures of one layer, in the teacher's coordinates (each index list sorted)."""

    heads: torch.Tensor  # [a] kept (query) heads
    qk: torch.Tensor  # [a, d] kept query/key dims of each kept head
    v: torch.Tensor  # [a, d] kept value dims of each kept head (with the output projection's columns)
    ffn: torch.Tensor  # [f] kept FFN neurons
    kv: torch.Tensor | None = None  # [g] kept key/value heads (grouped-query attention); None: the same as `heads`

    def __post_init__(self):
        if self.kv is None:
            self.kv = self.heads


@dataclass
class PruningState:
    """Kept hidden channels and per-layer structures, in the teacher's coordinates."""

    hidden: torch.Tensor
    layers: list[LayerKeep]
    depth: torch.Tensor | None = None  # [L'] kept teacher layers, sorted; None: all
    fading: torch.Tensor | None = None  # kept teacher layers being faded out (a subset of depth); None: none

    @property
    def kept_layers(self) -> list[int]:
        """The teacher layers the student holds, in order (fading ones included)."""
        return list(range(len(self.layers))) if self.depth is None else self.depth.tolist()

    @property
    def fading_layers(self) -> list[int]:
        return [] if self.fading is None else self.fading.tolist()

    @property
    def surviving_layers(self) -> list[int]:
        """Kept teacher layers not being faded out: those the student ends with."""
        fading = set(self.fading_layers)
        return [t for t in self.kept_layers if t not in fading]

    def with_depth(self, depth: list[int], fading: list[int]) -> PruningState:
        """A copy with other kept / fading layers (the widths shared)."""
        all_layers = list(depth) == list(range(len(self.layers)))
        return PruningState(self.hidden, self.layers, None if all_layers else torch.tensor(sorted(depth)),
                            torch.tensor(sorted(fading)) if fading else None)

    @classmethod
    def full(cls, shape: Shape, num_layers: int) -> PruningState:
        """Nothing pruned yet."""
        heads = torch.arange(shape.heads)
        dims = torch.arange(shape.head_dim).repeat(shape.heads, 1)
        kv = torch.arange(shape.kv_heads) if shape.kv_heads != shape.heads else None
        return cls(
            hidden=torch.arange(shape.hidden),
            layers=[LayerKeep(heads.clone(), dims.clone(), dims.clone(), torch.arange(shape.intermediate),
                              kv.clone() if kv is not None else None) for _ in range(num_layers)],
        )

    @classmethod
    def first(cls, initial: Shape, target: Shape, num_layers: int) -> PruningState:
        """The first channels, heads, head dims and neurons of each structure (the truncation baseline); under
        grouped-query attention the first key/value groups and the first query heads of each."""
        if initial.kv_heads != initial.heads:
            kv = torch.arange(target.kv_heads)
            heads = (kv[:, None] * initial.group_size + torch.arange(target.group_size)).reshape(-1)
        else:
            kv, heads = None, torch.arange(target.heads)
        dims = torch.arange(target.head_dim).repeat(target.heads, 1)
        return cls(hidden=torch.arange(target.hidden),
                   layers=[LayerKeep(heads.clone(), dims.clone(), dims.clone(), torch.arange(target.intermediate),
                                     kv.clone() if kv is not None else None) for _ in range(num_layers)])

    @property
    def shape(self) -> Shape:
        """Current widths (uniform across the kept layers by construction)."""
        layer = self.layers[self.kept_layers[0]]
        return Shape(len(self.hidden), len(layer.heads), layer.qk.shape[1], len(layer.ffn), len(layer.kv))

    # --- serialisation (JSON: small integer lists, no pickle) -------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "hidden": self.hidden.tolist(),
            # "kv" only under grouped-query attention, so encoder states read as before.
            "layers": [{"heads": k.heads.tolist(), "qk": k.qk.tolist(), "v": k.v.tolist(), "ffn": k.ffn.tolist(),
                        **({"kv": k.kv.tolist()} if k.kv is not k.heads else {})} for k in self.layers],
            # Only when depth is pruned, so width-only states read as before (and old ones load as "all layers").
            **({"depth": self.depth.tolist()} if self.depth is not None else {}),
            **({"fading": self.fading.tolist()} if self.fading is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> PruningState:
        def t(x, cols=None):
            out = torch.tensor(x, dtype=torch.long)
            return out.reshape(-1, cols) if cols is not None else out

        layers = []
        for d in data["layers"]:
            heads = t(d["heads"])
            dim = len(d["qk"][0]) if d["qk"] else 0
            layers.append(LayerKeep(heads, t(d["qk"], dim), t(d["v"], dim), t(d["ffn"]),
                                    t(d["kv"]) if "kv" in d else None))
        return cls(hidden=t(data["hidden"]), layers=layers, depth=t(data["depth"]) if "depth" in data else None,
                   fading=t(data["fading"]) if data.get("fading") else None)

    def save(self, path) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load(cls, path) -> PruningState:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def equals(self, other: PruningState) -> bool:
        return self.to_dict() == other.to_dict()


@dataclass
class LayerSelection(LayerKeep):
    """Structures to keep in one layer, as positions in the layer's current tensors (the fields of `LayerKeep`:
    heads [a'], qk / v [a', d'] per kept head, ffn, kv; kv None: the same as heads)."""


@dataclass
class Selection:
    """What surgery keeps, as positions in the model's current tensors."""

    hidden: torch.Tensor
    layers: list[LayerSelection]  # one per layer the model keeps
    depth: torch.Tensor | None = None  # positions of the kept layers among the model's current layers; None: all


def _positions(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Positions of the sorted subset `new` inside sorted `old`."""
    pos = torch.searchsorted(old, new)
    if not torch.equal(old[pos.clamp(max=len(old) - 1)], new):
        raise ValueError("new kept indices are not a subset of the old ones (pruned structures cannot grow back)")
    return pos


def selection_between(old: PruningState, new: PruningState) -> Selection:
    """The surgery that takes a model holding exactly `old`'s structures to `new`'s (a subset of them): layers
    first (`depth`), then the widths of each kept layer."""
    old_depth, new_depth = old.kept_layers, new.kept_layers
    depth = None
    if new_depth != old_depth:
        depth = _positions(torch.tensor(old_depth), torch.tensor(new_depth))
    layers = []
    for t in new_depth:
        lo, ln = old.layers[t], new.layers[t]
        head_pos = _positions(lo.heads, ln.heads)
        qk = torch.stack([_positions(lo.qk[p], ln.qk[i]) for i, p in enumerate(head_pos.tolist())]) \
            if len(head_pos) else ln.qk.clone()
        v = torch.stack([_positions(lo.v[p], ln.v[i]) for i, p in enumerate(head_pos.tolist())]) \
            if len(head_pos) else ln.v.clone()
        kv = None if ln.kv is ln.heads and lo.kv is lo.heads else _positions(lo.kv, ln.kv)
        layers.append(LayerSelection(head_pos, qk, v, _positions(lo.ffn, ln.ffn), kv))
    return Selection(hidden=_positions(old.hidden, new.hidden), layers=layers, depth=depth)


class StaticCorrespondence:
    """Channel / head correspondence of a student cut from the teacher once (e.g. `--student_init truncate`): the
    same `hidden_index()` / `head_index(layer)` as a `Pruner`, from a fixed `PruningState` (student position i holds
    teacher structure index[i]; None means the identity)."""

    def __init__(self, state: PruningState):
        self.state = state

    def hidden_index(self):
        return None, self.state.hidden

    def head_index(self, layer: int):
        return None, self.state.layers[layer].heads
