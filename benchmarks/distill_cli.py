"""`python benchmarks/distill_cli.py <run_distill flags>`: the same as `python run_distill.py`.

The benchmark commands recorded in results.json name this file: it once added the evaluation loss for head-less
teachers on raw text, which `HomoDistilTrainer.prediction_step` now does itself. It stays so those commands run as
written.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from homodistil_hf.cli.run_distill import cli  # noqa: E402

if __name__ == "__main__":
    cli()
