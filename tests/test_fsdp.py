"""FSDP2 (`fully_shard`) on 2 CPU ranks with gloo: pruning in masks mode from sharded gradients.

Importance is reduced per structure across ranks (no rank holds a full gradient), every rank takes the same
decision at every pruning step, and the gathered export equals a single-process masks-mode run of the same seed
within 1e-5 (same data: each rank gets half of every batch, so the averaged gradients are the full batch's).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from homodistil_hf.export import export_model

sys.path.insert(0, str(Path(__file__).parent))
from fsdp_case import SCHEDULE, batches, build, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)


def _reference(family: str, out: Path) -> list[dict]:
    model = build(family)
    pruner, decisions = train(family, model)
    export_model(model, out, pruner.state, physical=False)
    return decisions


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_fsdp2_two_ranks_same_decisions_export_equals_single_process(tmp_path, family):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    record, out = tmp_path / "record", tmp_path / "sharded"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).with_name("fsdp_worker.py")), family, str(record), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads(Path(f"{record}.rank{r}.json").read_text())["decisions"] for r in range(2)]
    assert len(ranks[0]) == len(SCHEDULE) and ranks[0] == ranks[1]

    expected = _reference(family, tmp_path / "single")
    assert ranks[0] == expected  # the same structures kept at every step as without sharding

    auto = transformers.AutoModelForMaskedLM if family == "bert" else transformers.AutoModelForCausalLM
    sharded, single = auto.from_pretrained(out).eval(), auto.from_pretrained(tmp_path / "single").eval()
    ids = batches(family)[0]
    with torch.no_grad():
        assert (sharded(input_ids=ids).logits - single(input_ids=ids).logits).abs().max() <= 1e-5
