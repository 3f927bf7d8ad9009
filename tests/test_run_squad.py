"""run_squad.py and the SQuAD pieces: JSON loading, article splits, windows, n-best decoding, v2, official EM/F1."""

from __future__ import annotations

import collections
import json
import math
import random
import re
import string
from pathlib import Path

import numpy as np
import pytest

from homodistil_hf.cli.run_squad import main
from homodistil_hf.errors import UserError
from homodistil_hf.metrics import squad_v2_compute
from homodistil_hf.tasks.squad import (
    articles_to_dataset,
    load_squad_articles,
    postprocess_predictions,
    prepare_eval_features,
    prepare_train_features,
    split_articles,
)
from homodistil_hf.testing import has_minilm, minilm_path, save_tiny_model, shared_data_dir, tiny_tokenizer

WORDS = "the man was good and she had made a little world of people who came after that year long day".split()
FAST = [
    "--use_cpu",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--per_device_train_batch_size",
    "8",
    "--per_device_eval_batch_size",
    "16",
    "--max_seq_length",
    "64",
    "--doc_stride",
    "24",
    "--seed",
    "0",
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def qa_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("qa") / "model", head="qa")


def make_squad(
    n_articles: int = 4,
    n_paragraphs: int = 2,
    n_questions: int = 3,
    v2: bool = False,
    seed: int = 0,
    context_words: int = 60,
) -> dict:
    """A SQuAD-format dict; with `v2`, every third question is unanswerable (is_impossible, plausible answers)."""
    rng = random.Random(seed)
    data = []
    for a in range(n_articles):
        paragraphs = []
        for p in range(n_paragraphs):
            context = " ".join(rng.choice(WORDS) for _ in range(context_words)) + "."
            qas = []
            for q in range(n_questions):
                qid = f"a{a}p{p}q{q}"
                start_word = rng.randrange(0, context_words - 3)
                words = context.split(" ")
                text = " ".join(words[start_word : start_word + rng.randint(1, 3)]).rstrip(".")
                start = len(" ".join(words[:start_word])) + (1 if start_word else 0)
                assert context[start : start + len(text)] == text
                answer = {"text": text, "answer_start": start}
                if v2 and q % 3 == 2:
                    qas.append(
                        {
                            "id": qid,
                            "question": "who " + text + "?",
                            "answers": [],
                            "is_impossible": True,
                            "plausible_answers": [answer],
                        }
                    )
                else:
                    qas.append(
                        {"id": qid, "question": "what " + text + "?", "answers": [answer]}
                        | ({"is_impossible": False} if v2 else {})
                    )
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": f"article_{a}", "paragraphs": paragraphs})
    return {"version": "v2.0" if v2 else "1.1", "data": data}


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def run(model: Path, out: Path, *args: str) -> dict:
    return main(["--model_name_or_path", str(model), "--output_dir", str(out), *FAST, *args])


# --- an independent re-implementation of the official SQuAD v1.1 evaluation script ---------------------------------


def official_v11(dataset: list[dict], predictions: dict[str, str]) -> dict[str, float]:
    """evaluate-v1.1.py, re-written here on purpose (not importing the package): EM / F1 in percent."""

    def normalize(s: str) -> str:
        s = s.lower()
        s = "".join(ch for ch in s if ch not in set(string.punctuation))
        s = re.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())

    def f1(pred: str, gold: str) -> float:
        p, g = normalize(pred).split(), normalize(gold).split()
        same = sum((collections.Counter(p) & collections.Counter(g)).values())
        if same == 0:
            return 0.0
        precision, recall = same / len(p), same / len(g)
        return 2 * precision * recall / (precision + recall)

    total = exact = f1_sum = 0.0
    for article in dataset:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                golds = [a["text"] for a in qa["answers"]]
                exact += max(float(normalize(predictions[qa["id"]]) == normalize(g)) for g in golds)
                f1_sum += max(f1(predictions[qa["id"]], g) for g in golds)
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1_sum / total}


def test_official_reimplementation_sanity():
    data = [
        {
            "paragraphs": [
                {
                    "qas": [
                        {"id": "1", "answers": [{"text": "The Cat"}]},
                        {"id": "2", "answers": [{"text": "big red dog"}, {"text": "dog"}]},
                    ]
                }
            ]
        }
    ]
    assert official_v11(data, {"1": "cat!", "2": "red dog"}) == pytest.approx({"exact_match": 50.0, "f1": 90.0})


# --- data ----------------------------------------------------------------------------------------------------------


def test_split_articles_is_article_disjoint_and_documented():
    articles = make_squad(n_articles=9)["data"]
    train, evaluation = split_articles(articles, 0.25)
    assert [a["title"] for a in evaluation] == ["article_6", "article_7", "article_8"]  # last ceil(0.25 * 9) = 3
    assert not {a["title"] for a in train} & {a["title"] for a in evaluation}
    assert len(train) + len(evaluation) == 9
    with pytest.raises(UserError, match="--split_articles must be in"):
        split_articles(articles, 1.0)


def test_v2_file_needs_the_v2_flag(tmp_path):
    articles = load_squad_articles(write_json(tmp_path / "v2.json", make_squad(v2=True)), "--validation_file")
    with pytest.raises(UserError, match="has no answer.*--version_2_with_negative"):
        articles_to_dataset(articles, version_2=False, source="x")
    ds = articles_to_dataset(articles, version_2=True, source="x")
    assert sum(len(a["text"]) == 0 for a in ds["answers"]) == 4 * 2 * 1  # plausible answers are not gold


def test_train_windows_point_at_the_answer():
    tok = tiny_tokenizer()
    ds = articles_to_dataset(make_squad(n_articles=2, context_words=80)["data"], version_2=False, source="x")
    enc = prepare_train_features(ds[:], tok, max_seq_length=48, doc_stride=16, pad_to_max_length=False)
    assert len(enc["input_ids"]) > len(ds)  # contexts longer than a window are split
    hits = 0
    for i, (s, e) in enumerate(zip(enc["start_positions"], enc["end_positions"])):
        if s == 0:
            assert e == 0
            continue
        hits += 1
        span = tok.decode(enc["input_ids"][i][s : e + 1])
        assert span.replace(" ", "") in [w.replace(" ", "") for w in _all_answers(ds)]
    assert hits >= len(ds) * 0.8


def _all_answers(ds):
    return [t for a in ds["answers"] for t in a["text"]]


def _oracle_logits(features, examples):
    """Logits that peak on the gold span of every window holding it (CLS elsewhere)."""
    n, length = len(features), max(len(ids) for ids in features["input_ids"])
    start = np.full((n, length), -10.0)
    end = np.full((n, length), -10.0)
    by_id = {ex["id"]: ex for ex in examples}
    for i, (eid, offsets) in enumerate(zip(features["example_id"], features["offset_mapping"])):
        answers = by_id[eid]["answers"]
        start[i, 0] = end[i, 0] = 0.0
        if not answers["text"]:
            start[i, 0] = end[i, 0] = 10.0
            continue
        a0, a1 = answers["answer_start"][0], answers["answer_start"][0] + len(answers["text"][0])
        for k, off in enumerate(offsets):
            if off is not None and off[0] == a0:
                start[i, k] = 10.0
            if off is not None and off[1] == a1:
                end[i, k] = 10.0
    return start, end


@pytest.mark.parametrize("v2", [False, True])
def test_postprocess_recovers_gold_answers_from_oracle_logits(v2):
    tok = tiny_tokenizer()
    examples = articles_to_dataset(make_squad(v2=v2, context_words=90)["data"], version_2=v2, source="x")
    features = examples.map(
        lambda b: prepare_eval_features(b, tok, 48, 16, False), batched=True, remove_columns=examples.column_names
    )
    assert len(features) > len(examples)
    start, end = _oracle_logits(features, examples)
    preds, nbest, null_odds = postprocess_predictions(examples, features, start, end, version_2=v2, n_best_size=5)
    gold = {ex["id"]: ex["answers"]["text"] for ex in examples}
    for qid, answers in gold.items():
        assert preds[qid] == (answers[0] if answers else "")
        assert abs(sum(c["probability"] for c in nbest[qid]) - 1.0) < 1e-6
    if v2:
        assert squad_v2_compute(preds, gold)["exact"] == 100.0
        assert all((null_odds[q] > 0) == (not a) for q, a in gold.items())
        # A huge threshold never predicts "no answer".
        preds_hi, _, _ = postprocess_predictions(
            examples, features, start, end, version_2=True, null_score_diff_threshold=1e9
        )
        assert all(preds_hi.values())
    else:
        assert not null_odds


def test_postprocess_respects_max_answer_length():
    tok = tiny_tokenizer()
    examples = articles_to_dataset(make_squad(n_articles=1, context_words=30)["data"], version_2=False, source="x")
    features = examples.map(
        lambda b: prepare_eval_features(b, tok, 128, 32, False), batched=True, remove_columns=examples.column_names
    )
    start, end = _oracle_logits(features, examples)
    preds, _, _ = postprocess_predictions(examples, features, start, end, max_answer_length=1)
    # Multi-token answers cannot be predicted with max_answer_length=1; every prediction is at most one token.
    assert all(len(tok.tokenize(p)) <= 1 for p in preds.values())


# --- end to end ----------------------------------------------------------------------------------------------------


def test_squad_v2_train_and_eval(tmp_path, qa_model):
    train = write_json(tmp_path / "train.json", make_squad(v2=True, seed=1))
    dev_obj = make_squad(n_articles=2, v2=True, seed=2)
    dev = write_json(tmp_path / "dev.json", dev_obj)
    out = tmp_path / "out"
    results = run(
        qa_model,
        out,
        "--train_file",
        str(train),
        "--validation_file",
        str(dev),
        "--version_2_with_negative",
        "--do_train",
        "--do_eval",
        "--max_steps",
        "3",
    )
    n_questions = 2 * 2 * 3
    assert results["eval_samples"] == n_questions and results["eval_HasAns_total"] == 8
    assert results["eval_NoAns_total"] == 4
    assert {"eval_exact_match", "eval_f1", "eval_HasAns_exact", "eval_NoAns_f1"} <= set(results)
    saved = json.loads((out / "all_results.json").read_text())
    preds = json.loads((out / "eval_predictions.json").read_text())
    nbest = json.loads((out / "eval_nbest_predictions.json").read_text())
    odds = json.loads((out / "eval_null_odds.json").read_text())
    assert (
        set(preds)
        == set(nbest)
        == set(odds)
        == {qa["id"] for a in dev_obj["data"] for p in a["paragraphs"] for qa in p["qas"]}
    )
    assert all((v == "") == (odds[k] > 0.0) for k, v in preds.items())
    gold = {
        qa["id"]: [x["text"] for x in qa["answers"]]
        for a in dev_obj["data"]
        for p in a["paragraphs"]
        for qa in p["qas"]
    }
    recomputed = squad_v2_compute(preds, gold)
    assert saved["eval_exact_match"] == pytest.approx(recomputed["exact"])
    assert saved["eval_NoAns_exact"] == pytest.approx(recomputed["NoAns_exact"])


@pytest.mark.skipif(shared_data_dir() is None, reason="../shared/data (SQuAD v1.1 dev) is not present")
def test_split_articles_run_matches_official_evaluation(tmp_path, qa_model):
    gold_file = shared_data_dir() / "squad_v1.1" / "dev-v1.1.json"
    out = tmp_path / "out"
    run(
        qa_model,
        out,
        "--validation_file",
        str(gold_file),
        "--split_articles",
        "0.05",
        "--do_train",
        "--do_eval",
        "--max_steps",
        "2",
        "--max_train_samples",
        "32",
        "--max_eval_samples",
        "40",
        "--max_seq_length",
        "128",
        "--doc_stride",
        "32",
    )
    check_against_official(out, gold_file, fraction=0.05, max_eval_samples=40)


def check_against_official(out: Path, gold_file: Path, fraction: float, max_eval_samples: int | None) -> dict:
    """Recompute EM/F1 from eval_predictions.json and the gold file; they must match all_results.json within 0.01."""
    articles = json.loads(gold_file.read_text())["data"]
    eval_articles = articles[-math.ceil(fraction * len(articles)) :]  # the documented --split_articles rule
    qids = [qa["id"] for a in eval_articles for p in a["paragraphs"] for qa in p["qas"]][:max_eval_samples]
    keep = set(qids)
    subset = [
        {"paragraphs": [{"qas": [qa for qa in p["qas"] if qa["id"] in keep]} for p in a["paragraphs"]]}
        for a in eval_articles
    ]
    predictions = json.loads((out / "eval_predictions.json").read_text())
    assert set(predictions) == keep
    official = official_v11(subset, predictions)
    saved = json.loads((out / "all_results.json").read_text())
    assert abs(saved["eval_exact_match"] - official["exact_match"]) < 0.01
    assert abs(saved["eval_f1"] - official["f1"]) < 0.01
    return official


@pytest.mark.parametrize(
    "args,match",
    [
        (["--validation_file", "{tmp}/nope.json", "--do_eval"], r"--validation_file .*nope.json does not exist"),
        (["--validation_file", "{tmp}/v2.json", "--do_eval"], r"has no answer .*--version_2_with_negative"),
        (["--validation_file", "{tmp}/bad.json", "--do_eval"], r"bad.json is not a SQuAD file"),
        (
            [
                "--train_file",
                "{tmp}/v2.json",
                "--validation_file",
                "{tmp}/bad.json",
                "--split_articles",
                "0.2",
                "--do_eval",
            ],
            r"--split_articles splits ONE SQuAD JSON",
        ),
        (["--validation_file", "{tmp}/v2.json", "--split_articles", "1.5", "--do_eval"], r"--split_articles must be"),
        (["--validation_file", "{tmp}/v2.json", "--version_2_with_negative", "--do_train"], r"--do_train needs"),
        (["--validation_file", "{tmp}/v2.json", "--doc_stride", "60", "--do_eval"], r"--doc_stride must be"),
        (["--do_eval"], r"Hub dataset rajpurkar/squad could not be loaded.*--validation_file"),
        (["--validation_file", "{tmp}", "--do_eval"], r"--validation_file .* is a directory: pass a SQuAD JSON"),
        (["--validation_file", "{tmp}/binary.json", "--do_eval"], r"--validation_file .*binary.json is not UTF-8"),
        (["--train_file", "{tmp}/v2.json", "--version_2_with_negative", "--do_train", "--max_steps", "-5"],
         r"--max_steps must be a positive number"),
        (["--train_file", "{tmp}/v2.json", "--version_2_with_negative", "--do_train", "--per_device_train_batch_size",
          "0"], r"--per_device_train_batch_size must be >= 1"),
        (["--validation_file", "{tmp}/v2.json", "--do_eval", "--tokenizer_name", "{tmp}/v2.json"],
         r"--tokenizer_name .*v2.json is a file: pass the model folder"),
    ],
)
def test_user_errors_leave_output_dir_untouched(tmp_path, qa_model, args, match):
    write_json(tmp_path / "v2.json", make_squad(v2=True))
    write_json(tmp_path / "bad.json", {"version": "1.1", "articles": []})
    (tmp_path / "binary.json").write_bytes(b'{"data": \x00\xff\xfe}')
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous")
    with pytest.raises(UserError, match=match):
        run(qa_model, out, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "previous"


# --- the must-show run with a real pre-trained model (slow: python -m pytest -m slow) -----------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    not has_minilm() or shared_data_dir() is None, reason="needs all-MiniLM-L6-v2 and shared data"
)
def test_minilm_squad_split_articles(tmp_path):
    gold_file = shared_data_dir() / "squad_v1.1" / "dev-v1.1.json"
    out = tmp_path / "squad"
    flags = (
        "--split_articles 0.1 --max_train_samples 1000 --max_eval_samples 400 --max_seq_length 256 --doc_stride 64 "
        "--do_train --do_eval --num_train_epochs 2 --learning_rate 1e-4 --warmup_steps 0.1 "
        "--per_device_train_batch_size 16 --per_device_eval_batch_size 64 --use_cpu --report_to none "
        "--save_strategy no --seed 42"
    ).split()
    main(["--model_name_or_path", str(minilm_path()), "--validation_file", str(gold_file), "--output_dir", str(out),
          *flags])  # fmt: skip
    official = check_against_official(out, gold_file, fraction=0.1, max_eval_samples=400)
    print(json.dumps(official))
