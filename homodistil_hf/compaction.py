"""Compaction under several processes: the student trains masked during the pruning window (a DDP- or
FSDP2-wrapped model's parameters cannot change shape), then becomes physically smaller on every rank for the rest
of the run, so that a multi-process run gets cheaper as it prunes, as a single process does.

How (issue 21's "checkpoint and continue", kept in memory). Once pruning is done, `PruningCallback` stops the
Trainer's loop after that step; `HomoDistilTrainer.train` then, on every rank alike:
1. takes the optimizer state by parameter name (`get_optimizer_state_dict`, full tensors; FSDP2: gathered one
   tensor at a time into rank 0's CPU memory, the other ranks keeping none);
2. takes the student as a plain module (FSDP2: a full copy gathered from the shards; DDP: the module itself) and
   slices it to the pruning state (`Pruner.compact`), the optimizer state following every slice, and the removed
   layers' entries dropped;
3. writes a hand-off folder (`_homodistil-compaction` in --output_dir: the Trainer's state and each rank's RNG) and
   trains on from it with the compact student: the Trainer wraps it afresh (a new DDP reducer, or a new FSDP2
   sharding), builds a new optimizer and scheduler and loads their states (FSDP2: rank 0 sends the sliced state one
   tensor at a time and each rank keeps its shard, `broadcast_from_rank0`), skips the batches already seen and
   restores the RNG, as on any resume. The folder is removed when training ends.
The run's callbacks see one training: the first loop's end (and, when it stopped inside an epoch, that epoch's end)
and the second loop's start (and that epoch's start again) are not passed on, except the start to the pruning
callback, which binds to the new model; the first loop writes no summary and deletes no checkpoint; the second
loop's summary covers the whole run. A checkpoint of the compaction step itself, written before the switch, holds
the masked student.

Costs: during the switch every rank holds a full copy of the student (FSDP2: gathered to the CPU, sliced there, then
moved to its device); the full optimizer state (twice the student for Adam) is held once: under FSDP2 in rank 0's
CPU memory, under DDP by each rank as in training (it is not sharded there). The second loop skips the batches the
first one trained on by reading them again, as any Trainer resume does: with a streamed (iterable) dataset that means
reading the first part of the stream again. Optimizers whose state is not shaped like the parameters (Adafactor,
8-bit) are refused up front with pruning targets (`config.ELEMENTWISE_OPTIMIZERS`).

Checkpoints written after compaction hold the compact student (`pruning_layout.json`: physical); resuming from one
compacts the fresh copy of the teacher before the weights load; a run in masks mode refuses them in one line.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch
from transformers.trainer_utils import TrainOutput

from .distributed import compacts_after_pruning
from .errors import UserError
from .pruning.callback import PruningCallback
from .pruning.pruner import check_checkpoint, checkpoint_is_physical
from .pruning.sharding import any_sharded, full_copy

HANDOFF = "_homodistil-compaction"  # ("_": never uploaded by the Trainer's Hub pushes)
TRAINER_STATE = "trainer_state.json"


def optimizer_state_followers(optim_state: dict, model: torch.nn.Module):
    """Listeners that keep an optimizer state dict keyed by parameter name (`get_optimizer_state_dict`'s format:
    {"state": {name: {key: tensor}}, "param_groups": [{"params": [name, ...], ...}]}) in step with surgery on
    `model`: (on each slice of a parameter, cut its state tensors of the old shape the same way; on removed layers,
    drop their parameters' entries; once the surgery is over, `rename()` re-keys the entries by the parameters' new
    names: a removed layer shifts the names of the layers after it)."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    state = optim_state["state"]

    def on_slice(param, dim: int, index: torch.Tensor, old_shape: torch.Size) -> None:
        for name in names.get(id(param), ()):
            entry = state.get(name, {})
            for key, value in entry.items():
                if torch.is_tensor(value) and value.shape == old_shape:
                    entry[key] = value.index_select(dim, index.to(value.device)).contiguous()

    def on_drop(params) -> None:
        gone = {name for p in params for name in names.get(id(p), ())}
        for name in gone:
            state.pop(name, None)
        for group in optim_state["param_groups"]:
            group["params"] = [name for name in group["params"] if name not in gone]

    def rename() -> None:
        now: dict[int, list[str]] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            now.setdefault(id(p), []).append(name)
        new = {old: now[pid][i] for pid, olds in names.items() if pid in now for i, old in enumerate(olds)}
        optim_state["state"] = {new[k]: v for k, v in state.items()}
        for group in optim_state["param_groups"]:
            group["params"] = [new[name] for name in group["params"]]

    return on_slice, on_drop, rename


class CompactionMixin:
    """`train()` in two loops around the compaction (see the module docstring). Reads the trainer's `pruner`."""

    _handoff: dict | None = None
    _carry: dict = {}
    _continuing = False
    _first_runtime = 0.0
    _epoch_open = False
    _pruner_loaded_from: str | None = None
    _stop_asked = False  # another callback's stop, on the step the compaction is due

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        pruner = self.pruner
        if pruner is not None:
            pruner.compact_when_done = compacts_after_pruning(self.args, self.is_fsdp_enabled)
        if pruner is None or not pruner.compact_when_done or pruner.physical:
            return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
        if resume_from_checkpoint is True:
            from transformers.trainer_utils import get_last_checkpoint

            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No valid checkpoint found in output directory ({self.args.output_dir})")
        if resume_from_checkpoint:
            self._compact_for_resume(str(resume_from_checkpoint))
        handler = self.callback_handler
        events = {name: getattr(handler, name) for name in ("on_train_begin", "on_epoch_begin", "on_epoch_end")}
        call_event = handler.call_event
        self._stop_asked = pruner.compaction_due = False  # (a run that raised before its compaction left it set)

        def call_event_keeping_stops_apart(event, args, state, control, **kw):
            # Once the compaction is due the loop stops after this step for it; a stop any other callback asks for
            # (on this step's events: early stopping, a time limit) is kept apart and ends the run instead.
            if pruner.compaction_due:
                control.should_training_stop = self._stop_asked
            control = call_event(event, args, state, control, **kw)
            if pruner.compaction_due:
                self._stop_asked, control.should_training_stop = control.should_training_stop, True
            return control

        def on_train_begin(args, state, control, **kw):  # the second loop: the pruning callback only (it rebinds)
            if not self._continuing:
                return events["on_train_begin"](args, state, control, **kw)
            everyone, handler.callbacks = handler.callbacks, [c for c in handler.callbacks
                                                              if isinstance(c, PruningCallback)]
            for name, value in self._carry.items():  # the loop's logging state, as if it had not stopped
                setattr(self, name, value)
            try:
                return events["on_train_begin"](args, state, control, **kw)
            finally:
                handler.callbacks = everyone

        def on_epoch_begin(args, state, control, **kw):  # the epoch the first loop began goes on
            if self._continuing and self._epoch_open:
                self._epoch_open = False
                return control
            return events["on_epoch_begin"](args, state, control, **kw)

        def on_epoch_end(args, state, control, **kw):  # the first loop stopped inside an epoch: it has not ended
            if self._compacts_now() and not float(state.epoch or 0).is_integer():
                return control
            return events["on_epoch_end"](args, state, control, **kw)

        handler.on_train_begin, handler.on_epoch_begin, handler.on_epoch_end = (on_train_begin, on_epoch_begin,
                                                                              on_epoch_end)
        handler.call_event = call_event_keeping_stops_apart
        try:
            output = super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)
            if self._compacts_now():
                handoff = self._compact_student()
                # Not a new start: no start-of-training evaluation, the same batches skipped, callbacks kept as
                # they are in memory.
                keep = {"eval_on_start": False, "ignore_data_skip": False,
                        "restore_callback_states_from_checkpoint": False}
                saved = {k: getattr(self.args, k) for k in keep}
                for k, v in keep.items():
                    setattr(self.args, k, v)
                try:
                    output = super().train(handoff, trial, ignore_keys_for_eval, **kwargs)
                finally:
                    for k, v in saved.items():
                        setattr(self.args, k, v)
                self.accelerator.wait_for_everyone()
                if self.is_local_process_zero():
                    shutil.rmtree(handoff, ignore_errors=True)
            pruner.compaction_due = False
        finally:
            for name, event in events.items():
                setattr(handler, name, event)
            handler.call_event = call_event
            self._continuing = False
        return output

    def _compacts_now(self) -> bool:
        """Whether the loop stopped for the compaction (steps remain to train the compact student, and no other
        callback asked the run to stop: then it ends here, masked, and its export is the same compact model)."""
        return self.pruner.compaction_due and self.state.global_step < self.state.max_steps and not self._stop_asked

    def _finalize_training(self, trial, num_train_samples, start_time):
        """The first loop ends without the end of training (no summary log, no checkpoint clean-up, no
        `on_train_end`); the second's summary covers the whole run (its time counted from the first loop's start)."""
        if self.pruner is not None and self._compacts_now():
            self._first_runtime = time.time() - start_time
            return TrainOutput(self.state.global_step, 0.0, {})
        if self._continuing:
            start_time -= self._first_runtime
        return super()._finalize_training(trial, num_train_samples, start_time)

    def _compact_student(self) -> str:
        """Slice the student and its optimizer state on every rank and write the hand-off; returns its folder."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        args, pruner = self.args, self.pruner
        model = self.accelerator.unwrap_model(self.model)
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        sharded = any_sharded(model)
        # FSDP2: only rank 0 gathers the state, into CPU memory (the others get {}; it is sent back in shards).
        optim_state = get_optimizer_state_dict(model, inner, options=StateDictOptions(full_state_dict=True,
                                                                                      cpu_offload=sharded))
        plain = full_copy(model).train() if sharded else model  # (FSDP2: sliced on the CPU, then moved)
        on_slice, on_drop, rename = optimizer_state_followers(optim_state or {"state": {}, "param_groups": []}, plain)
        pruner.listeners, pruner.drop_listeners = [on_slice], [on_drop]
        pruner.compact(plain)
        pruner.listeners, pruner.drop_listeners = [], []
        rename()
        if sharded:
            plain.to(args.device)
        self._handoff = {"optimizer": optim_state, "scheduler": self.lr_scheduler.state_dict()}
        # The loop's logging state (the loss summed since the last log, ...) carries over to the second loop.
        self._carry = {"_tr_loss": self._tr_loss.detach().clone(), "_total_loss_scalar": self._total_loss_scalar,
                       "_globalstep_last_logged": self._globalstep_last_logged,
                       "_initial_global_step": self._initial_global_step}
        self._epoch_open = not float(self.state.epoch or 0).is_integer()  # stopped inside an epoch
        folder = Path(args.output_dir) / HANDOFF
        if self.is_local_process_zero():  # every node reads it (no shared file system needed)
            folder.mkdir(parents=True, exist_ok=True)
            partial = folder / f"{TRAINER_STATE}.{args.process_index}"
            self.state.save_to_json(str(partial))
            os.replace(partial, folder / TRAINER_STATE)
        self.accelerator.wait_for_everyone()
        self._save_rng_state(str(folder))
        self.accelerator.wait_for_everyone()
        # The compact student in place of the old one: the Trainer wraps it, builds its optimizer and scheduler.
        self.model = self.model_wrapped = plain
        self.optimizer = self.lr_scheduler = None
        self._continuing = True
        pruner.compaction_due = False
        return str(folder)

    def _compact_for_resume(self, checkpoint: str) -> None:
        """A checkpoint written after compaction holds the compact student: bring the fresh copy of the teacher to its
        state and compact it before anything wraps it, so that its weights load."""
        pruner = self.pruner
        if not checkpoint_is_physical(checkpoint):
            return
        check_checkpoint(checkpoint, pruner.target, pruner.initial, pruner.num_layers, pruner.target_layers)
        pruner.load(checkpoint)
        if not pruner.done:
            raise UserError(f"--resume_from_checkpoint {checkpoint} holds a student physically pruned part of the way "
                            "(a single-process run's checkpoint), which several processes cannot prune further; "
                            "resume it on one process")
        pruner.compact()
        self._pruner_loaded_from = checkpoint

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if self._continuing and Path(resume_from_checkpoint).name == HANDOFF:
            return  # the compact student holds the weights already
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if not (self._continuing and checkpoint is not None and Path(checkpoint).name == HANDOFF):
            return super()._load_optimizer_and_scheduler(checkpoint)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        model = self.accelerator.unwrap_model(self.model)
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        # strict=False: a parameter that never had a gradient (e.g. a pooler no loss reads) had no state either.
        # FSDP2: rank 0 holds the state (the others {}) and sends it tensor by tensor; every rank keeps its shards.
        set_optimizer_state_dict(model, inner, self._handoff["optimizer"],
                                 options=StateDictOptions(full_state_dict=True, strict=False,
                                                          broadcast_from_rank0=any_sharded(model)))
        self.lr_scheduler.load_state_dict(self._handoff["scheduler"])
        self._handoff = None
