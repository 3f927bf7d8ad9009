"""`PruningCallback`: runs the pruning loop inside the Trainer.

Events used:
- `on_train_begin`: fix the schedule from the run's length; let the optimizer state follow physical slices; bind
  to the student's parameters as the Trainer prepared them (FSDP2 replaces them with sharded DTensors).
- `on_pre_optimizer_step`: gradients of the step are complete (and synchronised under DDP); update importance, and
  on pruning steps prune *before* the update, so the step's update already applies to the smaller student. Under
  FSDP2 each rank scores the shard it holds and per-structure sums are all-reduced (see `sharding.py`), so every
  rank computes the same scores; rank 0's decision is broadcast in any case.

- `on_train_begin`, under --lr_rewind: the learning-rate schedule's functions are wrapped so that it starts again
  after the last pruning step (`rewound`); a function of the step alone, so a resumed run is wrapped the same way.
- `on_step_begin`: the fading layers' factor for this step's forward passes, `DepthSchedule.factor(step)` (a
  function of the step alone, so a resumed run fades exactly as the uninterrupted one).
- Compaction (masks under several processes): once pruning is done, the loop is stopped after that step and
  `HomoDistilTrainer.train` makes the student physically smaller on every rank, then trains on (`compaction.py`).
- Depth, in `on_pre_optimizer_step` before the widths: layer scores update in the importance window; the layers to
  remove are chosen (once the scores cover a pruning period, all at once or some at each pruning step:
  `DepthSchedule`) and start fading; when their factor reaches 0 they are removed (physically, their optimizer
  state dropped) or stay the identity (masks).

Checkpointing and resuming are done by `HomoDistilTrainer` (the state must be restored before weights load).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from transformers import TrainerCallback

from ..config import resolve_step
from ..errors import UserError
from .depth import optimizer_dropper
from .pruner import Pruner
from .schedule import DepthSchedule, WidthSchedule, rewound
from .surgery import optimizer_slicer

logger = logging.getLogger(__name__)


class PruningCallback(TrainerCallback):
    """Scores and prunes the student on the schedule of `HomoDistilConfig` (see `Pruner`)."""

    def __init__(self, pruner: Pruner):
        self.pruner = pruner
        self.schedule: WidthSchedule | None = None  # fixed at the start of training, once the run's length is known
        self.depth: DepthSchedule | None = None

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        pruner = self.pruner
        # Under FSDP2 the Trainer has just sharded the student: its parameters are new (DTensor) objects.
        pruner.rebind()
        start, end = resolve_step(args.prune_start, state.max_steps), resolve_step(args.prune_end, state.max_steps)
        end = max(end, start)
        self.schedule = WidthSchedule(pruner.initial, pruner.target, start, end, args.prune_every,
                                      args.pruning_schedule)
        choice = DepthSchedule.resolve_choice(args.layer_choice, prunes_widths=pruner.target != pruner.initial,
                                              causal_lm=pruner.adapter.causal_lm)
        depth = DepthSchedule.after_scores(self.schedule, pruner.num_layers - pruner.target_layers, choice)
        if pruner.fader is not None:  # a resumed run goes on with the plan it started with (saved with the scores)
            saved, planned = pruner.fader.plan, (depth.choice, depth.widths.start)
            if saved is not None and saved != planned:
                logger.warning("resumed: layers are chosen as the checkpoint's run chose them (%s, from step %d), "
                               "not as this run's flags would (%s, from step %d)", *saved, *planned)
                depth = DepthSchedule(replace(self.schedule, start=saved[1]), depth.to_remove, saved[0])
            pruner.fader.plan = (depth.choice, depth.widths.start)
        self.depth = depth
        if optimizer is not None and pruner.physical:
            pruner.listeners = [optimizer_slicer(optimizer)]
            pruner.drop_listeners = [optimizer_dropper(optimizer)]
        if args.lr_rewind:
            rewind_schedule(lr_scheduler, self.schedule.last_pruning_step + 1, state.max_steps)
        if end > state.max_steps:
            logger.warning("pruning ends at step %d, after the last step (%d): the target will not be reached; "
                           "lower --prune_end or raise --max_steps", end, state.max_steps)
        logger.info("HomoDistil: pruning %s -> %s, %s schedule from step %d to %d, every %d steps, %s importance, "
                    "%s", pruner.initial, pruner.target, args.pruning_schedule, start, end, args.prune_every,
                    pruner.importance.name, "physical" if pruner.physical else "masks")

    def on_step_begin(self, args, state, control, **kwargs):
        if self.depth is not None and self.pruner.state.fading_layers:
            self.pruner.set_alpha(self.depth.factor(state.global_step))

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        pruner, step = self.pruner, state.global_step
        window = self.in_importance_window(step)
        if window:
            pruner.importance.step()
        if pruner.fader is not None and pruner.fader.recording:
            pruner.fader.step() if window else pruner.fader.discard()  # layer scores: the window's steps only
        self.depth_step(step)
        if self.should_prune(step):
            widths = self.schedule.widths_at(step)
            pruner.prune_to(widths)
            # The widths the model now has (the schedule's widths can be wider than a resumed state: never claim them).
            logger.info("step %d: pruned to %s (sparsity %.3f)", step, pruner.state.shape, pruner.sparsity())
            if pruner.done:
                pruner.importance.close()  # free the score buffers: nothing more to prune
        if pruner.done and pruner.compact_when_done and not pruner.physical:
            self.request_compaction()

    def request_compaction(self) -> None:
        """Masks under several processes, pruning done: `HomoDistilTrainer.train` stops the Trainer's loop after this
        step, compacts the student on every rank and trains on (`compaction.py`, which sets the loop's stop flag and
        keeps apart a stop that another callback asks for)."""
        if not self.pruner.compaction_due:
            logger.info("pruning done: the student is compacted after this step, then training goes on")
        self.pruner.compaction_due = True

    def depth_step(self, step: int) -> None:
        """Remove the fading layers once their factor is 0; choose the next layers to remove (`DepthSchedule`)."""
        pruner, depth = self.pruner, self.depth
        if pruner.fader is None or depth is None or pruner.depth_done or step < depth.widths.start:
            return
        if pruner.state.fading_layers and depth.factor(step) == 0.0:
            logger.info("step %d: layers %s removed", step, pruner.drop_faded())
        if not pruner.layers_chosen and depth.is_choice_step(step):
            count = depth.chosen_by(step) - pruner.layers_removed_or_fading
            if count > 0:
                chosen = pruner.choose_layers(count)
                pruner.set_alpha(depth.new_factor(step))
                logger.info("step %d: layers %s chosen for removal (%s, %s), fading out", step, chosen,
                            pruner.fader.metric, depth.choice)
            if pruner.state.fading_layers and depth.new_factor(step) == 0.0:  # one-shot, or a run resumed late
                logger.info("step %d: layers %s removed", step, pruner.drop_faded())

    def should_prune(self, step: int) -> bool:
        """Whether `step` is a pruning step whose widths differ from the current ones."""
        schedule, pruner = self.schedule, self.pruner
        if schedule is None or pruner.done or step < schedule.start:
            return False
        if schedule.widths_at(step) == pruner.state.shape or pruner.state.shape == pruner.target:
            return False
        # Past the window (e.g. resumed late), catch up at once.
        return schedule.is_pruning_step(step) or step >= schedule.end

    def in_importance_window(self, step: int) -> bool:
        """Whether importance statistics must be updated at `step` (one pruning period before the window on)."""
        if self.schedule is None or self.pruner.done:
            return False
        lo, hi = self.schedule.importance_window()
        return lo <= step <= hi


def rewind_schedule(lr_scheduler, at: int, total: int) -> None:
    """--lr_rewind: make a `LambdaLR` scheduler (what `transformers.get_scheduler` builds for every schedule but
    reduce_lr_on_plateau, which the config refuses) replay its schedule from step `at` (see `rewound`)."""
    lambdas = getattr(lr_scheduler, "lr_lambdas", None)
    if lambdas is None:
        raise UserError(f"--lr_rewind needs a step-wise learning-rate schedule; {type(lr_scheduler).__name__} has none")
    lr_scheduler.lr_lambdas = [lambda step, f=f: f(rewound(step, at, total)) for f in lambdas]
    logger.info("learning rate rewound after the last pruning step: the schedule starts again at step %d", at)
