"""Next-token cross-entropy and logit distillation computed from the final hidden states and the LM heads, chunk by
chunk, so that no [tokens, vocabulary] tensor is ever held.

`linear_logit_losses` gives the same values and gradients as materialising `logits = hidden @ weight.T (+ bias)` for
both models and calling `losses.causal_lm_loss` / `losses.kd_logits_loss_chunked` with reduction 'sum', but each
chunk of `chunk_size` rows computes its two logit blocks, their fp32 (log-)softmaxes, both terms and their
gradients, and lets them go. Two implementations:

- 'fused' (the default): a `torch.autograd.Function` that computes the gradients w.r.t. the student's hidden states,
  output weight and bias in the forward pass, chunk by chunk, with gradients of the logits written by hand, and
  whose backward only scales them by the incoming gradients. This is the approach of Liger-Kernel's fused linear
  losses (`LigerFusedLinearCrossEntropyFunction`, `LigerFusedLinearDistillationBase`, Hsu et al. 2024, "Liger
  Kernel: Efficient Triton Kernels for LLM Training"). One matmul per model and two per wanted term per chunk.
- 'checkpoint': each chunk runs under `torch.utils.checkpoint`, and autograd differentiates the same value formulas
  in the backward (which recomputes both models' logits of the chunk). Kept as the independent reference the fused
  gradients are tested against, and because it needs no extra parameter-sized buffers (see `linear_logit_losses`).

`final_hidden_and_head` runs a causal LM so that it returns its final hidden states (after the final norm) and its
per-layer hidden states, but no logits, and hands back the LM head's weight and bias.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .losses import KD_LOSSES

TERMS_WANTED = ("both", "ce", "kd")
METHODS = ("fused", "checkpoint")


# --- the maths of one chunk -------------------------------------------------------------------------------------------
def _ce_rows(z: torch.Tensor, targets: torch.Tensor, with_grad: bool):
    """Cross-entropy per row of fp32 logits `z` [C, V] (0 where the target is -100), and its gradient w.r.t. `z`."""
    valid = targets != -100
    safe = targets.clamp(min=0).unsqueeze(1)
    lse = torch.logsumexp(z, dim=-1)
    rows = (lse - z.gather(1, safe).squeeze(1)) * valid
    if not with_grad:
        return rows, None
    grad = torch.exp(z - lse.unsqueeze(1))  # softmax - one-hot, rows of ignored targets zeroed
    grad.scatter_add_(1, safe, torch.full_like(safe, -1, dtype=grad.dtype))
    return rows, grad.mul_(valid.unsqueeze(1).to(grad.dtype))


def _kd_rows(z_s: torch.Tensor, z_t: torch.Tensor, temperature: float, kind: str, beta: float, with_grad: bool):
    """T^2 x the divergence `kind` per row of fp32 student / teacher logits [C, V] (as `losses.kd_logits_loss_chunked`
    defines it), and its gradient w.r.t. the student's logits.

    With s, t the log-softmaxes at temperature T, p_s = exp(s), p_t = exp(t), the gradient w.r.t. the logits is
    T^2 / T x the gradient w.r.t. z / T, which is, per row:
    forward KL(p_t || p_s): p_s - p_t; reverse KL(p_s || p_t) = f: p_s * (s - t - f);
    JSD_beta with m = beta p_t + (1 - beta) p_s: p_s * (a - <p_s, a>) with a = (1 - beta) (s - log m).
    """
    s = F.log_softmax(z_s / temperature, dim=-1)
    t = F.log_softmax(z_t / temperature, dim=-1)
    grad = None
    # F.kl_div(a, b, log_target=True) is KL(exp(b) || exp(a)), as in losses._divergence_per_position.
    if kind == "forward_kl" or (kind == "jsd" and beta == 0):
        rows = F.kl_div(s, t, log_target=True, reduction="none").sum(-1)
        if with_grad:
            grad = s.exp().sub_(t.exp())
    elif kind == "reverse_kl" or (kind == "jsd" and beta == 1):
        rows = F.kl_div(t, s, log_target=True, reduction="none").sum(-1)
        if with_grad:
            grad = (s - t).sub_(rows.unsqueeze(1)).mul_(s.exp())
    else:
        log_m = torch.logaddexp(s + math.log1p(-beta), t + math.log(beta))
        rows = (beta * F.kl_div(log_m, t, log_target=True, reduction="none").sum(-1)
                + (1 - beta) * F.kl_div(log_m, s, log_target=True, reduction="none").sum(-1))
        if with_grad:
            p_s = s.exp()
            a = (s - log_m).mul_(1 - beta)
            grad = a.sub_((p_s * a).sum(-1, keepdim=True)).mul_(p_s)
    if grad is not None:
        grad.mul_(temperature)
    return rows * temperature**2, grad


def _head_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """One chunk's logits, computed in the weight's dtype as `nn.Linear` does, then fp32 (as the loss functions
    upcast materialised logits)."""
    return F.linear(hidden.to(weight.dtype), weight, bias).float()


def _chunk_values(s_h, s_w, s_b, t_h, t_w, t_b, targets, kd_w, temperature, kind, beta, want_ce, want_kd):
    """Summed CE and summed weighted divergence of one chunk, differentiable by autograd (the 'checkpoint' path)."""
    z_s = _head_logits(s_h, s_w, s_b)
    ce = _ce_rows(z_s, targets, False)[0].sum() if want_ce else z_s.new_zeros(())
    if want_kd:
        with torch.no_grad():
            z_t = _head_logits(t_h, t_w, t_b)
        kd = (_kd_rows(z_s, z_t, temperature, kind, beta, False)[0] * kd_w).sum()
    else:
        kd = z_s.new_zeros(())
    return ce, kd


# --- 'fused': gradients in the forward --------------------------------------------------------------------------------
class _FusedLinearLogitLosses(torch.autograd.Function):
    """Forward returns (summed CE, summed divergence) and keeps, per wanted term, its gradient w.r.t. the student's
    hidden states [N, H], weight [V, H] and bias [V] (weight and bias accumulated in fp32 over the chunks); backward
    returns grad_ce x the CE's + grad_kd x the divergence's, in the inputs' dtypes. The teacher gets no gradient."""

    @staticmethod
    def forward(ctx, s_h, s_w, s_b, t_h, t_w, t_b, targets, kd_w, temperature, kind, beta, chunk_size, want_ce,
                want_kd, grad_enabled):
        need_h, need_w, need_b = (grad_enabled and need for need in ctx.needs_input_grad[:3])
        need_b = need_b and s_b is not None
        terms = [name for name, wanted in (("ce", want_ce), ("kd", want_kd)) if wanted]
        any_grad = need_h or need_w or need_b
        grads = {}
        for name in terms if any_grad else ():
            grads[name] = (torch.zeros_like(s_h) if need_h else None,
                           torch.zeros(s_w.shape, dtype=torch.float32, device=s_w.device) if need_w else None,
                           torch.zeros(s_b.shape, dtype=torch.float32, device=s_b.device) if need_b else None)
        totals = {"ce": s_h.new_zeros((), dtype=torch.float32), "kd": s_h.new_zeros((), dtype=torch.float32)}
        for start in range(0, s_h.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            h = s_h[rows].to(s_w.dtype)
            z_s = _head_logits(h, s_w, s_b)
            logit_grads = {}
            if want_ce:
                ce_rows, logit_grads["ce"] = _ce_rows(z_s, targets[rows], any_grad)
                totals["ce"] += ce_rows.sum()
            if want_kd:
                z_t = _head_logits(t_h[rows], t_w, t_b)
                w = kd_w[rows]
                kd_rows, g = _kd_rows(z_s, z_t, temperature, kind, beta, any_grad)
                totals["kd"] += (kd_rows * w).sum()
                if g is not None:
                    logit_grads["kd"] = g.mul_(w.unsqueeze(1))
                del z_t
            del z_s
            for name, (g_h, g_w, g_b) in grads.items():
                g = logit_grads[name]
                if g_h is not None:
                    g_h[rows] = (g.to(s_w.dtype) @ s_w).to(g_h.dtype)
                if g_w is not None:
                    g_w.add_((g.t().to(s_w.dtype) @ h).float())
                if g_b is not None:
                    g_b.add_(g.sum(0))
            del logit_grads
        ctx.grads = grads
        ctx.dtypes = (s_h.dtype, s_w.dtype, None if s_b is None else s_b.dtype)
        return totals["ce"], totals["kd"]

    @staticmethod
    def backward(ctx, grad_ce, grad_kd):
        out = [None, None, None]
        for name, scale in (("ce", grad_ce), ("kd", grad_kd)):
            if name not in ctx.grads:
                continue
            for i, g in enumerate(ctx.grads[name]):
                if g is not None:
                    part = g * scale.to(g.dtype)
                    out[i] = part if out[i] is None else out[i] + part
        ctx.grads = None
        out = [None if g is None else g.to(dtype) for g, dtype in zip(out, ctx.dtypes)]
        return (*out, *[None] * 12)


# --- the public function ----------------------------------------------------------------------------------------------
def linear_logit_losses(student_hidden: torch.Tensor, student_weight: torch.Tensor, student_bias: torch.Tensor | None,
                        teacher_hidden: torch.Tensor | None, teacher_weight: torch.Tensor | None,
                        teacher_bias: torch.Tensor | None, targets: torch.Tensor | None,
                        kd_weight: torch.Tensor | None = None, temperature: float = 2.0, kind: str = "forward_kl",
                        beta: float = 0.5, chunk_size: int = 1024, terms: str = "both",
                        method: str = "fused") -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy and summed logit divergence straight from hidden states and LM heads.

    Shapes: `student_hidden` [N, H] (the final hidden states after the final norm, what enters the LM head; the
    caller flattens [B, T, H]), `student_weight` [V, H] (the output embedding; it may be the tied input embedding, it
    is one tensor and gets its gradient once), `student_bias` [V] or None; `teacher_hidden` [N, H_t],
    `teacher_weight` [V, H_t], `teacher_bias` [V] or None; `targets` [N] long, the token each position predicts,
    -100 = ignored (the caller shifts: `F.pad(labels, (0, 1), value=-100)[..., 1:]`); `kd_weight` [N], the KD
    weight/mask per position (None = every position weighs 1).
    Values: CE = sum over rows with a target of -log softmax(z_s)[target], as `losses.causal_lm_loss(..., 'sum')`;
    KD = sum over rows of kd_weight x T^2 x divergence `kind` ('forward_kl' | 'reverse_kl' | 'jsd' with `beta`),
    as `losses.kd_logits_loss_chunked(..., 'sum')`; both fp32 scalars; the caller divides by its counts. A term not
    in `terms` ('both' | 'ce' | 'kd') is returned as a constant 0 and costs nothing (its inputs may be None).
    Gradients flow to the student's hidden states, weight and bias, in their own dtypes; the teacher's tensors are
    used detached (no gradient reaches them, whatever their `requires_grad`). Hidden states and weights may be bf16:
    the logits are computed in the weight's dtype (as the model's `nn.Linear` would), the softmaxes and losses in
    fp32, and the weight and bias gradients are accumulated in fp32 over the chunks.
    Memory: no [N, V] tensor is created; the largest are a few fp32 [chunk_size, V] blocks per chunk, plus for
    'fused' one fp32 [V, H] gradient buffer (and [N, H], [V]) per wanted term held from the forward to the backward
    ('checkpoint' holds none, and recomputes both models' logits in the backward).
    `method`: 'fused' (default, faster, see benchmarks/logit_memory.json) or 'checkpoint'.
    Errors: ValueError on an unknown kind / terms / method, beta outside [0, 1], temperature <= 0, chunk_size < 1,
    or shapes that do not match.
    """
    if terms not in TERMS_WANTED:
        raise ValueError(f"terms must be one of {', '.join(TERMS_WANTED)}, got {terms!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if kind not in KD_LOSSES:
        raise ValueError(f"kind must be one of {', '.join(KD_LOSSES)}, got {kind!r}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    want_ce, want_kd = terms in ("both", "ce"), terms in ("both", "kd")
    n, vocab = student_hidden.shape[0], student_weight.shape[0]
    _check_head("student", student_hidden, student_weight, student_bias)
    if want_ce and (targets is None or targets.shape != (n,)):
        raise ValueError(f"targets must be [N] = [{n}], got {None if targets is None else tuple(targets.shape)}")
    if want_kd:
        if teacher_hidden is None or teacher_weight is None:
            raise ValueError("terms 'kd' and 'both' need teacher_hidden and teacher_weight")
        _check_head("teacher", teacher_hidden, teacher_weight, teacher_bias)
        if teacher_hidden.shape[0] != n or teacher_weight.shape[0] != vocab:
            raise ValueError(f"teacher rows/vocab {teacher_hidden.shape[0]}/{teacher_weight.shape[0]} differ from the "
                             f"student's {n}/{vocab}")
        if kd_weight is not None and kd_weight.shape != (n,):
            raise ValueError(f"kd_weight must be [N] = [{n}], got {tuple(kd_weight.shape)}")
    device = student_hidden.device
    targets = (torch.full((n,), -100, dtype=torch.long, device=device) if targets is None
               else targets.to(device=device, dtype=torch.long))
    kd_w = (torch.ones(n, dtype=torch.float32, device=device) if kd_weight is None
            else kd_weight.to(device=device, dtype=torch.float32))
    t_h, t_w, t_b = (None if x is None else x.detach() for x in (teacher_hidden, teacher_weight, teacher_bias))
    if method == "fused":
        return _FusedLinearLogitLosses.apply(student_hidden, student_weight, student_bias, t_h, t_w, t_b, targets,
                                             kd_w, temperature, kind, beta, chunk_size, want_ce, want_kd,
                                             torch.is_grad_enabled())
    differentiable = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (student_hidden, student_weight, student_bias))
    ce = student_hidden.new_zeros((), dtype=torch.float32)
    kd = student_hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, n, chunk_size):
        rows = slice(start, start + chunk_size)
        args = (student_hidden[rows], student_weight, student_bias, None if t_h is None else t_h[rows], t_w, t_b,
                targets[rows], kd_w[rows], temperature, kind, beta, want_ce, want_kd)
        c, k = checkpoint(_chunk_values, *args, use_reentrant=False) if differentiable else _chunk_values(*args)
        ce, kd = ce + c, kd + k
    return ce, kd


def _check_head(who: str, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"{who}: hidden must be [N, H] and weight [V, H], got {tuple(hidden.shape)} and "
                         f"{tuple(weight.shape)}")
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"{who}: bias must be [V] = [{weight.shape[0]}], got {tuple(bias.shape)}")


# --- getting the hidden states and the head from a causal LM ----------------------------------------------------------
def final_hidden_and_head(model: torch.nn.Module, **inputs):
    """Run a causal LM (Llama, Mistral, Qwen2, Qwen3, GPT-2 in transformers 5) so that its LM head computes no
    logits, and return `(hidden [B, T, H], weight [V, H], bias [V] | None, outputs)`.

    `hidden` is the final hidden state after the final norm (`model.norm` / `transformer.ln_f`), exactly what the LM
    head multiplies: `hidden @ weight.T + bias` are the model's logits. It is `outputs.hidden_states[-1]`: the
    transformers 5 `capture_outputs` decorator replaces the last captured layer output by `last_hidden_state`, which
    these backbones return after their final norm. `outputs.hidden_states` holds the embeddings and every layer's
    output (for the hidden-state loss); `outputs.logits` is [B, 0, V]. The model is called whole (so DDP's and
    accelerate's forward wrappers run) with `logits_to_keep` an empty index tensor: the CausalLMs slice the hidden
    states with it before the head (`slice_logits_to_keep`), so the head multiplies zero rows.
    `inputs` are the model's keyword inputs without `labels` (the loss is computed from `hidden`). A DDP-style wrapper
    (`.module`) is unwrapped to find the head; `output_hidden_states` in `inputs` is ignored (always on). Errors:
    ValueError if `labels` is given, the model has no output embeddings, or its head has forward hooks (masks,
    adapters) that multiplying by its weight would skip.
    """
    if "labels" in inputs:
        raise ValueError("final_hidden_and_head computes no logits: pass the inputs without labels")
    inputs.pop("output_hidden_states", None)  # always on here; a caller's flag for the hidden-state loss is welcome
    core = model.module if hasattr(model, "module") else model
    head = core.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(core).__name__} has no output embeddings (LM head)")
    if head._forward_hooks or head._forward_pre_hooks:
        raise ValueError(f"the LM head of {type(core).__name__} has forward hooks, which hidden @ weight.T would skip")
    ref = inputs.get("input_ids", inputs.get("inputs_embeds"))
    keep = torch.zeros(0, dtype=torch.long, device=None if ref is None else ref.device)
    outputs = model(**inputs, output_hidden_states=True, logits_to_keep=keep)
    return outputs.hidden_states[-1], head.weight, getattr(head, "bias", None), outputs


def head_is_plain(model: torch.nn.Module) -> bool:
    """Whether `model` (or the module a DDP-style wrapper holds) has an LM head without forward hooks, so that
    `final_hidden_and_head` applies (masks or adapters on the head would be skipped by hidden @ weight.T)."""
    head = getattr(model, "module", model).get_output_embeddings()
    return head is not None and not (head._forward_hooks or head._forward_pre_hooks)
