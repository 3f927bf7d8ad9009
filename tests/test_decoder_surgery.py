"""Decoder families (one table drives every test): Llama, Mistral, Qwen2 (q/k/v biases), Qwen3 (per-head q/k norms),
GPT-2 (Conv1D, fused c_attn), with tied and untied embeddings, under grouped-query attention where the family has it.

For random valid targets and random kept structures (hypothesis):
- the masked model computes what the physically pruned model computes, and what the exported stock model computes
  (<= 1e-5);
- the export loads with `AutoModelForCausalLM.from_pretrained` with no missing / unexpected / mismatched keys, its
  embeddings are still tied where the teacher's were, and `generate()` of the export equals the masked student's
  greedy output.
Plus the targets a family's stock config cannot hold are refused with one line naming valid choices.
"""

import copy
import tempfile

import pytest
import torch
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toy_family import ToyConfig

from homodistil_hf.arch import Shape, shape_of
from homodistil_hf.errors import UserError
from homodistil_hf.export import export_model
from homodistil_hf.pruning.masking import Masker
from homodistil_hf.pruning.state import LayerKeep, PruningState, selection_between
from homodistil_hf.pruning.surgery import prune_model
from homodistil_hf.pruning.targets import check_target

VOCAB = 61

# family -> (config class, GQA?, extra config)
FAMILIES = {
    "llama": (transformers.LlamaConfig, True, {}),
    "mistral": (transformers.MistralConfig, True, {}),
    "qwen2": (transformers.Qwen2Config, True, {}),
    "qwen3": (transformers.Qwen3Config, True, {}),
    "gpt2": (transformers.GPT2Config, False, {}),
    "toyformer": (ToyConfig, True, {}),  # tests/toy_family.py: fused q/k/v and gate/up, RMSNorm, bias-free LayerNorm
}


def decoder_config(family: str, hidden: int, heads: int, kv: int, head_dim: int, ffn: int, layers: int, tie: bool):
    cls, _, extra = FAMILIES[family]
    if family == "toyformer":
        return cls(vocab_size=VOCAB, hidden_size=hidden, num_heads=heads, num_kv_heads=kv, head_dim=head_dim,
                   ffn_size=ffn, num_layers=layers, tie_word_embeddings=False)
    if family == "gpt2":
        return cls(n_embd=heads * head_dim, n_head=heads, n_inner=ffn, n_layer=layers, vocab_size=VOCAB,
                   n_positions=32, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=tie,
                   bos_token_id=1, eos_token_id=2)
    return cls(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv, head_dim=head_dim,
               intermediate_size=ffn, num_hidden_layers=layers, vocab_size=VOCAB, max_position_embeddings=32,
               tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, pad_token_id=0, **extra)


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
        if target.head_dim == teacher.head_dim:
            qk = torch.arange(teacher.head_dim).repeat(len(heads), 1)
            v = qk.clone()
        else:
            qk = torch.stack([subset(teacher.head_dim, target.head_dim) for _ in heads])
            v = torch.stack([subset(teacher.head_dim, target.head_dim) for _ in heads])
        keeps.append(LayerKeep(heads, qk, v, subset(teacher.intermediate, target.intermediate), kv))
    return PruningState(subset(teacher.hidden, target.hidden), keeps)


@st.composite
def cases(draw):
    family = draw(st.sampled_from(list(FAMILIES)))
    gqa = FAMILIES[family][1]
    kv = draw(st.integers(1, 3)) if gqa else None
    group = draw(st.integers(1, 3)) if gqa else 1
    heads = (kv * group) if gqa else draw(st.integers(1, 4))
    head_dim = 2 * draw(st.integers(1, 4))  # rotary needs an even head size
    hidden = heads * head_dim if family == "gpt2" else heads * draw(st.integers(1, 6))
    ffn = draw(st.integers(1, 24))
    config = decoder_config(family, hidden, heads, kv or heads, head_dim, ffn, draw(st.integers(1, 2)),
                            tie=draw(st.booleans()))
    teacher = shape_of(config)
    # A random valid target.
    if gqa:
        t_kv = draw(st.integers(1, kv))
        t_heads = t_kv * draw(st.integers(1, group))
        t_hidden = t_heads * draw(st.integers(1, max(1, teacher.hidden // t_heads)))
        target = check_target(config, t_hidden, t_heads, draw(st.integers(1, ffn)), t_kv)
    else:
        t_heads = draw(st.integers(1, heads))
        t_dim = draw(st.integers(1, head_dim))
        target = check_target(config, t_heads * t_dim, t_heads, draw(st.integers(1, ffn)))
    return family, config, teacher, target, draw(st.integers(0, 2**31 - 1))


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding, as for generation
    return {"input_ids": ids, "attention_mask": mask}


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def check_case(family, config, teacher, target, seed):
    torch.manual_seed(seed % 1000)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    layers = config.num_hidden_layers
    state = random_state(teacher, target, layers, torch.Generator().manual_seed(seed))
    inputs = _inputs(seed)
    valid = inputs["attention_mask"].bool()

    physical = copy.deepcopy(model)
    prune_model(physical, selection_between(PruningState.full(teacher, layers), state))
    Masker(model).apply(state)
    masked = _logits(model, inputs)
    assert (masked - _logits(physical, inputs))[valid].abs().max() <= 1e-5

    with tempfile.TemporaryDirectory() as tmp:
        exported = export_model(model, tmp, state, physical=False)
        assert (masked - _logits(exported, inputs))[valid].abs().max() <= 1e-5
        loaded, info = transformers.AutoModelForCausalLM.from_pretrained(tmp, output_loading_info=True)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
        loaded.eval()
        assert shape_of(loaded.config) == target
        assert (masked - _logits(loaded, inputs))[valid].abs().max() <= 1e-5
        if family == "toyformer":
            return  # no generation mixin, untied by construction
        tied = loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
        assert tied == bool(config.tie_word_embeddings)
        # Greedy generation of the export equals the masked student's.
        prompt = {"input_ids": inputs["input_ids"][:1, :4], "attention_mask": inputs["attention_mask"][:1, :4]}
        kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
        assert torch.equal(model.generate(**prompt, **kwargs), loaded.generate(**prompt, **kwargs))


COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
              print_blob=True)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("tie", [True, False])
def test_each_family_prunes_and_exports(family, tie):
    if family == "toyformer" and tie:
        pytest.skip("the toy family has untied embeddings")
    gqa = FAMILIES[family][1]
    config = decoder_config(family, 24, 6, 3 if gqa else 6, 4, 20, 2, tie)
    teacher = shape_of(config)
    target = check_target(config, 12, 4, 9, 2) if gqa else check_target(config, 12, 4, 9)
    check_case(family, config, teacher, target, seed=7)


@settings(max_examples=10, derandomize=True, **COMMON)
@given(cases())
def test_fuzz_decoders(case):
    check_case(*case)


@pytest.mark.slow
@settings(max_examples=300, **COMMON)
@given(cases())
def test_fuzz_decoders_many(case):
    check_case(*case)


@pytest.mark.parametrize("args, expect", [
    ((24, 6, 20, 3, 2), "rotary position embeddings"),  # head-dim pruning under rotary
    ((24, 5, 20, 2), "uniform"),  # 5 query heads cannot split into 2 equal groups
    ((24, 4, 20, 1), "at most the teacher's 2"),  # 4 heads on 1 group: groups cannot grow
    ((20, 6, 20, 3), "not a multiple of --target_num_attention_heads 6"),  # config validation: hidden % heads
    ((24, 6, 20, 4), "larger than the teacher's 3"),  # more key/value heads than the teacher
])
def test_impossible_decoder_targets_are_refused(args, expect):
    config = decoder_config("llama", 24, 6, 3, 4, 20, 1, True)
    hidden, heads, ffn, kv, *dim = args
    with pytest.raises(UserError, match=expect):
        check_target(config, hidden, heads, ffn, kv, dim[0] if dim else None)


def test_unsupported_families_are_refused_with_the_list():
    from homodistil_hf.arch import get_adapter

    with pytest.raises(UserError, match="mixture-of-experts.*supported model types: .*llama.*qwen3"):
        get_adapter(transformers.MixtralConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32,
                                               num_attention_heads=2, num_key_value_heads=1, vocab_size=50))
