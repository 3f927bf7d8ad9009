"""The logit terms computed from hidden states and LM heads (linear_losses) against materialised logits fed to
losses.causal_lm_loss / kd_logits_loss_chunked: values and gradients, every option, both implementations, no
[tokens, vocabulary] tensor, and the hidden states / head taken from real (tiny) causal LMs."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from homodistil_hf.linear_losses import final_hidden_and_head, linear_logit_losses
from homodistil_hf.losses import causal_lm_loss, kd_logits_loss_chunked
from homodistil_hf.testing import tiny_decoder

KINDS = [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.0), ("jsd", 0.5), ("jsd", 1.0)]
TOL = dict(rtol=1e-5, atol=1e-5)


def make_case(batch=2, seq=7, hidden=8, teacher_hidden=6, vocab=23, tied=False, bias=True, seed=0,
              all_ignored=False, dtype=torch.float32):
    """Student/teacher tensors as the trainer would hold them: [B, T, H] hidden states, labels and a 0/1 mask
    with zeros; with `tied`, the student's hidden states depend on the output weight (an input embedding)."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(vocab, hidden, generator=g)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    if tied:
        h = weight[ids] * 0.5 + torch.randn(batch, seq, hidden, generator=g)
    else:
        h = torch.randn(batch, seq, hidden, generator=g)
    labels = ids.clone()
    labels[0, :2] = -100
    if all_ignored:
        labels[:] = -100
    mask = torch.ones(batch, seq)
    mask[-1, -3:] = 0
    case = dict(
        ids=ids, labels=labels, mask=mask, weight=weight.to(dtype), h=h.to(dtype),
        bias=(torch.randn(vocab, generator=g) * 0.3).to(dtype) if bias else None,
        t_h=torch.randn(batch, seq, teacher_hidden, generator=g).to(dtype),
        t_w=torch.randn(vocab, teacher_hidden, generator=g).to(dtype),
        t_b=(torch.randn(vocab, generator=g) * 0.3).to(dtype) if bias else None,
    )
    return case


def leaves(case, tied):
    """Fresh leaves for one run: (embedding or weight, bias, hidden) and the hidden/weight the losses see."""
    weight = case["weight"].clone().requires_grad_(True)
    bias = None if case["bias"] is None else case["bias"].clone().requires_grad_(True)
    if tied:  # hidden states computed from the tied weight: its gradient is the head's plus the embedding's
        base = case["h"] - case["weight"][case["ids"]] * 0.5
        h = weight[case["ids"]] * 0.5 + base
    else:
        h = case["h"].clone().requires_grad_(True)
    if h.requires_grad:
        h.retain_grad()
    return weight, bias, h


def materialised(case, kind, beta, temperature, terms, tied, chunk_size):
    weight, bias, h = leaves(case, tied)
    logits = F.linear(h, weight, bias)
    t_logits = F.linear(case["t_h"], case["t_w"], case["t_b"])
    ce = causal_lm_loss(logits, case["labels"], "sum", chunk_size) if terms != "kd" else torch.zeros(())
    kd = (kd_logits_loss_chunked(logits, t_logits, temperature, case["mask"], "sum", kind, beta, chunk_size)
          if terms != "ce" else torch.zeros(()))
    return ce, kd, (weight, bias, h)


def linear(case, kind, beta, temperature, terms, tied, chunk_size, method):
    weight, bias, h = leaves(case, tied)
    b, t, _ = h.shape
    targets = F.pad(case["labels"], (0, 1), value=-100)[..., 1:].reshape(-1)
    ce, kd = linear_logit_losses(h.reshape(b * t, -1), weight, bias, case["t_h"].reshape(b * t, -1), case["t_w"],
                                 case["t_b"], targets, case["mask"].reshape(-1), temperature, kind, beta, chunk_size,
                                 terms, method)
    return ce, kd, (weight, bias, h)


def backward(ce, kd, tensors):
    """Backward with different weights on the two terms (as alpha_mlm and alpha_pred would be); the grads."""
    loss = 0.7 * ce + 1.3 * kd
    if loss.requires_grad:
        loss.backward()
    return [None if x is None else x.grad for x in tensors]


def assert_same(got, want):
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None or not g.abs().any()
        else:
            torch.testing.assert_close(g, w, **TOL)


@pytest.mark.parametrize("method", ["fused", "checkpoint"])
@pytest.mark.parametrize("terms", ["both", "ce", "kd"])
@pytest.mark.parametrize("kind,beta", KINDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("tied,bias", [(False, True), (True, False), (True, True), (False, False)])
def test_values_and_gradients_match_materialised_logits(method, terms, kind, beta, temperature, tied, bias):
    case = make_case(tied=tied, bias=bias, seed=hash((kind, beta, temperature, tied, bias)) % 1000)
    want = materialised(case, kind, beta, temperature, terms, tied, chunk_size=5)
    got = linear(case, kind, beta, temperature, terms, tied, chunk_size=4, method=method)  # 4 divides no N here
    torch.testing.assert_close(got[0], want[0], **TOL)
    torch.testing.assert_close(got[1], want[1], **TOL)
    assert (got[1] > 0) == (terms != "ce") and (got[0] > 0) == (terms != "kd")
    assert_same(backward(*got), backward(*want))


@pytest.mark.parametrize("method", ["fused", "checkpoint"])
@pytest.mark.parametrize("chunk_size", [1, 3, 13, 14, 100])
def test_chunk_sizes_that_do_not_divide_the_rows(method, chunk_size):
    case = make_case(seq=7)  # N = 14
    want = materialised(case, "jsd", 0.3, 2.0, "both", False, chunk_size=14)
    got = linear(case, "jsd", 0.3, 2.0, "both", False, chunk_size, method)
    torch.testing.assert_close(torch.stack(got[:2]), torch.stack(want[:2]), **TOL)
    assert_same(backward(*got), backward(*want))


@pytest.mark.parametrize("method", ["fused", "checkpoint"])
def test_all_targets_ignored_gives_zero_ce_and_still_the_divergence(method):
    case = make_case(all_ignored=True)
    want = materialised(case, "forward_kl", 0.5, 2.0, "both", False, chunk_size=5)
    got = linear(case, "forward_kl", 0.5, 2.0, "both", False, 4, method)
    assert got[0].item() == 0.0 and got[1].item() > 0
    torch.testing.assert_close(got[1], want[1], **TOL)
    assert_same(backward(*got), backward(*want))


@pytest.mark.parametrize("method", ["fused", "checkpoint"])
def test_masked_positions_carry_no_divergence_and_no_gradient(method):
    case = make_case()
    case["mask"][:] = 0
    case["mask"][0, 3] = 1
    ce, kd, (weight, bias, h) = linear(case, "reverse_kl", 0.5, 2.0, "kd", False, 4, method)
    kd.backward()
    moved = h.grad.abs().sum(-1) > 0
    assert moved[0, 3] and moved.sum() == 1


@pytest.mark.parametrize("method", ["fused", "checkpoint"])
def test_two_micro_batches_summed_equal_one_batch(method):
    case = make_case(batch=4, seq=5)
    whole = linear(case, "jsd", 0.5, 2.0, "both", False, 3, method)
    count_ce = (case["labels"][..., 1:] != -100).sum()
    count_kd = case["mask"].sum()
    whole_grads = backward(whole[0] / count_ce, whole[1] / count_kd, whole[2])
    weight, bias, h = leaves(case, tied=False)
    ce_total, kd_total = 0, 0
    for rows in (slice(0, 1), slice(1, 4)):  # uneven micro-batches; hidden rows of one leaf
        part = {k: (v[rows] if k in ("ids", "labels", "mask", "h", "t_h") else v) for k, v in case.items()}
        b, t, _ = part["h"].shape
        targets = F.pad(part["labels"], (0, 1), value=-100)[..., 1:].reshape(-1)
        ce, kd = linear_logit_losses(h[rows].reshape(b * t, -1), weight, bias, part["t_h"].reshape(b * t, -1),
                                     case["t_w"], case["t_b"], targets, part["mask"].reshape(-1), 2.0, "jsd", 0.5,
                                     3, "both", method)
        (0.7 * ce / count_ce + 1.3 * kd / count_kd).backward()
        ce_total, kd_total = ce_total + ce.detach(), kd_total + kd.detach()
    torch.testing.assert_close(ce_total, whole[0].detach(), **TOL)
    torch.testing.assert_close(kd_total, whole[1].detach(), **TOL)
    assert_same([weight.grad, bias.grad, h.grad], whole_grads)


def test_teacher_gets_no_gradient_even_when_its_tensors_ask_for_one():
    case = make_case()
    case["t_w"].requires_grad_(True)
    ce, kd, _ = linear(case, "forward_kl", 0.5, 2.0, "kd", False, 4, "fused")
    kd.backward()
    assert case["t_w"].grad is None


@pytest.mark.parametrize("method", ["fused", "checkpoint"])
def test_without_grad_values_only(method):
    case = make_case()
    with torch.no_grad():
        got = linear(case, "jsd", 0.5, 2.0, "both", True, 4, method)
    want = materialised(case, "jsd", 0.5, 2.0, "both", True, 5)
    assert not got[0].requires_grad
    torch.testing.assert_close(got[1], want[1].detach(), **TOL)


@pytest.mark.parametrize("method", ["fused", "checkpoint"])
def test_bf16_inputs_give_bf16_gradients_close_to_fp32(method):
    case16 = make_case(dtype=torch.bfloat16)
    case32 = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in case16.items()}
    got = linear(case16, "forward_kl", 0.5, 2.0, "both", False, 4, method)
    want = materialised(case32, "forward_kl", 0.5, 2.0, "both", False, 5)
    assert got[0].dtype == got[1].dtype == torch.float32
    torch.testing.assert_close(torch.stack(got[:2]), torch.stack(want[:2]), rtol=3e-2, atol=3e-2)
    for g, w in zip(backward(*got), backward(*want)):
        assert g.dtype == torch.bfloat16
        torch.testing.assert_close(g.float(), w, rtol=5e-2, atol=5e-2)


def test_fused_and_checkpoint_agree_on_bf16():
    case = make_case(dtype=torch.bfloat16)
    a = linear(case, "jsd", 0.5, 2.0, "both", True, 4, "fused")
    b = linear(case, "jsd", 0.5, 2.0, "both", True, 4, "checkpoint")
    torch.testing.assert_close(torch.stack(a[:2]), torch.stack(b[:2]), rtol=1e-4, atol=1e-4)
    for x, y in zip(backward(*a), backward(*b)):
        torch.testing.assert_close(x.float(), y.float(), rtol=2e-2, atol=2e-2)


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 12), vocab=st.integers(2, 40), chunk=st.integers(1, 15),
       kind=st.sampled_from(KINDS), temperature=st.sampled_from([0.5, 1.0, 3.0]),
       terms=st.sampled_from(["both", "ce", "kd"]), bias=st.booleans(), tied=st.booleans(),
       method=st.sampled_from(["fused", "checkpoint"]), seed=st.integers(0, 10_000))
def test_random_cases_match_materialised_logits(rows, vocab, chunk, kind, temperature, terms, bias, tied, method,
                                                 seed):
    case = make_case(batch=1, seq=rows, vocab=vocab, bias=bias, tied=tied, seed=seed)
    g = torch.Generator().manual_seed(seed)
    case["mask"] = (torch.rand(1, rows, generator=g) > 0.3).float() * torch.rand(1, rows, generator=g)  # weights
    want = materialised(case, kind[0], kind[1], temperature, terms, tied, chunk_size=7)
    got = linear(case, kind[0], kind[1], temperature, terms, tied, chunk, method)
    torch.testing.assert_close(torch.stack(got[:2]), torch.stack(want[:2]), **TOL)
    assert_same(backward(*got), backward(*want))


class LargestOutput(TorchDispatchMode):
    """Records the largest numel of any tensor an operator returns (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, tuple | list) else (out,):
            if isinstance(x, torch.Tensor):
                self.largest = max(self.largest, x.numel())
        return out


@pytest.mark.parametrize("method", ["fused", "checkpoint"])
def test_no_tensor_of_tokens_by_vocabulary_is_created(method):
    batch, seq, hidden, vocab, chunk = 4, 32, 8, 200, 16  # N * V = 25,600; chunk * V = 3,200; V * H = 1,600
    case = make_case(batch=batch, seq=seq, hidden=hidden, teacher_hidden=hidden, vocab=vocab)
    with LargestOutput() as probe:
        backward(*linear(case, "jsd", 0.5, 2.0, "both", True, chunk, method))
    assert probe.largest <= chunk * vocab < batch * seq * vocab
    with LargestOutput() as reference:  # the probe sees the materialised logits
        backward(*materialised(case, "jsd", 0.5, 2.0, "both", True, chunk))
    assert reference.largest >= batch * seq * vocab


def test_bad_arguments_raise():
    case = make_case()
    h, w = case["h"].reshape(14, -1), case["weight"]
    targets = torch.zeros(14, dtype=torch.long)
    with pytest.raises(ValueError, match="kind"):
        linear_logit_losses(h, w, None, h, w, None, targets, kind="kl")
    with pytest.raises(ValueError, match="terms"):
        linear_logit_losses(h, w, None, h, w, None, targets, terms="all")
    with pytest.raises(ValueError, match="targets"):
        linear_logit_losses(h, w, None, h, w, None, targets[:3])
    with pytest.raises(ValueError, match="teacher"):
        linear_logit_losses(h, w, None, None, None, None, targets, terms="kd")
    with pytest.raises(ValueError, match="weight"):
        linear_logit_losses(h, w[:, :3], None, h, w, None, targets)
    ce, kd = linear_logit_losses(h, w, None, None, None, None, targets, terms="ce")  # no teacher needed for CE
    assert ce > 0 and kd == 0


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3", "gpt2"])
@pytest.mark.parametrize("tie", [True, False])
def test_final_hidden_and_head_reproduce_the_models_logits(family, tie):
    model = tiny_decoder(family, tie=tie)
    ids = torch.randint(5, model.config.vocab_size, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    full = model(input_ids=ids, attention_mask=mask)
    hidden, weight, bias, outputs = final_hidden_and_head(model, input_ids=ids, attention_mask=mask)
    assert outputs.logits.shape[1] == 0  # the head computed no logits
    assert len(outputs.hidden_states) == model.config.num_hidden_layers + 1
    assert (weight is model.get_input_embeddings().weight) == tie
    torch.testing.assert_close(F.linear(hidden, weight, bias), full.logits, rtol=1e-5, atol=1e-5)
    labels = ids.masked_fill(mask == 0, -100)
    targets = F.pad(labels, (0, 1), value=-100)[..., 1:].reshape(-1)
    ce, _ = linear_logit_losses(hidden.reshape(-1, hidden.shape[-1]), weight, bias, None, None, None, targets,
                                terms="ce")
    torch.testing.assert_close(ce, causal_lm_loss(full.logits, labels, "sum"), **TOL)
    ce.backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert next(iter(model.parameters())).grad is not None  # the gradient reached the backbone


def test_final_hidden_and_head_refuses_labels():
    model = tiny_decoder("llama")
    ids = torch.randint(5, 50, (1, 4))
    with pytest.raises(ValueError, match="labels"):
        final_hidden_and_head(model, input_ids=ids, labels=ids)


def test_final_hidden_and_head_takes_the_hidden_flag_and_refuses_a_hooked_head():
    model = tiny_decoder("qwen2")
    ids = torch.randint(5, 50, (1, 4))
    hidden, _, _, outputs = final_hidden_and_head(model, input_ids=ids, output_hidden_states=True)
    assert outputs.hidden_states[-1] is hidden
    model.lm_head.register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
    with pytest.raises(ValueError, match="hooks"):
        final_hidden_and_head(model, input_ids=ids)
