"""Depth pruning on the encoder (issue 22): all-MiniLM-L6-v2 (6 layers) to 3 layers, homotopic fade vs one-shot
removal by the same layer score vs removing the last layers, each then distilled the same way; 150 steps, batch
16 x 64 tokens of the first 6,000 lines of brown.txt; STS-B dev zero-shot Spearman of the export.

    python benchmarks/depth.py homotopic_gate oneshot_gate oneshot_last [--seed 42]

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

from homodistil_hf.cli.run_distill import main as run_distill  # noqa: E402
from homodistil_hf.metrics.sentence_similarity import read_stsb, sts_spearman  # noqa: E402
from homodistil_hf.testing import minilm_path, shared_data_dir  # noqa: E402

VARIANTS = {
    "homotopic_gate": ["--layer_importance", "gate"],
    "homotopic_cosine": ["--layer_importance", "cosine"],
    "oneshot_gate": ["--layer_importance", "gate", "--pruning_schedule", "oneshot"],
    "oneshot_cosine": ["--layer_importance", "cosine", "--pruning_schedule", "oneshot"],
    "oneshot_last": ["--layer_importance", "last", "--pruning_schedule", "oneshot"],
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variants", nargs="+", choices=list(VARIANTS))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--work_dir", default=str(ROOT / "benchmarks" / "_work" / "depth"))
    a = p.parse_args(argv)
    data = shared_data_dir()
    work = Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "brown6k.txt"
    if not corpus.exists():
        with open(data / "corpus" / "brown.txt") as f:
            corpus.write_text("".join(line for _, line in zip(range(6000), f)))
    s1, s2, gold = read_stsb(data / "glue" / "STS-B" / "dev.tsv")
    for name in a.variants:
        out = work / f"{name}-s{a.seed}"
        flags = ["--teacher_name_or_path", str(minilm_path()), "--train_file", str(corpus), "--output_dir", str(out),
                 "--max_steps", "150", "--per_device_train_batch_size", "16", "--max_seq_length", "64",
                 "--learning_rate", "2e-4", "--target_num_hidden_layers", "3", "--prune_start", "10",
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


if __name__ == "__main__":
    main()
