"""The flags `run_glue.py` and `run_squad.py` share: the model, tokenizer and LoRA flags (`ModelArguments`) and the
data flags common to both tasks (`DataArgumentsBase`). Plain data, checked in `__post_init__`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError


@dataclass
class ModelArguments:
    """Which model and tokenizer to fine-tune, and whether to train LoRA adapters instead of all weights."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Model to fine-tune: a local folder or a Hub id. A backbone with no task head (e.g. a "
            "BertModel) gets a freshly initialized head. With --teacher_name_or_path (task-specific HomoDistil) it "
            "defaults to the teacher: the student starts as an exact copy of the fine-tuned teacher."
        },
    )
    config_name: str | None = field(default=None, metadata={"help": "Config name or path, if not the model's."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer name or path, if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache models and datasets from the Hub."})
    model_revision: str = field(default="main", metadata={"help": "Model version: a branch, tag or commit id."})
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={
            "help": "Re-initialize a checkpoint's head whose shape does not fit the task (e.g. 3 labels instead of 2)."
        },
    )
    use_lora: bool = field(
        default=False,
        metadata={
            "help": "Train LoRA adapters (PEFT) plus the task head instead of all weights. The saved model is "
            "merged: a plain checkpoint that needs no peft."
        },
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling alpha (the update is scaled by alpha/r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated names of the linear layers to adapt. Default: the attention query and "
            "value projections (query,value for BERT-like models)."
        },
    )

    def __post_init__(self):
        if self.lora_r < 1:
            raise UserError(f"--lora_r must be a positive integer (got {self.lora_r})")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise UserError(f"--lora_dropout must be in [0, 1) (got {self.lora_dropout})")


@dataclass
class DataArgumentsBase:
    """Data flags shared by the GLUE and SQuAD scripts."""

    pad_to_max_length: bool = field(
        default=False,
        metadata={
            "help": "Pad every example to --max_seq_length. By default batches are padded dynamically to their "
            "longest example, which is faster on CPU."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training examples (quick runs, debugging)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N examples of each evaluation set."}
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Re-tokenize instead of using cached datasets."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})

    def check_positive(self, *names: str) -> None:
        """`UserError` unless each named int flag is unset or >= 1."""
        for name in names:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name} must be a positive integer (got {value})")

    def map_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `Dataset.map` for tokenization."""
        return {"num_proc": self.preprocessing_num_workers, "load_from_cache_file": not self.overwrite_cache}
