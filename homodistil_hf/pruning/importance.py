"""Importance metrics: callables that return one score per structure of a `Group`.

- `sensitivity` (the paper's, PLATON style): per weight, I = |w * grad|, smoothed I_bar = b1 I_bar + (1 - b1) I and
  an uncertainty U_bar = b2 U_bar + (1 - b2) |I - I_bar|; the weight's score is I_bar * U_bar, summed over each
  structure. Needs a gradient every step of the pruning window (`step()`).
- `magnitude`: |w| summed over each structure.
- `activation`: mean |activation| of each structure over the tokens seen since the last pruning step.
- `taylor_structure`: one number per structure (`StructureImportance`, the per-structure family: per-weight value,
  reduction and score are pluggable; its ablations are registered from `benchmarks/importance_ablations.py`).
- `random`: uniform random scores (seeded), the ablation's floor.

Names map to classes in `homodistil_hf.registry` (light: parsing flags imports no torch module).

All metrics share one interface: `step()` each optimizer step inside the window, `scores(groups)` at a pruning
step, `on_slice` to follow physical surgery, and `state_dict` / `load_state_dict` (tensors only) for checkpoints.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from ..registry import importance_class
from .groups import Group, prunable_parameters
from .sharding import all_reduce_sum, is_sharded, local, narrow_to


class Importance:
    """Base class. Subclasses implement `scores(groups)` or `element_scores()`."""

    name = "base"
    # Whether the metric works from sharded (FSDP2) parameters, which no rank holds whole: per-structure sums reduced
    # across ranks, activations (every rank computes full ones) and random scores do; per-weight statistics do not.
    works_on_shards = False

    @classmethod
    def from_config(cls, args) -> Importance:
        """The metric as a run's `HomoDistilConfig` asks for it."""
        return cls()

    def attach(self, model: nn.Module, groups: list[Group],
               coords: dict[str, tuple[torch.Tensor, int]] | None = None) -> None:
        """Bind to the model's current structure groups (called again after each physical pruning step).

        `coords` gives, per group, the teacher's (flat) index of each current structure and the teacher's count
        (None: the current structures are the teacher's, as under masks).
        """
        self.model = model
        self.groups = groups
        self.coords = coords

    def step(self) -> None:
        """Called after every backward pass of the pruning window, when gradients are complete."""

    def scores(self, groups: list[Group], element_masks: dict[nn.Parameter, torch.Tensor] | None = None
               ) -> dict[str, torch.Tensor]:
        """Scores of every group at once (shares the per-weight work across groups).

        `element_masks` (masks mode) zeroes the weights of structures already pruned, so a kept structure is scored
        on exactly the weights it would have after physical pruning.
        """
        elements = self.element_scores()
        if element_masks:
            elements = {p: e * element_masks[p] if p in element_masks else e for p, e in elements.items()}
        return {g.name: g.row_scores(elements) for g in groups}

    def element_scores(self) -> dict[nn.Parameter, torch.Tensor]:
        raise NotImplementedError

    def on_pruned(self) -> None:
        """Called after each pruning step."""

    def set_masks(self, axis_masks: dict[nn.Parameter, list[torch.Tensor]]) -> None:
        """Masks mode: which weights are pruned (per parameter, a 0/1 vector per pruned dim), for metrics that
        accumulate statistics every step (the others get `element_masks` at scoring time)."""

    def on_slice(self, param: nn.Parameter, dim: int, index: torch.Tensor, old_shape: torch.Size) -> None:
        """Follow a physical slice of `param`."""

    def state_dict(self, names: dict[nn.Parameter, str]) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], params: dict[str, nn.Parameter]) -> None:
        """Restore from `state_dict` output, given the model's parameters by name."""

    def close(self) -> None:
        """Release buffers and hooks (pruning is over)."""


class MagnitudeImportance(Importance):
    """|w| summed over each structure. Stateless: its checkpoint is empty."""

    name = "magnitude"

    @torch.no_grad()
    def element_scores(self):
        return {p: p.detach().abs().float() for p in prunable_parameters(self.groups)}


class SensitivityImportance(Importance):
    """PLATON-style smoothed sensitivity times uncertainty (Zhang et al., 2022), per weight: two float32 buffers the
    size of every prunable weight. Checkpoint format: `"<parameter name>::ema"` and `"<parameter name>::unc"`, each
    shaped like the (current, possibly sliced) parameter."""

    name = "sensitivity"

    def __init__(self, beta1: float = 0.85, beta2: float = 0.95):
        self.beta1, self.beta2 = beta1, beta2
        self.ema: dict[nn.Parameter, torch.Tensor] = {}
        self.unc: dict[nn.Parameter, torch.Tensor] = {}

    @classmethod
    def from_config(cls, args) -> SensitivityImportance:
        return cls(args.importance_beta1, args.importance_beta2)

    def attach(self, model, groups, coords=None):
        super().attach(model, groups, coords)
        self.params = prunable_parameters(groups)
        live = set(self.params)
        for buf in (self.ema, self.unc):  # layers removed physically take their buffers with them
            for p in [p for p in buf if p not in live]:
                del buf[p]

    @torch.no_grad()
    def step(self) -> None:
        # This runs every step of the pruning window over every prunable weight, so it is written to stream through
        # memory as few times as possible, with no allocation: 5 in-place passes through one scratch buffer.
        b1, b2 = 1.0 - self.beta1, 1.0 - self.beta2
        for p in self.params:
            if p.grad is None:
                continue
            if p not in self.ema:
                self.ema[p] = torch.zeros_like(p, dtype=torch.float32)
                self.unc[p] = torch.zeros_like(p, dtype=torch.float32)
            ema, unc = self.ema[p], self.unc[p]
            sens = self._scratch(p)
            torch.mul(p.detach(), p.grad, out=sens)  # I = |w * g|
            sens.abs_()
            ema.lerp_(sens, b1)  # I_bar = beta1 I_bar + (1 - beta1) I
            sens.sub_(ema).abs_()  # |I - I_bar|
            unc.lerp_(sens, b2)  # U_bar = beta2 U_bar + (1 - beta2) |I - I_bar|

    def _scratch(self, p: nn.Parameter) -> torch.Tensor:
        """A float32 view shaped like `p` into one buffer reused by every parameter."""
        buf = getattr(self, "_buffer", None)
        if buf is None or buf.numel() < p.numel() or buf.device != p.device:
            size = max(q.numel() for q in self.params if q.device == p.device)
            buf = self._buffer = torch.empty(size, dtype=torch.float32, device=p.device)
        return buf[: p.numel()].view(p.shape)

    def element_scores(self):
        return {p: self.ema[p] * self.unc[p] for p in self.params if p in self.ema}

    def on_slice(self, param, dim, index, old_shape):
        for buf in (self.ema, self.unc):
            if param in buf and buf[param].shape == old_shape:
                buf[param] = buf[param].index_select(dim, index.to(buf[param].device)).contiguous()

    def state_dict(self, names):
        out = {}
        for p in self.ema:
            if p in names:
                out[f"{names[p]}::ema"] = self.ema[p]
                out[f"{names[p]}::unc"] = self.unc[p]
        return out

    def load_state_dict(self, tensors, params):
        for key, value in tensors.items():
            name, kind = key.rsplit("::", 1)
            if name in params:
                p = params[name]
                (self.ema if kind == "ema" else self.unc)[p] = value.to(p.device)

    def close(self):
        self.ema.clear()
        self.unc.clear()
        self._buffer = None


class StructureImportance(Importance):
    """Per-structure statistics: one number per structure, memory O(structures) instead of O(weights).

    Each step of the pruning window forms a per-weight value from w * grad (`element`), sums it over each structure
    (S_s), applies `reduce` to the sum, and keeps EMA(reduce(S_s)) (factor `beta1`); the score is that EMA
    (`score="ema"`) or the EMA times the uncertainty EMA(|reduce(S_s) - EMA|) (factor `beta2`,
    `score="ema_x_uncertainty"`, PLATON's product at the structure level). The uncertainty buffer exists only for
    the score that reads it.

    - `element`: "abs" |w * grad| (PLATON's sensitivity), "signed" w * grad, "square" (w * grad)^2;
    - `reduce`: "identity" or "square" (with "signed": the squared first-order loss change of removing the whole
      structure, Molchanov et al. 2019).

    Buffers are in the teacher's coordinates, so physical pruning never slices them; under masks, pruned weights are
    masked out of the sums (`set_masks`); under FSDP2 each rank sums the shard it holds and the sums are all-reduced,
    so every rank keeps the same statistics (`works_on_shards`).

    Checkpoint format (`state_dict`): `"<group>::ema"` and, with the uncertainty, `"<group>::unc"`: float32 vectors
    of the teacher's count of that group's structures (e.g. `"layer3.ffn::ema"`, [intermediate_size]).
    """

    name = "structure"
    works_on_shards = True
    ELEMENTS = ("abs", "signed", "square")
    REDUCTIONS = ("identity", "square")
    SCORES = ("ema", "ema_x_uncertainty")
    # The per-weight values are formed in blocks of rows of at most this many elements: the statistics are one
    # number per structure, so the only memory a step adds is this block (an unchunked 30k x 384 embedding alone
    # would be a 47 MB temporary, ~7% of a MiniLM run's training memory).
    chunk_elements = 1 << 18

    def __init__(self, element: str = "abs", reduce: str = "identity", score: str = "ema", beta1: float = 0.85,
                 beta2: float = 0.95):
        for value, choices in ((element, self.ELEMENTS), (reduce, self.REDUCTIONS), (score, self.SCORES)):
            if value not in choices:
                raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        self.element, self.reduce, self.score = element, reduce, score
        self.beta1, self.beta2 = beta1, beta2
        self.ema: dict[str, torch.Tensor] = {}
        self.unc: dict[str, torch.Tensor] = {}  # only with score "ema_x_uncertainty"
        self.masks: dict[nn.Parameter, list[torch.Tensor]] = {}  # per pruned dim, a 0/1 vector

    @classmethod
    def from_config(cls, args) -> StructureImportance:
        return cls(beta1=args.importance_beta1, beta2=args.importance_beta2)

    def set_masks(self, axis_masks):
        self.masks = axis_masks

    def attach(self, model, groups, coords=None):
        super().attach(model, groups, coords)
        # param -> every (group, dim, ids) that reads it, so each per-weight value is formed once per step.
        self.uses: dict[nn.Parameter, list[tuple[Group, int, torch.Tensor]]] = {}
        for g in groups:
            for p, dim, ids in g.slices:
                self.uses.setdefault(p, []).append((g, dim, ids))

    def _index(self, g: Group) -> tuple[torch.Tensor | None, int]:
        """(teacher index of the current structures or None for the identity, the teacher's count)."""
        if self.coords is None or g.name not in self.coords:
            return None, g.size
        return self.coords[g.name]

    @torch.no_grad()
    def step(self) -> None:
        sums: dict[str, torch.Tensor] = {}
        sharded = False
        for p, uses in self.uses.items():
            if p.grad is None:
                continue
            # Under FSDP each rank scores the slice it holds; the all-reduce below completes every sum.
            weight, grad, offset = local(p)
            sharded |= is_sharded(p)
            n = weight.shape[0] if weight.dim() else 1
            rows_per_chunk = max(1, self.chunk_elements // max(1, weight[:1].numel()))
            for start in range(0, n, rows_per_chunk):
                stop = min(n, start + rows_per_chunk)
                at = (offset[0] + start, *offset[1:]) if weight.dim() else offset
                block = self._element(weight[start:stop].float() * grad[start:stop].float())
                self._add_block(sums, p, uses, block, at)
        if sharded:
            device = next(iter(sums.values())).device if sums else None
            for g in self.groups:  # every rank reduces the same groups in the same order
                sums.setdefault(g.name, torch.zeros(g.size, device=device))
            all_reduce_sum([sums[g.name] for g in self.groups])
        self._update(sums)

    def _element(self, wg: torch.Tensor) -> torch.Tensor:
        """What each weight adds to its structures' sums (in place on the fresh block `wg`)."""
        if self.element == "abs":
            return wg.abs_()
        return wg.square_() if self.element == "square" else wg

    def _add_block(self, sums: dict[str, torch.Tensor], p: nn.Parameter, uses, block: torch.Tensor,
                   at: tuple[int, ...]) -> None:
        """Add one block of per-weight values (rows of `p`'s local slice, starting at global index `at`) to the
        sums of every structure that reads `p`: masked-out weights (masks mode) add nothing."""
        for axis in self.masks.get(p, ()):
            for d in range(axis.dim()):
                axis = narrow_to(axis, d, at[d], block.shape[d]) if axis.shape[d] > 1 else axis
            block.mul_(axis)
        for g, dim, ids in uses:
            other = [d for d in range(block.dim()) if d != dim]
            rows = block.sum(dim=other) if other else block
            if g.name not in sums:
                sums[g.name] = torch.zeros(g.size, device=block.device)
            g.accumulate(sums[g.name], rows, narrow_to(ids, 0, at[dim], block.shape[dim]))

    def _update(self, sums: dict[str, torch.Tensor]) -> None:
        """Fold this step's per-structure sums into the EMAs."""
        b1, b2 = 1.0 - self.beta1, 1.0 - self.beta2
        uncertainty = self.score == "ema_x_uncertainty"
        for g in self.groups:
            if g.name not in sums:
                continue
            index, size = self._index(g)
            value = sums[g.name].square() if self.reduce == "square" else sums[g.name]
            if g.name not in self.ema:
                self.ema[g.name] = torch.zeros(size, device=value.device)
                if uncertainty:
                    self.unc[g.name] = torch.zeros(size, device=value.device)
            ema = self.ema[g.name]
            if index is None:  # every structure is current: in place
                ema.lerp_(value, b1)
                if uncertainty:
                    self.unc[g.name].lerp_((value - ema).abs(), b2)
            else:  # only the current structures move; pruned ones keep their last values (never read again)
                index = index.to(value.device)
                new = torch.lerp(ema[index], value, b1)
                ema[index] = new
                if uncertainty:
                    unc = self.unc[g.name]
                    unc[index] = torch.lerp(unc[index], (value - new).abs(), b2)

    def scores(self, groups, element_masks=None):
        out = {}
        for g in groups:
            if g.name not in self.ema:
                out[g.name] = torch.zeros(g.view)
                continue
            score = self.ema[g.name] * self.unc[g.name] if self.score == "ema_x_uncertainty" else self.ema[g.name]
            index, _ = self._index(g)
            out[g.name] = (score if index is None else score[index.to(score.device)]).reshape(g.view).cpu()
        return out

    def state_dict(self, names):
        return {f"{k}::{kind}": v for kind, buf in (("ema", self.ema), ("unc", self.unc)) for k, v in buf.items()}

    def load_state_dict(self, tensors, params):
        device = next(self.model.parameters()).device
        for key, value in tensors.items():
            name, kind = key.rsplit("::", 1)
            (self.ema if kind == "ema" else self.unc)[name] = value.to(device)

    def close(self):
        self.ema.clear()
        self.unc.clear()
        self.masks.clear()


class TaylorStructureImportance(StructureImportance):
    """Group Taylor importance (Molchanov et al., 2019, "Importance Estimation for Neural Network Pruning"): the EMA
    over steps of (sum over the structure of w * grad)^2, the squared first-order change of the loss when the whole
    structure is removed. One value per structure; works on FSDP2 shards. Checkpoint: `"<group>::ema"` vectors (see
    `StructureImportance`)."""

    name = "taylor_structure"

    def __init__(self, beta1: float = 0.85, beta2: float = 0.95):
        super().__init__(element="signed", reduce="square", score="ema", beta1=beta1, beta2=beta2)


class RandomImportance(Importance):
    """Random scores from a seeded generator (the same on every rank). Checkpoint: `"generator_state"` (the
    generator's byte state), so a resumed run draws the same scores."""

    name = "random"
    works_on_shards = True

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_config(cls, args) -> RandomImportance:
        return cls(args.pruning_seed if args.pruning_seed is not None else args.seed)

    def scores(self, groups, element_masks=None):
        return {g.name: torch.rand(g.view, generator=self.generator) for g in groups}

    def state_dict(self, names):
        return {"generator_state": self.generator.get_state()}

    def load_state_dict(self, tensors, params):
        if "generator_state" in tensors:
            self.generator.set_state(tensors["generator_state"])


class ActivationImportance(Importance):
    """Mean |activation| per structure over the training tokens seen since the last pruning step. Checkpoint:
    `"<module name>::<input|output>::sum"` (float32 [features]) and `"...::count"` (tokens seen), the sums since
    the last pruning step, so a resumed run scores on the same tokens."""

    name = "activation"
    works_on_shards = True

    def __init__(self):
        self.sums: dict[tuple[int, str], torch.Tensor] = {}
        self.counts: dict[tuple[int, str], int] = {}
        self.handles = []
        self.active = True

    def attach(self, model, groups, coords=None):
        super().attach(model, groups, coords)
        if self.handles:  # modules persist through surgery: hooks stay, only accumulators reset
            return
        sites = {}
        for g in groups:
            for module, which, _ in g.sites:
                sites[(id(module), which)] = (module, which)
        for key, (module, which) in sites.items():
            if which == "input":
                self.handles.append(module.register_forward_pre_hook(self._pre_hook(key)))
            else:
                self.handles.append(module.register_forward_hook(self._post_hook(key)))

    def _record(self, key, x: torch.Tensor) -> None:
        if not (self.active and torch.is_grad_enabled()):
            return  # only training forwards (eval and teacher passes run under no_grad)
        x = x.detach().abs().float()
        total = x.reshape(-1, x.shape[-1]).sum(0)
        if key in self.sums and self.sums[key].shape == total.shape:
            self.sums[key] += total
            self.counts[key] += x.numel() // x.shape[-1]
        else:
            self.sums[key], self.counts[key] = total, x.numel() // x.shape[-1]

    def _pre_hook(self, key):
        def hook(module, args):
            self._record(key, args[0])

        return hook

    def _post_hook(self, key):
        def hook(module, args, output):
            self._record(key, output)

        return hook

    def scores(self, groups, element_masks=None):
        # Pruned structures' activations are zero already (masked), so no element masks are needed.
        out = {}
        for g in groups:
            rows = []
            for module, which, ids in g.sites:
                key = (id(module), which)
                if key in self.sums and len(self.sums[key]) == len(ids):
                    rows.append((self.sums[key] / max(self.counts[key], 1), ids))
            out[g.name] = g.collect(rows)
        return out

    def on_pruned(self):
        self.sums.clear()
        self.counts.clear()

    def state_dict(self, names):
        # The sums since the last pruning step, by module name: a resumed run scores on the same tokens.
        modules = {id(m): n for n, m in self.model.named_modules()}
        out = {}
        for (module, which), total in self.sums.items():
            if module in modules:
                out[f"{modules[module]}::{which}::sum"] = total
                out[f"{modules[module]}::{which}::count"] = torch.tensor(self.counts[(module, which)])
        return out

    def load_state_dict(self, tensors, params):
        modules = dict(self.model.named_modules())
        for key, value in tensors.items():
            name, which, kind = key.rsplit("::", 2)
            if name in modules and kind == "sum":
                site = (id(modules[name]), which)
                self.sums[site] = value.to(next(self.model.parameters()).device)
                self.counts[site] = int(tensors[f"{name}::{which}::count"])

    def close(self):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.on_pruned()


def build_importance(name: str, beta1: float = 0.85, beta2: float = 0.95, seed: int = 0) -> Importance:
    """The importance metric registered as `name` (`homodistil_hf.registry`), built as a run's flags would."""
    args = SimpleNamespace(importance_beta1=beta1, importance_beta2=beta2, pruning_seed=seed, seed=seed)
    return importance_class(name).from_config(args)
