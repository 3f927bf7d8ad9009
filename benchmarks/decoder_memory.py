"""Decoder memory of pruning (issue 21): peak RSS of a SmolLM2-135M-Instruct distillation run that prunes (to the 25%
level of the decoder sweep, 270/3/1/720) with each importance metric, against the same run without pruning (no
targets: the student stays a full copy of the teacher). Each run is a fresh process (`memory_probe.py distill`,
RSS sampled every 2 ms), 20 steps of 4 x 128 tokens of brown.txt (the decoder sweep's training split), one after the
other in this one invocation.

    python benchmarks/decoder_memory.py                    # writes benchmarks/decoder_memory.json
    python benchmarks/decoder_memory.py --steps 2 --teacher <tiny model> --target 32,2,1,48 --out /tmp/m.json

`peak_vs_no_pruning` is each run's peak RSS while training over the no-pruning run's (the goal: <= 1.05 for the
decoder default); `increase_mb` is what training adds to the RSS taken just before the first step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

RUNS = {  # name -> extra run_distill flags (None: no targets)
    "no_pruning": None,
    "taylor_structure": ["--importance", "taylor_structure"],
    "sensitivity": ["--importance", "sensitivity"],
}
TARGET_FLAGS = ("--target_hidden_size", "--target_num_attention_heads", "--target_num_key_value_heads",
                "--target_intermediate_size")


def main(argv=None) -> dict:
    from homodistil_hf.testing import shared_data_dir, smollm2_gguf_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default=smollm2_gguf_path())
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--work_dir", default=str(HERE / "_work" / "decoder_memory"))
    p.add_argument("--out", default=str(HERE / "decoder_memory.json"))
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--target", default="270,3,1,720", help="hidden,heads,kv_heads,FFN of the pruning runs")
    p.add_argument("--corpus", default=None, help="default: brown.txt of the shared data")
    a = p.parse_args(argv)
    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    train = work / "train.txt"
    if not train.exists():
        corpus = a.corpus or shared_data_dir() / "corpus" / "brown.txt"
        lines = Path(corpus).read_text(encoding="utf-8").splitlines()
        train.write_text("\n".join(lines[:-1000]) + "\n", encoding="utf-8")
    results = {"steps": a.steps, "batch": 4, "seq": 128, "load_average_before": [round(x, 2) for x in os.getloadavg()],
               "runs": {}}
    target = [x for pair in zip(TARGET_FLAGS, a.target.split(","), strict=True) for x in pair]
    for name in a.runs.split(","):
        extra = RUNS[name]
        flags = ["--teacher_name_or_path", str(a.teacher), "--train_file", str(train), "--output_dir",
                 str(work / name), "--overwrite_output_dir", "--max_steps", str(a.steps),
                 "--per_device_train_batch_size", "4", "--max_seq_length", "128", "--learning_rate", "2e-4",
                 "--seed", "42", "--report_to", "none", "--use_cpu", "--save_strategy", "no", "--disable_tqdm",
                 "true", "--logging_steps", "10", *(target + extra if extra is not None else [])]
        cmd = [sys.executable, str(HERE / "memory_probe.py"), "distill", *flags]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = [x for x in proc.stdout.splitlines() if x.startswith("MEMORY_PROBE ")]
        if proc.returncode or not line:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(line[-1].split(" ", 1)[1])
        row.pop("ru_maxrss_mb", None)
        row["command"] = "python benchmarks/memory_probe.py distill " + " ".join(flags).replace(
            str(a.teacher), "$SMOLLM2_GGUF").replace(str(ROOT) + "/", "")
        results["runs"][name] = {k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}
        print(json.dumps({name: {k: v for k, v in results["runs"][name].items() if k != "command"}}), flush=True)
    base = results["runs"].get("no_pruning")
    if base:
        for row in results["runs"].values():
            row["peak_vs_no_pruning"] = round(row["peak_train_mb"] / base["peak_train_mb"], 3)
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
