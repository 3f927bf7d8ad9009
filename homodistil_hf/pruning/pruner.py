"""`Pruner`: ties a model, its `PruningState`, an importance metric and a width schedule together, and applies each
pruning step physically (surgery) or with masks.

Selection: at each step the widths come from the schedule; within each layer the top-k heads (under grouped-query
attention: the top-k key/value groups, then the same number of top query heads in every kept group), then the top-k
query/key and value dims of each kept head (where head dims may be pruned), and the top-k FFN neurons are kept; the
hidden channels are one set for the whole model. Widths are uniform across layers at every step, so any
intermediate student is a valid (if unusual) model of its family, and the final one has a stock config.

Depth (`target_layers`): a `LayerFader` scores layers; `choose_layers(n)` marks the next layers to remove (fading),
`set_alpha()` fades them, `drop_faded()` removes them at alpha 0 (see `depth.py`). Structure groups are named by
teacher layer, so scores and statistics stay in teacher coordinates when layers go.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from ..arch import Shape, check_model_supported, shape_of
from ..arch.modules import head_rows
from ..errors import UserError
from .depth import LayerFader
from .groups import Group, build_groups, prunable_parameters
from .importance import Importance
from .masking import Masker
from .state import LayerKeep, PruningState, selection_between
from .surgery import SliceListener, prune_model

logger = logging.getLogger(__name__)

STATE_FILE = "pruning_state.json"
IMPORTANCE_FILE = "pruning_importance.safetensors"
DEPTH_FILE = "pruning_depth.safetensors"
LAYOUT_FILE = "pruning_layout.json"  # {"physical": bool}: whether the checkpoint's weights are sliced or masked


def check_checkpoint(folder: str | Path, target: Shape | None = None, teacher: Shape | None = None,
                     num_layers: int | None = None, target_layers: int | None = None) -> PruningState:
    """A checkpoint to resume a pruning run from must hold its pruning state, and that state must be able to reach
    `target` (when given): pruning only removes structures, so every width of the target must be at most the
    checkpoint's (hidden, heads, key/value heads, heads per group, head size, FFN; and `target_layers`, the target
    depth, at most the layers it kept), and the state must describe
    `teacher` (its layer count, grouped-query attention or not, indices within the teacher's widths). One check,
    for the script's up-front validation and for the trainer's resume path. Returns the checkpoint's state;
    `UserError` naming both shapes otherwise."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise UserError(f"--resume_from_checkpoint {folder} has no {STATE_FILE}: it was not written by a pruning run "
                        "with these targets; resume from a checkpoint of this run, or drop the --target_* flags")
    try:
        state = PruningState.load(path)
        shape = state.shape
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise UserError(f"--resume_from_checkpoint {folder}: {STATE_FILE} cannot be read ({type(err).__name__}); "
                        "resume from another checkpoint") from None
    if teacher is not None:
        widths = (len(state.hidden), teacher.hidden), *((len(k.ffn), teacher.intermediate) for k in state.layers)
        grouped = teacher.kv_heads != teacher.heads
        same_kind = all((k.kv is not k.heads) == grouped for k in state.layers)
        in_range = (_top(state.hidden) < teacher.hidden and shape.heads <= teacher.heads
                    and shape.head_dim <= teacher.head_dim and shape.kv_heads <= teacher.kv_heads
                    and all(_top(k.ffn) < teacher.intermediate
                            and _top(k.heads) < teacher.heads for k in state.layers))
        if (num_layers is not None and len(state.layers) != num_layers) or not same_kind or not in_range or any(
                a > b for a, b in widths):
            raise UserError(f"--resume_from_checkpoint {folder}: its pruning state ({shape}, "
                            f"{len(state.layers)} layers) was not made from this teacher ({teacher}, {num_layers} "
                            "layers); resume from a checkpoint of a run with this teacher")
    if target is not None:
        short = [name for name, have, want in (
            ("hidden", shape.hidden, target.hidden), ("heads", shape.heads, target.heads),
            ("key/value heads", shape.kv_heads, target.kv_heads),
            ("heads per group", shape.group_size, target.group_size), ("head size", shape.head_dim, target.head_dim),
            ("FFN", shape.intermediate, target.intermediate)) if want > have]
        if target_layers is not None and len(state.kept_layers) < target_layers:
            short.append(f"depth {len(state.kept_layers)} < --target_num_hidden_layers {target_layers}")
        if short:
            raise UserError(f"--resume_from_checkpoint {folder} holds a student pruned to {shape}, which cannot reach "
                            f"the target {target} ({', '.join(short)} already smaller; pruning only removes): resume "
                            "with the targets of the run that wrote it, or start a new run in a new --output_dir")
    return state


def checkpoint_is_physical(folder: str | Path) -> bool | None:
    """Whether a checkpoint's weights are sliced to its pruning state (True) or full-size and masked (False); None
    for checkpoints written before the layout was recorded."""
    path = Path(folder) / LAYOUT_FILE
    return bool(json.loads(path.read_text())["physical"]) if path.is_file() else None


def _top(index: torch.Tensor) -> int:
    """The largest index of a kept list (-1 when empty)."""
    return int(index.max()) if len(index) else -1


def _keep_top(scores: torch.Tensor, kept: torch.Tensor, k: int, physical: bool) -> torch.Tensor:
    """The `k` best of the structures in `kept` (teacher coordinates), sorted.

    `scores` is over the current tensors: position i is kept[i] when the model is physically pruned, and the
    teacher's structure i when it is masked.
    """
    if k >= len(kept):
        return kept.clone()
    candidates = scores.detach().float().cpu()[torch.arange(len(kept)) if physical else kept]
    candidates = torch.nan_to_num(candidates, nan=0.0, posinf=torch.finfo(torch.float32).max)
    # Stable tie-break towards lower indices, so every rank and every resume choose alike.
    order = torch.sort(-candidates, stable=True).indices[:k]
    return torch.sort(kept[order]).values


class Pruner:
    """Prunes `model` (a copy of the teacher) towards `target` by `importance`, one `prune_to(widths)` at a time
    (when, and to which widths, is the schedule's business: `PruningCallback`)."""

    def __init__(self, model: nn.Module, target: Shape, importance: Importance, physical: bool = True,
                 target_layers: int | None = None, layer_importance: str = "cosine", layer_beta: float = 0.85,
                 layer_fade: str = "output"):
        self.adapter = check_model_supported(model)
        self.model = model
        self.initial = shape_of(model.config)
        self.target = target
        self.importance = importance
        self.physical = physical
        self.num_layers = len(self.adapter.layers(model))
        self.state = PruningState.full(self.initial, self.num_layers)
        self.masker = None if physical else Masker(model, self.adapter)
        self.listeners: list[SliceListener] = []
        self.drop_listeners: list = []  # called with the parameters of removed layers (the optimizer's dropper)
        self.compact_when_done = False  # masks mode under several processes: compact once pruning is done
        self.compaction_due = False  # set by the callback: the Trainer's loop stops so that the student is compacted
        self.target_layers = self.num_layers if target_layers is None else target_layers
        self.fader = None
        if self.target_layers < self.num_layers:
            self.fader = LayerFader(model, self.adapter, self.num_layers, layer_importance, layer_beta, layer_fade)
            self.fader.install(list(range(self.num_layers)))
        self.groups = build_groups(model, self.adapter)
        self.teacher_sizes = {g.name: g.size for g in self.groups}
        self.importance.attach(model, self.groups)
        self.initial_prunable = self._prunable_numel()

    # --- pruning ----------------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.state.shape == self.target and self.depth_done

    @property
    def depth_done(self) -> bool:
        return len(self.state.kept_layers) == self.target_layers and not self.state.fading_layers

    # --- depth ------------------------------------------------------------------------------------------------------
    @property
    def layers_chosen(self) -> bool:
        """Whether the layers to remove are known (chosen, or nothing to remove)."""
        return len(self.state.surviving_layers) <= self.target_layers

    @property
    def layers_removed_or_fading(self) -> int:
        return self.num_layers - len(self.state.surviving_layers)

    def choose_layers(self, count: int | None = None) -> list[int]:
        """Mark the `count` lowest-scored surviving layers (None: all still to remove) for removal; they start
        fading. Returns them (teacher layers). Scoring stops once every layer to remove is chosen."""
        surviving = self.state.surviving_layers
        left = len(surviving) - self.target_layers
        count = left if count is None else min(count, left)
        new = self.fader.choose(surviving, len(surviving) - count)
        if count >= left:
            self.fader.stop_recording()
        before = self.state.fading_layers
        self.apply(self._broadcast(self.state.with_depth(self.state.kept_layers, before + new)))
        return sorted(set(self.state.fading_layers) - set(before))  # (rank 0's choice)

    def set_alpha(self, alpha: float) -> None:
        """The fading layers' factor (1: unchanged, 0: the identity); removed layers stay at 0 (masks)."""
        if self.fader is None:
            return
        removed = set(range(self.num_layers)) - set(self.state.kept_layers)
        self.fader.alpha = {**{t: 0.0 for t in removed}, **{t: float(alpha) for t in self.state.fading_layers}}

    def drop_faded(self) -> list[int]:
        """Remove the fading layers (alpha must be 0 by now); returns them (teacher layers)."""
        fading = self.state.fading_layers
        self.apply(self.state.with_depth(self.state.surviving_layers, []))
        self.set_alpha(0.0)
        return fading

    def layer_pairs(self) -> list[tuple[int, int]]:
        """(student layer, teacher layer) for every layer the student ends with: what the hidden-state and attention
        terms compare (fading layers are left out: they are on their way to the identity)."""
        surviving = self.state.surviving_layers
        if not self.physical:
            return [(t, t) for t in surviving]
        position = {t: p for p, t in enumerate(self.state.kept_layers)}
        return [(position[t], t) for t in surviving]

    def prune_to(self, widths: Shape) -> PruningState:
        """One pruning step: score, select the structures to keep at `widths`, apply."""
        scores = self.importance.scores(self.groups, None if self.physical else self._element_masks())
        new = self.select(scores, widths)
        new = self._broadcast(new)
        self.apply(new)
        self.importance.on_pruned()
        return new

    def select(self, scores: dict[str, torch.Tensor], widths: Shape) -> PruningState:
        """The structures to keep at `widths`, given scores over the current tensors."""
        s, phys = self.state, self.physical
        layers = list(s.layers)  # removed layers keep their (meaningless) entries
        kept = s.kept_layers
        for i in kept:
            keep = s.layers[i]
            if keep.kv is keep.heads:
                heads, kv = _keep_top(scores[f"layer{i}.heads"], keep.heads, widths.heads, phys), None
            else:
                kv, heads = self._select_grouped(scores, i, keep, widths)
            rows = torch.searchsorted(keep.heads, heads)  # rows of the kept heads in keep.qk / keep.v
            if f"layer{i}.qk" in scores:
                qk, v = [], []
                for r in rows.tolist():
                    pos = r if phys else int(keep.heads[r])  # the head's position in the current tensors
                    qk.append(_keep_top(scores[f"layer{i}.qk"][pos], keep.qk[r], widths.head_dim, phys))
                    v.append(_keep_top(scores[f"layer{i}.v"][pos], keep.v[r], widths.head_dim, phys))
                empty = torch.zeros(0, widths.head_dim, dtype=torch.long)
                qk, v = (torch.stack(qk) if qk else empty), (torch.stack(v) if v else empty)
            else:  # head dims are not pruned in this family
                qk, v = keep.qk[rows].clone(), keep.v[rows].clone()
            ffn = _keep_top(scores[f"layer{i}.ffn"], keep.ffn, widths.intermediate, phys)
            layers[i] = LayerKeep(heads, qk, v, ffn, kv)
        hidden = _keep_top(scores["hidden"], s.hidden, widths.hidden, phys)
        return PruningState(hidden, layers, s.depth, s.fading)

    def _select_grouped(self, scores, i: int, keep: LayerKeep, widths: Shape) -> tuple[torch.Tensor, torch.Tensor]:
        """Grouped-query attention: the best key/value groups, then the best `widths.group_size` query heads within
        each kept group, so that every group keeps the same number (a stock config needs uniform groups)."""
        phys = self.physical
        kv = _keep_top(scores[f"layer{i}.kv"], keep.kv, widths.kv_heads, phys)
        teacher_group = self.initial.group_size
        head_scores = scores[f"layer{i}.heads"]
        heads = []
        for g in kv.tolist():
            members = keep.heads[keep.heads // teacher_group == g]  # the group's query heads still kept
            positions = torch.searchsorted(keep.heads, members) if phys else members
            heads.append(_keep_top(head_scores[positions], members, widths.group_size, physical=True))
        return kv, torch.sort(torch.cat(heads)).values

    def apply(self, new: PruningState) -> None:
        """Make the model hold exactly `new`'s structures."""
        if self.physical:
            self._cut(new, [self.importance.on_slice, *self.listeners])
            self.importance.attach(self.model, self.groups, self._coords())
            if self.fader is not None:
                self.fader.install(self.state.kept_layers)
        else:
            self.masker.apply(new)
            self.state = new
            self.importance.set_masks(self._axis_masks())  # pruned weights leave running statistics
            if self.fader is not None:  # after the masks: a faded post-norm mixes the masked norm's output
                self.fader.install(list(range(self.num_layers)))
                # Removed layers are the identity (alpha 0) from here on, a restored state's too; fading ones keep
                # theirs (the callback sets it every step).
                gone = set(range(self.num_layers)) - set(new.kept_layers)
                self.fader.alpha = {**{t: a for t, a in self.fader.alpha.items() if t in new.fading_layers},
                                    **dict.fromkeys(gone, 0.0)}

    def _cut(self, new: PruningState, listeners: list[SliceListener]) -> None:
        """Slice the (physical) model from `self.state` to `new`; removed layers' parameters go to the drop
        listeners."""
        selection = selection_between(self.state, new)
        removed = []
        if selection.depth is not None:
            layers = self.adapter.layer_list(self.model)
            keep = set(selection.depth.tolist())
            removed = [p for i, m in enumerate(layers) if i not in keep for p in m.parameters()]
        prune_model(self.model, selection, listeners=listeners, adapter=self.adapter)
        for listener in self.drop_listeners:
            listener(removed)
        self.state = new
        self.groups = build_groups(self.model, self.adapter, self.state.kept_layers)

    def compact(self, model: nn.Module | None = None) -> None:
        """Masks -> physical, once pruning is done: slice the masked student (or `model`, a plain full copy of it,
        e.g. gathered from FSDP2 shards, which the pruner binds to) to the state's structures, removed layers
        included, and drop the masks; the pruner is physical from then on. Exact: the masks compute what surgery
        computes. `listeners` / `drop_listeners` follow every slice and the removed layers' parameters (the
        optimizer's state). Every rank calls it alike (the state is the same on all of them)."""
        if self.physical:
            return
        if not self.done:
            raise RuntimeError("compact() runs once pruning is done")
        self.importance.close()  # pruning is over (a resumed run may not have closed it)
        self.masker.remove()
        if self.fader is not None:
            self.fader.remove()
        if model is not None:
            self.model = model
            if self.fader is not None:
                self.fader.model = model
        state, self.state = self.state, PruningState.full(self.initial, self.num_layers)
        self.physical, self.masker = True, None
        self._cut(state, list(self.listeners))  # the importance is closed: pruning is over
        if self.fader is not None:
            self.fader.install(self.state.kept_layers)
            self.set_alpha(0.0)

    def _coords(self) -> dict[str, tuple[torch.Tensor, int]]:
        """Per group: the teacher's flat index of each current structure (physically pruned model), and the
        teacher's count."""
        coords = {}
        for g in self.groups:
            kept = _kept_structures(g, self.state, self.initial)
            coords[g.name] = (kept, self.teacher_sizes[g.name])
        return coords

    def rebind(self) -> bool:
        """Rebuild the structure groups when the model's parameters were replaced since they were built: FSDP2's
        `fully_shard` (run by accelerate when the Trainer prepares the model) swaps every parameter for a DTensor
        one, in the same modules. Masks (forward hooks on modules) stay; per-structure statistics are keyed by group
        name and stay; statistics keyed by parameter (`sensitivity`) would not, so those metrics are refused under
        FSDP up front. Returns whether anything was rebuilt."""
        current = {id(p) for p in self.model.parameters()}
        if all(id(p) in current for p in prunable_parameters(self.groups)):
            return False
        self.groups = build_groups(self.model, self.adapter, self.state.kept_layers if self.physical else None)
        self.importance.attach(self.model, self.groups, self._coords() if self.physical else None)
        if not self.physical:
            self.importance.set_masks(self._axis_masks())
        return True

    def restore(self, state: PruningState) -> None:
        """Bring a fresh copy of the teacher to a saved state (resume)."""
        if not self.state.equals(PruningState.full(self.initial, self.num_layers)):
            raise RuntimeError("restore() expects an unpruned model")
        self.apply(state)

    @staticmethod
    def _broadcast(state: PruningState) -> PruningState:
        """Rank 0's decision wins, so ranks can never diverge (they compute the same scores from synchronised
        gradients anyway)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return state
        payload = [state.to_dict() if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(payload, src=0)
        return PruningState.from_dict(payload[0])

    # --- what the losses need ---------------------------------------------------------------------------------------
    def hidden_index(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(student channels to compare or None for all, the teacher channels they came from)."""
        return (None if self.physical else self.state.hidden), self.state.hidden

    def head_index(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(student heads to compare or None for all, the teacher heads they came from) for a layer."""
        teacher_layer = self.state.kept_layers[layer] if self.physical else layer
        heads = self.state.layers[teacher_layer].heads
        return (None if self.physical else heads), heads

    # --- reporting --------------------------------------------------------------------------------------------------
    def _kept_along(self) -> dict[tuple[int, int], torch.Tensor]:
        """(param id, dim) -> kept indices along that dim, for the full-size (masked) tensors: an index is kept when
        every group that maps it keeps its structure."""
        keep: dict[tuple[int, int], torch.Tensor] = {}
        for g in self.groups:
            kept = _kept_mask(g, self.state).reshape(-1)
            for p, dim, ids in g.slices:
                mask = torch.where(ids >= 0, kept[ids.clamp(min=0)], torch.ones_like(ids, dtype=torch.bool))
                key = (id(p), dim)
                keep[key] = keep[key] & mask if key in keep else mask
        return {key: mask.nonzero().reshape(-1) for key, mask in keep.items()}

    def _axis_masks(self) -> dict[nn.Parameter, list[torch.Tensor]]:
        """Masks mode: per parameter, one broadcastable 0/1 vector per pruned dim (their product is the weight mask:
        1 on the weights of kept structures, 0 on pruned ones)."""
        kept = self._kept_along()
        masks: dict[nn.Parameter, list[torch.Tensor]] = {}
        for p in prunable_parameters(self.groups):
            for dim, size in enumerate(p.shape):
                index = kept.get((id(p), dim))
                if index is None or len(index) == size:
                    continue
                axis = torch.zeros(size, device=p.device)
                axis[index.to(p.device)] = 1
                shape = [1] * p.dim()
                shape[dim] = size
                masks.setdefault(p, []).append(axis.view(shape))
        return masks

    def _element_masks(self) -> dict[nn.Parameter, torch.Tensor]:
        """Masks mode: 1 on the weights of kept structures, 0 on pruned ones."""
        masks = {}
        for p, axes in self._axis_masks().items():
            mask = axes[0]
            for axis in axes[1:]:
                mask = mask * axis
            masks[p] = mask
        return masks

    def _prunable_numel(self) -> int:
        """Parameters the groups cover, as the physically pruned model would hold them."""
        params = prunable_parameters(self.groups)
        if self.physical:
            return sum(p.numel() for p in params)
        # Masks: the product of kept sizes along each dim, from the state (removed layers: nothing).
        kept = self._kept_along()
        layers = self.adapter.layer_list(self.model)
        gone = {id(p) for t in set(range(self.num_layers)) - set(self.state.kept_layers) for p in layers[t].parameters()}
        total = 0
        for p in params:
            if id(p) in gone:
                continue
            sizes = [len(kept[(id(p), d)]) if (id(p), d) in kept else size for d, size in enumerate(p.shape)]
            total += int(torch.tensor(sizes).prod())
        return total

    def sparsity(self) -> float:
        """Fraction of the prunable parameters removed so far."""
        return 1.0 - self._prunable_numel() / self.initial_prunable

    def log_values(self) -> dict[str, float]:
        shape = self.state.shape
        values = {"sparsity": round(self.sparsity(), 6), "width_hidden": shape.hidden, "width_heads": shape.heads,
                  "width_head_dim": shape.head_dim, "width_ffn": shape.intermediate}
        if self.initial.kv_heads != self.initial.heads:
            values["width_kv_heads"] = shape.kv_heads
        if self.fader is not None:
            values["depth"] = len(self.state.surviving_layers)
        return values

    # --- checkpoints ------------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write the state (JSON) and importance buffers (safetensors) into a checkpoint folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.state.save(folder / STATE_FILE)
        (folder / LAYOUT_FILE).write_text(json.dumps({"physical": self.physical}))
        names = {}
        for name, p in self.model.named_parameters(remove_duplicate=True):
            names.setdefault(p, name)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.importance.state_dict(names).items()}
        save_file(tensors, str(folder / IMPORTANCE_FILE))
        if self.fader is not None:
            save_file(self.fader.state_dict(), str(folder / DEPTH_FILE))

    def load(self, folder: str | Path) -> None:
        """Restore from a checkpoint folder written by `save` (the model must be an unpruned teacher copy)."""
        folder = Path(folder)
        self.restore(PruningState.load(folder / STATE_FILE))
        if (folder / IMPORTANCE_FILE).is_file():
            params = dict(self.model.named_parameters(remove_duplicate=True))
            self.importance.load_state_dict(load_file(str(folder / IMPORTANCE_FILE)), params)
        if self.fader is not None and (folder / DEPTH_FILE).is_file():
            self.fader.load_state_dict(load_file(str(folder / DEPTH_FILE)))
        if self.fader is not None and self.layers_chosen:  # (sequential: scoring goes on until all are chosen)
            self.fader.stop_recording()


def _kept_structures(group: Group, state: PruningState, teacher: Shape) -> torch.Tensor:
    """The teacher's flat index of each structure of `group` that `state` keeps, in the order of the current
    tensors (sorted teacher coordinates; (head, dim) pairs head-major)."""
    keep = state.layers[group.layer] if group.layer is not None else None
    if group.kind == "hidden":
        return state.hidden
    if group.kind in ("ffn", "kv", "heads"):
        return {"ffn": keep.ffn, "kv": keep.kv, "heads": keep.heads}[group.kind]
    dims = keep.qk if group.kind == "qk" else keep.v
    return head_rows(keep.heads, dims, teacher.head_dim)


def _kept_mask(group: Group, state: PruningState) -> torch.Tensor:
    """A bool tensor shaped `group.view`: which of the group's structures (teacher coordinates) `state` keeps."""
    kept = torch.zeros(group.view, dtype=torch.bool)
    if group.kind == "hidden":
        kept[state.hidden] = True
        return kept
    keep = state.layers[group.layer]
    if group.kind == "ffn":
        kept[keep.ffn] = True
    elif group.kind == "kv":
        kept[keep.kv] = True
    elif group.kind == "heads":
        kept[keep.heads] = True
    else:  # 'qk' / 'v': (head, dim) pairs
        dims = keep.qk if group.kind == "qk" else keep.v
        kept[keep.heads[:, None].expand_as(dims), dims] = True
    return kept
