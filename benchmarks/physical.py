"""Part 2 (`--only physical`): the same whole run with `--pruning_mode physical` and `masks`, in lock-step in one
process: training gets cheaper as it prunes; its README section, summary rows and plot."""

from __future__ import annotations

import json
import statistics
import time

from benchmarks.common import DISTILL, Bench, log
from benchmarks.helpers import command_line, eval_history, fmt, phase_stats, save_figure, table

TITLE = "\n## 2. ★ Training gets cheaper as it prunes: physical compaction vs masks\n"


def run(b: Bench) -> None:
    """`results["physical_vs_masks"]`: training and evaluation time of each mode, their ratio (overall, per phase,
    and modelled for other pruning windows), and each student's STS-B zero-shot Spearman."""
    from benchmarks.lockstep import Lockstep, distill_in_thread
    from homodistil_hf.config import default_prune_end, resolve_step

    seed = b.cfg["seeds"][0]
    work = b.work / "physical"
    # Today's default pruning window (no --prune_end: 0.25 of training for this encoder), issue 21's re-measure.
    argvs = {mode: b.distill_argv(work / mode, seed, ["--pruning_mode", mode], pin=False)
             for mode in ("physical", "masks")}
    ls = Lockstep(list(argvs))
    log("physical: lock-step of the same run with --pruning_mode physical and masks")
    t0 = time.perf_counter()
    ls.run({mode: distill_in_thread(ls, mode, argv) for mode, argv in argvs.items()})
    wall = time.perf_counter() - t0
    if ls.errors:
        raise RuntimeError("physical/masks failed:\n" + "\n".join(ls.errors.values()))
    steps = b.cfg["steps"]
    end = resolve_step(default_prune_end(causal_lm=False), steps)
    out = {"commands": {m: command_line(DISTILL, a) for m, a in argvs.items()}, "lockstep_wall_s": wall,
           "prune_end_step": end, "runs": {}}
    for mode in argvs:
        segs = ls.steps(mode)
        secs = [x.seconds for x in segs]
        state = json.loads((work / mode / "trainer_state.json").read_text())
        out["runs"][mode] = {
            "train_s": sum(secs), "eval_s": sum(x.excluded for x in ls.segments[mode]),
            "setup_s": sum(x.seconds for x in ls.segments[mode] if x.label == "setup"),
            "step_s": secs, "widths_hidden": [x.info.get("hidden") for x in segs],
            "history": eval_history(state["log_history"]), **b.evaluate_student(work / mode)}
    p, m = out["runs"]["physical"], out["runs"]["masks"]
    out["flops_ratio"] = flops_ratio(b, steps)
    out["train_time_ratio"] = p["train_s"] / m["train_s"]
    out["train_plus_eval_time_ratio"] = (p["train_s"] + p["eval_s"]) / (m["train_s"] + m["eval_s"])
    out["stsb_difference"] = p["stsb_spearman"] - m["stsb_spearman"]
    phases = phase_stats(list(zip(p["step_s"], m["step_s"])), 0, end)
    out["phases"] = phases
    # What the whole-run ratio would be with the pruning window ending at fraction e of training (same per-step
    # costs): e * r_during + (1 - e) * r_after, in time-weighted form.
    if "during" in phases and "after" in phases:
        d, a = phases["during"], phases["after"]
        mask_step = statistics.fmean(m["step_s"][1:])
        out["modelled_ratio_vs_prune_end"] = {
            str(e): (e * d["mean_s"] * 1 + (1 - e) * a["mean_s"]) / mask_step for e in (0.1, 0.25, 0.5, 0.75)}
        out["after_pruning_step_ratio"] = a["ratio_of_means"]
    b.results["physical_vs_masks"] = out
    log(f"physical: train time ratio {out['train_time_ratio']:.3f}; STS-B physical {p['stsb_spearman']:.4f} masks "
        f"{m['stsb_spearman']:.4f}")


def flops_ratio(b: Bench, steps: int) -> float:
    """The ratio the two modes' training FLOPs give (`benchmarks/equal_cost.py`'s count: 3 x the student's forward + the
    teacher's forward per token, the physical student's widths from the default schedule, the masked one at the
    teacher's width all run): what the time ratio would be if every step's time were proportional to its FLOPs."""
    from transformers import AutoConfig

    from benchmarks.equal_cost import forward_flops_per_token, run_flops
    from homodistil_hf.arch import shape_of
    from homodistil_hf.pruning.targets import check_target

    config = AutoConfig.from_pretrained(b.teacher)
    tokens, seq = b.cfg["batch"] * b.cfg["seq"], b.cfg["seq"]
    target = check_target(config, *b.target)
    physical = run_flops(config, target, "homodistil", steps, tokens, seq)
    return physical / (steps * tokens * 4 * forward_flops_per_token(config, shape_of(config), seq))


def summary_rows(results: dict, goals: dict) -> list[list]:
    """The summary table\'s rows of goal 2 (only when the part has run)."""
    phys = results["physical_vs_masks"]
    v = phys.get("train_time_ratio")
    return [["2 ★ training time, `--pruning_mode physical` / `masks` (whole run)", fmt(v), "<= 0.5",
             fmt(v is not None and v <= goals.get("physical_vs_masks_wall", 0.5))],
            ["2 STS-B physical - masks", fmt(phys.get("stsb_difference"), 4), "within noise", "see below"]]


def section(results: dict, figures: dict) -> list[str]:
    """README section 2 (`TITLE` above it; only when the part has run)."""
    out: list[str] = []
    w = out.append
    phys = results["physical_vs_masks"]
    cfg = results.get("meta", {}).get("config", {})
    p, mk = phys["runs"]["physical"], phys["runs"]["masks"]
    w("The default recipe's full cubic-schedule command (today's pruning window: the targets reached at step "
      f"{phys['prune_end_step']}, a quarter of training; seed {cfg.get('seeds', ['?'])[0]}), once with "
      "`--pruning_mode physical` and once with `--pruning_mode masks`, "
      "run in lock-step in one process (alternating optimizer steps, so both see the same machine load). "
      "Training time = the sum of each run's own steps (evaluation every "
      f"{cfg.get('eval_steps')} steps timed separately).\n")
    w(table(["mode", "training s", "evaluation s", "STS-B zero-shot", "exported params"], [
        ["physical", fmt(p["train_s"], 1), fmt(p["eval_s"], 1), fmt(p["stsb_spearman"], 4), fmt(p["params"])],
        ["masks", fmt(mk["train_s"], 1), fmt(mk["eval_s"], 1), fmt(mk["stsb_spearman"], 4), fmt(mk["params"])]]))
    w(f"\nTraining time ratio physical / masks: **{phys['train_time_ratio']:.3f}** (goal <= 0.5); with evaluation "
      f"{phys['train_plus_eval_time_ratio']:.3f}. STS-B difference {phys['stsb_difference']:+.4f}.")
    if "flops_ratio" in phys:
        w(f"\nThe two runs' training FLOPs (`benchmarks/equal_cost.py`'s count) are in the ratio "
          f"**{phys['flops_ratio']:.3f}**: the bound on the time ratio if each step cost time in proportion to its "
          "FLOPs. With the goal at 0.5 nothing is left for what does not shrink with the student in proportion to "
          "its FLOPs (per-operation overheads that small matrices on 2 CPU cores do not amortise, the losses, the "
          "optimizer); the FLOPs themselves are held up by the teacher's forward pass at full size every step "
          "and the first 10 steps at the teacher's width before the first pruning step.")
    rows = [[ph, d["steps"], fmt(d["mean_s"]), fmt(d["reference_mean_s"]), fmt(d["ratio_of_means"])]
            for ph, d in phys.get("phases", {}).items()]
    if rows:
        w(f"\nPer phase (pruning ends at step {phys['prune_end_step']}):\n")
        w(table(["phase", "steps", "physical s/step", "masks s/step", "ratio"], rows))
    mr = phys.get("modelled_ratio_vs_prune_end")
    if mr:
        w("\nWhat the whole-run ratio would be if the pruning window ended earlier or later (same per-step costs: "
          "e x mean physical step during pruning + (1 - e) x mean physical step after, over the mean masks "
          "step): " + ", ".join(f"prune_end {e}: {v:.2f}" for e, v in mr.items()) + ".")
    if "physical_vs_masks" in figures:
        w(f"\n![physical vs masks]({figures['physical_vs_masks']})")
    w("\nSeveral processes: `--pruning_mode auto` (the default) is physical on one process; under DDP and FSDP2 "
      "the student is masked while it is pruned (a wrapped model's parameters cannot change shape) and compacted "
      "on every rank once pruning is done, so the rest of the run trains the small student there too "
      "(`homodistil_hf/compaction.py`; 2-rank DDP measured in [`ddp_compaction.json`](ddp_compaction.json), "
      "`python benchmarks/ddp_compaction.py`). The masked run computes the same function (tested in "
      "`tests/test_trainer.py::test_masks_and_physical_pruning_train_the_same_student`), and the exported model "
      "is the same compact stock model.")
    w("\n```bash\n" + "\n".join(phys["commands"].values()) + "\n```")
    return out


def plots(results: dict, fig_dir, plt) -> dict[str, str]:
    """Step time of both modes over the run, with the hidden width of the physical one (only when the part has run)."""
    phys = results["physical_vs_masks"]
    if not phys.get("runs"):
        return {}
    fig, ax1 = plt.subplots(figsize=(8, 3.6))
    for mode, r in phys["runs"].items():
        ax1.plot(range(1, len(r["step_s"]) + 1), r["step_s"], lw=1, label=f"--pruning_mode {mode}")
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
    return save_figure(fig, fig_dir, "physical_vs_masks")
