"""DDP on CPU: `torchrun --nproc_per_node 2` with gloo runs a pruning distillation to the end (masks mode while it
prunes, chosen automatically, then the student compacted on every rank), every rank computes the same importance scores and takes the same pruning decision at every
pruning step (before rank 0's decision is broadcast, i.e. from synchronised gradients), and only rank 0 writes
the output files. Each rank records what it did through `tests/ddp_worker.py`."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM

from homodistil_hf.pruning.pruner import STATE_FILE
from homodistil_hf.testing import save_tiny_model, write_corpus

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")

if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)


def _torchrun(args, record, timeout=420):
    env = dict(os.environ, OMP_NUM_THREADS="1", HOMODISTIL_DDP_RECORD=str(record), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    return proc, time.perf_counter() - start


def test_ddp_two_ranks_same_decisions_rank0_writes(tmp_path):
    teacher = save_tiny_model(tmp_path / "teacher", "bert", "mlm")
    corpus = write_corpus(tmp_path / "corpus.txt", 100)
    out, record = tmp_path / "out", tmp_path / "record"
    args = ["--teacher_name_or_path", str(teacher), "--train_file", str(corpus), "--output_dir", str(out),
            "--per_device_train_batch_size", "4", "--max_seq_length", "32", "--report_to", "none", "--use_cpu",
            "--ddp_backend", "gloo", "--disable_tqdm", "true", "--max_steps", "12", "--save_steps", "6",
            "--logging_steps", "2", "--learning_rate", "3e-3", "--target_hidden_size", "32",
            "--target_num_attention_heads", "2", "--target_intermediate_size", "48", "--prune_every", "2",
            "--prune_end", "8"]
    proc, seconds = _torchrun(args, record)
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"torchrun 2 ranks: {seconds:.1f} s")
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # masks while pruning (automatic under DDP), then compacted on both ranks once pruning was done
    assert [r["physical"] for r in ranks] == [True, True]

    # The same decision on both ranks at every pruning step, computed locally from the same scores.
    steps = [r["decisions"] for r in ranks]
    assert len(steps[0]) == len(steps[1]) >= 3
    for d0, d1 in zip(*steps, strict=True):
        assert d0["widths"] == d1["widths"]
        assert d0["scores"].keys() == d1["scores"].keys()
        for name in d0["scores"]:
            a, b = torch.tensor(d0["scores"][name]), torch.tensor(d1["scores"][name])
            assert a.abs().sum() > 0, name  # real scores, not an empty window
            assert torch.allclose(a, b, rtol=1e-6, atol=0), name
        assert d0["local"] == d1["local"] == d0["applied"] == d1["applied"]
    assert steps[0][-1]["widths"] == [32, 2, 16, 48]
    assert ranks[0]["final"] == ranks[1]["final"]

    # The export holds the final decision, and it is a stock model of the target shape.
    exported = json.loads((out / "homodistil.json").read_text())
    assert exported["kept_from_teacher"] == ranks[0]["final"]
    assert json.loads((out / "checkpoint-12" / STATE_FILE).read_text()) == ranks[0]["final"]
    model, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert (model.config.hidden_size, model.config.num_attention_heads, model.config.intermediate_size) == (32, 2, 48)

    # Only rank 0 writes outputs; rank 1 writes nothing but its own RNG state in the checkpoints (the Trainer's).
    written0, written1 = set(ranks[0]["writes"]), set(ranks[1]["writes"])
    assert {"model.safetensors", "config.json", "homodistil.json", "checkpoint-6/model.safetensors",
            "checkpoint-6/pruning_state.json", "checkpoint-6/pruning_importance.safetensors"} <= written0
    checkpoints = {"checkpoint-6", "checkpoint-12", "_homodistil-compaction"}  # (the last: compaction's hand-off)
    allowed1 = checkpoints | {f"{c}/rng_state_1.pth" for c in checkpoints}
    assert written1 <= allowed1, written1 - allowed1
    assert "checkpoint-6/rng_state_1.pth" in written1  # the recorder does see rank 1's writes
    assert not list(out.glob(".homodistil-export-*")) and not (out / "_homodistil-compaction").exists()
