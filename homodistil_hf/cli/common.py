"""Shared plumbing for the scripts: argument parsing (flags or one JSON file) and one-line user errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from transformers import HfArgumentParser

from ..errors import UserError

logger = logging.getLogger("homodistil_hf")


class OneLineArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose errors are a single line (argparse prints the whole usage block otherwise)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (run with --help to list the flags)")


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Parse `argv` into the dataclasses, from flags or from a single `.json` file, like the transformers examples."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = OneLineArgumentParser(dataclass_types)
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            path = Path(argv[0])
            if not path.is_file():
                raise UserError(f"config file {argv[0]} does not exist: pass an existing JSON file or use flags")
            return parser.parse_json_file(json_file=os.path.abspath(path))
        return parser.parse_args_into_dataclasses(args=argv)
    except UserError:
        raise
    except ValueError as err:  # raised by a dataclass __post_init__ (ours or TrainingArguments')
        raise UserError(" ".join(str(err).split())) from None


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> Any:
    """Run `main(argv)`; a `UserError` becomes one line on stderr and exit status 2."""
    try:
        return main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def setup_logging(level: int = logging.INFO) -> None:
    """Plain, single-line logging for scripts (the Trainer's own logging follows `--log_level`)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level, stream=sys.stderr)
