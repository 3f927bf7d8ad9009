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
See benchmarks/README.md for what each part measures; each part is a module of this folder (PART_FUNCS below), the
settings, command line and `Bench` are in common.py.
"""

from __future__ import annotations

import shutil
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import offline  # noqa: E402

offline()

from benchmarks import ablations, glue, inference, memory, physical, quality, speed, sweep  # noqa: E402
from benchmarks.common import OPT_IN_PARTS, PARTS, Bench, log, parse  # noqa: E402

PART_FUNCS = {"speed": speed.run, "inference": inference.run, "memory": memory.run, "physical": physical.run,
              "quality": quality.run, "glue": glue.run, "schedules": ablations.run_schedules,
              "importance": ablations.run_importance,
              "sweep": sweep.part_sweep}  # issue 12's grid, only with --only sweep (hours on 2 CPU cores)


def main(argv=None) -> dict:
    """Run the parts named by --only (in the order of PARTS), saving results.json and the README after each; a
    failing part is recorded under `errors` (and stops the run with --strict). Returns the results."""
    args = parse(argv, description=__doc__)
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
