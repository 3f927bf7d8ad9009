"""Per-weight vs per-structure sensitivity (issue 13): the same distillation run with each (and the per-structure
variant without its uncertainty factor), STS-B zero-shot of the students, and the training-memory increase of each
(memory probe), side by side in one run. Finished runs are reused (same command), as in `run.py`.

    python benchmarks/structure_importance.py            # writes benchmarks/structure_importance.json
    python benchmarks/structure_importance.py --seeds 42,43,44 --skip_memory   # quality over three seeds
    python benchmarks/structure_importance.py --seeds 42,43,44 --skip_memory \
        --labels "sensitivity (default);group Taylor per structure"             # only these rows

Uses the benchmark's recipe (`benchmarks/run.py`: MiniLM teacher, brown.txt first 6000 lines, 192/6/768, 150 steps,
seed 42) and its run records, so the numbers compare with the importance ablation of `results.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import offline  # noqa: E402

offline()

from benchmarks import memory  # noqa: E402
from benchmarks.ablations import IMPORTANCES  # noqa: E402
from benchmarks.common import Bench, parse  # noqa: E402
from benchmarks.helpers import clean, mean_sd  # noqa: E402
from benchmarks.quality import run_summary  # noqa: E402

LABELS = ("sensitivity (default)", "sensitivity per structure", "sensitivity per structure, no uncertainty",
          "squared sensitivity per structure", "group Taylor per structure")


def main(argv: list[str] | None = None) -> dict:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--skip_memory", action="store_true", help="quality only (no memory probes)")
    own.add_argument("--labels", default=";".join(LABELS), help="rows to run, ';'-separated")
    mine, argv = own.parse_known_args(argv)  # the rest goes to benchmarks/run.py's parser (common.parse)
    labels = tuple(mine.labels.split(";"))
    unknown = set(labels) - set(LABELS)
    if unknown:
        raise SystemExit(f"--labels: unknown {sorted(unknown)}; choose from {'; '.join(LABELS)}")
    args = parse(["--only", "importance", "--seeds", "42", *argv])
    bench = Bench(args)
    path = Path(args.work_dir).resolve().parent / "structure_importance.json" if args.quick else \
        HERE / "structure_importance.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    out: dict = {"seeds": bench.cfg["seeds"], "runs": old.get("runs", {}), "memory": old.get("memory")}
    for label in labels:
        name, extra = IMPORTANCES[label]
        recs = {seed: bench.distill(name, seed, extra) for seed in bench.cfg["seeds"]}
        mean, sd = mean_sd([r["stsb_spearman"] for r in recs.values()])
        out["runs"][label] = {"run": name, "stsb_mean": mean, "stsb_sd": sd,
                              "seeds": {str(k): run_summary(r) for k, r in recs.items()}}
    if not mine.skip_memory:  # the memory part writes into bench.results: keep the recorded results.json apart
        saved, bench.results = bench.results, {}
        memory.run(bench)
        out["memory"], bench.results = bench.results["memory"], saved
    path.write_text(json.dumps(clean(out), indent=1) + "\n")
    print(json.dumps({k: (v["stsb_mean"], v["stsb_sd"]) for k, v in out["runs"].items()}))
    if out["memory"]:
        print(json.dumps({k: (round(v["increase_mb"]), round(v["increase_vs_reference"], 3),
                              round(v["peak_vs_reference"], 3)) for k, v in out["memory"]["runs"].items()}))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
