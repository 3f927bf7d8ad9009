"""HomoDistilTrainer integration on tiny models: the loss terms, gradient accumulation, pruning and export."""

import json

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForMaskedLM, AutoTokenizer, default_data_collator

from homodistil_hf import HomoDistilConfig, HomoDistilTrainer
from homodistil_hf.errors import UserError
from homodistil_hf.testing import tiny_model


def _dataset(n=8, length=16, vocab=200, seed=0, ragged=True):
    """Pre-masked MLM examples (fixed labels, so every batching sees the same targets), with ragged padding."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        ids = torch.randint(5, vocab, (length,), generator=g)
        real = length - (i % 4) * 3 if ragged else length
        mask = (torch.arange(length) < real).long()
        labels = torch.full((length,), -100)
        pick = torch.randperm(real, generator=g)[: max(1, real // 5)]
        labels[pick] = ids[pick]
        ids[pick] = 4  # [MASK]
        ids[real:] = 0
        rows.append({"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist()})
    return Dataset.from_list(rows)


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
                max_steps=1, per_device_train_batch_size=8, learning_rate=0.1, optim="sgd", seed=0,
                lr_scheduler_type="constant", max_grad_norm=0.0, disable_tqdm=True)
    base.update(kw)
    return HomoDistilConfig(**base)


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    teacher = tiny_model("bert", "mlm", seed=0)
    student = tiny_model("bert", "mlm", seed=1).train()  # differs from the teacher, so every term is non-zero
    data = _dataset()
    results = []
    for bs, ga in ((8, 1), (4, 2), (2, 4)):
        s = tiny_model("bert", "mlm", seed=1).train()
        trainer = HomoDistilTrainer(model=s, teacher=teacher, args=_args(tmp_path / f"{bs}", per_device_train_batch_size=bs,
                                    gradient_accumulation_steps=ga), train_dataset=data,
                                    data_collator=default_data_collator)
        trainer.train()
        log = trainer.state.log_history[0]
        results.append((log, {n: p.detach().clone() for n, p in s.named_parameters()}))
    ref_log, ref_params = results[0]
    assert all(ref_log[k] > 0 for k in ("loss_mlm", "loss_pred", "loss_hidden", "loss_attn"))
    for log, params in results[1:]:
        for k in ("loss", "loss_mlm", "loss_pred", "loss_hidden", "loss_attn"):
            assert log[k] == pytest.approx(ref_log[k], rel=1e-5), k
        for name, value in params.items():
            assert torch.allclose(value, ref_params[name], atol=1e-6), name
    assert student is not None


def test_terms_are_zero_for_an_identical_student_and_grow(tmp_path):
    teacher = tiny_model("bert", "mlm")
    trainer = HomoDistilTrainer(teacher=teacher, args=_args(tmp_path, max_steps=4, learning_rate=1.0,
                                                            per_device_train_batch_size=4),
                                train_dataset=_dataset(16), data_collator=default_data_collator)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [logs[0][k] for k in ("loss_pred", "loss_hidden", "loss_attn")] == [0.0, 0.0, 0.0]
    assert all(logs[-1][k] > 0 for k in ("loss_pred", "loss_hidden", "loss_attn"))
    assert logs[0]["loss"] == pytest.approx(logs[0]["loss_mlm"])


def test_pruning_run_exports_a_stock_smaller_model(tmp_path, tiny_mlm_teacher):
    tokenizer = AutoTokenizer.from_pretrained(tiny_mlm_teacher)
    args = _args(tmp_path / "out", max_steps=30, per_device_train_batch_size=4, learning_rate=1e-3, optim="adamw_torch",
                 target_hidden_size=32, target_num_attention_heads=2, target_intermediate_size=48, prune_every=3,
                 logging_steps=5, teacher_name_or_path=str(tiny_mlm_teacher))
    trainer = HomoDistilTrainer(args=args, train_dataset=_dataset(40), data_collator=default_data_collator,
                                processing_class=tokenizer)
    trainer.train()
    trainer.save_model()
    logs = [h for h in trainer.state.log_history if "sparsity" in h]
    sparsity = [h["sparsity"] for h in logs]
    assert sparsity == sorted(sparsity) and sparsity[-1] > 0.5
    assert logs[-1]["width_hidden"] == 32 and logs[-1]["width_ffn"] == 48
    model, info = AutoModelForMaskedLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert (model.config.hidden_size, model.config.num_attention_heads, model.config.intermediate_size) == (32, 2, 48)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    card = (tmp_path / "out" / "README.md").read_text()
    # The teacher by its folder's name (it has no Hub id), not by a path on this machine.
    assert "homodistil" in card and f"`{tiny_mlm_teacher.name}`" in card and str(tiny_mlm_teacher) not in card
    meta = json.loads((tmp_path / "out" / "homodistil.json").read_text())
    assert meta["teacher"] == tiny_mlm_teacher.name
    assert meta["shape"] == {"hidden": 32, "heads": 2, "head_dim": 16, "intermediate": 48}
    assert meta["params"] < meta["teacher_params"]
    assert not (tmp_path / "out" / "training_args.bin").exists()


def test_a_batch_without_masked_tokens_adds_zero_mlm_loss(tmp_path):
    """A batch in which no token is masked (a short batch at 15% masking can have none): the model's own MLM loss
    is its mean over zero labels, NaN. The batch adds 0 to that term, with zero (not NaN) gradients, and training
    goes on instead of stopping as non-finite."""
    unlabelled = _dataset(8).map(lambda ex: {"labels": [-100] * len(ex["labels"])})
    trainer = HomoDistilTrainer(teacher=tiny_model("bert", "mlm"), args=_args(tmp_path, max_steps=2,
                                per_device_train_batch_size=4), train_dataset=unlabelled,
                                data_collator=default_data_collator)
    model = trainer.model.train()
    batch = default_data_collator([unlabelled[i] for i in range(4)])
    assert torch.isnan(model(**batch).loss)  # the model's own mean: what the trainer must not pass on
    loss = trainer.compute_loss(model, batch)
    assert torch.isfinite(loss)
    assert trainer._metrics["train"]["loss_mlm"].item() == 0.0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.zero_grad()
    trainer._metrics["train"] = {}
    trainer.train()  # two optimizer steps on batches with no labels at all: no "non-finite" stop
    logged = [h for h in trainer.state.log_history if "loss_mlm" in h]
    assert len(logged) == 2 and all(h["loss_mlm"] == 0.0 for h in logged)


def test_export_refuses_a_student_short_of_its_targets(tmp_path):
    """Pruning that ends after the last step (here the schedule's end is step 50 of a 2-step run) leaves a student
    that is not the target shape: the export refuses it with one line instead of writing it as the result."""
    args = _args(tmp_path / "out", max_steps=2, per_device_train_batch_size=4, target_hidden_size=32,
                 target_num_attention_heads=2, target_intermediate_size=48, prune_every=1, prune_end=50)
    trainer = HomoDistilTrainer(teacher=tiny_model("bert", "mlm"), args=args, train_dataset=_dataset(8),
                                data_collator=default_data_collator)
    trainer.train()
    assert not trainer.pruner.done
    with pytest.raises(UserError, match=r"not exported: training stopped at step 2 before pruning reached the "
                                        r"targets .*lower --prune_end or raise --max_steps"):
        trainer.save_model()
    assert not (tmp_path / "out" / "model.safetensors").exists() and not (tmp_path / "out" / "config.json").exists()


def test_masks_and_physical_pruning_train_the_same_student(tmp_path):
    teacher = tiny_model("bert", "mlm")
    outputs = {}
    for mode in ("physical", "masks"):
        args = _args(tmp_path / mode, max_steps=12, per_device_train_batch_size=4, learning_rate=1e-3,
                     optim="adamw_torch", target_hidden_size=48, target_num_attention_heads=3,
                     target_intermediate_size=64, prune_every=2, pruning_mode=mode)
        trainer = HomoDistilTrainer(teacher=teacher, args=args, train_dataset=_dataset(48),
                                    data_collator=default_data_collator)
        trainer.train()
        compact = trainer.export(tmp_path / mode / "export")
        outputs[mode] = (trainer.pruner.state, compact(input_ids=torch.tensor([[5, 9, 20, 31, 4]])).logits)
    assert outputs["physical"][0].equals(outputs["masks"][0])
    assert (outputs["physical"][1] - outputs["masks"][1]).abs().max() < 1e-4


def test_teacher_without_mlm_head(tmp_path, caplog):
    teacher = tiny_model("bert", "base")
    data = _dataset(8).remove_columns(["labels"])
    trainer = HomoDistilTrainer(teacher=teacher, args=_args(tmp_path, max_steps=2, per_device_train_batch_size=4),
                                train_dataset=data, data_collator=default_data_collator)
    with caplog.at_level("WARNING"):
        trainer.train()
    assert "no prediction head" in caplog.text
    log = trainer.state.log_history[0]
    assert "loss_pred" not in log and "loss_mlm" not in log and log["loss_hidden"] == 0.0

    # A student with an MLM head still gets the MLM term from a head-less teacher.
    student = AutoModelForMaskedLM.from_config(teacher.config)
    student.base_model.load_state_dict(teacher.state_dict(), strict=False)
    trainer = HomoDistilTrainer(model=student, teacher=teacher, args=_args(tmp_path / "mlm", max_steps=1),
                                train_dataset=_dataset(8), data_collator=default_data_collator)
    trainer.train()
    assert trainer.state.log_history[0]["loss_mlm"] > 0


def test_trainer_argument_errors(tmp_path):
    with pytest.raises(UserError, match="HomoDistilConfig"):
        from transformers import TrainingArguments

        HomoDistilTrainer(teacher=tiny_model(), args=TrainingArguments(output_dir=str(tmp_path)))
    with pytest.raises(UserError, match="no teacher"):
        HomoDistilTrainer(args=_args(tmp_path))
    with pytest.raises(UserError, match="--hidden_projection"):
        HomoDistilTrainer(model=tiny_model(hidden_size=32, num_attention_heads=2), teacher=tiny_model(),
                          args=_args(tmp_path))


def test_push_to_hub_uploads_the_compact_export(tmp_path, monkeypatch, tiny_mlm_teacher):
    """No network: the Hub client is replaced by a recorder; what would be uploaded is checked."""
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["repo"] = repo_id
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, **kwargs):
            from pathlib import Path

            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            calls["ignore"] = kwargs["ignore_patterns"]
            calls["config"] = json.loads((Path(folder_path) / "config.json").read_text())
            return "url"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    tokenizer = AutoTokenizer.from_pretrained(tiny_mlm_teacher)
    args = _args(tmp_path / "out", max_steps=4, per_device_train_batch_size=4, optim="adamw_torch",
                 learning_rate=1e-3, target_hidden_size=32, target_num_attention_heads=2,
                 target_intermediate_size=48, prune_every=1, prune_end=2, hub_model_id="me/tiny-homobert",
                 teacher_name_or_path=str(tiny_mlm_teacher))
    trainer = HomoDistilTrainer(args=args, train_dataset=_dataset(16), data_collator=default_data_collator,
                                processing_class=tokenizer)
    trainer.train()
    assert trainer.push_to_hub() == "url"
    assert calls["repo"] == "me/tiny-homobert"
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= set(calls["files"])
    assert calls["config"]["hidden_size"] == 32
    assert "checkpoint-*" in calls["ignore"]
    assert "me/tiny-homobert" in (tmp_path / "out" / "README.md").read_text()


def test_teacher_dtype_holds_a_frozen_bf16_teacher_beside_an_fp32_student(tmp_path):
    """`--teacher_dtype bfloat16`: the teacher is cast (half its memory), frozen, unwrapped (no DDP / FSDP wrapper
    syncs it); the student stays fp32 and every term stays finite and close to the fp32-teacher run's."""
    teacher = tiny_model("bert", "mlm", seed=0)
    logs = {}
    for dtype in ("float32", "bfloat16"):
        student = tiny_model("bert", "mlm", seed=1).train()
        trainer = HomoDistilTrainer(model=student, teacher=teacher, args=_args(tmp_path / dtype, teacher_dtype=dtype),
                                    train_dataset=_dataset(), data_collator=default_data_collator)
        trainer.train()
        t = trainer.teacher
        assert type(t) is type(teacher) and not t.training
        assert {p.dtype for p in t.parameters()} == {getattr(torch, dtype)}
        assert not any(p.requires_grad or p.grad is not None for p in t.parameters())
        assert {p.dtype for p in student.parameters()} == {torch.float32}
        logs[dtype] = trainer.state.log_history[0]
    for k in ("loss_mlm", "loss_pred", "loss_hidden", "loss_attn"):
        assert logs["bfloat16"][k] == pytest.approx(logs["float32"][k], rel=0.05, abs=1e-4), k
    with pytest.raises(UserError, match="--teacher_dtype"):
        _args(tmp_path, teacher_dtype="int8")
