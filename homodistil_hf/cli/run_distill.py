"""Task-agnostic HomoDistil: distil (and prune) a student from a pre-trained teacher on raw text.

    python run_distill.py --teacher_name_or_path bert-base-uncased --dataset_name wikitext \
        --dataset_config_name wikitext-103-raw-v1 --output_dir out --target_params 17.3M --max_steps 28000 ...
    python run_distill.py --teacher_name_or_path HuggingFaceTB/SmolLM2-135M --train_file corpus.txt \
        --output_dir out --target_hidden_size 384 --target_num_attention_heads 6 --target_num_key_value_heads 2 ...
    python run_distill.py --teacher_name_or_path path/model.Q4_K_M.gguf ...   (dequantised once, cached)
    python run_distill.py config.json

Encoder teachers (BERT, RoBERTa, ELECTRA) are distilled on masked-LM data; causal-LM teachers (Llama, Mistral, Qwen2,
Qwen3, GPT-2, or a GGUF file of one) on next-token prediction over the same packed blocks (`--kd_loss`).

Flags are `StudentArguments`, `DataArguments` and `HomoDistilConfig` (every `TrainingArguments` flag too). The end of
the run writes the compact student (stock config, safetensors), its tokenizer and a model card to `--output_dir`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, TrainerCallback, default_data_collator, set_seed

from ..arch import Shape, get_adapter, is_causal_lm
from ..config import HomoDistilConfig
from ..data import (
    CausalLMCollator,
    MaskEpochCallback,
    ResumableMLMCollator,
    ensure_pad_token,
    load_raw,
    pack_blocks,
)
from ..distributed import check_distributed_support
from ..errors import UserError
from ..export import add_evaluation_to_card
from ..gguf_export import ARCHS as GGUF_ARCHS
from ..gguf_export import export_gguf
from ..gguf_teacher import gguf_teacher
from ..llm_eval import model_index, perplexity, results_markdown, run_lm_eval, task_manager
from ..loading import check_student_args, load_config, load_teacher, make_student, needs_projection
from ..losses import parse_layer_map
from ..pruning.pruner import check_checkpoint
from ..pruning.targets import resolve_target
from ..trainer import HomoDistilTrainer
from ..validate import (
    check_lm_tokenizer,
    check_model_path,
    check_output_dir,
    check_prune_window,
    check_seq_length,
    check_tokenizer,
    planned_steps,
    resolve_resume,
)
from .common import parse_args, run_cli, setup_logging

logger = logging.getLogger("homodistil_hf.run_distill")


@dataclass
class StudentArguments:
    """How the student is made (the teacher is `--teacher_name_or_path`)."""

    student_init: str = field(
        default="teacher",
        metadata={"help": "'teacher': an exact copy of the teacher, pruned during training (HomoDistil); "
                  "'truncate': the teacher cut to the targets up front (first channels/heads/neurons), then "
                  "distilled; 'random': a random model of the target shape, distilled (standard KD).",
                  "choices": ["teacher", "truncate", "random"]},
    )
    student_num_hidden_layers: int | None = field(
        default=None, metadata={"help": "Depth of a --student_init random student (default: the teacher's)."}
    )
    student_head: str = field(
        default="same",
        metadata={"help": "'same': the student has the teacher's head; 'mlm': give the student an MLM head (new, "
                  "tied to its embeddings) even if the teacher has none, so the MLM term applies.",
                  "choices": ["same", "mlm"]},
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer (default: the teacher's)."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where Hub downloads are cached, and GGUF teachers "
                                                                   "once dequantised (else $HOMODISTIL_CACHE, else "
                                                                   "~/.cache/homodistil_hf/gguf/)."})


@dataclass
class DataArguments:
    """The distillation corpus."""

    dataset_name: str | None = field(default=None, metadata={"help": "A Hub dataset, e.g. 'wikitext'."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration, if any."})
    train_file: str | None = field(default=None, metadata={"help": "A local .txt (one text a line), .json(l) or "
                                                                   ".csv file."})
    validation_file: str | None = field(default=None, metadata={"help": "Held-out text in the same format."})
    validation_split_percentage: int = field(
        default=0, metadata={"help": "Percent of the training texts held out for evaluation when there is no "
                             "validation file."}
    )
    text_column_name: str | None = field(default=None, metadata={"help": "Text column (default 'text' or the "
                                                                          "first)."})
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per packed block (128 in the paper)."})
    packing: bool = field(
        default=True,
        metadata={"help": "Concatenate examples into full --max_seq_length blocks (the tail is dropped; labels and "
                  "loss masks travel with their tokens); false: one example per row, truncated and padded to "
                  "--max_seq_length (conversational data often wants this)."},
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of tokens masked for the MLM term."})
    streaming: bool = field(default=False, metadata={"help": "Stream the Hub dataset instead of downloading it "
                                                             "(needs --max_steps)."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenisation."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Re-tokenise even if a cached result exists."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only this many training blocks."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only this many evaluation blocks."})

    def __post_init__(self):
        if not 0.0 <= self.mlm_probability < 1.0:
            raise UserError(f"--mlm_probability must be in [0, 1) (got {self.mlm_probability})")
        if self.max_seq_length < 8:
            raise UserError(f"--max_seq_length must be at least 8 (got {self.max_seq_length})")
        if not 0 <= self.validation_split_percentage < 100:
            raise UserError(f"--validation_split_percentage must be in 0..99 (got {self.validation_split_percentage})")


# The flags of run_distill.py (also what tests/test_docs_commands.py parses the documented commands with).
ARGUMENT_CLASSES = (StudentArguments, DataArguments, HomoDistilConfig)


def main(argv: Sequence[str] | None = None, callbacks: Sequence[TrainerCallback] = ()) -> dict:
    """Run a distillation; returns the final train (and eval) metrics. `callbacks` are added to the trainer's."""
    model_args, data_args, args = parse_args(ARGUMENT_CLASSES, argv)
    setup_logging()
    transformers.utils.logging.set_verbosity(args.get_process_log_level())

    # --- validate everything cheap before touching the output folder or loading weights --------------------------
    if args.teacher_name_or_path is None:
        raise UserError("--teacher_name_or_path is required: a Hub id or a local model folder")
    # A GGUF teacher is checked now (the file exists, is GGUF, the gguf package is there), converted later, once.
    gguf = gguf_teacher(args.teacher_name_or_path, args.teacher_gguf_file, model_args.cache_dir)
    # A mistyped local folder is named now, not after a minute of Hub retries that blame the connection.
    if gguf is None:
        check_model_path(args.teacher_name_or_path, "--teacher_name_or_path")
    check_model_path(model_args.tokenizer_name, "--tokenizer_name")
    if data_args.streaming and args.max_steps <= 0:
        raise UserError("--streaming needs --max_steps (a streamed corpus has no length)")
    check_distributed_support(args)
    teacher_config = load_config(args.teacher_name_or_path, gguf_file=args.teacher_gguf_file,
                                 cache_dir=model_args.cache_dir)
    adapter = get_adapter(teacher_config)
    args.resolve_for_teacher(adapter.causal_lm)  # settings on "auto" (alpha_attn, prune_end) by family
    # A causal-LM teacher (a decoder with its LM head; a GGUF file always is one): next-token data, no masking.
    causal_lm = gguf is not None or is_causal_lm(teacher_config)
    if not causal_lm and (args.assistant_only_loss or args.completion_only_loss or args.eval_tasks
                          or args.export_gguf):
        flag = next(f for f in ("assistant_only_loss", "completion_only_loss", "eval_tasks", "export_gguf")
                    if getattr(args, f))
        raise UserError(f"--{flag} is for causal-LM (decoder) teachers; {args.teacher_name_or_path} is a "
                        f"{teacher_config.model_type} encoder: drop --{flag}")
    if args.export_gguf:  # what the GGUF writer would refuse after training, refused now
        if importlib.util.find_spec("gguf") is None:
            raise UserError('--export_gguf needs the gguf package: pip install "homodistil_hf[gguf]"')
        if teacher_config.model_type not in GGUF_ARCHS:
            raise UserError(f"--export_gguf: a {teacher_config.model_type} student cannot be written as GGUF "
                            f"(supported: {', '.join(GGUF_ARCHS)}); drop --export_gguf")
    if args.eval_tasks:  # unknown task names are named now, not after training (local tasks: instant)
        task_manager(args.eval_task_list, args.eval_tasks_include_path)
    if causal_lm and model_args.student_head == "mlm":
        raise UserError("--student_head mlm gives an encoder student a masked-LM head; a causal-LM teacher's student "
                        "keeps its LM head: drop --student_head")
    target = resolve_target(teacher_config, args)
    check_seq_length(teacher_config, data_args.max_seq_length)
    resume = args.resume_from_checkpoint
    check_output_dir(args.output_dir, resuming=bool(resume), overwrite=getattr(args, "overwrite_output_dir", False))
    resume = resolve_resume(resume, args.output_dir)
    fewer_layers = (args.target_num_hidden_layers or teacher_config.num_hidden_layers) < teacher_config.num_hidden_layers
    pruning = model_args.student_init == "teacher" and target is not None and (
        target != adapter.shape_of(teacher_config) or fewer_layers)
    if resume and pruning:  # the checkpoint's widths must be able to reach this run's target
        check_checkpoint(resume, target, adapter.shape_of(teacher_config), teacher_config.num_hidden_layers,
                         args.target_num_hidden_layers)
    _check_student(model_args, args, teacher_config, target)
    if pruning and args.max_steps > 0:  # a run that cannot reach its targets stops here (epochs: once the corpus is)
        check_prune_window(args, args.max_steps)
    # A GGUF teacher becomes a plain checkpoint (with its tokenizer) in the cache: converted on the first run only.
    teacher_source = str(gguf.convert()) if gguf is not None else args.teacher_name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or teacher_source,
                                                  cache_dir=model_args.cache_dir)
    except (OSError, ValueError) as err:
        raise UserError(f"tokenizer of {model_args.tokenizer_name or args.teacher_name_or_path} could not be loaded "
                        f"({type(err).__name__}); pass --tokenizer_name") from None
    check_tokenizer(tokenizer, teacher_config)
    if causal_lm:
        check_lm_tokenizer(tokenizer, teacher_config)
        ensure_pad_token(tokenizer)
    raw = load_raw(data_args.dataset_name, data_args.dataset_config_name, data_args.train_file,
                   data_args.validation_file, data_args.streaming, data_args.validation_split_percentage,
                   model_args.cache_dir)

    # The corpus before the weights: its mistakes (no text column, too short) cost no model load.
    with args.main_process_first(desc="tokenising the corpus"):
        blocks = pack_blocks(raw, tokenizer, data_args.max_seq_length, data_args.text_column_name,
                             data_args.preprocessing_num_workers, data_args.overwrite_cache, packing=data_args.packing,
                             assistant_only_loss=args.assistant_only_loss,
                             completion_only_loss=args.completion_only_loss)
    train = blocks["train"]
    if data_args.max_train_samples is not None:
        train = train.take(data_args.max_train_samples) if data_args.streaming else train.select(
            range(min(data_args.max_train_samples, len(train))))
    if not data_args.streaming and len(train) == 0:
        raise UserError(f"the corpus gives no full {data_args.max_seq_length}-token block: use more text or a "
                        "smaller --max_seq_length")
    if pruning and args.max_steps <= 0 and not data_args.streaming:  # --num_train_epochs: now the length is known
        check_prune_window(args, planned_steps(args, len(train)))
    evaluation = blocks.get("validation")
    if evaluation is not None and data_args.max_eval_samples is not None and not data_args.streaming:
        evaluation = evaluation.select(range(min(data_args.max_eval_samples, len(evaluation))))

    set_seed(args.seed)
    teacher = load_teacher(teacher_source, cache_dir=model_args.cache_dir)
    student, student_state = make_student(teacher, model_args.student_init, target,
                                          model_args.student_num_hidden_layers, seed=args.seed,
                                          dtype=getattr(torch, args.student_dtype))
    if model_args.student_head == "mlm":
        student = _with_mlm_head(student)

    # Mask tokens only when some model predicts them: masking would otherwise just corrupt the inputs.
    has_mlm = not causal_lm and any(_has_mlm_head(m) for m in (teacher, student))
    # Masks are seeded per batch (not by the global RNG), so a resumed run masks exactly as the uninterrupted one.
    collator = (ResumableMLMCollator(tokenizer, mlm_probability=data_args.mlm_probability, mask_seed=args.seed)
                if has_mlm and data_args.mlm_probability > 0 else default_data_collator)
    if causal_lm:  # next-token prediction: labels are the inputs (the models shift them), nothing is masked
        collator = CausalLMCollator(tokenizer, max_length=None if data_args.packing else data_args.max_seq_length)
    callbacks = [*callbacks, *([MaskEpochCallback(collator)] if isinstance(collator, ResumableMLMCollator) else [])]
    if not has_mlm and not causal_lm:
        logger.info("neither teacher nor student has an MLM head: inputs are not masked")

    trainer = HomoDistilTrainer(model=student, teacher=teacher, args=args, student_state=student_state, target=target,
                                train_dataset=train, eval_dataset=evaluation if args.do_eval else None,
                                data_collator=collator, processing_class=tokenizer, callbacks=callbacks)
    result = trainer.train(resume_from_checkpoint=resume or None)
    trainer.save_model()  # the compact, stock student (or the plain student when nothing is pruned)
    metrics = dict(result.metrics)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    if args.do_eval and evaluation is not None:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    trainer.save_state()
    if trainer.is_world_process_zero() and (args.eval_tasks or (causal_lm and data_args.validation_file)):
        metrics.update(_evaluate_lm(trainer, teacher, tokenizer, args, data_args))
    if args.export_gguf and trainer.is_world_process_zero():
        out = Path(args.output_dir)
        gguf_path = export_gguf(out, out / f"{out.resolve().name}-{args.export_gguf}.gguf", args.export_gguf)
        logger.info("wrote %s", gguf_path)
    if args.push_to_hub:
        trainer.push_to_hub()
    if trainer.is_world_process_zero():
        logger.info("saved the student to %s", os.path.abspath(args.output_dir))
    return metrics


def _evaluate_lm(trainer, teacher, tokenizer, args: HomoDistilConfig, data_args: DataArguments) -> dict:
    """After the export of a causal LM: lm-eval tasks (--eval_tasks) and held-out perplexity (--validation_file) of
    the teacher and of the exported student, saved as `teacher_*` / `student_*` in all_results.json and added to the
    model card (a table, and `model-index` metadata for the Hub)."""
    from transformers import AutoModelForCausalLM

    out = Path(args.output_dir)
    student = AutoModelForCausalLM.from_pretrained(out).to(args.device).eval()
    teacher = trainer.accelerator.unwrap_model(trainer.teacher)
    results: dict[str, dict] = {"teacher": {}, "student": {}}
    for who, model in (("teacher", teacher), ("student", student)):
        if args.eval_tasks:
            results[who] = run_lm_eval(model, args.eval_task_list, args.eval_tasks_include_path,
                                       batch_size=args.per_device_eval_batch_size, device=str(args.device),
                                       tokenizer=tokenizer, limit=args.eval_tasks_limit)
        if data_args.validation_file:
            ppl = perplexity(model, tokenizer, data_args.validation_file, data_args.max_seq_length,
                             args.per_device_eval_batch_size, args.assistant_only_loss, args.completion_only_loss,
                             packing=data_args.packing)
            results[who]["validation"] = {"perplexity": ppl}
    flat = {f"{who}_{task}_{metric}": value for who, by_task in results.items()
            for task, metrics in by_task.items() for metric, value in metrics.items()}
    trainer.save_metrics("lm_eval", flat, combined=True)
    add_evaluation_to_card(out, results_markdown(results["teacher"], results["student"]),
                           model_index(results["student"], out.resolve().name))
    return flat


def _check_student(model_args: StudentArguments, args: HomoDistilConfig, teacher_config, target: Shape | None) -> None:
    """What the trainer would refuse after loading the weights, refused up front: depth, layer map, projection."""
    teacher_layers = teacher_config.num_hidden_layers
    depth = model_args.student_num_hidden_layers
    check_student_args(model_args.student_init, target, depth, teacher_layers)
    if args.target_num_hidden_layers is not None and model_args.student_init != "teacher":
        raise UserError(f"--target_num_hidden_layers needs --student_init teacher (depth is pruned while training); "
                        f"for a {model_args.student_init} student of another depth use --student_init random "
                        "--student_num_hidden_layers")
    parse_layer_map(args.layer_map, depth or teacher_layers, teacher_layers)
    hidden, teacher_hidden = (target.hidden if target else teacher_config.hidden_size), teacher_config.hidden_size
    if model_args.student_init == "random":
        needs_projection(hidden, teacher_hidden, args)


def _has_mlm_head(model) -> bool:
    return model.get_output_embeddings() is not None if hasattr(model, "get_output_embeddings") else False


def _with_mlm_head(student):
    """The student's backbone under a new MLM head (tied decoder), when it has none."""
    if _has_mlm_head(student):
        return student
    from transformers import AutoModelForMaskedLM

    mlm = AutoModelForMaskedLM.from_config(student.config)
    mlm.base_model.load_state_dict(student.state_dict(), strict=False)
    mlm.tie_weights()
    return mlm.train()


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
