"""The decoder user's path through `run_distill.py` and `HomoDistilTrainer`: logit terms from hidden states (equal to
materialised logits), conversational data with assistant-only losses, lm-eval and perplexity of teacher and student
in all_results.json and the model card, and a GGUF file beside the export."""

import importlib.util
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import homodistil_hf.cli.run_distill as run_distill
from homodistil_hf import HomoDistilConfig, HomoDistilTrainer
from homodistil_hf.data import CausalLMCollator, kd_positions, load_raw, pack_blocks
from homodistil_hf.llm_eval import write_mc_task
from homodistil_hf.losses import kd_logits_loss_chunked
from homodistil_hf.testing import tiny_decoder, write_corpus
from homodistil_hf.testing_chat import save_tiny_chat_decoder

CONVERSATIONS = [
    {"messages": [{"role": "user", "content": f"Where does river {i} flow?"},
                  {"role": "assistant", "content": f"River {i} flows to the sea."}]}
    for i in range(24)
]


@pytest.fixture(scope="module")
def chat_teacher(tmp_path_factory):
    return save_tiny_chat_decoder(tmp_path_factory.mktemp("teacher"))


def _chat_batches(folder, tmp_path, n=4):
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(c) for c in CONVERSATIONS) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    raw = load_raw(train_file=str(tmp_path / "chat.jsonl"))
    rows = pack_blocks(raw, tokenizer, 32, packing=False, assistant_only_loss=True)["train"]
    collate = CausalLMCollator(tokenizer, max_length=32)
    return tokenizer, [collate([rows[i] for i in range(j, j + n)]) for j in range(0, 2 * n, n)]


def _trainer(folder, tmp_path, name, **flags):
    teacher = AutoModelForCausalLM.from_pretrained(folder)
    args = HomoDistilConfig(output_dir=str(tmp_path / name), report_to="none", use_cpu=True, max_steps=2,
                            per_device_train_batch_size=4, learning_rate=1e-3, save_strategy="no", seed=0,
                            kd_chunk_size=7, **{"alpha_hidden": 0.5, **flags})
    return HomoDistilTrainer(teacher=teacher, args=args)


@pytest.mark.parametrize("kind", ["forward_kl", "jsd"])
def test_logits_from_hidden_equal_materialised_logits(chat_teacher, tmp_path, kind):
    """One step's loss, every term and every gradient are the same from hidden states as from full logits, with
    assistant-only masks (the KD term counts position t when token t + 1 is an assistant token)."""
    _, batches = _chat_batches(chat_teacher, tmp_path)
    results = {}
    for fused in (True, False):
        trainer = _trainer(chat_teacher, tmp_path, f"f{fused}", logits_from_hidden=fused, kd_loss=kind,
                           assistant_only_loss=True)
        model = trainer.model.train()
        trainer._window = None
        model.zero_grad()
        loss = trainer.compute_loss(model, batches[0])
        loss.backward()
        terms = trainer._flush("train", 1)
        results[fused] = (loss.item(), terms, {n: p.grad.clone() for n, p in model.named_parameters()})
    (a, terms_a, grads_a), (b, terms_b, grads_b) = results[True], results[False]
    assert a == pytest.approx(b, rel=1e-5) and set(terms_a) == {"loss_mlm", "loss_pred", "loss_hidden"}
    assert all(terms_a[k] == pytest.approx(terms_b[k], rel=1e-5, abs=1e-7) for k in terms_a)
    for name, g in grads_a.items():
        assert torch.allclose(g, grads_b[name], rtol=1e-4, atol=1e-6), name


def test_assistant_only_kd_counts_the_masked_targets(chat_teacher, tmp_path):
    """loss_pred = T^2 KL over exactly the positions whose next token is an assistant token, divided by their count."""
    _, batches = _chat_batches(chat_teacher, tmp_path)
    batch = batches[0]
    trainer = _trainer(chat_teacher, tmp_path, "mask", assistant_only_loss=True, alpha_hidden=0.0)
    trainer.model.train()
    trainer._window = None
    student = trainer.model
    with torch.no_grad():  # the student is still an exact copy: perturb it so the divergence is not 0
        for p in student.parameters():
            p.add_(0.01 * torch.randn_like(p))
    trainer.compute_loss(student, batch)
    got = trainer._flush("train", 1)["loss_pred"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        s, t = student(**inputs).logits, trainer.teacher(**inputs).logits
    mask = kd_positions(batch["labels"])
    assert 0 < mask.sum() < batch["attention_mask"].sum()  # prompts excluded, not everything
    want = kd_logits_loss_chunked(s, t, 2.0, mask, "sum") / mask.sum()
    assert got == pytest.approx(want.item(), rel=1e-4)  # (a small KL: fp32 matmul order shows at 1e-5)


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed (an extra)")
def test_run_distill_chat_eval_tasks_and_gguf(chat_teacher, tmp_path):
    """Chat data in, lm-eval (a local task) and perplexity of teacher and student in all_results.json and the model
    card, and a GGUF file beside the export that transformers loads back."""
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(c) for c in CONVERSATIONS) + "\n")
    (tmp_path / "held.jsonl").write_text("\n".join(json.dumps(c) for c in CONVERSATIONS[:6]) + "\n")
    task = write_mc_task(tmp_path / "tasks", [
        {"question": "Where does the river flow?", "choices": ["to the sea", "north"], "label": 0},
        {"question": "What flows?", "choices": ["the city", "the river", "the sea"], "label": 1},
    ])
    out = tmp_path / "out"
    metrics = run_distill.main([
        "--teacher_name_or_path", str(chat_teacher), "--train_file", str(tmp_path / "chat.jsonl"),
        "--validation_file", str(tmp_path / "held.jsonl"), "--output_dir", str(out), "--max_steps", "4",
        "--per_device_train_batch_size", "4", "--max_seq_length", "32", "--no-packing", "--assistant_only_loss",
        "--target_hidden_size", "32", "--target_intermediate_size", "64", "--prune_every", "1",
        "--eval_tasks", task, "--eval_tasks_include_path", str(tmp_path / "tasks"), "--export_gguf", "f32",
        "--report_to", "none", "--use_cpu", "--save_strategy", "no", "--learning_rate", "1e-3"])
    results = json.loads((out / "all_results.json").read_text())
    for who in ("teacher", "student"):
        assert 0 <= results[f"{who}_{task}_acc"] <= 1 and results[f"{who}_{task}_samples"] == 2
        assert results[f"{who}_validation_perplexity"] > 1
        assert metrics[f"{who}_{task}_acc"] == results[f"{who}_{task}_acc"]
    card = (out / "README.md").read_text()
    assert "## Evaluation" in card and "model-index:" in card.split("---")[1] and task in card
    student = AutoModelForCausalLM.from_pretrained(out).eval()
    assert student.config.hidden_size == 32
    loaded = AutoModelForCausalLM.from_pretrained(out, gguf_file=f"{out.name}-f32.gguf").eval()
    ids = torch.tensor([[3, 5, 7, 9, 11]])
    with torch.no_grad():
        assert torch.allclose(student(ids).logits, loaded(ids).logits, atol=1e-5)


def test_llm_flags_are_refused_for_encoders(tmp_path):
    from homodistil_hf.errors import UserError
    from homodistil_hf.testing import save_tiny_model

    teacher = save_tiny_model(tmp_path / "bert")
    corpus = write_corpus(tmp_path / "c.txt")
    with pytest.raises(UserError, match="--assistant_only_loss is for causal-LM"):
        run_distill.main(["--teacher_name_or_path", str(teacher), "--train_file", str(corpus), "--output_dir",
                          str(tmp_path / "o"), "--assistant_only_loss", "--use_cpu", "--max_steps", "2"])
    assert not (tmp_path / "o").exists()


def test_fused_path_trains_like_materialised(tmp_path):
    """Two optimizer steps with gradient accumulation: the same weights from hidden states as from logits."""
    teacher = tiny_decoder("llama", tie=False)
    ids = torch.randint(3, teacher.config.vocab_size, (16, 12), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": r, "attention_mask": torch.ones_like(r), "labels": r} for r in ids]
    weights = []
    for fused in (True, False):
        args = HomoDistilConfig(output_dir=str(tmp_path / f"o{fused}"), report_to="none", use_cpu=True, max_steps=2,
                                per_device_train_batch_size=4, gradient_accumulation_steps=2, learning_rate=1e-3,
                                save_strategy="no", seed=0, logits_from_hidden=fused, kd_chunk_size=5)
        trainer = HomoDistilTrainer(teacher=teacher, args=args, train_dataset=data)
        trainer.train()
        weights.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    for name, w in weights[0].items():
        assert torch.allclose(w, weights[1][name], atol=1e-5), name
