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
from .validate import looks_local

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
        if os.path.isdir(name_or_path) or looks_local(name_or_path):
            raise UserError(f"{flag} {name_or_path}: no loadable config.json there ({type(err).__name__}); point it "
                            "to a folder written by save_pretrained") from None
        raise UserError(f"{flag} {name_or_path}: not a local folder, and {hub_failure(err)}") from None
    try:
        get_adapter(config)  # the registry's one check (families registered later included)
    except UserError as err:
        raise UserError(f"{flag} {name_or_path}: {err}") from None
    return config


def hub_failure(err: BaseException) -> str:
    """Why a Hub id did not load and what to do, in words: offline mode, no network, or (otherwise) no such model."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE") or \
            os.environ.get("TRANSFORMERS_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return ("offline mode is on (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) with no copy in the Hub cache: unset "
                "offline mode to download it, or pass a local folder")
    chain, seen = err, []
    while chain is not None and chain not in seen:
        seen.append(chain)
        chain = chain.__cause__ or chain.__context__
    if any(isinstance(e, LocalEntryNotFoundError | ConnectionError) or "connect" in str(e).lower() or
           "ConnectError" in type(e).__name__ or "Timeout" in type(e).__name__ for e in seen):
        return ("the Hub could not be reached (no network) with no copy in the Hub cache: connect, or pass a local "
                "folder")
    return "the Hub has no loadable config under that id: check the id (log in for a private one), or pass a folder"


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
                 num_layers: int | None = None, seed: int = 42,
                 dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PruningState | None]:
    """Build a student from a teacher; returns it and, when it is a cut of the teacher, which teacher structures
    it holds (so the losses can pair student and teacher channels and heads).

    The student's weights are in `dtype` (fp32 master weights by default, whatever the teacher is stored in: a
    bfloat16 student would also get bfloat16 Adam state, and small updates would round away)."""
    initial = shape_of(teacher.config)
    teacher_layers = len(get_adapter(teacher).layers(teacher))
    check_student_args(init, target, num_layers, teacher_layers)
    if init == "teacher":
        student = copy.deepcopy(teacher).to(dtype)
        return student.train().requires_grad_(True), None
    if init == "truncate":
        student = copy.deepcopy(teacher).to(dtype)
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
        student.to(dtype=dtype)
        return student.train().requires_grad_(True), None
    raise AssertionError(init)  # check_student_args refused anything else


def needs_projection(student_hidden: int, teacher_hidden: int, args) -> bool:
    """Whether the hidden term needs a learned projection for a student that is not a pruned copy of the teacher;
    a `UserError` when one is needed but not asked for, or not possible."""
    if args.alpha_hidden == 0 or student_hidden == teacher_hidden:
        return False
    if not args.hidden_projection:
        raise UserError(f"the student's hidden size ({student_hidden}) differs from the teacher's ({teacher_hidden}) "
                        "and it is not a pruned copy: pass --hidden_projection to learn a projection, or "
                        "--alpha_hidden 0")
    if args.parallel_mode.value == "distributed":
        raise UserError("--hidden_projection is not supported with several processes; use one process or "
                        "--student_init teacher / truncate")
    return True
