"""Issue 12's decoder question: SmolLM2-135M-Instruct pruned while distilled (HomoDistil) against one-shot pruning
(activation importance as Minitron does, and sensitivity) + distillation and truncation + distillation, at two
levels (about 50% and 25% of the teacher's parameters) and several seeds; held-out perplexity and KL to the teacher,
mean and seed spread per cell, and a verdict per level. Each cell is one `benchmarks/decoder.py` run (same recipe,
data split and evaluation); a run recorded earlier with the same command is reused, so the grid fills in phases.

    python benchmarks/decoder_sweep.py                                   # the grid below
    python benchmarks/decoder_sweep.py --levels 25% --seeds 42,43 --variants homodistil,oneshot_activation
    python benchmarks/decoder_sweep.py --report                          # rewrite decoder_sweep.md only

Writes benchmarks/decoder_sweep.json, decoder_sweep.md and figures/decoder_sweep.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import decoder  # noqa: E402
from benchmarks.helpers import mean_sd  # noqa: E402
from benchmarks.sweep import lead  # noqa: E402
from homodistil_hf.config import default_importance  # noqa: E402

# hidden, heads, key/value heads, FFN. 50%: the must-show shape of issue 11 (66.1M of 134.5M). 25%: 270 hidden,
# 3 heads in 1 group (head_dim 64 kept: rotary), FFN 720: 34.9M (26%), most of it the tied 49,152 x 270 embedding.
LEVELS = {"50%": "384,6,2,1024", "25%": "270,3,1,720"}
SEEDS = (42, 43, 44)
VARIANTS = tuple(decoder.VARIANTS)  # report order
ABLATIONS = decoder.ABLATIONS  # shown beside HomoDistil, never counted as a baseline in the verdict
STEPS = 120
# Rows recorded before this grid existed (issue 11's must-show and its second seed): reused by command.
RECORDED = ("decoder_results.json", "decoder_results_s43.json")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", default=None, help=f"comma-separated (default all): {', '.join(LEVELS)}".replace("%", "%%"))
    p.add_argument("--level", action="append", default=[], metavar="NAME=H,HEADS,KV,FFN",
                   help="define or redefine a level's shape (tests: tiny teachers)")
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--variants", default=",".join(v for v in VARIANTS if v not in ABLATIONS),
                   help=f"comma-separated, from: {', '.join(VARIANTS)} (the last are recipe ablations)")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--work_dir", default=str(HERE / "_work" / "decoder_sweep"))
    p.add_argument("--out", default=str(HERE / "decoder_sweep.json"))
    p.add_argument("--report", action="store_true", help="only rewrite the markdown and plot from --out")
    p.add_argument("--decoder_args", default="", help="more flags for benchmarks/decoder.py (tests: --quick ...)")
    args = p.parse_args(argv)
    args.shapes = dict(LEVELS)
    for item in args.level:
        name, _, shape = item.partition("=")
        if len(shape.split(",")) != 4:
            p.error(f"--level {item}: write NAME=hidden,heads,kv_heads,FFN, e.g. 25%=270,3,1,720")
        args.shapes[name] = shape
    args.levels = args.levels.split(",") if args.levels else list(args.shapes)
    unknown = set(args.levels) - set(args.shapes)
    if unknown:
        p.error(f"--levels: unknown {', '.join(sorted(unknown))}; choose from {', '.join(args.shapes)}")
    return args


def recorded_rows(out: dict) -> dict[str, dict]:
    """Every row measured so far, by command: the older result files and this grid's own."""
    rows = {}
    for name in RECORDED:
        path = HERE / name
        if path.is_file():
            rows.update({r["command"]: r for r in json.loads(path.read_text())["runs"].values()})
    for cell in out.get("cells", {}).values():
        rows.update({r["command"]: r for r in cell["seeds"].values()})
    return rows


def summarise(out: dict) -> None:
    """Mean and sd per cell; per level, HomoDistil's perplexity margin over the best baseline and the spread."""
    for cell in out["cells"].values():
        for key in ("heldout_ppl", "kl_to_teacher"):
            cell[f"{key}_mean"], cell[f"{key}_sd"] = mean_sd([r[key] for r in cell["seeds"].values()])
    out["verdict"] = {}
    for level in out["levels"]:
        rows = {v: out["cells"][f"{level}/{v}"] for v in VARIANTS
                if v not in ABLATIONS and f"{level}/{v}" in out["cells"]}
        h = rows.pop("homodistil", None)
        if h is None or not rows:
            continue
        v = lead((h["heldout_ppl_mean"], h["heldout_ppl_sd"]),
                 {m: (r["heldout_ppl_mean"], r["heldout_ppl_sd"]) for m, r in rows.items()}, lower_is_better=True)
        out["verdict"][level] = {
            "best_baseline": v["best_baseline"], "ppl_margin": v["margin"], "spread": v["spread"],
            "homodistil_seeds": len(h["seeds"]), "baseline_seeds": len(rows[v["best_baseline"]]["seeds"]),
            "ahead_beyond_spread": v["ahead_beyond_spread"]}


def write_report(out: dict, md: Path, png: Path) -> None:
    steps = " / ".join(map(str, sorted({info.get("steps", out["steps"]) for info in out["levels"].values()})))
    lines = ["# Decoder sweep: SmolLM2-135M-Instruct, pruning while distilling vs pruning once\n",
             f"Generated by `python benchmarks/decoder_sweep.py` from [`{Path(out['path']).name}`]"
             f"({Path(out['path']).name}). Each cell: {steps} steps of 4 x 128 tokens on brown.txt (last 1,000 "
             "lines held out), `--hidden_loss cosine`, mean ± sd over the seeds run (n) of held-out perplexity and "
             "KL(teacher || student) per token; a variant that ran with another importance metric than today's decoder default "
             "(`--importance` auto: taylor_structure) names it, and so does one that ran without the learning-rate "
             "rewinding decoders get by default since issue 20 (`--lr_rewind false`). Teacher: perplexity "
             f"{out['teacher_eval']['heldout_ppl']:.1f}, {out['teacher_eval']['params']:,} parameters.\n",
             "| level (student params) | variant | n | held-out perplexity | KL to teacher |", "|---|---|---|---|---|"]
    for level, info in out["levels"].items():
        for v in VARIANTS:
            cell = out["cells"].get(f"{level}/{v}")
            if cell:
                used = {decoder.importance_of(r) for r in cell["seeds"].values()}
                scored = not any("--student_init" in r["command"] for r in cell["seeds"].values())  # (truncation)
                notes = [f"`{'/'.join(sorted(used))}`"] if scored and used != {default_importance(causal_lm=True)} else []
                if any("--lr_rewind false" in r["command"] for r in cell["seeds"].values()):
                    notes.append("`--lr_rewind false`")
                label = f"{v} ({', '.join(notes)})" if notes else v
                lines.append(f"| {level} ({info['params'] / 1e6:.1f}M: {info['target']}) | {label} | {len(cell['seeds'])} | "
                             f"{cell['heldout_ppl_mean']:.1f} ± {cell['heldout_ppl_sd']:.1f} | "
                             f"{cell['kl_to_teacher_mean']:.3f} ± {cell['kl_to_teacher_sd']:.3f} |")
    lines += ["", "| level | HomoDistil's perplexity lead over the best baseline | seed spread (larger sd) | "
              "beyond the spread |", "|---|---|---|---|"]
    for level, v in out["verdict"].items():
        lines.append(f"| {level} | {v['ppl_margin']:+.1f} vs {v['best_baseline']} | {v['spread']:.1f} | "
                     f"{'yes' if v['ahead_beyond_spread'] else 'no'} |")
    lines += ["", f"![decoder sweep](figures/{png.name})", "", "Per-seed values and commands: "
              f"[`{Path(out['path']).name}`]({Path(out['path']).name}).", ""]
    md.write_text("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for v in VARIANTS:
        pts = sorted((info["params"] / 1e6, out["cells"][f"{lv}/{v}"]) for lv, info in out["levels"].items()
                     if f"{lv}/{v}" in out["cells"])
        if pts:
            ax.errorbar([x for x, _ in pts], [c["heldout_ppl_mean"] for _, c in pts],
                        yerr=[c["heldout_ppl_sd"] for _, c in pts], marker="o", capsize=3, label=v)
    ax.axhline(out["teacher_eval"]["heldout_ppl"], color="grey", linestyle=":", label="teacher")
    ax.set_yscale("log")
    ax.set_xlabel("student parameters (M)")
    ax.set_ylabel("held-out perplexity (lower is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse(argv)
    path = Path(args.out)
    out = json.loads(path.read_text()) if path.is_file() else {}
    for level in [] if args.report else args.levels:  # a cell's seeds all ran one length
        ran = out.get("levels", {}).get(level, {}).get("steps", out.get("steps"))
        if level in out.get("levels", {}) and ran != args.steps:
            raise SystemExit(f"--steps {args.steps}: level {level} of {path} ran {ran} steps; write another length "
                             "to another --out")
    out.update({"path": str(path), "steps": args.steps, "levels": out.get("levels", {}), "cells": out.get("cells", {})})
    md, png = path.with_suffix(".md"), path.parent / "figures" / f"{path.stem}.png"
    if not args.report:
        for level in args.levels:
            for seed in (int(s) for s in args.seeds.split(",")):
                work = Path(args.work_dir) / f"{level.rstrip('%')}-s{seed}"
                res = decoder.main(["--target", args.shapes[level], "--seed", str(seed), "--steps", str(args.steps),
                                    "--variants", args.variants, "--work_dir", str(work),
                                    "--out", str(work / "results.json"), *args.decoder_args.split()],
                                   reuse=recorded_rows(out))
                out["teacher_eval"] = res["teacher_eval"]
                for name, row in res["runs"].items():
                    out["levels"][level] = {"target": args.shapes[level], "params": row["params"], "steps": args.steps}
                    out["cells"].setdefault(f"{level}/{name}", {"seeds": {}})["seeds"][str(seed)] = row
                summarise(out)
                path.write_text(json.dumps(out, indent=1) + "\n")  # after every seed: a stopped grid keeps its runs
    summarise(out)
    path.write_text(json.dumps(out, indent=1) + "\n")
    write_report(out, md, png)
    return out


if __name__ == "__main__":
    main()
