"""Offline GLUE / SQuAD metrics: hand-computed examples, scikit-learn / scipy on random data, `evaluate.load`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from homodistil_hf.metrics import (
    GLUE_METRICS,
    glue_compute,
    metric_path,
    normalize_answer,
    squad_compute,
    squad_v2_compute,
)


def test_normalize_answer_official_rules():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple, a pear and THE fig.") == "apple pear and fig"
    assert normalize_answer("theory of anarchy") == "theory of anarchy"  # articles only as whole words
    assert normalize_answer("  A  ") == ""


def test_glue_hand_computed():
    preds, refs = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    # TP=2, FP=1, TN=1, FN=1
    mrpc = glue_compute("mrpc", preds, refs)
    assert mrpc["accuracy"] == pytest.approx(3 / 5)
    assert mrpc["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    mcc = (2 * 1 - 1 * 1) / math.sqrt((2 + 1) * (2 + 1) * (1 + 1) * (1 + 1))
    assert glue_compute("cola", preds, refs) == {"matthews_correlation": pytest.approx(mcc)}
    assert set(glue_compute("rte", preds, refs)) == {"accuracy"}
    stsb = glue_compute("stsb", [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.5])
    assert stsb["spearmanr"] == pytest.approx(1.0)
    assert 0.99 < stsb["pearson"] < 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_glue_matches_sklearn_scipy_on_random_data(seed):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, 2, size=200)
    preds = np.where(rng.random(200) < 0.7, refs, 1 - refs)
    result = glue_compute("qqp", preds, refs)
    assert result["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    assert result["f1"] == pytest.approx(f1_score(refs, preds))
    assert glue_compute("cola", preds, refs)["matthews_correlation"] == pytest.approx(matthews_corrcoef(refs, preds))
    refs3 = rng.integers(0, 3, size=200)
    preds3 = rng.integers(0, 3, size=200)
    assert glue_compute("mnli", preds3, refs3)["accuracy"] == pytest.approx(accuracy_score(refs3, preds3))
    x = rng.normal(size=300)
    y = x + rng.normal(scale=0.8, size=300)
    stsb = glue_compute("stsb", x, y)
    assert stsb["pearson"] == pytest.approx(pearsonr(x, y)[0])
    assert stsb["spearmanr"] == pytest.approx(spearmanr(x, y)[0])


def test_glue_rejects_unknown_task_and_length_mismatch():
    with pytest.raises(ValueError, match="unknown GLUE task"):
        glue_compute("squad", [0], [0])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        glue_compute("sst2", [0, 1], [0])


def test_squad_v1_hand_computed():
    gold = {"q1": ["Eiffel Tower"], "q2": ["Paris"], "q3": ["London", "in London"], "q4": ["red"]}
    preds = {"q1": "the Eiffel Tower", "q2": "in Paris France", "q3": "London bridge"}  # q4 unanswered: scores 0
    result = squad_compute(preds, gold)
    assert result["exact_match"] == pytest.approx(100 * 1 / 4)
    # q2: P=1/3, R=1 -> 0.5; q3: vs "London" P=1/2 R=1 -> 2/3, vs "in London" P=1/2 R=1/2 -> 1/2; max 2/3
    assert result["f1"] == pytest.approx(100 * (1 + 0.5 + 2 / 3 + 0) / 4)


def test_squad_v2_hand_computed_and_thresholds():
    gold = {"a1": ["blue sky"], "a2": ["cats"], "n1": [], "n2": []}
    preds = {"a1": "the blue sky", "a2": "dogs", "n1": "", "n2": "something"}
    result = squad_v2_compute(preds, gold)
    assert result["total"] == 4
    assert result["HasAns_total"] == 2 and result["NoAns_total"] == 2
    assert result["HasAns_exact"] == pytest.approx(50.0)
    assert result["NoAns_exact"] == pytest.approx(50.0)
    assert result["exact"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(50.0)
    # A high no-answer probability on the wrong answers and on n2 makes them "no answer" past the threshold.
    probs = {"a1": 0.1, "a2": 0.9, "n1": 0.2, "n2": 0.8}
    thresholded = squad_v2_compute(preds, gold, probs, no_answer_threshold=0.5)
    assert thresholded["exact"] == pytest.approx(100 * (1 + 0 + 1 + 1) / 4)
    assert thresholded["NoAns_exact"] == pytest.approx(100.0)
    assert result["best_exact"] >= result["exact"]
    best = squad_v2_compute(preds, gold, probs)
    assert best["best_exact"] == pytest.approx(75.0)
    # Sorted by probability: a1 (right, +1) then n1 (empty, 0), n2 (-1), a2 (0): the best cut is after a1.
    assert best["best_exact_thresh"] == pytest.approx(0.1)


def test_squad_v2_only_answerable_equals_v1_on_nonempty_predictions():
    gold = {"q1": ["alpha beta"], "q2": ["gamma"]}
    preds = {"q1": "beta alpha delta", "q2": "gamma"}
    v1, v2 = squad_compute(preds, gold), squad_v2_compute(preds, gold)
    assert v2["exact"] == pytest.approx(v1["exact_match"]) and v2["f1"] == pytest.approx(v1["f1"])
    assert "NoAns_total" not in v2


_OFFLINE_LOAD = r"""
import json, sys, evaluate
paths = json.loads(sys.argv[1])
out = {}
out["mrpc"] = evaluate.load(paths["glue"], "mrpc").compute(predictions=[1, 1, 0, 0, 1], references=[1, 0, 0, 1, 1])
out["stsb"] = evaluate.load(paths["glue"], "stsb").compute(predictions=[1.0, 2.0, 3.5], references=[1.5, 2.0, 3.0])
ref = [{"id": "q1", "answers": {"text": ["Paris"], "answer_start": [0]}},
       {"id": "q2", "answers": {"text": [], "answer_start": []}}]
out["squad"] = evaluate.load(paths["squad"]).compute(
    predictions=[{"id": "q1", "prediction_text": "in Paris"}], references=ref[:1])
out["squad_v2"] = evaluate.load(paths["squad_v2"]).compute(
    predictions=[{"id": "q1", "prediction_text": "Paris", "no_answer_probability": 0.0},
                 {"id": "q2", "prediction_text": "x", "no_answer_probability": 0.0}], references=ref)
print(json.dumps(out))
"""


def test_evaluate_load_of_module_files_works_offline(tmp_path):
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_MODULES_CACHE=str(tmp_path / "modules"),
        HF_HOME=str(tmp_path / "hf_home"),
    )
    paths = {name: str(metric_path(name)) for name in ("glue", "squad", "squad_v2")}
    proc = subprocess.run(
        [sys.executable, "-c", _OFFLINE_LOAD, json.dumps(paths)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["mrpc"] == pytest.approx(glue_compute("mrpc", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]))
    assert out["stsb"] == pytest.approx(glue_compute("stsb", [1.0, 2.0, 3.5], [1.5, 2.0, 3.0]))
    assert out["squad"] == pytest.approx({"exact_match": 0.0, "f1": 100 * 2 * 0.5 / 1.5})
    assert out["squad_v2"]["HasAns_exact"] == 100.0 and out["squad_v2"]["NoAns_exact"] == 0.0
    assert (tmp_path / "modules").is_dir()  # the scripts really went through evaluate's module loader


def test_load_helper_rejects_unknown_metric():
    from homodistil_hf.metrics import load

    with pytest.raises(ValueError, match="unknown metric"):
        load("bleu")
    assert set(GLUE_METRICS) >= {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}
