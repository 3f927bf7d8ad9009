"""Per-architecture structure maps. `get_adapter(model_or_config)` returns the adapter or refuses the model."""

from __future__ import annotations

from ..errors import UserError
from .base import ArchAdapter, HiddenParts, LayerParts
from .bert import BertAdapter
from .electra import ElectraAdapter
from .roberta import RobertaAdapter

ADAPTERS: dict[str, type[ArchAdapter]] = {t: cls for cls in (BertAdapter, RobertaAdapter, ElectraAdapter)
                                          for t in cls.model_types}
SUPPORTED_MODEL_TYPES = tuple(sorted(ADAPTERS))


def get_adapter(model_or_config) -> ArchAdapter:
    """The adapter of a model (or config); a `UserError` naming the supported types otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in ADAPTERS:
        raise UserError(f"model type {model_type!r} is not supported for pruning; supported model types: "
                        f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        raise UserError(f"{model_type} configured as a decoder (is_decoder / add_cross_attention) is not supported: "
                        "HomoDistil prunes bidirectional encoders")
    return ADAPTERS[model_type]()


def check_model_supported(model) -> ArchAdapter:
    """`get_adapter`, plus a check that every weight-bearing module is mapped (refuses unknown heads)."""
    adapter = get_adapter(model)
    uncovered = adapter.uncovered_modules(model)
    if uncovered:
        raise UserError(f"{type(model).__name__} has modules the {model.config.model_type} adapter does not map "
                        f"({', '.join(uncovered[:4])}); prune its backbone (AutoModel) or a supported head class")
    return adapter


__all__ = ["ADAPTERS", "SUPPORTED_MODEL_TYPES", "ArchAdapter", "HiddenParts", "LayerParts", "check_model_supported",
           "get_adapter"]
