"""Lock-step timing: several training loops in threads of one process, taking turns one optimizer step at a time.

On a shared machine the load from other processes drifts over minutes, so timing variant A for a while and then
variant B measures the drift as much as the variants. Here only one participant runs at any moment (all cores to
itself) and they alternate step by step (A1 B1 A2 B2 ...), so neighbouring steps of different variants see the same
machine. Each participant's time is the sum of its own turns; waiting for the others is never counted.

Trainer runs join through `distill_in_thread`, which calls the real `run_distill.main(argv)` (the exact command-line
code path) with a callback that ends the participant's turn after every optimizer step. Evaluation time inside a
turn is recorded separately and left out of the step time.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from transformers import TrainerCallback


@dataclass
class Segment:
    label: str
    seconds: float  # own compute time, excluding `excluded`
    excluded: float = 0.0  # e.g. evaluation inside the segment
    info: dict = field(default_factory=dict)


class Lockstep:
    """Turn-taking between named participants (in the given order)."""

    def __init__(self, names: Sequence[str]):
        self.order = list(names)
        self.active = list(names)
        self.turn = self.order[0] if self.order else None
        self.cond = threading.Condition()
        self.segments: dict[str, list[Segment]] = {n: [] for n in names}
        self._start: dict[str, float] = {}
        self._excluded: dict[str, float] = {n: 0.0 for n in names}
        self.errors: dict[str, str] = {}

    def wait_turn(self, name: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == name)
        self._start[name] = time.perf_counter()
        self._excluded[name] = 0.0

    def exclude(self, name: str, seconds: float) -> None:
        """Time inside the current turn that is not part of the step (e.g. evaluation)."""
        self._excluded[name] += seconds

    def mark(self, name: str, label: str, **info) -> None:
        """Close a segment of the current turn (without giving up the turn)."""
        now = time.perf_counter()
        total = now - self._start[name]
        self.segments[name].append(Segment(label, total - self._excluded[name], self._excluded[name], info))
        self._start[name] = now
        self._excluded[name] = 0.0

    def pass_turn(self, name: str) -> None:
        with self.cond:
            i = self.active.index(name)
            self.turn = self.active[(i + 1) % len(self.active)]
            self.cond.notify_all()

    def step(self, name: str, label: str = "step", **info) -> None:
        """End of one step: record it, let the next participant run, wait for the turn to come back."""
        self.mark(name, label, **info)
        self.pass_turn(name)
        self.wait_turn(name)

    def finish(self, name: str) -> None:
        with self.cond:
            if name not in self.active:
                return
            i = self.active.index(name)
            was_turn = self.turn == name
            self.active.remove(name)
            if was_turn:
                self.turn = self.active[i % len(self.active)] if self.active else None
            self.cond.notify_all()

    def run(self, bodies: dict[str, Callable[[], object]]) -> dict[str, object]:
        """Run each participant's body in its own thread (holding its turn from the start); returns their results.
        A participant that fails is recorded in `errors` and leaves the rotation, so the others finish."""
        results: dict[str, object] = {}

        def wrap(name, body):
            try:
                self.wait_turn(name)
                results[name] = body()
            except BaseException:  # noqa: BLE001 - reported to the caller
                self.errors[name] = traceback.format_exc()
            finally:
                self.finish(name)

        threads = [threading.Thread(target=wrap, args=(n, bodies[n]), name=f"lockstep-{n}") for n in self.order]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    # --- summaries --------------------------------------------------------------------------------------------------
    def steps(self, name: str) -> list[Segment]:
        return [s for s in self.segments[name] if s.label == "step"]


class LockstepCallback(TrainerCallback):
    """Ends the participant's turn after every optimizer step; records the student's widths at that step."""

    def __init__(self, lockstep: Lockstep, name: str):
        self.lockstep, self.name = lockstep, name
        self.trainer = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.lockstep.mark(self.name, "setup")

    def on_step_end(self, args, state, control, **kwargs):
        info = {"global_step": state.global_step}
        pruner = getattr(self.trainer, "pruner", None)
        if pruner is not None:
            shape = pruner.state.shape
            info.update(hidden=shape.hidden, heads=shape.heads, ffn=shape.intermediate, done=pruner.done)
        self.lockstep.step(self.name, "step", **info)


_local = threading.local()
_patch_lock = threading.Lock()
_patch_users = 0


def _timed_trainer_class(base):
    class LockstepTrainer(base):
        """`HomoDistilTrainer` that joins the lock-step of the thread it is built in."""

        def __init__(self, *args, **kwargs):
            ctx = getattr(_local, "ctx", None)
            callback = None
            if ctx is not None:
                callback = LockstepCallback(*ctx)
                kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), callback]
            super().__init__(*args, **kwargs)
            if callback is not None:
                callback.trainer = self
                _local.trainer = self

        def evaluate(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return super().evaluate(*args, **kwargs)
            finally:
                ctx = getattr(_local, "ctx", None)
                if ctx is not None:
                    ctx[0].exclude(ctx[1], time.perf_counter() - start)

    return LockstepTrainer


@contextmanager
def patched_run_distill():
    """Make `run_distill.main` build lock-step trainers (only in threads that joined a lock-step)."""
    global _patch_users
    from homodistil_hf.cli import run_distill

    with _patch_lock:
        if _patch_users == 0:
            run_distill._original_trainer = run_distill.HomoDistilTrainer
            run_distill.HomoDistilTrainer = _timed_trainer_class(run_distill._original_trainer)
        _patch_users += 1
    try:
        yield run_distill
    finally:
        with _patch_lock:
            _patch_users -= 1
            if _patch_users == 0:
                run_distill.HomoDistilTrainer = run_distill._original_trainer


def distill_in_thread(lockstep: Lockstep, name: str, argv: Sequence[str]) -> Callable[[], dict]:
    """A participant body that runs `run_distill.main(argv)` in lock-step."""

    def body():
        _local.ctx = (lockstep, name)
        try:
            with patched_run_distill() as run_distill:
                metrics = run_distill.main(list(argv))
            return metrics
        finally:
            _local.ctx = None

    return body
