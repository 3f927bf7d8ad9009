"""What `run_glue.py` and `run_squad.py` do alike at run time: input checks that run before anything touches the
output folder, model/tokenizer loading that turns load failures into one-line `UserError`s, LoRA wrapping,
`build_trainer` (the seam where task-specific distillation plugs in), and the train / save / metrics steps.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, Trainer

from .. import validate
from ..data import ensure_pad_token
from ..errors import UserError
from ..export import save_args_json
from ..loading import auto_class_for, load_teacher
from ..trainer import HomoDistilTrainer
from .arguments import ModelArguments
from .lora import merge_lora, wrap_with_lora

logger = logging.getLogger("homodistil_hf")


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
    teacher = training_args.teacher_name_or_path
    validate.check_model_path(teacher, "--teacher_name_or_path")
    if model_args.model_name_or_path != teacher:  # (the student defaults to the teacher)
        validate.check_model_path(model_args.model_name_or_path, "--model_name_or_path")
    validate.check_model_path(model_args.tokenizer_name, "--tokenizer_name")
    validate.check_model_path(model_args.config_name, "--config_name", file_ok=True)  # a config.json file is fine


def check_task_prune_window(model_args: ModelArguments, training_args, num_train_examples: int | None) -> None:
    """Task-specific HomoDistil must reach its targets inside the run (see `validate.check_prune_window`);
    `num_train_examples` (None when unknown before tokenization) gives the length of a run set in epochs."""
    args = training_args
    pruning = args.do_train and args.teacher_name_or_path is not None and args.has_targets
    if not pruning or model_args.model_name_or_path != args.teacher_name_or_path:
        return  # no pruning, or a student of its own (not necessarily pruned)
    if args.max_steps > 0:
        validate.check_prune_window(args, args.max_steps)
    elif num_train_examples is not None:
        validate.check_prune_window(args, validate.planned_steps(args, num_train_examples))


def check_task_output_dir(training_args) -> None:
    """The output folder must be writable; a training run must not overwrite a model or checkpoints already there.

    Evaluation alone may write its results next to an existing model (e.g. into the model's own folder).
    """
    overwrite = training_args.overwrite_output_dir or not training_args.do_train
    validate.check_output_dir(training_args.output_dir, resuming=bool(training_args.resume_from_checkpoint), overwrite=overwrite)
    if training_args.do_train:
        validate.resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)


def load_tokenizer(model_args: ModelArguments):
    """The model's tokenizer (or --tokenizer_name's); load failures become a `UserError`."""
    name = model_args.tokenizer_name or model_args.model_name_or_path
    flag = "--tokenizer_name" if model_args.tokenizer_name else "--model_name_or_path"
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, cache_dir=model_args.cache_dir,
                                                  revision=model_args.model_revision)
    except (OSError, ValueError) as err:
        raise UserError(f"{flag} {name}: no tokenizer could be loaded ({_first_line(err)})") from None
    ensure_pad_token(tokenizer)  # a stock decoder's (Llama, GPT-2) pads with its end-of-text token, as run_distill
    if tokenizer.pad_token is None:
        raise UserError(f"{flag} {name}: the tokenizer has neither a pad nor an end-of-text token, so batches cannot "
                        "be padded; pass --tokenizer_name of one that has")
    return tokenizer


def load_task_config(model_args: ModelArguments, **kwargs):
    """The model config (or --config_name's) with task overrides such as `num_labels`."""
    name = model_args.config_name or model_args.model_name_or_path
    flag = "--config_name" if model_args.config_name else "--model_name_or_path"
    try:
        return AutoConfig.from_pretrained(
            name, cache_dir=model_args.cache_dir, revision=model_args.model_revision, **kwargs
        )
    except (OSError, ValueError) as err:
        raise UserError(f"{flag} {name}: no model config could be loaded ({_first_line(err)})") from None


def load_model(auto_class, model_args: ModelArguments, config, tokenizer=None) -> PreTrainedModel:
    """`auto_class.from_pretrained` of the model with `config`; a missing head is freshly initialized. A config
    without a pad token id gets the tokenizer's (a decoder's sequence-classification head finds each row's last
    token by it)."""
    if tokenizer is not None and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tokenizer.pad_token_id
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
        save_args_json(self.args, output_dir if output_dir is not None else self.args.output_dir)


def build_trainer(model, training_args, **kwargs) -> Trainer:
    """The trainer of a fine-tuning run: a plain `Trainer`, or `HomoDistilTrainer` when a teacher is given.

    `kwargs` are the usual Trainer arguments (train_dataset, eval_dataset, data_collator, processing_class,
    compute_metrics). With `--teacher_name_or_path` set this is task-specific distillation: the fine-tuned teacher
    supervises `model` while it is pruned to the targets of the `HomoDistilConfig`.
    """
    if training_args.teacher_name_or_path is None:
        return JsonArgsTrainer(model=model, args=training_args, **kwargs)
    # The teacher is the fine-tuned task model: load it with the student's head class so it has task logits.
    unwrapped = getattr(model, "get_base_model", lambda: model)()
    teacher = load_teacher(training_args.teacher_name_or_path, auto_class=auto_class_for(unwrapped))
    if getattr(teacher.config, "pad_token_id", None) is None:  # as the student's (`load_model`)
        teacher.config.pad_token_id = getattr(unwrapped.config, "pad_token_id", None)
    if getattr(teacher.config, "num_labels", None) != getattr(unwrapped.config, "num_labels", None):
        raise UserError(
            f"--teacher_name_or_path {training_args.teacher_name_or_path} has {teacher.config.num_labels} labels, the "
            f"task {unwrapped.config.num_labels}: distil from a teacher fine-tuned on this task"
        )
    return HomoDistilTrainer(model=model, teacher=teacher, args=training_args, **kwargs)


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
