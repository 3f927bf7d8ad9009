"""Homotopic depth pruning: layers are scored while the student trains, the ones chosen for removal fade to the
identity on the pruning schedule, and are then removed (physically) or stay the identity (masks).

Fading. Each layer chosen for removal gets a factor alpha that falls from 1 to 0 (`DepthSchedule.factor`: on the
width schedule's curve, or linearly over one pruning period with `--layer_choice sequential`), and the layer's
output y = L(x) becomes, by `--layer_fade`:
- 'output': alpha L(x) + (1 - alpha) x, the layer's output mixed with its input (a convex mix of two streams of the
  usual scale, whatever the layer's norms are: the same code for pre- and post-LayerNorm families);
- 'branches': every residual branch b of the layer (the modules the adapter's `depth_parts` lists: attention and FFN
  output projections) scaled by alpha, and in post-LayerNorm encoders each sublayer's output LN(x + alpha b) becomes
  alpha LN(x + alpha b) + (1 - alpha) x, with x the stream entering the sublayer. (Mixing in the unnormalised sum
  z = x + alpha b instead, alpha LN(z) + (1 - alpha) z, is the identity at 0 too, but z is not normalised: on
  all-MiniLM-L6-v2 a first layer at alpha 0.89 put values of 28 (0.5: 53) into the stream, against 7 to 10 anywhere
  else, and the attention KL became inf at the next step.)
At alpha = 0 the layer computes its input exactly either way, so removing it (`surgery.prune_model` with a `depth`
selection) changes nothing. When layers are chosen and how alpha falls is `schedule.DepthSchedule`'s: once
the scores cover a pruning period, all at once (`--layer_choice at_start`: one scoring, one fade), or a few at each
pruning step by the scores so far (`sequential`); `auto`, the default, picks one by whether widths are pruned too.

Scores (one number per layer, smoothed by an EMA with --importance_beta1, over the steps of the importance window):
- 'cosine' (default, measured best on MiniLM: README, 'Depth'): 1 - cos(layer input, layer output), averaged over
  tokens (ShortGPT's block influence, Minitron's depth score), measured in the training forward passes;
- 'gate': the sensitivity of a scalar gate g on the layer's residual branches, |g dL/dg|, with
  g dL/dg = sum over the branches of <dL/dy, y> (y the branch output), taken from the activations' gradients;
- 'last': no score, the last layers go (a baseline).
The lowest-scored layers go (ties: the later layer first).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from ..arch import ArchAdapter
from ..config import LAYER_CHOICES, LAYER_FADES, LAYER_IMPORTANCES


class LayerFader:
    """Forward hooks that score layers and fade the chosen ones, keyed by teacher layer.

    `install(ids)` binds to the model's current layers (`ids[i]`: the teacher layer at position i). `alpha` maps a
    teacher layer to its factor (absent: 1, no change at all); `fade` is how the factor acts (module docstring).
    """

    def __init__(self, model: nn.Module, adapter: ArchAdapter, num_layers: int, metric: str = "cosine",
                 beta: float = 0.85, fade: str = "output"):
        if metric not in LAYER_IMPORTANCES:
            raise ValueError(f"layer importance {metric!r} is not one of {LAYER_IMPORTANCES}")
        if fade not in LAYER_FADES:
            raise ValueError(f"layer fade {fade!r} is not one of {LAYER_FADES}")
        self.model, self.adapter, self.metric, self.beta, self.fade = model, adapter, metric, beta, fade
        self.alpha: dict[int, float] = {}
        self.recording = metric != "last"
        self.ema = torch.zeros(num_layers, dtype=torch.float64)  # [T] smoothed score per teacher layer
        self._sums: dict[int, torch.Tensor] = {}  # this step's raw values (gate: signed g dL/dg; cosine: sum)
        self._counts: dict[int, int] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self._streams: dict[tuple[int, int], torch.Tensor] = {}  # the stream entering a layer (0) / sublayer
        self._next: set[tuple[int, int]] = set()  # (layer, sublayer) with a post-norm after the first
        # (layer choice, first choice step) this run follows: fixed at its start, saved, so a resumed run keeps it
        self.plan: tuple[str, int] | None = None

    # --- hooks ------------------------------------------------------------------------------------------------------
    def install(self, ids: list[int]) -> None:
        """(Re)install the hooks over the model's current layers; `ids[i]` is the teacher layer at position i."""
        self.remove()
        branches = self.fade == "branches"
        for t, parts in zip(ids, self.adapter.depth_parts(self.model), strict=True):
            post_norms = parts.post_norms if branches else []
            self._next |= {(int(t), i) for i in range(1, len(post_norms))}
            if branches or self.metric == "gate":  # (the gate's score is read from the branches either way)
                for branch in parts.branches:
                    self.handles.append(branch.register_forward_hook(self._branch_hook(int(t), scale=branches)))
            if post_norms or not branches:
                self.handles.append(parts.layer.register_forward_pre_hook(self._input_hook(int(t)), with_kwargs=True))
            for i, norm in enumerate(post_norms):
                self.handles.append(norm.register_forward_hook(self._norm_hook(int(t), i)))
            if self.metric == "cosine":  # (before the mix: it scores the layer's own output)
                self.handles.append(parts.layer.register_forward_hook(self._layer_hook(int(t)), with_kwargs=True))
            if not branches:
                self.handles.append(parts.layer.register_forward_hook(self._output_hook(int(t))))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self._streams.clear()
        self._next.clear()

    def _branch_hook(self, t: int, scale: bool):
        def hook(module, args, output):
            a = self.alpha.get(t, 1.0) if scale else 1.0
            y = output if a == 1.0 else output * a
            if self.recording and self.metric == "gate" and module.training and y.requires_grad:
                value = y.detach()
                y.register_hook(lambda grad: self._add(t, (grad.float() * value.float()).sum().detach()))
            return y

        return hook

    def _input_hook(self, t: int):
        def hook(module, args, kwargs):
            self._streams[(t, 0)] = args[0] if args else kwargs.get("hidden_states")

        return hook

    def _norm_hook(self, t: int, i: int):
        """Post-LN sublayer i: out = alpha LN(x + alpha b) + (1 - alpha) x, x the stream entering the sublayer (the
        layer's input, then the previous sublayer's output)."""

        def hook(module, args, output):
            a = self.alpha.get(t, 1.0)
            x = self._streams.pop((t, i), None)
            if a != 1.0:
                output = output * a + x.to(output.dtype) * (1.0 - a)
            if (t, i + 1) in self._next:
                self._streams[(t, i + 1)] = output
            return output

        return hook

    def _output_hook(self, t: int):
        """--layer_fade output: y = alpha L(x) + (1 - alpha) x, x the layer's input."""

        def hook(module, args, output):
            x = self._streams.pop((t, 0), None)
            a = self.alpha.get(t, 1.0)
            if a == 1.0:
                return None
            y = output[0] if isinstance(output, tuple | list) else output
            y = y * a + x.to(y.dtype) * (1.0 - a)
            return (y, *output[1:]) if isinstance(output, tuple | list) else y

        return hook

    def _layer_hook(self, t: int):
        def hook(module, args, kwargs, output):
            if not (self.recording and module.training):
                return None
            x = args[0] if args else kwargs.get("hidden_states")
            y = output[0] if isinstance(output, tuple | list) else output
            with torch.no_grad():
                change = 1.0 - F.cosine_similarity(x.float(), y.float(), dim=-1)  # [batch, tokens]
                self._add(t, change.sum(), change.numel())
            return None

        return hook

    def _add(self, t: int, value: torch.Tensor, count: int = 1) -> None:
        self._sums[t] = self._sums[t] + value if t in self._sums else value
        self._counts[t] = self._counts.get(t, 0) + count

    # --- scores -----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> None:
        """Fold the step's values into the EMA (once per optimizer step, after the backward passes): gate |sum of
        g dL/dg over the accumulation window|, cosine the mean over its tokens. Under several processes the values
        are those of the global batch (each rank saw its own micro-batches: sums and counts are all-reduced, the
        gate's sum averaged like the gradients), so every rank holds the scores a single process would."""
        device = next(self.model.parameters()).device  # (NCCL reduces GPU tensors only)
        both = torch.zeros(2, len(self.ema), dtype=torch.float64, device=device)  # [sums; counts] per teacher layer
        if self._sums:
            layers = torch.tensor(list(self._sums), device=device)
            both[0, layers] = torch.stack([v.detach().to(device, torch.float64) for v in self._sums.values()])
            both[1, layers] = torch.tensor([float(self._counts[t]) for t in self._sums], dtype=torch.float64,
                                           device=device)
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if world > 1:
            dist.all_reduce(both)
        sums, counts = both.cpu()  # (one device sync per step)
        for t in counts.nonzero().reshape(-1).tolist():
            v = abs(float(sums[t]) / world) if self.metric == "gate" else float(sums[t] / counts[t])
            self.ema[t] = self.beta * self.ema[t] + (1.0 - self.beta) * v
        self._sums.clear()
        self._counts.clear()

    def choose(self, kept: list[int], target: int) -> list[int]:
        """The `len(kept) - target` kept teacher layers to remove: the lowest scores (ties: later layers first;
        'last': the last layers)."""
        k = max(0, len(kept) - target)
        if self.metric == "last":
            return sorted(kept[len(kept) - k:]) if k else []
        order = sorted(kept, key=lambda t: (float(self.ema[t]), -t))
        return sorted(order[:k])

    def discard(self) -> None:
        """Forget this step's values (a step outside the importance window)."""
        self._sums.clear()
        self._counts.clear()

    def stop_recording(self) -> None:
        self.recording = False
        self._sums.clear()
        self._counts.clear()

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {"layer_scores": self.ema.clone(), "recording": torch.tensor(int(self.recording))}
        if self.plan is not None:
            out["plan"] = torch.tensor([LAYER_CHOICES.index(self.plan[0]), self.plan[1]])
        return out

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        if "layer_scores" in tensors:
            self.ema = tensors["layer_scores"].to(torch.float64).clone()
        if "recording" in tensors:
            self.recording = bool(int(tensors["recording"])) and self.metric != "last"
        if "plan" in tensors:
            choice, first = tensors["plan"].tolist()
            self.plan = (LAYER_CHOICES[int(choice)], int(first))


def optimizer_dropper(optimizer: torch.optim.Optimizer) -> Callable[[list[nn.Parameter]], None]:
    """A listener that removes parameters (of removed layers) from the optimizer: its groups and its state."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer

    def drop(params: list[nn.Parameter]) -> None:
        gone = {id(p) for p in params}
        for group in inner.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in gone]
        for p in params:
            inner.state.pop(p, None)

    return drop
