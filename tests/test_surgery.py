"""Surgery and masks over one table of cases (architecture x head x embedding layout), with random shapes:
the masked model computes exactly what the exported model computes, the export is a stock model that loads with
no missing or unexpected keys, and surgery keeps dtype, ties, gradients and optimizer state consistent."""

import copy

import pytest
import torch
from transformers import AutoConfig, AutoModel

from homodistil_hf.arch import Shape, check_model_supported, shape_of
from homodistil_hf.errors import UserError
from homodistil_hf.export import check_stock, compact_copy, export_model
from homodistil_hf.pruning.masking import Masker
from homodistil_hf.pruning.state import PruningState, selection_between
from homodistil_hf.pruning.surgery import optimizer_slicer, prune_model
from homodistil_hf.pruning.targets import count_backbone_params
from homodistil_hf.testing import random_pruning_state, tiny_config, tiny_model

CASES = [
    ("bert", "mlm", {}),
    ("bert", "base", {}),
    ("bert", "seq_cls", {}),
    ("bert", "qa", {}),
    ("bert", "token_cls", {}),
    ("roberta", "mlm", {}),
    ("roberta", "seq_cls", {}),
    ("roberta", "qa", {}),
    ("electra", "mlm", {}),
    ("electra", "seq_cls", {"embedding_size": 32}),
    ("electra", "mlm", {"embedding_size": 32}),
    ("electra", "base", {}),
]
AUTO = {"mlm": "AutoModelForMaskedLM", "base": "AutoModel", "seq_cls": "AutoModelForSequenceClassification",
        "qa": "AutoModelForQuestionAnswering", "token_cls": "AutoModelForTokenClassification"}


def _inputs(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _outputs(model, inputs, hidden_index=None):
    out = model(**inputs)
    if hasattr(out, "start_logits") and out.start_logits is not None:
        return torch.cat([out.start_logits, out.end_logits], -1)
    x = out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
    if hidden_index is not None and x.shape[-1] != len(hidden_index):
        x = x[..., hidden_index]
    return x


@pytest.mark.parametrize("model_type, head, extra", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_equals_exported(model_type, head, extra, seed, tmp_path):
    model = tiny_model(model_type, head, seed=seed, **extra)
    initial = shape_of(model.config)
    state = random_pruning_state(initial, 2, torch.Generator().manual_seed(seed))
    if model_type == "electra" and extra and state.shape.hidden == 32:
        pytest.skip("a hidden size equal to ELECTRA's embedding_size is refused up front")
    inputs = _inputs(model, seed)
    base_only = head == "base"

    masker = Masker(model)
    masker.apply(state)
    with torch.no_grad():
        masked = _outputs(model, inputs, state.hidden if base_only else None)
    exported = export_model(model, tmp_path / "out", state, physical=False)
    with torch.no_grad():
        direct = _outputs(exported, inputs)
    valid = inputs["attention_mask"].bool()
    if masked.dim() == 3:
        masked, direct = masked[valid], direct[valid]
    assert (masked - direct).abs().max().item() <= 1e-5

    # The files are a stock model: the Auto class loads them with no missing / unexpected / mismatched keys.
    import transformers

    loaded, info = getattr(transformers, AUTO[head]).from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    with torch.no_grad():
        reloaded = _outputs(loaded.eval(), inputs)
    if reloaded.dim() == 3:
        reloaded = reloaded[valid]
    assert (reloaded - direct).abs().max().item() <= 1e-5
    config = AutoConfig.from_pretrained(tmp_path / "out")
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == (
        state.shape.hidden, state.shape.heads, state.shape.intermediate)
    backbone = sum(p.numel() for p in AutoModel.from_pretrained(tmp_path / "out").parameters())
    assert backbone == count_backbone_params(config)
    if head == "mlm":
        assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight


def test_physical_pruning_in_steps_equals_one_step():
    """Pruning twice (teacher -> A -> B) gives the same model as pruning once (teacher -> B)."""
    model = tiny_model("bert", "mlm")
    initial = shape_of(model.config)
    g = torch.Generator().manual_seed(3)
    mid = random_pruning_state(initial, 2, g, target=Shape(48, 3, 12, 100))
    # B: a random subset of mid
    final = copy.deepcopy(mid)
    final.hidden = mid.hidden[torch.sort(torch.randperm(48, generator=g)[:16]).values]  # 2 heads x 8
    for keep in final.layers:
        rows = torch.sort(torch.randperm(3, generator=g)[:2]).values
        keep.heads = keep.heads[rows]
        keep.qk = torch.stack([torch.sort(r[torch.randperm(12, generator=g)[:8]]).values for r in keep.qk[rows]])
        keep.v = torch.stack([torch.sort(r[torch.randperm(12, generator=g)[:8]]).values for r in keep.v[rows]])
        keep.ffn = torch.sort(keep.ffn[torch.randperm(100, generator=g)[:50]]).values
    full = PruningState.full(initial, 2)
    two = copy.deepcopy(model)
    prune_model(two, selection_between(full, mid))
    prune_model(two, selection_between(mid, final))
    one = copy.deepcopy(model)
    prune_model(one, selection_between(full, final))
    for (n1, p1), (_, p2) in zip(one.named_parameters(), two.named_parameters(), strict=True):
        assert torch.equal(p1, p2), n1
    check_stock(compact_copy(one))


def test_surgery_keeps_dtype_ties_grads_and_optimizer_state():
    model = tiny_model("bert", "mlm").to(torch.bfloat16)
    model(**_inputs(model)).logits.float().sum().backward()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.step()
    ffn = model.bert.encoder.layer[0].intermediate.dense
    old_moment = opt.state[ffn.weight]["exp_avg"].clone()
    old_grad = ffn.weight.grad.clone()
    initial = shape_of(model.config)
    state = random_pruning_state(initial, 2, torch.Generator().manual_seed(0), target=Shape(32, 4, 8, 48))
    params_before = {id(p) for p in model.parameters()}
    prune_model(model, selection_between(PruningState.full(initial, 2), state), [optimizer_slicer(opt)])
    assert {id(p) for p in model.parameters()} == params_before  # same Parameter objects: the optimizer still works
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.bert.embeddings.word_embeddings.weight.shape[1] == 32
    kept = state.layers[0].ffn
    assert torch.equal(opt.state[ffn.weight]["exp_avg"], old_moment[kept][:, state.hidden])
    assert torch.equal(ffn.weight.grad, old_grad[kept][:, state.hidden])
    opt.step()  # shapes of params, grads and moments agree
    model(**_inputs(model))


def test_unknown_heads_and_types_are_refused():
    from transformers import AutoModelForMultipleChoice, MixtralConfig, OPTConfig

    with pytest.raises(UserError, match="'opt' is not supported .* supported model types: bert, electra, gpt2"):
        check_model_supported(AutoModel.from_config(OPTConfig(num_hidden_layers=1, hidden_size=16, ffn_dim=32,
                                                              num_attention_heads=2, vocab_size=50)))
    with pytest.raises(UserError, match="mixture-of-experts"):
        check_model_supported(MixtralConfig(num_hidden_layers=1, hidden_size=16, intermediate_size=32,
                                            num_attention_heads=2, num_key_value_heads=1, vocab_size=50))
    with pytest.raises(UserError, match="does not map"):
        check_model_supported(AutoModelForMultipleChoice.from_config(tiny_config("electra")))
