"""Zero-shot sentence-similarity evaluation (STS-B style): mean-pooled embeddings, cosine similarity, Spearman
correlation with the gold scores. How all-MiniLM-L6-v2 is evaluated, so teacher and students compare directly."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from scipy.stats import spearmanr
from torch import nn


def read_stsb(path: str | Path) -> tuple[list[str], list[str], list[float]]:
    """Sentence pairs and gold scores from a GLUE STS-B TSV (ten columns, score last, with header)."""
    a, b, scores = [], [], []
    with open(path, encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        i1, i2, isc = header.index("sentence1"), header.index("sentence2"), header.index("score")
        for row in reader:
            a.append(row[i1])
            b.append(row[i2])
            scores.append(float(row[isc]))
    return a, b, scores


@torch.no_grad()
def embed(model: nn.Module, tokenizer, sentences: list[str], batch_size: int = 64, max_length: int = 128):
    """Mean-pooled last hidden states (padding excluded)."""
    model.eval()
    device = next(model.parameters()).device
    backbone = getattr(model, "base_model", model)
    out = []
    for i in range(0, len(sentences), batch_size):
        enc = tokenizer(sentences[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt").to(device)
        hidden = backbone(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
    return torch.cat(out)


def sts_spearman(model: nn.Module, tokenizer, first: list[str], second: list[str], gold: list[float]) -> float:
    """Spearman correlation between cosine similarities of mean-pooled embeddings and gold scores."""
    cos = torch.nn.functional.cosine_similarity(embed(model, tokenizer, first), embed(model, tokenizer, second))
    return float(spearmanr(cos.float().cpu().numpy(), gold).correlation)
