"""Distillation losses as pure functions of tensors (no Trainer, no model), and the student-to-teacher layer map.

Every loss takes an optional `mask` over positions (1 = real token) and a `reduction`: 'mean' averages over the
masked-in positions, 'sum' adds them up so that a caller can divide by a count taken over a larger batch (the
trainer does this to make gradient accumulation exactly equal to one big batch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .errors import UserError


def position_counts(inputs: dict) -> dict[str, torch.Tensor]:
    """Positions each loss term averages over, counted in a batch (`input_ids`, `attention_mask`, `labels`):
    `tokens` (real tokens), `examples`, `labelled` (labels != -100) and `next_tokens` (the targets of a causal LM,
    labels shifted by one), each a 0-d tensor; a caller sums them over the accumulation window and divides its summed
    terms by them, so that k accumulated micro-batches give exactly one k-times larger batch."""
    ids = inputs.get("input_ids")
    mask = inputs.get("attention_mask")
    out = {}
    if ids is not None:
        out["tokens"] = mask.sum() if mask is not None else torch.tensor(ids.numel())
        out["examples"] = torch.tensor(ids.shape[0])
    labels = inputs.get("labels")
    if torch.is_tensor(labels) and ids is not None and labels.shape == ids.shape:
        out["labelled"] = (labels != -100).sum()
        out["next_tokens"] = (labels[..., 1:] != -100).sum()  # the targets of a causal LM (labels shifted)
    return out


def _reduce(per_position: torch.Tensor, mask: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """Sum or average a per-position loss over positions where `mask` is 1."""
    if mask is not None:
        mask = mask.to(per_position.dtype)
        total = (per_position * mask).sum()
        count = mask.sum()
    else:
        total = per_position.sum()
        count = torch.tensor(per_position.numel(), dtype=per_position.dtype, device=per_position.device)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / count.clamp(min=1)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def kd_logits_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0,
                   mask: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), per position (classes on the last dim).

    The T^2 factor keeps gradient magnitudes comparable across temperatures (Hinton et al., 2015).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    per_position = _divergence_per_position(student_logits, teacher_logits, temperature, "forward_kl", 0.0)
    return _reduce(per_position, mask, reduction)


KD_LOSSES = ("forward_kl", "reverse_kl", "jsd")


def _divergence_per_position(student: torch.Tensor, teacher: torch.Tensor, temperature: float, kind: str,
                             beta: float) -> torch.Tensor:
    """T^2 x the divergence `kind` between the two softmaxes, per row of [positions, vocab] logits (fp32)."""
    s = F.log_softmax(student.float() / temperature, dim=-1)
    t = F.log_softmax(teacher.float() / temperature, dim=-1)
    # F.kl_div(a, b, log_target=True) is KL(exp(b) || exp(a)).
    if kind == "forward_kl" or (kind == "jsd" and beta == 0):
        per_row = F.kl_div(s, t, log_target=True, reduction="none").sum(-1)
    elif kind == "reverse_kl" or (kind == "jsd" and beta == 1):
        per_row = F.kl_div(t, s, log_target=True, reduction="none").sum(-1)
    else:
        # Mixture m = beta * teacher + (1 - beta) * student, in log space.
        log_m = torch.logaddexp(s + math.log1p(-beta), t + math.log(beta))
        per_row = (beta * F.kl_div(log_m, t, log_target=True, reduction="none").sum(-1)
                   + (1 - beta) * F.kl_div(log_m, s, log_target=True, reduction="none").sum(-1))
    return per_row * temperature**2


def _chunk_sum(student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor | None, temperature: float,
               kind: str, beta: float) -> torch.Tensor:
    per_row = _divergence_per_position(student, teacher, temperature, kind, beta)
    return per_row.sum() if weight is None else (per_row * weight).sum()


def kd_logits_loss_chunked(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0,
                           mask: torch.Tensor | None = None, reduction: str = "mean", kind: str = "forward_kl",
                           beta: float = 0.5, chunk_size: int = 1024) -> torch.Tensor:
    """Logit distillation over [..., vocab] logits, `chunk_size` positions at a time, for large vocabularies.

    `kind`:
    - 'forward_kl': T^2 KL(teacher || student), the same value and gradient as `kd_logits_loss`;
    - 'reverse_kl': T^2 KL(student || teacher) (mode seeking, MiniLLM style);
    - 'jsd': T^2 x the generalised Jensen-Shannon divergence of TRL's GKD trainer
      (`GKDTrainer.generalized_jsd_loss`, Agarwal et al. 2024, "On-Policy Distillation of Language Models", eq. 1):
      with the mixture m = beta * teacher + (1 - beta) * student,
      JSD_beta = beta * KL(teacher || m) + (1 - beta) * KL(student || m); as in TRL, beta = 0 is taken to mean the
      forward KL(teacher || student) and beta = 1 the reverse KL(student || teacher) (the mixture formula itself
      vanishes at both ends). Unlike TRL, the T^2 factor is applied, as for the other kinds.

    Memory: the model logits are read chunk by chunk; each chunk's fp32 softmaxes exist only while that chunk is
    computed, and under autograd each chunk runs in `torch.utils.checkpoint`, so the backward recomputes one chunk
    at a time instead of keeping every chunk's softmaxes (the gradient of the logits, their size, is unavoidable).
    `mask` (1 = a real position, shape = logits.shape[:-1]) and `reduction` are as in the other losses.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if kind not in KD_LOSSES:
        raise ValueError(f"kind must be one of {', '.join(KD_LOSSES)}, got {kind!r}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"logits differ in shape: student {tuple(student_logits.shape)}, teacher "
                         f"{tuple(teacher_logits.shape)}")
    vocab = student_logits.shape[-1]
    s_rows, t_rows = student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab)
    weights = None if mask is None else mask.reshape(-1).to(torch.float32)
    checkpointed = torch.is_grad_enabled() and (s_rows.requires_grad or t_rows.requires_grad)
    total = s_rows.new_zeros((), dtype=torch.float32)
    for start in range(0, s_rows.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        w = None if weights is None else weights[rows]
        if checkpointed:
            total = total + checkpoint(_chunk_sum, s_rows[rows], t_rows[rows], w, temperature, kind, beta,
                                       use_reentrant=False)
        else:
            total = total + _chunk_sum(s_rows[rows], t_rows[rows], w, temperature, kind, beta)
    if reduction == "sum":
        return total
    if reduction == "mean":
        count = weights.sum() if weights is not None else torch.tensor(float(s_rows.shape[0]))
        return total / count.to(total.device).clamp(min=1)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean",
                   chunk_size: int = 1024) -> torch.Tensor:
    """Next-token cross-entropy of a causal LM: the logits at position t predict `labels` at t + 1 (-100 = ignored).

    Labels are shifted (not logits), as transformers' `ForCausalLMLoss` does, so the logits are never copied; the
    fp32 log-softmax is computed `chunk_size` positions at a time (checkpointed under autograd, as in
    `kd_logits_loss_chunked`). 'mean' divides by the number of predicted tokens, `(labels[..., 1:] != -100).sum()`.
    """
    vocab = logits.shape[-1]
    targets = F.pad(labels, (0, 1), value=-100)[..., 1:].reshape(-1).to(logits.device)
    rows = logits.reshape(-1, vocab)
    checkpointed = torch.is_grad_enabled() and rows.requires_grad
    total = rows.new_zeros((), dtype=torch.float32)
    for start in range(0, rows.shape[0], chunk_size):
        part = slice(start, start + chunk_size)
        if checkpointed:
            total = total + checkpoint(_cross_entropy_sum, rows[part], targets[part], use_reentrant=False)
        else:
            total = total + _cross_entropy_sum(rows[part], targets[part])
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / (targets != -100).sum().clamp(min=1)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def _cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, ignore_index=-100, reduction="sum")


def kd_regression_loss(student_preds: torch.Tensor, teacher_preds: torch.Tensor, mask: torch.Tensor | None = None,
                       reduction: str = "mean") -> torch.Tensor:
    """Squared error between student and teacher predictions (regression heads, e.g. STS-B)."""
    per_position = (student_preds.float() - teacher_preds.float()).pow(2).sum(-1)
    return _reduce(per_position, mask, reduction)


def hidden_state_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "mse",
                      mask: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Hidden-state loss per token: 'mse' (mean over channels of the squared error) or 'cosine' (1 - cosine
    similarity). `student` and `teacher` are [..., channels] with the same channels (select or project first)."""
    if student.shape != teacher.shape:
        raise ValueError(f"hidden states differ in shape: student {tuple(student.shape)}, teacher "
                         f"{tuple(teacher.shape)}")
    s, t = student.float(), teacher.float()
    if kind == "mse":
        per_position = (s - t).pow(2).mean(-1)
    elif kind == "cosine":
        per_position = 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)
    else:
        raise ValueError(f"unknown hidden loss {kind!r}")
    return _reduce(per_position, mask, reduction)


def attention_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "kl", mask: torch.Tensor | None = None,
                   reduction: str = "mean") -> torch.Tensor:
    """Attention-probability loss, averaged over heads, per query position.

    `student`, `teacher`: [batch, heads, queries, keys] attention probabilities. 'kl' is KL(teacher || student)
    over keys (MiniLM); 'mse' the mean squared error over keys. `mask` [batch, queries] selects real query tokens;
    padded keys carry zero teacher probability, so they add nothing. When head counts differ (a student of another
    origin), both sides are averaged over heads first.
    """
    s, t = student.float(), teacher.float()
    if s.shape[1] != t.shape[1]:
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    if kind == "kl":
        # Keys with zero teacher probability (padding) contribute 0 * log(0 / s) = 0. Both logs read 1 there, so
        # neither the value nor the gradient (t / s = 0 / 0) turns into NaN; identical inputs give exactly 0. A
        # student probability that underflowed to 0 where the teacher's is not reads as the smallest normal float
        # (log -87 in fp32): an infinite term would turn into NaN once a padded query row is masked out (inf * 0).
        support = t > 0
        t_safe = torch.where(support, t, torch.ones_like(t))
        s_safe = torch.where(support, s, torch.ones_like(s)).clamp_min(torch.finfo(s.dtype).tiny)
        per_row = (t * (t_safe.log() - s_safe.log())).sum(-1)
    elif kind == "mse":
        per_row = (s - t).pow(2).mean(-1)
    else:
        raise ValueError(f"unknown attention loss {kind!r}")
    return _reduce(per_row.mean(1), mask, reduction)


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer for each student layer: identity when depths match, else evenly spaced ending at the top
    (student layer i -> teacher layer round((i + 1) * T / S) - 1)."""
    if student_layers > teacher_layers:
        raise UserError(f"the student has more layers ({student_layers}) than the teacher ({teacher_layers})")
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def parse_layer_map(spec: str | None, student_layers: int, teacher_layers: int) -> list[int]:
    """`--layer_map`: None for the default, or 's:t' pairs over 0-based transformer layers, one per student layer."""
    if not spec:
        return uniform_layer_map(student_layers, teacher_layers)
    pairs = {}
    for item in spec.split(","):
        try:
            s, t = (int(x) for x in item.split(":"))
        except ValueError:
            raise UserError(f"--layer_map {spec!r}: write 's:t' pairs such as '0:1,1:3'") from None
        if not (0 <= s < student_layers and 0 <= t < teacher_layers):
            raise UserError(f"--layer_map pair {item!r} is out of range (student layers 0..{student_layers - 1}, "
                            f"teacher layers 0..{teacher_layers - 1})")
        pairs[s] = t
    if sorted(pairs) != list(range(student_layers)):
        raise UserError(f"--layer_map {spec!r} must give one teacher layer for each student layer "
                        f"0..{student_layers - 1}")
    return [pairs[i] for i in range(student_layers)]


def prediction_logits(output) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None:
    """The prediction logits of a model output: `logits`, (start, end) for QA, or None for a bare backbone."""
    logits = getattr(output, "logits", None)
    if logits is not None:
        return logits
    start, end = getattr(output, "start_logits", None), getattr(output, "end_logits", None)
    if start is not None and end is not None:
        return start, end
    return None
