"""SQuAD v2.0 metric (official script: exact, f1, HasAns_*/NoAns_*, best thresholds) as an offline `evaluate` module.

Drop-in for the Hub `squad_v2` metric: `evaluate.load("<path>/homodistil_hf/metrics/squad_v2.py")` or
`homodistil_hf.metrics.load("squad_v2")`. Inputs: predictions `[{"id", "prediction_text", "no_answer_probability"}]`,
references `[{"id", "answers": {"text": [...], "answer_start": [...]}}]` (empty answers: unanswerable).
"""

from __future__ import annotations

import datasets
import evaluate

from ._squad_official import exact_match_score, f1_score_v2, max_over_ground_truths, normalize_answer

_DESCRIPTION = "SQuAD v2.0: exact match and F1 with unanswerable questions, split into HasAns / NoAns."
_CITATION = """@inproceedings{rajpurkar-etal-2018-know,
  title={Know What You Don{'}t Know: Unanswerable Questions for {SQ}u{AD}},
  author={Rajpurkar, Pranav and Jia, Robin and Liang, Percy}, booktitle={ACL}, year={2018}}"""
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str ("" for no answer), "no_answer_probability": float}.
    references: list of {"id": str, "answers": {"text": list[str], "answer_start": list[int]}}.
    no_answer_threshold: a question whose no_answer_probability is above it is predicted unanswerable (default 1.0).
Returns: exact, f1, total, HasAns_exact/f1/total, NoAns_exact/f1/total (when present), best_exact, best_exact_thresh,
    best_f1, best_f1_thresh. Scores in percent.
"""


def _scores(predictions: dict[str, str], gold_answers: dict[str, list[str]]):
    exact, f1 = {}, {}
    for qid, answers in gold_answers.items():
        # The official script drops gold answers that normalize to nothing; none left means unanswerable.
        answers = [a for a in answers if normalize_answer(a)] or [""]
        if qid not in predictions:
            continue
        exact[qid] = max_over_ground_truths(exact_match_score, predictions[qid], answers)
        f1[qid] = max_over_ground_truths(f1_score_v2, predictions[qid], answers)
    return exact, f1


def _apply_threshold(scores, na_probs, has_ans, threshold):
    return {qid: float(not has_ans[qid]) if na_probs[qid] > threshold else s for qid, s in scores.items()}


def _aggregate(scores, qids):
    total = len(qids)
    return {
        "exact": 100.0 * sum(scores[0].get(q, 0.0) for q in qids) / total,
        "f1": 100.0 * sum(scores[1].get(q, 0.0) for q in qids) / total,
        "total": total,
    }


def _best_threshold(predictions, raw, na_probs, has_ans):
    # Sweep the no-answer threshold over the observed probabilities (official `find_best_thresh`).
    num_no_ans = sum(not h for h in has_ans.values())
    score = best = num_no_ans
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in raw:
            continue
        if has_ans[qid]:
            diff = raw[qid]
        else:
            diff = -1 if predictions[qid] else 0
        score += diff
        if score > best:
            best, best_thresh = score, na_probs[qid]
    return 100.0 * best / len(raw), best_thresh


def squad_v2_compute(
    predictions: dict[str, str],
    gold_answers: dict[str, list[str]],
    no_answer_probabilities: dict[str, float] | None = None,
    no_answer_threshold: float = 1.0,
) -> dict[str, float]:
    """Official v2.0 scores (percent) of `{id: text}` predictions against `{id: [answer texts]}` (empty: no answer)."""
    if not gold_answers:
        raise ValueError("no reference questions to score")
    na_probs = {qid: 0.0 for qid in gold_answers}
    na_probs.update(no_answer_probabilities or {})
    # As in the official script, a question is answerable when its answer list is non-empty.
    has_ans = {qid: bool(answers) for qid, answers in gold_answers.items()}
    exact_raw, f1_raw = _scores(predictions, gold_answers)
    exact = _apply_threshold(exact_raw, na_probs, has_ans, no_answer_threshold)
    f1 = _apply_threshold(f1_raw, na_probs, has_ans, no_answer_threshold)
    result = _aggregate((exact, f1), list(gold_answers))
    for name, flag in (("HasAns", True), ("NoAns", False)):
        qids = [q for q, h in has_ans.items() if h == flag]
        if qids:
            result.update({f"{name}_{k}": v for k, v in _aggregate((exact, f1), qids).items()})
    preds = {qid: predictions.get(qid, "") for qid in gold_answers}
    result["best_exact"], result["best_exact_thresh"] = _best_threshold(preds, exact_raw, na_probs, has_ans)
    result["best_f1"], result["best_f1_thresh"] = _best_threshold(preds, f1_raw, na_probs, has_ans)
    return result


class SquadV2(evaluate.Metric):
    """SQuAD v2.0 exact / F1 with HasAns and NoAns breakdowns."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "id": datasets.Value("string"),
                        "prediction_text": datasets.Value("string"),
                        "no_answer_probability": datasets.Value("float32"),
                    },
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.features.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions, references, no_answer_threshold: float = 1.0):
        preds = {p["id"]: p["prediction_text"] for p in predictions}
        probs = {p["id"]: float(p["no_answer_probability"]) for p in predictions}
        gold = {r["id"]: list(r["answers"]["text"]) for r in references}
        return squad_v2_compute(preds, gold, probs, no_answer_threshold)
