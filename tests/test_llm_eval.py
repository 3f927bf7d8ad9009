"""lm-evaluation-harness on a tiny random Llama saved to a folder and a local multiple-choice task (offline), checked
against log-likelihoods computed by hand; held-out perplexity against cross-entropy computed by hand."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from homodistil_hf.errors import UserError
from homodistil_hf.llm_eval import (
    model_index,
    perplexity,
    results_markdown,
    run_lm_eval,
    squad_mc_examples,
    write_mc_task,
)
from homodistil_hf.testing import shared_data_dir
from homodistil_hf.testing_chat import save_tiny_chat_decoder

SQUAD = (shared_data_dir() or Path("/nonexistent")) / "squad_v1.1" / "dev-v1.1.json"
EXAMPLES = [
    {"question": "Where does the river flow?", "choices": ["to the sea", "north", "in 1850"], "label": 0},
    {"question": "When was the city founded?", "choices": ["the river", "in 1850", "the sea", "how"], "label": 1},
    {"context": "The river flows to the sea.", "question": "What flows?", "choices": ["the city", "the river"],
     "label": 1},
    {"question": "Who are you?", "choices": ["a passage", "an answer", "the question"], "label": 2},
    {"question": "What is the answer?", "choices": ["in the passage", "there"], "label": 0},
]


# lm-eval is an extra (pip install "homodistil_hf[lm-eval]"; .ci/run installs it): its own tests skip without it.
needs_lm_eval = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_chat_decoder(tmp_path_factory.mktemp("tiny_llama"))


def by_hand_accuracy(folder, task):
    """Accuracy from the summed log-probability of " choice" after the prompt, token by token."""
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    right = 0
    for doc in map(json.loads, (task / "homodistil_mc.jsonl").read_text().splitlines()):
        context = tokenizer(doc["prompt"])["input_ids"]
        scores = []
        for choice in doc["choices"]:
            cont = tokenizer(" " + choice)["input_ids"]
            with torch.no_grad():
                logp = model(torch.tensor([context + cont])).logits[0].log_softmax(-1)
            scores.append(sum(logp[len(context) - 1 + i, t].item() for i, t in enumerate(cont)))
        right += max(range(len(scores)), key=scores.__getitem__) == doc["label"]
    return right / len(EXAMPLES)


@needs_lm_eval
def test_lm_eval_local_task(tiny, tmp_path):
    name = write_mc_task(tmp_path / "tasks", EXAMPLES)
    results = run_lm_eval(str(tiny), [name], include_path=tmp_path / "tasks", batch_size=2)
    row = results[name]
    assert row["samples"] == len(EXAMPLES)
    assert 0 <= row["acc"] <= 1 and row["acc"] * len(EXAMPLES) == round(row["acc"] * len(EXAMPLES))
    assert row["acc"] == pytest.approx(by_hand_accuracy(tiny, tmp_path / "tasks"))
    assert run_lm_eval(str(tiny), [name], include_path=tmp_path / "tasks", limit=2)[name]["samples"] == 2


@needs_lm_eval
def test_lm_eval_task_errors(tiny, tmp_path):
    write_mc_task(tmp_path / "tasks", EXAMPLES)
    with pytest.raises(UserError, match=rf"'no_such_task' is not an lm-eval task \(nor in the include path "
                                        rf"{tmp_path / 'tasks'}\)"):
        run_lm_eval(str(tiny), ["no_such_task"], include_path=tmp_path / "tasks")
    with pytest.raises(UserError, match="holds no model"):
        run_lm_eval(str(tmp_path), ["homodistil_mc"], include_path=tmp_path / "tasks")


def test_lm_eval_errors(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    with pytest.raises(UserError, match=r'pip install "homodistil_hf\[lm-eval\]"'):
        run_lm_eval(str(tiny), ["homodistil_mc"])
    with pytest.raises(UserError, match="label 3 is not an index"):
        write_mc_task(tmp_path / "bad", [{"question": "q", "choices": ["a", "b"], "label": 3}])


@pytest.mark.parametrize("block", [5, 16])
def test_perplexity_by_hand(tiny, tmp_path, block):
    lines = ["The river flows to the sea.", "", "The city was founded in 1850, in the north.", "How are you?"]
    (tmp_path / "held_out.txt").write_text("\n".join(lines) + "\n")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny).eval(), AutoTokenizer.from_pretrained(tiny)
    # The corpus is read line by line with its line breaks (as training corpora are); blank lines are skipped.
    ids = [t for line in lines if line for t in tokenizer(line + "\n")["input_ids"]]
    nll, count = 0.0, 0
    for i in range(0, len(ids), block):
        piece = torch.tensor([ids[i:i + block]])
        with torch.no_grad():
            logp = model(piece).logits[0].log_softmax(-1)
        nll -= sum(logp[t, piece[0, t + 1]].item() for t in range(piece.shape[1] - 1))
        count += piece.shape[1] - 1
    got = perplexity(model, tokenizer, tmp_path / "held_out.txt", max_seq_length=block, batch_size=2)
    assert len(ids) % block != 0  # a shorter last block, padded in its batch
    assert got == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_perplexity_assistant_only(tiny, tmp_path):
    """On conversational data with the assistant-only mask, only the assistant's tokens are targets."""
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny).eval(), AutoTokenizer.from_pretrained(tiny)
    chat = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"}]
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": chat}) + "\n")
    enc = tokenizer.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
    ids, keep = enc["input_ids"], enc["assistant_masks"]
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    targets = [t for t in range(1, len(ids)) if keep[t]]
    want = math.exp(-sum(logp[t - 1, ids[t]].item() for t in targets) / len(targets))
    got = perplexity(model, tokenizer, tmp_path / "chat.jsonl", 64, assistant_only_loss=True)
    assert got == pytest.approx(want, rel=1e-5)
    assert got != pytest.approx(perplexity(model, tokenizer, tmp_path / "chat.jsonl", 64), rel=1e-3)


def test_results_markdown_and_model_index():
    from huggingface_hub.repocard_data import model_index_to_eval_results

    teacher = {"mc": {"acc": 0.75, "acc_stderr": 0.05, "samples": 40}, "ppl": {"perplexity": 12.5}}
    student = {"mc": {"acc": 0.5, "acc_stderr": 0.1, "samples": 40}}
    table = results_markdown(teacher, student).splitlines()
    assert table[2:] == ["| mc | acc | 0.7500 ± 0.0500 | 0.5000 ± 0.1000 |", "| ppl | perplexity | 12.5000 | - |"]
    name, evals = model_index_to_eval_results(model_index(teacher, "my-student"))
    assert name == "my-student"
    assert sorted((e.dataset_name, e.metric_type, e.metric_value) for e in evals) == [("mc", "acc", 0.75),
                                                                                       ("ppl", "perplexity", 12.5)]


@pytest.mark.skipif(not SQUAD.is_file(), reason=f"SQuAD v1.1 dev not at {SQUAD}")
def test_squad_mc_examples():
    data = json.loads(SQUAD.read_text())["data"]
    title = data[0]["title"]
    examples = squad_mc_examples(SQUAD, [title], n_choices=4)
    qas = [qa for p in data[0]["paragraphs"] for qa in p["qas"]]
    answers = {}  # a question asked twice (two paragraphs) has the answers of both
    for qa in qas:
        answers.setdefault(qa["question"], set()).update(a["text"].strip() for a in qa["answers"])
    assert len(examples) == len(qas)
    for e in examples:
        assert len(e["choices"]) == len(set(e["choices"])) == 4
        assert e["choices"][e["label"]] in answers[e["question"]]
        assert any(e["context"] == p["context"] for p in data[0]["paragraphs"])  # the passage is given


def test_perplexity_without_packing_scores_each_row_on_its_own(tiny, tmp_path):
    """`packing=False`: every row is its own block (truncated), so no row's tokens are predicted from another's."""
    lines = ["The river flows to the sea.", "The city was founded in 1850, in the north.", "How are you?"]
    (tmp_path / "held_out.txt").write_text("\n".join(lines) + "\n")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny).eval(), AutoTokenizer.from_pretrained(tiny)
    total, count = 0.0, 0
    for line in lines:
        ids = torch.tensor([tokenizer(line + "\n")["input_ids"][:6]])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    got = perplexity(model, tokenizer, tmp_path / "held_out.txt", 6, batch_size=2, packing=False)
    assert got == pytest.approx(math.exp(total / count), rel=1e-5)
    assert got != pytest.approx(perplexity(model, tokenizer, tmp_path / "held_out.txt", 6, batch_size=2), rel=1e-3)
