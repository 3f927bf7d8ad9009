"""`HomoDistilConfig`: the training arguments of a HomoDistil run (TRL style: one dataclass, every field documented,
validated in `__post_init__`).

Defaults follow the paper where it is known (Adam eps 1e-6, KD temperature 2, cubic schedule, a pruning step every
10 steps, sensitivity importance with EMA beta1 0.85). Where the paper is silent the choice is ours, documented in
the field's help and in the README.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .errors import UserError

HIDDEN_LOSSES = ("mse", "cosine")
ATTN_LOSSES = ("kl", "mse")
IMPORTANCES = ("sensitivity", "magnitude", "activation", "random")
SCHEDULES = ("cubic", "linear", "oneshot")
PRUNING_MODES = ("auto", "physical", "masks")
PRED_POSITIONS = ("all", "masked")


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
        metadata={"help": "Teacher model: a Hub id or a local folder. With no student given, the student starts as an "
                  "exact copy of it (the homotopic start)."},
    )
    temperature: float = field(
        default=2.0, metadata={"help": "Softmax temperature of the logit KL term (scaled by T^2, as in Hinton et al.)."}
    )
    alpha_mlm: float = field(
        default=1.0, metadata={"help": "Weight of the student's own masked-LM (or task) loss on the labels."}
    )
    alpha_pred: float = field(
        default=1.0, metadata={"help": "Weight of the KL divergence between teacher and student output distributions."}
    )
    alpha_hidden: float = field(default=1.0, metadata={"help": "Weight of the hidden-state distillation term."})
    alpha_attn: float = field(
        default=1.0,
        metadata={"help": "Weight of the attention distillation term (needs eager attention; sdpa is used when 0)."},
    )
    hidden_loss: str = field(
        default="mse",
        metadata={"help": "Hidden-state loss: 'mse' (mean squared error over kept channels) or 'cosine' (1 - cosine "
                  "similarity per token).", "choices": list(HIDDEN_LOSSES)},
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
        default=None, metadata={"help": "Final hidden (embedding / residual) width. Unset keeps the teacher's."}
    )
    target_num_attention_heads: int | None = field(
        default=None,
        metadata={"help": "Final number of attention heads per layer. Unset keeps the teacher's. The head size is "
                  "target_hidden_size / heads, as in a stock config; it must not exceed the teacher's head size."},
    )
    target_intermediate_size: int | None = field(
        default=None, metadata={"help": "Final FFN width per layer. Unset keeps the teacher's."}
    )
    target_params: str | None = field(
        default=None,
        metadata={"help": "Alternative to the three widths: a backbone parameter count such as '17.3M'. A valid shape "
                  "is chosen by shrinking all widths by one factor, keeping the teacher's head size and FFN ratio."},
    )

    # --- importance and schedule -----------------------------------------------------------------------------------
    importance: str = field(
        default="sensitivity",
        metadata={"help": "Importance metric: 'sensitivity' (|w*grad| smoothed by an EMA times an uncertainty EMA, "
                  "PLATON style; the paper's), 'magnitude' (|w|), 'activation' (mean |activation|), 'random'.",
                  "choices": list(IMPORTANCES)},
    )
    importance_beta1: float = field(
        default=0.85, metadata={"help": "EMA factor of the sensitivity (PLATON beta1; 0.85 in the paper)."}
    )
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
        metadata={"help": "When pruning starts: a fraction of training if < 1, else an optimizer step."},
    )
    prune_end: float = field(
        default=0.5,
        metadata={"help": "When the targets are reached: a fraction of training if < 1 (default half of it; the paper "
                  "does not give it), else an optimizer step. Training after it distils the final shape."},
    )
    prune_every: int = field(default=10, metadata={"help": "Optimizer steps between two pruning steps."})
    pruning_mode: str = field(
        default="auto",
        metadata={"help": "'physical' slices weights, gradients and optimizer state as widths fall, so training gets "
                  "cheaper; 'masks' keeps full shapes and masks pruned structures (exactly the same function); 'auto' "
                  "is physical on one process and masks under DDP / FSDP / DeepSpeed, which cannot re-shape.",
                  "choices": list(PRUNING_MODES)},
    )
    pruning_seed: int | None = field(
        default=None, metadata={"help": "Seed of the 'random' importance (defaults to --seed)."}
    )

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Allow a run to write into an --output_dir that already holds a model or checkpoints. "
                  "Without it such a run is refused before anything is written."},
    )

    # --- defaults of TrainingArguments that the paper's recipe changes ---------------------------------------------
    adam_epsilon: float = field(default=1e-6, metadata={"help": "Adam epsilon (1e-6 in the paper's recipe)."})

    def __post_init__(self):
        super().__post_init__()
        if self.temperature <= 0:
            raise UserError(f"--temperature must be > 0 (got {self.temperature}); the paper's recipe uses 2.0")
        for name in ("alpha_mlm", "alpha_pred", "alpha_hidden", "alpha_attn"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name} must be >= 0 (got {getattr(self, name)})")
        if self.teacher_name_or_path is not None and not any(
            getattr(self, n) > 0 for n in ("alpha_mlm", "alpha_pred", "alpha_hidden", "alpha_attn")
        ):
            raise UserError("all loss weights are 0: set at least one of --alpha_mlm, --alpha_pred, --alpha_hidden, "
                            "--alpha_attn above 0")
        for name, choices in (
            ("hidden_loss", HIDDEN_LOSSES),
            ("attn_loss", ATTN_LOSSES),
            ("importance", IMPORTANCES),
            ("pruning_schedule", SCHEDULES),
            ("pruning_mode", PRUNING_MODES),
            ("pred_loss_positions", PRED_POSITIONS),
        ):
            if getattr(self, name) not in choices:
                raise UserError(f"--{name} {getattr(self, name)!r} is not one of {', '.join(choices)}")
        for name in ("target_hidden_size", "target_num_attention_heads", "target_intermediate_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"--{name} must be a positive integer (got {value})")
        self.target_params = None if self.target_params in (None, "") else str(self.target_params)
        if self.target_params is not None:
            if parse_param_count(self.target_params) <= 0:
                raise UserError(f"--target_params must be positive (got {self.target_params})")
            if any(getattr(self, n) is not None for n in
                   ("target_hidden_size", "target_num_attention_heads", "target_intermediate_size")):
                raise UserError("--target_params picks the widths itself: drop --target_hidden_size / "
                                "--target_num_attention_heads / --target_intermediate_size, or drop --target_params")
        for name in ("importance_beta1", "importance_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"--{name} must be in [0, 1) (got {getattr(self, name)})")
        if self.prune_every < 1:
            raise UserError(f"--prune_every must be >= 1 (got {self.prune_every})")
        for name in ("prune_start", "prune_end"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name} must be >= 0: a fraction of training (< 1) or a step (got "
                                f"{getattr(self, name)})")
        if (self.prune_start < 1) == (self.prune_end < 1) and self.prune_end < self.prune_start:
            raise UserError(f"--prune_end ({self.prune_end}) is before --prune_start ({self.prune_start})")

    @property
    def has_targets(self) -> bool:
        """Whether any pruning target is set."""
        return self.target_params is not None or any(
            getattr(self, n) is not None
            for n in ("target_hidden_size", "target_num_attention_heads", "target_intermediate_size")
        )
