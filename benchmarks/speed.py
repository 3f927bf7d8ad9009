"""Part 1a (`--only speed`): the trainer's step time against a plain PyTorch reference, run in lock-step in one
process ([`lockstep.py`](lockstep.py), [`reference.py`](reference.py)); its README section, summary rows and plot."""

from __future__ import annotations

import statistics

from benchmarks.common import DISTILL, Bench, flag_value, log
from benchmarks.helpers import command_line, fmt, phase_stats, ratio_stats, save_figure, table

TITLE = "\n## 1a. Training step vs a plain PyTorch reference\n"


def run(b: Bench) -> None:
    """`results["speed"]`: per trainer run (equal shape, pruning, late pruning, masks) its step times next to the
    reference's, their ratios overall and per pruning phase."""
    from transformers import AutoModel, AutoTokenizer

    from benchmarks.lockstep import Lockstep, distill_in_thread
    from benchmarks.reference import ReferenceDistiller, batches, pack
    from homodistil_hf.config import resolve_step

    s = b.cfg["speed"]
    work = b.work / "speed"
    participants = {"equal": (s["equal_steps"], [], False),
                    "prune": (s["prune_steps"], [], True)}
    if s["late_start"]:
        participants["prune_late"] = (s["prune_steps"], ["--prune_start", "0.2", "--prune_end", "0.6"], True)
    participants["prune_masks"] = (s["prune_steps"], ["--pruning_mode", "masks"], True)
    ref_steps = max(n for n, _, _ in participants.values())
    argvs = {name: b.distill_argv(work / name, 42, extra, evaluate=False, targets=targets, steps=n)
             for name, (n, extra, targets) in participants.items()}
    ls = Lockstep(["reference", *participants])
    ref_breakdown = []

    def reference_body():
        import torch

        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(b.teacher)
        lines = b.train_file.read_text().splitlines()
        blocks = pack(tokenizer, lines, b.cfg["seq"], b.cfg["batch"] * ref_steps)
        ref = ReferenceDistiller(AutoModel.from_pretrained(b.teacher), lr=b.cfg["lr"], max_steps=ref_steps,
                                 record_timings=True)
        it = batches(blocks, b.cfg["batch"])
        ls.mark("reference", "setup")
        for i in range(ref_steps):
            ref.step(next(it))
            ref_breakdown.append(ref.last_timings)
            ls.step("reference", "step", global_step=i + 1)

    bodies = {"reference": reference_body}
    bodies.update({name: distill_in_thread(ls, name, argvs[name]) for name in participants})
    log(f"speed: lock-step of reference ({ref_steps} steps) and {', '.join(participants)}")
    ls.run(bodies)
    if ls.errors:
        raise RuntimeError("speed participants failed:\n" + "\n".join(ls.errors.values()))

    ref = [seg.seconds for seg in ls.steps("reference")]
    out = {"unit": "seconds per optimizer step (median / mean over steps 2..N; step 1 is warm-up)",
           "batch": b.cfg["batch"], "seq": b.cfg["seq"], "reference_steps": ref_steps,
           "reference_breakdown_median_s": {k: statistics.median(t[k] for t in ref_breakdown[1:] or ref_breakdown)
                                            for k in (ref_breakdown[0] if ref_breakdown else {})},
           "commands": {name: command_line(DISTILL, argv) for name, argv in argvs.items()},
           "runs": {}}
    for name, (n, extra, targets) in participants.items():
        segs = ls.steps(name)
        mine = [x.seconds for x in segs]
        pairs = list(zip(mine, ref))[1:]
        entry = {"steps": len(mine), "step_s": mine, "reference_step_s": ref[:len(mine)],
                 **ratio_stats(pairs)}
        if targets:
            start = resolve_step(flag_value(extra, "prune_start"), n)
            end = resolve_step(flag_value(extra, "prune_end"), n)
            entry["prune_start_step"], entry["prune_end_step"] = start, end
            entry["phases"] = phase_stats(list(zip(mine, ref)), start, end)
            entry["widths"] = [seg.info.get("hidden") for seg in segs]
        out["runs"][name] = entry
    out["trainer_vs_reference_equal_shape"] = out["runs"]["equal"]["ratio_of_means"]
    out["trainer_vs_reference_pruning_run"] = out["runs"]["prune"]["ratio_of_means"]
    b.results["speed"] = out
    eq, pr = out["runs"]["equal"], out["runs"]["prune"]
    log(f"speed: equal-shape trainer/reference {eq['ratio_of_means']:.3f} (median of paired ratios "
        f"{eq['median_paired_ratio']:.3f}); pruning run {pr['ratio_of_means']:.3f}")


def summary_rows(results: dict, goals: dict) -> list[list]:
    """The summary table\'s rows of goal 1a (only when the part has run)."""
    sp = results["speed"]
    v = sp.get("trainer_vs_reference_equal_shape")
    rows = [["1a trainer step / plain PyTorch step, equal shapes (no pruning)", fmt(v), "<= 1.05",
             fmt(v is not None and v <= goals.get("trainer_vs_reference_equal_shape", 1.05))]]
    v = sp.get("trainer_vs_reference_pruning_run")
    rows.append(["1a run_distill step (hidden+attn loss, pruning, default schedule) / reference, whole run", fmt(v),
                 "<= 1.15", fmt(v is not None and v <= goals.get("trainer_vs_reference_pruning_run", 1.15))])
    return rows


def plots(results: dict, fig_dir, plt) -> dict[str, str]:
    """Step times of every trainer run and of the reference (only when the part has run)."""
    speed = results["speed"]
    if not speed.get("runs"):
        return {}
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ref = None
    for name, r in speed["runs"].items():
        ax.plot(range(1, len(r["step_s"]) + 1), r["step_s"], label=f"HomoDistilTrainer: {name}", lw=1)
        if ref is None or len(r["reference_step_s"]) > len(ref):
            ref = r["reference_step_s"]
    if ref:
        ax.plot(range(1, len(ref) + 1), ref, "k--", lw=1, label="plain PyTorch reference (full shape)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("seconds / step")
    ax.set_title("Training step time, lock-step with the reference")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, fig_dir, "speed_steps")


def section(results: dict, figures: dict) -> list[str]:
    """README section 1a (`TITLE` above it; only when the part has run)."""
    out: list[str] = []
    w = out.append
    sp = results["speed"]
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
        rows.append([name, r["steps"], fmt(r["mean_s"]), fmt(r["reference_mean_s"]), fmt(r["ratio_of_means"]),
                     fmt(r["median_paired_ratio"]), f"{fmt(r['paired_ratio_iqr'][0])}–{fmt(r['paired_ratio_iqr'][1])}"])
    w(table(["trainer run", "steps", "trainer s/step", "reference s/step", "ratio of means",
             "median paired ratio", "IQR of paired ratios"], rows))
    w("\nPer phase of the pruning runs (phase of the optimizer step index k: before k < prune_start, during "
      "prune_start <= k <= prune_end, after):\n")
    rows = []
    for name, r in sp["runs"].items():
        for ph, p in (r.get("phases") or {}).items():
            rows.append([name, f"{ph} ({r['prune_start_step']}..{r['prune_end_step']})", p["steps"],
                         fmt(p["mean_s"]), fmt(p["reference_mean_s"]), fmt(p["ratio_of_means"]),
                         fmt(p["median_paired_ratio"])])
    if rows:
        w(table(["run", "phase", "steps", "trainer s/step", "reference s/step", "ratio of means",
                 "median paired ratio"], rows))
    bd = sp.get("reference_breakdown_median_s")
    if bd:
        total = sum(bd.values())
        w("\nWhere a reference step's time goes (median seconds): " + ", ".join(
            f"{k.replace('_', ' ')} {v:.3f} ({100 * v / total:.0f}%)" for k, v in bd.items()) + ".")
    if "speed_steps" in figures:
        w(f"\n![step times]({figures['speed_steps']})")
    w("\nCommands (each run in lock-step with the reference inside `python benchmarks/run.py --only speed`):\n")
    w("```bash\n" + "\n".join(sp["commands"].values()) + "\n```")
    return out
