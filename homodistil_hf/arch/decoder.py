"""Llama-like decoder adapter: Llama, Mistral, Qwen2 (q/k/v biases), Qwen3 (per-head q/k RMSNorms).

Pre-norm layers `model.layers[i]` with `self_attn.{q,k,v,o}_proj`, a gated FFN `mlp.{gate,up,down}_proj`, RMSNorms
`input_layernorm` / `post_attention_layernorm` and a final `model.norm`; `lm_head` reads the hidden width (tied to
`embed_tokens` or not: a tied weight is sliced once and stays tied).

The config carries `head_dim` and `num_key_value_heads`, so hidden size, query heads, key/value heads and FFN width
are free, within three rules: rotary embeddings pair head dims, so `head_dim` is never pruned; query heads per
key/value group must be uniform (whole groups and the same number of query heads in each are pruned); and the config
validation requires `hidden_size % num_attention_heads == 0` even though `head_dim` is explicit.
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from .base import ArchAdapter, HiddenParts, LayerParts
from .modules import Proj
from .registry import register_adapter
from .shape import Shape


@register_adapter
class LlamaLikeAdapter(ArchAdapter):
    model_types = ("llama", "mistral", "qwen2", "qwen3")
    prunes_head_dim = False  # rotary embeddings
    hidden_per_head = True
    causal_lm = True
    final_norm_in_hidden_states = True
    # Task heads of the *ForSequenceClassification / ForTokenClassification / ForQuestionAnswering classes.
    head_inputs = ("lm_head", "score", "qa_outputs")

    def check_config(self, config) -> None:
        if getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None):
            raise UserError(f"{config.model_type} with experts (mixture of experts) is not supported for pruning")

    def layers(self, model: nn.Module) -> list[LayerParts]:
        return [
            LayerParts(
                attention=layer.self_attn,
                q=Proj(layer.self_attn.q_proj),
                k=Proj(layer.self_attn.k_proj),
                v=Proj(layer.self_attn.v_proj),
                o=layer.self_attn.o_proj,
                ffn_in=[Proj(layer.mlp.gate_proj), Proj(layer.mlp.up_proj)],
                ffn_out=layer.mlp.down_proj,
            )
            for layer in self.base(model).layers
        ]

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        return self.base(model).layers

    def set_depth(self, config, kept: list[int]) -> None:
        # Qwen2/Qwen3: layers from `max_window_layers` on use the sliding window; count the kept layers below it.
        window = getattr(config, "max_window_layers", None)
        if isinstance(window, int):
            config.max_window_layers = sum(1 for i in kept if int(i) < window)
        super().set_depth(config, kept)

    def hidden_parts(self, model: nn.Module) -> HiddenParts:
        base = self.base(model)
        parts = HiddenParts(embeddings=[base.embed_tokens], norms=[])
        for layer in base.layers:
            attn, mlp = layer.self_attn, layer.mlp
            parts.inputs += [attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj]
            parts.outputs += [attn.o_proj, mlp.down_proj]
            parts.norms += [layer.input_layernorm, layer.post_attention_layernorm]
        parts.norms.append(base.norm)
        return self.add_head_inputs(model, parts)

    def free_modules(self, model: nn.Module) -> list[nn.Module]:
        # Qwen3's q_norm / k_norm work over head_dim, which is never pruned here.
        return [m for layer in self.base(model).layers for m in
                (getattr(layer.self_attn, "q_norm", None), getattr(layer.self_attn, "k_norm", None)) if m is not None]

    def attention_dims(self, parts: LayerParts) -> tuple[int, int, int]:
        attn = parts.attention
        heads = parts.q.module.weight.shape[0] // attn.head_dim
        return heads, heads // attn.num_key_value_groups, attn.head_dim

    def set_attention(self, parts: LayerParts, heads: int, kv_heads: int, head_dim: int) -> None:
        parts.attention.num_key_value_groups = heads // kv_heads  # the forward infers head counts from the weights

    def shape_of(self, config) -> Shape:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return Shape(config.hidden_size, config.num_attention_heads, head_dim, config.intermediate_size,
                     config.num_key_value_heads or config.num_attention_heads)

    def write_config(self, config, shape: Shape) -> None:
        config.hidden_size = shape.hidden
        config.num_attention_heads = shape.heads
        config.num_key_value_heads = shape.kv_heads
        config.head_dim = shape.head_dim  # explicit: hidden / heads no longer gives it
        config.intermediate_size = shape.intermediate
