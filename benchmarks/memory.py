"""Part 1c (`--only memory`): peak RSS while training, a fresh process per run ([`memory_probe.py`](memory_probe.py)):
the plain PyTorch reference and run_distill with and without pruning; its README section and summary row."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.common import HERE, ROOT, Bench, log
from benchmarks.helpers import command_line, fmt, table

TITLE = "\n## 1c. Peak memory\n"

STRUCTURE, TAYLOR = ["--importance", "sensitivity_structure"], ["--importance", "taylor_structure"]
MASKS = ["--pruning_mode", "masks"]
# run name -> (output folder, extra run_distill flags, with the student targets)
TRAINER_RUNS = {
    "trainer_equal_shape": ("equal", [], False),
    "trainer_pruning_physical": ("physical", [], True),
    "trainer_pruning_masks": ("masks", MASKS, True),
    "trainer_pruning_structure_physical": ("structure_physical", STRUCTURE, True),
    "trainer_pruning_structure_masks": ("structure_masks", STRUCTURE + MASKS, True),
    "trainer_pruning_taylor_physical": ("taylor_physical", TAYLOR, True),
    "trainer_pruning_taylor_masks": ("taylor_masks", TAYLOR + MASKS, True),
}


def run(b: Bench) -> None:
    """`results["memory"]`: per run the RSS before training, the peak while training, the increase, and both
    relative to the reference's."""
    n = b.cfg["memory"]["steps"]
    work = b.work / "memory"
    probe = str(HERE / "memory_probe.py")
    variants = {"reference": [probe, "reference", "--teacher", b.teacher, "--train_file", str(b.train_file),
                              "--steps", str(n), "--batch", str(b.cfg["batch"]), "--seq", str(b.cfg["seq"])]}
    for name, (folder, extra, targets) in TRAINER_RUNS.items():
        variants[name] = [probe, "distill", *b.distill_argv(work / folder, 42, extra, False, targets, n)]
    out = {"steps": n, "definition": "RSS of a fresh process sampled every 2 ms: increase_mb = peak while training "
           "- RSS just before the first step (models, data and optimizer object already built)", "runs": {}}
    for name, cmd in variants.items():
        log(f"memory: {name}")
        if b.args.inprocess:  # tests: the code path only (RSS of a shared process means little)
            from benchmarks import memory_probe

            probe_out = memory_probe.main(cmd[1:])
        else:
            proc = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, cwd=ROOT)
            line = [x for x in proc.stdout.splitlines() if x.startswith("MEMORY_PROBE ")]
            if proc.returncode != 0 or not line:
                raise RuntimeError(f"memory probe {name} failed:\n{proc.stderr[-3000:]}")
            probe_out = json.loads(line[-1].split(" ", 1)[1])
        probe_out.pop("ru_maxrss_mb", None)
        out["runs"][name] = {**probe_out, "command": command_line(cmd[0], cmd[1:], script_path=True)}
    ref = out["runs"]["reference"]
    for r in out["runs"].values():
        r["increase_vs_reference"] = r["increase_mb"] / max(ref["increase_mb"], 1e-9)
        r["peak_vs_reference"] = r["peak_train_mb"] / ref["peak_train_mb"]
    b.results["memory"] = out
    log("memory: " + ", ".join(f"{k} +{v['increase_mb']:.0f} MB (peak {v['peak_train_mb']:.0f})"
                               for k, v in out["runs"].items()))


def summary_rows(results: dict, goals: dict) -> list[list]:
    """The summary table\'s row of 1c (reported, no goal) (only when the part has run)."""
    mem = results["memory"].get("runs", {})
    if not mem:
        return []
    v = mem.get("trainer_pruning_physical", {}).get("peak_vs_reference")
    return [["1c peak RSS while training, run_distill with pruning / reference", fmt(v), "(report)", "–"]]


def section(results: dict, figures: dict) -> list[str]:
    """README section 1c (`TITLE` above it; only when the part has run)."""
    out: list[str] = []
    memo = results["memory"]
    cfg = results.get("meta", {}).get("config", {})
    out.append("RSS of a fresh process per run, sampled every 2 ms: increase = peak while training - RSS just before "
               f"the first step (models, data and optimizer object already built); {memo['steps']} steps each, batch "
               f"{cfg.get('batch')}, seq {cfg.get('seq')}. No GPU "
               "here (on CUDA the same probe would read `torch.cuda.max_memory_allocated`).\n")
    rows = [[k, fmt(r["rss_before_mb"], 0), fmt(r["peak_train_mb"], 0), fmt(r["increase_mb"], 0),
             fmt(r["increase_vs_reference"], 2), fmt(r["peak_vs_reference"], 2)] for k, r in memo["runs"].items()]
    out.append(table(["run", "RSS before training (MB)", "peak while training (MB)", "increase (MB)",
                      "increase / reference", "peak / reference"], rows))
    out.append("\n```bash\n" + "\n".join(r["command"] for r in memo["runs"].values()) + "\n```")
    return out
