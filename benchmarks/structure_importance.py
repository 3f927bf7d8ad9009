"""Per-weight vs per-structure sensitivity (issue 13): the same distillation run with each (and the per-structure
variant without its uncertainty factor), STS-B zero-shot of the students, and the training-memory increase of each
(memory probe), side by side in one run. Finished runs are reused (same command), as in `run.py`.

    python benchmarks/structure_importance.py            # writes benchmarks/structure_importance.json

Uses the benchmark's recipe (`benchmarks/run.py`: MiniLM teacher, brown.txt first 6000 lines, 192/6/768, 150 steps,
seed 42) and its run records, so the numbers compare with the importance ablation of `results.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks import run  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    args = run.parse(["--only", "importance", *(argv or [])])
    bench = run.Bench(args)
    seed = bench.cfg["seeds"][0]
    out: dict = {"seed": seed, "runs": {}}
    for label in ("sensitivity (default)", "sensitivity per structure", "sensitivity per structure, no uncertainty"):
        name, extra = run.IMPORTANCES[label]
        rec = bench.distill(name, seed, extra)
        out["runs"][label] = {"run": name, **run._run_summary(rec)}
    saved = bench.results  # the memory part writes into bench.results: keep the recorded results.json apart
    bench.results = {}
    run.part_memory(bench)
    out["memory"] = bench.results["memory"]
    bench.results = saved
    path = Path(args.work_dir).resolve().parent / "structure_importance.json" if args.quick else \
        HERE / "structure_importance.json"
    path.write_text(json.dumps(run._clean(out), indent=1) + "\n")
    print(json.dumps({k: v.get("stsb_spearman") for k, v in out["runs"].items()}))
    print(json.dumps({k: (round(v["increase_mb"]), round(v["increase_vs_reference"], 3),
                          round(v["peak_vs_reference"], 3)) for k, v in out["memory"]["runs"].items()}))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
