#!/usr/bin/env python
"""Task-agnostic HomoDistil distillation. See `homodistil_hf/cli/run_distill.py` and `--help`."""

from homodistil_hf.cli.run_distill import cli

if __name__ == "__main__":
    cli()
