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

    def importance_window(self) -> tuple[int, int]:
        """Steps during which importance scores must be kept up to date (one pruning period of warm-up)."""
        return max(0, self.start - self.every), self.end
