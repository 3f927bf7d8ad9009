"""Every command the documentation shows parses with the real script parsers, without running anything.

The commands are extracted from README.md, examples/README.md, benchmarks/README.md and quickstart.sh (lines that
invoke run_distill.py / run_glue.py / run_squad.py, directly or after `torchrun` / `accelerate launch`, with
backslash continuations joined, in code blocks and in inline code), and every examples/*.json is read as the
scripts read it. Each is parsed by `homodistil_hf.cli.common.parse_args` with the script's own dataclasses, so a
flag that transformers renames or drops (as it did `--warmup_ratio`) fails here instead of in a user's terminal.

Parsing loads no model and touches no network (sockets are blocked while parsing) and writes nothing (it runs in an
empty folder that must stay empty). The documented commands target GPU machines: `--bf16` / `--fp16` fail
`TrainingArguments.__post_init__` on a machine without a GPU unless `--use_cpu` is set, so `--use_cpu` is added to
every command (it changes no other check); the names and values of the device flags are still parsed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from homodistil_hf.cli import run_distill, run_glue, run_squad
from homodistil_hf.cli.common import parse_args
from homodistil_hf.config import HomoDistilConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "examples/README.md", "benchmarks/README.md", "quickstart.sh"]
ARGUMENT_CLASSES = {"run_distill": run_distill.ARGUMENT_CLASSES, "run_glue": run_glue.ARGUMENT_CLASSES,
                    "run_squad": run_squad.ARGUMENT_CLASSES}
# Script files and the parser they use: benchmarks/distill_cli.py is plain run_distill.py, and
# `benchmarks/memory_probe.py distill FLAGS` passes FLAGS to run_distill.main.
SCRIPTS = {"run_distill.py": "run_distill", "run_glue.py": "run_glue", "run_squad.py": "run_squad",
           "distill_cli.py": "run_distill"}
LAUNCHERS = ("python", "python3", "torchrun", "accelerate")
# A fragment (`run_glue.py ... --use_lora`, or flags shown without the rest of the command) gets the least a parse
# needs in front of it: dummy values, never loaded.
BASE = {
    "run_distill": ["--teacher_name_or_path", "org/teacher", "--train_file", "corpus.txt", "--output_dir", "out"],
    "run_glue": ["--model_name_or_path", "org/model", "--task_name", "mrpc", "--do_train", "--output_dir", "out"],
    "run_squad": ["--model_name_or_path", "org/model", "--validation_file", "dev.json", "--do_eval", "--output_dir",
                  "out"],
}
# Shell variables in the commands; unknown ones become a dummy word.
VARIABLES = {"STEPS": "150", "EXTRA": ""}
# Commands that cannot be parsed as written, and why.
SKIP = {
    "examples/<config>.json": "a placeholder for every examples/*.json, each parsed by test_example_config_parses",
}


@dataclass
class Command:
    source: str  # file:line
    text: str  # as shown, continuations joined
    script: str  # run_distill / run_glue / run_squad
    args: list[str]  # after the script
    fragment: bool  # `...` in it, or shown without a launcher


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines with backslash continuations joined, each with the number of its first line."""
    out, buf, start = [], [], 0
    for number, line in enumerate(text.splitlines(), 1):
        if not buf:
            start = number
        if line.rstrip().endswith("\\"):
            buf.append(line.rstrip()[:-1])
            continue
        buf.append(line)
        out.append((start, _join(buf)))
        buf = []
    if buf:
        out.append((start, _join(buf)))
    return out


def _join(parts: list[str]) -> str:
    """Continuation lines joined; the first keeps its indentation (an indented Markdown line is code)."""
    return " ".join([parts[0].rstrip(), *(part.strip() for part in parts[1:])]).rstrip()


def _snippets(path: Path) -> list[tuple[int, str]]:
    """Candidate command texts: every code line (fenced, indented, or a shell script), and inline code spans."""
    text = path.read_text()
    if path.suffix == ".sh":
        return _logical_lines(text)
    out, prose, fenced = [], [], False
    for number, line in _logical_lines(text):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            out.append((number, line))
        else:
            prose.append((number, line))
    # Inline code may wrap onto the next line of a paragraph.
    joined = "\n".join(line for _, line in prose)
    numbers = [n for n, _ in prose]
    for match in re.finditer(r"`([^`]+)`", joined):
        line_index = joined.count("\n", 0, match.start())
        out.append((numbers[line_index], " ".join(match.group(1).split())))
    return out


def _substitute(text: str) -> str:
    def value(match: re.Match) -> str:
        name, default = match.group(1) or match.group(3), match.group(2)
        return VARIABLES.get(name, default if default is not None else f"dummy-{name.lower()}")

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", value, text)


def _command(source: str, text: str) -> Command | None:
    """The command in a snippet, or None when it invokes none of the scripts."""
    try:
        tokens = shlex.split(_substitute(text), comments=True)
    except ValueError:  # not shell (e.g. Python source with an unbalanced quote)
        return None
    for i, token in enumerate(tokens):
        name = Path(token).name
        if name == "memory_probe.py" and tokens[i + 1:i + 2] == ["distill"]:
            name, i = "distill_cli.py", i + 1
        if name not in SCRIPTS:
            continue
        head = tokens[:i]
        launched = bool(head) and Path(head[0]).name in LAUNCHERS
        if head and not launched:
            return None  # e.g. `subprocess.run(["python", "run_glue.py", ...])` inside a Python snippet
        args = tokens[i + 1:]
        if not args:
            return None  # the script named in prose, not a command
        return Command(source, text, SCRIPTS[name], args, "..." in args or not launched)
    return None


def documented_commands() -> list[Command]:
    commands = []
    for doc in DOCS:
        for number, text in _snippets(ROOT / doc):
            command = _command(f"{doc}:{number}", text)
            if command is not None:
                commands.append(command)
    return commands


COMMANDS = documented_commands()
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))


def _script_of_example(path: Path) -> str:
    return {"distill": "run_distill", "glue": "run_glue", "squad": "run_squad"}[path.name.split("_")[0]]


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """An empty working folder that must stay empty, and no network."""

    def no_network(*args, **kwargs):
        raise AssertionError("parsing the arguments tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not list(tmp_path.iterdir()), "parsing the arguments wrote files"


def _parse(script: str, argv: list[str]):
    """Parse `argv` as the script does (see the module docstring for `--use_cpu`)."""
    return parse_args(ARGUMENT_CLASSES[script], [*argv, "--use_cpu"])


def test_commands_were_found():
    """The extraction itself: the commands this test must not silently lose."""
    texts = [c.text for c in COMMANDS]
    assert any("torchrun --nproc_per_node 8 run_distill.py" in t and "--warmup_steps 0.01" in t for t in texts)
    scripts = {c.script for c in COMMANDS}
    assert scripts == {"run_distill", "run_glue", "run_squad"}
    assert sum(c.source.startswith("benchmarks/") for c in COMMANDS) >= 10
    assert any(c.source.startswith("examples/") for c in COMMANDS)
    assert any(c.source.startswith("quickstart.sh") for c in COMMANDS)
    assert len(EXAMPLES) >= 15


@pytest.mark.parametrize("command", COMMANDS, ids=[c.source for c in COMMANDS])
def test_documented_command_parses(command, sandbox):
    reason = next((why for text, why in SKIP.items() if text in command.text), None)
    if reason:
        pytest.skip(reason)
    args = command.args
    if command.fragment:
        args = BASE[command.script] + [a for a in args if a != "..."]
    if len(args) == 1 and args[0].endswith(".json"):  # a config file of the repository
        _check_json(ROOT / args[0], command.script)
        return
    parsed = _parse(command.script, args)
    config = parsed[-1]
    assert isinstance(config, HomoDistilConfig)
    if "--warmup_steps" in args:  # a float < 1 is a ratio of the steps in transformers 5
        assert config.warmup_steps == float(args[args.index("--warmup_steps") + 1])


def _check_json(path: Path, script: str) -> None:
    data = json.loads(path.read_text())
    # As the script reads it: parse_args with the file's path (a copy that adds use_cpu, see the module docstring).
    copy = Path(f"{path.stem}.json")
    copy.write_text(json.dumps({**data, "use_cpu": True}))
    try:
        parsed = parse_args(ARGUMENT_CLASSES[script], [str(copy)])
    finally:
        copy.unlink()
    config = parsed[-1]
    # The same values as flags: argparse checks each value's type (a JSON file is not type-checked otherwise).
    flags = []
    for key, value in data.items():
        if isinstance(value, bool | int | float | str):
            flags += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    _parse(script, flags)
    assert config.output_dir == data["output_dir"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_parses(path, sandbox):
    _check_json(path, _script_of_example(path))


def test_a_renamed_flag_fails(sandbox):
    """What this file is for: the README's old `--warmup_ratio` (gone in transformers 5) is refused in parsing."""
    from homodistil_hf.errors import UserError

    with pytest.raises(UserError, match="--warmup_ratio"):
        _parse("run_distill", [*BASE["run_distill"], "--warmup_ratio", "0.01"])
    assert os.listdir(sandbox) == []
