"""Property-based surgery tests (hypothesis) over random model shapes, targets and architectures.

For any BERT / RoBERTa / ELECTRA (with and without ELECTRA's embedding projection) with any head and any widths,
and any valid stock target with random kept structures:
- the masked model computes what the physically pruned model (training form) computes, and what the exported
  stock model computes (<= 1e-5);
- the exported config describes the weights exactly: the backbone's parameter count is `count_backbone_params`;
- save / load round-trips with no missing, unexpected or mismatched keys, and the same outputs.

A handful of examples run by default (fixed: `derandomize`); hundreds under `-m slow`.
"""

import copy
import tempfile

import pytest
import torch
import transformers
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from homodistil_hf.arch import Shape, shape_of
from homodistil_hf.export import check_stock, export_model
from homodistil_hf.pruning.masking import Masker
from homodistil_hf.pruning.state import PruningState, selection_between
from homodistil_hf.pruning.surgery import prune_model
from homodistil_hf.pruning.targets import count_backbone_params
from homodistil_hf.testing import random_pruning_state, tiny_model

AUTO = {"mlm": "AutoModelForMaskedLM", "base": "AutoModel", "seq_cls": "AutoModelForSequenceClassification",
        "qa": "AutoModelForQuestionAnswering", "token_cls": "AutoModelForTokenClassification"}


@st.composite
def cases(draw):
    model_type = draw(st.sampled_from(["bert", "roberta", "electra"]))
    head = draw(st.sampled_from(list(AUTO)))
    heads = draw(st.integers(1, 4))
    head_dim = draw(st.integers(1, 8))
    hidden = heads * head_dim
    config = dict(hidden_size=hidden, num_attention_heads=heads, intermediate_size=draw(st.integers(1, 24)),
                  num_hidden_layers=draw(st.integers(1, 3)), vocab_size=draw(st.integers(12, 80)))
    if head in ("seq_cls", "token_cls"):
        config["num_labels"] = draw(st.integers(1, 3))
    if model_type == "electra" and draw(st.booleans()):  # embeddings in another width, projected to hidden
        config["embedding_size"] = draw(st.integers(1, 12).filter(lambda e: e != hidden))
    target_heads = draw(st.integers(1, heads))
    target = Shape(target_heads * (d := draw(st.integers(1, head_dim))), target_heads, d,
                   draw(st.integers(1, config["intermediate_size"])))
    if config.get("embedding_size") is not None:  # refused up front (shapes.check_target): the stock config
        assume(target.hidden != config["embedding_size"])  # would lose the projection
    return model_type, head, config, target, draw(st.integers(0, 2**31 - 1))


def _inputs(vocab_size, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (3, 10), generator=g)
    mask = torch.ones_like(ids)
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


def _close(a, b, valid):
    if a.dim() == 3:  # per-token outputs: padding positions are not compared
        a, b = a[valid], b[valid]
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def check_case(model_type, head, config, target, seed):
    model = tiny_model(model_type, head, seed=seed % 1000, **config)
    initial = shape_of(model.config)
    layers = config["num_hidden_layers"]
    state = random_pruning_state(initial, layers, torch.Generator().manual_seed(seed), target=target)
    inputs = _inputs(config["vocab_size"], seed)
    valid = inputs["attention_mask"].bool()
    hidden_index = state.hidden if head == "base" else None

    # Physical surgery (training form: the teacher's attention scale) computes what the masks compute.
    physical = copy.deepcopy(model)
    prune_model(physical, selection_between(PruningState.full(initial, layers), state))
    Masker(model).apply(state)
    masked = _outputs(model, inputs, hidden_index)
    assert _close(masked, _outputs(physical, inputs), valid) <= 1e-5

    with tempfile.TemporaryDirectory() as tmp:
        exported = export_model(model, tmp, state, physical=False)
        check_stock(exported)
        direct = _outputs(exported, inputs)
        assert _close(masked, direct, valid) <= 1e-5

        # The files are a stock model of exactly the target shape, with the config's parameter count.
        cls = getattr(transformers, AUTO[head])
        loaded, info = cls.from_pretrained(tmp, output_loading_info=True)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
        assert _close(_outputs(loaded.eval(), inputs), direct, valid) <= 1e-5
        assert shape_of(loaded.config) == target
        assert loaded.config.num_hidden_layers == layers
        if "embedding_size" in config:
            assert loaded.config.embedding_size == config["embedding_size"]
        # (AutoModel: the backbone as count_backbone_params defines it, pooler included where the family has one.)
        backbone = transformers.AutoModel.from_pretrained(tmp)
        assert sum(p.numel() for p in backbone.parameters()) == count_backbone_params(loaded.config)
        kept = {n: p.shape for n, p in backbone.named_parameters()}
        assert all(kept[n] == p.shape for n, p in exported.base_model.named_parameters() if n in kept)


COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
              print_blob=True)


@settings(max_examples=8, derandomize=True, **COMMON)
@given(cases())
def test_fuzz_masked_physical_exported_agree(case):
    check_case(*case)


@pytest.mark.slow
@settings(max_examples=400, **COMMON)
@given(cases())
def test_fuzz_masked_physical_exported_agree_many(case):
    check_case(*case)
