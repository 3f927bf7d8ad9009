"""Shared plumbing for the scripts: argument parsing (flags or one JSON file) and one-line user errors."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
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
            return parser.parse_dict(_read_json_config(argv[0], dataclass_types))
        *parsed, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
        if unknown:
            raise UserError(f"unrecognised arguments: {' '.join(unknown)} (run with --help to list the flags)")
        return tuple(parsed)
    except UserError:
        raise
    except ValueError as err:  # raised by a dataclass __post_init__ (ours or TrainingArguments')
        raise UserError(" ".join(str(err).split())) from None
    except ImportError as err:  # e.g. --deepspeed without the deepspeed package (TrainingArguments checks)
        # transformers registers the DeepSpeed config globally before checking the package: unregister the
        # half-built one, or every later model built in this process would consult it.
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
        text = " ".join(str(err).split())
        found = re.search(r"'([^']+)' distribution", text)
        need = found.group(1) if found else text
        raise UserError(f"a flag needs {need}, which is not installed: pip install '{need}', or drop the flag that "
                        "needs it (e.g. --deepspeed needs deepspeed)") from None


def _read_json_config(path: str, dataclass_types: Sequence[type]) -> dict[str, Any]:
    """A JSON config's keys and values, refusing a missing file, invalid JSON and keys that are not flags."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file {path} does not exist: pass an existing JSON file or use flags")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"config file {path} is not valid JSON ({err}): fix it or use flags") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold one JSON object of flag names and values")
    known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UserError(f"config file {path}: unknown keys {', '.join(unknown)} (keys are the flag names of --help, "
                        "without the leading --)")
    return data


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
