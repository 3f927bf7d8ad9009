"""Several processes (issue 21): the default MiniLM recipe (all-MiniLM-L6-v2 -> 192/6/768, 150 steps, global batch
16 x 64 tokens of the first 6,000 lines of brown.txt, lr 2e-4, seed 42, every other flag the default) on 2 CPU ranks
(`torchrun --nproc_per_node 2`, DDP over gloo, one thread per rank), with `--pruning_mode auto` (masks while it
prunes, then the student compacted on both ranks) and with `--pruning_mode masks` (masks to the end); the two run
one after the other in this one invocation (`--rounds 2`: again in the other order; each mode's shortest times
count). Reports each run's wall time (the whole torchrun, start-up and export included) and its training runtime,
their ratio, the STS-B dev zero-shot Spearman of each export and the largest difference between the two exports'
weights.

    python benchmarks/ddp_compaction.py --rounds 2  # writes benchmarks/ddp_compaction.json
    python benchmarks/ddp_compaction.py --steps 4 --out /tmp/mp.json   # the code path (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("auto", "masks")


def main(argv=None) -> dict:
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from benchmarks.helpers import brown_head
    from homodistil_hf.metrics.sentence_similarity import read_stsb, sts_spearman
    from homodistil_hf.testing import minilm_path, shared_data_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--work_dir", default=str(ROOT / "benchmarks" / "_work" / "ddp_compaction"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "ddp_compaction.json"))
    p.add_argument("--rounds", type=int, default=1, help="repeat both runs, the order swapped each round; each "
                   "mode's best (shortest) times are compared")
    a = p.parse_args(argv)
    data, work = shared_data_dir(), Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = brown_head(work / "brown6k.txt")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    results = {"steps": a.steps, "seed": a.seed, "ranks": 2, "rounds": a.rounds, "runs": {}}
    order = [m for r in range(a.rounds) for m in (MODES if r % 2 == 0 else MODES[::-1])]
    for mode in order:
        out = work / mode
        flags = ["--teacher_name_or_path", str(minilm_path()), "--train_file", str(corpus), "--output_dir", str(out),
                 "--overwrite_output_dir", "--max_steps", str(a.steps), "--per_device_train_batch_size", "8",
                 "--max_seq_length", "64", "--learning_rate", "2e-4", "--seed", str(a.seed),
                 "--target_hidden_size", "192", "--target_num_attention_heads", "6",
                 "--target_intermediate_size", "768", "--report_to", "none", "--use_cpu", "--ddp_backend", "gloo",
                 "--save_strategy", "no", "--disable_tqdm", "true", "--logging_steps", "10",
                 "--pruning_mode", mode]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "run_distill.py", *flags]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        (work / f"{mode}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode:
            raise SystemExit(f"{mode} failed, see {work / f'{mode}.log'}:\n{proc.stderr[-3000:]}")
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        s1, s2, gold = read_stsb(data / "glue" / "STS-B" / "dev.tsv")
        rho = sts_spearman(AutoModel.from_pretrained(out), AutoTokenizer.from_pretrained(out), s1, s2, gold)
        previous = results["runs"].get(mode, {})
        results["runs"][mode] = {
            "wall_s": round(min(wall, previous.get("wall_s", wall)), 1),
            "train_runtime_s": min(history[-1]["train_runtime"], previous.get("train_runtime_s", float("inf"))),
            "all_wall_s": [*previous.get("all_wall_s", []), round(wall, 1)],
            "all_train_runtime_s": [*previous.get("all_train_runtime_s", []), history[-1]["train_runtime"]],
            "stsb_spearman": round(rho, 4),
            "command": "OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 run_distill.py " + " ".join(
                flags).replace(str(minilm_path()), "$MINILM").replace(str(ROOT) + "/", "")}
        print(json.dumps({mode: {k: v for k, v in results["runs"][mode].items() if k != "command"}}), flush=True)
    auto, masks = (results["runs"][m] for m in MODES)
    results["wall_ratio"] = round(auto["wall_s"] / masks["wall_s"], 3)
    results["train_runtime_ratio"] = round(auto["train_runtime_s"] / masks["train_runtime_s"], 3)
    w = [load_file(work / m / "model.safetensors") for m in MODES]
    results["export_max_abs_diff"] = max(float((w[0][k] - w[1][k]).abs().max()) for k in w[0])
    results["stsb_difference"] = round(auto["stsb_spearman"] - masks["stsb_spearman"], 4)
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}), flush=True)
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
