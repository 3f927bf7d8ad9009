"""Parts 4 (`--only schedules`, `--only importance`): the `homodistil` quality run with one change of pruning
schedule (the paper's Figure 3) or of importance metric, STS-B zero-shot; their README subsections and bar plots."""

from __future__ import annotations

from benchmarks.common import Bench
from benchmarks.helpers import fmt, save_figure, table
from benchmarks.quality import VARIANT_FLAGS, run_summary

# label -> (run name, extra run_distill flags). These run with the pinned window (--prune_end 0.5 unless named), the
# quality part with the library's default: their run folders are their own (the quality runs' are `<variant>-s<seed>`).
SCHEDULES = {
    "cubic, end 0.5": ("sched_cubic", []),
    "linear, end 0.5": ("sched_linear", ["--pruning_schedule", "linear"]),
    "one-shot at 0": ("sched_oneshot", VARIANT_FLAGS["oneshot_kd"]),
    "cubic, end 0.25 (the encoder default)": ("sched_end025", ["--prune_end", "0.25"]),
    "cubic, end 0.75": ("sched_end075", ["--prune_end", "0.75"]),
}
IMPORTANCES = {
    "sensitivity (default)": ("imp_sensitivity", []),
    "sensitivity per structure": ("imp_sensitivity_structure", ["--importance", "sensitivity_structure"]),
    "sensitivity per structure, no uncertainty": ("imp_sensitivity_structure_ema",
                                                  ["--importance", "sensitivity_structure_ema"]),
    "squared sensitivity per structure": ("imp_sensitivity_structure_sq", ["--importance", "sensitivity_structure_sq"]),
    "group Taylor per structure": ("imp_taylor_structure", ["--importance", "taylor_structure"]),
    "magnitude": ("imp_magnitude", ["--importance", "magnitude"]),
    "activation": ("imp_activation", ["--importance", "activation"]),
    "random": ("imp_random", ["--importance", "random"]),
}
# results["ablations"] key -> (table, README title, plot title)
ABLATIONS = {"schedule": (SCHEDULES, "Final quality vs schedule (paper Figure 3)",
                          "Final quality vs pruning schedule (paper Fig. 3)"),
             "importance": (IMPORTANCES, "Importance metric ablation", "Importance metric ablation")}


def _ablation(b: Bench, key: str) -> None:
    seed = b.cfg["seeds"][0]
    out = {}
    for label, (name, extra) in ABLATIONS[key][0].items():
        rec = b.distill(name, seed, extra)
        out[label] = {"run": name, **run_summary(rec)}
    b.results.setdefault("ablations", {})[key] = out


def run_schedules(b: Bench) -> None:
    """`results["ablations"]["schedule"]`: one row per entry of SCHEDULES (first seed)."""
    _ablation(b, "schedule")


def run_importance(b: Bench) -> None:
    """`results["ablations"]["importance"]`: one row per entry of IMPORTANCES (first seed)."""
    _ablation(b, "importance")


def plots(results: dict, fig_dir, plt) -> dict[str, str]:
    """One bar plot of STS-B per ablation that has run, with the teacher's as a line (only when the part has run)."""
    written = {}
    for key, (_, _, title) in ABLATIONS.items():
        abl = results.get("ablations", {}).get(key)
        if not abl:
            continue
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
        written.update(save_figure(fig, fig_dir, key))
    return written


def section(results: dict, figures: dict) -> list[str]:
    """README subsections of part 4: one table per ablation."""
    cfg = results.get("meta", {}).get("config", {})
    out = []
    w = out.append
    for key, (_, title, _) in ABLATIONS.items():
        w(f"\n### {title}\n")
        abl = results.get("ablations", {}).get(key)
        if not abl:
            w("Not run yet.")
            continue
        w(f"Same command as `homodistil` with the pinned window `--prune_end 0.5` (seed {cfg.get('seeds', ['?'])[0]}) "
          "with one change; the mean over seeds is shown where a row was measured at several (recorded when the "
          "quality part ran with the same pinned window).\n")
        rows = []
        for label, r in abl.items():
            seeds = r.get("stsb_seeds")
            rows.append([label, f"`{r['run']}`", fmt(r["stsb_spearman"], 4),
                         f"{fmt(r['stsb_mean_over_seeds'], 4)} ({', '.join(fmt(s, 4) for s in seeds)})" if seeds else "–",
                         fmt(r.get("final_eval_loss"), 4), fmt(r.get("train_runtime"), 0)])
        w(table(["setting", "run", "STS-B ρ", "mean over seeds (each)", "final held-out eval_loss",
                 "train runtime s (standalone, noisy)"], rows))
        if key in figures:
            w(f"\n![{key}]({figures[key]})")
    return out
