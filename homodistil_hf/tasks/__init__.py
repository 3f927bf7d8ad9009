"""Fine-tuning and evaluation tasks (GLUE, SQuAD) and the pieces `run_glue.py` and `run_squad.py` share.

Shared here: `ModelArguments` (model, tokenizer and LoRA flags), input checks that run before anything touches the
output folder, model/tokenizer loading that turns load failures into one-line `UserError`s, `build_trainer` (the
seam where task-specific distillation plugs in), and the train / save / metrics steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, Trainer

from ..errors import UserError
from .lora import merge_lora, wrap_with_lora

logger = logging.getLogger("homodistil_hf")


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


def require_actions(training_args, model_args: ModelArguments | None = None) -> None:
    """Fail early when none of --do_train / --do_eval / --do_predict is given, or the model is missing; resolve the
    student of task-specific distillation (the teacher itself when --model_name_or_path is not given)."""
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise UserError("nothing to do: pass --do_train, --do_eval and/or --do_predict")
    if model_args is None:
        return
    teacher = training_args.teacher_name_or_path
    if model_args.model_name_or_path is None:
        if teacher is None:
            raise UserError("--model_name_or_path is required: a local model folder or a Hub id")
        model_args.model_name_or_path = teacher
    if teacher is not None and model_args.use_lora and training_args.has_targets:
        raise UserError("--use_lora cannot be combined with pruning targets (--target_*): the LoRA wrapper hides the "
                        "weights that pruning slices; drop one of them")


def check_model_paths(model_args: ModelArguments, training_args) -> None:
    """Model, teacher, tokenizer and config references that look local but do not exist, or files where a folder
    belongs, are named before anything is loaded (a Hub lookup of a mistyped folder retries for a minute)."""
    from ..validate import check_model_path

    teacher = training_args.teacher_name_or_path
    check_model_path(teacher, "--teacher_name_or_path")
    if model_args.model_name_or_path != teacher:  # (the student defaults to the teacher)
        check_model_path(model_args.model_name_or_path, "--model_name_or_path")
    check_model_path(model_args.tokenizer_name, "--tokenizer_name")
    check_model_path(model_args.config_name, "--config_name", file_ok=True)  # a config.json file is fine


def check_prune_window(model_args: ModelArguments, training_args, num_train_examples: int | None) -> None:
    """Task-specific HomoDistil must reach its targets inside the run (see `validate.check_prune_window`);
    `num_train_examples` (None when unknown before tokenization) gives the length of a run set in epochs."""
    from .. import validate

    args = training_args
    pruning = args.do_train and args.teacher_name_or_path is not None and args.has_targets
    if not pruning or model_args.model_name_or_path != args.teacher_name_or_path:
        return  # no pruning, or a student of its own (not necessarily pruned)
    if args.max_steps > 0:
        validate.check_prune_window(args, args.max_steps)
    elif num_train_examples is not None:
        validate.check_prune_window(args, validate.planned_steps(args, num_train_examples))


def check_output_dir(training_args) -> None:
    """The output folder must be writable; a training run must not overwrite a model or checkpoints already there.

    Evaluation alone may write its results next to an existing model (e.g. into the model's own folder).
    """
    from ..validate import check_output_dir as _check

    overwrite = training_args.overwrite_output_dir or not training_args.do_train
    _check(training_args.output_dir, resuming=bool(training_args.resume_from_checkpoint), overwrite=overwrite)


def load_tokenizer(model_args: ModelArguments):
    """The model's tokenizer (or --tokenizer_name's); load failures become a `UserError`."""
    name = model_args.tokenizer_name or model_args.model_name_or_path
    flag = "--tokenizer_name" if model_args.tokenizer_name else "--model_name_or_path"
    try:
        return AutoTokenizer.from_pretrained(name, cache_dir=model_args.cache_dir, revision=model_args.model_revision)
    except (OSError, ValueError) as err:
        raise UserError(f"{flag} {name}: no tokenizer could be loaded ({_first_line(err)})") from None


def load_config(model_args: ModelArguments, **kwargs):
    """The model config (or --config_name's) with task overrides such as `num_labels`."""
    name = model_args.config_name or model_args.model_name_or_path
    flag = "--config_name" if model_args.config_name else "--model_name_or_path"
    try:
        return AutoConfig.from_pretrained(
            name, cache_dir=model_args.cache_dir, revision=model_args.model_revision, **kwargs
        )
    except (OSError, ValueError) as err:
        raise UserError(f"{flag} {name}: no model config could be loaded ({_first_line(err)})") from None


def load_model(auto_class, model_args: ModelArguments, config) -> PreTrainedModel:
    """`auto_class.from_pretrained` of the model with `config`; a missing head is freshly initialized."""
    try:
        return auto_class.from_pretrained(
            model_args.model_name_or_path,
            config=config,
            cache_dir=model_args.cache_dir,
            revision=model_args.model_revision,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        )
    except (OSError, ValueError) as err:
        raise UserError(
            f"--model_name_or_path {model_args.model_name_or_path}: the model could not be loaded "
            f"({_first_line(err)}); a head of another shape needs --ignore_mismatched_sizes"
        ) from None


def maybe_wrap_lora(model: PreTrainedModel, model_args: ModelArguments, training_args, task_type: str):
    """Wrap the model with LoRA when --use_lora and training; evaluation alone uses the model as is."""
    if not model_args.use_lora:
        return model
    if not training_args.do_train:
        logger.info("--use_lora without --do_train: evaluating the model as it is")
        return model
    model = wrap_with_lora(
        model,
        task_type,
        r=model_args.lora_r,
        alpha=model_args.lora_alpha,
        dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules,
    )
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("LoRA: %d of %d parameters trainable (%.2f%%)", trainable, total, 100 * trainable / total)
    return model


class JsonArgsTrainer(Trainer):
    """The plain `Trainer` of fine-tuning runs, saving its training arguments as `training_args.json` instead of the
    pickle `training_args.bin` (outputs hold safetensors and JSON only; as `HomoDistilTrainer._save` does)."""

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        output_dir = Path(output_dir if output_dir is not None else self.args.output_dir)
        pickled = output_dir / "training_args.bin"
        if self.args.should_save and pickled.is_file():
            pickled.unlink()
            (output_dir / "training_args.json").write_text(self.args.to_json_string())


def build_trainer(model, training_args, **kwargs) -> Trainer:
    """The trainer of a fine-tuning run: a plain `Trainer`, or `HomoDistilTrainer` when a teacher is given.

    `kwargs` are the usual Trainer arguments (train_dataset, eval_dataset, data_collator, processing_class,
    compute_metrics). With `--teacher_name_or_path` set this is task-specific distillation: the fine-tuned teacher
    supervises `model` while it is pruned to the targets of the `HomoDistilConfig`.
    """
    if training_args.teacher_name_or_path is None:
        return JsonArgsTrainer(model=model, args=training_args, **kwargs)
    from ..loading import load_teacher
    from ..trainer import HomoDistilTrainer

    # The teacher is the fine-tuned task model: load it with the student's head class so it has task logits.
    unwrapped = getattr(model, "get_base_model", lambda: model)()
    teacher = load_teacher(training_args.teacher_name_or_path, auto_class=_auto_class_of(unwrapped))
    if getattr(teacher.config, "num_labels", None) != getattr(unwrapped.config, "num_labels", None):
        raise UserError(
            f"--teacher_name_or_path {training_args.teacher_name_or_path} has {teacher.config.num_labels} labels, the "
            f"task {unwrapped.config.num_labels}: distil from a teacher fine-tuned on this task"
        )
    return HomoDistilTrainer(model=model, teacher=teacher, args=training_args, **kwargs)


def _auto_class_of(model):
    """The Auto class whose head `model` has (sequence classification or question answering)."""
    from transformers import AutoModel, AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    name = type(model).__name__
    if name.endswith("ForSequenceClassification"):
        return AutoModelForSequenceClassification
    if name.endswith("ForQuestionAnswering"):
        return AutoModelForQuestionAnswering
    return AutoModel


def train(trainer: Trainer, training_args, num_examples: int) -> dict[str, Any]:
    """Train, merge LoRA adapters if any, save the model, the tokenizer, the train metrics and the trainer state."""
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    # Evaluate and save the merged model: the saved checkpoint is then exactly what was evaluated.
    merged = merge_lora(trainer.model)
    if merged is not trainer.model:
        trainer.model = trainer.model_wrapped = merged
    trainer.save_model()
    metrics = dict(result.metrics, train_samples=num_examples)
    save_metrics(trainer, "train", metrics)
    trainer.save_state()
    return metrics


def save_metrics(trainer: Trainer, split: str, metrics: dict[str, Any]) -> None:
    """Log `metrics` and write them to `<split>_results.json` and `all_results.json` (main process only)."""
    trainer.log_metrics(split, metrics)
    trainer.save_metrics(split, metrics)


def padding_collator(tokenizer, training_args, pad_to_max_length: bool):
    """Dynamic padding (to multiples of 8 under mixed precision, for tensor cores), or plain stacking when every
    example is already padded to --max_seq_length."""
    from transformers import DataCollatorWithPadding, default_data_collator

    if pad_to_max_length:
        return default_data_collator
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if training_args.fp16 or training_args.bf16 else None)


def limit(dataset, max_samples: int | None):
    """The first `max_samples` rows of `dataset` (all of them when None)."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    return dataset.select(range(max_samples))


def load_hub_dataset(name: str, config_name: str | None, cache_dir: str | None, hint: str):
    """`datasets.load_dataset` of a Hub dataset; failing to reach or find it is a `UserError` that says `hint`."""
    from datasets import load_dataset

    try:
        return load_dataset(name, config_name, cache_dir=cache_dir)
    except (OSError, ValueError) as err:  # ConnectionError (offline), DatasetNotFoundError, bad config
        raise UserError(
            f"the Hub dataset {name}{f' ({config_name})' if config_name else ''} could not be loaded "
            f"({_first_line(err)}): {hint}"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
