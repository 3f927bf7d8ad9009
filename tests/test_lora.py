"""LoRA: wrap (head trainable via modules_to_save), merge, save, reload as a plain model with identical outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

from homodistil_hf.cli.run_glue import main as run_glue
from homodistil_hf.cli.run_squad import main as run_squad
from homodistil_hf.errors import UserError
from homodistil_hf.tasks.lora import (
    head_module_names,
    is_peft_model,
    merge_lora,
    resolve_target_modules,
    wrap_with_lora,
)
from homodistil_hf.testing import save_tiny_model, tiny_model, tiny_tokenizer

FAST = [
    "--use_cpu",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--per_device_train_batch_size",
    "8",
    "--seed",
    "0",
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _perturb_adapters(model) -> None:
    # Fresh LoRA B matrices are zero (an exact no-op); random ones make the merge check meaningful.
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.5)


def _inputs():
    tok = tiny_tokenizer()
    return tok(
        ["the man was good", "she had made a little world of people"],
        ["after that year", "who came"],
        padding=True,
        return_tensors="pt",
    )


@pytest.mark.parametrize(
    "head,auto_class,task_type,outputs",
    [
        ("seq_cls", AutoModelForSequenceClassification, "SEQ_CLS", ("logits",)),
        ("qa", AutoModelForQuestionAnswering, "QUESTION_ANS", ("start_logits", "end_logits")),
    ],
)
def test_merge_round_trip_matches_peft_model(tmp_path, head, auto_class, task_type, outputs):
    base = tiny_model(head=head)
    peft_model = wrap_with_lora(base, task_type, r=4, alpha=8, dropout=0.0)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any(head_module_names(tiny_model(head=head))[0] in n for n in trainable)  # the head trains in full
    _perturb_adapters(peft_model)
    peft_model.eval()
    inputs = _inputs()
    with torch.no_grad():
        expected = peft_model(**inputs)
    merged = merge_lora(peft_model)
    assert not is_peft_model(merged)
    merged.save_pretrained(tmp_path / "merged")
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    keys = load_file(tmp_path / "merged" / "model.safetensors").keys()
    assert not any("lora_" in k or "modules_to_save" in k or "base_model.model" in k for k in keys)
    reloaded, info = auto_class.from_pretrained(tmp_path / "merged", output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    reloaded.eval()
    with torch.no_grad():
        got = reloaded(**inputs)
    for name in outputs:
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), atol=1e-5, rtol=0)
    # The adapters really changed the function (otherwise the comparison above proves nothing).
    with torch.no_grad():
        plain = tiny_model(head=head)(**inputs)
    assert not torch.allclose(getattr(plain, outputs[0]), getattr(got, outputs[0]), atol=1e-3)


def test_target_modules_default_and_errors():
    model = tiny_model(head="seq_cls")
    assert resolve_target_modules(model, None) == ["query", "value"]
    assert resolve_target_modules(model, "key, dense") == ["key", "dense"]
    with pytest.raises(UserError, match="--lora_target_modules q_proj matches no linear layer"):
        resolve_target_modules(model, "q_proj")


def test_run_glue_use_lora_saves_a_merged_plain_model(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model", head="seq_cls")
    rows = [("the man was good", "after that year", "1"), ("she had made", "a little world", "0")] * 16
    train = tmp_path / "train.csv"
    with train.open("w", newline="") as f:
        csv.writer(f).writerows([("sentence1", "sentence2", "label"), *rows])
    out = tmp_path / "out"
    results = run_glue(
        [
            "--model_name_or_path",
            str(model_dir),
            "--train_file",
            str(train),
            "--validation_file",
            str(train),
            "--do_train",
            "--do_eval",
            "--use_lora",
            "--lora_r",
            "4",
            "--learning_rate",
            "5e-3",
            "--max_steps",
            "6",
            "--output_dir",
            str(out),
            *FAST,
        ]
    )
    assert "eval_accuracy" in results
    assert not (out / "adapter_config.json").exists() and not (out / "adapter_model.safetensors").exists()
    reloaded, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    before = load_file(model_dir / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert set(before) == set(after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # LoRA on query/value plus the head: exactly those weights moved, the rest of the backbone is untouched.
    assert any("query.weight" in k for k in changed) and any("classifier" in k for k in changed)
    assert all(("query.weight" in k or "value.weight" in k or "classifier" in k) for k in changed)
    # The saved (merged) model predicts what the run evaluated.
    tok = tiny_tokenizer()
    enc = tok([r[0] for r in rows], [r[1] for r in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        preds = reloaded.eval()(**enc).logits.argmax(-1).tolist()
    accuracy = sum(int(p == int(r[2])) for p, r in zip(preds, rows)) / len(rows)
    assert accuracy == pytest.approx(json.loads((out / "eval_results.json").read_text())["eval_accuracy"])


def test_run_squad_use_lora_saves_a_merged_plain_model(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model", head="qa")
    context = "the man was good and she had made a little world of people"
    qas = [
        {"id": str(i), "question": "who was good?", "answers": [{"text": "the man", "answer_start": 0}]}
        for i in range(8)
    ]
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}))
    out = tmp_path / "out"
    results = run_squad(
        [
            "--model_name_or_path",
            str(model_dir),
            "--train_file",
            str(path),
            "--validation_file",
            str(path),
            "--do_train",
            "--do_eval",
            "--use_lora",
            "--max_steps",
            "3",
            "--max_seq_length",
            "64",
            "--doc_stride",
            "16",
            "--output_dir",
            str(out),
            *FAST,
        ]
    )
    assert {"eval_exact_match", "eval_f1"} <= set(results)
    assert not (out / "adapter_config.json").exists()
    _, info = AutoModelForQuestionAnswering.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert Path(out / "eval_predictions.json").is_file()
