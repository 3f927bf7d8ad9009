"""A plain PyTorch distillation step, written without the project's code: the yardstick of the speed benchmark.

One step = teacher forward under `no_grad` + student forward + the hidden-state and attention losses computed inline
+ backward + gradient clipping (1.0, as the Trainer's default) + AdamW (fused, as the Trainer's default
`adamw_torch_fused`) + a linear LR schedule step. No pruning, no masks, no callbacks, no Trainer.

Losses (the same definitions as the project's, re-derived here):
- hidden: for each pair (embeddings, layer 1..L), per token the mean over channels of the squared error; summed over
  real tokens, divided by their number, averaged over the pairs;
- attention: for each layer, per query row KL(teacher || student) over keys, averaged over heads; summed over real
  query tokens, divided by their number, averaged over layers.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn


def hidden_loss(s_states, t_states, mask: torch.Tensor) -> torch.Tensor:
    m = mask.float()
    total = 0.0
    for s, t in zip(s_states, t_states):
        per_token = (s.float() - t.float()).pow(2).mean(-1)
        total = total + (per_token * m).sum()
    return total / len(s_states) / m.sum().clamp(min=1)


def attention_kl(s_maps, t_maps, mask: torch.Tensor) -> torch.Tensor:
    m = mask.float()
    total = 0.0
    for s, t in zip(s_maps, t_maps):
        s, t = s.float(), t.float()
        kl = (t * (t.clamp_min(1e-30).log() - s.clamp_min(1e-30).log())).sum(-1)  # [batch, heads, queries]
        total = total + (kl.mean(1) * m).sum()
    return total / len(s_maps) / m.sum().clamp(min=1)


class ReferenceDistiller:
    """Teacher + a full copy as student, AdamW; `step(batch)` runs one distillation step."""

    def __init__(self, teacher: nn.Module, lr: float = 2e-4, max_steps: int = 100, alpha_hidden: float = 1.0,
                 alpha_attn: float = 1.0, max_grad_norm: float = 1.0, student: nn.Module | None = None,
                 record_timings: bool = False):
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = (student if student is not None else copy.deepcopy(teacher)).train().requires_grad_(True)
        for m in (self.teacher, self.student):
            m.set_attn_implementation("eager")  # attention probabilities are needed for the attention loss
        for module in self.student.modules():  # attention maps after dropout are not distributions
            if type(module).__name__.endswith("SelfAttention") and isinstance(getattr(module, "dropout", None),
                                                                              nn.Dropout):
                module.dropout.p = 0.0
        self.alpha_hidden, self.alpha_attn, self.max_grad_norm = alpha_hidden, alpha_attn, max_grad_norm
        self.record_timings = record_timings
        self.last_timings: dict[str, float] = {}
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=lr, eps=1e-6, weight_decay=0.0,
                                           fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: max(0.0, 1.0 - s / max(1, max_steps)))

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        clock = [time.perf_counter()]

        def tick():
            if self.record_timings:
                clock.append(time.perf_counter())

        mask = batch["attention_mask"]
        with torch.no_grad():
            t_out = self.teacher(**batch, output_hidden_states=True, output_attentions=True)
        tick()
        s_out = self.student(**batch, output_hidden_states=True, output_attentions=True)
        loss = (self.alpha_hidden * hidden_loss(s_out.hidden_states, t_out.hidden_states, mask)
                + self.alpha_attn * attention_kl(s_out.attentions, t_out.attentions, mask))
        tick()
        loss.backward()
        tick()
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        tick()
        if self.record_timings:
            names = ("teacher_forward", "student_forward_and_losses", "backward", "clip_and_optimizer")
            self.last_timings = {n: b - a for n, a, b in zip(names, clock, clock[1:])}
        return float(loss.detach())


def pack(tokenizer, lines: list[str], seq_len: int, n_blocks: int) -> list[dict[str, torch.Tensor]]:
    """Tokenise lines and cut the token stream into `n_blocks` blocks of `seq_len` (like run_distill's packing)."""
    ids: list[int] = []
    for line in lines:
        if line.strip():
            ids.extend(tokenizer(line)["input_ids"])
        if len(ids) >= seq_len * n_blocks:
            break
    n = min(n_blocks, len(ids) // seq_len)
    if n == 0:
        raise ValueError("not enough text for one block")
    x = torch.tensor(ids[: n * seq_len]).view(n, seq_len)
    return [{"input_ids": x[i:i + 1], "attention_mask": torch.ones_like(x[i:i + 1]),
             "token_type_ids": torch.zeros_like(x[i:i + 1])} for i in range(n)]


def batches(blocks: list[dict[str, torch.Tensor]], batch_size: int):
    """Endless batches of `batch_size` blocks, cycling through them."""
    i = 0
    while True:
        chunk = [blocks[(i + j) % len(blocks)] for j in range(batch_size)]
        i += batch_size
        yield {k: torch.cat([b[k] for b in chunk]) for k in chunk[0]}
