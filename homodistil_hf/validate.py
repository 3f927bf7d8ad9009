"""Checks the scripts run before loading weights or writing anything, each ending in a one-line `UserError`."""

from __future__ import annotations

import codecs
import math
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .config import default_prune_end, resolve_step
from .errors import UserError

MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
# How much of an input file is read to tell text from binary data (enough for any header, cheap for any file).
SNIFF_BYTES = 64 * 1024
# A Hub repo id: `name` or `org/name` (letters, digits, '-', '_', '.'; no '--' or '..').
_HUB_ID = re.compile(r"(?:[\w.-]+/)?[\w.-]+")


def check_input_file(path: str | os.PathLike, flag: str, kind: str = "text",
                     suffixes: Iterable[str] | None = None) -> Path:
    """An input file must exist, be a file (not a folder), hold something, have one of `suffixes` (if given), and be
    UTF-8 text: each mistake is named before anything reads it (a binary file would otherwise end deep inside
    `datasets` or `csv`). `kind` says what the flag takes, for the messages (e.g. "text, JSON(L) or CSV")."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{flag} {path} is a directory: pass a {kind} file")
    if not p.is_file():
        raise UserError(f"{flag} {path} does not exist: pass an existing {kind} file")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise UserError(f"{flag} {path}: unknown extension {p.suffix!r}; use one of {', '.join(sorted(suffixes))}")
    try:
        with p.open("rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as err:
        raise UserError(f"{flag} {path} cannot be read ({err.strerror}): check its permissions") from None
    if not head:
        raise UserError(f"{flag} {path} is empty: pass a file with text in it")
    check_text_bytes(head, flag, path, kind)
    if not head.strip() and _only_whitespace(p):
        raise UserError(f"{flag} {path} holds only blank lines (whitespace): pass a file with text in it")
    return p


def _only_whitespace(path: Path) -> bool:
    """Whether a file holds whitespace only (read in chunks until the first other byte: cheap for real text)."""
    with path.open("rb") as f:
        while chunk := f.read(SNIFF_BYTES):
            if chunk.strip():
                return False
    return True


def check_text_bytes(data: bytes, flag: str, path, kind: str = "text") -> None:
    """`UserError` unless `data` (the start of a file) is UTF-8 text: no NUL byte (UTF-16 text and binary formats
    have them), and it decodes (a multi-byte character cut at the end of `data` is fine)."""
    offset = data.find(b"\x00")
    if offset < 0:
        try:
            codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
        except UnicodeDecodeError as err:
            offset = err.start
    if offset >= 0:
        raise UserError(f"{flag} {path} is not UTF-8 text (binary data at byte {offset}): pass a {kind} file, saved "
                        "as UTF-8")


def looks_local(name_or_path: str) -> bool:
    """Whether a model name is meant as a local path rather than a Hub id (`name` or `org/name`).

    Local: absolute, starting with `.`, `..` or `~`, a Windows path, more than one `/`, characters a Hub id cannot
    have, or `org/name` where `org` is an existing local folder (`outputs/quickstrat` is a typo of a local folder,
    not a Hub repo of a user called `outputs`).
    """
    value = name_or_path.strip()
    if not value:
        return True
    if os.path.isabs(value) or value.startswith((".", "~")) or "\\" in value or value.endswith("/"):
        return True
    if not _HUB_ID.fullmatch(value):
        return True
    org, sep, _ = value.partition("/")
    return bool(sep) and Path(org).is_dir()


def check_model_path(name_or_path: str | None, flag: str, file_ok: bool = False) -> None:
    """A model / tokenizer / config reference must be an existing folder, or a Hub id: a path that looks local but
    does not exist is named at once (instead of a minute of Hub retries that blame the connection), and a file
    where a folder is expected is refused (`file_ok` for --config_name, which may be a config.json)."""
    if name_or_path is None:
        return
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return
    if path.is_file():
        if file_ok:
            return
        raise UserError(f"{flag} {name_or_path} is a file: pass the model folder that holds config.json, the "
                        f"weights and the tokenizer (e.g. {path.parent})")
    if looks_local(str(name_or_path)):
        raise UserError(f"{flag} {name_or_path} does not exist: pass an existing local model folder (check the "
                        "spelling) or a Hub id such as org/name")


def planned_steps(args, num_examples: int) -> int:
    """The optimizer steps the Trainer will run on `num_examples` training examples (its own arithmetic:
    `Trainer.set_initial_training_values`), for runs that give epochs instead of --max_steps."""
    if args.max_steps > 0:
        return args.max_steps
    per_batch = args.per_device_train_batch_size * max(args.world_size, 1)
    batches = num_examples // per_batch if args.dataloader_drop_last else math.ceil(num_examples / per_batch)
    accumulation = args.gradient_accumulation_steps
    per_epoch = max(batches // accumulation + int(batches % accumulation > 0), 1)
    return math.ceil(args.num_train_epochs * per_epoch)


def check_prune_window(args, total_steps: int | None) -> None:
    """Pruning must reach the targets inside the run: its last pruning step (at --prune_end, a fraction of the run or
    a step) must come before the last optimizer step, or the run would end with a student that is not the target
    shape. `total_steps` None (a streamed corpus of unknown length) skips the check."""
    if total_steps is None or total_steps <= 0:
        return

    # --prune_end still unset (the teacher not loaded yet): the later of its two family defaults
    prune_end = args.prune_end if args.prune_end is not None else default_prune_end(None)
    start, end = resolve_step(args.prune_start, total_steps), resolve_step(prune_end, total_steps)
    if end < start and args.pruning_schedule != "oneshot":
        raise UserError(f"--prune_end {prune_end:g} is step {end} of {total_steps}, before --prune_start "
                        f"{args.prune_start:g} (step {start}): give both as fractions of training (<= 1) or both "
                        "as steps, with the end after the start")
    # (a start after the end, one-shot, or at it: the start is what sets the last pruning step)
    flag, value, example = ("--prune_start", args.prune_start, "0.1") if start >= end else ("--prune_end", prune_end, "0.5")
    end = max(start, end)
    if end >= total_steps:
        given = f"--max_steps {args.max_steps}" if args.max_steps > 0 else (
            f"--num_train_epochs {args.num_train_epochs:g}, i.e. {total_steps} steps")
        raise UserError(f"{flag} {value:g} ends pruning at step {end}, but the run has only "
                        f"{total_steps} steps ({given}, the last is step {total_steps - 1}): the targets would never "
                        f"be reached; lower {flag} (e.g. {example}, a fraction of the run) or raise --max_steps")


def check_output_dir(output_dir: str, resuming: bool = False, overwrite: bool = False) -> None:
    """The output folder must be writable, and must not hold a model or checkpoints a new run would overwrite."""
    path = Path(output_dir)
    existing = path.exists()
    if existing and not path.is_dir():
        raise UserError(f"--output_dir {output_dir} is a file: pass a folder path")
    if existing and not resuming and not overwrite:
        held = [f for f in MODEL_FILES if (path / f).exists()] + sorted(p.name for p in path.glob("checkpoint-*"))
        if held:
            raise UserError(f"--output_dir {output_dir} already holds {', '.join(held[:3])}: pass a new "
                            "--output_dir, --resume_from_checkpoint to continue, or --overwrite_output_dir")
    # Probe writability without leaving anything behind (the folder is created only if it can be).
    probe_root = path if existing else next((p for p in path.parents if p.exists()), Path("."))
    if not os.access(probe_root, os.W_OK):
        raise UserError(f"--output_dir {output_dir} is not writable (no write permission on {probe_root}): "
                        "choose another folder")
    try:
        with tempfile.TemporaryFile(dir=probe_root):
            pass
    except OSError as err:
        raise UserError(f"--output_dir {output_dir} is not writable ({err.strerror}): choose another folder") from None


def resolve_resume(resume, output_dir: str) -> str | None:
    """`--resume_from_checkpoint`: a checkpoint folder, or `true` for the last `checkpoint-*` in `output_dir`; returns
    the folder (None when not resuming). `UserError` for a folder that does not exist or holds no checkpoint."""
    if resume in (None, False, "", "False", "false"):
        return None
    if resume in ("True", "true", True):
        if not Path(output_dir).is_dir():
            raise UserError(f"--resume_from_checkpoint {resume}: --output_dir {output_dir} does not exist, so there "
                            "is no checkpoint to resume; drop --resume_from_checkpoint or pass a checkpoint folder")
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(output_dir)
        if last is None:
            raise UserError(f"--resume_from_checkpoint: no checkpoint-* folder in {output_dir}")
        return last
    if not Path(resume).is_dir():
        raise UserError(f"--resume_from_checkpoint {resume} is not a folder")
    return str(resume)


def check_seq_length(config, max_seq_length: int, flag: str = "--max_seq_length") -> None:
    """`max_seq_length` must fit the model's position embeddings (RoBERTa reserves padding_idx + 1 of them)."""
    limit = config.max_position_embeddings
    if config.model_type == "roberta":
        limit -= (config.pad_token_id or 1) + 1
    if max_seq_length > limit:
        raise UserError(f"{flag} {max_seq_length} is beyond the model's {limit} positions: use {flag} {limit} or "
                        "less")


def check_tokenizer(tokenizer, config, flag: str = "--tokenizer_name") -> None:
    """Every token id the tokenizer can produce must exist in the model's embeddings."""
    if len(tokenizer) > config.vocab_size:
        raise UserError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has "
                        f"{config.vocab_size}: they do not belong together; pass the teacher's tokenizer with "
                        f"{flag}")


def check_lm_tokenizer(tokenizer, config, flag: str = "--tokenizer_name") -> None:
    """For a causal-LM teacher, the tokenizer must be the teacher's own: the student learns the teacher's next-token
    distribution over the vocabulary, so a tokenizer of another, smaller vocabulary (ids that mean other tokens) is
    refused, not only one larger than the embeddings. Models pad their embeddings beyond the tokenizer (to a multiple
    of 64 or 128; Qwen2 by ~270 rows of 152k), so a shortfall of up to max(128, 1% of the vocabulary) is accepted."""
    size, vocab = len(tokenizer), config.vocab_size
    if size < vocab - max(128, vocab // 100):
        raise UserError(f"the tokenizer {getattr(tokenizer, 'name_or_path', '')} has {size} tokens but the "
                        f"teacher's vocabulary has {vocab}: it is not the teacher's tokenizer; drop {flag} (the "
                        "teacher's own is used) or pass the teacher's")
    bad = sorted(i for i in getattr(tokenizer, "all_special_ids", []) if i is not None and i >= vocab)
    if bad:
        raise UserError(f"the tokenizer's special token ids {bad[:4]} are beyond the teacher's vocabulary of {vocab}: "
                        f"it is not the teacher's tokenizer; drop {flag} or pass the teacher's")
