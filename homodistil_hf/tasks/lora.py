"""LoRA fine-tuning helpers shared by `run_glue.py` and `run_squad.py`: wrap a model with PEFT, merge it back.

The task head (e.g. `classifier`, `qa_outputs`) is fully trained through PEFT's `modules_to_save`; after training
`merge_lora` folds the adapters into the weights, so the saved model is a stock `AutoModelFor...` checkpoint that
loads with no `peft` installed.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from ..errors import UserError

# Attention projections LoRA adapts by default (query and value, as in the LoRA paper), by architecture naming.
_DEFAULT_TARGETS = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("query_proj", "value_proj"))


# PeftModelForQuestionAnswering (peft 0.21) drops `token_type_ids` and `position_ids` in its forward: BERT would train
# without segment embeddings and the merged model would compute something else. The generic PeftModel (no task type)
# passes every input through; the head is still trained through modules_to_save.
_PEFT_TASK_TYPES = {"QUESTION_ANS": None}


def _linear_names(model: nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}


def resolve_target_modules(model: nn.Module, requested: str | None) -> list[str]:
    """LoRA target module names: the comma-separated `requested` ones, or query/value projections by default."""
    available = _linear_names(model)
    if requested:
        targets = [t.strip() for t in requested.split(",") if t.strip()]
        missing = [t for t in targets if t not in available]
        if missing:
            raise UserError(
                f"--lora_target_modules {','.join(missing)} matches no linear layer of the model: choose among "
                f"{','.join(sorted(available))}"
            )
        return targets
    for pair in _DEFAULT_TARGETS:
        if all(name in available for name in pair):
            return list(pair)
    raise UserError(
        "no query/value projections found for LoRA in this architecture: pass --lora_target_modules, e.g. one of "
        f"{','.join(sorted(available))}"
    )


def head_module_names(model: PreTrainedModel) -> list[str]:
    """Top-level modules with parameters outside the backbone: the task head, trained in full under LoRA."""
    backbone = getattr(model, "base_model_prefix", "")
    return [
        name for name, module in model.named_children() if name != backbone and any(True for _ in module.parameters())
    ]


def wrap_with_lora(
    model: PreTrainedModel,
    task_type: str,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.1,
    target_modules: str | None = None,
):
    """Wrap `model` in a PEFT LoRA model (`task_type` 'SEQ_CLS' or 'QUESTION_ANS'); the head stays trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type=_PEFT_TASK_TYPES.get(task_type, task_type),
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=resolve_target_modules(model, target_modules),
        modules_to_save=head_module_names(model),
    )
    return get_peft_model(model, config)


def is_peft_model(model: nn.Module) -> bool:
    """Whether `model` is a PEFT wrapper (without importing peft when it is not installed)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA adapters into the base weights and return the plain model (a plain model is returned as is)."""
    if not is_peft_model(model):
        return model
    return model.merge_and_unload()
