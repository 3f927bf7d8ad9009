"""The adapter interface: everything model-specific that pruning needs, and nothing else.

An adapter maps a model family onto the structure vocabulary of `homodistil_hf.pruning`:
- `layers(model)`: per transformer layer, the attention module, the q / k / v projections (`Proj`: a module and the
  offset of its part, so fused projections work), the output projection, the FFN input projections (gate and up, or
  one) and output projection;
- `hidden_parts(model)`: every module carrying the hidden (residual) width: embeddings, norms, modules reading it,
  modules writing it (task and LM heads included; a tied weight is sliced once);
- `free_modules(model)`: modules with parameters but no prunable width (per-head q/k norms, position tables of
  another width), so that the coverage check can refuse anything the adapter does not know;
- the attention attributes rewritten after slicing (`set_attention`) and the stock softmax scale (`stock_scaling`);
- the stock config: `shape_of(config)`, `write_config(config, shape)`, `check_shape(...)` (what the family's config
  can express), and the family's flags: `prunes_head_dim` (not under rotary embeddings), `hidden_per_head` (the config
  validation requires hidden % heads == 0 of a saved target), `attention_width_is_hidden` (no head_dim
  in the config), `causal_lm` (distilled on next-token prediction);
- depth (`target_num_hidden_layers`): `layer_list(model)` (the layers' ModuleList), `depth_parts(model)` (per layer,
  the modules whose outputs are added to the residual stream and the post-LayerNorms the stream passes through),
  `set_depth(config, kept)` (every per-layer config field cut to the kept layers), `remove_layers(model, keep)`
  and `check_depth(config)`.

Surgery, masking, importance, schedule and export only call these, so adding a family is one file (see README,
"Adding a model family").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from .modules import Proj, is_norm
from .shape import Shape


@dataclass
class LayerParts:
    """The modules of one transformer layer that pruning touches."""

    attention: nn.Module  # holds the head count / head size / scale attributes that `set_attention` rewrites
    q: Proj  # query rows, head-major: [heads x head_dim]
    k: Proj  # key rows, head-major over key/value heads
    v: Proj  # value rows, head-major over key/value heads
    o: nn.Module  # attention output projection: reads the per-head context (query heads), writes the residual
    ffn_in: list[Proj]  # FFN input projections (up; gate and up): their output features are the FFN neurons
    ffn_out: nn.Module  # FFN output projection: reads the neurons, writes the residual


@dataclass
class HiddenParts:
    """Every module whose weights have a hidden-width dimension (one shared set of channels).

    `inputs` read the residual stream (their input features are hidden channels), `outputs` write it (their output
    features are); a module can be both (pooler, MLM transform). A weight shared by two modules (tied embeddings) is
    sliced once.
    """

    embeddings: list[nn.Embedding] = field(default_factory=list)
    norms: list[nn.Module] = field(default_factory=list)
    inputs: list[nn.Module] = field(default_factory=list)
    outputs: list[nn.Module] = field(default_factory=list)


@dataclass
class DepthParts:
    """What fading a layer out to the identity touches (see `pruning/depth.py`)."""

    layer: nn.Module  # the whole layer (its input and output hidden states)
    branches: list[nn.Module]  # modules whose output is a residual branch (--layer_fade branches scales them by alpha)
    # Post-LN: post_norms[i] normalises x_i + branches[i], x_0 the layer's input, x_i (i > 0) post_norms[i - 1]'s output.
    post_norms: list[nn.Module] = field(default_factory=list)


def get_module(root: nn.Module, path: str) -> nn.Module | None:
    """The submodule at dotted `path`, or None if any part is missing."""
    module = root
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


class ArchAdapter:
    """Interface of a model-family adapter (see the module docstring). Subclasses implement the structure maps and
    the config; the defaults here are the parts every family shares."""

    model_types: ClassVar[tuple[str, ...]] = ()
    prunes_head_dim: ClassVar[bool] = True  # False under rotary position embeddings (they pair head dims)
    hidden_per_head: ClassVar[bool] = False  # the stock config validates hidden % num_attention_heads == 0
    attention_width_is_hidden: ClassVar[bool] = False  # no head_dim in the config: heads x head size = hidden
    causal_lm: ClassVar[bool] = False  # a decoder: distilled on next-token prediction
    # The last entry of `hidden_states` is the final norm's output, not the last layer's (transformers 5 decoders)
    final_norm_in_hidden_states: ClassVar[bool] = False

    # --- checks -----------------------------------------------------------------------------------------------------
    def check_config(self, config) -> None:
        """Refuse a configuration of the family that the adapter does not handle (one `UserError` line)."""

    # --- structure maps ---------------------------------------------------------------------------------------------
    def base(self, model: nn.Module) -> nn.Module:
        """The backbone of any head class."""
        return model.base_model

    def layers(self, model: nn.Module) -> list[LayerParts]:
        raise NotImplementedError

    def hidden_parts(self, model: nn.Module) -> HiddenParts:
        raise NotImplementedError

    def free_modules(self, model: nn.Module) -> list[nn.Module]:
        """Modules with parameters and no prunable width (left as they are)."""
        return []

    head_inputs: ClassVar[tuple[str, ...]] = ()  # head projections (dotted paths) that read the hidden width

    def add_head_inputs(self, model: nn.Module, parts: HiddenParts) -> HiddenParts:
        """Append the head projections of `head_inputs` that this head class has."""
        for path in self.head_inputs:
            if isinstance(module := get_module(model, path), nn.Linear):
                parts.inputs.append(module)
        return parts

    def uncovered_modules(self, model: nn.Module) -> list[str]:
        """Names of modules holding a parameter that the adapter neither maps nor declares free (a parameter shared
        with a mapped module, such as a tied decoder bias, counts as mapped).

        Pruning would leave such a module with stale shapes, so the caller refuses the model instead.
        """
        hidden = self.hidden_parts(model)
        known = hidden.embeddings + hidden.norms + hidden.inputs + hidden.outputs
        for parts in self.layers(model):
            known += [parts.q.module, parts.k.module, parts.v.module, parts.o, parts.ffn_out]
            known += [p.module for p in parts.ffn_in]
        mapped = {id(p) for m in known for p in m.parameters(recurse=False)}
        mapped |= {id(p) for m in self.free_modules(model) for p in m.parameters()}
        names = []
        for name, module in model.named_modules():
            if any(id(p) not in mapped for p in module.parameters(recurse=False)):
                names.append(name)
        return names

    # --- attention --------------------------------------------------------------------------------------------------
    def attention_dims(self, parts: LayerParts) -> tuple[int, int, int]:
        """(query heads, key/value heads, head size) of a layer as it is now."""
        raise NotImplementedError

    def set_attention(self, parts: LayerParts, heads: int, kv_heads: int, head_dim: int) -> None:
        """Rewrite the attention module's attributes after its projections were sliced (the scale stays: see
        `stock_scaling`)."""
        raise NotImplementedError

    def stock_scaling(self, parts: LayerParts) -> float | None:
        """The softmax scale a stock config implies for the layer's current head size (None: the family derives it
        at run time). While training, the teacher's scale stays and pruned query/key dims simply stop contributing;
        export folds the difference into the query weights."""
        return None

    def disable_attention_dropout(self, parts: LayerParts) -> bool:
        """Switch off attention-probability dropout in the layer (distilled attention maps must be distributions);
        True if anything changed."""
        dropout = getattr(parts.attention, "dropout", None)
        if isinstance(dropout, nn.Dropout) and dropout.p > 0:
            dropout.p = 0.0
            return True
        if isinstance(getattr(parts.attention, "attention_dropout", None), float) and parts.attention.attention_dropout:
            parts.attention.attention_dropout = 0.0
            return True
        return False

    # --- depth ------------------------------------------------------------------------------------------------------
    per_layer_fields: ClassVar[tuple[str, ...]] = ("layer_types",)  # config lists with one entry per layer

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        """The ModuleList holding the transformer layers, in order."""
        raise NotImplementedError

    def depth_parts(self, model: nn.Module) -> list[DepthParts]:
        """Per layer: its residual branches (pre-LN: the attention and FFN output projections) and post-norms
        (none for pre-LN families)."""
        return [DepthParts(layer, [parts.o, parts.ffn_out])
                for layer, parts in zip(self.layer_list(model), self.layers(model), strict=True)]

    def check_depth(self, config) -> str | None:
        """Why this configuration cannot lose layers (a message), or None."""
        if type(self).layer_list is ArchAdapter.layer_list:
            return f"the {type(self).__name__} adapter does not implement layer_list, which depth pruning needs"
        return None

    def set_depth(self, config, kept: list[int]) -> None:
        """Cut `config` to the layers `kept` (indices into its current layers, sorted; an index may repeat, which a
        deeper random student uses): `num_hidden_layers` and every per-layer field. The one function every depth
        change goes through (layer removal, export, `make_student`)."""
        kept = [int(i) for i in kept]
        depth = config.num_hidden_layers
        if any(i < 0 or i >= depth for i in kept) or not kept:
            raise ValueError(f"kept layers {kept} are not within the config's {depth} layers")
        for name in self.per_layer_fields:
            values = getattr(config, name, None)
            if isinstance(values, list | tuple) and len(values) == depth:
                setattr(config, name, type(values)(values[i] for i in kept))
        config.num_hidden_layers = len(kept)

    def remove_layers(self, model: nn.Module, keep: list[int]) -> list[nn.Module]:
        """Keep only the layers at positions `keep` (sorted) in place: the ModuleList shrinks, every `layer_idx`
        attribute (attention caches index by it) is renumbered, and the config is cut (`set_depth`). Returns the
        removed layer modules."""
        layers = self.layer_list(model)
        keep = [int(i) for i in keep]
        removed = [m for i, m in enumerate(layers) if i not in set(keep)]
        kept = [layers[i] for i in keep]
        for new, layer in enumerate(kept):
            for module in layer.modules():
                if isinstance(getattr(module, "layer_idx", None), int):
                    module.layer_idx = new
        for i in range(len(layers) - 1, -1, -1):
            del layers[i]
        for layer in kept:
            layers.append(layer)
        self.set_depth(model.config, keep)
        return removed

    # --- config -----------------------------------------------------------------------------------------------------
    def shape_of(self, config) -> Shape:
        """The prunable widths of a stock config."""
        raise NotImplementedError

    def write_config(self, config, shape: Shape) -> None:
        """Write a shape into the stock config of the family."""
        raise NotImplementedError

    def check_shape(self, config, teacher: Shape, target: Shape) -> str | None:
        """Family-specific constraints on a target beyond the generic ones; a message if violated."""
        return None


def norms_in(module: nn.Module) -> list[nn.Module]:
    """Every norm inside `module`, in order."""
    return [m for m in module.modules() if is_norm(m)]
