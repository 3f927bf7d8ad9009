"""SQuAD v1.1 metric (official exact match and F1, in percent) as an offline `evaluate` module.

Drop-in for the Hub `squad` metric: `evaluate.load("<path>/homodistil_hf/metrics/squad.py")` or
`homodistil_hf.metrics.load("squad")`, with the same inputs:
predictions `[{"id": ..., "prediction_text": ...}]`, references `[{"id": ..., "answers": {"text": [...],
"answer_start": [...]}}]`.
"""

from __future__ import annotations

import datasets
import evaluate

from ._squad_official import exact_match_score, f1_score_v1, max_over_ground_truths

_DESCRIPTION = "SQuAD v1.1: exact match and token F1 after the official normalization, max over ground truths."
_CITATION = """@inproceedings{rajpurkar-etal-2016-squad,
  title={{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text},
  author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle={EMNLP}, year={2016}}"""
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str}.
    references: list of {"id": str, "answers": {"text": list[str], "answer_start": list[int]}}.
Returns: {"exact_match": float, "f1": float}, both in percent (0-100) like the official script.
"""


def squad_compute(predictions: dict[str, str], gold_answers: dict[str, list[str]]) -> dict[str, float]:
    """Official v1.1 EM/F1 (percent) of `{id: text}` predictions against `{id: [answer texts]}`.

    As in the official script, every gold question counts and an unanswered one scores 0.
    """
    if not gold_answers:
        raise ValueError("no reference questions to score")
    exact = f1 = 0.0
    for qid, answers in gold_answers.items():
        if qid not in predictions:
            continue
        exact += max_over_ground_truths(exact_match_score, predictions[qid], answers)
        f1 += max_over_ground_truths(f1_score_v1, predictions[qid], answers)
    return {"exact_match": 100.0 * exact / len(gold_answers), "f1": 100.0 * f1 / len(gold_answers)}


class Squad(evaluate.Metric):
    """SQuAD v1.1 exact match / F1."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.features.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions, references):
        preds = {p["id"]: p["prediction_text"] for p in predictions}
        gold = {r["id"]: list(r["answers"]["text"]) for r in references}
        return squad_compute(preds, gold)
