"""Fine-tune / evaluate on GLUE: see `homodistil_hf/cli/run_glue.py` (`python run_glue.py --help`)."""

from homodistil_hf.cli.common import run_cli
from homodistil_hf.cli.run_glue import main

if __name__ == "__main__":
    run_cli(main)
