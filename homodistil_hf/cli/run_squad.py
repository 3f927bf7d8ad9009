"""Fine-tune and evaluate a model on extractive question answering: SQuAD v1.1 or v2.0 (`--version_2_with_negative`).

Examples:
    python run_squad.py --model_name_or_path bert-base-uncased --do_train --do_eval --output_dir out/squad
    python run_squad.py --model_name_or_path out/homobert-small --train_file train-v1.1.json \\
        --validation_file dev-v1.1.json --do_train --do_eval --output_dir out/squad
    # Only one file (e.g. the SQuAD dev set): train on the first 75% of its articles, evaluate on the last 25%.
    python run_squad.py --model_name_or_path MODEL --validation_file dev-v1.1.json --split_articles 0.25 \\
        --do_train --do_eval --output_dir out/squad-split

Data: the Hub `squad` / `squad_v2` datasets by default, or official nested SQuAD JSON files (data/paragraphs/qas).
Long contexts are cut into windows of --max_seq_length tokens overlapping by --doc_stride; answers are the best
n-best spans over all windows. Outputs in --output_dir: the model (LoRA merged), `all_results.json` /
`eval_results.json` with the official `eval_exact_match` and `eval_f1` in percent (v2 also `eval_HasAns_*`,
`eval_NoAns_*`), `eval_predictions.json` ({id: answer}), `eval_nbest_predictions.json` and, for v2,
`eval_null_odds.json`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import AutoModelForQuestionAnswering, set_seed

from ..config import HomoDistilConfig
from ..errors import UserError
from ..metrics import squad_compute, squad_v2_compute
from ..tasks.arguments import DataArgumentsBase, ModelArguments
from ..tasks.runtime import (
    build_trainer,
    check_model_paths,
    check_task_output_dir,
    check_task_prune_window,
    limit,
    load_hub_dataset,
    load_model,
    load_task_config,
    load_tokenizer,
    maybe_wrap_lora,
    padding_collator,
    require_actions,
    save_metrics,
    train,
)
from ..tasks.squad import (
    SQUAD_HUB_IDS,
    articles_to_dataset,
    gold_answers,
    load_squad_articles,
    postprocess_predictions,
    prepare_eval_features,
    prepare_train_features,
    question_room,
    require_offsets,
    split_articles,
)
from .common import parse_args, run_cli, setup_logging

logger = logging.getLogger("homodistil_hf")


@dataclass
class SquadDataArguments(DataArgumentsBase):
    """Which SQuAD data to use, how to window it, and how to decode answers."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset (default: rajpurkar/squad, or rajpurkar/squad_v2 with "
            "--version_2_with_negative) when no file is given."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Config of --dataset_name."})
    train_file: str | None = field(default=None, metadata={"help": "Official SQuAD JSON (data/paragraphs/qas)."})
    validation_file: str | None = field(default=None, metadata={"help": "Official SQuAD JSON to evaluate on."})
    split_articles: float | None = field(
        default=None,
        metadata={
            "help": "Train and evaluate on article-disjoint parts of ONE file (--train_file or "
            "--validation_file): the last ceil(FRACTION * #articles) articles, in file order, are evaluated on, "
            "the others trained on. E.g. 0.25."
        },
    )
    version_2_with_negative: bool = field(
        default=False, metadata={"help": "SQuAD v2.0: some questions have no answer in the context."}
    )
    max_seq_length: int = field(default=384, metadata={"help": "Tokens per window (question + context part)."})
    doc_stride: int = field(default=128, metadata={"help": "Tokens shared by two consecutive windows of a context."})
    n_best_size: int = field(default=20, metadata={"help": "Start and end candidates kept per window."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer, in tokens."})
    null_score_diff_threshold: float = field(
        default=0.0,
        metadata={"help": "v2: predict no answer when null score - best span score is above this."},
    )

    def __post_init__(self):
        self.check_positive(
            "max_seq_length", "max_train_samples", "max_eval_samples", "n_best_size", "max_answer_length"
        )
        if self.doc_stride < 0 or question_room(self.max_seq_length, self.doc_stride) < 1:
            raise UserError(
                f"--doc_stride must be >= 0 and at most --max_seq_length - 5 = {self.max_seq_length - 5} (got "
                f"{self.doc_stride}); the usual choice is a third of --max_seq_length"
            )
        if self.split_articles is not None:
            files = {f for f in (self.train_file, self.validation_file) if f}
            if len(files) != 1:
                raise UserError("--split_articles splits ONE SQuAD JSON: pass it as --train_file or --validation_file")


# The flags of run_squad.py (also what tests/test_docs_commands.py parses the documented commands with).
ARGUMENT_CLASSES = (ModelArguments, SquadDataArguments, HomoDistilConfig)


def load_examples(data_args: SquadDataArguments, training_args, cache_dir: str | None) -> dict[str, Dataset]:
    """The 'train' / 'validation' examples the run needs (flat Hub-style columns), checked before any write."""
    v2 = data_args.version_2_with_negative
    need = [s for s, on in (("train", training_args.do_train), ("validation", training_args.do_eval)) if on]
    if data_args.split_articles is not None:
        flag = "--train_file" if data_args.train_file else "--validation_file"
        path = data_args.train_file or data_args.validation_file
        train_part, eval_part = split_articles(load_squad_articles(path, flag), data_args.split_articles)
        logger.info("--split_articles: %d training and %d evaluation articles", len(train_part), len(eval_part))
        parts = {"train": train_part, "validation": eval_part}
        return {s: articles_to_dataset(parts[s], v2, f"{flag} {path} ({s} articles)") for s in need}
    files = {
        "train": ("--train_file", data_args.train_file),
        "validation": ("--validation_file", data_args.validation_file),
    }
    if any(path for _, path in files.values()):
        out = {}
        for split in need:
            flag, path = files[split]
            if not path:
                raise UserError(f"--do_{'train' if split == 'train' else 'eval'} needs {flag} (or --split_articles)")
            out[split] = articles_to_dataset(load_squad_articles(path, flag), v2, f"{flag} {path}")
        return out
    name = data_args.dataset_name or SQUAD_HUB_IDS[v2]
    hint = "pass --train_file / --validation_file (official SQuAD JSON), or --split_articles with one file"
    raw = load_hub_dataset(name, data_args.dataset_config_name, cache_dir, hint)
    return {s: raw[s] for s in need}


def featurize(examples: dict[str, Dataset], tokenizer, data_args: SquadDataArguments) -> dict[str, Dataset]:
    """Windows for training (with answer positions) and evaluation (with example ids and context offsets)."""
    args = (
        tokenizer,
        min(data_args.max_seq_length, tokenizer.model_max_length),
        data_args.doc_stride,
        data_args.pad_to_max_length,
    )
    out = {}
    for split, fn in (("train", prepare_train_features), ("validation", prepare_eval_features)):
        if split in examples:
            ds = examples[split]
            out[split] = ds.map(
                lambda b, fn=fn: fn(b, *args),
                batched=True,
                remove_columns=ds.column_names,
                desc=f"Windowing {split}",
                **data_args.map_kwargs(),
            )
    return out


def evaluate_squad(trainer, examples: Dataset, features: Dataset, data_args, output_dir: Path) -> dict[str, Any]:
    """Predict spans for the eval windows, post-process them into answers, score them, write the prediction files."""
    model_inputs = features.remove_columns(["example_id", "offset_mapping"])
    output = trainer.predict(model_inputs, metric_key_prefix="eval")
    start_logits, end_logits = output.predictions[:2]
    v2 = data_args.version_2_with_negative
    predictions, nbest, null_odds = postprocess_predictions(
        examples,
        features,
        start_logits,
        end_logits,
        version_2=v2,
        n_best_size=data_args.n_best_size,
        max_answer_length=data_args.max_answer_length,
        null_score_diff_threshold=data_args.null_score_diff_threshold,
    )
    gold = gold_answers(examples)
    if v2:
        scores = squad_v2_compute(predictions, gold)
        # The decision is already thresholded above, so the "best threshold" sweep would only repeat exact / f1.
        scores = {k: v for k, v in scores.items() if not k.startswith("best_")}
        scores["exact_match"] = scores.pop("exact")
    else:
        scores = squad_compute(predictions, gold)
    metrics = dict(output.metrics, **{f"eval_{k}": v for k, v in scores.items()})
    metrics.update(eval_samples=len(examples), eval_features=len(features))
    if trainer.is_world_process_zero():
        _write_json(output_dir / "eval_predictions.json", predictions)
        _write_json(output_dir / "eval_nbest_predictions.json", nbest)
        if v2:
            _write_json(output_dir / "eval_null_odds.json", null_odds)
    save_metrics(trainer, "eval", metrics)
    return metrics


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run SQuAD fine-tuning / evaluation; returns the train and eval metrics."""
    model_args, data_args, training_args = parse_args(ARGUMENT_CLASSES, argv)
    setup_logging()
    require_actions(training_args, model_args)
    check_model_paths(model_args, training_args)
    # Windows per example are known only after tokenization: a run in epochs is checked at export instead.
    check_task_prune_window(model_args, training_args, None)
    if training_args.do_predict:
        raise UserError("run_squad has no --do_predict: evaluate a file with --do_eval --validation_file FILE")
    if training_args.eval_strategy != "no":
        raise UserError(
            "run_squad evaluates once, after training: drop --eval_strategy (answers need post-processing)"
        )
    # Everything that can fail on the user's input is checked before the output folder is touched.
    examples = load_examples(data_args, training_args, model_args.cache_dir)
    check_task_output_dir(training_args)
    set_seed(training_args.seed)
    tokenizer = load_tokenizer(model_args)
    require_offsets(tokenizer)
    model = load_model(AutoModelForQuestionAnswering, model_args, load_task_config(model_args), tokenizer)
    model = maybe_wrap_lora(model, model_args, training_args, "QUESTION_ANS")

    if "train" in examples:
        examples["train"] = limit(examples["train"], data_args.max_train_samples)
    if "validation" in examples:
        examples["validation"] = limit(examples["validation"], data_args.max_eval_samples)
    with training_args.main_process_first(desc="windowing"):
        features = featurize(examples, tokenizer, data_args)
    collator = padding_collator(tokenizer, training_args, data_args.pad_to_max_length)
    trainer = build_trainer(
        model,
        training_args,
        train_dataset=features.get("train"),
        data_collator=collator,
        processing_class=tokenizer,
    )

    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    if training_args.do_train:
        results.update(train(trainer, training_args, len(examples["train"])))
    if training_args.do_eval:
        results.update(evaluate_squad(trainer, examples["validation"], features["validation"], data_args, output_dir))
    return results


def cli() -> None:
    """Console entry point: `main()` with user errors as one line on stderr and exit status 2."""
    run_cli(main)


if __name__ == "__main__":
    cli()
