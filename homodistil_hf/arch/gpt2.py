"""GPT-2 adapter (GPT2Model, GPT2LMHeadModel, ForSequenceClassification, ForTokenClassification,
ForQuestionAnswering).

GPT-2 keeps its weights in `Conv1D` modules ([in, out]) and fuses q, k and v into one `c_attn` projection (q at
offset 0, k at the attention width, v at twice it). Its config has no `head_dim`: the attention width is `n_embd`, so
as in BERT, a smaller hidden size at the same head count prunes head dims (learned positions, no rotary: allowed).
`n_inner` is written explicitly (None would mean 4 x n_embd).
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from .base import ArchAdapter, HiddenParts, LayerParts
from .modules import Proj
from .registry import register_adapter
from .shape import Shape


@register_adapter
class GPT2Adapter(ArchAdapter):
    model_types = ("gpt2",)
    attention_width_is_hidden = True
    causal_lm = True
    final_norm_in_hidden_states = True
    head_inputs = ("lm_head", "score", "classifier", "qa_outputs")

    def check_config(self, config) -> None:
        if getattr(config, "add_cross_attention", False):
            raise UserError("gpt2 with cross-attention (add_cross_attention) is not supported for pruning")

    def layers(self, model: nn.Module) -> list[LayerParts]:
        out = []
        for block in self.base(model).h:
            attn = block.attn
            width = attn.split_size
            out.append(LayerParts(attention=attn, q=Proj(attn.c_attn, 0), k=Proj(attn.c_attn, width),
                                  v=Proj(attn.c_attn, 2 * width), o=attn.c_proj, ffn_in=[Proj(block.mlp.c_fc)],
                                  ffn_out=block.mlp.c_proj))
        return out

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        return self.base(model).h  # (config.num_hidden_layers is GPT-2's n_layer, via its attribute map)

    def check_depth(self, config) -> str | None:
        if getattr(config, "scale_attn_by_inverse_layer_idx", False):
            return ("gpt2 with scale_attn_by_inverse_layer_idx scales each layer by its index: removing layers would "
                    "change the kept layers' function")
        return None

    def hidden_parts(self, model: nn.Module) -> HiddenParts:
        base = self.base(model)
        parts = HiddenParts(embeddings=[base.wte, base.wpe], norms=[])
        for block in base.h:
            parts.inputs += [block.attn.c_attn, block.mlp.c_fc]
            parts.outputs += [block.attn.c_proj, block.mlp.c_proj]
            parts.norms += [block.ln_1, block.ln_2]
        parts.norms.append(base.ln_f)
        return self.add_head_inputs(model, parts)

    def attention_dims(self, parts: LayerParts) -> tuple[int, int, int]:
        attn = parts.attention
        return attn.num_heads, attn.num_heads, attn.head_dim

    def set_attention(self, parts: LayerParts, heads: int, kv_heads: int, head_dim: int) -> None:
        attn = parts.attention
        attn.num_heads, attn.head_dim = heads, head_dim
        attn.split_size = attn.embed_dim = heads * head_dim

    def stock_scaling(self, parts: LayerParts) -> float:
        attn = parts.attention
        scaling = attn.head_dim**-0.5 if attn.scale_attn_weights else 1.0
        if attn.scale_attn_by_inverse_layer_idx:
            scaling /= float(attn.layer_idx + 1)
        return scaling

    def disable_attention_dropout(self, parts: LayerParts) -> bool:
        dropout = parts.attention.attn_dropout
        if dropout.p > 0:
            dropout.p = 0.0
            return True
        return False

    def shape_of(self, config) -> Shape:
        inner = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        return Shape(config.n_embd, config.n_head, config.n_embd // config.n_head, inner)

    def write_config(self, config, shape: Shape) -> None:
        config.n_embd = shape.hidden
        config.n_head = shape.heads
        config.n_inner = shape.intermediate
