"""Peak memory and time of the decoder's logit terms (next-token CE + logit KD), from materialised logits as the
trainer computes them today vs `linear_losses.linear_logit_losses` from the final hidden states and LM heads.

    python benchmarks/logit_memory.py [--seqs 512 2048] [--batch 4] [--threads 1] [--out benchmarks/logit_memory.json]

Each (path, sequence length) runs in a fresh subprocess: a tiny random Llama student and teacher (vocabulary 49,152
as SmolLM2, hidden 256, 2 layers, tied heads), one forward of both models plus the two logit terms and the student's
backward per step. Memory is `resource.getrusage(RUSAGE_SELF).ru_maxrss` (the process's peak RSS): `before_mb` once
the models and inputs exist, `peak_mb` after the steps, `step_mb` their difference (what the step adds). The parent
imports no torch, so the peak a child inherits through fork + exec (Linux keeps the parent's) stays far below these.
`growth_mb` per path is step_mb at the longest sequence minus at the shortest. `step_s` is the fastest step's wall
time. Paths: 'materialised' (model(...).logits, losses.causal_lm_loss + kd_logits_loss_chunked, chunk 1024),
'fused' and 'checkpoint' (final_hidden_and_head + linear_logit_losses with that method, chunk 1024).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("materialised", "fused", "checkpoint")


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def child(path: str, seq: int, batch: int, steps: int, chunk: int) -> dict:
    import torch

    from homodistil_hf.linear_losses import final_hidden_and_head, linear_logit_losses
    from homodistil_hf.losses import causal_lm_loss, kd_logits_loss_chunked
    from homodistil_hf.testing import tiny_decoder

    shape = dict(vocab_size=49152, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, num_hidden_layers=2, max_position_embeddings=seq)
    student = tiny_decoder("llama", seed=0, **shape).train()
    teacher = tiny_decoder("llama", seed=1, **shape).requires_grad_(False)
    ids = torch.randint(5, shape["vocab_size"], (batch, seq), generator=torch.Generator().manual_seed(0))
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids))
    labels = ids
    targets = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:].reshape(-1)
    n_ce, n_kd = (targets != -100).sum(), inputs["attention_mask"].sum()

    def step() -> float:
        if path == "materialised":
            s_logits = student(**inputs).logits
            with torch.no_grad():
                t_logits = teacher(**inputs).logits
            ce = causal_lm_loss(s_logits, labels, "sum", chunk)
            kd = kd_logits_loss_chunked(s_logits, t_logits, 2.0, inputs["attention_mask"], "sum", "forward_kl",
                                        chunk_size=chunk)
        else:
            h, w, b, _ = final_hidden_and_head(student, **inputs)
            with torch.no_grad():
                t_h, t_w, t_b, _ = final_hidden_and_head(teacher, **inputs)
            ce, kd = linear_logit_losses(h.flatten(0, 1), w, b, t_h.flatten(0, 1), t_w, t_b, targets,
                                         inputs["attention_mask"].reshape(-1), 2.0, "forward_kl", 0.5, chunk, "both",
                                         path)
        loss = ce / n_ce + kd / n_kd
        loss.backward()
        student.zero_grad(set_to_none=True)
        return loss.item()

    before = _maxrss_mb()
    times, losses = [], []
    for _ in range(steps):
        start = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - start)
    peak = _maxrss_mb()
    return dict(path=path, seq=seq, batch=batch, before_mb=round(before, 1), peak_mb=round(peak, 1),
                step_mb=round(peak - before, 1), step_s=round(min(times), 2), step_times_s=[round(t, 2) for t in times],
                loss=losses[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seqs", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "logit_memory.json")
    p.add_argument("--child", nargs=2, metavar=("PATH", "SEQ"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print("LOGIT_MEMORY " + json.dumps(child(args.child[0], int(args.child[1]), args.batch, args.steps,
                                                 args.chunk)))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    runs = []
    load_before = os.getloadavg()
    for path in args.paths:
        for seq in args.seqs:
            cmd = [sys.executable, __file__, "--child", path, str(seq), "--batch", str(args.batch), "--steps",
                   str(args.steps), "--chunk", str(args.chunk)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            run = json.loads(next(line for line in out.splitlines() if line.startswith("LOGIT_MEMORY "))[13:])
            print(json.dumps(run), flush=True)
            runs.append(run)
    growth = {}
    for path in args.paths:
        by_seq = {r["seq"]: r for r in runs if r["path"] == path}
        lo, hi = by_seq[min(args.seqs)], by_seq[max(args.seqs)]
        growth[path] = dict(growth_mb=round(hi["step_mb"] - lo["step_mb"], 1), step_s_short=lo["step_s"],
                        step_s_long=hi["step_s"])
    result = dict(command=" ".join(["python", "benchmarks/logit_memory.py", *sys.argv[1:]]), threads=args.threads,
                  load_average_before=[round(x, 2) for x in load_before],
                  load_average_after=[round(x, 2) for x in os.getloadavg()], machine=platform.processor() or
                  platform.machine(), cpus=os.cpu_count(), runs=runs, growth=growth)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(growth, indent=1))


if __name__ == "__main__":
    main()
