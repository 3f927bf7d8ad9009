"""Part 3b (`--only glue`): GLUE fine-tuning (SST-2, MRPC, RTE) of every quality student and the teacher with one
recipe; its accuracies join the quality table, and the recipe and commands are this module's lines of section 3."""

from __future__ import annotations

from benchmarks import quality
from benchmarks.common import GLUE_TASKS, Bench
from benchmarks.helpers import command_line


def run(b: Bench) -> None:
    """`results["glue"]`: {model: {seed: {task_acc, task_f1, task_wall_s}}} and `glue_recipe`; then the quality
    summary again (its averages include these accuracies)."""
    g = b.cfg["glue"]
    seeds = b.cfg.get("glue_seeds") or (b.cfg["seeds"] if b.cfg["glue_all_seeds"] else b.cfg["seeds"][:1])
    models = {("teacher", "42"): b.teacher}
    for v in quality.VARIANTS:
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
    quality.summarize(b)


def recipe_lines(results: dict) -> list[str]:
    """The fine-tuning recipe, under the quality table."""
    rec = results.get("glue_recipe")
    if not rec:
        return []
    def per_task(value) -> str:  # {"sst2": 2000, ...} -> "2000 (sst2) / ..."
        return " / ".join(f"{v} ({k})" for k, v in value.items()) if isinstance(value, dict) else str(value)

    return [f"\nGLUE recipe (every student and the teacher): `run_glue.py`, first {per_task(rec['train_samples'])} "
            f"training examples, epochs {per_task(rec['epochs'])}, batch {rec['batch']}, learning rate {rec['learning_rate']}, "
            f"warm-up 10%, max length {rec['max_seq_length']}, seed {rec['seed']}, evaluated on the {rec['eval']}; "
            "students of distillation seeds "
            f"{', '.join(results.get('quality_seeds', {}).get('glue', []) or ['(first)'])}."]


def command_lines(results: dict) -> list[str]:
    """The fine-tuning commands, at the end of section 3."""
    rec = results.get("glue_recipe")
    if not (rec and rec.get("commands")):
        return []
    return ["\nFine-tuning commands (per model; `--model_name_or_path` is the teacher or a student folder):\n",
            "```bash\n" + "\n".join(rec["commands"].values()) + "\n```"]
