"""Surgery on every family of the table in tests/surgery_families.py (encoders: BERT, RoBERTa, ELECTRA with and
without its embedding projection, under every head; decoders: Llama, Mistral, Qwen2, Qwen3, GPT-2 and the toy family,
tied and untied), driven by the table: the masked model, the physically pruned model, the exported stock model and
the export loaded again compute the same (`surgery_families.check_case` lists the checks).

One fixed case per family, head and tie setting; random families, shapes, targets and kept structures (hypothesis)
for encoders here and for decoders in tests/test_decoder_surgery.py. A handful of examples run by default (fixed:
`derandomize`); hundreds under `-m slow`.
"""

import pytest
from hypothesis import given, settings
from surgery_families import ENCODERS, FAMILIES, SETTINGS, Dims, cases, check_case

from homodistil_hf.arch import get_adapter, shape_of
from homodistil_hf.pruning.targets import check_target

# One fixed case per family, tie setting and the heads with their own code paths (tied MLM decoder, the bare backbone's
# masked channels, the causal LM); the fuzz tests draw every head.
FIXED = [(name, head, tie) for name, fam in FAMILIES.items() for head in fam.heads if head in ("mlm", "base", "causal_lm")
         for tie in fam.ties]


def _fixed_config(fam, tie):
    """Hidden 24, 6 heads of 4 (3 key/value heads under GQA), FFN 20, 2 layers, 61 tokens."""
    return fam.build(Dims(24, 6, 3 if fam.gqa else 6, 4, 20, 2, 61, tie))


@pytest.mark.parametrize("name, head, tie", FIXED)
def test_each_family_prunes_and_exports(name, head, tie):
    fam = FAMILIES[name]
    config = _fixed_config(fam, tie)
    target = check_target(config, 12, 4, 9, 2) if fam.gqa else check_target(config, 12, 4, 9)
    check_case(fam, head, config, target, seed=7)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_table_says_what_the_adapter_does(name):
    """What a row allows is what the family's adapter does: attention width = hidden, head-size pruning, GQA."""
    fam = FAMILIES[name]
    config = _fixed_config(fam, fam.ties[0])
    adapter = get_adapter(config)
    assert adapter.attention_width_is_hidden == fam.width_is_hidden
    if fam.rotary:
        assert not adapter.prunes_head_dim
    assert shape_of(config).kv_heads == (3 if fam.gqa else 6)


@settings(max_examples=8, derandomize=True, **SETTINGS)
@given(cases(ENCODERS))
def test_fuzz_masked_physical_exported_agree(case):
    check_case(*case)


@pytest.mark.slow
@settings(max_examples=400, **SETTINGS)
@given(cases(ENCODERS))
def test_fuzz_masked_physical_exported_agree_many(case):
    check_case(*case)
