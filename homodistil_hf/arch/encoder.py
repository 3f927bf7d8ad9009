"""The BERT-like encoder adapter (post-LayerNorm, `encoder.layer[i]` with `attention.self/output`, `intermediate`,
`output`), shared by BERT, RoBERTa and ELECTRA. Subclasses list their head modules and model types.

A stock BERT-family config has no `head_dim`: the attention width equals `hidden_size` and the head size is
`hidden_size / num_attention_heads`, so reaching a smaller hidden size at the same head count prunes head dims.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from ..errors import UserError
from .base import ArchAdapter, DepthParts, HiddenParts, LayerParts, get_module
from .modules import Proj
from .shape import Shape


class EncoderAdapter(ArchAdapter):
    """BERT-like encoders. Head modules are dotted paths from the top model; a path absent from a head class is
    skipped."""

    attention_width_is_hidden = True
    head_inout_linears: ClassVar[tuple[str, ...]] = ()  # hidden -> hidden
    head_norms: ClassVar[tuple[str, ...]] = ()
    head_other: ClassVar[tuple[str, ...]] = ()  # head modules with no hidden-width dimension

    def check_config(self, config) -> None:
        if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
            raise UserError(f"{config.model_type} configured as a decoder (is_decoder / add_cross_attention) is not "
                            "supported: HomoDistil prunes it as a bidirectional encoder")

    # --- structure maps ---------------------------------------------------------------------------------------------
    def layers(self, model: nn.Module) -> list[LayerParts]:
        return [
            LayerParts(
                attention=layer.attention.self,
                q=Proj(layer.attention.self.query),
                k=Proj(layer.attention.self.key),
                v=Proj(layer.attention.self.value),
                o=layer.attention.output.dense,
                ffn_in=[Proj(layer.intermediate.dense)],
                ffn_out=layer.output.dense,
            )
            for layer in self.base(model).encoder.layer
        ]

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        return self.base(model).encoder.layer

    def depth_parts(self, model: nn.Module) -> list[DepthParts]:
        # Post-LN: h = LN(x + attn(x)), out = LN(h + ffn(h)); both LayerNorms fade too, or alpha 0 is not the identity.
        return [DepthParts(layer, [layer.attention.output.dense, layer.output.dense],
                           [layer.attention.output.LayerNorm, layer.output.LayerNorm])
                for layer in self.layer_list(model)]

    def embedding_parts(self, model: nn.Module) -> HiddenParts:
        """Embedding modules that carry the hidden width (the embeddings LayerNorm included)."""
        emb = self.base(model).embeddings
        return HiddenParts(
            embeddings=[m for m in (emb.word_embeddings, emb.position_embeddings,
                                    getattr(emb, "token_type_embeddings", None)) if m is not None],
            norms=[emb.LayerNorm],
        )

    def hidden_parts(self, model: nn.Module) -> HiddenParts:
        parts = self.embedding_parts(model)
        for layer in self.base(model).encoder.layer:
            attn = layer.attention.self
            parts.inputs += [attn.query, attn.key, attn.value, layer.intermediate.dense]
            parts.outputs += [layer.attention.output.dense, layer.output.dense]
            parts.norms += [layer.attention.output.LayerNorm, layer.output.LayerNorm]
        pooler = getattr(self.base(model), "pooler", None)
        if pooler is not None:
            parts.inputs.append(pooler.dense)
            parts.outputs.append(pooler.dense)
        for path in self.head_inout_linears:
            if isinstance(module := get_module(model, path), nn.Linear):
                parts.inputs.append(module)
                parts.outputs.append(module)
        self.add_head_inputs(model, parts)  # heads that read hidden only
        for path in self.head_norms:
            if isinstance(module := get_module(model, path), nn.LayerNorm):
                parts.norms.append(module)
        return parts

    def free_modules(self, model: nn.Module) -> list[nn.Module]:
        return [m for path in self.head_other if (m := get_module(model, path)) is not None]

    # --- attention --------------------------------------------------------------------------------------------------
    def attention_dims(self, parts: LayerParts) -> tuple[int, int, int]:
        attn = parts.attention
        return attn.num_attention_heads, attn.num_attention_heads, attn.attention_head_size

    def set_attention(self, parts: LayerParts, heads: int, kv_heads: int, head_dim: int) -> None:
        attn = parts.attention
        attn.num_attention_heads = heads
        attn.attention_head_size = head_dim
        attn.all_head_size = heads * head_dim

    def stock_scaling(self, parts: LayerParts) -> float:
        return parts.attention.attention_head_size**-0.5

    # --- config -----------------------------------------------------------------------------------------------------
    def shape_of(self, config) -> Shape:
        return Shape(config.hidden_size, config.num_attention_heads,
                     config.hidden_size // config.num_attention_heads, config.intermediate_size)

    def write_config(self, config, shape: Shape) -> None:
        config.hidden_size = shape.hidden
        config.num_attention_heads = shape.heads
        config.intermediate_size = shape.intermediate
