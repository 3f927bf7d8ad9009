"""`--help` of the three scripts: the project's own flags first, in sections, then the TrainingArguments ones; every
default stated once."""

from __future__ import annotations

import dataclasses
import re

import pytest
from transformers import TrainingArguments

from homodistil_hf.cli import run_distill, run_glue, run_squad
from homodistil_hf.cli.common import run_cli

SCRIPTS = {"run_distill": run_distill, "run_glue": run_glue, "run_squad": run_squad}
TRAINING_SECTION = "training (transformers TrainingArguments):"
TRAINING_ONLY = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}


def _help(module, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(module.main, ["--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _entries(text: str) -> list[str]:
    """One string per option: its flag line and its help text, whitespace normalised."""
    return [" ".join(e.split()) for e in re.split(r"\n(?=  -)", text) if e.startswith("  -")]


def _flag(entry: str) -> str:
    """The option's name: `--max_steps MAX_STEPS, --max-steps MAX_STEPS ...` -> `max_steps`."""
    return re.search(r"--(\w+)", entry).group(1)


@pytest.mark.parametrize("script", SCRIPTS)
def test_own_flags_come_first_in_sections(script, capsys):
    module = SCRIPTS[script]
    text = _help(module, capsys)
    own = {f.name for cls in module.ARGUMENT_CLASSES for f in dataclasses.fields(cls) if f.init} - TRAINING_ONLY
    first = "teacher and data:" if script == "run_distill" else "model, teacher and data:"
    sections = [first, "targets and pruning:", "losses:", TRAINING_SECTION]
    positions = [text.index(f"\n{title}\n") for title in sections]
    assert positions == sorted(positions), sections
    before, after = text.split(f"\n{TRAINING_SECTION}\n")
    # A boolean flag of ours that defaults to True (--packing, --logits_from_hidden) also has its `--no_<flag>`.
    flags_before = [re.sub(r"^no_(?=\w)", "", f) if f[3:] in own else f
                    for f in (_flag(e) for e in _entries(before)) if f != "help"]
    # A boolean flag that defaults to True also has a `--no_<flag>` (HfArgumentParser).
    flags_after = [re.sub(r"^no_(?=\w)", "", name) if name[3:] in TRAINING_ONLY else name
                   for name in map(_flag, _entries(after))]
    # The first flag shown is the project's, and no TrainingArguments-only flag comes before the training section.
    assert flags_before[0] in ("teacher_name_or_path", "model_name_or_path")
    assert set(flags_before) <= own and "teacher_name_or_path" in flags_before
    assert set(flags_after) - {"overwrite_output_dir"} <= TRAINING_ONLY
    assert {"target_params", "temperature", "prune_end", "alpha_attn"} <= set(flags_before)
    # The usage line is the two call forms, not a listing of 300 flags.
    assert len(text.split("\n\n", 1)[0].splitlines()) <= 2


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_default_stated_once(script, capsys):
    for entry in _entries(_help(SCRIPTS[script], capsys)):
        assert entry.count("(default") <= 1, entry
        if "(default: " in entry:  # appended by the formatter: the help itself must not state the default too
            assert len(re.findall(r"default", entry, re.IGNORECASE)) == 1, entry
    assert "Tokenizer (default: the teacher's)." in " ".join(_help(run_distill, capsys).split())
