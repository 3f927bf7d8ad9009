"""A small fake model family, and its adapter: all it takes to support a family is the adapter class at the bottom.

"toyformer" has what the real families spread over several files: a fused q/k/v projection with fewer key/value
heads than query heads (grouped-query attention), a fused gate/up FFN projection, RMSNorms and a LayerNorm without
bias, untied input and output embeddings. It is registered with the Auto classes, so export and `from_pretrained`
work as for a stock model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from homodistil_hf.arch import Shape, register_adapter
from homodistil_hf.arch.base import ArchAdapter, HiddenParts, LayerParts
from homodistil_hf.arch.modules import Proj


class ToyConfig(PretrainedConfig):
    model_type = "toyformer"
    attribute_map = {"num_hidden_layers": "num_layers"}

    def __init__(self, vocab_size=40, hidden_size=24, num_heads=6, num_kv_heads=3, head_dim=4, ffn_size=20,
                 num_layers=2, **kwargs):
        self.vocab_size, self.hidden_size, self.num_heads, self.num_kv_heads = vocab_size, hidden_size, num_heads, \
            num_kv_heads
        self.head_dim, self.ffn_size, self.num_layers = head_dim, ffn_size, num_layers
        super().__init__(**kwargs)


class ToyRMSNorm(nn.Module):
    def __init__(self, size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class ToyAttention(nn.Module):
    def __init__(self, c: ToyConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.scaling = c.head_dim**-0.5
        self.qkv = nn.Linear(c.hidden_size, (c.num_heads + 2 * c.num_kv_heads) * c.head_dim, bias=True)
        self.out = nn.Linear(c.num_heads * c.head_dim, c.hidden_size, bias=False)

    def forward(self, x):
        b, t, _ = x.shape
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = self.qkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = (z.view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2) for z in (k, v))
        group = self.num_heads // self.num_kv_heads
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        scores = (q @ k.transpose(-1, -2)) * self.scaling
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        return self.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1))


class ToyLayer(nn.Module):
    def __init__(self, c: ToyConfig):
        super().__init__()
        self.norm1 = ToyRMSNorm(c.hidden_size)
        self.attn = ToyAttention(c)
        self.norm2 = nn.LayerNorm(c.hidden_size, bias=False)
        self.gate_up = nn.Linear(c.hidden_size, 2 * c.ffn_size, bias=False)
        self.down = nn.Linear(c.ffn_size, c.hidden_size, bias=True)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        gate, up = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class ToyModel(PreTrainedModel):
    config_class = ToyConfig
    base_model_prefix = "toy"

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(ToyLayer(config) for _ in range(config.num_layers))
        self.norm = ToyRMSNorm(config.hidden_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class ToyForCausalLM(PreTrainedModel):
    config_class = ToyConfig
    base_model_prefix = "toy"

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.toy = ToyModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return CausalLMOutput(logits=self.lm_head(self.toy(input_ids)))


# --- the adapter: the one file a new family needs -------------------------------------------------------------------
@register_adapter
class ToyAdapter(ArchAdapter):
    model_types = ("toyformer",)
    prunes_head_dim = False  # grouped-query attention: whole heads only

    def layers(self, model):
        out = []
        for layer in self.base(model).layers:
            attn = layer.attn
            q_size, kv_size = attn.num_heads * attn.head_dim, attn.num_kv_heads * attn.head_dim
            ffn = layer.down.in_features
            out.append(LayerParts(attention=attn, q=Proj(attn.qkv, 0), k=Proj(attn.qkv, q_size),
                                  v=Proj(attn.qkv, q_size + kv_size), o=attn.out,
                                  ffn_in=[Proj(layer.gate_up, 0), Proj(layer.gate_up, ffn)], ffn_out=layer.down))
        return out

    def hidden_parts(self, model):
        base = self.base(model)
        parts = HiddenParts(embeddings=[base.embed], norms=[base.norm])
        for layer in base.layers:
            parts.inputs += [layer.attn.qkv, layer.gate_up]
            parts.outputs += [layer.attn.out, layer.down]
            parts.norms += [layer.norm1, layer.norm2]
        if hasattr(model, "lm_head"):
            parts.inputs.append(model.lm_head)
        return parts

    def attention_dims(self, parts):
        attn = parts.attention
        return attn.num_heads, attn.num_kv_heads, attn.head_dim

    def set_attention(self, parts, heads, kv_heads, head_dim):
        attn = parts.attention
        attn.num_heads, attn.num_kv_heads, attn.head_dim = heads, kv_heads, head_dim

    def shape_of(self, config):
        return Shape(config.hidden_size, config.num_heads, config.head_dim, config.ffn_size, config.num_kv_heads)

    def write_config(self, config, shape):
        config.hidden_size, config.num_heads, config.num_kv_heads = shape.hidden, shape.heads, shape.kv_heads
        config.head_dim, config.ffn_size = shape.head_dim, shape.intermediate


AutoConfig.register("toyformer", ToyConfig, exist_ok=True)
AutoModel.register(ToyConfig, ToyModel, exist_ok=True)
AutoModelForCausalLM.register(ToyConfig, ToyForCausalLM, exist_ok=True)
