"""The answer normalization and per-answer scores of the official SQuAD evaluation scripts (v1.1 and v2.0).

Kept in one private file so that `squad.py` and `squad_v2.py` share it; `evaluate.load` copies it next to them.
"""

from __future__ import annotations

import collections
import re
import string

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lowercase, strip punctuation, the articles a/an/the and extra whitespace (the official normalization)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 when the normalized strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score_v1(prediction: str, ground_truth: str) -> float:
    """Token F1 of the v1.1 script: 0 when no token is shared (including when either side is empty)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score_v2(prediction: str, ground_truth: str) -> float:
    """Token F1 of the v2.0 script: when either side is empty (no answer), 1 if both are, else 0."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    return f1_score_v1(prediction, ground_truth)


def max_over_ground_truths(metric, prediction: str, ground_truths: list[str]) -> float:
    """The best score of `prediction` against any of the ground truths (the official aggregation)."""
    return max(metric(prediction, gt) for gt in ground_truths)
