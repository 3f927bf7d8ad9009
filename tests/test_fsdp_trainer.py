"""Several processes through the Trainer: `HomoDistilTrainer` with `fsdp=True` (`--fsdp`), `fsdp_config={"version":
2}` (FSDP2), or plain DDP, and pruning targets, on 2 CPU ranks (torchrun, gloo), against a single-process masks-mode
run of the same seed and data. Under both, the student is masked while it is pruned and compacted on every rank once
pruning is done (`homodistil_hf/compaction.py`).

accelerate enables FSDP only for accelerators, so the worker (`tests/fsdp_trainer_worker.py`) patches accelerate,
in its own processes only, to take its FSDP branch on CPU (see `patch_accelerate_fsdp_on_cpu` there); from there on
the run is accelerate's FSDP2 preparation (`fully_shard` of every decoder layer, a tail group, the root) and the
Trainer's own training loop, checkpoint-free.

Asserted: FSDP2 really ran (the student's parameters and gradients were DTensors at every optimizer step, under
`FSDP<Model>`, before and after the compaction; the teacher stayed an unsharded, frozen model); `--pruning_mode auto`
became masks, then the compact student trained the last steps; both ranks took
the same decisions from the same scores at every pruning step, the same as the single process; the losses match; the
export (gathered on every rank, written by rank 0) is a stock model equal to the single-process export within 1e-5 (weights; outputs within 5e-5).

BERT's masked-LM head is not used here: `BertLMPredictionHead` ties `decoder.bias` to its own `bias`, and
accelerate's FSDP2 preparation puts the decoder (the output embedding) in a group of its own, so torch >= 2.13
refuses the shared parameter at the first forward (on GPUs too; the trainer now refuses it up front with one line,
`test_fsdp2_refuses_a_tie_accelerate_cannot_shard`). A headless BERT is used for the encoder family.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM, default_data_collator

import homodistil_hf.distributed as distributed
from homodistil_hf import HomoDistilTrainer
from homodistil_hf.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from fsdp_trainer_case import STEPS, Recorder, config, dataset, teacher  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("fsdp_trainer_worker.py")

if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)


def _torchrun(*args: str):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _single_process(family: str, out: Path):
    trainer = HomoDistilTrainer(teacher=teacher(family), args=config(family, str(out), world=1),
                                train_dataset=dataset(family), data_collator=default_data_collator)
    recorder = Recorder(trainer)
    trainer.add_callback(recorder)
    trainer.train()
    trainer.save_model()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return recorder.decisions, losses


def _assert_same_export(out: Path, reference: Path, family: str, atol: float = 1e-5) -> None:
    auto = AutoModelForCausalLM if family.startswith("llama") else AutoModel
    model, info = auto.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    single = auto.from_pretrained(reference)
    configs = [{k: v for k, v in m.config.to_dict().items() if k != "_name_or_path"} for m in (model, single)]
    assert configs[0] == configs[1]
    ids = torch.tensor(dataset(family)["input_ids"][:4])
    with torch.no_grad():
        a, b = model.eval()(input_ids=ids)[0], single.eval()(input_ids=ids)[0]
    # Weights agree within 1e-5 (below); outputs through the layers within 5e-5: the two ranks' gradients are
    # reduced in another fp32 order than one process sums them (2.5e-5 measured for BERT with taylor_structure).
    assert a.shape == b.shape and (a - b).abs().max() <= 5e-5
    state_a, state_b = model.state_dict(), single.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.allclose(state_a[name], state_b[name], atol=atol), name


CASES = [("fsdp", "llama"), ("fsdp", "bert"), ("ddp", "llama"), ("ddp", "llama_depth"), ("fsdp", "llama_depth")]


@pytest.mark.parametrize(("sharding", "family"), CASES)
def test_multi_process_pruning_compacts_and_matches_single_process(tmp_path, sharding, family):
    record, out = tmp_path / "record", tmp_path / sharding
    _torchrun(family, record, out, 0, "", sharding)
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in range(2)]

    for r in ranks:
        assert r["world_size"] == 2
        if sharding == "fsdp":  # accelerate's FSDP2 path really ran, before and after the compaction
            assert r["distributed_type"] == "DistributedType.FSDP" and r["fsdp_version"] == 2
            assert r["student_class"].startswith("FSDP")
            assert r["param_types"] == ["DTensor"] and r["grad_types"] == ["DTensor"]
            assert r["sharded_steps"] == STEPS
        else:
            assert r["distributed_type"] == "DistributedType.MULTI_CPU"
        assert r["teacher_param_types"] == ["Parameter"] and not r["teacher_trainable"]
        # --pruning_mode auto: masks while pruning (its last step is the 7th update, at global step 6), then
        # compacted: updates 8-10 train the compact student, whose full parameter count is far below the teacher's.
        assert r["physical"] is True and r["physical_steps"] == [8, 9, 10]
        assert len(set(r["numel"][:7])) == 1 and len(set(r["numel"][7:])) == 1
        assert r["numel"][7] < r["numel"][0] / 2
    assert not (out / "_homodistil-compaction").exists()  # the hand-off folder is gone once training ends
    # The sliced optimizer state handed over: under FSDP2 held once, in rank 0's memory (each rank then gets its
    # shards); under DDP every rank holds its own (replicated) copy, as in training.
    held = [r["handoff_optimizer_numel"] for r in ranks]
    assert len(held[0]) == 1 and held[0][0] > 0
    assert held[1] == ([0] if sharding == "fsdp" else held[0])

    # The same scores and decisions on both ranks at every pruning step, each rank's own (before the broadcast).
    assert ranks[0]["scores"] == ranks[1]["scores"] and len(ranks[0]["scores"]) >= 3
    assert ranks[0]["local_decisions"] == ranks[1]["local_decisions"]
    # What was applied is what rank 0 decided (a step that chooses layers and prunes widths decides twice).
    local = iter(ranks[0]["local_decisions"])
    assert all(any(d["state"] == s for s in local) for d in ranks[0]["decisions"])
    assert ranks[0]["decisions"] == ranks[1]["decisions"]
    assert ranks[0]["final"] == ranks[1]["final"]

    decisions, losses = _single_process(family, tmp_path / "single")
    assert ranks[0]["decisions"] == decisions  # the same structures kept at the same steps as on one process
    assert ranks[0]["losses"] == pytest.approx(losses, rel=1e-5, abs=1e-6)  # before and after compaction

    # The export: written once, by rank 0, as the same stock compact model as the single process's.
    assert json.loads((out / "homodistil.json").read_text())["kept_from_teacher"] == ranks[0]["final"]
    assert not list(out.glob(".homodistil-export-*"))
    _assert_same_export(out, tmp_path / "single", family)


@pytest.mark.parametrize("sharding", ["fsdp", "ddp"])
def test_multi_process_checkpoints_before_and_after_compaction_resume(tmp_path, sharding):
    """Checkpoints mid-pruning (masked, full-size) and after the compaction (compact) under FSDP2 / DDP: the Trainer's
    model and optimizer files plus the pruning state, written by rank 0. A run resumed from either ends with the same
    decisions and the same export as the uninterrupted one."""
    record, out = tmp_path / "record", tmp_path / "full"
    _torchrun("llama", record, out, 4, "", sharding)
    full = json.loads((record / "rank0.json").read_text())
    before, after = out / "checkpoint-4", out / "checkpoint-8"
    for checkpoint in (before, after):
        assert {"pruning_state.json", "pruning_importance.safetensors", "trainer_state.json"} <= {
            p.name for p in checkpoint.iterdir()}
    assert full["decisions"][-1]["step"] > 4  # the first checkpoint is mid-pruning
    assert json.loads((before / "pruning_layout.json").read_text()) == {"physical": False}
    assert json.loads((after / "pruning_layout.json").read_text()) == {"physical": True}

    for checkpoint in (before, after):
        resumed_record, resumed = tmp_path / f"record-{checkpoint.name}", tmp_path / checkpoint.name
        _torchrun("llama", resumed_record, resumed, 0, checkpoint, sharding)
        again = [json.loads((resumed_record / f"rank{r}.json").read_text()) for r in range(2)]
        step = int(checkpoint.name.split("-")[1])
        assert again[0]["decisions"] == again[1]["decisions"]
        assert [d for d in full["decisions"] if d["step"] >= step] == again[0]["decisions"]
        assert again[0]["final"] == full["final"]
        assert again[0]["physical_steps"] == [s for s in full["physical_steps"] if s > step]
        a, b = load_file(out / "model.safetensors"), load_file(resumed / "model.safetensors")
        assert a.keys() == b.keys()
        for name in a:
            assert torch.allclose(a[name], b[name], atol=1e-6), (checkpoint.name, name)


@pytest.fixture
def fsdp_reaches_cpu(monkeypatch):
    """Past the CPU refusal, to reach the pruning checks (which do not depend on the device)."""
    monkeypatch.setattr(distributed, "accelerate_fsdp_on_cpu", lambda: True)


def _flags(**kw):
    base = dict(fsdp=True, fsdp_plugin_args={"fsdp_version": 2}, deepspeed=None, use_cpu=True, has_targets=True,
                pruning_mode="auto", importance="taylor_structure")
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.mark.parametrize(("flags", "expect"), [
    (dict(importance="sensitivity"), ["--importance sensitivity", "per-weight", "taylor_structure"]),
    (dict(importance="magnitude"), ["--importance magnitude", "taylor_structure"]),
    (dict(pruning_mode="physical"), ["--pruning_mode physical", "FSDP", "masks"]),
    (dict(fsdp_plugin_args={"fsdp_version": 1}), ["FSDP2", "version 1"]),
])
def test_fsdp_pruning_refusals(fsdp_reaches_cpu, flags, expect):
    with pytest.raises(UserError) as err:
        distributed.check_distributed_support(_flags(**flags))
    message = str(err.value)
    assert "\n" not in message and all(text in message for text in expect), message


def test_fsdp_pruning_accepted_with_structure_importance(fsdp_reaches_cpu):
    for importance in ("taylor_structure", "activation", "random"):
        distributed.check_distributed_support(_flags(importance=importance))


def test_fsdp_on_cpu_still_refused_and_deepspeed_names_fsdp2():
    with pytest.raises(UserError, match="--fsdp on CPU"):
        distributed.check_distributed_support(_flags())
    with pytest.raises(UserError) as err:
        distributed.check_distributed_support(_flags(fsdp=None, deepspeed="ds.json"))
    assert "DeepSpeed" in str(err.value) and "FSDP2" in str(err.value) and "\n" not in str(err.value)


def test_fsdp2_refuses_a_tie_accelerate_cannot_shard():
    """Masked-LM heads that tie the decoder's bias to a parameter of their own (BERT, RoBERTa) cannot go through
    accelerate's FSDP2 preparation; embeddings tied to the LM head (Llama, GPT-2) and headless models can."""
    from homodistil_hf.testing import tiny_decoder, tiny_model

    assert distributed.fsdp2_shared_output_param(tiny_model("bert", "mlm")) == "cls.predictions.bias"
    assert distributed.fsdp2_shared_output_param(tiny_model("roberta", "mlm")) == "lm_head.bias"
    for model in (tiny_model("bert", "base"), tiny_decoder("llama"), tiny_decoder("gpt2"),
                  tiny_model("bert", "seq_cls")):
        assert distributed.fsdp2_shared_output_param(model) is None, type(model).__name__


def test_load_best_model_refused_where_the_student_is_compacted():
    """Several processes, --pruning_mode auto: the student is compacted once pruning is done, so the Trainer could
    not load a best checkpoint from before into it; refused up front in one line. Masks to the end: accepted."""
    ddp = SimpleNamespace(value="distributed")
    with pytest.raises(UserError) as err:
        distributed.check_distributed_support(_flags(fsdp=None, load_best_model_at_end=True, parallel_mode=ddp))
    message = str(err.value)
    assert "\n" not in message and "--load_best_model_at_end" in message and "--pruning_mode masks" in message
    distributed.check_distributed_support(_flags(fsdp=None, load_best_model_at_end=True, parallel_mode=ddp,
                                                 pruning_mode="masks"))
    distributed.check_distributed_support(_flags(fsdp=None, load_best_model_at_end=True,
                                                 parallel_mode=SimpleNamespace(value="not_distributed")))
