"""Per-family structure maps. `get_adapter(model_or_config)` returns the family's adapter or refuses the model with
one line naming the supported model types."""

from __future__ import annotations

from ..errors import UserError
from .base import ArchAdapter, HiddenParts, LayerParts
from .bert import BertAdapter
from .decoder import LlamaLikeAdapter
from .electra import ElectraAdapter
from .encoder import EncoderAdapter
from .gpt2 import GPT2Adapter
from .roberta import RobertaAdapter

ADAPTERS: dict[str, type[ArchAdapter]] = {
    t: cls for cls in (BertAdapter, RobertaAdapter, ElectraAdapter, LlamaLikeAdapter, GPT2Adapter)
    for t in cls.model_types
}
SUPPORTED_MODEL_TYPES = tuple(sorted(ADAPTERS))


def register_adapter(cls: type[ArchAdapter]) -> type[ArchAdapter]:
    """Class decorator: support a model family with its adapter (see README, "Adding a model family")."""
    global SUPPORTED_MODEL_TYPES
    ADAPTERS.update({t: cls for t in cls.model_types})
    SUPPORTED_MODEL_TYPES = tuple(sorted(ADAPTERS))
    return cls


def get_adapter(model_or_config) -> ArchAdapter:
    """The adapter of a model (or config); a `UserError` naming the supported types otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        moe = any(getattr(config, k, None) for k in ("num_local_experts", "num_experts", "n_routed_experts"))
        kind = " (a mixture-of-experts model)" if moe else ""
        raise UserError(f"model type {model_type!r}{kind} is not supported for pruning; supported model types: "
                        f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    adapter = ADAPTERS[model_type]()
    adapter.check_config(config)
    return adapter


def check_model_supported(model) -> ArchAdapter:
    """`get_adapter`, plus a check that every module holding parameters is mapped (refuses unknown heads)."""
    adapter = get_adapter(model)
    uncovered = adapter.uncovered_modules(model)
    if uncovered:
        raise UserError(f"{type(model).__name__} has modules the {model.config.model_type} adapter does not map "
                        f"({', '.join(uncovered[:4])}); prune its backbone (AutoModel) or a supported head class")
    return adapter


__all__ = ["ADAPTERS", "SUPPORTED_MODEL_TYPES", "ArchAdapter", "EncoderAdapter", "HiddenParts", "LayerParts",
           "check_model_supported", "get_adapter", "register_adapter"]
