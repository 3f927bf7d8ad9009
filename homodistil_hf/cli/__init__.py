"""Command-line entry points (`run_distill.py`, `run_glue.py`, `run_squad.py`)."""
