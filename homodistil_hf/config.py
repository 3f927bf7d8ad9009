"""`HomoDistilConfig`: the training arguments of a HomoDistil run (TRL style: one dataclass, every field documented,
validated in `__post_init__`).

Defaults follow the paper where it is known (Adam eps 1e-6, KD temperature 2, cubic schedule, a pruning step every
10 steps, sensitivity importance with EMA beta1 0.85). Where the paper is silent the choice is ours, documented in
the field's help and in the README.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .errors import UserError
from .registry import importance_names

HIDDEN_LOSSES = ("mse", "cosine")
ATTN_LOSSES = ("kl", "mse")
SCHEDULES = ("cubic", "linear", "oneshot")
PRUNING_MODES = ("auto", "physical", "masks")
PRED_POSITIONS = ("all", "masked")
TEACHER_DTYPES = ("auto", "float32", "bfloat16", "float16")
STUDENT_DTYPES = ("float32", "bfloat16", "float16")
KD_LOSSES = ("forward_kl", "reverse_kl", "jsd")
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
# The weight flags of the loss terms (the trainer's `TERMS` computes one term for each).
LOSS_WEIGHTS = ("alpha_mlm", "alpha_pred", "alpha_hidden", "alpha_attn")
# The pruning-target width flags (each a stock config field with `target_` in front).
TARGET_FIELDS = ("target_hidden_size", "target_num_attention_heads", "target_intermediate_size",
                 "target_num_key_value_heads", "target_head_dim", "target_num_hidden_layers")
LAYER_IMPORTANCES = ("gate", "cosine", "last")  # (pruning/depth.py implements them)
LAYER_CHOICES = ("auto", "at_start", "sequential")  # when the layers to remove are chosen (pruning/schedule.py)
LAYER_FADES = ("output", "branches")  # how a layer being removed fades to the identity (pruning/depth.py)
# --prune_end left unset: when the targets are reached, by teacher family (measured in benchmarks/, issue 12)
PRUNE_END_ENCODER, PRUNE_END_DECODER = 0.25, 0.5


def default_prune_end(causal_lm: bool | None) -> float:
    """--prune_end when unset: 0.25 for encoder teachers, 0.5 for causal-LM teachers; None (the teacher not loaded
    yet) gives the later of the two, so a run checked before loading passes for either family."""
    if causal_lm is None:
        return max(PRUNE_END_ENCODER, PRUNE_END_DECODER)
    return PRUNE_END_DECODER if causal_lm else PRUNE_END_ENCODER


# --importance auto (issue 21), on the measurements: encoders keep the per-weight sensitivity, ahead of the
# per-structure metric beyond the seed spread on the MiniLM sweep (22%: 0.784 vs 0.778; 11%: 0.743 vs 0.733; 3 seeds);
# causal-LM teachers get the per-structure metric, which ties it at 26% of SmolLM2-135M (perplexity 541.1 vs 541.5)
# and leads at 49% (196-199 vs 211-215), with no per-weight buffers (a pruning run's peak memory 0.995x that of the
# same run without pruning, vs 1.24x); so does every run whose parameters are sharded (FSDP2 holds no whole weight).
IMPORTANCE_ENCODER, IMPORTANCE_DECODER, IMPORTANCE_SHARDED = "sensitivity", "taylor_structure", "taylor_structure"


# Optimizers whose state is per element, shaped like each parameter: it can be sliced with the weights (physical
# pruning, compaction). Factored (Adafactor), 8/4-bit, paged and layer-wise ones are refused with pruning targets.
ELEMENTWISE_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused",
                          "adamw_anyprecision", "ademamix", "sgd", "adagrad", "rmsprop")


def default_importance(causal_lm: bool, sharded: bool = False) -> str:
    """--importance when left on "auto" (see IMPORTANCE_ENCODER / _DECODER / _SHARDED)."""
    if sharded:
        return IMPORTANCE_SHARDED
    return IMPORTANCE_DECODER if causal_lm else IMPORTANCE_ENCODER


def is_fraction(value: float) -> bool:
    """Whether a --prune_start / --prune_end value is a fraction of training (<= 1) rather than an optimizer step
    (> 1). Exactly 1 is the fraction (the end of training): "step 1" is never what such a flag means."""
    return value <= 1


def resolve_step(value: float, max_steps: int) -> int:
    """The optimizer step of a --prune_start / --prune_end value: a fraction of `max_steps` (<= 1, see
    `is_fraction`) or an absolute step (> 1)."""
    return int(round(value * max_steps)) if is_fraction(value) else int(value)


def parse_param_count(value: str | int | float | None) -> int | None:
    """Parse a parameter count such as `17.3M`, `65m`, `1.2B` or `14100000` (None stays None)."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMbB]?)\s*", str(value))
    if not match:
        raise UserError(f"--target_params {value!r} is not a parameter count: write e.g. 17.3M, 65M or 14100000")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9}[match.group(2).lower()]
    return int(round(float(match.group(1)) * scale))


@dataclass
class HomoDistilConfig(TrainingArguments):
    """Training arguments for `HomoDistilTrainer`: the distillation objective, the pruning targets and schedule.

    All fields of `transformers.TrainingArguments` are available too. `adam_epsilon` defaults to 1e-6 as in the paper.
    """

    # --- teacher and objective -------------------------------------------------------------------------------------
    teacher_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Teacher model: a Hub id, a local folder, or a .gguf file. With no student given, the student "
                  "starts as an exact copy of it (the homotopic start)."},
    )
    teacher_gguf_file: str | None = field(
        default=None,
        metadata={"help": "A GGUF file inside the --teacher_name_or_path folder to load the teacher (and its tokenizer) "
                  "from, e.g. 'model.Q4_K_M.gguf' (a path ending in .gguf as --teacher_name_or_path works too). The "
                  "weights are dequantised to a plain model once and cached (see --cache_dir, $HOMODISTIL_CACHE)."},
    )
    temperature: float = field(
        default=2.0, metadata={"help": "Softmax temperature of the logit KL term (scaled by T^2, as in Hinton et al.)."}
    )
    alpha_mlm: float | None = field(
        default=None,
        metadata={"help": "Weight of the student's own loss on the labels: masked-LM, next-token LM for decoders, or "
                  "the task loss (default 1.0)."},
    )
    alpha_lm: float | None = field(
        default=None,
        metadata={"help": "Alias of --alpha_mlm that reads better for decoders (the student's next-token loss); "
                  "giving both with different values is an error."},
    )
    alpha_pred: float = field(
        default=1.0, metadata={"help": "Weight of the KL divergence between teacher and student output distributions."})
    alpha_hidden: float = field(default=1.0, metadata={"help": "Weight of the hidden-state distillation term."})
    alpha_attn: float | None = field(
        default=None,
        metadata={"help": "Weight of the attention distillation term (needs eager attention; sdpa is used when 0). "
                  "Unset means 1.0 for encoder teachers and 0 for causal-LM (decoder) teachers, whose attention maps "
                  "are large and whose eager attention is slow."},
    )
    kd_loss: str = field(
        default="forward_kl",
        metadata={"help": "Divergence of the logit term for causal-LM (decoder) teachers: 'forward_kl' "
                  "KL(teacher || student), 'reverse_kl' KL(student || teacher), or 'jsd' (generalised Jensen-Shannon "
                  "of TRL's GKD, weighted by --jsd_beta); all scaled by T^2. Encoders always use forward_kl.",
                  "choices": list(KD_LOSSES)},
    )
    jsd_beta: float = field(
        default=0.5,
        metadata={"help": "Beta of --kd_loss jsd, in [0, 1]: the mixture is beta * teacher + (1 - beta) * student; 0 "
                  "is the forward KL, 1 the reverse KL (as in TRL's GKD)."},
    )
    kd_chunk_size: int = field(
        default=1024,
        metadata={"help": "Positions per chunk of the decoder logit losses: each chunk's fp32 softmaxes over the "
                  "vocabulary exist only while it is computed (and are recomputed in the backward), which bounds "
                  "their memory for 50k-150k vocabularies."},
    )
    logits_from_hidden: bool = field(
        default=True,
        metadata={"help": "Causal LMs: compute the next-token loss and the logit distillation term from each model's "
                  "final hidden states and LM head, --kd_chunk_size positions at a time, gradients formed in the "
                  "forward pass (as Liger-Kernel's fused linear losses), so that no [batch, seq, vocab] logits exist "
                  "for either model. Same values and gradients as the materialised logits (tested to 1e-5). Off: "
                  "materialise both models' logits. Evaluation, FSDP and heads with hooks use the materialised path."},
    )
    assistant_only_loss: bool = field(
        default=False,
        metadata={"help": "Conversational corpus (a 'messages' column, or 'prompt'/'completion' message lists, as in "
                  "TRL): the LM loss and the logit distillation term count only the assistant's tokens (found through "
                  "the chat template's {%% generation %%} markers, else by rendering the conversation prefix by "
                  "prefix). The hidden-state term keeps every token."},
    )
    completion_only_loss: bool = field(
        default=False,
        metadata={"help": "Prompt/completion corpus ('prompt' and 'completion' columns, as in TRL): the LM loss and "
                  "the logit distillation term count only the completion's tokens."},
    )
    eval_tasks: str | None = field(
        default=None,
        metadata={"help": "Comma-separated lm-evaluation-harness tasks run on the teacher and on the exported student "
                  "after training (lm-eval task names, or local tasks from --eval_tasks_include_path); both go into "
                  "all_results.json and the model card (a table and model-index metadata). Needs `pip install "
                  "\"homodistil_hf[lm-eval]\"`. Causal-LM teachers only."},
    )
    eval_tasks_include_path: str | None = field(
        default=None,
        metadata={"help": "A folder of lm-eval task YAMLs for local tasks (e.g. written by "
                  "examples/squad_to_messages.py --mc_task_dir)."},
    )
    eval_tasks_limit: float | None = field(
        default=None,
        metadata={"help": "At most this many examples per --eval_tasks task (a fraction of each task if < 1), as "
                  "lm-eval's --limit: for a quick look; unset evaluates every example."},
    )
    export_gguf: str | None = field(
        default=None,
        metadata={"help": "Also write the exported student as a llama.cpp GGUF file of this type beside the export, "
                  "<output_dir>/<folder name>-<type>.gguf: f32, f16, bf16 or q8_0 (Llama, Mistral, Qwen2, Qwen3, "
                  "GPT-2 students with a byte-level BPE tokenizer; needs `pip install \"homodistil_hf[gguf]\"`).",
                  "choices": list(GGUF_TYPES)},
    )
    hidden_loss: str | None = field(
        default=None,
        metadata={"help": "Hidden-state loss: 'mse' (mean squared error over kept channels) or 'cosine' (1 - cosine "
                  "similarity per token). Unset means 'mse' for encoder teachers and 'cosine' for causal-LM "
                  "(decoder) teachers, whose hidden states have a few large outlier channels that dominate an MSE "
                  "(SmolLM2-135M to ~27%%, 120 steps, one seed: held-out perplexity 2,812 with mse vs 331 with "
                  "cosine; README, 'What the defaults are').", "choices": list(HIDDEN_LOSSES)},
    )
    attn_loss: str = field(
        default="kl",
        metadata={"help": "Attention loss on attention probabilities: 'kl' (KL(teacher || student) per query row, "
                  "MiniLM style) or 'mse'.", "choices": list(ATTN_LOSSES)},
    )
    pred_loss_positions: str = field(
        default="all",
        metadata={"help": "Tokens the logit KL term covers: 'all' non-padding tokens (DistilBERT style) or only the "
                  "'masked' ones. Sequence-level heads (classification) always use the one prediction per example.",
                  "choices": list(PRED_POSITIONS)},
    )
    layer_map: str | None = field(
        default=None,
        metadata={"help": "Student-to-teacher layer map for the hidden and attention terms. Default: identity when "
                  "depths match, otherwise uniform (student layer i -> teacher layer round((i+1)*T/S)-1). Or explicit "
                  "'s:t' pairs over transformer layers, e.g. '0:1,1:3,2:5'."},
    )
    hidden_projection: bool = field(
        default=False,
        metadata={"help": "Learn a linear projection from the student's hidden size to the teacher's for the hidden "
                  "term. Only needed for students that are not pruned copies of the teacher (pruned copies compare "
                  "each kept channel with the teacher channel it came from)."},
    )

    # --- pruning targets -------------------------------------------------------------------------------------------
    target_hidden_size: int | None = field(
        default=None, metadata={"help": "Final hidden (embedding / residual) width. Unset keeps the teacher's."})
    target_num_attention_heads: int | None = field(
        default=None,
        metadata={"help": "Final number of attention heads per layer. Unset keeps the teacher's. The head size is "
                  "target_hidden_size / heads, as in a stock config; it must not exceed the teacher's head size."},
    )
    target_intermediate_size: int | None = field(
        default=None, metadata={"help": "Final FFN width per layer. Unset keeps the teacher's."})
    target_num_key_value_heads: int | None = field(
        default=None,
        metadata={"help": "Final key/value heads per layer (grouped-query attention: Llama, Mistral, Qwen). Query "
                  "heads must be a multiple of it, with at most the teacher's query heads per group. Unset keeps the "
                  "teacher's group size (or the fewest groups that fit)."},
    )
    target_head_dim: int | None = field(
        default=None,
        metadata={"help": "Final per-head size of queries, keys and values. Refused under rotary position embeddings "
                  "(Llama, Mistral, Qwen keep the teacher's); for families whose config has no head_dim (BERT, "
                  "GPT-2) it must equal target_hidden_size / heads. Unset: the teacher's (or hidden / heads)."},
    )
    target_num_hidden_layers: int | None = field(
        default=None,
        metadata={"help": "Final number of transformer layers (depth), alone or with the width targets: the layers "
                  "with the lowest --layer_importance, chosen as --layer_choice says, fade to the identity as "
                  "--layer_fade says and are removed. Unset keeps the teacher's depth."},
    )
    layer_fade: str = field(
        default="output",
        metadata={"help": "How a layer being removed fades out as its factor alpha falls from 1 to 0: 'output' "
                  "(alpha L(x) + (1 - alpha) x, its output mixed with its input; the default, measured: README, "
                  "'Depth') or 'branches' (its residual branches scaled by alpha, post-LayerNorms mixed likewise).",
                  "choices": list(LAYER_FADES)},
    )
    layer_importance: str = field(
        default="cosine",
        metadata={"help": "How layers are ranked for --target_num_hidden_layers: 'cosine' (1 - cos(layer input, "
                  "layer output) averaged over tokens, ShortGPT / Minitron; the default, measured best: README, "
                  "'Depth'), 'gate' (|g dL/dg| of a scalar gate on the layer's residual branches, EMA-smoothed), or "
                  "'last' (the last layers go: a baseline).",
                  "choices": list(LAYER_IMPORTANCES)},
    )
    layer_choice: str = field(
        default="auto",
        metadata={"help": "When the layers to remove are chosen: 'at_start' (all at once; they fade together), "
                  "'sequential' (at each pruning step as many as the schedule's curve says, by the scores so far; each "
                  "group fades over one pruning period), 'auto' (sequential for encoders with widths, else at_start).",
                  "choices": list(LAYER_CHOICES)},
    )
    target_params: str | None = field(
        default=None,
        metadata={"help": "Alternative to the three widths: a backbone parameter count such as '17.3M'. A valid shape "
                  "is chosen by shrinking all widths by one factor, keeping the teacher's head size and FFN ratio; "
                  "with --target_num_hidden_layers, at that depth (depth is never traded for width automatically)."},
    )

    # --- importance and schedule -----------------------------------------------------------------------------------
    importance: str = field(
        default="auto",
        metadata={"help": "Importance metric: 'auto' (the default: 'sensitivity' for encoder teachers, where it "
                  "stayed ahead of 'taylor_structure' beyond the seed spread; 'taylor_structure' for decoder teachers, "
                  "where it tied or led at no memory cost, and under FSDP), "
                  "'sensitivity' (|w*grad| smoothed by an EMA times an uncertainty EMA, "
                  "PLATON style, per weight, summed per structure; the paper's), 'taylor_structure' (EMA of the "
                  "squared summed w*grad of each structure, Molchanov et al.: one number per structure, no per-weight "
                  "buffers, so pruning costs no memory; for large models and FSDP), 'magnitude' "
                  "(|w|), 'activation' (mean |activation|), 'random'. Metrics registered with "
                  "`homodistil_hf.register_importance` are accepted too."},
    )
    importance_beta1: float = field(
        default=0.85, metadata={"help": "EMA factor of the sensitivity (PLATON beta1; 0.85 in the paper)."})
    importance_beta2: float = field(
        default=0.95,
        metadata={"help": "EMA factor of the uncertainty |I - EMA(I)| (PLATON beta2; the paper does not give it, "
                  "PLATON's default 0.95 is used)."},
    )
    pruning_schedule: str = field(
        default="cubic",
        metadata={"help": "How widths fall from the teacher's to the targets between prune_start and prune_end: "
                  "'cubic' (fast first, then slow), 'linear', or 'oneshot' (all at prune_start).",
                  "choices": list(SCHEDULES)},
    )
    prune_start: float = field(
        default=0.0,
        metadata={"help": "When pruning starts: a fraction of training if <= 1 (1.0 is the end of training), else an "
                  "optimizer step."},
    )
    prune_end: float | None = field(
        default=None,
        metadata={"help": "When the targets are reached: a fraction of training if <= 1, else an optimizer step; "
                  "training after it distils the final shape. Unset means 0.25 for encoder teachers and 0.5 for "
                  "causal-LM (decoder) teachers: what the benchmark sweep measured best for each (the paper does not "
                  "give it; see README, 'What the defaults are')."},
    )
    prune_every: int = field(default=10, metadata={"help": "Optimizer steps between two pruning steps."})
    lr_rewind: bool | None = field(
        default=None,
        metadata={"help": "Learning-rate rewinding (Renda et al., 2020) after the last pruning step: the schedule "
                  "(--lr_scheduler_type, warm-up included) starts again from its first step, stretched over the steps "
                  "left, so the final shape trains from the peak rate. Unset: on for causal-LM (decoder) teachers, "
                  "off for encoders (measured: README, 'What the defaults are').", "nargs": "?", "const": True},
    )
    pruning_mode: str = field(
        default="auto",
        metadata={"help": "'physical' slices weights, gradients and optimizer state as widths fall, so training gets "
                  "cheaper; 'masks' keeps full shapes and masks pruned structures (exactly the same function); 'auto' "
                  "is physical on one process and masks under DDP / FSDP / DeepSpeed, which cannot re-shape.",
                  "choices": list(PRUNING_MODES)},
    )
    pruning_seed: int | None = field(
        default=None, metadata={"help": "Seed of the 'random' importance (defaults to --seed)."})
    teacher_dtype: str = field(
        default="auto",
        metadata={"help": "Precision the teacher is held in: 'auto' (the training precision: bf16 / fp16 under "
                  "--bf16 / --fp16, else the student's), or 'float32', 'bfloat16', 'float16'. The teacher never gets "
                  "gradients, optimizer state or a DDP / FSDP wrapper; bfloat16 halves its memory.",
                  "choices": list(TEACHER_DTYPES)},
    )
    student_dtype: str = field(
        default="float32",
        metadata={"help": "Precision of the trainable student's weights (and so of its optimizer state): 'float32' "
                  "(master weights, whatever the teacher is stored in; --bf16 / --fp16 set the compute precision), "
                  "or 'bfloat16' / 'float16' to train the weights themselves in half precision (less memory; small "
                  "updates are lost to rounding). Used where the student is made from the teacher.",
                  "choices": list(STUDENT_DTYPES)},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Allow a run to write into an --output_dir that already holds a model or checkpoints. "
                  "Without it such a run is refused before anything is written."},
    )

    # --- defaults of TrainingArguments that the paper's recipe changes ---------------------------------------------
    adam_epsilon: float = field(default=1e-6, metadata={"help": "Adam epsilon (1e-6 in the paper's recipe)."})

    def __post_init__(self):
        # Counts TrainingArguments accepts silently and the Trainer then misuses: a negative --max_steps trains
        # --num_train_epochs instead, a batch size of 0 fails after both models loaded.
        if self.max_steps == 0 or self.max_steps < -1:
            raise UserError(f"--max_steps must be a positive number of optimizer steps, or -1 (unset: "
                            f"--num_train_epochs decides) (got {self.max_steps})")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be >= 1 (got {getattr(self, name)})")
        if self.num_train_epochs < 0:
            raise UserError(f"--num_train_epochs must be >= 0 (got {self.num_train_epochs:g})")
        super().__post_init__()
        if self.temperature <= 0:
            raise UserError(f"--temperature must be > 0 (got {self.temperature}); the paper's recipe uses 2.0")
        if self.alpha_lm is not None:
            if self.alpha_mlm is not None and self.alpha_mlm != self.alpha_lm:
                raise UserError(f"--alpha_lm {self.alpha_lm} and --alpha_mlm {self.alpha_mlm} name the same weight: "
                                "give one of them")
            self.alpha_mlm = self.alpha_lm
        if self.alpha_mlm is None:
            self.alpha_mlm = 1.0
        self.alpha_lm = self.alpha_mlm  # one weight under two names; kept equal so a saved config reloads
        for name in LOSS_WEIGHTS:
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise UserError(f"--{name} must be >= 0 (got {getattr(self, name)})")
        # alpha_attn None ("auto") may still turn out 1.0 (encoder teacher): `resolve_for_teacher` checks again.
        if self.teacher_name_or_path is not None:
            self._check_some_weight(auto_counts=True)
        if not 0.0 <= self.jsd_beta <= 1.0:
            raise UserError(f"--jsd_beta must be in [0, 1] (got {self.jsd_beta}): 0 is the forward KL, 1 the reverse")
        if self.kd_chunk_size < 1:
            raise UserError(f"--kd_chunk_size must be a positive number of positions (got {self.kd_chunk_size})")
        for name, choices in (("hidden_loss", (*HIDDEN_LOSSES, None)), ("attn_loss", ATTN_LOSSES),
                              ("pruning_schedule", SCHEDULES), ("pruning_mode", PRUNING_MODES),
                              ("pred_loss_positions", PRED_POSITIONS), ("teacher_dtype", TEACHER_DTYPES),
                              ("layer_importance", LAYER_IMPORTANCES), ("layer_choice", LAYER_CHOICES),
                              ("layer_fade", LAYER_FADES), ("student_dtype", STUDENT_DTYPES),
                              ("kd_loss", KD_LOSSES), ("export_gguf", (*GGUF_TYPES, None))):
            if getattr(self, name) not in choices:
                raise UserError(f"--{name} {getattr(self, name)!r} is not one of {', '.join(c for c in choices if c)}")
        if self.importance not in ("auto", *importance_names()):  # (registered ablations are accepted too)
            raise UserError(f"--importance {self.importance!r} is not one of auto, "
                            f"{', '.join(importance_names(listed_only=True))}")
        for name in TARGET_FIELDS:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"--{name} must be a positive integer (got {value})")
        self.target_params = None if self.target_params in (None, "") else str(self.target_params)
        if self.target_params is not None:
            if parse_param_count(self.target_params) <= 0:
                raise UserError(f"--target_params must be positive (got {self.target_params})")
            if any(getattr(self, n) is not None for n in TARGET_FIELDS if n != "target_num_hidden_layers"):
                raise UserError("--target_params picks the widths itself: drop --target_hidden_size / "
                                "--target_num_attention_heads / --target_intermediate_size / "
                                "--target_num_key_value_heads / --target_head_dim, or drop --target_params")
        optim = str(getattr(self.optim, "value", self.optim))
        if self.has_targets and self.pruning_mode != "masks" and optim not in ELEMENTWISE_OPTIMIZERS:
            raise UserError(f"--optim {optim} keeps state that is not shaped like its parameters (factored, "
                            "quantised or layer-wise), which cannot follow the pruned weights; use an Adam-family "
                            f"optimizer ({', '.join(ELEMENTWISE_OPTIMIZERS)}), or --pruning_mode masks")
        for name in ("importance_beta1", "importance_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"--{name} must be in [0, 1) (got {getattr(self, name)})")
        if self.prune_every < 1:
            raise UserError(f"--prune_every must be >= 1 (got {self.prune_every})")
        for name in ("prune_start", "prune_end"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise UserError(f"--{name} must be >= 0: a fraction of training (<= 1) or a step (got "
                                f"{getattr(self, name)})")
        if self.target_num_hidden_layers is not None and self.layer_map:
            raise UserError("--layer_map with --target_num_hidden_layers: the layer map follows the layers pruning "
                            "keeps (each kept layer against the teacher layer it came from); drop --layer_map")
        self._check_prune_order()
        if self.assistant_only_loss and self.completion_only_loss:
            raise UserError("--assistant_only_loss (conversations) and --completion_only_loss (prompt/completion) "
                            "are for different corpora: give the one that fits your data")
        if self.eval_tasks_limit is not None and self.eval_tasks_limit <= 0:
            raise UserError(f"--eval_tasks_limit must be > 0: examples per task, or a fraction (got "
                            f"{self.eval_tasks_limit:g})")
        if self.eval_tasks_include_path is not None and not self.eval_tasks:
            raise UserError("--eval_tasks_include_path names where local lm-eval tasks live: give --eval_tasks too")
        if self.lr_rewind is True and ("plateau" in str(self.lr_scheduler_type) or not self.has_targets):
            raise UserError("--lr_rewind restarts the step-wise learning-rate schedule after the last pruning step: "
                            "give pruning targets and a --lr_scheduler_type other than reduce_lr_on_plateau")

    @property
    def eval_task_list(self) -> list[str]:
        """--eval_tasks as a list of task names."""
        return [t.strip() for t in (self.eval_tasks or "").split(",") if t.strip()]

    def _check_prune_order(self) -> None:
        """--prune_end, once known, does not come before --prune_start (when both are fractions or both steps)."""
        end = self.prune_end
        if end is not None and is_fraction(self.prune_start) == is_fraction(end) and end < self.prune_start:
            raise UserError(f"--prune_end ({end}) is before --prune_start ({self.prune_start})")

    @property
    def has_targets(self) -> bool:
        """Whether any pruning target is set."""
        return self.target_params is not None or any(getattr(self, n) is not None for n in TARGET_FIELDS)

    def resolve_for_teacher(self, causal_lm: bool) -> None:
        """Settle the settings left on "auto" once the teacher's family is known, as measured (README, 'What the
        defaults are'): for encoders / causal-LM teachers `alpha_attn` 1.0 / 0 (eager attention is slow on long
        contexts), `hidden_loss` 'mse' / 'cosine' (outlier channels), `lr_rewind` off / on, `prune_end` 0.25 / 0.5;
        `importance` is `default_importance` (per structure wherever parameters are sharded). Idempotent; refuses a
        run whose weights all end up 0."""
        if self.alpha_attn is None:
            self.alpha_attn = 0.0 if causal_lm else 1.0
        if self.hidden_loss is None:
            self.hidden_loss = "cosine" if causal_lm else "mse"
        if self.lr_rewind is None:
            self.lr_rewind = causal_lm and "plateau" not in str(self.lr_scheduler_type)
        if self.importance == "auto":
            # (accelerate launch --use_fsdp turns FSDP on without --fsdp)
            sharded = bool(self.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes")
            self.importance = default_importance(causal_lm, sharded=sharded)
        if self.prune_end is None:
            end = default_prune_end(causal_lm)
            if end < self.prune_start and is_fraction(self.prune_start):
                if self.pruning_schedule != "oneshot":  # (a one-shot schedule has no end: it prunes at the start)
                    raise UserError(f"--prune_start {self.prune_start:g} is after the default --prune_end for this "
                                    f"teacher ({end:g}): set --prune_end as well, a fraction after "
                                    f"{self.prune_start:g} or a step")
                end = self.prune_start
            self.prune_end = end
        self._check_prune_order()
        self._check_some_weight(auto_counts=False)

    def _check_some_weight(self, auto_counts: bool) -> None:
        """At least one loss weight above 0 (a weight still on "auto" counts if `auto_counts`)."""
        if not any((auto_counts and getattr(self, n) is None) or (getattr(self, n) or 0) > 0 for n in LOSS_WEIGHTS):
            raise UserError(f"all loss weights are 0: set at least one of {', '.join('--' + n for n in LOSS_WEIGHTS)} "
                            "above 0")
