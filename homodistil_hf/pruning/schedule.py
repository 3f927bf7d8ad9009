"""Width schedules: how each width falls from the teacher's to the target between `start` and `end` steps.

`cubic` (the paper's, after Zhu & Gupta 2017): w(t) = target + (initial - target) * (1 - p)^3 with p the fraction of
the pruning window elapsed, so most structures go early, while the student is still close to the teacher, and the
last ones slowly. `linear` uses (1 - p); `oneshot` jumps to the target at `start`. Widths are rounded up, so they never
grow back and reach the target exactly at `end`.

Key/value heads and query heads per group fall separately, so groups stay uniform at every step (a physically pruned
model needs that). The hidden width falls on its own curve even where the family's config validation wants
hidden % heads == 0 (only the target must satisfy it: a mid-pruning checkpoint saves without that validation, see
`HomoDistilTrainer._save_checkpoint`): tying hidden to the head count would make it fall only when whole key/value
groups go, i.e. all at once for most decoder targets.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..arch import Shape


@dataclass(frozen=True)
class WidthSchedule:
    """Widths at every optimizer step, for one run."""

    initial: Shape
    target: Shape
    start: int
    end: int
    every: int = 10
    kind: str = "cubic"

    def fraction_kept(self, step: int) -> float:
        """1 before the window, 0 after it, and the schedule's curve in between."""
        if step < self.start:
            return 1.0
        if self.kind == "oneshot" or step >= self.end or self.end <= self.start:
            return 0.0
        p = (step - self.start) / (self.end - self.start)
        return (1.0 - p) ** 3 if self.kind == "cubic" else 1.0 - p

    def widths_at(self, step: int) -> Shape:
        """The widths the student should have after pruning at `step`."""
        keep = self.fraction_kept(step)

        def width(lo: int, hi: int) -> int:
            # Round up (with a little slack for float error) so widths only fall and hit the target at `end`.
            return min(hi, max(lo, math.ceil(lo + (hi - lo) * keep - 1e-9)))

        a, b = self.initial, self.target
        kv = width(b.kv_heads, a.kv_heads)
        heads = kv * width(b.group_size, a.group_size)
        return Shape(width(b.hidden, a.hidden), heads, width(b.head_dim, a.head_dim), width(b.intermediate, a.intermediate), kv)

    def is_pruning_step(self, step: int) -> bool:
        """Whether a pruning step happens at `step`: every `every` steps inside the window, and at its end."""
        if step < self.start:
            return False
        if self.kind == "oneshot":
            return step == self.start
        return (step - self.start) % self.every == 0 or step == self.end

    @property
    def last_pruning_step(self) -> int:
        """The step at which the targets are reached (`start` for a one-shot schedule, else `end`)."""
        return self.start if self.kind == "oneshot" else max(self.start, self.end)

    def importance_window(self) -> tuple[int, int]:
        """Steps during which importance scores must be kept up to date (one pruning period of warm-up)."""
        return max(0, self.start - self.every), self.end


def rewound(step: int, at: int, total: int) -> float:
    """The learning-rate schedule's step to use at optimizer `step` under --lr_rewind (learning-rate rewinding, Renda
    et al. 2020): `step` itself before `at` (the first step after the last pruning step); from `at` on, the schedule
    replayed from 0, stretched over the `total - at` steps left (so `total` maps to `total`: the schedule ends where it
    would have). Unchanged if `at >= total`."""
    if step < at or at >= total:
        return step
    return (step - at) * total / (total - at)


@dataclass(frozen=True)
class DepthSchedule:
    """When the layers to remove are chosen and how their factor alpha falls (`depth.py` fades and removes them).

    `at_start`: all `to_remove` layers are chosen at the window's start and fade together on the widths' curve
    (alpha = `fraction_kept`). `sequential`: at each pruning step p, enough more layers are chosen that the count
    chosen is what the widths' curve has removed by the next pruning step q (rounded like the widths: kept layers
    round up); they fade linearly from 1 at p to 0 at q and are removed at q. A one-shot schedule chooses all at the
    start at alpha 0 in both. Every value is a function of the step alone, so a resumed run fades as the
    uninterrupted one."""

    widths: WidthSchedule
    to_remove: int
    choice: str = "at_start"

    @staticmethod
    def resolve_choice(choice: str, prunes_widths: bool, causal_lm: bool = False) -> str:
        """--layer_choice auto: `sequential` for an encoder teacher whose widths are pruned too, else `at_start`.
        Measured, 3 seeds each (README, 'Depth'): MiniLM 6 -> 3 layers with the 192 / 6 / 768 widths, sequential
        0.8023 ± 0.0042 STS-B vs at_start 0.7966 ± 0.0003 (one-shot removal 0.7949 ± 0.0044), depth alone 0.8315 ±
        0.0012 vs 0.8370 ± 0.0007; SmolLM2-135M 30 -> 15 layers with widths to 25% of the parameters, at_start 360.9 ±
        11.2 perplexity vs sequential 373.0 ± 1.6 (one-shot removal 424.6 ± 17.9), depth alone sequential 146.2 vs
        at_start 126.4 (seed 42)."""
        if choice != "auto":
            return choice
        return "sequential" if prunes_widths and not causal_lm else "at_start"

    @classmethod
    def after_scores(cls, widths: WidthSchedule, to_remove: int, choice: str = "at_start") -> DepthSchedule:
        """Layers are chosen once their scores cover a pruning period: at the window's start when that is at least
        `every` steps in (scores are kept from one period before it), else at the widths' next pruning step, start +
        `every` (or the window's end, if sooner), the fade running from there to the end on the same curve. (The
        widths do not move before that step either: the curve starts at 1.) A one-shot schedule chooses at its start,
        when it prunes the widths, from the scores there are (give it a start of at least `every`, as the
        benchmarks' one-shot baselines have). On
        SmolLM2-135M, 30 -> 15 layers, choosing at step 0 from one batch gave 132.4 ± 7.0 perplexity, at step 10
        127.6 ± 1.2 (3 seeds; README, 'Depth')."""
        first = widths.start
        if widths.kind != "oneshot" and widths.start < widths.every:
            first = min(widths.start + widths.every, widths.end)  # (the widths' next pruning step)
        return cls(dataclasses.replace(widths, start=first), to_remove, choice)

    def factor(self, step: int) -> float:
        """The factor of the layers fading at `step` (1: unchanged, 0: the identity)."""
        w = self.widths
        if self.choice == "at_start" or w.fraction_kept(step) == 0.0 or step <= w.start:
            return w.fraction_kept(step)
        chosen = w.start + (step - 1 - w.start) // w.every * w.every  # the last pruning step before `step`
        due = min(chosen + w.every, w.end)
        return max(0.0, (due - step) / (due - chosen))

    def is_choice_step(self, step: int) -> bool:
        """Whether layers may be chosen at `step` (given that some are still to choose)."""
        w = self.widths
        if self.choice == "at_start":
            return step >= w.start
        return w.is_pruning_step(step) or step >= w.end

    def chosen_by(self, step: int) -> int:
        """How many layers in all must have been chosen once `step`'s choice is made."""
        w = self.widths
        if self.choice == "at_start" or w.fraction_kept(step) == 0.0:
            return self.to_remove if step >= w.start else 0
        nxt = min(step + w.every, w.end)
        return self.to_remove - min(self.to_remove, math.ceil(self.to_remove * w.fraction_kept(nxt) - 1e-9))

    def new_factor(self, step: int) -> float:
        """The factor of layers chosen at `step`, until the next step begins (this step's forward ran without them
        fading): `at_start` the widths' curve, `sequential` 1; 0 once the window is over (they go at once)."""
        keep = self.widths.fraction_kept(step)
        return keep if self.choice == "at_start" else float(keep > 0)
