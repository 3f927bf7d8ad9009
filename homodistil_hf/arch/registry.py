"""The adapter registry: one table from a config's `model_type` to its family's adapter.

Built-in families register themselves here exactly as an outside one does (`@register_adapter` on the adapter
class); `homodistil_hf.arch` imports the built-in family modules so that they are registered. Every "which family is
this" question (`get_adapter`, `shape_of`, `is_causal_lm`) is answered here, once.
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from .base import ArchAdapter
from .shape import Shape

ADAPTERS: dict[str, type[ArchAdapter]] = {}


def register_adapter(cls: type[ArchAdapter]) -> type[ArchAdapter]:
    """Class decorator: support a model family with its adapter (see README, "Adding a model family")."""
    ADAPTERS.update({t: cls for t in cls.model_types})
    return cls


def supported_model_types() -> tuple[str, ...]:
    """The `model_type`s with a registered adapter, sorted."""
    return tuple(sorted(ADAPTERS))


def get_adapter(model_or_config) -> ArchAdapter:
    """The adapter of a model (or config); a `UserError` naming the supported types otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        moe = any(getattr(config, k, None) for k in ("num_local_experts", "num_experts", "n_routed_experts"))
        kind = " (a mixture-of-experts model)" if moe else ""
        raise UserError(f"model type {model_type!r}{kind} is not supported for pruning; supported model types: "
                        f"{', '.join(supported_model_types())}")
    adapter = ADAPTERS[model_type]()
    adapter.check_config(config)
    return adapter


def check_model_supported(model: nn.Module) -> ArchAdapter:
    """`get_adapter`, plus a check that every module holding parameters is mapped (refuses unknown heads)."""
    adapter = get_adapter(model)
    uncovered = adapter.uncovered_modules(model)
    if uncovered:
        raise UserError(f"{type(model).__name__} has modules the {model.config.model_type} adapter does not map "
                        f"({', '.join(uncovered[:4])}); prune its backbone (AutoModel) or a supported head class")
    return adapter


def shape_of(config) -> Shape:
    """The prunable widths of a stock config (through its family's adapter)."""
    return get_adapter(config).shape_of(config)


# The one table of Hugging Face head classes: class-name suffix -> head kind (`loading` maps kinds to Auto classes).
HEAD_KINDS = {
    "ForMaskedLM": "masked_lm",
    "ForPreTraining": "masked_lm",  # keep the MLM head; the NSP / discriminator head is not distilled
    "ForSequenceClassification": "sequence_classification",
    "ForQuestionAnswering": "question_answering",
    "ForTokenClassification": "token_classification",
    "ForCausalLM": "causal_lm",  # Llama, Mistral, Qwen2, Qwen3
    "LMHeadModel": "causal_lm",  # GPT2LMHeadModel
}


def head_kind(model_or_config) -> str | None:
    """The head of a model (by its class) or of a checkpoint (by its config's saved `architectures`): a value of
    `HEAD_KINDS`, or None for a bare backbone or an unknown head."""
    if isinstance(model_or_config, nn.Module):
        names = [type(model_or_config).__name__]
    else:
        names = list(getattr(model_or_config, "architectures", None) or [])
    for name in names:
        for suffix, kind in HEAD_KINDS.items():
            if name.endswith(suffix):
                return kind
    return None


def is_causal_lm(model_or_config) -> bool:
    """Whether a model (or the checkpoint a config describes) is a causal language model of a decoder family
    (`LlamaForCausalLM`, `GPT2LMHeadModel`, ...), distilled on next-token prediction, as opposed to an encoder or a
    decoder under a task head (sequence classification, ...)."""
    config = getattr(model_or_config, "config", model_or_config)
    return get_adapter(config).causal_lm and head_kind(model_or_config) == "causal_lm"


def disable_attention_dropout(model: nn.Module) -> bool:
    """Switch off attention-probability dropout in `model`'s attention modules (its config keeps the value);
    whether any was on. Attention maps after dropout are not distributions, so they cannot be distilled."""
    adapter = get_adapter(model)
    return any([adapter.disable_attention_dropout(parts) for parts in adapter.layers(model)])
