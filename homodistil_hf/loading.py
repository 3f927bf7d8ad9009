"""Loading teachers and building students.

A teacher loads with the Auto class its checkpoint was saved with (an MLM checkpoint keeps its MLM head, a
sentence-transformers `BertModel` has none, a decoder `*ForCausalLM` / `GPT2LMHeadModel` keeps its LM head). A GGUF
teacher (a `.gguf` file, or a folder plus `gguf_file`) is dequantised once and cached as a plain checkpoint (see
`gguf_teacher.py`). Students start as:
- `teacher`: an exact copy of the teacher (HomoDistil's homotopic start);
- `truncate`: the teacher cut to the target widths by keeping the first channels, heads, head dims and neurons
  (the paper's "truncated teacher" baseline start);
- `random`: a freshly initialised model of the target shape (and depth).
"""

from __future__ import annotations

import copy
import os

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
)

from .arch import Shape, get_adapter, head_kind, shape_of
from .errors import UserError
from .gguf_teacher import gguf_teacher
from .pruning.state import PruningState, selection_between
from .pruning.surgery import finalize_attention_scale, prune_model
from .pruning.targets import config_for_shape

# Head kinds (`arch.HEAD_KINDS`) -> the Auto class that loads a checkpoint with that head.
AUTO_CLASSES = {
    "masked_lm": AutoModelForMaskedLM,
    "sequence_classification": AutoModelForSequenceClassification,
    "question_answering": AutoModelForQuestionAnswering,
    "token_classification": AutoModelForTokenClassification,
    "causal_lm": AutoModelForCausalLM,
}


def auto_class_for(model_or_config):
    """The Auto class of a model's head (or of a checkpoint's saved architecture); `AutoModel` when it has no known
    head."""
    return AUTO_CLASSES.get(head_kind(model_or_config), AutoModel)


def load_config(name_or_path: str, flag: str = "--teacher_name_or_path", gguf_file: str | None = None,
                cache_dir: str | None = None):
    """Load a config with a one-line error for a missing or unreadable path / Hub id (or GGUF file: its metadata)."""
    gguf = gguf_teacher(name_or_path, gguf_file, cache_dir)
    try:
        # (a GGUF file's own errors are UserErrors already, raised before this handler)
        config = gguf.config() if gguf is not None else AutoConfig.from_pretrained(name_or_path)
    except UserError:
        raise
    except (OSError, ValueError) as err:
        if os.path.isdir(name_or_path) or os.path.sep in name_or_path or name_or_path.startswith("."):
            raise UserError(f"{flag} {name_or_path}: no loadable config.json there ({type(err).__name__}); point it "
                            "to a folder written by save_pretrained") from None
        raise UserError(f"{flag} {name_or_path}: not found locally and not loadable from the Hub (offline or "
                        "unknown id); pass a local folder or check the model id") from None
    try:
        get_adapter(config)  # the registry's one check (families registered later included)
    except UserError as err:
        raise UserError(f"{flag} {name_or_path}: {err}") from None
    return config


def load_teacher(name_or_path: str, auto_class=None, dtype: torch.dtype | None = None, gguf_file: str | None = None,
                 **kwargs) -> PreTrainedModel:
    """Load a teacher by Hub id or local folder, with the head its checkpoint was saved with; a GGUF teacher (a
    `.gguf` path, or a folder and `gguf_file`) from its cached plain conversion (converted first if needed)."""
    gguf = gguf_teacher(name_or_path, gguf_file, kwargs.get("cache_dir"))
    if gguf is not None:
        name_or_path = str(gguf.convert())
        kwargs.pop("cache_dir", None)  # a local folder now
    config = load_config(name_or_path)  # refuses unsupported families before any weights load
    auto_class = auto_class or auto_class_for(config)
    try:
        model = auto_class.from_pretrained(name_or_path, dtype=dtype, **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(f"--teacher_name_or_path {name_or_path}: weights could not be loaded ({err}); the folder "
                        "needs model.safetensors (or pytorch_model.bin) next to config.json") from None
    return model.eval()


STUDENT_INITS = ("teacher", "truncate", "random")


def check_student_args(init: str, target: Shape | None, num_layers: int | None, teacher_layers: int) -> None:
    """What makes a student impossible, from the arguments alone (the script checks before loading weights,
    `make_student` again for library callers)."""
    if init not in STUDENT_INITS:
        raise UserError(f"--student_init {init!r} is not one of {', '.join(STUDENT_INITS)}")
    if num_layers is not None and num_layers < 1:
        raise UserError(f"--student_num_hidden_layers must be >= 1 (got {num_layers})")
    if num_layers not in (None, teacher_layers) and init != "random":
        raise UserError(f"--student_num_hidden_layers {num_layers} needs --student_init random: HomoDistil keeps the "
                        f"teacher's depth ({teacher_layers}) and prunes widths")
    if init != "teacher" and target is None:
        raise UserError(f"--student_init {init} needs a student shape: set --target_hidden_size / "
                        "--target_num_attention_heads / --target_intermediate_size or --target_params")


def make_student(teacher: PreTrainedModel, init: str = "teacher", target: Shape | None = None,
                 num_layers: int | None = None, seed: int = 42) -> tuple[PreTrainedModel, PruningState | None]:
    """Build a student from a teacher; returns it and, when it is a cut of the teacher, which teacher structures
    it holds (so the losses can pair student and teacher channels and heads)."""
    initial = shape_of(teacher.config)
    teacher_layers = len(get_adapter(teacher).layers(teacher))
    check_student_args(init, target, num_layers, teacher_layers)
    if init == "teacher":
        student = copy.deepcopy(teacher)
        return student.train().requires_grad_(True), None
    if init == "truncate":
        student = copy.deepcopy(teacher)
        state = PruningState.first(initial, target, teacher_layers)
        with torch.no_grad():
            prune_model(student, selection_between(PruningState.full(initial, teacher_layers), state))
        finalize_attention_scale(student)  # a finished stock model: it is not pruned further
        return student.train().requires_grad_(True), state
    if init == "random":
        config = config_for_shape(teacher.config, target)
        if num_layers is not None:
            # Through the adapter, so per-layer fields (layer_types, max_window_layers) follow; a deeper student
            # repeats the last layer's settings.
            get_adapter(config).set_depth(config, [min(i, teacher_layers - 1) for i in range(num_layers)])
        torch.manual_seed(seed)
        student = type(teacher)(config)
        student.to(dtype=next(teacher.parameters()).dtype)
        return student.train().requires_grad_(True), None
    raise AssertionError(init)  # check_student_args refused anything else
