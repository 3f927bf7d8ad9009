"""Shared plumbing for the scripts: argument parsing (flags or one JSON file) and one-line user errors."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn, get_type_hints

from transformers import HfArgumentParser, TrainingArguments

from ..errors import UserError

logger = logging.getLogger("homodistil_hf")


# --help sections, in the order they are printed: the project's own flags first, then the ~250 of TrainingArguments.
FIRST_GROUP = "teacher and data"
PRUNING_GROUP = "targets and pruning"
LOSS_GROUP = "losses"
OTHER_GROUP = "other HomoDistil flags"
TRAINING_GROUP = "training (transformers TrainingArguments)"
_TRAINING_FIELDS = [f.name for f in dataclasses.fields(TrainingArguments) if f.init]
_LOSS_FIELDS = {"temperature", "hidden_loss", "attn_loss", "pred_loss_positions", "layer_map", "hidden_projection",
                "jsd_beta", "kd_chunk_size"}
# Flags of ours that belong next to a TrainingArguments flag (transformers 5 dropped --overwrite_output_dir).
_TRAINING_EXTRAS = {"overwrite_output_dir": "output_dir"}


def flag_group(name: str, dtype: type) -> str:
    """The --help section of a dataclass field (by name, so that fields added to `HomoDistilConfig` land somewhere
    sensible without a table to update)."""
    if not (isinstance(dtype, type) and issubclass(dtype, TrainingArguments)):
        return FIRST_GROUP  # the script's own model / data dataclasses
    if name in _TRAINING_EXTRAS or (name in _TRAINING_FIELDS and name not in _own_fields(dtype)):
        return TRAINING_GROUP
    if name.startswith(("teacher_", "student_")):
        return FIRST_GROUP
    if name.startswith(("target_", "prune_", "pruning_", "importance")):
        return PRUNING_GROUP
    if name in _LOSS_FIELDS or name.startswith("alpha_") or "loss" in name:
        return LOSS_GROUP
    return OTHER_GROUP


@functools.cache
def _own_fields(dtype: type) -> frozenset[str]:
    """Fields a `TrainingArguments` subclass declares itself that are not TrainingArguments' (a re-declared
    TrainingArguments field, e.g. `adam_epsilon` with the paper's default, stays a training flag)."""
    return frozenset(f.name for f in dataclasses.fields(dtype) if f.init) - frozenset(_TRAINING_FIELDS)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """States each default once: `(default: X)` is appended only when the help does not talk about the default
    itself, and not for None (an unset flag; the help says what unset means)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default is None or re.search(r"\bdefault", help_text, re.IGNORECASE):
            return help_text
        return super()._get_help_string(action)


class OneLineArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose errors are a single line (argparse prints the whole usage block otherwise), and whose
    --help lists the project's flags first, in sections, before the TrainingArguments ones."""

    def __init__(self, dataclass_types: type | Iterable[type], **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        # A 150-line usage block of every flag says nothing the sections below do not; show the two call forms.
        kwargs.setdefault("usage", "%(prog)s [--flag value ...]  |  %(prog)s config.json")
        types = [dataclass_types] if dataclasses.is_dataclass(dataclass_types) else list(dataclass_types)
        super().__init__(None, **kwargs)  # the fields are added below, section by section
        self.dataclass_types = types
        # run_glue / run_squad fine-tune a --model_name_or_path (the teacher is optional there).
        fine_tuning = any(f.name == "model_name_or_path" for t in types for f in dataclasses.fields(t))
        titles = {FIRST_GROUP: "model, teacher and data" if fine_tuning else FIRST_GROUP}
        groups = {name: self.add_argument_group(titles.get(name, name))
                  for name in (FIRST_GROUP, PRUNING_GROUP, LOSS_GROUP, OTHER_GROUP, TRAINING_GROUP)}
        placed: dict[str, list[tuple[type, dataclasses.Field]]] = {name: [] for name in groups}
        for dtype in types:
            for f in dataclasses.fields(dtype):
                if f.init:
                    placed[flag_group(f.name, dtype)].append((dtype, f))
        # The model and the teacher (then the teacher's other flags) open the first section.
        placed[FIRST_GROUP].sort(key=lambda item: {"model_name_or_path": 0, "teacher_name_or_path": 1}.get(
            item[1].name, 1.5 if item[1].name.startswith("teacher_") else 2))
        order = {name: i for i, name in enumerate(_TRAINING_FIELDS)}
        placed[TRAINING_GROUP].sort(key=lambda item: order.get(_TRAINING_EXTRAS.get(item[1].name, item[1].name), 0)
                                    + (0.5 if item[1].name in _TRAINING_EXTRAS else 0))
        # What HfArgumentParser._add_dataclass_arguments does for each field, into the field's section.
        hints = {dtype: get_type_hints(dtype) for dtype in types}
        for name, items in placed.items():
            for dtype, f in items:
                f.type = hints[dtype][f.name]
                self._parse_dataclass_field(groups[name], f)
        # HfArgumentParser gives a True-by-default flag's `--no_<flag>` the flag's own help: say what it does.
        for action in self._actions:
            negative = [o for o in action.option_strings if o.startswith("--no_")]
            if negative and action.help and action.const is False:
                action.help = f"Turn --{negative[0][len('--no_'):]} off (it is on by default; see its help above)."

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (run with --help to list the flags)")


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Parse `argv` into the dataclasses, from flags or from a single `.json` file, like the transformers examples."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = OneLineArgumentParser(dataclass_types)
    try:
        if len(argv) == 1 and argv[0].endswith(".json"):
            return parser.parse_dict(_read_json_config(argv[0], dataclass_types))
        if argv and argv[0].endswith(".json") and not argv[0].startswith("-"):
            _refuse_combined(argv[0])
        *parsed, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
        stray = [a for a in unknown if a.endswith(".json") and not a.startswith("-")]
        if stray:
            _refuse_combined(stray[0])
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


def _refuse_combined(path: str) -> NoReturn:
    raise UserError(f"config file {path} cannot be combined with flags: put every setting in the JSON file (keys are "
                    "the flag names), or pass flags only")


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
