"""Model families: the structure vocabulary pruning works in (`Shape`, `Proj`, `LayerParts`, `HiddenParts`, how each
module type is sliced), the adapter interface, and the registry of adapters.

Adapter authors import only from here. Importing this package registers the built-in families (BERT, RoBERTa,
ELECTRA, Llama / Mistral / Qwen2 / Qwen3, GPT-2) through `register_adapter`, the same decorator an outside family uses.
"""

from __future__ import annotations

from . import bert, decoder, electra, gpt2, roberta  # noqa: F401  (registers the built-in families)
from .base import ArchAdapter, DepthParts, HiddenParts, LayerParts, get_module
from .encoder import EncoderAdapter
from .modules import Proj, is_norm
from .registry import (
    ADAPTERS,
    HEAD_KINDS,
    check_model_supported,
    disable_attention_dropout,
    get_adapter,
    head_kind,
    is_causal_lm,
    register_adapter,
    shape_of,
    supported_model_types,
)
from .shape import Shape

__all__ = ["ADAPTERS", "HEAD_KINDS", "ArchAdapter", "DepthParts", "EncoderAdapter", "HiddenParts", "LayerParts", "Proj", "Shape",
           "check_model_supported", "disable_attention_dropout", "get_adapter", "get_module", "head_kind", "is_causal_lm",
           "is_norm", "register_adapter", "shape_of", "supported_model_types"]
