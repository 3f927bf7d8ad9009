"""GLUE metrics as an offline `evaluate` module, plus the plain functions the scripts use.

`evaluate.load("glue", task)` fetches a script from the Hub; this file is a drop-in that needs no network:
`evaluate.load("<path>/homodistil_hf/metrics/glue.py", "mrpc")` or `homodistil_hf.metrics.load("glue", "mrpc")`.
Scores are fractions in [0, 1] (or correlations in [-1, 1]), as in the Hub `glue` metric.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

GLUE_METRICS = {
    "cola": ("matthews_correlation",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearmanr"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "hans": ("accuracy",),
}

_DESCRIPTION = "GLUE metrics: accuracy, F1 (mrpc, qqp), Matthews correlation (cola), Pearson and Spearman (stsb)."
_CITATION = """@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={ICLR}, year={2019}}"""
_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted labels (ints), or scores (floats) for stsb.
    references: gold labels (ints), or scores (floats) for stsb.
Returns: a dict with the task's metrics, e.g. {"accuracy": 0.8, "f1": 0.85} for mrpc.
Example:
    >>> metric = evaluate.load("homodistil_hf/metrics/glue.py", "mrpc")
    >>> metric.compute(predictions=[0, 1], references=[0, 1])
    {'accuracy': 1.0, 'f1': 1.0}
"""


def accuracy(predictions, references) -> float:
    """Fraction of predictions equal to the references."""
    return float((np.asarray(predictions) == np.asarray(references)).mean())


def classification_metrics(predictions, references, with_f1: bool = False) -> dict[str, float]:
    """Accuracy, plus binary F1 of the positive class 1 when `with_f1`."""
    result = {"accuracy": accuracy(predictions, references)}
    if with_f1:
        result["f1"] = float(f1_score(y_true=references, y_pred=predictions))
    return result


def regression_metrics(predictions, references) -> dict[str, float]:
    """Pearson and Spearman correlations (the stsb metrics)."""
    predictions = np.asarray(predictions, dtype=np.float64)
    references = np.asarray(references, dtype=np.float64)
    return {
        "pearson": float(pearsonr(predictions, references)[0]),
        "spearmanr": float(spearmanr(predictions, references)[0]),
    }


def glue_compute(task: str, predictions, references) -> dict[str, float]:
    """The official metrics of GLUE task `task` (e.g. 'mrpc': accuracy and F1) for label or score arrays."""
    if task not in GLUE_METRICS:
        raise ValueError(f"unknown GLUE task {task!r}: use one of {', '.join(GLUE_METRICS)}")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if task == "stsb":
        return regression_metrics(predictions, references)
    if task == "cola":
        return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
    return classification_metrics(predictions, references, with_f1=task in ("mrpc", "qqp"))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Glue(evaluate.Metric):
    """GLUE metric; the config name is the task ('cola', 'sst2', 'mrpc', 'qqp', 'stsb', 'mnli', ...)."""

    def _info(self):
        if self.config_name not in GLUE_METRICS:
            raise KeyError(
                f"config name {self.config_name!r} is not a GLUE task: use one of {', '.join(GLUE_METRICS)}"
            )
        dtype = "float32" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            format="numpy",
        )

    def _compute(self, predictions, references):
        return glue_compute(self.config_name, predictions, references)
