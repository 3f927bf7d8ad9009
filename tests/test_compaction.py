"""Compaction (`homodistil_hf/compaction.py`) on one process: the path several processes take (masks while pruning,
then the student sliced and training continued in a second loop of the Trainer), switched on here by patching
`compacts_after_pruning`, against the same run in masks mode to the end. The 2-rank DDP and FSDP2 runs are in
tests/test_fsdp_trainer.py and tests/test_distributed.py; this file checks what the Trainer's user sees: the same
student, one continuous log, one start-of-training evaluation, one summary, nothing left in --output_dir."""

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback, default_data_collator

import homodistil_hf.compaction as compaction
from homodistil_hf import HomoDistilTrainer

sys.path.insert(0, str(Path(__file__).parent))
from fsdp_trainer_case import config, dataset, teacher  # noqa: E402


class Events(TrainerCallback):
    def __init__(self):
        self.names: list[str] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.names.append("train_begin")

    def on_train_end(self, args, state, control, **kwargs):
        self.names.append("train_end")

    def on_evaluate(self, args, state, control, **kwargs):
        self.names.append(f"evaluate@{state.global_step}")

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.names.append(f"epoch_begin@{state.global_step}")

    def on_epoch_end(self, args, state, control, **kwargs):
        self.names.append(f"epoch_end@{state.global_step}")

    def on_save(self, args, state, control, **kwargs):
        self.names.append(f"save@{state.global_step}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "train_runtime" in logs:  # what a report_to integration receives as the run's summary
            self.names.append(f"summary@{state.global_step}:{logs['train_loss']:.6f}")


def _run(family: str, out: Path, compact: bool, monkeypatch, **overrides):
    monkeypatch.setattr(compaction, "compacts_after_pruning", lambda args, fsdp=False: compact)
    args = config(family, str(out), world=1)
    args.eval_strategy, args.eval_steps, args.eval_on_start, args.logging_steps = "steps", 5, True, 1
    for key, value in overrides.items():
        setattr(args, key, value)
    data = dataset(family)
    trainer = HomoDistilTrainer(teacher=teacher(family), args=args, train_dataset=data, eval_dataset=data.select(
        range(4)), data_collator=default_data_collator)
    events = Events()
    trainer.add_callback(events)
    output = trainer.train()
    trainer.save_model()
    return trainer, output, events.names


@pytest.mark.parametrize("family", ["llama", "llama_depth", "bert"])
def test_compaction_trains_the_masked_runs_student_with_one_continuous_log(tmp_path, monkeypatch, family):
    masked, masked_out, masked_events = _run(family, tmp_path / "masks", False, monkeypatch)
    compact, compact_out, events = _run(family, tmp_path / "compact", True, monkeypatch)
    assert not masked.pruner.physical and compact.pruner.physical  # compacted, and the masks run was not

    # One training as callbacks see it: one begin, one end, the start evaluation once, evaluations on schedule, one
    # summary (the run's: its loss over every step).
    assert events == masked_events
    assert [e for e in events if not e.startswith("summary")] == [
        "train_begin", "evaluate@0", "epoch_begin@0", "evaluate@5", "evaluate@10", "epoch_end@10", "train_end"]
    assert sum(e.startswith("summary@10") for e in events) == 1
    # The same log, step for step (the loss of each step, the widths, the evaluation loss), and one summary.
    def steady(log):  # (times and throughputs differ between any two runs)
        return [{k: v for k, v in h.items() if not k.endswith(("_runtime", "_per_second")) and k != "total_flos"}
                for h in log]

    history, reference = steady(compact.state.log_history), steady(masked.state.log_history)
    assert [h.get("step") for h in history] == [h.get("step") for h in reference]
    for a, b in zip(history, reference, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)
    assert sum("train_runtime" in h for h in compact.state.log_history) == 1
    assert compact_out.global_step == masked_out.global_step == 10
    assert compact_out.training_loss == pytest.approx(masked_out.training_loss, rel=1e-5)
    assert compact_out.metrics["train_loss"] == pytest.approx(masked_out.metrics["train_loss"], rel=1e-5)

    # The same exported student; nothing of the switch left behind.
    a, b = load_file(tmp_path / "compact" / "model.safetensors"), load_file(tmp_path / "masks" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    assert not (tmp_path / "compact" / "_homodistil-compaction").exists()


def test_optimizer_state_follows_slices_drops_and_renames():
    """The name-keyed optimizer state follows surgery: slices cut the moments, a removed layer's entries go, and
    the layers after it take their new names."""
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 3), nn.Linear(3, 2))
    state = {"state": {f"{i}.{k}": {"exp_avg": torch.arange(float(p.numel())).view_as(p), "step": torch.tensor(1.0)}
                       for i, m in enumerate(model) for k, p in m.named_parameters()},
             "param_groups": [{"lr": 1.0, "params": [f"{i}.{k}" for i, m in enumerate(model)
                                                     for k, _ in m.named_parameters()]}]}
    on_slice, on_drop, rename = compaction.optimizer_state_followers(state, model)
    w = model[0].weight
    old = state["state"]["0.weight"]["exp_avg"].clone()
    index = torch.tensor([0, 2])
    with torch.no_grad():
        w.data = w.data.index_select(0, index)
    on_slice(w, 0, index, old.shape)
    assert torch.equal(state["state"]["0.weight"]["exp_avg"], old.index_select(0, index))
    assert state["state"]["0.weight"]["step"] == 1.0  # scalars untouched
    on_drop(list(model[1].parameters()))
    del model[1]
    rename()
    assert set(state["state"]) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    assert state["param_groups"][0]["params"] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert state["state"]["1.weight"]["exp_avg"].shape == model[1].weight.shape  # the old layer 2's


def test_pruning_done_at_the_last_step_needs_no_second_loop(tmp_path, monkeypatch):
    """The targets reached at the very last step: nothing is left to train compact, so there is no compaction and
    the run ends as any run does (callbacks see the end of training; the export is the masked student's)."""
    monkeypatch.setattr(compaction, "compacts_after_pruning", lambda args, fsdp=False: True)
    args = config("llama", str(tmp_path / "out"), world=1)
    args.prune_end = args.max_steps - 1  # (the last optimizer step is global step max_steps - 1)
    trainer = HomoDistilTrainer(teacher=teacher("llama"), args=args, train_dataset=dataset("llama"),
                                data_collator=default_data_collator)
    events = Events()
    trainer.add_callback(events)
    trainer.train()
    assert trainer.pruner.done and not trainer.pruner.physical
    assert [e for e in events.names if e.startswith("train_")] == ["train_begin", "train_end"]
    assert sum(e.startswith("summary@") for e in events.names) == 1
    trainer.save_model()
    assert (tmp_path / "out" / "model.safetensors").is_file()


class StopWhenPruned(TrainerCallback):
    """Asks the run to stop on the step its pruning ends (the step the compaction is due), in `event`."""

    def __init__(self, trainer, event: str):
        self.trainer, self.steps = trainer, []
        setattr(self, event, self._stop)

    def _stop(self, args, state, control, **kwargs):
        if self.trainer.pruner.done and not self.steps:
            self.steps.append(state.global_step)
            control.should_training_stop = True


@pytest.mark.parametrize("where", ["last:on_pre_optimizer_step", "first:on_step_end", "last:on_log"])
def test_a_stop_asked_on_the_compaction_step_ends_the_run(tmp_path, monkeypatch, where):
    """Another callback (early stopping, a time limit) asks to stop on the very step the compaction is due, before
    or after the pruning callback: the run ends there as any run does (one end of training, one summary), the
    student masked, its export the compact stock model; no second loop, no hand-off left."""
    monkeypatch.setattr(compaction, "compacts_after_pruning", lambda args, fsdp=False: True)
    order, event = where.split(":")
    args = config("llama", str(tmp_path / "out"), world=1)
    args.logging_steps = 1
    trainer = HomoDistilTrainer(teacher=teacher("llama"), args=args, train_dataset=dataset("llama"),
                                data_collator=default_data_collator)
    stopper, events = StopWhenPruned(trainer, event), Events()
    if order == "first":
        trainer.callback_handler.callbacks.insert(0, stopper)
    else:
        trainer.add_callback(stopper)
    trainer.add_callback(events)
    output = trainer.train()
    assert stopper.steps and output.global_step < args.max_steps  # (stopped, and before any compaction below)
    assert trainer.pruner.done and not trainer.pruner.physical and not trainer.pruner.compaction_due
    assert [e for e in events.names if e.startswith("train_")] == ["train_begin", "train_end"]
    assert sum(e.startswith("summary@") for e in events.names) == 1
    assert not (tmp_path / "out" / compaction.HANDOFF).exists()
    trainer.save_model()
    weights = load_file(tmp_path / "out" / "model.safetensors")
    assert weights["model.layers.0.mlp.down_proj.weight"].shape[1] == args.target_intermediate_size


@pytest.mark.parametrize("overrides", [
    # epochs: 10 steps each, pruning done inside the first; evaluation and checkpoints at the ends of epochs
    dict(max_steps=20, eval_strategy="epoch", save_strategy="epoch", save_total_limit=1),
    # gradient accumulation: 2 micro-batches of 2 per optimizer step (the same global batch of 4)
    dict(per_device_train_batch_size=2, gradient_accumulation_steps=2),
    dict(ignore_data_skip=True),  # the second loop still skips the batches the first one trained on
], ids=["epochs", "accumulation", "ignore_data_skip"])
def test_compaction_keeps_what_the_trainer_settings_ask(tmp_path, monkeypatch, overrides):
    masked, _, masked_events = _run("llama", tmp_path / "masks", False, monkeypatch, **overrides)
    compact, _, events = _run("llama", tmp_path / "compact", True, monkeypatch, **overrides)
    assert compact.pruner.physical and not masked.pruner.physical
    assert events == masked_events
    losses = [h["loss"] for h in compact.state.log_history if "loss" in h]
    assert losses == pytest.approx([h["loss"] for h in masked.state.log_history if "loss" in h], rel=1e-5)
    assert sorted(p.name for p in (tmp_path / "compact").glob("checkpoint-*")) == sorted(
        p.name for p in (tmp_path / "masks").glob("checkpoint-*"))


def test_checkpoints_after_compaction_resume_compacted_and_are_refused_to_masks(tmp_path, monkeypatch):
    """A checkpoint written after the compaction holds the compact student (`pruning_layout.json`): a run that
    compacts resumes from it and ends as the uninterrupted run; a run kept in masks is refused in one line, before
    anything is written."""
    from homodistil_hf.errors import UserError

    full, _, _ = _run("llama", tmp_path / "full", True, monkeypatch, save_strategy="steps", save_steps=8)
    checkpoint = tmp_path / "full" / "checkpoint-8"
    assert (checkpoint / "pruning_layout.json").read_text() == '{"physical": true}'
    resumed = HomoDistilTrainer(teacher=teacher("llama"), args=config("llama", str(tmp_path / "again"), world=1),
                                train_dataset=dataset("llama"), data_collator=default_data_collator)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    resumed.save_model()
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name

    monkeypatch.setattr(compaction, "compacts_after_pruning", lambda args, fsdp=False: False)
    masked = HomoDistilTrainer(teacher=teacher("llama"), args=config("llama", str(tmp_path / "masked"), world=1),
                               train_dataset=dataset("llama"), data_collator=default_data_collator)
    with pytest.raises(UserError) as err:
        masked.train(resume_from_checkpoint=str(checkpoint))
    assert "\n" not in str(err.value) and "--pruning_mode auto" in str(err.value)
    assert not (tmp_path / "masked").exists() or not any((tmp_path / "masked").iterdir())
