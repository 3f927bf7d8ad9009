"""Decoder surgery (the decoder rows of the family table in tests/surgery_families.py: Llama, Mistral, Qwen2 with
q/k/v biases, Qwen3 with per-head q/k norms, GPT-2 with Conv1D and fused c_attn, the toy family; tied and untied
embeddings, grouped-query attention where the family has it): random valid targets and random kept structures
(hypothesis) through `surgery_families.check_case` (masks == surgery == export == the loaded export, `generate()`
of the export == the masked student's). Plus the targets a family's stock config cannot hold are refused with one
line naming valid choices, and families without an adapter are refused with the list.
"""

import pytest
import transformers
from hypothesis import given, settings
from surgery_families import DECODERS, FAMILIES, SETTINGS, Dims, cases, check_case

from homodistil_hf.errors import UserError
from homodistil_hf.pruning.targets import check_target


@settings(max_examples=10, derandomize=True, **SETTINGS)
@given(cases(DECODERS))
def test_fuzz_decoders(case):
    check_case(*case)


@pytest.mark.slow
@settings(max_examples=300, **SETTINGS)
@given(cases(DECODERS))
def test_fuzz_decoders_many(case):
    check_case(*case)


@pytest.mark.parametrize("args, expect", [
    ((24, 6, 20, 3, 2), "rotary position embeddings"),  # head-dim pruning under rotary
    ((24, 5, 20, 2), "uniform"),  # 5 query heads cannot split into 2 equal groups
    ((24, 4, 20, 1), "at most the teacher's 2"),  # 4 heads on 1 group: groups cannot grow
    ((20, 6, 20, 3), "not a multiple of --target_num_attention_heads 6"),  # config validation: hidden % heads
    ((24, 6, 20, 4), "larger than the teacher's 3"),  # more key/value heads than the teacher
])
@pytest.mark.parametrize("name", [f.name for f in DECODERS if f.rotary])
def test_impossible_decoder_targets_are_refused(name, args, expect):
    config = FAMILIES[name].build(Dims(24, 6, 3, 4, 20, 1, 61, True))
    hidden, heads, ffn, kv, *dim = args
    with pytest.raises(UserError, match=expect):
        check_target(config, hidden, heads, ffn, kv, dim[0] if dim else None)


def test_unsupported_families_are_refused_with_the_list():
    from homodistil_hf.arch import get_adapter

    with pytest.raises(UserError, match="mixture-of-experts.*supported model types: .*llama.*qwen3"):
        get_adapter(transformers.MixtralConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32,
                                               num_attention_heads=2, num_key_value_heads=1, vocab_size=50))
