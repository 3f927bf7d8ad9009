"""What an architecture adapter is: a map from the prunable structures to a model's modules.

An adapter answers three questions about a model, and nothing else:
- which modules make up each transformer layer (`LayerParts`): the attention projections, the FFN, the LayerNorms;
- which modules carry the hidden (residual) width (`HiddenParts`): embeddings, LayerNorms, and every Linear that
  reads or writes the residual stream, task heads included;
- how a shape is written into the model family's stock config (`write_config`).

Surgery, masking, importance and export are generic over these maps, so supporting a new encoder family means writing
one small subclass of `ArchAdapter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn


@dataclass
class LayerParts:
    """The modules of one transformer layer that pruning touches."""

    attention: nn.Module  # the self-attention module: holds num_attention_heads, attention_head_size, scaling
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attn_out: nn.Linear  # attention output projection: reads the per-head context, writes the residual stream
    attn_norm: nn.LayerNorm
    ffn_in: nn.Linear
    ffn_out: nn.Linear
    ffn_norm: nn.LayerNorm


@dataclass
class HiddenParts:
    """Every module whose weights have a hidden-width dimension (one shared set of channels).

    `in_linears` read the residual stream (their input columns are hidden channels), `out_linears` write it (their
    output rows are hidden channels); a Linear can be both (pooler, MLM transform). A weight shared by two modules
    (a tied decoder) is sliced once.
    """

    embeddings: list[nn.Embedding] = field(default_factory=list)
    norms: list[nn.LayerNorm] = field(default_factory=list)
    in_linears: list[nn.Linear] = field(default_factory=list)
    out_linears: list[nn.Linear] = field(default_factory=list)


def get_module(root: nn.Module, path: str) -> nn.Module | None:
    """The submodule at dotted `path`, or None if any part is missing."""
    module = root
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


class ArchAdapter:
    """Base adapter for BERT-like encoders (post-LayerNorm, `encoder.layer[i]` with `attention.self/output`,
    `intermediate`, `output`). Subclasses list their head modules and model types."""

    model_types: ClassVar[tuple[str, ...]] = ()
    # Head modules, as dotted paths from the top model; a path absent from a given head class is skipped.
    head_in_linears: ClassVar[tuple[str, ...]] = ()  # read hidden only
    head_inout_linears: ClassVar[tuple[str, ...]] = ()  # hidden -> hidden
    head_norms: ClassVar[tuple[str, ...]] = ()
    # Head modules that have no hidden-width dimension (safe to leave alone), for the coverage check.
    head_other: ClassVar[tuple[str, ...]] = ()

    # --- structure maps ---------------------------------------------------------------------------------------------
    def base(self, model: nn.Module) -> nn.Module:
        """The backbone (e.g. `BertModel`) of any head class."""
        return model.base_model

    def layers(self, model: nn.Module) -> list[LayerParts]:
        """The parts of each transformer layer, in order."""
        parts = []
        for layer in self.base(model).encoder.layer:
            parts.append(
                LayerParts(
                    attention=layer.attention.self,
                    query=layer.attention.self.query,
                    key=layer.attention.self.key,
                    value=layer.attention.self.value,
                    attn_out=layer.attention.output.dense,
                    attn_norm=layer.attention.output.LayerNorm,
                    ffn_in=layer.intermediate.dense,
                    ffn_out=layer.output.dense,
                    ffn_norm=layer.output.LayerNorm,
                )
            )
        return parts

    def embedding_parts(self, model: nn.Module) -> HiddenParts:
        """Embedding modules that carry the hidden width (the embeddings LayerNorm included)."""
        emb = self.base(model).embeddings
        return HiddenParts(
            embeddings=[m for m in (emb.word_embeddings, emb.position_embeddings,
                                    getattr(emb, "token_type_embeddings", None)) if m is not None],
            norms=[emb.LayerNorm],
        )

    def hidden_parts(self, model: nn.Module) -> HiddenParts:
        """All modules carrying the hidden width: embeddings, every layer, pooler and task heads."""
        parts = self.embedding_parts(model)
        for layer in self.layers(model):
            parts.in_linears += [layer.query, layer.key, layer.value, layer.ffn_in]
            parts.out_linears += [layer.attn_out, layer.ffn_out]
            parts.norms += [layer.attn_norm, layer.ffn_norm]
        pooler = getattr(self.base(model), "pooler", None)
        if pooler is not None:
            parts.in_linears.append(pooler.dense)
            parts.out_linears.append(pooler.dense)
        for path in self.head_inout_linears:
            if isinstance(module := get_module(model, path), nn.Linear):
                parts.in_linears.append(module)
                parts.out_linears.append(module)
        for path in self.head_in_linears:
            if isinstance(module := get_module(model, path), nn.Linear):
                parts.in_linears.append(module)
        for path in self.head_norms:
            if isinstance(module := get_module(model, path), nn.LayerNorm):
                parts.norms.append(module)
        return parts

    def uncovered_modules(self, model: nn.Module) -> list[str]:
        """Names of weight-bearing modules that this adapter does not map (a head it does not know).

        Pruning would leave such a module with stale shapes, so the caller refuses the model instead.
        """
        parts = self.hidden_parts(model)
        known = {id(m) for m in parts.embeddings + parts.norms + parts.in_linears + parts.out_linears}
        known |= {id(m) for m in self.extra_known_modules(model)}
        for path in self.head_other:
            if (module := get_module(model, path)) is not None:
                known |= {id(m) for m in module.modules()}
        names = []
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear | nn.LayerNorm | nn.Embedding) and id(module) not in known:
                names.append(name)
        return names

    def extra_known_modules(self, model: nn.Module) -> list[nn.Module]:
        """Modules without a hidden-width dimension that the base adapter knows (none for BERT)."""
        return []

    # --- config -----------------------------------------------------------------------------------------------------
    def write_config(self, config, hidden: int, heads: int, intermediate: int) -> None:
        """Write a shape into the stock config of the family."""
        config.hidden_size = hidden
        config.num_attention_heads = heads
        config.intermediate_size = intermediate

    def head_dim(self, config) -> int:
        """The per-head width a stock config implies."""
        return config.hidden_size // config.num_attention_heads

    def shape_constraints(self, config, hidden: int, heads: int) -> str | None:
        """Extra family-specific constraints on a target; a message if violated (ELECTRA uses it)."""
        return None
