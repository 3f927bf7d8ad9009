"""Depth pruning on the encoder (issue 22): all-MiniLM-L6-v2 (6 layers) to 3 layers, homotopic fade vs one-shot
removal by the same layer score vs removing the last layers, each then distilled the same way; 150 steps, batch
16 x 64 tokens of the first 6,000 lines of brown.txt; STS-B dev zero-shot Spearman of the export.

    python benchmarks/depth.py homotopic_gate oneshot_gate oneshot_last [--seed 42]
    python benchmarks/depth.py --latency      # batch-1 latency of the seed-42 exports beside the teacher's

Appends one JSON line per run to benchmarks/depth_results.jsonl (variant, seed, Spearman, kept teacher layers, wall
seconds, the run_distill flags).
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transformers import AutoModel, AutoTokenizer  # noqa: E402

from benchmarks.helpers import brown_head  # noqa: E402
from homodistil_hf.cli.run_distill import main as run_distill  # noqa: E402
from homodistil_hf.metrics.sentence_similarity import read_stsb, sts_spearman  # noqa: E402
from homodistil_hf.testing import minilm_path, shared_data_dir  # noqa: E402

DEPTH = ["--target_num_hidden_layers", "3"]
DEPTH_2 = ["--target_num_hidden_layers", "2"]
NO_TRAINING = ["--max_steps", "11", "--learning_rate", "0"]  # (after the common flags: the last value wins)
# The 3-layer student's backbone parameter count (17,389,824 of the teacher's 22,713,216): the width-only student of
# the same count answers "depth or width at the same parameter count".
PARAMS_OF_3_LAYERS = "17389824"
# Depth and width together: 3 layers at the 192 / 6 / 768 widths of the quality benchmark (7,330,944 parameters),
# against one-shot removal, the last layers, and all 6 layers at that count.
WIDTHS = ["--target_hidden_size", "192", "--target_num_attention_heads", "6", "--target_intermediate_size", "768"]
PARAMS_OF_3_LAYERS_W = "7330944"
VARIANTS = {
    "homotopic_gate": [*DEPTH, "--layer_importance", "gate"],
    "homotopic_cosine": [*DEPTH, "--layer_importance", "cosine"],
    "oneshot_gate": [*DEPTH, "--layer_importance", "gate", "--pruning_schedule", "oneshot"],
    "oneshot_cosine": [*DEPTH, "--layer_importance", "cosine", "--pruning_schedule", "oneshot"],
    "oneshot_last": [*DEPTH, "--layer_importance", "last", "--pruning_schedule", "oneshot"],
    "width_equal": ["--target_params", PARAMS_OF_3_LAYERS],  # all 6 layers, every width shrunk by one factor
    # (explicit: --layer_choice auto became sequential for encoders with width targets after these rows were measured)
    "homotopic_cosine_w": [*DEPTH, *WIDTHS, "--layer_importance", "cosine", "--layer_choice", "at_start"],
    "oneshot_cosine_w": [*DEPTH, *WIDTHS, "--layer_importance", "cosine", "--pruning_schedule", "oneshot"],
    "oneshot_last_w": [*DEPTH, *WIDTHS, "--layer_importance", "last", "--pruning_schedule", "oneshot"],
    "width_equal_w": ["--target_params", PARAMS_OF_3_LAYERS_W],
    # the layers chosen one group at a time on the schedule's curve instead of all at the window's start (the
    # default, --layer_choice auto, with width targets)
    "homotopic_cosine_seq": [*DEPTH, "--layer_importance", "cosine", "--layer_choice", "sequential"],
    # the learning rate restarted once the layers are gone (--lr_rewind, issue 20's lever): one-shot removal trains
    # its 3 layers from step 15 at 0.9x the peak rate, the fade's from step 38 at 0.75x of it
    "homotopic_cosine_rewind": [*DEPTH, "--layer_importance", "cosine", "--lr_rewind"],
    "homotopic_cosine_w_seq": [*DEPTH, *WIDTHS, "--layer_importance", "cosine", "--layer_choice", "sequential"],
    # a shorter fade (steps 10 to 22 instead of 10 to 38: the 3-layer student trains longer as itself, as one-shot
    # removal's does), without and with the rewind; and one-shot removal with the rewind, the like-for-like baseline
    "homotopic_cosine_end015": [*DEPTH, "--layer_importance", "cosine", "--prune_end", "0.15"],
    "homotopic_cosine_end015_rewind": [*DEPTH, "--layer_importance", "cosine", "--prune_end", "0.15", "--lr_rewind"],
    "oneshot_cosine_rewind": [*DEPTH, "--layer_importance", "cosine", "--pruning_schedule", "oneshot", "--lr_rewind"],
    # the score's layers cut out of the teacher at step 10 with no training (learning rate 0, stopped at step 11):
    # what the 150 steps of distillation add to, or take from, the cut itself
    "cut_cosine": [*DEPTH, *NO_TRAINING, "--layer_importance", "cosine", "--pruning_schedule", "oneshot"],
    # a deeper cut, 6 -> 2 layers: the fade against one-shot removal and against the untrained cut
    "homotopic_cosine_l2": [*DEPTH_2, "--layer_importance", "cosine"],
    "oneshot_cosine_l2": [*DEPTH_2, "--layer_importance", "cosine", "--pruning_schedule", "oneshot"],
    "cut_cosine_l2": [*DEPTH_2, *NO_TRAINING, "--layer_importance", "cosine", "--pruning_schedule", "oneshot"],
    # with the learning rate rewound after the cut or the fade, both sides
    "homotopic_cosine_l2_rewind": [*DEPTH_2, "--layer_importance", "cosine", "--lr_rewind"],
    "oneshot_cosine_l2_rewind": [*DEPTH_2, "--layer_importance", "cosine", "--pruning_schedule", "oneshot",
                                 "--lr_rewind"],
    # the same at 4x the steps (600: the fade runs from step 10 to 150)
    "homotopic_cosine_l2_long": [*DEPTH_2, "--layer_importance", "cosine", "--max_steps", "600"],
    "oneshot_cosine_l2_long": [*DEPTH_2, "--layer_importance", "cosine", "--pruning_schedule", "oneshot",
                               "--max_steps", "600"],
}
# The fade became --layer_fade output (the layer's output mixed with its input) after every homotopic row above but the
# never-run *_long ones was measured with the residual branches scaled: those keep what they ran with, and the same
# runs with today's fade are the `_output` variants.
for _name, _flags in list(VARIANTS.items()):
    if _name.startswith("homotopic") and not _name.endswith("_long"):
        VARIANTS[f"{_name}_output"] = [*_flags, "--layer_fade", "output"]
        _flags += ["--layer_fade", "branches"]
# Measured with today's fade only: 6 -> 2 layers with a shorter fade (steps 10 to 22), without and with the rewind
VARIANTS["homotopic_cosine_l2_end015_output"] = [*DEPTH_2, "--layer_importance", "cosine", "--prune_end", "0.15",
                                                 "--layer_fade", "output"]
VARIANTS["homotopic_cosine_l2_end015_rewind_output"] = [*VARIANTS["homotopic_cosine_l2_end015_output"], "--lr_rewind"]
# 6 -> 3 layers at 4x the steps (600: the fade from step 10 to 150), today's fade against one-shot removal
VARIANTS["homotopic_cosine_long"] = [*DEPTH, "--layer_importance", "cosine", "--max_steps", "600", "--layer_fade", "output"]
VARIANTS["oneshot_cosine_long"] = [*DEPTH, "--layer_importance", "cosine", "--pruning_schedule", "oneshot",
                                   "--max_steps", "600"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="*", help=f"from: {', '.join(VARIANTS)}")
    p.add_argument("--latency", action="store_true", help="time the seed-42 exports of homotopic_cosine and "
                   "width_equal and the teacher at batch 1 (interleaved); writes benchmarks/depth_latency.json")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--work_dir", default=str(ROOT / "benchmarks" / "_work" / "depth"))
    a = p.parse_args(argv)
    if unknown := [v for v in a.variants if v not in VARIANTS]:  # (argparse's choices refuse an empty list)
        p.error(f"unknown variants {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    data = shared_data_dir()
    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = brown_head(work / "brown6k.txt")
    s1, s2, gold = read_stsb(data / "glue" / "STS-B" / "dev.tsv")
    if a.latency:
        return latency(work, s1)
    for name in a.variants:
        out = work / f"{name}-s{a.seed}"
        flags = ["--teacher_name_or_path", str(minilm_path()), "--train_file", str(corpus), "--output_dir", str(out),
                 "--max_steps", "150", "--per_device_train_batch_size", "16", "--max_seq_length", "64",
                 "--learning_rate", "2e-4", "--prune_start", "10",
                 "--prune_every", "10", "--report_to", "none", "--use_cpu", "--save_strategy", "no",
                 "--disable_tqdm", "true", "--seed", str(a.seed), "--overwrite_output_dir", *VARIANTS[name]]
        start = time.time()
        run_distill(flags)
        model = AutoModel.from_pretrained(out)
        rho = sts_spearman(model, AutoTokenizer.from_pretrained(out), s1, s2, gold)
        kept = json.loads((out / "homodistil.json").read_text())["kept_from_teacher"].get("depth")
        line = {"variant": name, "seed": a.seed, "spearman": round(rho, 4), "kept_layers": kept,
                "layers": model.config.num_hidden_layers, "seconds": round(time.time() - start),
                "flags": " ".join(flags[4:]).replace(str(ROOT) + "/", "")}
        print(json.dumps(line), flush=True)
        with open(ROOT / "benchmarks" / "depth_results.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


def latency(work: Path, sentences: list[str], n: int = 200, rounds: int = 5) -> dict:
    """Median seconds per sentence at batch 1 (the first `n` STS-B sentences, one forward each, models interleaved
    sentence by sentence so that all see the same load), best round of `rounds`."""
    import statistics

    import torch

    models = {"teacher (6 x 384)": minilm_path(), "depth: 3 layers (homotopic_cosine)": work / "homotopic_cosine-s42",
              "width: 6 layers, same parameters (width_equal)": work / "width_equal-s42"}
    loaded = {k: (AutoModel.from_pretrained(v).eval(), AutoTokenizer.from_pretrained(v)) for k, v in models.items()}
    best = {k: float("inf") for k in models}
    with torch.inference_mode():
        for _ in range(rounds):
            times = {k: [] for k in models}
            for sentence in sentences[:n]:
                for k, (model, tok) in loaded.items():
                    batch = tok(sentence, return_tensors="pt")
                    start = time.perf_counter()
                    model(**batch)
                    times[k].append(time.perf_counter() - start)
            for k, v in times.items():
                best[k] = min(best[k], statistics.median(v))
    out = {"threads": torch.get_num_threads(), "sentences": n, "rounds": rounds,
           "median_s_per_sentence": best,
           "params": {k: sum(p.numel() for p in m.parameters()) for k, (m, _) in loaded.items()},
           "speedup_vs_teacher": {k: best["teacher (6 x 384)"] / v for k, v in best.items()},
           "command": "python benchmarks/depth.py --latency"}
    (ROOT / "benchmarks" / "depth_latency.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    plot(out)
    return out


def plot(latency_out: dict) -> None:
    """Depth or width at one parameter count: STS-B (mean over the seeds run, depth_results.jsonl) against batch-1
    latency, the teacher beside them; benchmarks/figures/depth_or_width.png."""
    import statistics

    from benchmarks.helpers import pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return
    rows = [json.loads(line) for line in (ROOT / "benchmarks" / "depth_results.jsonl").read_text().splitlines()]
    scores = {"depth: 3 layers (homotopic_cosine)": [r["spearman"] for r in rows if r["variant"] == "homotopic_cosine"],
              "width: 6 layers, same parameters (width_equal)": [r["spearman"] for r in rows
                                                                 if r["variant"] == "width_equal"],
              "teacher (6 x 384)": [json.loads((ROOT / "benchmarks" / "results.json").read_text())["teacher"][
                  "stsb_spearman"]]}
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, values in scores.items():
        if values and name in latency_out["median_s_per_sentence"]:
            x = 1000 * latency_out["median_s_per_sentence"][name]
            ax.errorbar([x], [statistics.fmean(values)], yerr=[statistics.stdev(values) if len(values) > 1 else 0],
                        marker="o", capsize=3, label=f"{name} (n={len(values)})")
    ax.set_xlabel("batch-1 latency per sentence (ms, CPU)")
    ax.set_ylabel("STS-B zero-shot Spearman")
    ax.set_title("Depth or width at 17.4M parameters (all-MiniLM-L6-v2)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, ROOT / "benchmarks" / "figures", "depth_or_width")


if __name__ == "__main__":
    main()
