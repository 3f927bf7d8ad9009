"""Importance metrics and the one-call pruning API."""

import pytest
import torch

import benchmarks.importance_ablations  # noqa: F401  (registers the ablation metrics the tests below cover)
from homodistil_hf.export import prune_to_shape
from homodistil_hf.pruning.groups import build_groups
from homodistil_hf.pruning.importance import (
    ActivationImportance,
    MagnitudeImportance,
    RandomImportance,
    SensitivityImportance,
    build_importance,
)
from homodistil_hf.registry import importance_names
from homodistil_hf.testing import tiny_model


def _backward(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, (2, 8), generator=g)
    model.zero_grad()
    model(input_ids=ids).logits.pow(2).mean().backward()


def test_sensitivity_follows_the_platon_recurrences():
    model = tiny_model("bert", "mlm")
    groups = build_groups(model)
    imp = SensitivityImportance(beta1=0.85, beta2=0.95)
    imp.attach(model, groups)
    w = model.bert.encoder.layer[0].intermediate.dense.weight
    ema = torch.zeros_like(w)
    unc = torch.zeros_like(w)
    for seed in range(3):
        _backward(model, seed)
        sens = (w * w.grad).abs()
        ema = 0.85 * ema + 0.15 * sens
        unc = 0.95 * unc + 0.05 * (sens - ema).abs()
        imp.step()
    assert torch.allclose(imp.ema[w], ema, atol=1e-9) and torch.allclose(imp.unc[w], unc, atol=1e-9)
    scores = imp.scores(groups)["layer0.ffn"]
    b = model.bert.encoder.layer[0].intermediate.dense.bias
    out = model.bert.encoder.layer[0].output.dense.weight
    expected = (ema * unc).sum(1) + imp.ema[b] * imp.unc[b] + (imp.ema[out] * imp.unc[out]).sum(0)
    assert torch.allclose(scores, expected, rtol=1e-5)


def test_group_scores_have_one_value_per_structure():
    model = tiny_model("bert", "mlm")
    groups = build_groups(model)
    imp = MagnitudeImportance()
    imp.attach(model, groups)
    scores = imp.scores(groups)
    assert scores["hidden"].shape == (64,)
    assert scores["layer1.heads"].shape == (4,)
    assert scores["layer1.qk"].shape == (4, 16)
    assert scores["layer1.ffn"].shape == (128,)
    # Heads sum their query/key/value rows and output columns.
    q = model.bert.encoder.layer[1].attention.self.query
    assert scores["layer1.heads"][0] >= q.weight[:16].abs().sum()
    # The tied decoder counts once in the hidden score.
    emb = model.bert.embeddings.word_embeddings.weight.abs().sum(0)
    assert torch.all(scores["hidden"] >= emb) and torch.all(scores["hidden"] < 2 * emb + 1e3)


def test_random_importance_is_reproducible_and_activation_sees_inputs():
    model = tiny_model("bert", "mlm")
    groups = build_groups(model)
    a, b = RandomImportance(7), RandomImportance(7)
    a.attach(model, groups)
    b.attach(model, groups)
    assert torch.equal(a.scores(groups)["hidden"], b.scores(groups)["hidden"])
    act = ActivationImportance()
    act.attach(model, groups)
    _backward(model)
    ffn = act.scores(groups)["layer0.ffn"]
    assert ffn.shape == (128,) and ffn.sum() > 0
    with torch.no_grad():  # evaluation passes are not recorded
        act.on_pruned()
        model(input_ids=torch.tensor([[5, 6, 7]]))
    assert act.scores(groups)["layer0.ffn"].sum() == 0
    act.close()


@pytest.mark.parametrize("name", ["sensitivity", "magnitude", "activation", "random"])
def test_build_importance(name):
    assert build_importance(name).name == name


def test_prune_to_shape_keeps_the_best_scored_structures():
    model = tiny_model("bert", "base")
    groups = build_groups(model)
    scores = {g.name: torch.zeros(g.view) if g.kind in ("qk", "v") else torch.zeros(g.view[:1]) for g in groups}
    scores["hidden"] = torch.arange(64.0)  # the last 32 channels are the best
    for i in range(2):
        scores[f"layer{i}.heads"] = torch.tensor([0.0, 3.0, 1.0, 2.0])
        scores[f"layer{i}.ffn"] = -torch.arange(128.0)  # the first neurons are the best
    state = prune_to_shape(model, hidden_size=32, num_attention_heads=2, intermediate_size=48, scores=scores)
    assert torch.equal(state.hidden, torch.arange(32, 64))
    assert torch.equal(state.layers[0].heads, torch.tensor([1, 3]))
    assert torch.equal(state.layers[1].ffn, torch.arange(48))
    assert model.config.hidden_size == 32
    assert model.encoder.layer[0].attention.self.query.weight.shape == (32, 32)
    model(input_ids=torch.tensor([[5, 6, 7]]))


@pytest.mark.parametrize("name, elementwise, post, with_unc", [
    ("sensitivity_structure", torch.abs, None, True),
    ("sensitivity_structure_ema", torch.abs, None, False),
    ("sensitivity_structure_sq", torch.square, None, False),
    ("taylor_structure", lambda x: x, torch.square, False),
])
@pytest.mark.parametrize("chunk", [None, 7])
def test_per_structure_metrics_follow_their_recurrences(name, elementwise, post, with_unc, chunk):
    """One value per structure, from the structure's summed per-weight statistic: the FFN neuron's sum runs over its
    input row, its bias and its output column. `chunk`: the per-weight values formed a few rows at a time."""
    model = tiny_model("bert", "mlm")
    groups = build_groups(model)
    imp = build_importance(name)
    if chunk:
        imp.chunk_elements = chunk  # 7 elements: one row of a 2-D weight per block, 7 entries of a bias
    imp.attach(model, groups)
    layer = model.bert.encoder.layer[0]
    w_in, b_in, w_out = layer.intermediate.dense.weight, layer.intermediate.dense.bias, layer.output.dense.weight
    ema = unc = torch.zeros(w_in.shape[0])
    for seed in range(3):
        _backward(model, seed)
        s = (elementwise(w_in * w_in.grad).sum(1) + elementwise(b_in * b_in.grad)
             + elementwise(w_out * w_out.grad).sum(0))
        s = post(s) if post else s
        ema = 0.85 * ema + 0.15 * s
        unc = 0.95 * unc + 0.05 * (s - ema).abs()
        imp.step()
    expected = ema * unc if with_unc else ema
    assert torch.allclose(imp.scores(groups)["layer0.ffn"], expected, rtol=1e-4, atol=1e-12)
    assert imp.scores(groups)["hidden"].shape == (64,)
    # Only the buffers the score reads exist: no uncertainty statistics unless the score multiplies by them.
    assert bool(imp.unc) == with_unc and set(imp.ema) == {g.name for g in groups}
    assert {k.rsplit("::", 1)[1] for k in imp.state_dict({})} == ({"ema", "unc"} if with_unc else {"ema"})


def test_ablations_are_accepted_but_not_listed(tmp_path):
    """Benchmark ablations are registered from benchmarks/ (accepted by --importance) but kept out of --help."""
    from homodistil_hf.config import HomoDistilConfig

    assert "sensitivity_structure_sq" in importance_names()
    assert "sensitivity_structure_sq" not in importance_names(listed_only=True)
    assert {"sensitivity", "taylor_structure"} <= set(importance_names(listed_only=True))
    HomoDistilConfig(output_dir=str(tmp_path), importance="sensitivity_structure_sq")
    with pytest.raises(KeyError, match="unknown importance 'nope'"):
        build_importance("nope")


def test_each_metric_declares_whether_it_works_on_shards():
    from homodistil_hf.distributed import sharded_importances

    assert set(sharded_importances()) >= {"taylor_structure", "activation", "random", "sensitivity_structure"}
    assert not {"sensitivity", "magnitude"} & set(sharded_importances())


def test_per_structure_masks_drop_pruned_weights_in_every_block():
    """Masks mode: a weight whose structure is masked adds nothing, however the rows are blocked."""
    model = tiny_model("bert", "mlm")
    groups = build_groups(model)
    dense = model.bert.encoder.layer[0].intermediate.dense
    axis = torch.ones(dense.weight.shape[0], 1)
    axis[::3] = 0  # every third FFN neuron masked in its input weight
    scores = {}
    for chunk in (1 << 18, 5):
        imp = build_importance("sensitivity_structure_ema")
        imp.chunk_elements = chunk
        imp.attach(model, groups)
        imp.set_masks({dense.weight: [axis]})
        _backward(model, 0)
        imp.step()
        scores[chunk] = imp.scores(groups)
    assert torch.allclose(scores[5]["layer0.ffn"], scores[1 << 18]["layer0.ffn"], rtol=1e-5)
    assert torch.allclose(scores[5]["hidden"], scores[1 << 18]["hidden"], rtol=1e-5)
    out = model.bert.encoder.layer[0].output.dense.weight
    b = dense.bias
    expected = 0.15 * ((dense.weight * dense.weight.grad).abs() * axis).sum(1) + 0.15 * (b * b.grad).abs() \
        + 0.15 * (out * out.grad).abs().sum(0)
    assert torch.allclose(scores[5]["layer0.ffn"], expected, rtol=1e-4)
