"""Fine-tune / evaluate on SQuAD v1.1 / v2.0: see `homodistil_hf/cli/run_squad.py` (`python run_squad.py --help`)."""

from homodistil_hf.cli.run_squad import cli

if __name__ == "__main__":
    cli()
