"""SQuAD data: official nested JSON files (v1.1 / v2.0), article-disjoint splits, sliding-window features and the
n-best post-processing that turns start/end logits back into answer texts.
"""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from ..errors import UserError
from ..validate import check_input_file

SQUAD_HUB_IDS = {False: "rajpurkar/squad", True: "rajpurkar/squad_v2"}


# --- official JSON files -------------------------------------------------------------------------------------------


def load_squad_articles(path: str | Path, flag: str) -> list[dict[str, Any]]:
    """The articles (`data` entries: title, paragraphs[context, qas]) of an official SQuAD JSON file."""
    path = check_input_file(path, flag, "SQuAD JSON (data/paragraphs/qas)")  # a file, not empty, UTF-8 text
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{flag} {path} is not valid JSON ({err})") from None
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list) or not articles:
        raise UserError(f'{flag} {path} is not a SQuAD file: expected {{"data": [{{"paragraphs": [...]}}]}}')
    for i, art in enumerate(articles):
        if not isinstance(art, dict) or not isinstance(art.get("paragraphs"), list):
            raise UserError(f"{flag} {path}: article {i} has no 'paragraphs' list (SQuAD layout: data/paragraphs/qas)")
        for para in art["paragraphs"]:
            if "context" not in para or "qas" not in para:
                raise UserError(f"{flag} {path}: a paragraph of article {i} lacks 'context' or 'qas'")
    return articles


def split_articles(articles: list[dict], eval_fraction: float) -> tuple[list[dict], list[dict]]:
    """Article-disjoint (train, eval) parts: the last ceil(eval_fraction * n) articles, in file order, are eval."""
    if not 0.0 < eval_fraction < 1.0:
        raise UserError(
            f"--split_articles must be in (0, 1), the fraction of articles to evaluate on (got {eval_fraction})"
        )
    n_eval = math.ceil(eval_fraction * len(articles))
    if n_eval >= len(articles):
        raise UserError(f"--split_articles {eval_fraction} leaves no training article out of {len(articles)}")
    return articles[:-n_eval], articles[-n_eval:]


def articles_to_dataset(articles: list[dict], version_2: bool, source: str) -> Dataset:
    """Flatten articles to the Hub `squad` columns: id, title, context, question, answers{text, answer_start}.

    Without `version_2`, a question with no answer (a v2.0 file) is a user error: pass --version_2_with_negative.
    """
    rows = collections.defaultdict(list)
    for art in articles:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                impossible = bool(qa.get("is_impossible", False)) or not qa.get("answers")
                if impossible and not version_2:
                    raise UserError(
                        f"{source}: question {qa.get('id')} has no answer (a SQuAD v2.0 file): pass "
                        "--version_2_with_negative"
                    )
                answers = [] if impossible else qa["answers"]
                rows["id"].append(str(qa["id"]))
                rows["title"].append(art.get("title", ""))
                rows["context"].append(para["context"])
                rows["question"].append(qa["question"])
                rows["answers"].append(
                    {"text": [a["text"] for a in answers], "answer_start": [int(a["answer_start"]) for a in answers]}
                )
    if not rows["id"]:
        raise UserError(f"{source} holds no questions")
    return Dataset.from_dict(dict(rows))


def gold_answers(examples: Dataset) -> dict[str, list[str]]:
    """`{question id: [gold answer texts]}` (empty list: unanswerable)."""
    return {ex["id"]: list(ex["answers"]["text"]) for ex in examples}


# --- features ------------------------------------------------------------------------------------------------------


def require_offsets(tokenizer) -> None:
    """Fail early when the tokenizer cannot return character offsets (needed to map tokens back to answers)."""
    try:
        enc = tokenizer("a question", "a context", return_offsets_mapping=True)
        ok = "offset_mapping" in enc and enc.sequence_ids() is not None
    except (NotImplementedError, ValueError, TypeError):
        ok = False
    if not ok:
        raise UserError("the tokenizer gives no character offsets: use a fast (tokenizers-backed) tokenizer")


def question_room(max_seq_length: int, doc_stride: int) -> int:
    """Most question tokens per window: 64 (BERT's max_query_length), and at most half of what the stride leaves.

    A window holds [CLS] question [SEP] context [SEP]; consecutive windows advance by (context part - stride), so a
    long question would make the windows crawl forward (and the tokenizer aborts once it leaves <= stride tokens).
    """
    return min(64, (max_seq_length - doc_stride - 3) // 2)


def _truncate_questions(questions: list[str], tokenizer, max_tokens: int) -> list[str]:
    # Cut long questions (rare: SQuAD questions are short) at a token boundary, like BERT's max_query_length.
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for question, offsets in zip(questions, enc["offset_mapping"]):
        out.append(question[: offsets[max_tokens - 1][1]] if len(offsets) > max_tokens else question)
    return out


def _tokenize_windows(examples, tokenizer, max_seq_length: int, doc_stride: int, pad_to_max_length: bool):
    pad_on_right = tokenizer.padding_side == "right"
    # Leading spaces in questions waste room and break some tokenizers' truncation.
    questions = [q.lstrip() for q in examples["question"]]
    questions = _truncate_questions(questions, tokenizer, question_room(max_seq_length, doc_stride))
    return tokenizer(
        questions if pad_on_right else examples["context"],
        examples["context"] if pad_on_right else questions,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length" if pad_to_max_length else False,
    ), (1 if pad_on_right else 0)


def prepare_train_features(examples, tokenizer, max_seq_length: int, doc_stride: int, pad_to_max_length: bool):
    """Sliding windows over long contexts, each labelled with the answer's token span (or CLS when outside)."""
    enc, context_id = _tokenize_windows(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length)
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets = enc.pop("offset_mapping")
    enc["start_positions"], enc["end_positions"] = [], []
    for i, offset in enumerate(offsets):
        input_ids = enc["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
        seq_ids = enc.sequence_ids(i)
        answers = examples["answers"][sample_map[i]]
        if not answers["answer_start"]:
            enc["start_positions"].append(cls_index)
            enc["end_positions"].append(cls_index)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        token_start = seq_ids.index(context_id)
        token_end = len(seq_ids) - 1 - seq_ids[::-1].index(context_id)
        if not (offset[token_start][0] <= start_char and offset[token_end][1] >= end_char):
            enc["start_positions"].append(cls_index)  # the answer is not (fully) in this window
            enc["end_positions"].append(cls_index)
            continue
        while (
            token_start < len(offset) and seq_ids[token_start] == context_id and offset[token_start][0] <= start_char
        ):
            token_start += 1
        while seq_ids[token_end] == context_id and offset[token_end][1] >= end_char:
            token_end -= 1
        enc["start_positions"].append(token_start - 1)
        enc["end_positions"].append(token_end + 1)
    return enc


def prepare_eval_features(examples, tokenizer, max_seq_length: int, doc_stride: int, pad_to_max_length: bool):
    """Sliding windows that keep their example id and the offsets of context tokens only (None elsewhere)."""
    enc, context_id = _tokenize_windows(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length)
    sample_map = enc.pop("overflow_to_sample_mapping")
    enc["example_id"] = []
    for i in range(len(enc["input_ids"])):
        seq_ids = enc.sequence_ids(i)
        enc["example_id"].append(examples["id"][sample_map[i]])
        enc["offset_mapping"][i] = [
            o if seq_ids[k] == context_id else None for k, o in enumerate(enc["offset_mapping"][i])
        ]
    return enc


# --- post-processing -----------------------------------------------------------------------------------------------


def postprocess_predictions(
    examples: Dataset,
    features: Dataset,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    version_2: bool = False,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_score_diff_threshold: float = 0.0,
) -> tuple[dict[str, str], dict[str, list[dict]], dict[str, float]]:
    """Answer texts from start/end logits: the best valid span over all windows of each example.

    Returns `(predictions, nbest, null_odds)`: `{id: text}`, `{id: [{text, probability, start_logit, end_logit}]}`
    and, for v2, `{id: null score - best span score}`; v2 predicts "" when that difference exceeds the threshold.
    """
    if len(features) != len(start_logits):
        raise ValueError(f"{len(features)} features but {len(start_logits)} logit rows")
    by_example = collections.defaultdict(list)
    for i, example_id in enumerate(features["example_id"]):
        by_example[example_id].append(i)
    offsets_all = features["offset_mapping"]
    predictions, nbest, null_odds = {}, {}, {}
    for example in examples:
        candidates, null = [], None
        for fi in by_example[example["id"]]:
            starts, ends, offsets = start_logits[fi], end_logits[fi], offsets_all[fi]
            null_score = float(starts[0] + ends[0])
            if null is None or null_score < null["score"]:  # the least confident window decides "no answer"
                null = {
                    "offsets": None,
                    "score": null_score,
                    "start_logit": float(starts[0]),
                    "end_logit": float(ends[0]),
                }
            candidates += _span_candidates(starts, ends, offsets, n_best_size, max_answer_length)
        if version_2 and null is not None:
            candidates.append(null)
        best = sorted(candidates, key=lambda c: c["score"], reverse=True)[:n_best_size]
        if version_2 and null is not None and not any(c is null for c in best):
            best.append(null)
        for c in best:
            c["text"] = "" if c["offsets"] is None else example["context"][c["offsets"][0] : c["offsets"][1]]
        nbest[example["id"]] = _with_probabilities(best)
        best_span = next((c for c in best if c["offsets"] is not None), None)
        text = best_span["text"] if best_span else ""
        if version_2:
            span_score = best_span["score"] if best_span else -math.inf
            null_odds[example["id"]] = float(null["score"] - span_score) if null else math.inf
            text = "" if null_odds[example["id"]] > null_score_diff_threshold else text
        predictions[example["id"]] = text
    return predictions, nbest, null_odds


def _span_candidates(starts, ends, offsets, n_best_size: int, max_answer_length: int) -> list[dict]:
    out = []
    top_starts = np.argsort(starts)[-1 : -n_best_size - 1 : -1]
    top_ends = np.argsort(ends)[-1 : -n_best_size - 1 : -1]
    for s in top_starts:
        for e in top_ends:
            # Dynamic padding pads logits beyond a window's length (index >= len(offsets)); offsets of question and
            # special tokens are None: neither can be part of an answer.
            if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                continue
            if e < s or e - s + 1 > max_answer_length:
                continue
            out.append(
                {
                    "offsets": (offsets[s][0], offsets[e][1]),
                    "score": float(starts[s] + ends[e]),
                    "start_logit": float(starts[s]),
                    "end_logit": float(ends[e]),
                }
            )
    return out


def _with_probabilities(candidates: list[dict]) -> list[dict]:
    if not candidates:
        return []
    scores = np.array([c["score"] for c in candidates])
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    return [
        {"text": c["text"], "probability": float(p), "start_logit": c["start_logit"], "end_logit": c["end_logit"]}
        for c, p in zip(candidates, probs)
    ]
