"""The loss maths, without a Trainer: zero on identical inputs, temperature scaling, masks, hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from homodistil_hf.errors import UserError
from homodistil_hf.losses import (
    attention_loss,
    causal_lm_loss,
    hidden_state_loss,
    kd_logits_loss,
    kd_logits_loss_chunked,
    kd_regression_loss,
    parse_layer_map,
    uniform_layer_map,
)

torch.manual_seed(0)


def test_kd_is_exactly_zero_on_identical_logits():
    logits = torch.randn(2, 5, 11)
    assert kd_logits_loss(logits, logits.clone(), 2.0).item() == 0.0


def test_kd_matches_hand_computed_value_with_temperature_squared():
    s, t, temp = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 2.0
    ps = torch.softmax(s / temp, -1)[0]
    pt = torch.softmax(t / temp, -1)[0]
    expected = temp**2 * sum(pt[i] * math.log(pt[i] / ps[i]) for i in range(2))
    assert kd_logits_loss(s, t, temp).item() == pytest.approx(float(expected), rel=1e-6)


def test_kd_temperature_softens_and_scales():
    s, t = torch.randn(4, 7) * 3, torch.randn(4, 7) * 3
    # T^2 compensates the 1/T^2 shrinking of gradients: at large T the loss tends to the logit MSE / (2 * C)-ish
    # scale rather than to 0; it must differ from the T=1 value and stay finite and positive.
    l1, l4 = kd_logits_loss(s, t, 1.0), kd_logits_loss(s, t, 4.0)
    assert l1 > 0 and l4 > 0 and not torch.isclose(l1, l4)
    raw = F.kl_div(F.log_softmax(s / 4, -1), F.log_softmax(t / 4, -1), log_target=True, reduction="none").sum(-1)
    assert l4.item() == pytest.approx(16 * raw.mean().item(), rel=1e-5)


def test_kd_ignores_masked_positions():
    s, t = torch.randn(2, 6, 5), torch.randn(2, 6, 5)
    mask = torch.ones(2, 6)
    mask[1, 4:] = 0
    s2 = s.clone()
    s2[1, 4:] += 100.0  # change only padded positions
    assert kd_logits_loss(s, t, 2.0, mask).item() == pytest.approx(kd_logits_loss(s2, t, 2.0, mask).item())
    assert kd_logits_loss(s, t, 2.0, mask, "sum").item() == pytest.approx(
        kd_logits_loss(s, t, 2.0, mask).item() * 10, rel=1e-6)


def test_kd_rejects_non_positive_temperature():
    with pytest.raises(ValueError):
        kd_logits_loss(torch.zeros(1, 2), torch.zeros(1, 2), 0.0)


def test_regression_kd_is_squared_error():
    assert kd_regression_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]])).item() == 2.5


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_hidden_loss_zero_on_identical(kind):
    h = torch.randn(2, 5, 8)
    assert hidden_state_loss(h, h.clone(), kind).item() == pytest.approx(0.0, abs=1e-6)


def test_hidden_mse_hand_value_and_mask():
    s = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])
    t = torch.tensor([[[0.0, 0.0], [5.0, 5.0]]])
    mask = torch.tensor([[1, 0]])
    assert hidden_state_loss(s, t, "mse", mask).item() == pytest.approx(2.5)  # ((1)^2 + (2)^2) / 2
    assert hidden_state_loss(s, t, "mse").item() == pytest.approx((2.5 + 25.0) / 2)


def test_hidden_cosine_hand_value():
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert hidden_state_loss(s, t, "cosine").item() == pytest.approx(1.0)


def test_hidden_loss_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        hidden_state_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))


def _probs(b, h, q, k, pad_from=None):
    scores = torch.randn(b, h, q, k)
    if pad_from is not None:
        scores[..., pad_from:] = torch.finfo(torch.float32).min
    return torch.softmax(scores, -1)


@pytest.mark.parametrize("kind", ["kl", "mse"])
def test_attention_loss_exactly_zero_on_identical(kind):
    a = _probs(2, 3, 5, 5, pad_from=3)
    assert attention_loss(a, a.clone(), kind).item() == 0.0


def test_attention_kl_hand_value():
    t = torch.tensor([0.5, 0.5, 0.0]).view(1, 1, 1, 3)
    s = torch.tensor([0.25, 0.75, 0.0]).view(1, 1, 1, 3)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert attention_loss(s, t, "kl").item() == pytest.approx(expected, rel=1e-6)


def test_attention_loss_masks_padded_queries():
    s, t = _probs(1, 2, 4, 4), _probs(1, 2, 4, 4)
    mask = torch.tensor([[1, 1, 0, 0]])
    s2 = s.clone()
    s2[:, :, 2:] = _probs(1, 2, 2, 4)  # padded query rows change
    assert attention_loss(s, t, "kl", mask).item() == pytest.approx(attention_loss(s2, t, "kl", mask).item())


def test_attention_loss_averages_heads_when_counts_differ():
    t = _probs(1, 4, 3, 3)
    s = t.mean(1, keepdim=True).expand(1, 2, 3, 3)
    assert attention_loss(s, t, "kl").item() == pytest.approx(0.0, abs=1e-6)


def test_layer_maps():
    assert uniform_layer_map(4, 4) == [0, 1, 2, 3]
    assert uniform_layer_map(6, 12) == [1, 3, 5, 7, 9, 11]
    assert uniform_layer_map(4, 6)[-1] == 5
    assert parse_layer_map(None, 2, 4) == [1, 3]
    assert parse_layer_map("0:0,1:3", 2, 4) == [0, 3]
    with pytest.raises(UserError, match="out of range"):
        parse_layer_map("0:0,1:9", 2, 4)
    with pytest.raises(UserError, match="one teacher layer for each"):
        parse_layer_map("0:0", 2, 4)
    with pytest.raises(UserError):
        uniform_layer_map(5, 4)


def test_attention_kl_gradient_is_finite_with_padded_keys():
    t = _probs(1, 2, 4, 4, pad_from=2)
    logits = torch.randn(1, 2, 4, 4)
    logits[..., 2:] = torch.finfo(torch.float32).min
    logits.requires_grad_(True)
    attention_loss(torch.softmax(logits, -1), t, "kl").backward()
    assert torch.isfinite(logits.grad).all()


def test_attention_kl_is_finite_when_student_probabilities_underflow_on_a_padded_query():
    """A student probability of exactly 0 where the teacher's is not (a huge logit gap underflows softmax) on a padded
    query row, which the mask removes: value and gradient stay finite (inf * 0 would make both NaN)."""
    t = torch.full((1, 1, 3, 3), 1 / 3)
    logits = torch.zeros(1, 1, 3, 3)
    logits[0, 0, 2, 0] = -200.0  # padded query 2: its key 0 underflows to probability 0
    logits.requires_grad_(True)
    s = torch.softmax(logits, -1)
    assert s[0, 0, 2, 0] == 0 and t[0, 0, 2, 0] > 0
    loss = attention_loss(s, t, "kl", torch.tensor([[1, 1, 0]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    unmasked = attention_loss(s.detach(), t, "kl")  # on a real query the term is huge but finite
    assert torch.isfinite(unmasked) and unmasked > 5  # (row 2: 1/3 (log 1/3 + 87.3) + ..., averaged over 3 rows)


# --- chunked logit distillation (decoders) -------------------------------------------------------------------------
def _unchunked(s, t, temp, kind, beta, mask=None):
    """The divergences written out from their definitions over the whole tensor at once."""
    ls, lt = F.log_softmax(s / temp, -1), F.log_softmax(t / temp, -1)
    ps, pt = ls.exp(), lt.exp()
    if kind == "forward_kl" or (kind == "jsd" and beta == 0):
        per = (pt * (lt - ls)).sum(-1)
    elif kind == "reverse_kl" or (kind == "jsd" and beta == 1):
        per = (ps * (ls - lt)).sum(-1)
    else:
        m = beta * pt + (1 - beta) * ps
        per = beta * (pt * (lt - m.log())).sum(-1) + (1 - beta) * (ps * (ls - m.log())).sum(-1)
    per = per * temp**2
    return (per * mask).sum() if mask is not None else per.sum()


@pytest.mark.parametrize("kind,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.1),
                                       ("jsd", 0.0), ("jsd", 1.0)])
@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_chunked_kd_value_and_gradient_equal_the_unchunked_definition(kind, beta, chunk):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 7, 13, generator=g, requires_grad=True)
    t = torch.randn(2, 7, 13, generator=g)
    mask = (torch.arange(7) < torch.tensor([[7], [4]])).long()
    got = kd_logits_loss_chunked(s, t, 2.0, mask, "sum", kind=kind, beta=beta, chunk_size=chunk)
    (grad,) = torch.autograd.grad(got, s)
    s_ref = s.detach().clone().requires_grad_(True)
    want = _unchunked(s_ref, t, 2.0, kind, beta, mask)
    (grad_ref,) = torch.autograd.grad(want, s_ref)
    assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(grad, grad_ref, atol=1e-6)
    assert grad[1, 4:].abs().max() == 0  # masked positions get no gradient


def test_chunked_forward_kl_equals_kd_logits_loss_value_and_gradient():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(3, 5, 17, generator=g, requires_grad=True)
    t = torch.randn(3, 5, 17, generator=g)
    mask = torch.ones(3, 5)
    mask[0, 3:] = 0
    for reduction in ("sum", "mean"):
        got = kd_logits_loss_chunked(s, t, 3.0, mask, reduction, chunk_size=4)
        (grad,) = torch.autograd.grad(got, s)
        want = kd_logits_loss(s, t, 3.0, mask, reduction)
        (grad_ref,) = torch.autograd.grad(want, s)
        assert got.item() == pytest.approx(want.item(), rel=1e-6)
        assert torch.allclose(grad, grad_ref, atol=1e-6)


def test_chunked_kd_zero_on_identical_and_jsd_endpoints():
    logits = torch.randn(2, 4, 9)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        assert kd_logits_loss_chunked(logits, logits.clone(), 2.0, kind=kind).abs().item() < 1e-6
    s, t = torch.randn(6, 9), torch.randn(6, 9)
    fwd = kd_logits_loss_chunked(s, t, 1.0, kind="forward_kl")
    rev = kd_logits_loss_chunked(s, t, 1.0, kind="reverse_kl")
    assert kd_logits_loss_chunked(s, t, 1.0, kind="jsd", beta=0.0).item() == pytest.approx(fwd.item())
    assert kd_logits_loss_chunked(s, t, 1.0, kind="jsd", beta=1.0).item() == pytest.approx(rev.item())
    # Symmetric at beta = 0.5 (the classic JSD, bounded by log 2).
    half = kd_logits_loss_chunked(s, t, 1.0, kind="jsd", beta=0.5)
    assert half.item() == pytest.approx(kd_logits_loss_chunked(t, s, 1.0, kind="jsd", beta=0.5).item(), rel=1e-5)
    assert 0 < half.item() <= math.log(2)


def test_chunked_kd_checks_its_arguments():
    s = torch.randn(2, 5)
    for kwargs in ({"kind": "kl"}, {"kind": "jsd", "beta": 1.5}, {"chunk_size": 0}, {"temperature": 0.0}):
        with pytest.raises(ValueError):
            kd_logits_loss_chunked(s, s, **kwargs)
    with pytest.raises(ValueError):
        kd_logits_loss_chunked(s, torch.randn(2, 6))


def test_chunked_kd_does_not_keep_every_chunk_for_the_backward():
    """Under autograd the chunks are checkpointed: the graph keeps views of the logits, not one fp32 softmax per
    chunk (without the checkpoint, tensors of the logits' size would be saved for the backward)."""
    s = torch.randn(64, 50, requires_grad=True)
    t = torch.randn(64, 50)
    logits_storage = {s.untyped_storage().data_ptr(), t.untyped_storage().data_ptr()}
    new = []

    def pack(x):
        if x.untyped_storage().data_ptr() not in logits_storage:
            new.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss = kd_logits_loss_chunked(s, t, 2.0, chunk_size=8)
    assert sum(new) < 50  # scalars only
    loss.backward()
    assert torch.isfinite(s.grad).all()


def test_causal_lm_loss_matches_shifted_cross_entropy():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 6, 11, generator=g, requires_grad=True)
    labels = torch.randint(0, 11, (2, 6), generator=g)
    labels[1, 4:] = -100
    got = causal_lm_loss(logits, labels, "mean", chunk_size=5)
    want = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    (grad,) = torch.autograd.grad(got, logits)
    (grad_ref,) = torch.autograd.grad(want, logits)
    assert torch.allclose(grad, grad_ref, atol=1e-7)
    total = causal_lm_loss(logits, labels, "sum")
    assert total.item() == pytest.approx(want.item() * (labels[:, 1:] != -100).sum().item(), rel=1e-6)
