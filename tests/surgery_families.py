"""The model families the surgery tests run on, as one table, and the generic check they all go through.

Each `Family` row says how to build a tiny config (`build`), which heads it is tested with, and what it allows:
grouped-query attention, rotary position embeddings (the head size is never pruned, and is even), an attention width
tied to the hidden size (no head_dim in the config), an embedding projection (ELECTRA), tied input/output embeddings,
`generate()`. `cases(families)` draws a random family, config, valid target and seed from the rows' rules;
`check_case` checks, for a random kept-structure state of that target:
- the masked model computes what the physically pruned model (training form) computes, and what the exported stock
  model computes (<= 1e-5), and what the export computes once loaded with `from_pretrained` (no missing,
  unexpected or mismatched keys);
- the export is a stock model of exactly the target shape: the backbone's parameter count is `count_backbone_params`
  of its config, the layers and the embedding projection are kept, embeddings are tied where the teacher's were;
- `generate()` of the export equals the masked model's greedy output (families that generate).
Used by tests/test_fuzz_surgery.py and tests/test_decoder_surgery.py.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import torch
import transformers
from hypothesis import HealthCheck, assume
from hypothesis import strategies as st
from toy_family import ToyConfig

from homodistil_hf import Shape
from homodistil_hf.arch import get_adapter, shape_of
from homodistil_hf.export import check_stock, export_model
from homodistil_hf.pruning.depth import LayerFader
from homodistil_hf.pruning.masking import Masker
from homodistil_hf.pruning.state import LayerKeep, PruningState, selection_between
from homodistil_hf.pruning.surgery import prune_model
from homodistil_hf.pruning.targets import check_target, count_backbone_params
from homodistil_hf.testing import tiny_config

AUTO = {"mlm": "AutoModelForMaskedLM", "base": "AutoModel", "seq_cls": "AutoModelForSequenceClassification",
        "qa": "AutoModelForQuestionAnswering", "token_cls": "AutoModelForTokenClassification",
        "causal_lm": "AutoModelForCausalLM"}


@dataclass(frozen=True)
class Dims:
    """A teacher's widths, as a family's `build` takes them."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    layers: int
    vocab: int
    tie: bool | None = None  # None: the config's default
    extra: tuple[tuple[str, int], ...] = ()  # more config fields (num_labels, embedding_size)


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[Dims], transformers.PretrainedConfig]
    heads: tuple[str, ...]  # keys of AUTO
    gqa: bool = False  # grouped-query attention: key/value heads drawn apart from query heads
    rotary: bool = False  # rotary position embeddings: the head size is even (and never pruned: not width_is_hidden)
    # No head_dim in the config: hidden = heads x head size, and a target's head size is drawn too. Otherwise the
    # hidden size is drawn apart and the target keeps the teacher's head size.
    width_is_hidden: bool = True
    embedding_projection: bool = False  # embeddings of another width, projected to hidden (ELECTRA)
    ties: tuple[bool | None, ...] = (None,)  # the tie_word_embeddings settings tested
    generates: bool = False  # has `generate()`: greedy outputs compared

    @property
    def decoder(self) -> bool:
        return "causal_lm" in self.heads


def _encoder(model_type: str) -> Callable[[Dims], transformers.PretrainedConfig]:
    def build(d: Dims):
        return tiny_config(model_type, hidden_size=d.hidden, num_attention_heads=d.heads, intermediate_size=d.ffn,
                           num_hidden_layers=d.layers, vocab_size=d.vocab, **dict(d.extra))
    return build


def _rotary_decoder(cls) -> Callable[[Dims], transformers.PretrainedConfig]:
    def build(d: Dims):
        return cls(hidden_size=d.hidden, num_attention_heads=d.heads, num_key_value_heads=d.kv_heads,
                   head_dim=d.head_dim, intermediate_size=d.ffn, num_hidden_layers=d.layers, vocab_size=d.vocab,
                   max_position_embeddings=32, tie_word_embeddings=d.tie, bos_token_id=1, eos_token_id=2,
                   pad_token_id=0)
    return build


def _gpt2(d: Dims):
    return transformers.GPT2Config(n_embd=d.heads * d.head_dim, n_head=d.heads, n_inner=d.ffn, n_layer=d.layers,
                                   vocab_size=d.vocab, n_positions=32, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                   tie_word_embeddings=d.tie, bos_token_id=1, eos_token_id=2)


def _toyformer(d: Dims):
    return ToyConfig(vocab_size=d.vocab, hidden_size=d.hidden, num_heads=d.heads, num_kv_heads=d.kv_heads,
                     head_dim=d.head_dim, ffn_size=d.ffn, num_layers=d.layers, tie_word_embeddings=False)


ENCODER_HEADS = ("mlm", "base", "seq_cls", "qa", "token_cls")
DECODER = dict(heads=("causal_lm",), ties=(True, False), generates=True)
ROTARY = dict(gqa=True, rotary=True, width_is_hidden=False, **DECODER)
FAMILIES = {f.name: f for f in (
    Family("bert", _encoder("bert"), ENCODER_HEADS),
    Family("roberta", _encoder("roberta"), ENCODER_HEADS),
    Family("electra", _encoder("electra"), ENCODER_HEADS, embedding_projection=True),
    Family("llama", _rotary_decoder(transformers.LlamaConfig), **ROTARY),
    Family("mistral", _rotary_decoder(transformers.MistralConfig), **ROTARY),
    Family("qwen2", _rotary_decoder(transformers.Qwen2Config), **ROTARY),  # q/k/v biases
    Family("qwen3", _rotary_decoder(transformers.Qwen3Config), **ROTARY),  # per-head q/k norms
    Family("gpt2", _gpt2, **DECODER),  # Conv1D, fused c_attn
    # tests/toy_family.py: fused q/k/v and gate/up, RMSNorm, bias-free LayerNorm; untied, no generate()
    Family("toyformer", _toyformer, ("causal_lm",), gqa=True, width_is_hidden=False, ties=(False,)),
)}
ENCODERS = [f for f in FAMILIES.values() if not f.decoder]
DECODERS = [f for f in FAMILIES.values() if f.decoder]
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                print_blob=True)


@st.composite
def cases(draw, families: list[Family]):
    """(family, head, teacher config, valid target, seed) under the family's rules."""
    fam = draw(st.sampled_from(families))
    head = draw(st.sampled_from(fam.heads))
    kv, group = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if fam.gqa else (None, 1)
    heads = kv * group if fam.gqa else draw(st.integers(1, 4))
    head_dim = 2 * draw(st.integers(1, 4)) if fam.rotary else draw(st.integers(1, 8))
    hidden = heads * head_dim if fam.width_is_hidden else heads * draw(st.integers(1, 6))
    extra = {}
    if head in ("seq_cls", "token_cls"):
        extra["num_labels"] = draw(st.integers(1, 3))
    if fam.embedding_projection and draw(st.booleans()):  # embeddings in another width, projected to hidden
        extra["embedding_size"] = draw(st.integers(1, 12).filter(lambda e: e != hidden))
    dims = Dims(hidden, heads, kv or heads, head_dim, draw(st.integers(1, 24)), draw(st.integers(1, 3)),
                draw(st.integers(12, 80)), draw(st.sampled_from(fam.ties)), tuple(extra.items()))
    config = fam.build(dims)
    # A random valid target.
    t_kv = draw(st.integers(1, kv)) if fam.gqa else None
    t_heads = t_kv * draw(st.integers(1, group)) if fam.gqa else draw(st.integers(1, heads))
    if fam.width_is_hidden:
        t_hidden = t_heads * draw(st.integers(1, head_dim))
    else:
        t_hidden = t_heads * draw(st.integers(1, max(1, hidden // t_heads)))
    if "embedding_size" in extra:  # refused up front (check_target): the stock config would lose the projection
        assume(t_hidden != extra["embedding_size"])
    target = check_target(config, t_hidden, t_heads, draw(st.integers(1, dims.ffn)), t_kv)
    return fam, head, config, target, draw(st.integers(0, 2**31 - 1))


def random_state(teacher: Shape, target: Shape, layers: int, g: torch.Generator) -> PruningState:
    """Random kept structures of `target` inside `teacher` (whole key/value groups, uniform heads per group)."""

    def subset(n, k):
        return torch.sort(torch.randperm(n, generator=g)[:k]).values

    keeps = []
    for _ in range(layers):
        if teacher.kv_heads != teacher.heads:
            kv = subset(teacher.kv_heads, target.kv_heads)
            heads = torch.sort(torch.cat([int(grp) * teacher.group_size + subset(teacher.group_size,
                                                                                 target.group_size)
                                          for grp in kv])).values
        else:
            kv, heads = None, subset(teacher.heads, target.heads)
        qk = torch.stack([subset(teacher.head_dim, target.head_dim) for _ in heads])
        v = torch.stack([subset(teacher.head_dim, target.head_dim) for _ in heads])
        keeps.append(LayerKeep(heads, qk, v, subset(teacher.intermediate, target.intermediate), kv))
    return PruningState(subset(teacher.hidden, target.hidden), keeps)


def _inputs(vocab_size: int, seed: int, left_padding: bool) -> dict:
    """Three rows of ten ids, two of them padded (on the left for decoders, as for generation)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    if left_padding:
        mask[1, :3] = 0
        mask[2, :6] = 0
    else:
        mask[1, 7:] = 0
        mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _outputs(model, inputs, hidden_index=None):
    with torch.no_grad():
        out = model(**inputs)
    if getattr(out, "start_logits", None) is not None:
        return torch.cat([out.start_logits, out.end_logits], -1)
    x = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
    if hidden_index is not None and x.shape[-1] != len(hidden_index):
        x = x[..., hidden_index]  # a bare backbone's masked output holds zeros in the pruned channels
    return x


def _gap(a, b, valid) -> float:
    """Largest difference over the non-padding positions (per-token outputs) or over everything (pooled)."""
    if a.dim() == 3:
        a, b = a[valid], b[valid]
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def check_case(fam: Family, head: str, config, target: Shape, seed: int) -> None:
    """Masks == surgery == export == the export loaded, for a random state of `target` in a `fam` model."""
    cls = getattr(transformers, AUTO[head])
    torch.manual_seed(seed % 1000)
    model = cls.from_config(config).eval()
    teacher, layers = shape_of(config), config.num_hidden_layers
    g = torch.Generator().manual_seed(seed)
    state = random_state(teacher, target, layers, g)
    adapter = get_adapter(model)
    if layers > 1 and adapter.check_depth(config) is None:  # depth too: a random set of layers kept (or all)
        kept = sorted(torch.randperm(layers, generator=g)[:int(torch.randint(1, layers + 1, (1,), generator=g))])
        state = state.with_depth([int(i) for i in kept], [])
    inputs = _inputs(config.vocab_size, seed, left_padding=fam.decoder)
    valid = inputs["attention_mask"].bool()

    # Physical surgery (training form: the teacher's attention scale) computes what the masks compute; masked, a
    # removed layer is the identity (its residual branches faded to 0), physically it is gone.
    physical = copy.deepcopy(model)
    prune_model(physical, selection_between(PruningState.full(teacher, layers), state))
    Masker(model).apply(state)
    if state.depth is not None:
        fader = LayerFader(model, adapter, layers, "last")
        fader.install(list(range(layers)))
        fader.alpha = {t: 0.0 for t in range(layers) if t not in state.kept_layers}
    masked = _outputs(model, inputs, state.hidden if head == "base" else None)
    assert _gap(masked, _outputs(physical, inputs), valid) <= 1e-5

    with tempfile.TemporaryDirectory() as tmp:
        exported = export_model(model, tmp, state, physical=False)
        check_stock(exported)
        assert _gap(masked, _outputs(exported, inputs), valid) <= 1e-5
        # The files are a stock model of exactly the target shape, with the config's parameter count.
        loaded, info = cls.from_pretrained(tmp, output_loading_info=True)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
        loaded.eval()
        assert _gap(masked, _outputs(loaded, inputs), valid) <= 1e-5
        assert shape_of(loaded.config) == target
        assert loaded.config.num_hidden_layers == len(state.kept_layers)
        if getattr(config, "embedding_size", None) not in (None, config.hidden_size):
            assert loaded.config.embedding_size == config.embedding_size
        # (AutoModel: the backbone as count_backbone_params defines it, pooler included where the family has one.)
        backbone = transformers.AutoModel.from_pretrained(tmp)
        assert sum(p.numel() for p in backbone.parameters()) == count_backbone_params(loaded.config)
        kept = {n: p.shape for n, p in backbone.named_parameters()}
        assert all(kept[n] == p.shape for n, p in exported.base_model.named_parameters() if n in kept)
        if fam.generates:
            tied = loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
            assert tied == bool(config.tie_word_embeddings)
            # Greedy generation of the export equals the masked student's.
            prompt = {k: v[:1, :4] for k, v in inputs.items()}
            kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
            assert torch.equal(model.generate(**prompt, **kwargs), loaded.generate(**prompt, **kwargs))
