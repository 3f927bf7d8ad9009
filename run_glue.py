"""Fine-tune / evaluate on GLUE: see `homodistil_hf/cli/run_glue.py` (`python run_glue.py --help`)."""

from homodistil_hf.cli.run_glue import cli

if __name__ == "__main__":
    cli()
