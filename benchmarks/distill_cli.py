"""`python benchmarks/distill_cli.py <run_distill flags>`: `python run_distill.py`, with the benchmark's importance
ablations registered (`--importance sensitivity_structure`, ...: see importance_ablations.py).

The benchmark commands recorded in results.json name this file.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchmarks.importance_ablations  # noqa: E402, F401  (registers the ablation metrics)
from homodistil_hf.cli.run_distill import cli  # noqa: E402

if __name__ == "__main__":
    cli()
