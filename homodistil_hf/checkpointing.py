"""Checkpoints, resume and export for `HomoDistilTrainer`: the Trainer's save and load hooks, overridden so that
checkpoints hold the student as it trains plus the pruning state, and the final save is the compact stock model
(`export.export_model`), published with its model card (`push_to_hub`).

A mixin (`class HomoDistilTrainer(CheckpointExportMixin, Trainer)`): it reads the trainer's `pruner`,
`correspondence`, `teacher`, `teacher_shape`, `target` and `_recipe_terms()`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError
from .export import export_model, push_export, save_args_json
from .pruning.pruner import check_checkpoint, checkpoint_is_physical
from .pruning.sharding import all_reduce_sum, any_sharded, full_copy, local
from .pruning.state import PruningState
from .pruning.targets import count_backbone_params


class NonFiniteLossError(UserError):
    """The loss became NaN or inf: training stops so that no checkpoint holds broken weights."""


class CheckpointExportMixin:
    def _check_finite_weights(self, what: str) -> None:
        """An update that overflowed leaves NaN / inf weights even when its step's loss was finite: refuse to save
        them (the previous checkpoint stays the last one). Sharded (FSDP2) weights: each rank checks its shard and
        one all-reduce tells every rank (so all of them refuse alike)."""
        model = self.accelerator.unwrap_model(self.model)
        named = list(model.named_parameters())
        bad = torch.tensor([float(not torch.isfinite(local(p)[0]).all()) for _, p in named])
        if any_sharded(model):
            all_reduce_sum([bad])
        first = int(bad.nonzero()[0]) if bad.any() else None
        if first is not None:
            raise NonFiniteLossError(f"the weights became non-finite at step {self.state.global_step} "
                                     f"({named[first][0]}); the {what} was not written; lower --learning_rate (or "
                                     "set --max_grad_norm), then resume from the last checkpoint")

    def _save_checkpoint(self, model, trial):
        self._check_finite_weights("checkpoint")
        self._saving_checkpoint = True
        config = self.accelerator.unwrap_model(self.model).config
        cls = type(config)
        if self.pruner is not None and not self.pruner.done:
            # Mid-pruning widths need not pass the family's config validation (e.g. Llama's hidden % heads == 0,
            # which only the target must meet): the checkpoint is for resuming, where the student is rebuilt from
            # the teacher and the pruning state. Skip the validation for this save only.
            config.__class__ = type(cls.__name__, (cls,), {"validate": lambda self: None})
        try:
            super()._save_checkpoint(model, trial)
        finally:
            config.__class__ = cls
            self._saving_checkpoint = False

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints: the student as it trains, plus the pruning state. Otherwise: the compact, stock model."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self._saving_checkpoint:  # (checkpoints are checked in _save_checkpoint)
            self._check_finite_weights("model")
        if self._saving_checkpoint or self.correspondence is None:
            super().save_model(output_dir, _internal_call)
            if self._saving_checkpoint and self.pruner is not None and self.args.should_save:
                self.pruner.save(output_dir)
            return
        if self.args.should_save or any_sharded(self.accelerator.unwrap_model(self.model)):
            self.export(output_dir)

    def export(self, output_dir: str | os.PathLike) -> nn.Module | None:
        """Write the compact student (stock config, safetensors, tokenizer, model card) to `output_dir`.

        A sharded (FSDP2) student is gathered first: every rank must call this (the gathers are collective), and only
        the process that saves (`should_save`, rank 0) writes; the others return None."""
        model = self.accelerator.unwrap_model(self.model)
        if self.pruner is not None:
            if not self.pruner.done:
                # An export is the target shape or nothing: a half-pruned model would pass for the real thing.
                raise UserError(f"the student was not exported: training stopped at step {self.state.global_step} "
                                f"before pruning reached the targets (it has {self.pruner.state.shape}, the target "
                                f"is {self.pruner.target}); lower --prune_end or raise --max_steps / "
                                "--num_train_epochs, then train again (or resume from a checkpoint)")
            state, physical = self.pruner.state, self.pruner.physical
        else:
            state, physical = self.correspondence.state, True
        if any_sharded(model):
            # Collective: every rank takes part in the gathers; only the process that writes keeps the full copy.
            model = full_copy(model, keep=self.args.should_save)
            if model is None:
                return None
        compact = export_model(model, output_dir, state, physical, tokenizer=self.processing_class,
                               info=self._export_info(), teacher=self.accelerator.unwrap_model(self.teacher))
        self._exported = (str(output_dir), self.state.global_step)
        return compact

    def _export_info(self) -> dict[str, Any]:
        a = self.args
        teacher = self.accelerator.unwrap_model(self.teacher)
        return {
            "teacher": a.teacher_name_or_path or getattr(teacher.config, "_name_or_path", None),
            "teacher_shape": self.teacher_shape.as_dict(),
            "teacher_num_layers": teacher.config.num_hidden_layers,
            "teacher_params": count_backbone_params(teacher.config),
            "target": self.target.as_dict() if self.target else None,
            "model_name": Path(a.output_dir).name,
            "repo_id": a.hub_model_id,
            "recipe": {
                "steps": self.state.global_step, "learning_rate": a.learning_rate,
                "batch_size": a.per_device_train_batch_size * a.gradient_accumulation_steps * a.world_size,
                **self._recipe_terms(),
                "importance": a.importance, "schedule": a.pruning_schedule,
                "prune_start": a.prune_start, "prune_end": a.prune_end, "prune_every": a.prune_every,
            },
        }

    def create_model_card(self, *args, **kwargs) -> None:
        """`push_to_hub` writes the model card: keep ours (written at export) when there is one."""
        if self.correspondence is not None and (Path(self.args.output_dir) / "homodistil.json").is_file():
            return
        super().create_model_card(*args, **kwargs)

    def push_to_hub(self, *args, **kwargs):
        """Export the compact model to `output_dir`, then upload it (Trainer.push_to_hub saves checkpoints only)."""
        # Export unless this very state is exported there already (a new export would drop the results and
        # trainer state the run wrote after the first one, as files of the previous export).
        exported = getattr(self, "_exported", None) == (str(self.args.output_dir), self.state.global_step)
        if self.correspondence is not None and not exported and (
                self.args.should_save or any_sharded(self.accelerator.unwrap_model(self.model))):
            self.export(self.args.output_dir)
        self._saving_checkpoint = True  # the Trainer's own save inside push_to_hub must not overwrite the export
        try:
            if self.correspondence is None:
                return super().push_to_hub(*args, **kwargs)
            return push_export(self.args, *args, **kwargs) if self.is_world_process_zero() else None
        finally:
            self._saving_checkpoint = False

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The Trainer's save, with the training arguments as JSON instead of a pickle (`training_args.bin`)."""
        super()._save(output_dir, state_dict)
        save_args_json(self.args, output_dir if output_dir is not None else self.args.output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        pruner = self.pruner
        if pruner is not None and getattr(self, "_pruner_loaded_from", None) != str(resume_from_checkpoint):
            state = check_checkpoint(resume_from_checkpoint, pruner.target, pruner.initial, pruner.num_layers,
                                     pruner.target_layers)
            full = PruningState.full(pruner.initial, pruner.num_layers)
            if not pruner.physical and checkpoint_is_physical(resume_from_checkpoint) and not state.equals(full):
                raise UserError(f"--resume_from_checkpoint {resume_from_checkpoint} holds a physically pruned student "
                                "(compacted, or from a single-process run), which masks cannot load; resume it with "
                                "--pruning_mode auto")
            if pruner.physical and checkpoint_is_physical(resume_from_checkpoint) is False and not state.equals(full):
                raise UserError(f"--resume_from_checkpoint {resume_from_checkpoint} holds a masked, full-size student "
                                "(written with --pruning_mode masks, or on several processes before compaction); "
                                "resume it with --pruning_mode masks")
            pruner.rebind()  # under FSDP2 this runs after the student was sharded
            pruner.load(resume_from_checkpoint)
        super()._load_from_checkpoint(resume_from_checkpoint, model)


