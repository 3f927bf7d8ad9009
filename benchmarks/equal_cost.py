"""Training cost of a run, counted (issue 20: the claim at equal cost): the FLOPs of every optimizer step from the
student's widths at that step (the pruning schedule replayed with the library's own `WidthSchedule`), and the number
of steps a one-shot baseline needs to spend what HomoDistil spends.

Per token, one step costs 3 x the student's forward (forward + backward) + 1 x the teacher's forward; a forward is
2 x the parameters of every matrix multiply (the embeddings are lookups, not counted) + 4 x layers x sequence length
x attention width (the two attention products). The importance statistics, the losses and the optimizer are left out
(small next to the matrix multiplies; the measured wall times beside the counts include them).

    python benchmarks/equal_cost.py                   # the MiniLM sweep's levels, 150 steps: FLOPs and equal steps
    python benchmarks/equal_cost.py --wall --out benchmarks/equal_cost.json   # and the measured training time
    python benchmarks/equal_cost.py --report          # equal_cost.md + figures/equal_cost.png from the sweep's runs

`--wall` also times the methods' runs (the sweep's commands without evaluation, seed 42) in lock-step in one process
(`lockstep.py`: one optimizer step of each in turn, so all see the same machine load): each run's training time is
the sum of its own steps.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# How each method's student changes width over a run (the sweep's methods: benchmarks/sweep.py).
SCHEDULES = {"homodistil": ("cubic", 0.0), "oneshot_sensitivity": ("oneshot", 0.1),
             "oneshot_activation": ("oneshot", 0.1), "truncate": ("truncate", 0.0)}


def forward_flops_per_token(teacher_config, shape, seq: int) -> float:
    """2 x the weights of every matrix multiply (nn.Linear; a causal LM's head included) + 4 x layers x seq x attention
    width, for the teacher cut to `shape` (built on the meta device and sliced by the library's surgery, so that the
    widths in the middle of a schedule, which a stock config may refuse, count too)."""
    import torch
    from torch import nn
    from transformers import AutoModel, AutoModelForCausalLM

    from homodistil_hf.arch import get_adapter, shape_of
    from homodistil_hf.pruning.state import LayerKeep, PruningState, selection_between
    from homodistil_hf.pruning.surgery import prune_model

    # A causal LM's head (hidden x vocabulary) is one of its largest matrix multiplies; it shrinks with the hidden size.
    auto = AutoModelForCausalLM if get_adapter(teacher_config).causal_lm else AutoModel
    with torch.device("meta"):
        model = auto.from_config(copy.deepcopy(teacher_config))  # (surgery writes the widths into its config)
    full, layers = shape_of(teacher_config), teacher_config.num_hidden_layers
    if shape != full:  # the first structures of each kind (which ones does not change the count)
        group, keep_group = full.group_size, shape.group_size
        heads = torch.tensor([g * group + j for g in range(shape.kv_heads) for j in range(keep_group)])
        dims = torch.arange(shape.head_dim).repeat(shape.heads, 1)
        kv = torch.arange(shape.kv_heads) if full.kv_heads != full.heads else None
        keep = LayerKeep(heads, dims, dims.clone(), torch.arange(shape.intermediate), kv)
        state = PruningState(torch.arange(shape.hidden), [keep] * layers)
        prune_model(model, selection_between(PruningState.full(full, layers), state))
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    return 2.0 * matmul + 4.0 * layers * seq * shape.heads * shape.head_dim


def run_flops(teacher_config, target, method: str, steps: int, tokens: int, seq: int,
              prune_end: float | None = None, every: int = 10, oneshot_start: float | None = None) -> float:
    """Training FLOPs of a whole run of `method` (see SCHEDULES) to `target` (a Shape) in `steps` steps; the pruning
    window ends at `prune_end` (default: the library's for the teacher's family), a one-shot method prunes at
    `oneshot_start` (default: SCHEDULES, the encoder sweep's 10% of training)."""
    from homodistil_hf.arch import get_adapter, shape_of
    from homodistil_hf.config import default_prune_end, resolve_step
    from homodistil_hf.pruning.schedule import WidthSchedule

    kind, start = SCHEDULES[method]
    if kind == "oneshot" and oneshot_start is not None:
        start = oneshot_start
    initial = shape_of(teacher_config)
    cache: dict = {}

    def student(shape) -> float:
        if shape not in cache:
            cache[shape] = forward_flops_per_token(teacher_config, shape, seq)
        return cache[shape]

    teacher = student(initial)
    if kind == "truncate":  # the small student from the first step
        return steps * tokens * (3 * student(target) + teacher)
    causal = get_adapter(teacher_config).causal_lm
    end = resolve_step(default_prune_end(causal) if prune_end is None else prune_end, steps)
    first = resolve_step(start, steps)
    schedule = WidthSchedule(initial, target, first, max(end, first), every, kind)
    widths, total = initial, 0.0
    for step in range(steps):
        total += tokens * (3 * student(widths) + teacher)
        if schedule.is_pruning_step(step):  # pruned after the step's backward (on_pre_optimizer_step): the next
            widths = schedule.widths_at(step)  # step is the first at the new widths
    return total


def equal_steps(teacher_config, target, method: str, budget: float, tokens: int, seq: int,
                oneshot_start: float | None = None) -> int:
    """The fewest steps of `method` whose FLOPs reach `budget`."""
    steps = 1
    while run_flops(teacher_config, target, method, steps, tokens, seq, oneshot_start=oneshot_start) < budget:
        steps += 1
    return steps


def measure_wall(a, target: list[int], work: Path, causal_lm: bool = False) -> dict:
    """Training seconds of each method's run (`--wall_methods` of SCHEDULES, with the sweep's flags: benchmarks/sweep.py
    METHODS, or benchmarks/decoder.py VARIANTS for a causal-LM teacher), timed in lock-step, and each over
    HomoDistil's."""
    from benchmarks.decoder import VARIANTS
    from benchmarks.helpers import brown_head
    from benchmarks.lockstep import Lockstep, distill_in_thread
    from benchmarks.sweep import METHODS

    work.mkdir(parents=True, exist_ok=True)
    train = a.train_file or brown_head(work / "train.txt")
    flags = {m: VARIANTS[m][1] for m in SCHEDULES} if causal_lm else METHODS
    kv = ["--target_num_key_value_heads", str(target[2])] if len(target) == 4 else []
    argvs = {m: ["--teacher_name_or_path", a.teacher, "--train_file", str(train), "--output_dir", str(work / m),
                 "--overwrite_output_dir", "--max_steps", str(a.steps), "--per_device_train_batch_size",
                 str(a.batch), "--max_seq_length", str(a.seq), "--learning_rate", "2e-4", "--seed", "42",
                 "--target_hidden_size", str(target[0]), "--target_num_attention_heads", str(target[1]), *kv,
                 "--target_intermediate_size", str(target[-1]), "--report_to", "none", "--use_cpu",
                 "--save_strategy", "no", "--disable_tqdm", "true", *flags[m]]
             for m in SCHEDULES if m == "homodistil" or m in a.wall_methods.split(",")}
    ls = Lockstep(list(argvs))
    ls.run({m: distill_in_thread(ls, m, argv) for m, argv in argvs.items()})
    if ls.errors:
        raise RuntimeError("\n".join(ls.errors.values()))
    seconds = {m: sum(x.seconds for x in ls.steps(m)) for m in argvs}
    return {"train_s": seconds, "ratio_to_homodistil": {m: v / seconds["homodistil"] for m, v in seconds.items()}}


def time_ratio(level: dict, method: str) -> float | None:
    """`method`'s measured training time over HomoDistil's (`--wall`), None if not timed; a one-shot method not timed
    itself takes one-shot activation's (they differ only in the statistic of the steps before the cut)."""
    wall = level.get("wall", {}).get("ratio_to_homodistil", {})
    return wall.get(method, wall.get("oneshot_activation") if method.startswith("oneshot") else None)


def budget_steps(level: dict, method: str, steps: int) -> int:
    """The steps that give `method` at least HomoDistil's cost by both counts: FLOPs and measured training time."""
    by_flops, wall = level["equal_cost_steps"][method], time_ratio(level, method)
    return max(by_flops, math.ceil(steps / wall - 1e-9) if wall else by_flops)


def report(cost_path: Path, results_path: Path, out_md: Path, fig_dir: Path) -> dict:
    """Per level of the encoder sweep: HomoDistil (150 steps) against each baseline at equal steps and at equal cost
    (`budget_steps`), STS-B zero-shot mean ± sd over seeds, the verdict of each; a plot of quality against cost."""
    from benchmarks.helpers import pyplot, save_figure
    from benchmarks.sweep import lead

    cost = json.loads(cost_path.read_text())
    runs = json.loads(results_path.read_text())["sweep"]["runs"]
    steps = cost["steps"]
    lines = ["# Equal cost: the encoder sweep's baselines given HomoDistil's training cost", "",
             f"Generated by `python benchmarks/equal_cost.py --report` from [`equal_cost.json`](equal_cost.json) (the "
             "cost counts: `python benchmarks/equal_cost.py --wall --out benchmarks/equal_cost.json`) and the sweep's "
             "runs in [`results.json`](results.json) (`python benchmarks/run.py --only sweep --sweep_levels L "
             "--sweep_steps S --sweep_methods M`). A baseline at equal cost trains for the steps that give it at least "
             f"HomoDistil's {steps}-step cost by both counts (FLOPs and lock-step training time); STS-B zero-shot "
             "Spearman, mean ± sd over seeds 42/43/44.", "",
             "| level | baseline | cost at equal steps (FLOPs / time) | steps at equal cost | STS-B at equal steps | "
             "STS-B at equal cost | HomoDistil | lead at equal steps | lead at equal cost |", "|---|---|---|---|---|---|---|---|---|"]
    verdict, points = {}, []
    for name, level in cost["levels"].items():
        ours = runs.get(f"{name}/{steps}/homodistil")
        if not ours:
            continue
        h = (ours["stsb_mean"], ours["stsb_sd"])
        points.append((name, "homodistil", 1.0, h[0]))
        same, equal = {}, {}
        for method in level["equal_cost_steps"]:
            n = budget_steps(level, method, steps)
            at_steps, at_cost = runs.get(f"{name}/{steps}/{method}"), runs.get(f"{name}/{n}/{method}")
            ratio_flops, ratio_wall = level["ratio_to_homodistil"][method], level["wall"]["ratio_to_homodistil"][method]
            row = [name, method, f"{ratio_flops:.3f} / {ratio_wall:.3f}", str(n)]
            for r, store in ((at_steps, same), (at_cost, equal)):
                if r:
                    store[method] = (r["stsb_mean"], r["stsb_sd"])
                row.append(f"{r['stsb_mean']:.3f} ± {r['stsb_sd']:.3f} (n={r['stsb_n']})" if r else "not run")
            row.append(f"{h[0]:.3f} ± {h[1]:.3f}")
            for store in (same, equal):
                if method in store:
                    v = lead(h, {method: store[method]})
                    row.append(f"{v['margin']:+.3f} ({'beyond' if v['ahead_beyond_spread'] else 'within'} the spread)")
                else:
                    row.append("–")
            if at_cost:
                points.append((name, method, max(ratio_flops, ratio_wall) * n / steps, at_cost["stsb_mean"]))
            if at_steps:
                points.append((name, method, ratio_flops, at_steps["stsb_mean"]))
            lines.append("| " + " | ".join(row) + " |")
        verdict[name] = {"equal_steps": lead(h, same) if same else None, "equal_cost": lead(h, equal) if equal else None}
    lines += ["", "Verdict against the best baseline of each level (margin, and whether it exceeds the larger sd):", ""]
    lines += verdict_lines(verdict, 3)
    decoder_lines, decoder_verdict = decoder_report(HERE / "equal_cost_decoder.json", HERE / "decoder_sweep.json",
                                                    [HERE / "decoder_equal_cost.json", HERE / "decoder_equal_time.json"])
    lines += decoder_lines
    verdict.update(decoder_verdict)
    plt = pyplot()
    figure = {}
    if plt is not None and points:
        fig, ax = plt.subplots(figsize=(7, 4))
        colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(p[1] for p in points))}
        markers = dict(zip(cost["levels"], "os^v", strict=False))
        for name, method, x, y in points:
            ax.scatter([x], [y], color=colours[method], marker=markers.get(name, "o"), s=22)
        for method, colour in colours.items():
            ax.scatter([], [], color=colour, label=method, s=18)
        for name, marker in markers.items():
            ax.scatter([], [], color="grey", marker=marker, label=f"level {name}", s=18)
        ax.set_xlabel("training cost / HomoDistil's (the larger of FLOPs and time ratios)")
        ax.set_ylabel("STS-B zero-shot (mean over seeds)")
        ax.set_title("Quality against cost, MiniLM sweep levels")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        figure = save_figure(fig, fig_dir, "equal_cost")
        lines += ["", f"![quality against cost]({figure['equal_cost']})"]
    out_md.write_text("\n".join(lines) + "\n")
    return verdict


def decoder_report(cost_path: Path, sweep_path: Path, equal_paths: list[Path]) -> tuple[list[str], dict]:
    """The decoder levels (SmolLM2-135M, `benchmarks/decoder_sweep.py`): HomoDistil's 120-step cell against each
    one-shot baseline at equal steps (the sweep's cells), at equal FLOPs and at equal cost (`budget_steps`: the larger
    of the FLOPs-matched and time-matched step counts; the baselines rerun for those steps are in `equal_paths`, one
    decoder_sweep.py file per length), held-out perplexity mean ± sd over seeds; lines and verdicts."""
    from benchmarks.sweep import lead

    if not (cost_path.is_file() and sweep_path.is_file()):
        return [], {}
    cost, sweep = json.loads(cost_path.read_text()), json.loads(sweep_path.read_text())
    equal = [json.loads(p.read_text()) for p in equal_paths if p.is_file()]

    def ran(record, name):  # the steps a level of a decoder_sweep.py file ran
        return record["levels"].get(name, {}).get("steps", record.get("steps"))

    def stat(cell):
        return (cell["heldout_ppl_mean"], cell["heldout_ppl_sd"], len(cell["seeds"])) if cell else None

    def at_steps(name, method, n):  # the baseline's cell at `n` steps, from whichever file ran that length
        cells = [r["cells"].get(f"{name}/{method}") for r in equal if ran(r, name) == n]
        return stat(next((c for c in cells if c), None))

    timed = any("wall" in level for level in cost["levels"].values())
    lines = ["", "## Decoder: SmolLM2-135M-Instruct, one-shot baselines given HomoDistil's cost", "",
             f"HomoDistil: the decoder sweep's {cost['steps']}-step cells ([`decoder_sweep.json`](decoder_sweep.json), "
             "today's decoder defaults, `--lr_rewind` included); the baselines at equal steps are the same sweep's cells, "
             "run with `--lr_rewind false` (the schedule runs on after their cut at step 10) and, as `*_rewind`, with "
             "`--lr_rewind` (the schedule starts again after the cut; the same cost). Their cost over "
             "HomoDistil's ([`equal_cost_decoder.json`](equal_cost_decoder.json): `python benchmarks/equal_cost.py "
             "--teacher <converted SmolLM2 folder> --steps 120 --batch 4 --seq 128 --levels "
             "'50%=384,6,2,1024;25%=270,3,1,720' --oneshot_start 10 --wall --wall_methods oneshot_activation "
             "--train_file <the sweep's train.txt> --out benchmarks/equal_cost_decoder.json`; one-shot prunes at step "
             "10, as in the sweep) is counted in FLOPs and, with `--wall`, measured as training time in lock-step "
             "(seed 42, one optimizer step of each run in turn in one process; one-shot sensitivity's time is taken as "
             "activation's, which differs only in the statistic of the first 10 steps). At equal FLOPs a baseline "
             "trains for the steps whose FLOPs reach HomoDistil's; at equal cost for the larger of that and the steps "
             "whose time does. Runs: [`decoder_equal_cost.json`](decoder_equal_cost.json), "
             "[`decoder_equal_time.json`](decoder_equal_time.json) (`python benchmarks/decoder_sweep.py --levels L "
             "--steps S --variants V --out <file> --work_dir benchmarks/_work/<file stem>`). "
             + ("" if timed else "Training time was not measured for the decoder: equal cost is equal FLOPs. ")
             + "Held-out perplexity (lower is better), mean ± sd (n seeds).", "",
             "| level | baseline | cost at equal steps (FLOPs / time) | steps at equal FLOPs / cost | perplexity at "
             "equal steps | at equal FLOPs | at equal cost | HomoDistil | lead at equal steps | lead at equal cost |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    verdict = {}
    for name, level in cost["levels"].items():
        ours = stat(sweep["cells"].get(f"{name}/homodistil"))
        if ours is None or ran(sweep, name) != cost["steps"]:
            continue
        same, at_cost = {}, {}
        # each one-shot baseline, and its `_rewind` twin (the same cut and cost, the rate restarted after it)
        methods = [m + r for m in level["equal_cost_steps"] if m != "truncate" for r in ("", "_rewind")
                   if not r or f"{name}/{m}{r}" in sweep["cells"]]
        for method in methods:
            base = method.removesuffix("_rewind")
            n_flops = level["equal_cost_steps"][base]
            ratio, n = time_ratio(level, base), budget_steps(level, base, cost["steps"])
            cells = (stat(sweep["cells"].get(f"{name}/{method}")), at_steps(name, method, n_flops),
                     at_steps(name, method, n))
            row = [name, method, f"{level['ratio_to_homodistil'][base]:.3f} / "
                   + (f"{ratio:.3f}" if ratio else "–"), f"{n_flops} / {n}"]
            row += [f"{c[0]:.1f} ± {c[1]:.1f} (n={c[2]})" if c else "not run" for c in cells]
            row.append(f"{ours[0]:.1f} ± {ours[1]:.1f} (n={ours[2]})")
            for c, store in ((cells[0], same), (cells[2], at_cost)):
                if c and c[2] < 2:  # one seed has no spread: shown, not judged
                    row.append(f"{c[0] - ours[0]:+.1f} (one seed)")
                elif c:
                    store[method] = c[:2]
                    v = lead(ours[:2], {method: c[:2]}, lower_is_better=True)
                    row.append(f"{v['margin']:+.1f} ({'beyond' if v['ahead_beyond_spread'] else 'within'} the spread)")
                else:
                    row.append("–")
            lines.append("| " + " | ".join(row) + " |")
        verdict[f"decoder {name}"] = {
            "equal_steps": lead(ours[:2], same, lower_is_better=True) if same else None,
            "equal_cost": lead(ours[:2], at_cost, lower_is_better=True) if at_cost else None}
    lines += ["", "Verdict against the best baseline of each level (perplexity margin, positive = HomoDistil lower):", ""]
    return lines + verdict_lines(verdict, 1), verdict


def verdict_lines(verdict: dict, digits: int) -> list[str]:
    """One line per level: each comparison's margin over the best baseline and whether it exceeds the spread."""
    def part(key: str, x: dict) -> str:
        return (f"{key.replace('_', ' ')}: {x['margin']:+.{digits}f} vs {x['best_baseline']} "
                f"({'beyond' if x['ahead_beyond_spread'] else 'within'} the spread)")
    return [f"- {name}: " + "; ".join(part(k, x) for k, x in v.items() if x) for name, v in verdict.items()]


def main(argv=None) -> dict:
    from transformers import AutoConfig

    from homodistil_hf.arch import get_adapter
    from homodistil_hf.pruning.targets import check_target
    from homodistil_hf.testing import minilm_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default=str(minilm_path(required=False) or ""))
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--levels", default="38%=192,6,768;22%=128,4,512;11%=64,2,256",
                   help="NAME=hidden,heads,FFN (or hidden,heads,kv_heads,FFN) separated by ';'")
    p.add_argument("--oneshot_start", type=float, default=None,
                   help="where the one-shot baselines prune (a fraction, or a step > 1; default 0.1)")
    p.add_argument("--out", default=None, help="write the table as JSON here")
    p.add_argument("--wall", action="store_true", help="also time the runs in lock-step (see above)")
    p.add_argument("--train_file", default=None, help="--wall: the corpus (default: the sweep's, 6,000 lines)")
    p.add_argument("--wall_levels", default=None, help="--wall: time only these levels (comma-separated names)")
    p.add_argument("--wall_methods", default=",".join(SCHEDULES),
                   help="--wall: the methods timed (comma-separated; homodistil always)")
    p.add_argument("--work_dir", default=str(HERE / "_work" / "equal_cost"))
    p.add_argument("--report", action="store_true", help="only write equal_cost.md and the plot (see above)")
    a = p.parse_args(argv)
    if a.report:
        return report(HERE / "equal_cost.json", HERE / "results.json", HERE / "equal_cost.md", HERE / "figures")
    config = AutoConfig.from_pretrained(a.teacher)
    tokens = a.batch * a.seq
    out = {"steps": a.steps, "tokens_per_step": tokens, "definition": __doc__.split("\n\n")[1].replace("\n", " "),
           "levels": {}}
    for item in a.levels.split(";"):
        name, _, dims = item.partition("=")
        numbers = [int(x) for x in dims.split(",")]
        hidden, heads, ffn = numbers[0], numbers[1], numbers[-1]
        target = check_target(config, hidden, heads, ffn, numbers[2] if len(numbers) == 4 else None)
        flops = {m: run_flops(config, target, m, a.steps, tokens, a.seq, oneshot_start=a.oneshot_start)
                 for m in SCHEDULES}
        budget = flops["homodistil"]
        out["levels"][name] = {
            "target": numbers, "flops": flops,
            "ratio_to_homodistil": {m: f / budget for m, f in flops.items()},
            "equal_cost_steps": {m: equal_steps(config, target, m, budget, tokens, a.seq, a.oneshot_start)
                                 for m in SCHEDULES if m != "homodistil"}}
        if a.wall and (a.wall_levels is None or name in a.wall_levels.split(",")):
            causal = get_adapter(config).causal_lm
            out["levels"][name]["wall"] = measure_wall(a, numbers, Path(a.work_dir) / name, causal_lm=causal)
        print(json.dumps({name: {k: v for k, v in out["levels"][name].items() if k != "flops"}}), flush=True)
    if a.out:
        if Path(a.out).is_file():  # a level not timed in this run keeps the training times measured before
            before = json.loads(Path(a.out).read_text()).get("levels", {})
            for name, level in out["levels"].items():
                if "wall" not in level and "wall" in before.get(name, {}):
                    level["wall"] = before[name]["wall"]
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
