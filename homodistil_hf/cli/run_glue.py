"""Fine-tune and evaluate a model on GLUE (or on your own sentence(-pair) classification / regression files).

Examples:
    python run_glue.py --model_name_or_path bert-base-uncased --task_name mrpc --do_train --do_eval \\
        --output_dir out/mrpc
    python run_glue.py --model_name_or_path out/homobert-small --task_name rte --data_dir glue/RTE \\
        --do_train --do_eval --do_predict --use_lora --output_dir out/rte
    python run_glue.py examples/glue_mrpc.json

Data: `--task_name X` alone loads the Hub `glue` dataset; with `--data_dir` it reads the original GLUE TSV files
(train.tsv, dev.tsv / dev_matched.tsv + dev_mismatched.tsv, test.tsv); `--train_file/--validation_file/--test_file`
read CSV or JSON files with a 'label' column. Outputs in --output_dir: the fine-tuned model (LoRA merged),
`all_results.json` / `eval_results.json` (`eval_accuracy`, `eval_f1`, `eval_matthews_correlation`, `eval_pearson`,
`eval_spearmanr`; MNLI mismatched as `eval_mm_*`), `eval_predictions_<task>.tsv` and, with --do_predict, the GLUE
submission files (`MRPC.tsv`, `MNLI-m.tsv`, `MNLI-mm.tsv`, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoModelForSequenceClassification, EvalPrediction, set_seed

from ..config import HomoDistilConfig
from ..errors import UserError
from ..metrics import glue_compute
from ..tasks.arguments import DataArgumentsBase, ModelArguments
from ..tasks.glue import (
    GLUE_TASKS,
    GlueData,
    get_task,
    load_glue_dir,
    load_glue_files,
    load_glue_hub,
    logits_to_predictions,
    tokenize,
    write_eval_predictions,
    write_submission,
)
from ..tasks.runtime import (
    build_trainer,
    check_model_paths,
    check_task_output_dir,
    check_task_prune_window,
    limit,
    load_model,
    load_task_config,
    load_tokenizer,
    maybe_wrap_lora,
    padding_collator,
    require_actions,
    save_metrics,
    train,
)
from .common import parse_args, run_cli, setup_logging

logger = logging.getLogger("homodistil_hf")

__all__ = ["GlueDataArguments", "build_trainer", "cli", "main"]


@dataclass
class GlueDataArguments(DataArgumentsBase):
    """Which data to train and evaluate on, and how to turn it into model inputs."""

    task_name: str | None = field(
        default=None,
        metadata={"help": f"GLUE task: one of {', '.join(GLUE_TASKS)}. Alone, loads the Hub `glue` data."},
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder with the task's original GLUE TSV files (train.tsv, dev.tsv, test.tsv; MNLI: "
            "dev_matched.tsv, dev_mismatched.tsv, test_matched.tsv, test_mismatched.tsv)."
        },
    )
    train_file: str | None = field(
        default=None, metadata={"help": "CSV/TSV/JSON(L) training file with a 'label' column and text columns."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "CSV/TSV/JSON(L) evaluation file."})
    test_file: str | None = field(default=None, metadata={"help": "CSV/TSV/JSON(L) test file (labels not needed)."})
    max_seq_length: int = field(
        default=128, metadata={"help": "Maximum tokens per example after tokenization; longer inputs are truncated."}
    )
    max_predict_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N examples of each test set."}
    )

    def __post_init__(self):
        files = [f for f in (self.train_file, self.validation_file, self.test_file) if f]
        if self.task_name is not None:
            self.task_name = get_task(self.task_name).name
        elif not files:
            raise UserError(
                "no data: pass --task_name (with --data_dir for GLUE TSV files) or --train_file / "
                "--validation_file / --test_file"
            )
        if self.data_dir and files:
            raise UserError("--data_dir and --train_file/--validation_file/--test_file exclude each other: pick one")
        if self.data_dir and not self.task_name:
            raise UserError("--data_dir needs --task_name to know the TSV layout")
        self.check_positive("max_seq_length", "max_train_samples", "max_eval_samples", "max_predict_samples")


# The flags of run_glue.py (also what tests/test_docs_commands.py parses the documented commands with).
ARGUMENT_CLASSES = (ModelArguments, GlueDataArguments, HomoDistilConfig)


def load_data(data_args: GlueDataArguments, training_args, cache_dir: str | None) -> GlueData:
    """Load and normalize the splits the run needs; raises `UserError` before anything is written."""
    task = GLUE_TASKS[data_args.task_name] if data_args.task_name else None
    need = {
        s
        for s, on in (
            ("train", training_args.do_train),
            ("eval", training_args.do_eval),
            ("test", training_args.do_predict),
        )
        if on
    }
    if data_args.data_dir:
        splits = load_glue_dir(data_args.data_dir, task, need)
    elif any((data_args.train_file, data_args.validation_file, data_args.test_file)):
        files = {}
        for step, split, flag in (
            ("train", "train", "train_file"),
            ("eval", "validation", "validation_file"),
            ("test", "test", "test_file"),
        ):
            path = getattr(data_args, flag)
            if step in need and not path:
                raise UserError(f"--do_{'predict' if step == 'test' else step} needs --{flag}")
            if step in need:
                files[split] = (f"--{flag}", path)
        splits, labels, is_regression = load_glue_files(files, task, cache_dir)
        if task is None:
            return GlueData(splits, "custom", is_regression, labels, labels)
    else:
        splits = load_glue_hub(task, need, cache_dir)
    labels = list(task.labels) if task.labels else None
    names = list(task.label_names) if task.label_names else None
    return GlueData(splits, task.name, task.is_regression, labels, names, task)


def limit_splits(data: GlueData, data_args: GlueDataArguments) -> None:
    """Apply --max_{train,eval,predict}_samples before tokenization (cheaper than after)."""
    for split in list(data.splits):
        cap = {"train": data_args.max_train_samples}.get(
            split, data_args.max_predict_samples if split.startswith("test") else data_args.max_eval_samples
        )
        data.splits[split] = limit(data.splits[split], cap)


def make_compute_metrics(data: GlueData):
    """`compute_metrics` for the Trainer: the task's GLUE metrics from logits."""

    def compute_metrics(p: EvalPrediction) -> dict[str, float]:
        return glue_compute(data.metric_task, logits_to_predictions(p.predictions, data.is_regression), p.label_ids)

    return compute_metrics


def _suffix(split: str) -> str:
    return "-mm" if split.endswith("mismatched") else ""


def evaluate_splits(trainer, data: GlueData, features, output_dir: Path) -> dict[str, Any]:
    """Evaluate every dev split (MNLI: matched as `eval_*`, mismatched as `eval_mm_*`) and write its predictions."""
    metrics: dict[str, Any] = {}
    for split in data.splits:
        if not split.startswith("validation"):
            continue
        prefix = "eval_mm" if _suffix(split) else "eval"
        output = trainer.predict(features[split], metric_key_prefix=prefix)
        metrics.update(output.metrics, **{f"{prefix}_samples": len(features[split])})
        if trainer.is_world_process_zero():
            preds = logits_to_predictions(output.predictions, data.is_regression)
            path = output_dir / f"eval_predictions_{data.name}{_suffix(split)}.tsv"
            write_eval_predictions(path, data, data.splits[split]["idx"], preds, data.splits[split]["label"])
    save_metrics(trainer, "eval", metrics)
    return metrics


def predict_splits(trainer, data: GlueData, features, output_dir: Path) -> list[Path]:
    """Predict every test split and write GLUE submission files (`<TASK>.tsv`; custom data: predict_results.tsv)."""
    written = []
    for split in data.splits:
        if not split.startswith("test"):
            continue
        output = trainer.predict(features[split].remove_columns("labels"), metric_key_prefix="predict")
        preds = logits_to_predictions(output.predictions, data.is_regression)
        if data.task is not None:
            name = data.task.submission[data.task.test_splits.index(split)]
        else:
            name = "predict_results"
        if trainer.is_world_process_zero():
            path = output_dir / f"{name}.tsv"
            write_submission(path, data, data.splits[split]["idx"], preds)
            written.append(path)
            logger.info("wrote %s", path)
    return written


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run GLUE fine-tuning / evaluation / prediction; returns the train and eval metrics."""
    model_args, data_args, training_args = parse_args(ARGUMENT_CLASSES, argv)
    setup_logging()
    require_actions(training_args, model_args)
    check_model_paths(model_args, training_args)
    # Everything that can fail on the user's input is checked before the output folder is touched.
    data = load_data(data_args, training_args, model_args.cache_dir)
    train_examples = len(data.splits["train"]) if "train" in data.splits else None
    if train_examples is not None and data_args.max_train_samples is not None:
        train_examples = min(train_examples, data_args.max_train_samples)
    check_task_prune_window(model_args, training_args, train_examples)  # one example is one feature here
    check_task_output_dir(training_args)
    set_seed(training_args.seed)
    tokenizer = load_tokenizer(model_args)
    id2label = dict(enumerate(data.label_names)) if data.label_names else None
    config = load_task_config(
        model_args,
        num_labels=data.num_labels,
        finetuning_task=data.name,
        **({"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}),
    )
    model = load_model(AutoModelForSequenceClassification, model_args, config, tokenizer)
    model = maybe_wrap_lora(model, model_args, training_args, "SEQ_CLS")

    limit_splits(data, data_args)
    with training_args.main_process_first(desc="tokenization"):
        features = tokenize(
            data,
            tokenizer,
            data_args.max_seq_length,
            data_args.pad_to_max_length,
            **data_args.map_kwargs(),
        )
    collator = padding_collator(tokenizer, training_args, data_args.pad_to_max_length)
    trainer = build_trainer(
        model,
        training_args,
        train_dataset=features["train"] if training_args.do_train else None,
        eval_dataset=features["validation"] if "validation" in features else None,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=make_compute_metrics(data),
    )

    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    if training_args.do_train:
        results.update(train(trainer, training_args, len(features["train"])))
    if training_args.do_eval:
        results.update(evaluate_splits(trainer, data, features, output_dir))
    if training_args.do_predict:
        predict_splits(trainer, data, features, output_dir)
    return results


def cli() -> None:
    """Console entry point: `main()` with user errors as one line on stderr and exit status 2."""
    run_cli(main)


if __name__ == "__main__":
    cli()
