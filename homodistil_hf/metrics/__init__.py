"""Offline evaluation metrics: GLUE, SQuAD v1.1 and SQuAD v2.0.

Each of `glue.py`, `squad.py`, `squad_v2.py` is an `evaluate.Metric` script that `evaluate.load(<file>, config)` loads
with no network; `load(name, config)` does that for you. The plain functions (`glue_compute`, `squad_compute`,
`squad_v2_compute`) compute the same numbers without `evaluate`.
"""

from __future__ import annotations

from pathlib import Path

from ._squad_official import normalize_answer
from .glue import GLUE_METRICS, glue_compute
from .squad import squad_compute
from .squad_v2 import squad_v2_compute

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("glue", "squad", "squad_v2")

__all__ = [
    "GLUE_METRICS",
    "METRIC_NAMES",
    "glue_compute",
    "load",
    "metric_path",
    "normalize_answer",
    "squad_compute",
    "squad_v2_compute",
]


def metric_path(name: str) -> Path:
    """Path of the `evaluate` script of metric `name` ('glue', 'squad' or 'squad_v2')."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}: use one of {', '.join(METRIC_NAMES)}")
    return METRICS_DIR / f"{name}.py"


def load(name: str, config_name: str | None = None, **kwargs):
    """`evaluate.load` of the offline metric `name` (e.g. `load("glue", "mrpc")`), never touching the Hub."""
    import evaluate

    return evaluate.load(str(metric_path(name)), config_name, **kwargs)
