"""Issue 12's sweep: HomoDistil against one-shot pruning + distillation (sensitivity, and activation as Minitron does)
and truncation + distillation, at equal shape, steps, data and seeds, over three compression levels of the MiniLM
teacher and two training lengths. Measures per run: held-out distillation discrepancy (final `eval_loss`) and STS-B
zero-shot Spearman; a plot of STS-B against kept parameters, one line per method with the seed spread.

    python benchmarks/run.py --only sweep            # the full grid (hours on 2 CPU cores), into results.json
    python benchmarks/run.py --only sweep --quick    # the code path on tiny settings

It runs through `Bench.distill` of `benchmarks/run.py`: the same recipe, data split, caching and run records.
"""

from __future__ import annotations

import statistics

# Shares of the teacher's backbone parameters; each becomes the valid shape closest to it (`--target_params`'s search:
# all widths shrunk by one factor), and the share of the non-embedding parameters is recorded with it. For the
# all-MiniLM-L6-v2 teacher 0.38 is the 192/6/768 student of the other parts.
LEVELS = {"38%": 0.38, "22%": 0.22, "11%": 0.11}
STEPS = (150, 600)
SEEDS = (42, 43, 44)
METHODS = {
    "homodistil": [],
    "oneshot_sensitivity": ["--pruning_schedule", "oneshot", "--prune_start", "0.1"],
    "oneshot_activation": ["--pruning_schedule", "oneshot", "--prune_start", "0.1", "--importance", "activation"],
    "truncate": ["--student_init", "truncate"],
}
QUICK = {"levels": {"38%": 0.38, "11%": 0.11}, "steps": (6,), "seeds": (42,)}


def _level(teacher_path: str, share: float) -> dict:
    """The level's target shape (hidden, heads, FFN) and its parameter shares."""
    from transformers import AutoConfig

    from homodistil_hf.pruning.targets import config_for_shape, count_backbone_params, shape_for_params

    config = AutoConfig.from_pretrained(teacher_path)
    shape = shape_for_params(config, int(share * count_backbone_params(config)))
    student = config_for_shape(config, shape)

    def embeddings(c) -> int:
        return (c.vocab_size + c.max_position_embeddings + c.type_vocab_size + 2) * c.hidden_size

    full, small = count_backbone_params(config), count_backbone_params(student)
    return {"target": [shape.hidden, shape.heads, shape.intermediate], "params": small, "share": small / full,
            "non_embedding_share": (small - embeddings(student)) / (full - embeddings(config))}


def part_sweep(b) -> None:
    grid = QUICK if b.args.quick else {"levels": LEVELS, "steps": STEPS, "seeds": SEEDS}
    out: dict = {"methods": METHODS, "levels": {}, "runs": {}}
    for level, share in grid["levels"].items():
        out["levels"][level] = info = _level(b.teacher, share)
        target = info["target"]
        for steps in grid["steps"]:
            for method, flags in METHODS.items():
                key = f"{level}/{steps}/{method}"
                runs = {}
                for seed in grid["seeds"]:
                    name = f"sweep-{target[0]}-{steps}-{method}"
                    rec = b.distill(name, seed, flags, target=target, steps=steps)
                    hist = rec.get("history") or [{}]
                    runs[str(seed)] = {"stsb_spearman": rec["stsb_spearman"], "eval_loss": hist[-1].get("eval_loss"),
                                       "command": rec["command"]}
                vals = [r["stsb_spearman"] for r in runs.values()]
                out["runs"][key] = {"seeds": runs, "stsb_mean": statistics.fmean(vals),
                                    "stsb_sd": statistics.stdev(vals) if len(vals) > 1 else 0.0}
    out["verdict"] = _verdict(out, grid)
    b.results["sweep"] = out


def _verdict(out: dict, grid: dict) -> dict:
    """Per level and length: HomoDistil's margin over the best baseline, and whether it exceeds the seed spread
    (the larger of the two standard deviations)."""
    verdict = {}
    for level in grid["levels"]:
        for steps in grid["steps"]:
            rows = {m: out["runs"][f"{level}/{steps}/{m}"] for m in METHODS}
            best = max((m for m in METHODS if m != "homodistil"), key=lambda m: rows[m]["stsb_mean"])
            margin = rows["homodistil"]["stsb_mean"] - rows[best]["stsb_mean"]
            spread = max(rows["homodistil"]["stsb_sd"], rows[best]["stsb_sd"])
            verdict[f"{level}/{steps}"] = {"best_baseline": best, "margin": margin, "spread": spread,
                                           "ahead_beyond_spread": margin > spread > 0}
    return verdict


def plot(results: dict, path) -> None:
    """STS-B zero-shot against kept parameters, one line per method and training length, seed spread as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = results["sweep"]
    levels = sweep["levels"]
    steps = sorted({int(k.split("/")[1]) for k in sweep["runs"]})
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sweep["methods"]:
        for n in steps:
            xs, ys, es = [], [], []
            for level, info in sorted(levels.items(), key=lambda kv: kv[1]["params"]):
                run = sweep["runs"].get(f"{level}/{n}/{method}")
                if run:
                    xs.append(info["params"] / 1e6)
                    ys.append(run["stsb_mean"])
                    es.append(run["stsb_sd"])
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=f"{method}, {n} steps",
                        linestyle="-" if n == steps[-1] else "--")
    ax.set_xlabel("student parameters (M)")
    ax.set_ylabel("STS-B zero-shot Spearman")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
