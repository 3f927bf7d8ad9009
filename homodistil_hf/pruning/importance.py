"""Importance metrics: callables that return one score per structure of a `Group`.

- `sensitivity` (the paper's, PLATON style): per weight, I = |w * grad|, smoothed I_bar = b1 I_bar + (1 - b1) I and
  an uncertainty U_bar = b2 U_bar + (1 - b2) |I - I_bar|; the weight's score is I_bar * U_bar, summed over each
  structure. Needs a gradient every step of the pruning window (`step()`).
- `magnitude`: |w| summed over each structure.
- `activation`: mean |activation| of each structure over the tokens seen since the last pruning step.
- `random`: uniform random scores (seeded), the ablation's floor.

All metrics share one interface: `step()` each optimizer step inside the window, `scores(groups)` at a pruning
step, `on_slice` to follow physical surgery, and `state_dict` / `load_state_dict` (tensors only) for checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from .groups import Group, prunable_parameters
from .sharding import all_reduce_sum, is_sharded, local, narrow_to

IMPORTANCES: dict[str, type[Importance]] = {}


def register(cls: type[Importance]) -> type[Importance]:
    """Class decorator: make a metric available as `--importance <cls.name>` (the config's choices read this)."""
    IMPORTANCES[cls.name] = cls
    return cls


class Importance:
    """Base class. Subclasses implement `scores(groups)` or `element_scores()`."""

    name = "base"

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


@register
class MagnitudeImportance(Importance):
    name = "magnitude"

    @torch.no_grad()
    def element_scores(self):
        return {p: p.detach().abs().float() for p in prunable_parameters(self.groups)}


@register
class SensitivityImportance(Importance):
    """PLATON-style smoothed sensitivity times uncertainty (Zhang et al., 2022), per weight."""

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


@register
class StructureSensitivityImportance(Importance):
    """The PLATON statistics kept per structure instead of per weight: memory O(structures), not O(weights).

    The smoothed sensitivity is linear in the per-weight |w * grad|, so its sum over a structure is the EMA of the
    structure's summed sensitivity I_s = sum |w * grad|: that is kept exactly. The uncertainty is defined at the same
    level, U_s = EMA(|I_s - EMA(I_s)|), and the score is EMA(I_s) * U_s (the per-weight metric sums the per-weight
    products instead). Buffers are in the teacher's coordinates, so physical pruning never has to slice them.
    Under masks, pruned weights are masked out of I_s (`masks`, set by the pruner).
    """

    name = "sensitivity_structure"

    def __init__(self, beta1: float = 0.85, beta2: float = 0.95):
        self.beta1, self.beta2 = beta1, beta2
        self.ema: dict[str, torch.Tensor] = {}
        self.unc: dict[str, torch.Tensor] = {}
        self.masks: dict[nn.Parameter, list[torch.Tensor]] = {}  # per pruned dim, a 0/1 vector

    @classmethod
    def from_config(cls, args) -> StructureSensitivityImportance:
        return cls(args.importance_beta1, args.importance_beta2)

    def set_masks(self, axis_masks):
        self.masks = axis_masks

    def attach(self, model, groups, coords=None):
        super().attach(model, groups, coords)
        # param -> every (group, dim, ids) that reads it, so each |w * grad| is formed once per step.
        self.uses: dict[nn.Parameter, list[tuple[Group, int, torch.Tensor]]] = {}
        for g in groups:
            for p, dim, ids in g.slices:
                self.uses.setdefault(p, []).append((g, dim, ids))

    def _index(self, g: Group) -> tuple[torch.Tensor | None, int]:
        """(teacher index of the current structures or None for the identity, the teacher's count)."""
        if self.coords is None or g.name not in self.coords:
            return None, g.size
        return self.coords[g.name]

    # The per-weight |w * grad| is formed in blocks of rows of at most this many elements: the statistics are one
    # number per structure, so the only memory a step adds is this block (an unchunked 30k x 384 embedding alone
    # would be a 47 MB temporary, ~7% of a MiniLM run's training memory).
    chunk_elements = 1 << 18

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
                block = self._elementwise(weight[start:stop].float() * grad[start:stop].float())
                self._add_block(sums, p, uses, block, at)
        if sharded:
            device = next(iter(sums.values())).device if sums else None
            for g in self.groups:  # every rank reduces the same groups in the same order
                sums.setdefault(g.name, torch.zeros(g.size, device=device))
            all_reduce_sum([sums[g.name] for g in self.groups])
        self._update(sums)

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

    @staticmethod
    def _elementwise(wg: torch.Tensor) -> torch.Tensor:
        """What each weight adds to its structures' sums: here its sensitivity |w * grad| (in place)."""
        return wg.abs_()

    def _update(self, sums: dict[str, torch.Tensor]) -> None:
        """Fold this step's per-structure sums into the EMAs."""
        b1, b2 = 1.0 - self.beta1, 1.0 - self.beta2
        for g in self.groups:
            if g.name not in sums:
                continue
            index, size = self._index(g)
            value = sums[g.name]
            if g.name not in self.ema:
                self.ema[g.name] = torch.zeros(size, device=value.device)
                self.unc[g.name] = torch.zeros(size, device=value.device)
            ema, unc = self.ema[g.name], self.unc[g.name]
            if index is None:  # every structure is current: in place
                ema.lerp_(value, b1)
                unc.lerp_((value - ema).abs(), b2)
            else:  # only the current structures move; pruned ones keep their last values (never read again)
                index = index.to(value.device)
                new = torch.lerp(ema[index], value, b1)
                ema[index] = new
                unc[index] = torch.lerp(unc[index], (value - new).abs(), b2)

    def scores(self, groups, element_masks=None):
        out = {}
        for g in groups:
            if g.name not in self.ema:
                out[g.name] = torch.zeros(g.view)
                continue
            score = self._score(g.name)
            index, _ = self._index(g)
            out[g.name] = (score if index is None else score[index.to(score.device)]).reshape(g.view).cpu()
        return out

    def _score(self, name: str) -> torch.Tensor:
        return self.ema[name] * self.unc[name]

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


@register
class StructureSensitivityEMAImportance(StructureSensitivityImportance):
    """Per-structure sensitivity without the uncertainty factor: the score is EMA(I_s) alone (an ablation of
    `sensitivity_structure`, whose structure-level uncertainty is much smoother than the per-weight one)."""

    name = "sensitivity_structure_ema"

    def _score(self, name: str) -> torch.Tensor:
        return self.ema[name]


@register
class StructureSecondMomentImportance(StructureSensitivityEMAImportance):
    """EMA of the structure's summed squared sensitivity, sum (w * grad)^2: one value per structure, like
    `sensitivity_structure`, but keeping the per-weight fluctuation the summed |w * grad| averages away.

    Why: the per-weight metric sums I_bar_j * U_bar_j over the structure. Where a weight's uncertainty scales with its
    mean sensitivity (U_bar_j ~ c I_bar_j), that sum is ~ c sum I_bar_j^2, and EMA(sum I_j^2) = sum EMA(I_j^2)
    = sum (I_bar_j^2 + variance): the mean-squared part plus a variance part, the role the uncertainty plays. It is
    linear in per-weight statistics, so it is kept exactly per structure.
    """

    name = "sensitivity_structure_sq"

    @staticmethod
    def _elementwise(wg: torch.Tensor) -> torch.Tensor:
        return wg.square_()


@register
class TaylorStructureImportance(StructureSensitivityEMAImportance):
    """Group Taylor importance (Molchanov et al., 2019): EMA over steps of (sum over the structure of w * grad)^2,
    the squared first-order change of the loss when the whole structure is removed. One value per structure."""

    name = "taylor_structure"

    @staticmethod
    def _elementwise(wg: torch.Tensor) -> torch.Tensor:
        return wg  # signed: the structure's sum is the first-order loss change

    def _update(self, sums):
        super()._update({k: v.square() for k, v in sums.items()})


@register
class RandomImportance(Importance):
    """Random scores from a seeded generator (the same on every rank)."""

    name = "random"

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


@register
class ActivationImportance(Importance):
    """Mean |activation| per structure over the training tokens seen since the last pruning step."""

    name = "activation"

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
    """The importance metric registered as `name` (see `IMPORTANCES`)."""
    if name not in IMPORTANCES:
        raise ValueError(f"unknown importance {name!r}; registered: {', '.join(IMPORTANCES)}")
    from types import SimpleNamespace

    return IMPORTANCES[name].from_config(SimpleNamespace(importance_beta1=beta1, importance_beta2=beta2,
                                                         pruning_seed=seed, seed=seed))
