"""The run shared by the multi-process Trainer worker (`tests/fsdp_trainer_worker.py`: FSDP2 or DDP) and its
single-process reference (`tests/test_fsdp_trainer.py`): the same teacher, data, targets and schedule; only the
sharding differs. Pruning ends at global step 6 (the 7th of 10 updates), so a multi-process run compacts the student
after that update and trains the last 3 compact.

Exact equality across world sizes: the Trainer samples sequentially, and with `world` ranks of
`GLOBAL_BATCH // world` examples each, rank r gets examples [r * b, (r + 1) * b) of every global batch (accelerate's
batch-sampler sharding), the single process all of them. Every row has the same length and the same number of
labelled tokens, so each rank's loss (a sum divided by its own counts) is exactly half of the global batch's, and the
averaged gradients equal the single process's. Dropout is 0.
"""

import torch
from datasets import Dataset
from transformers import TrainerCallback

from homodistil_hf import HomoDistilConfig
from homodistil_hf.testing import tiny_decoder, tiny_model

GLOBAL_BATCH = 4
STEPS = 10
LENGTH = 16
TARGETS = {
    "bert": dict(target_hidden_size=32, target_num_attention_heads=2, target_intermediate_size=48),
    "llama": dict(target_hidden_size=32, target_num_attention_heads=2, target_num_key_value_heads=1,
                  target_intermediate_size=48),
}
# Depth and width: a 3-layer Llama to 2 layers (one layer faded out and removed) and the widths above.
TARGETS["llama_depth"] = dict(TARGETS["llama"], target_num_hidden_layers=2)
LAYER_CLASS = {"bert": "BertLayer", "llama": "LlamaDecoderLayer", "llama_depth": "LlamaDecoderLayer"}


def teacher(family: str):
    # A headless BERT: the masked-LM head cannot be prepared by accelerate's FSDP2 (see tests/test_fsdp_trainer.py).
    if family == "bert":
        return tiny_model("bert", "base", seed=0)
    return tiny_decoder("llama", seed=0, **({"num_hidden_layers": 3} if family == "llama_depth" else {}))


def dataset(family: str, n: int = GLOBAL_BATCH * STEPS) -> Dataset:
    """No padding. Llama: every token is a label (next-token loss, logits KD, hidden states); BERT (headless):
    no labels (hidden-state and attention terms)."""
    g = torch.Generator().manual_seed(1)
    rows = []
    for _ in range(n):
        ids = torch.randint(5, 200, (LENGTH,), generator=g).tolist()
        row = {"input_ids": ids, "attention_mask": [1] * LENGTH}
        if family.startswith("llama"):
            row["labels"] = ids
        rows.append(row)
    return Dataset.from_list(rows)


def config(family: str, output_dir: str, world: int, save_steps: int = 0, sharding: str = "fsdp") -> HomoDistilConfig:
    """The run's arguments; `world` > 1: FSDP2 (`sharding` "fsdp") or DDP ("ddp") over gloo, pruning mode left on
    'auto' (masks, then compaction once pruning is done); one process: masks asked for explicitly (auto would be
    physical there). `save_steps`: checkpoints every so many steps (0: none)."""
    kw = dict(
        output_dir=output_dir, report_to="none", use_cpu=True, disable_tqdm=True, seed=0, max_steps=STEPS,
        per_device_train_batch_size=GLOBAL_BATCH // world, train_sampling_strategy="sequential",
        learning_rate=3e-3, optim="adamw_torch", lr_scheduler_type="constant", max_grad_norm=1.0, logging_steps=2,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500, importance="taylor_structure", prune_every=2, prune_end=6, **TARGETS[family])
    if world > 1 and sharding.startswith("ddp"):  # "ddp_masks": masks to the end (no compaction)
        kw.update(ddp_backend="gloo", pruning_mode="masks" if sharding == "ddp_masks" else "auto")
    elif world > 1:
        kw.update(ddp_backend="gloo", pruning_mode="auto", fsdp=True,
                  fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": [LAYER_CLASS[family]],
                               "reshard_after_forward": True})
    else:
        kw.update(pruning_mode="masks")
    return HomoDistilConfig(**kw)


class Recorder(TrainerCallback):
    """The pruning state after every optimizer step at which it changed, and what the student's parameters were
    (DTensors or not) while it trained."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.decisions: list[dict] = []
        self.sharded_steps = 0
        self.physical_steps: list[int] = []  # optimizer steps taken with a physically pruned (compact) student
        self.numel: list[int] = []  # the student's parameter count (full, not per shard) at each optimizer step
        self.param_types: set[str] = set()
        self.grad_types: set[str] = set()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        for p in model.parameters():
            self.param_types.add(type(p.data).__name__ if not hasattr(p, "placements") else "DTensor")
            if p.grad is not None:
                self.grad_types.add("DTensor" if hasattr(p.grad, "placements") else type(p.grad).__name__)
        self.sharded_steps += all(hasattr(p, "placements") for p in model.parameters())
        if self.trainer.pruner.physical:
            self.physical_steps.append(state.global_step + 1)
        self.numel.append(sum(p.numel() for p in model.parameters()))

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = self.trainer.pruner.state.to_dict()  # full, or a resumed checkpoint's state

    def on_optimizer_step(self, args, state, control, **kwargs):
        current = self.trainer.pruner.state.to_dict()
        if current != self.last:
            self.decisions.append({"step": state.global_step, "state": current})
            self.last = current
